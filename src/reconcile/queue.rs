//! The work queue both loops run on, keyed by object:
//! - changes coalesce: a key is dirty once, with the moment of its oldest change not yet
//!   handled (what `lag_seconds` measures from), however many events arrive meanwhile;
//! - a key is worked on by at most one task at a time, and a task that panics still hands its
//!   key back (as [`Finished`] with the join error), so the key is never stuck "in flight";
//! - failed keys wait out a capped, jittered exponential backoff, or the server's Retry-After;
//! - keys can be scheduled for later (Lambda sweeps every poll interval).
//!
//! kube-runtime's `Controller` has a scheduler of its own, but it reconciles one object kind
//! with one reconciler per object; here a key is a Service whose work spans several Upstreams,
//! or a sweep shared by many Upstreams, and the loops need the oldest change time and the
//! in-flight set for lag and for planning. tokio-util's `DelayQueue` does the timing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;
use std::ops::Bound;
use std::time::Duration;

use futures::StreamExt;
use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::time::{delay_queue, DelayQueue};

use super::Backoff;

/// A task that ended: its key, the change time it worked for, and what it returned (or how it
/// failed to return).
#[derive(Debug)]
pub struct Finished<K, T> {
    pub key: K,
    pub changed_at: Instant,
    pub output: Result<T, JoinError>,
}

/// What [`WorkQueue::next`] reports.
#[derive(Debug)]
pub enum Event<K, T> {
    /// A task ended.
    Finished(Finished<K, T>),
    /// A key's wait is over; it is dirty again.
    Due(K),
}

pub struct WorkQueue<K, T> {
    backoff: Backoff,
    dirty: BTreeMap<K, Instant>,
    timers: DelayQueue<K>,
    waiting: HashMap<K, (delay_queue::Key, Instant)>,
    tasks: JoinSet<T>,
    in_flight: HashMap<Id, (K, Instant)>,
    busy: HashSet<K>,
    attempts: HashMap<K, u32>,
}

