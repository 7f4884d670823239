//! Function discovery's loop: feeds watch events and sweep answers to the pure [`LambdaState`]
//! and carries out what it decides. Sweeps (one per account, role and region) and list writes
//! run on two work queues of the reconcile kit: a sweep is due every poll interval, or after a
//! backoff when it failed; a write is retried after a backoff or the server's Retry-After.
//!
//! Only the leader sweeps and writes; followers keep their caches warm.

use std::num::NonZeroU32;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::Client;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::aws::Sweepers;
use super::functions::Listing;
use super::problem::{Counter, SweepError};
use super::selection::FdsMode;
use super::state::{Decision, LambdaState, WriteRequest};
use super::target::{SweepKey, WebIdentity};
use crate::apply::{Applier, Outcome};
use crate::config::LambdaArgs;
use crate::crd::LambdaFunction;
use crate::events::{EventSink, ObjectEvent, Regarding};
use crate::health::LoopHealth;
use crate::metrics::{Metrics, Source, WatchResource, WriteOp, WriteResult};
use crate::model::{ErrorKind, EventReason, Scope, UpstreamKey};
use crate::reconcile::{
    Backoff, Change, Finished, LeaderGate, QueueEvent, ReportOnce, SayOnce, WorkQueue,
};
use crate::source::{LambdaInput, SecretUpdate, SecretWatches};

/// Retries of failed writes, and of failed sweeps up to the cap below.
const RETRY: Backoff = Backoff {
    base: Duration::from_secs(1),
    cap: Duration::from_secs(300),
};
/// Upstream writes of function discovery in flight at once (the API limiter is shared).
const WRITE_CONCURRENCY: usize = 8;

/// Function discovery's settings.
#[derive(Debug, Clone)]
pub struct LambdaConfig {
    pub mode: FdsMode,
    pub poll_interval: Duration,
    pub api_rps: NonZeroU32,
    pub aliases: bool,
    pub max_functions: usize,
}

impl From<&LambdaArgs> for LambdaConfig {
    fn from(args: &LambdaArgs) -> Self {
        Self {
            mode: args.fds_mode,
            poll_interval: args.lambda_poll_interval,
            api_rps: NonZeroU32::new(args.lambda_api_rps).unwrap_or(NonZeroU32::MIN),
            aliases: args.lambda_aliases,
            max_functions: usize::try_from(args.lambda_max_functions).unwrap_or(usize::MAX),
        }
    }
}

struct Written {
    functions: Vec<LambdaFunction>,
    outcome: Outcome,
}

pub struct LambdaEngine {
    config: LambdaConfig,
    state: LambdaState,
    applier: Applier,
    metrics: Metrics,
    events: EventSink,
    leader: LeaderGate,
    health: LoopHealth,
    /// Writes refused with 403 (a right taken away): one warning line until one goes through.
    forbidden: SayOnce,
    /// Writes refused by admission control (who refused, how), reported once per Upstream.
    refusals: ReportOnce<UpstreamKey, (ErrorKind, String)>,
    /// A watch failed and none has answered since.
    watch_failed: bool,
    sweepers: Sweepers,
    secret_watches: SecretWatches,
    secret_updates: mpsc::UnboundedReceiver<SecretUpdate>,
    /// The SDK's default region, once asked (see [`Decision::ResolveDefaultRegion`]).
    region_sender: mpsc::UnboundedSender<Option<String>>,
    region_updates: mpsc::UnboundedReceiver<Option<String>>,
    sweeps: WorkQueue<SweepKey, Result<Listing, SweepError>>,
    writes: WorkQueue<UpstreamKey, Written>,
}

