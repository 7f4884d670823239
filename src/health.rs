//! What `/healthz` and `/readyz` answer: one record per running discovery loop.
//!
//! Liveness: a loop that has work in flight and finishes none of it for `--stall-timeout` is
//! wedged, and a restart is the cure. Only work the loop could be doing counts (tasks running):
//! a follower's or a backing-off job's waiting is not a stall, and a loop that cannot reach the
//! API server is not wedged (an outage must not restart every replica).
//!
//! Readiness: every running loop has completed its first lists, and none of its watch streams
//! has been failing for longer than `--watch-grace` (a blip that recovers within the grace
//! does not take the pod out). A stream is up again when it delivers an object or a list, or
//! when its next retry is overdue without a failure (`Streak::ended`): kube's watcher
//! resumes a watch without a word, so a quiet namespace would otherwise look failed for ever.
//!
//! The loops report into shared records; the HTTP server reads them. A run of the loops
//! registers its records anew, so a restarted run starts unsynced and forgets the old streams.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// The discovery loops, as health reports name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Loop {
    Services,
    Functions,
}

impl Loop {
    pub fn as_str(self) -> &'static str {
        match self {
            Loop::Services => "services",
            Loop::Functions => "functions",
        }
    }
}

/// The thresholds of both checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthLimits {
    pub stall_timeout: Duration,
    pub watch_grace: Duration,
}

impl Default for HealthLimits {
    fn default() -> Self {
        Self {
            stall_timeout: Duration::from_secs(300),
            watch_grace: Duration::from_secs(30),
        }
    }
}

/// The longest a failing stream goes without a new failure: the source waits at most 4 s
/// before a retry (`source::backoff`), and a retry to a server that does not answer fails
/// within kube's 30 s connect timeout.
const RETRY_WINDOW: Duration = Duration::from_secs(35);

/// Failures of one stream with no success in between.
#[derive(Debug)]
struct Streak {
    since: Instant,
    last: Instant,
    message: String,
}

impl Streak {
    /// Whether the streak is over at `now`: the next retry is overdue and did not fail.
    fn ended(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last) >= RETRY_WINDOW
    }
}

#[derive(Debug, Default)]
struct Record {
    synced: bool,
    /// Since when the loop has had work in flight and finished none of it; `None` while idle.
    stuck_since: Option<Instant>,
    /// Streams that have failed with no success since, by name.
    failing: BTreeMap<String, Streak>,
}

type Shared = Arc<Mutex<Record>>;

fn lock(record: &Shared) -> MutexGuard<'_, Record> {
    // A panic elsewhere while holding the lock leaves a record that is still meaningful.
    record
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// All loops' records. Clones share them: the daemon's runs write, the HTTP server reads.
#[derive(Debug, Clone, Default)]
pub struct Health {
    limits: HealthLimits,
    loops: Arc<Mutex<BTreeMap<Loop, Shared>>>,
}

impl Health {
    pub fn new(limits: HealthLimits) -> Self {
        Self {
            limits,
            loops: Arc::default(),
        }
    }

    fn loops(&self) -> MutexGuard<'_, BTreeMap<Loop, Shared>> {
        self.loops
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A fresh record for `name` (unsynced, idle, no failing stream), replacing the one of an
    /// earlier run: that run's loop may still be stopping, and now writes to nothing.
    pub fn register(&self, name: Loop) -> LoopHealth {
        let record = Shared::default();
        self.loops().insert(name, record.clone());
        LoopHealth { record }
    }

    /// The loop does not run (any more): it no longer counts.
    pub fn unregister(&self, name: Loop) {
        self.loops().remove(&name);
    }

    /// Each running loop, and whether it has completed its first lists (for `cache_synced`).
    pub fn loops_synced(&self) -> Vec<(&'static str, bool)> {
        self.loops()
            .iter()
            .map(|(name, record)| (name.as_str(), lock(record).synced))
            .collect()
    }

    /// `Err` names each loop that has had work and finished none of it for the stall timeout.
    pub fn liveness(&self, now: Instant) -> Result<(), String> {
        let mut problems = String::new();
        for (name, record) in self.loops().iter() {
            let Some(since) = lock(record).stuck_since else {
                continue;
            };
            let stuck = now.saturating_duration_since(since);
            if stuck >= self.limits.stall_timeout {
                let _ = writeln!(
                    problems,
                    "{}: work in flight and none finished for {}s (stall timeout {}s)",
                    name.as_str(),
                    stuck.as_secs(),
                    self.limits.stall_timeout.as_secs()
                );
            }
        }
        verdict(problems)
    }