impl<K, T> WorkQueue<K, T>
where
    K: Ord + Hash + Clone + Send + 'static,
    T: Send + 'static,
{
    pub fn new(backoff: Backoff) -> Self {
        Self {
            backoff,
            dirty: BTreeMap::new(),
            timers: DelayQueue::new(),
            waiting: HashMap::new(),
            tasks: JoinSet::new(),
            in_flight: HashMap::new(),
            busy: HashSet::new(),
            attempts: HashMap::new(),
        }
    }

    /// The key changed at `changed_at`; the oldest unhandled change is kept.
    pub fn mark(&mut self, key: K, changed_at: Instant) {
        let oldest = self.dirty.entry(key).or_insert(changed_at);
        *oldest = (*oldest).min(changed_at);
    }

    /// Takes the next dirty key after `cursor` that is neither worked on nor waiting, in key
    /// order, and moves the cursor past it. The cursor spares a walk from the start for every
    /// key when thousands are dirty (initial sync, resync).
    pub fn pop_ready(&mut self, cursor: &mut Option<K>) -> Option<(K, Instant)> {
        let lower = match cursor.as_ref() {
            Some(previous) => Bound::Excluded(previous),
            None => Bound::Unbounded,
        };
        let key = self
            .dirty
            .range::<K, _>((lower, Bound::Unbounded))
            .map(|(key, _)| key)
            .find(|key| !self.busy.contains(*key) && !self.waiting.contains_key(*key))
            .cloned()?;
        *cursor = Some(key.clone());
        let changed_at = self.dirty.remove(&key)?;
        Some((key, changed_at))
    }

    /// Works on `key` in a task of its own.
    pub fn spawn<F>(&mut self, key: K, changed_at: Instant, task: F)
    where
        F: Future<Output = T> + Send + 'static,
    {
        let handle = self.tasks.spawn(task);
        self.busy.insert(key.clone());
        self.in_flight.insert(handle.id(), (key, changed_at));
    }

    /// The next task to end or key to come due; pending while there is neither. Cancel-safe,
    /// so it can be one branch of a `select!`.
    pub async fn next(&mut self) -> Event<K, T> {
        loop {
            tokio::select! {
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    let (id, output) = match joined {
                        Ok((id, output)) => (id, Ok(output)),
                        Err(error) => (error.id(), Err(error)),
                    };
                    // Every task was spawned with a key, so this always finds one.
                    if let Some((key, changed_at)) = self.in_flight.remove(&id) {
                        self.busy.remove(&key);
                        return Event::Finished(Finished { key, changed_at, output });
                    }
                }
                Some(expired) = self.timers.next(), if !self.timers.is_empty() => {
                    let key = expired.into_inner();
                    if let Some((_, changed_at)) = self.waiting.remove(&key) {
                        self.mark(key.clone(), changed_at);
                    }
                    return Event::Due(key);
                }
                else => return std::future::pending().await,
            }
        }
    }

    /// The key failed: it is dirty again after a backoff (or the server's hint), keeping the
    /// time of its original change so the lag of the eventual write is honest. Returns the wait.
    pub fn retry(&mut self, key: K, changed_at: Instant, hint: Option<Duration>) -> Duration {
        let attempt = self.attempts.entry(key.clone()).or_insert(0);
        *attempt = attempt.saturating_add(1);
        let delay = hint.unwrap_or_else(|| self.backoff.after(*attempt));
        self.mark(key.clone(), changed_at);
        self.schedule(key, changed_at, delay);
        delay
    }

    /// The key becomes dirty after `delay` (a later schedule replaces an earlier one).
    pub fn schedule(&mut self, key: K, changed_at: Instant, delay: Duration) {
        if let Some((timer, _)) = self.waiting.remove(&key) {
            self.timers.remove(&timer);
        }
        let timer = self.timers.insert(key.clone(), delay);
        self.waiting.insert(key, (timer, changed_at));
    }

    /// Every key waiting out a retry backoff is due now, and backoffs start over: the API
    /// server is back (a watch was re-established), so what failed while it was away should
    /// not wait out delays that grew during the outage.
    pub fn retry_now(&mut self) {
        for (key, (timer, changed_at)) in self.waiting.drain() {
            self.timers.remove(&timer);
            let oldest = self.dirty.entry(key).or_insert(changed_at);
            *oldest = (*oldest).min(changed_at);
        }
        self.attempts.clear();
    }

    /// The key's work succeeded: its next failure starts the backoff over.
    pub fn succeeded(&mut self, key: &K) {
        self.attempts.remove(key);
    }

    /// Failures in a row so far.
    pub fn attempts(&self, key: &K) -> u32 {
        self.attempts.get(key).copied().unwrap_or(0)
    }

    /// Drops everything kept about the key (a running task still reports when it ends).
    pub fn forget(&mut self, key: &K) {
        self.dirty.remove(key);
        self.attempts.remove(key);
        if let Some((timer, _)) = self.waiting.remove(key) {
            self.timers.remove(&timer);
        }
    }

    pub fn is_busy(&self, key: &K) -> bool {
        self.busy.contains(key)
    }

    pub fn is_waiting(&self, key: &K) -> bool {
        self.waiting.contains_key(key)
    }

    pub fn is_dirty(&self, key: &K) -> bool {
        self.dirty.contains_key(key)
    }

    /// Tasks running now.
    pub fn running(&self) -> usize {
        self.tasks.len()
    }

    /// Changes not yet handled: dirty keys and running tasks.
    pub fn pending(&self) -> usize {
        self.dirty.len() + self.tasks.len()
    }

    /// Keys with any bookkeeping at all (for tests of bounded memory).
    pub fn tracked(&self) -> usize {
        let mut keys: HashSet<&K> = self.dirty.keys().collect();
        keys.extend(self.waiting.keys());
        keys.extend(self.attempts.keys());
        keys.extend(self.busy.iter());
        keys.len()
    }

    /// Lets running tasks end for at most `grace`, returning those that did; the rest are
    /// aborted (shutdown).
    pub async fn drain(&mut self, grace: Duration) -> Vec<Finished<K, T>> {
        let mut done = Vec::new();
        let deadline = tokio::time::sleep(grace);
        tokio::pin!(deadline);
        while !self.tasks.is_empty() {
            tokio::select! {
                _ = &mut deadline => {
                    tracing::warn!(tasks = self.tasks.len(), "abandoning in-flight work at shutdown");
                    self.abort_all();
                    break;
                }
                event = self.next() => {
                    if let Event::Finished(finished) = event {
                        done.push(finished);
                    }
                }
            }
        }
        done
    }

    pub fn abort_all(&mut self) {
        self.tasks.abort_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Backoff = Backoff {
        base: Duration::from_millis(10),
        cap: Duration::from_millis(40),
    };

    fn queue() -> WorkQueue<&'static str, u32> {
        WorkQueue::new(BACKOFF)
    }

    fn drain_ready(queue: &mut WorkQueue<&'static str, u32>) -> Vec<&'static str> {
        let mut cursor = None;
        std::iter::from_fn(|| queue.pop_ready(&mut cursor).map(|(key, _)| key)).collect()
    }

    #[tokio::test]
    async fn changes_coalesce_and_keep_the_oldest_time() {
        let mut queue = queue();
        let first = Instant::now();
        queue.mark("b", first);
        queue.mark("a", first + Duration::from_secs(1));
        queue.mark("b", first + Duration::from_secs(2));
        assert_eq!(queue.pending(), 2);
        let mut cursor = None;
        assert_eq!(queue.pop_ready(&mut cursor).map(|(k, _)| k), Some("a"));
        assert_eq!(queue.pop_ready(&mut cursor), Some(("b", first)));
        assert_eq!(queue.pop_ready(&mut cursor), None);
    }

    #[tokio::test]
    async fn a_busy_key_is_not_handed_out_until_its_task_ends() {
        let mut queue = queue();
        let now = Instant::now();
        queue.spawn("a", now, async { 7 });
        queue.mark("a", now);
        assert!(drain_ready(&mut queue).is_empty(), "a is being worked on");
        let Event::Finished(done) = queue.next().await else {
            panic!("a task ends");
        };
        assert_eq!((done.key, done.output.expect("ran")), ("a", 7));
        assert_eq!(drain_ready(&mut queue), ["a"]);
    }

    #[tokio::test]
    async fn a_task_that_panics_hands_its_key_back() {
        let mut queue = queue();
        let now = Instant::now();
        queue.spawn("a", now, async { panic!("a bug") });
        let Event::Finished(done) = queue.next().await else {
            panic!("a task ends");
        };
        assert_eq!(done.key, "a");
        assert!(done.output.expect_err("panicked").is_panic());
        assert!(!queue.is_busy(&"a"));
        queue.retry("a", done.changed_at, None);
        assert!(queue.is_waiting(&"a"));
        assert!(matches!(queue.next().await, Event::Due("a")));
        assert_eq!(drain_ready(&mut queue), ["a"]);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially_or_as_the_server_says() {
        let mut queue = queue();
        let now = Instant::now();
        let first = queue.retry("a", now, None);
        assert!(first >= Duration::from_micros(7500) && first <= Duration::from_micros(12500));
        assert!(drain_ready(&mut queue).is_empty(), "waiting");
        let second = queue.retry("a", now, None);
        assert!(second >= Duration::from_millis(15), "{second:?}");
        assert_eq!(
            queue.retry("a", now, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(queue.attempts(&"a"), 3);
        assert!(matches!(queue.next().await, Event::Due("a")));
        assert_eq!(
            Instant::now() - now,
            Duration::from_secs(3),
            "the last schedule wins"
        );
        assert_eq!(
            queue.pop_ready(&mut None),
            Some(("a", now)),
            "the first change time"
        );
        queue.succeeded(&"a");
        assert_eq!(queue.attempts(&"a"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_now_ends_every_backoff_and_starts_them_over() {
        let mut queue = queue();
        let now = Instant::now();
        for _ in 0..3 {
            queue.retry("a", now, None);
        }
        queue.retry(
            "b",
            now + Duration::from_secs(1),
            Some(Duration::from_secs(60)),
        );
        assert!(drain_ready(&mut queue).is_empty(), "both waiting");
        queue.retry_now();
        assert!(!queue.is_waiting(&"a") && !queue.is_waiting(&"b"));
        assert_eq!(queue.attempts(&"a"), 0);
        let mut cursor = None;
        assert_eq!(
            queue.pop_ready(&mut cursor),
            Some(("a", now)),
            "its first change time"
        );
        assert_eq!(
            queue.pop_ready(&mut cursor),
            Some(("b", now + Duration::from_secs(1)))
        );
        let next = queue.retry("a", now, None);
        assert!(
            next <= Duration::from_micros(12500),
            "backoff starts over: {next:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn forgetting_a_key_drops_all_of_its_bookkeeping() {
        let mut queue = queue();
        let now = Instant::now();
        queue.mark("a", now);
        queue.retry("a", now, None);
        queue.mark("b", now);
        assert_eq!(queue.tracked(), 2);
        queue.forget(&"a");
        queue.forget(&"b");
        assert_eq!(queue.tracked(), 0);
        assert_eq!(queue.pending(), 0);
        let next = tokio::time::timeout(Duration::from_secs(1), queue.next()).await;
        assert!(next.is_err(), "no timer left");
    }

    #[tokio::test]
    async fn drain_waits_for_running_tasks_within_the_grace() {
        let mut queue = queue();
        let now = Instant::now();
        queue.spawn("quick", now, async { 1 });
        queue.spawn("stuck", now, std::future::pending());
        let done = queue.drain(Duration::from_millis(50)).await;
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].key, "quick");
    }
}