impl LambdaEngine {
    pub fn new(
        config: LambdaConfig,
        client: Client,
        scopes: &[Scope],
        applier: Applier,
        metrics: Metrics,
        events: EventSink,
        leader: LeaderGate,
    ) -> Self {
        let (secret_watches, secret_updates) = SecretWatches::new(client);
        let (region_sender, region_updates) = mpsc::unbounded_channel();
        // IRSA mode is the pod's environment, fixed for its life, as Gloo reads it.
        let web_identity = WebIdentity::from_lookup(|name| std::env::var(name).ok());
        if let Some(pod) = &web_identity {
            tracing::info!(role = %pod.role_arn, "function discovery: IRSA mode, every Upstream's functions are listed with the web identity token");
        }
        // A failed sweep is retried at least every ten poll intervals.
        let sweep_retry = Backoff {
            cap: RETRY.cap.min(config.poll_interval.max(RETRY.base) * 10),
            ..RETRY
        };
        Self {
            state: LambdaState::new(config.mode, config.max_functions, scopes, web_identity),
            sweepers: Sweepers::new(metrics.clone(), config.api_rps),
            config,
            applier,
            metrics,
            events,
            leader,
            // Reports to no one until `run` gets the record of its run.
            health: LoopHealth::default(),
            forbidden: SayOnce::default(),
            refusals: ReportOnce::default(),
            watch_failed: false,
            secret_watches,
            secret_updates,
            region_sender,
            region_updates,
            sweeps: WorkQueue::new(sweep_retry),
            writes: WorkQueue::new(RETRY),
        }
    }

