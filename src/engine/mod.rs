//! The reconcile loop: watch events in, one plan per affected Service, writes out.
//!
//! One task owns the state, so there are no locks: it applies watch events to [`State`],
//! marks the Services they touch as dirty, and hands each dirty Service's plan to a bounded
//! pool of write jobs. Events for a Service whose job is running just keep it dirty, so they
//! coalesce into one re-plan when the job ends. Failures are retried with capped exponential
//! backoff and jitter (or the server's Retry-After); conflicts re-plan from fresh state.

pub mod backoff;
mod compact;
pub mod list_progress;
pub mod state;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::runtime::watcher;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::time::{delay_queue, DelayQueue};

use crate::apply::{Applier, Outcome};
use crate::crd::Upstream;
use crate::events::{EventSink, ObjectEvent, Regarding};
use crate::http::Health;
use crate::metrics::{Metrics, Source, WatchResource, WriteOp, WriteResult};
use crate::plan::{self, Action};
use crate::translate::{translate_service, TranslateSettings};

use backoff::Backoff;
use state::{upstream_key, ServiceKey, State, UpstreamKey};

/// Retries of a Service's writes.
const RETRY: Backoff = Backoff {
    base: Duration::from_millis(500),
    cap: Duration::from_secs(60),
};
/// How long in-flight writes may finish after shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What the watch streams deliver to the engine.
#[derive(Debug)]
pub enum Input {
    Service(usize, watcher::Event<Service>),
    Upstream(usize, watcher::Event<Upstream>),
    Namespace(watcher::Event<Namespace>),
    WatchError(WatchResource, String),
}

/// The engine's fixed settings.
pub struct EngineConfig {
    pub translate: TranslateSettings,
    pub resync_interval: Duration,
    pub write_concurrency: usize,
}

/// A finished write job.
struct JobResult {
    key: ServiceKey,
    changed_at: Instant,
    outcomes: Vec<(Outcome, Instant)>,
}

pub struct Engine {
    config: EngineConfig,
    state: State,
    applier: Applier,
    metrics: Metrics,
    events: EventSink,
    health: Health,
    leader: watch::Receiver<bool>,
    /// Services to re-plan, with the moment of the oldest change not yet written.
    dirty: BTreeMap<ServiceKey, Instant>,
    in_flight: HashSet<ServiceKey>,
    jobs: JoinSet<JobResult>,
    retries: DelayQueue<ServiceKey>,
    waiting: HashMap<ServiceKey, delay_queue::Key>,
    attempts: HashMap<ServiceKey, u32>,
    /// Warnings already recorded as Events, per Service, so a resync does not repeat them.
    reported_warnings: HashMap<ServiceKey, Vec<String>>,
    /// Names held by objects we do not own, already reported.
    reported_blocked: HashSet<UpstreamKey>,
    was_synced: bool,
}

impl Engine {
    pub fn new(
        config: EngineConfig,
        state: State,
        applier: Applier,
        metrics: Metrics,
        events: EventSink,
        health: Health,
        leader: watch::Receiver<bool>,
    ) -> Self {
        Self {
            config,
            state,
            applier,
            metrics,
            events,
            health,
            leader,
            dirty: BTreeMap::new(),
            in_flight: HashSet::new(),
            jobs: JoinSet::new(),
            retries: DelayQueue::new(),
            waiting: HashMap::new(),
            attempts: HashMap::new(),
            reported_warnings: HashMap::new(),
            reported_blocked: HashSet::new(),
            was_synced: false,
        }
    }

    /// Runs until `shutdown` is cancelled or every input stream has ended.
    pub async fn run(
        mut self,
        inputs: impl Stream<Item = Input> + Unpin,
        shutdown: CancellationToken,
    ) {
        let mut inputs = inputs;
        let mut resync = tokio::time::interval_at(
            Instant::now() + self.config.resync_interval,
            self.config.resync_interval,
        );
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leader = self.leader.clone();
        self.metrics.set_leader(*leader.borrow());
        loop {
            self.dispatch();
            self.metrics
                .set_pending(self.dirty.len() + self.in_flight.len());
            tokio::select! {
                _ = shutdown.cancelled() => break,
                input = inputs.next() => match input {
                    Some(input) => self.on_input(input),
                    None => break,
                },
                Some(done) = self.jobs.join_next(), if !self.jobs.is_empty() => match done {
                    Ok(result) => self.on_job_done(result),
                    Err(error) => tracing::error!(%error, "a write job ended abnormally"),
                },
                Some(expired) = self.retries.next(), if !self.retries.is_empty() => {
                    let key = expired.into_inner();
                    self.waiting.remove(&key);
                    self.mark_dirty(key, Instant::now());
                }
                _ = resync.tick() => {
                    tracing::debug!("periodic resync");
                    self.mark_all_dirty();
                    self.metrics.mark_synced(Source::Kubernetes);
                }
                changed = leader.changed() => {
                    if changed.is_err() {
                        // The election task is gone: without a lease, stop writing.
                        tracing::error!("leader election ended; no longer writing");
                        self.metrics.set_leader(false);
                        self.leader = watch::channel(false).1;
                        leader = self.leader.clone();
                        continue;
                    }
                    let is_leader = *leader.borrow_and_update();
                    tracing::info!(is_leader, "leadership changed");
                    self.metrics.set_leader(is_leader);
                    if is_leader {
                        self.mark_all_dirty();
                    }
                }
            }
        }
        self.finish_in_flight().await;
    }