    /// `Err` says, one line each, which loop is not synced or whose stream has been failing
    /// for longer than the grace period. Not ready before any loop is registered: the daemon
    /// always runs at least one, so none means it has not started yet.
    pub fn readiness(&self, now: Instant) -> Result<(), String> {
        let loops = self.loops();
        if loops.is_empty() {
            return Err("discovery not started\n".to_string());
        }
        let mut problems = String::new();
        for (name, record) in loops.iter() {
            let record = lock(record);
            if !record.synced {
                let _ = writeln!(problems, "{}: initial lists not complete", name.as_str());
            }
            for (stream, streak) in &record.failing {
                let failing = now.saturating_duration_since(streak.since);
                if failing > self.limits.watch_grace && !streak.ended(now) {
                    let _ = writeln!(
                        problems,
                        "{}: watch of {stream} failing for {}s: {}",
                        name.as_str(),
                        failing.as_secs(),
                        streak.message
                    );
                }
            }
        }
        verdict(problems)
    }
}

fn verdict(problems: String) -> Result<(), String> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// One loop's record, as the loop reports into it. The default one is registered nowhere.
#[derive(Debug, Clone, Default)]
pub struct LoopHealth {
    record: Shared,
}

impl LoopHealth {
    /// The first lists are complete. It stays so: a re-list after a lost watch is covered by
    /// the stream's failure, not by the cache (which keeps serving).
    pub fn synced(&self) {
        lock(&self.record).synced = true;
    }

    /// Whether the loop has work in flight now; called after each dispatch.
    pub fn working(&self, busy: bool) {
        let mut record = lock(&self.record);
        match (busy, record.stuck_since) {
            (false, _) => record.stuck_since = None,
            (true, None) => record.stuck_since = Some(Instant::now()),
            (true, Some(_)) => {}
        }
    }

    /// A job finished (whatever its outcome): the loop is moving.
    pub fn progressed(&self) {
        let mut record = lock(&self.record);
        if record.stuck_since.is_some() {
            record.stuck_since = Some(Instant::now());
        }
    }

    /// The record of one of the loop's watch streams, `name` as the report shows it
    /// (`services in shop`).
    pub fn stream(&self, name: String) -> StreamHealth {
        StreamHealth {
            record: self.record.clone(),
            name,
        }
    }
}

/// One watch stream's failures, as the stream reports them.
#[derive(Debug, Clone)]
pub struct StreamHealth {
    record: Shared,
    name: String,
}

impl StreamHealth {
    /// The stream failed; a streak counts from its first failure (after a streak that had
    /// ended, the failure starts a new one).
    pub fn failed(&self, message: &str) {
        let mut record = lock(&self.record);
        let now = Instant::now();
        let streak = record
            .failing
            .entry(self.name.clone())
            .or_insert_with(|| Streak {
                since: now,
                last: now,
                message: String::new(),
            });
        if streak.ended(now) {
            streak.since = now;
        }
        streak.last = now;
        streak.message = message.to_string();
    }