    /// Runs until `shutdown` is cancelled, reporting into `health`.
    pub async fn run(
        mut self,
        mut inputs: impl Stream<Item = LambdaInput> + Unpin,
        health: LoopHealth,
        shutdown: CancellationToken,
    ) {
        self.health = health;
        tracing::info!(
            mode = ?self.config.mode,
            poll_interval = ?self.config.poll_interval,
            api_rps = self.config.api_rps.get(),
            aliases = self.config.aliases,
            max_functions = self.config.max_functions,
            "function discovery on"
        );
        // Also here, not only in the Services loop: with `--uds-enabled=false` this loop is
        // the only one, and `is_leader` would stay 0 (and the no-leader alert fire) for ever.
        self.metrics.set_leader(self.leader.is_open());
        loop {
            self.dispatch();
            // Sweeps and writes in flight are the work; due ones start at once in `dispatch`.
            self.health
                .working(self.sweeps.running() + self.writes.running() > 0);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                input = inputs.next() => match input {
                    Some(input) => self.on_input(input),
                    None => break,
                },
                Some(update) = self.secret_updates.recv() => self.on_secret(update),
                Some(region) = self.region_updates.recv() => {
                    tracing::info!(region = region.as_deref().unwrap_or("none"), "function discovery: the SDK's region, for Upstreams without spec.aws.region");
                    self.state.on_default_region(region);
                    let settled = self.state.settle();
                    self.carry_out(settled);
                }
                event = self.sweeps.next() => {
                    if let QueueEvent::Finished(finished) = event {
                        self.on_sweep(finished);
                    }
                }
                event = self.writes.next() => {
                    if let QueueEvent::Finished(finished) = event {
                        self.on_write(finished);
                    }
                }
                is_leader = self.leader.changed() => {
                    self.metrics.set_leader(is_leader);
                    if is_leader {
                        // A new leader sweeps at once: the last one may have stopped mid-interval.
                        let now = Instant::now();
                        let keys: Vec<SweepKey> = self.state.sweep_keys().cloned().collect();
                        for key in keys {
                            self.sweeps.schedule(key, now, Duration::ZERO);
                        }
                    }
                }
            }
        }
        self.sweeps.abort_all();
        self.writes.abort_all();
    }

    fn on_input(&mut self, input: LambdaInput) {
        if input.is_answer() && std::mem::take(&mut self.watch_failed) {
            // The API server answers again: writes that failed while it was away go now.
            self.writes.retry_now();
        }
        let decisions = match input {
            LambdaInput::Upstream(scope, event) => self.state.on_upstream(&scope, *event),
            LambdaInput::Namespace(event) => {
                self.state.on_namespace(*event);
                Vec::new()
            }
            LambdaInput::WatchError(failure) => {
                self.watch_failed = true;
                if failure.counted {
                    self.metrics.watch_restarted(failure.resource);
                }
                if failure.repeated || !failure.counted {
                    // A repeat, or the shared Upstream stream's failure that the Services loop
                    // counts and says.
                    tracing::debug!(resource = failure.resource.as_str(), error = %failure.message, "function discovery: watch still failing; retrying with backoff");
                } else {
                    tracing::warn!(resource = failure.resource.as_str(), error = %failure.message, "function discovery: watch failed; retrying with backoff");
                }
                Vec::new()
            }
        };
        self.carry_out(decisions);
        let settled = self.state.settle();
        self.carry_out(settled);
        if self.state.synced() {
            self.health.synced();
        }
    }

    fn on_secret(&mut self, update: SecretUpdate) {
        if let crate::lambda::target::SecretSeen::WatchError(message) = &update.seen {
            self.metrics.watch_restarted(WatchResource::Secrets);
            tracing::warn!(secret = %update.key, error = %message, "function discovery: cannot watch a credentials Secret; retrying with backoff");
        }
        self.state.on_secret(update.key, update.seen);
        let settled = self.state.settle();
        self.carry_out(settled);
    }

    /// Starts due sweeps (as the leader) and evaluates changed Upstreams.
    fn dispatch(&mut self) {
        if !self.state.synced() {
            return;
        }
        let leader = self.leader.is_open();
        if leader {
            let mut cursor = None;
            while let Some((key, _)) = self.sweeps.pop_ready(&mut cursor) {
                self.start_sweep(key);
            }
        }
        let mut cursor = None;
        loop {
            if leader && self.writes.running() >= WRITE_CONCURRENCY {
                break;
            }
            let Some((key, changed_at)) = self.writes.pop_ready(&mut cursor) else {
                break;
            };
            let decisions = self.state.evaluate(&key, leader);
            for decision in decisions {
                match decision {
                    Decision::Write(request) => self.start_write(request, changed_at),
                    other => self.carry_out(vec![other]),
                }
            }
        }
    }

    fn start_sweep(&mut self, key: SweepKey) {
        let previous = self.state.listing(&key);
        let aliases = self.config.aliases;
        let sweepers = self.sweepers.clone();
        let sweep_key = key.clone();
        self.sweeps.spawn(key, Instant::now(), async move {
            // Building a client may read the SDK's environment: done here, not in the loop.
            let sweeper = sweepers.get(&sweep_key).await;
            let started = std::time::Instant::now();
            let result = sweeper.sweep(previous.as_deref(), aliases).await;
            match &result {
                Ok(listing) => tracing::debug!(sweep = %sweep_key.describe(), versions = listing.versions.len(), elapsed = ?started.elapsed(), "swept"),
                Err(error) => tracing::debug!(sweep = %sweep_key.describe(), %error, "sweep failed"),
            }
            result
        });
    }

    fn start_write(&mut self, request: WriteRequest, changed_at: Instant) {
        let applier = self.applier.clone();
        let key = request.upstream.clone();
        self.writes.spawn(key, changed_at, async move {
            let outcome = applier
                .apply_lambda_functions(
                    &request.upstream,
                    &request.uid,
                    &request.resource_version,
                    &request.functions,
                )
                .await;
            Written {
                functions: request.functions,
                outcome,
            }
        });
    }

    fn on_sweep(&mut self, finished: Finished<SweepKey, Result<Listing, SweepError>>) {
        self.health.progressed();
        let now = Instant::now();
        // The sweep's task was spawned with its start time.
        let started = finished.changed_at;
        let key = finished.key;
        let result = match finished.output {
            Ok(result) => result,
            Err(error) => {
                // A bug in a sweep: its account is swept again after a backoff, not forgotten.
                tracing::error!(sweep = %key.describe(), %error, "function discovery: a sweep task failed; retrying");
                self.metrics.error(ErrorKind::LambdaTaskFailed);
                if self.state.has_sweep(&key) {
                    self.sweeps.retry(key, now, None);
                }
                return;
            }
        };
        if !self.state.has_sweep(&key) {
            return;
        }
        match &result {
            Ok(_) => {
                self.sweeps.succeeded(&key);
                // At a fixed rate: a poll interval from this sweep's start, not its end, so a
                // new version waits at most the interval plus one sweep's own duration.
                let next = (started + self.config.poll_interval).saturating_duration_since(now);
                self.sweeps.schedule(key.clone(), now, next);
                self.metrics.mark_synced(Source::Lambda);
            }
            Err(error) => {
                let delay = self.sweeps.retry(key.clone(), now, None);
                self.metrics.error(error.kind());
                tracing::warn!(sweep = %key.describe(), %error, retry_in = ?delay, "function discovery: sweep failed; lambdaFunctions left as they are");
            }
        }
        let decisions = self.state.on_sweep(&key, result);
        self.carry_out(decisions);
    }

    fn on_write(&mut self, finished: Finished<UpstreamKey, Written>) {
        self.health.progressed();
        let now = Instant::now();
        let Finished {
            key,
            changed_at,
            output,
        } = finished;
        let written = match output {
            Ok(written) => written,
            Err(error) => {
                tracing::error!(upstream = %key, %error, "function discovery: a write task failed; retrying");
                self.metrics.error(ErrorKind::LambdaTaskFailed);
                self.writes.retry(key, changed_at, None);
                return;
            }
        };
        match written.outcome {
            Outcome::Written { upstream, .. } => {
                self.forbidden.clear();
                if let Change::Cleared(_) = self.refusals.update(&key, None) {
                    tracing::info!(upstream = %key, "lambdaFunctions write went through after admission control refused it");
                }
                self.metrics
                    .record_write(Source::Lambda, WriteOp::Update, WriteResult::Success);
                self.metrics
                    .observe_lag(Source::Lambda, now.saturating_duration_since(changed_at));
                self.writes.succeeded(&key);
                tracing::info!(upstream = %key, functions = written.functions.len(), "lambdaFunctions written");
                let decisions = self.state.on_written(&key, &upstream);
                self.carry_out(decisions);
            }
            Outcome::Fenced => {
                tracing::debug!(upstream = %key, "not written: leadership lapsed");
                self.writes.retry(key, changed_at, None);
            }
            Outcome::DryRun => {
                self.metrics
                    .record_write(Source::Lambda, WriteOp::Update, WriteResult::Skipped);
                self.state.on_dry_run(&key, written.functions);
            }
            Outcome::Conflict(_)
            | Outcome::Stale(_)
            | Outcome::Unchanged(_)
            | Outcome::Deleted(_)
            | Outcome::NotOwned(_)
            | Outcome::Grant(_) => {
                // Changed or deleted since planned: the watch brings the new state, and a short
                // retry covers an event that is slow to come.
                self.metrics
                    .record_write(Source::Lambda, WriteOp::Update, WriteResult::Conflict);
                self.writes.retry(key, changed_at, Some(RETRY.base));
            }
            Outcome::Failed {
                kind,
                retry_after,
                message,
                refused,
                ..
            } => {
                self.metrics
                    .record_write(Source::Lambda, WriteOp::Update, WriteResult::Error);
                self.metrics.error(kind);
                let delay = self.writes.retry(key.clone(), changed_at, retry_after);
                if let Some(refused) = refused {
                    let who = (kind, refused.refusal.by.clone());
                    if let Change::Raised { .. } = self.refusals.update(&key, Some(who)) {
                        let refusal = &refused.refusal;
                        let note = format!(
                            "update of spec.aws.lambdaFunctions refused: {}; retrying with backoff",
                            refusal.message
                        );
                        self.events.record(ObjectEvent {
                            regarding: Regarding::upstream(&key, refused.uid.clone()),
                            warning: true,
                            reason: refusal.event_reason(),
                            note,
                        });
                    }
                } else if kind != ErrorKind::Forbidden || self.forbidden.first() {
                    tracing::warn!(upstream = %key, kind = kind.as_str(), error = %message, retry_in = ?delay, "cannot write lambdaFunctions; retrying");
                } else {
                    tracing::debug!(upstream = %key, error = %message, retry_in = ?delay, "lambdaFunctions write forbidden again; retrying");
                }
            }
        }
    }

    fn carry_out(&mut self, decisions: Vec<Decision>) {
        let now = Instant::now();
        for decision in decisions {
            match decision {
                Decision::Recheck(key) => self.writes.mark(key, now),
                Decision::Forget(key) => {
                    self.writes.forget(&key);
                    self.refusals.forget(&key);
                    self.metrics
                        .forget_lambda_functions(&key.namespace, &key.name);
                }
                Decision::SweepAdded(key) => self.sweeps.mark(key, now),
                Decision::SweepRemoved(key) => {
                    self.sweeps.forget(&key);
                    let state = &self.state;
                    self.sweepers.retain(|key| state.has_sweep(key));
                }
                Decision::WatchSecrets(secrets) => self.secret_watches.set(&secrets),
                Decision::ResolveDefaultRegion => {
                    let sender = self.region_sender.clone();
                    tokio::spawn(async move {
                        // The loop holds the receiver until it ends; then no one is waiting.
                        let _ = sender.send(super::aws::default_region().await);
                    });
                }
                Decision::Selected(count) => self.metrics.set_upstreams(Source::Lambda, count),
                Decision::Report {
                    upstream,
                    uid,
                    problem,
                } => {
                    match problem.counter() {
                        Some(Counter::Error(kind)) => self.metrics.error(kind),
                        Some(Counter::Skipped(reason)) => self.metrics.skipped(reason),
                        None => {}
                    }
                    self.events.record(ObjectEvent {
                        regarding: Regarding::upstream(&upstream, uid),
                        warning: true,
                        reason: problem.event_reason(),
                        note: problem.note(),
                    });
                }
                Decision::Recovered { upstream, uid } => self.events.record(ObjectEvent {
                    regarding: Regarding::upstream(&upstream, uid),
                    warning: false,
                    reason: EventReason::LambdaFunctionsDiscovered,
                    note: "functions listed again".into(),
                }),
                Decision::Count {
                    upstream,
                    functions,
                } => self.metrics.set_lambda_functions(
                    &upstream.namespace,
                    &upstream.name,
                    functions,
                ),
                // Writes are started by `dispatch`, which knows the change time.
                Decision::Write(request) => self.writes.mark(request.upstream, now),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::sync::watch;

    /// A loop whose client points nowhere and that does not lead: nothing is sent.
    fn engine() -> LambdaEngine {
        let (client, applier) = crate::apply::offline();
        let metrics = Metrics::new().expect("metrics");
        let (_, leader) = watch::channel(false);
        LambdaEngine::new(
            LambdaConfig {
                mode: FdsMode::Whitelist,
                poll_interval: Duration::from_secs(30),
                api_rps: NonZeroU32::MIN,
                aliases: false,
                max_functions: 2000,
            },
            client,
            &[Scope::All],
            applier,
            metrics,
            EventSink::log_only(),
            LeaderGate::new(leader, crate::reconcile::Fence::always()),
        )
    }

    #[tokio::test]
    async fn a_write_task_that_panics_is_retried() {
        let mut engine = engine();
        let key = UpstreamKey::new("team", "a");
        let changed_at = Instant::now();
        engine.writes.spawn(key.clone(), changed_at, async {
            panic!("a bug in a write")
        });
        let QueueEvent::Finished(finished) = engine.writes.next().await else {
            panic!("the task ends");
        };
        engine.on_write(finished);
        assert!(!engine.writes.is_busy(&key), "not stuck in flight");
        assert!(engine.writes.is_waiting(&key), "retried after a backoff");
        assert_eq!(engine.metrics.errors(ErrorKind::LambdaTaskFailed), 1);
    }

    #[tokio::test]
    async fn a_sweep_task_that_panics_is_retried() {
        let mut engine = engine();
        let upstream: crate::crd::Upstream = serde_json::from_value(serde_json::json!({
            "apiVersion": "gloo.solo.io/v1", "kind": "Upstream",
            "metadata": {"name": "a", "namespace": "team", "uid": "u", "resourceVersion": "1"},
            "spec": {"aws": {"region": "eu-west-1"}},
        }))
        .expect("upstream");
        use kube::runtime::watcher::Event;
        for event in [Event::Init, Event::InitApply(upstream), Event::InitDone] {
            engine.on_input(LambdaInput::Upstream(Scope::All, Box::new(event)));
        }
        for event in [Event::Init, Event::InitDone] {
            engine.on_input(LambdaInput::Namespace(Box::new(event)));
        }
        let sweep = engine
            .state
            .sweep_keys()
            .next()
            .cloned()
            .expect("one sweep");
        assert!(engine.sweeps.is_dirty(&sweep), "due at once");
        engine.sweeps.pop_ready(&mut None);
        engine.sweeps.spawn(sweep.clone(), Instant::now(), async {
            panic!("a bug in a sweep")
        });
        let QueueEvent::Finished(finished) = engine.sweeps.next().await else {
            panic!("the task ends");
        };
        engine.on_sweep(finished);
        assert!(
            engine.sweeps.is_waiting(&sweep),
            "swept again after a backoff"
        );
        assert_eq!(engine.metrics.errors(ErrorKind::LambdaTaskFailed), 1);
    }
}