    async fn finish_in_flight(&mut self) {
        if self.jobs.is_empty() {
            return;
        }
        tracing::info!(
            jobs = self.jobs.len(),
            "waiting for in-flight writes before exiting"
        );
        let deadline = tokio::time::sleep(SHUTDOWN_GRACE);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => {
                    tracing::warn!(jobs = self.jobs.len(), "abandoning in-flight writes at shutdown");
                    self.jobs.abort_all();
                    return;
                }
                done = self.jobs.join_next() => match done {
                    Some(Ok(result)) => self.on_job_done(result),
                    Some(Err(_)) => {}
                    None => return,
                },
            }
        }
    }

    fn on_input(&mut self, input: Input) {
        let now = Instant::now();
        let touched = match input {
            Input::Service(stream, event) => self.state.on_service_event(stream, event),
            Input::Upstream(stream, event) => self.state.on_upstream_event(stream, event),
            Input::Namespace(event) => self.state.on_namespace_event(event),
            Input::WatchError(resource, error) => {
                tracing::warn!(resource = resource.as_str(), %error, "watch failed; it restarts with backoff");
                self.metrics.watch_restarted(resource);
                Vec::new()
            }
        };
        for key in touched {
            self.mark_dirty(key, now);
        }
        self.metrics
            .set_upstreams(Source::Kubernetes, self.state.owned_upstream_count());
        if !self.was_synced && self.state.synced() {
            self.was_synced = true;
            tracing::info!(
                upstreams = self.state.owned_upstream_count(),
                "initial lists complete"
            );
            self.health.set_ready(true);
            self.metrics.mark_synced(Source::Kubernetes);
            self.mark_all_dirty();
        }
    }

    fn mark_dirty(&mut self, key: ServiceKey, changed_at: Instant) {
        self.dirty.entry(key).or_insert(changed_at);
    }

    fn mark_all_dirty(&mut self) {
        let now = Instant::now();
        for key in self.state.all_service_keys() {
            self.mark_dirty(key, now);
        }
    }

    /// Starts write jobs for dirty Services, as the leader, once the caches are complete.
    fn dispatch(&mut self) {
        if !self.state.synced() || !*self.leader.borrow() {
            return;
        }
        // Walk the dirty set in order from a cursor instead of copying it: with thousands of
        // dirty Services (initial sync, resync) this runs after every finished job.
        let mut cursor: Option<ServiceKey> = None;
        while self.jobs.len() < self.config.write_concurrency {
            let lower = match &cursor {
                Some(previous) => Bound::Excluded(previous),
                None => Bound::Unbounded,
            };
            let Some(key) = self
                .dirty
                .range::<ServiceKey, _>((lower, Bound::Unbounded))
                .map(|(key, _)| key)
                .find(|key| !self.in_flight.contains(*key) && !self.waiting.contains_key(*key))
                .cloned()
            else {
                break;
            };
            cursor = Some(key.clone());
            let Some(changed_at) = self.dirty.remove(&key) else {
                continue;
            };
            let actions = self.plan_for(&key);
            if actions.is_empty() {
                continue;
            }
            self.in_flight.insert(key.clone());
            let applier = self.applier.clone();
            self.jobs.spawn(async move {
                let mut outcomes = Vec::with_capacity(actions.len());
                for action in &actions {
                    let outcome = applier.apply(action).await;
                    outcomes.push((outcome, Instant::now()));
                }
                JobResult {
                    key,
                    changed_at,
                    outcomes,
                }
            });
        }
    }

    /// Desired vs owned for one Service; reports bad annotations and blocked names.
    fn plan_for(&mut self, key: &ServiceKey) -> Vec<Action> {
        let service = self.state.service_in_scope(key);
        let translation = service
            .as_ref()
            .map(|s| translate_service(s, &self.config.translate))
            .unwrap_or_default();
        self.report_warnings(key, service.as_ref(), &translation.warnings);

        let mut desired = Vec::with_capacity(translation.upstreams.len());
        for upstream in translation.upstreams {
            let Some(name) = upstream_key(&upstream) else {
                continue;
            };
            let blocker = if self.state.is_foreign(&name) {
                Some(("not_owned", not_owned_note(&name)))
            } else {
                match self.state.owner_of(&name) {
                    Some(owner) if &owner != key => Some(("name_collision", format!("Upstream {name} is already discovered from Service {owner}: Gloo's naming gives both the same name; it is left to {owner}"))),
                    _ => None,
                }
            };
            match blocker {
                Some((reason, note)) => {
                    self.state.wants(name.clone(), key.clone());
                    self.report_blocked(key, service.as_ref(), name, reason, note);
                }
                None => {
                    self.reported_blocked.remove(&name);
                    desired.push(upstream);
                }
            }
        }
        let observed = self.state.observed_for(key);
        let plan = plan::plan(&desired, &observed, self.state.synced());
        plan.actions
    }

    fn report_warnings(
        &mut self,
        key: &ServiceKey,
        service: Option<&Service>,
        warnings: &[crate::translate::TranslateWarning],
    ) {
        let messages: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        let previous = self.reported_warnings.get(key).cloned().unwrap_or_default();
        if messages == previous {
            return;
        }
        for warning in warnings {
            if previous.contains(&warning.to_string()) {
                continue;
            }
            self.metrics.skipped(warning.reason());
            self.events.record(ObjectEvent {
                regarding: Regarding::service(key, service.and_then(|s| s.metadata.uid.clone())),
                warning: true,
                reason: "InvalidAnnotation",
                note: warning.to_string(),
            });
        }
        if messages.is_empty() {
            self.reported_warnings.remove(key);
        } else {
            self.reported_warnings.insert(key.clone(), messages);
        }
    }

    fn report_blocked(
        &mut self,
        key: &ServiceKey,
        service: Option<&Service>,
        name: UpstreamKey,
        reason: &'static str,
        note: String,
    ) {
        if !self.reported_blocked.insert(name) {
            return;
        }
        self.metrics.skipped(reason);
        self.events.record(ObjectEvent {
            regarding: Regarding::service(key, service.and_then(|s| s.metadata.uid.clone())),
            warning: true,
            reason: if reason == "not_owned" {
                "UpstreamNotOwned"
            } else {
                "UpstreamNameCollision"
            },
            note,
        });
    }

    fn on_job_done(&mut self, result: JobResult) {
        let JobResult {
            key,
            changed_at,
            outcomes,
        } = result;
        self.in_flight.remove(&key);
        let mut retry_after: Option<Option<Duration>> = None;
        for (outcome, finished_at) in outcomes {
            let lag = finished_at.saturating_duration_since(changed_at);
            match outcome {
                Outcome::Written { op, upstream } => {
                    self.state.on_written(&upstream);
                    self.metrics
                        .record_write(Source::Kubernetes, op, WriteResult::Success);
                    self.metrics.observe_lag(Source::Kubernetes, lag);
                    tracing::info!(service = %key, upstream = ?upstream.metadata.name, op = op.as_str(), lag_ms = lag.as_millis() as u64, "upstream written");
                }
                Outcome::Deleted(name) => {
                    self.state.on_deleted(&name);
                    self.metrics.record_write(
                        Source::Kubernetes,
                        WriteOp::Delete,
                        WriteResult::Success,
                    );
                    self.metrics.observe_lag(Source::Kubernetes, lag);
                    tracing::info!(service = %key, upstream = %name, op = "delete", lag_ms = lag.as_millis() as u64, "upstream deleted");
                }
                Outcome::NotOwned(name) => {
                    self.metrics.record_write(
                        Source::Kubernetes,
                        WriteOp::Create,
                        WriteResult::Skipped,
                    );
                    self.state.mark_foreign(name.clone());
                    self.state.wants(name.clone(), key.clone());
                    let note = not_owned_note(&name);
                    let service = self.state.service_in_scope(&key);
                    self.report_blocked(&key, service.as_ref(), name, "not_owned", note);
                }
                Outcome::Conflict(name) => {
                    tracing::debug!(service = %key, upstream = %name, "conflict; re-planning");
                    self.metrics.record_write(
                        Source::Kubernetes,
                        WriteOp::Update,
                        WriteResult::Conflict,
                    );
                    retry_after.get_or_insert(None);
                }
                Outcome::DryRun => {}
                Outcome::Failed {
                    op,
                    kind,
                    retry_after: hint,
                    message,
                } => {
                    self.metrics
                        .record_write(Source::Kubernetes, op, WriteResult::Error);
                    self.metrics.error(kind);
                    tracing::warn!(service = %key, op = op.as_str(), kind, error = %message, "write failed; will retry");
                    let slot = retry_after.get_or_insert(None);
                    *slot = (*slot).max(hint);
                }
            }
        }
        match retry_after {
            None => {
                self.attempts.remove(&key);
            }
            Some(hint) => {
                // Keep the original change time, so the lag of the eventual write is honest.
                self.dirty.entry(key.clone()).or_insert(changed_at);
                self.schedule_retry(key, hint);
            }
        }
    }

    fn schedule_retry(&mut self, key: ServiceKey, hint: Option<Duration>) {
        let attempt = self.attempts.entry(key.clone()).or_insert(0);
        *attempt = attempt.saturating_add(1);
        let delay = hint.unwrap_or_else(|| RETRY.after(*attempt));
        if let Some(old) = self.waiting.remove(&key) {
            self.retries.remove(&old);
        }
        let handle = self.retries.insert(key.clone(), delay);
        self.waiting.insert(key, handle);
    }
}

fn not_owned_note(name: &UpstreamKey) -> String {
    format!(
        "Upstream {name} exists and was not written by discovery (no discovered_by=kubernetesplugin label); it is left alone"
    )
}