    /// The stream delivered an object or a list.
    pub fn up(&self) {
        lock(&self.record).failing.remove(&self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> Health {
        Health::new(HealthLimits {
            stall_timeout: Duration::from_secs(60),
            watch_grace: Duration::from_secs(30),
        })
    }

    fn after(seconds: u64) -> Instant {
        Instant::now() + Duration::from_secs(seconds)
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_registered_is_alive_but_not_ready() {
        let health = health();
        assert_eq!(health.liveness(Instant::now()), Ok(()));
        assert_eq!(
            health.readiness(Instant::now()),
            Err("discovery not started\n".to_string())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn loops_synced_lists_each_running_loop() {
        let health = health();
        assert_eq!(health.loops_synced(), []);
        let services = health.register(Loop::Services);
        let _functions = health.register(Loop::Functions);
        services.synced();
        assert_eq!(
            health.loops_synced(),
            [("services", true), ("functions", false)]
        );
        health.unregister(Loop::Functions);
        assert_eq!(health.loops_synced(), [("services", true)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_counts_only_while_there_is_work() {
        let health = health();
        let services = health.register(Loop::Services);
        services.working(false);
        assert_eq!(health.liveness(after(3600)), Ok(()), "idle for an hour");

        services.working(true);
        assert_eq!(health.liveness(after(59)), Ok(()));
        assert_eq!(
            health.liveness(after(75)),
            Err(
                "services: work in flight and none finished for 75s (stall timeout 60s)\n"
                    .to_string()
            )
        );
        // Still working, reported again: the stall goes on from when it began.
        services.working(true);
        assert!(health.liveness(after(75)).is_err());
        // Idle again: alive, and the next work starts a new count.
        services.working(false);
        assert_eq!(health.liveness(after(75)), Ok(()));
        tokio::time::advance(Duration::from_secs(100)).await;
        services.working(true);
        assert_eq!(health.liveness(after(59)), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_finished_job_restarts_the_count() {
        let health = health();
        let functions = health.register(Loop::Functions);
        functions.working(true);
        tokio::time::advance(Duration::from_secs(50)).await;
        functions.progressed();
        functions.working(true);
        assert_eq!(
            health.liveness(after(50)),
            Ok(()),
            "50 s since the last job"
        );
        let stuck = health.liveness(after(61)).expect_err("stuck");
        assert!(stuck.starts_with("functions: "), "{stuck}");
        // Progress while idle does not start a count.
        functions.working(false);
        functions.progressed();
        assert_eq!(health.liveness(after(3600)), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn ready_once_every_loop_has_synced() {
        let health = health();
        let services = health.register(Loop::Services);
        let functions = health.register(Loop::Functions);
        assert_eq!(
            health.readiness(Instant::now()),
            Err(
                "services: initial lists not complete\nfunctions: initial lists not complete\n"
                    .to_string()
            )
        );
        services.synced();
        assert_eq!(
            health.readiness(Instant::now()),
            Err("functions: initial lists not complete\n".to_string())
        );
        functions.synced();
        assert_eq!(health.readiness(Instant::now()), Ok(()));
    }

    /// Fails `stream` as the source retries a failing watch: after 0.5 s, doubling to 4 s.
    async fn fail_for(stream: &StreamHealth, seconds: u64, message: &str) {
        let end = Instant::now() + Duration::from_secs(seconds);
        let mut wait = Duration::from_millis(500);
        while Instant::now() < end {
            stream.failed(message);
            tokio::time::advance(wait.min(end - Instant::now())).await;
            wait = (wait * 2).min(Duration::from_secs(4));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_stream_counts_after_the_grace_and_recovers() {
        let health = health();
        let services = health.register(Loop::Services);
        services.synced();
        let stream = services.stream("services in shop".to_string());
        fail_for(&stream, 30, "403 forbidden").await;
        assert_eq!(health.readiness(Instant::now()), Ok(()), "within the grace");
        // Later failures of the same streak keep its start and bring their message.
        fail_for(&stream, 12, "connection refused").await;
        assert_eq!(
            health.readiness(Instant::now()),
            Err(
                "services: watch of services in shop failing for 42s: connection refused\n"
                    .to_string()
            )
        );
        stream.up();
        assert_eq!(health.readiness(Instant::now()), Ok(()));
        // A new streak counts from its own start.
        fail_for(&stream, 30, "again").await;
        assert_eq!(health.readiness(Instant::now()), Ok(()));
        // Liveness never depends on the streams.
        assert_eq!(health.liveness(after(3600)), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_whose_retries_stop_failing_has_come_back() {
        let health = health();
        let services = health.register(Loop::Services);
        services.synced();
        let stream = services.stream("namespaces".to_string());
        // Failures 0.5 s to 4 s apart for 110 s (the last at 107.5 s): the stream is failing
        // until a retry is overdue, 35 s after the last failure.
        fail_for(&stream, 110, "503").await;
        let last = Instant::now() - Duration::from_millis(2_500);
        assert!(health.readiness(last + Duration::from_secs(34)).is_err());
        assert_eq!(health.readiness(last + Duration::from_secs(35)), Ok(()));

        // A blip of two failures is over 35 s after the second, even past the grace.
        let blip = health.register(Loop::Services);
        blip.synced();
        let stream = blip.stream("namespaces".to_string());
        stream.failed("503");
        tokio::time::advance(Duration::from_secs(1)).await;
        stream.failed("503");
        assert_eq!(health.readiness(after(35)), Ok(()));
        // A failure after that starts a new streak, within its grace.
        tokio::time::advance(Duration::from_secs(35)).await;
        fail_for(&stream, 30, "503").await;
        assert_eq!(health.readiness(Instant::now()), Ok(()));
        fail_for(&stream, 2, "503").await;
        assert!(health.readiness(Instant::now()).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_run_starts_over_and_an_old_run_writes_to_nothing() {
        let health = health();
        let old = health.register(Loop::Services);
        old.synced();
        old.working(true);
        fail_for(&old.stream("namespaces".to_string()), 40, "gone").await;
        assert!(health.readiness(Instant::now()).is_err());
        assert!(health.liveness(after(600)).is_err());

        let new = health.register(Loop::Services);
        assert_eq!(
            health.readiness(Instant::now()),
            Err("services: initial lists not complete\n".to_string())
        );
        assert_eq!(health.liveness(after(600)), Ok(()));
        new.synced();
        old.working(true);
        fail_for(&old.stream("namespaces".to_string()), 40, "gone").await;
        assert_eq!(health.readiness(Instant::now()), Ok(()));
        assert_eq!(health.liveness(after(600)), Ok(()));

        // A loop turned off no longer counts.
        let functions = health.register(Loop::Functions);
        assert!(health.readiness(Instant::now()).is_err());
        health.unregister(Loop::Functions);
        functions.working(true);
        assert_eq!(health.readiness(Instant::now()), Ok(()));
        assert_eq!(health.liveness(after(600)), Ok(()));
    }

    #[test]
    fn clones_share_the_records() {
        let a = Health::default();
        let b = a.clone();
        b.register(Loop::Services).synced();
        assert_eq!(a.readiness(Instant::now()), Ok(()));
    }
}
