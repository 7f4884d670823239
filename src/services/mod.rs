//! Service discovery: the loop that turns watch events into one plan per affected Service and
//! carries the plan out. `state` (the compact cache) and `plan` decide; this loop only feeds
//! the state, asks for plans, runs the writes on the shared work queue and reports.
//!
//! One task owns the state, so there are no locks. Events for a Service whose writes are
//! running just keep it dirty, so they coalesce into one re-plan when the writes end. Failures
//! are retried with backoff (or the server's Retry-After); conflicts re-plan from fresh state.

mod admission;
mod compact;
pub mod grant_cache;
pub mod grants;
pub mod state;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::apply::{Applier, Outcome};
use crate::events::{EventSink, ObjectEvent, Regarding};
use crate::health::LoopHealth;
use crate::metrics::{Metrics, Source, WriteOp, WriteResult};
use crate::model::{ErrorKind, EventReason, ServiceKey, UpstreamKey};
use crate::plan::{self, Action, Blocked, CachedPlan};
use crate::reconcile::{Backoff, Change, Finished, LeaderGate, ReportOnce, SayOnce, WorkQueue};
use crate::source::ServiceInput;
use crate::translate::{translate_service, GrantSettings, TranslateSettings, TranslateWarning};

use state::{Job, State};

/// Retries of a Service's writes.
const RETRY: Backoff = Backoff {
    base: Duration::from_millis(500),
    cap: Duration::from_secs(60),
};
/// How long in-flight writes may finish after shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The loop's fixed settings.
pub struct EngineConfig {
    pub translate: TranslateSettings,
    /// With `--reference-grants` (and a fixed write namespace): the grants to keep.
    pub grants: Option<GrantSettings>,
    pub resync_interval: Duration,
    pub write_concurrency: usize,
}

/// What one Service's write task did: each action's outcome and when it came back.
type Outcomes = Vec<(Outcome, Instant)>;

pub struct Engine {
    config: EngineConfig,
    state: State,
    applier: Applier,
    metrics: Metrics,
    events: EventSink,
    health: LoopHealth,
    leader: LeaderGate,
    queue: WorkQueue<Job, Outcomes>,
    /// Warnings already recorded as Events, per Service, so a resync does not repeat them.
    reported_warnings: ReportOnce<ServiceKey, Vec<String>>,
    /// Names held by someone else, already reported, per Service that wants them, so that they
    /// go with the Service.
    reported_blocked: ReportOnce<ServiceKey, BTreeMap<UpstreamKey, Blocked>>,
    /// Writes refused with 403 (a right taken away): one warning line until one goes through.
    forbidden: SayOnce,
    /// Writes refused by admission control, reported once per Upstream and change.
    refusals: admission::Refusals,
    /// A watch failed and none has answered since.
    watch_failed: bool,
    was_synced: bool,
}

impl Engine {
    pub fn new(
        config: EngineConfig,
        state: State,
        applier: Applier,
        metrics: Metrics,
        events: EventSink,
        health: LoopHealth,
        leader: LeaderGate,
    ) -> Self {
        Self {
            config,
            state,
            applier,
            metrics,
            events,
            health,
            leader,
            queue: WorkQueue::new(RETRY),
            reported_warnings: ReportOnce::default(),
            reported_blocked: ReportOnce::default(),
            forbidden: SayOnce::default(),
            refusals: admission::Refusals::default(),
            watch_failed: false,
            was_synced: false,
        }
    }

    /// Runs until `shutdown` is cancelled or every input stream has ended.
    pub async fn run(
        mut self,
        mut inputs: impl Stream<Item = ServiceInput> + Unpin,
        shutdown: CancellationToken,
    ) {
        let mut resync = tokio::time::interval_at(
            Instant::now() + self.config.resync_interval,
            self.config.resync_interval,
        );
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.metrics.set_leader(self.leader.is_open());
        loop {
            self.dispatch();
            // After a dispatch, ready jobs wait only for a free slot: running tasks are the work.
            self.health.working(self.queue.running() > 0);
            self.metrics.set_pending(self.queue.pending());
            tokio::select! {
                _ = shutdown.cancelled() => break,
                input = inputs.next() => match input {
                    Some(input) => self.on_input(input),
                    None => break,
                },
                event = self.queue.next() => {
                    if let crate::reconcile::QueueEvent::Finished(finished) = event {
                        self.on_finished(finished);
                    }
                }
                _ = resync.tick() => {
                    tracing::debug!("periodic resync");
                    self.mark_all_dirty();
                    self.metrics.mark_synced(Source::Kubernetes);
                }
                is_leader = self.leader.changed() => {
                    tracing::info!(is_leader, "leadership changed");
                    self.metrics.set_leader(is_leader);
                    if is_leader {
                        self.mark_all_dirty();
                    }
                }
            }
        }
        for finished in self.queue.drain(SHUTDOWN_GRACE).await {
            self.on_finished(finished);
        }
    }

    fn on_input(&mut self, input: ServiceInput) {
        let now = Instant::now();
        if input.is_answer() && std::mem::take(&mut self.watch_failed) {
            // The API server answers again: what failed while it was away goes now, not after
            // backoffs that grew during the outage.
            self.queue.retry_now();
        }
        let touched = match input {
            ServiceInput::Service(scope, event) => self.state.on_service_event(&scope, event),
            ServiceInput::Upstream(scope, event) => self.state.on_upstream_event(&scope, event),
            ServiceInput::Namespace(event) => self.state.on_namespace_event(event),
            ServiceInput::Grant(scope, event) => {
                let jobs = self.state.on_grant_event(&scope, event);
                self.metrics
                    .set_reference_grants(self.state.owned_grant_count());
                jobs
            }
            ServiceInput::GrantsUnavailable => {
                self.on_grants_unavailable();
                Vec::new()
            }
            ServiceInput::WatchError(failure) => {
                self.watch_failed = true;
                if failure.repeated {
                    tracing::debug!(resource = failure.resource.as_str(), error = %failure.message, "watch still failing; it restarts with backoff");
                } else {
                    tracing::warn!(resource = failure.resource.as_str(), error = %failure.message, "watch failed; it restarts with backoff (nothing is deleted meanwhile)");
                }
                if failure.counted {
                    self.metrics.watch_restarted(failure.resource);
                }
                Vec::new()
            }
        };
        for key in touched {
            self.queue.mark(key, now);
        }
        self.metrics
            .set_upstreams(Source::Kubernetes, self.state.owned_upstream_count());
        if !self.was_synced && self.state.synced() {
            self.was_synced = true;
            tracing::info!(
                upstreams = self.state.owned_upstream_count(),
                "initial lists complete"
            );
            self.health.synced();
            self.metrics.mark_synced(Source::Kubernetes);
            self.mark_all_dirty();
        }
    }

    fn mark_all_dirty(&mut self) {
        let now = Instant::now();
        for job in self.state.all_jobs() {
            self.queue.mark(job, now);
        }
    }

    /// Starts write tasks for dirty Services, as the leader, once the caches are complete.
    fn dispatch(&mut self) {
        if !self.state.synced() || !self.leader.is_open() {
            return;
        }
        let mut cursor = None;
        while self.queue.running() < self.config.write_concurrency {
            let Some((job, changed_at)) = self.queue.pop_ready(&mut cursor) else {
                break;
            };
            let work = match &job {
                Job::Service(key) => self.plan_for(key),
                Job::Orphan(name) => CachedPlan {
                    plan: plan::Plan {
                        actions: self.plan_collection(name),
                        ..Default::default()
                    },
                    to_read: Vec::new(),
                },
            };
            if work.is_empty() {
                // Nothing to do is done: a job that had failed and whose Service went (or got
                // right by itself) must not keep its retry count.
                self.queue.succeeded(&job);
                self.refusals.settle(&job);
                continue;
            }
            let applier = self.applier.clone();
            self.queue.spawn(job, changed_at, async move {
                let CachedPlan { plan, to_read } = work;
                let mut outcomes = Vec::with_capacity(plan.actions.len() + to_read.len());
                // The Upstreams whose fingerprint differs first: each read fresh, then written
                // exactly as it needs; then the creates and deletes the cache decided.
                for desired in &to_read {
                    let outcome = match applier.read_for_write(desired).await {
                        Ok(action) => applier.apply(&action).await,
                        Err(outcome) => outcome,
                    };
                    outcomes.push((outcome, Instant::now()));
                }
                for action in &plan.actions {
                    outcomes.push((applier.apply(action).await, Instant::now()));
                }
                outcomes
            });
        }
    }

    /// Translates and plans one Service from the cache; reports bad annotations and blocked
    /// names.
    fn plan_for(&mut self, key: &ServiceKey) -> CachedPlan {
        let service = self.state.service_in_scope(key);
        let mut translation = service
            .as_ref()
            .map(|s| translate_service(s, &self.config.translate))
            .unwrap_or_default();
        let route_namespaces = self.route_namespaces(service.as_ref(), &mut translation.warnings);
        let uid = service.as_ref().and_then(|s| s.metadata.uid.clone());
        self.report_warnings(key, uid.clone(), &translation.warnings);

        let owned = self.state.owned_for(key);
        let CachedPlan { mut plan, to_read } = plan::plan_cached(
            key,
            &translation.upstreams,
            &owned,
            &self.state,
            self.state.synced(),
        );
        self.plan_grants_for(key, &translation.upstreams, &route_namespaces, &mut plan);
        let blocked = plan
            .blocked
            .into_iter()
            .map(|blocked| (blocked.name.clone(), blocked))
            .collect();
        self.report_blocked(key, uid, blocked);
        for action in &plan.actions {
            if let Action::Update {
                desired, reason, ..
            } = action
            {
                tracing::debug!(service = %key, upstream = ?desired.metadata.name, ?reason, "update planned");
            }
        }
        tracing::debug!(
            service = %key,
            writes = plan.actions.len(),
            to_read = to_read.len(),
            unchanged = plan.unchanged,
            deletes_held_back = plan.deletes_held_back,
            "planned"
        );
        CachedPlan {
            plan: plan::Plan {
                blocked: Vec::new(),
                ..plan
            },
            to_read,
        }
    }

    /// Plans the collection of an owned Upstream no in-scope Service maps to.
    fn plan_collection(&mut self, name: &UpstreamKey) -> Vec<Action> {
        // The grant goes first: it must never outlive its Upstream.
        let mut actions = self.collect_grant(name);
        if let Some(unclaimed) = self.state.unclaimed(name) {
            let plan = plan::collect(&unclaimed, self.state.synced());
            tracing::debug!(upstream = %name, deletes_held_back = plan.deletes_held_back, "unclaimed");
            actions.extend(plan.actions);
        }
        actions
    }

    fn report_warnings(
        &mut self,
        key: &ServiceKey,
        uid: Option<String>,
        warnings: &[TranslateWarning],
    ) {
        let messages: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        let current = (!messages.is_empty()).then_some(messages);
        let Change::Raised { previous } = self.reported_warnings.update(key, current) else {
            return;
        };
        let previous = previous.unwrap_or_default();
        for warning in warnings {
            let note = warning.to_string();
            if previous.contains(&note) {
                continue;
            }
            self.metrics.skipped(warning.reason());
            self.events.record(ObjectEvent {
                regarding: Regarding::service(key, uid.clone()),
                warning: true,
                reason: EventReason::InvalidAnnotation,
                note,
            });
        }
    }

    /// Records the names `key` wants and cannot have (all of them: an empty set clears the
    /// Service's entry); each newly blocked name gets one Warning Event and one count.
    fn report_blocked(
        &mut self,
        key: &ServiceKey,
        uid: Option<String>,
        blocked: BTreeMap<UpstreamKey, Blocked>,
    ) {
        let current = (!blocked.is_empty()).then(|| blocked.clone());
        let Change::Raised { previous } = self.reported_blocked.update(key, current) else {
            return;
        };
        let previous = previous.unwrap_or_default();
        for (name, blocked) in blocked {
            if previous.get(&name) == Some(&blocked) {
                continue;
            }
            self.metrics.skipped(blocked.skip_reason());
            self.events.record(ObjectEvent {
                regarding: Regarding::service(key, uid.clone()),
                warning: true,
                reason: blocked.event_reason(),
                note: blocked.note(),
            });
        }
    }

    fn on_finished(&mut self, finished: Finished<Job, Outcomes>) {
        self.health.progressed();
        let Finished {
            key: job,
            changed_at,
            output,
        } = finished;
        let outcomes = match output {
            Ok(outcomes) => outcomes,
            Err(error) => {
                // A bug, not a server's answer: retry like a failure, so the Service is planned
                // again instead of being forgotten.
                tracing::error!(%job, %error, "a write task ended abnormally; retrying");
                self.metrics.error(ErrorKind::TaskFailed);
                self.queue.retry(job, changed_at, None);
                return;
            }
        };
        let mut retry_after: Option<Option<Duration>> = None;
        let mut plan_again = false;
        for (outcome, finished_at) in outcomes {
            let lag = finished_at.saturating_duration_since(changed_at);
            match outcome {
                Outcome::Written { op, upstream } => {
                    plan_again |= self.grants_follow(op);
                    self.forbidden.clear();
                    if let Some(key) = UpstreamKey::of(&upstream.metadata) {
                        self.on_allowed(&job, &key, op);
                    }
                    self.state.on_written(&upstream);
                    self.metrics
                        .record_write(Source::Kubernetes, op, WriteResult::Success);
                    self.metrics.observe_lag(Source::Kubernetes, lag);
                    tracing::info!(%job, upstream = ?upstream.metadata.name, op = op.as_str(), lag_ms = lag.as_millis() as u64, "upstream written");
                }
                Outcome::Deleted(name) => {
                    self.on_allowed(&job, &name, WriteOp::Delete);
                    self.state.on_deleted(&name);
                    self.metrics.record_write(
                        Source::Kubernetes,
                        WriteOp::Delete,
                        WriteResult::Success,
                    );
                    self.metrics.observe_lag(Source::Kubernetes, lag);
                    tracing::info!(%job, upstream = %name, op = "delete", lag_ms = lag.as_millis() as u64, "upstream deleted");
                }
                Outcome::NotOwned(name) => {
                    self.metrics.record_write(
                        Source::Kubernetes,
                        WriteOp::Create,
                        WriteResult::Skipped,
                    );
                    self.state.mark_foreign(name.clone());
                    self.report_not_owned(&job, name, plan::BlockedBy::NotOwned);
                }
                Outcome::Grant(outcome) => self.on_grant_outcome(&job, outcome, &mut retry_after),
                Outcome::Stale(current) => {
                    tracing::debug!(%job, upstream = ?current.metadata.name, "changed since planned; re-planning from it as it is now");
                    self.state.on_written(&current);
                    self.metrics.record_write(
                        Source::Kubernetes,
                        WriteOp::Update,
                        WriteResult::Conflict,
                    );
                    retry_after.get_or_insert(None);
                }
                Outcome::Conflict(name) => {
                    tracing::debug!(%job, upstream = %name, "conflict; re-planning");
                    self.metrics.record_write(
                        Source::Kubernetes,
                        WriteOp::Update,
                        WriteResult::Conflict,
                    );
                    retry_after.get_or_insert(None);
                }
                Outcome::Unchanged(current) => {
                    tracing::debug!(%job, upstream = ?current.metadata.name, "read fresh: already as desired");
                    self.state.on_written(&current);
                }
                Outcome::DryRun => {}
                Outcome::Fenced => {
                    // Not an error: whoever leads now writes it (this replica re-plans all
                    // when it leads again).
                    tracing::debug!(%job, "not written: leadership lapsed");
                    retry_after.get_or_insert(None);
                }
                Outcome::Failed {
                    op,
                    kind,
                    retry_after: hint,
                    message,
                    refused,
                } => {
                    self.metrics
                        .record_write(Source::Kubernetes, op, WriteResult::Error);
                    self.metrics.error(kind);
                    if let Some(refused) = refused {
                        self.on_refused(&job, op, &refused);
                    } else if kind != ErrorKind::Forbidden || self.forbidden.first() {
                        tracing::warn!(%job, op = op.as_str(), kind = kind.as_str(), error = %message, "write failed; will retry");
                    } else {
                        tracing::debug!(%job, op = op.as_str(), error = %message, "write forbidden again; will retry (said once until a write goes through)");
                    }
                    let slot = retry_after.get_or_insert(None);
                    *slot = (*slot).max(hint);
                }
            }
        }
        match retry_after {
            None => {
                self.queue.succeeded(&job);
                self.refusals.settle(&job);
                if plan_again {
                    self.queue.mark(job, Instant::now());
                }
            }
            Some(hint) => {
                self.queue.retry(job, changed_at, hint);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;
    use tokio::sync::watch;

    use crate::model::Scope;
    use crate::selector::LabelSelector;
    use crate::translate::WriteNamespace;

    /// An engine whose client points nowhere: nothing here is sent.
    fn engine() -> Engine {
        engine_leading(false)
    }

    fn engine_leading(is_leader: bool) -> Engine {
        let (_, applier) = crate::apply::offline();
        let (_, leader) = watch::channel(is_leader);
        Engine::new(
            EngineConfig {
                translate: TranslateSettings::new("gloo-system"),
                grants: None,
                resync_interval: Duration::from_secs(600),
                write_concurrency: 1,
            },
            State::new(
                &[Scope::All],
                &[Scope::All],
                LabelSelector::default(),
                WriteNamespace::Fixed("gloo-system".into()),
            ),
            applier,
            Metrics::new().expect("metrics"),
            EventSink::log_only(),
            LoopHealth::default(),
            LeaderGate::new(leader, crate::reconcile::Fence::always()),
        )
    }

    #[tokio::test]
    async fn a_write_task_that_panics_is_retried() {
        let mut engine = engine();
        let key = Job::Service(ServiceKey::new("shop", "web"));
        let changed_at = Instant::now();
        engine.queue.spawn(key.clone(), changed_at, async {
            panic!("a bug in a write")
        });
        let crate::reconcile::QueueEvent::Finished(finished) = engine.queue.next().await else {
            panic!("the task ends");
        };
        engine.on_finished(finished);
        assert!(!engine.queue.is_busy(&key), "not stuck in flight");
        assert!(engine.queue.is_waiting(&key), "retried after a backoff");
        assert_eq!(engine.metrics.errors(ErrorKind::TaskFailed), 1);
        let crate::reconcile::QueueEvent::Due(due) = engine.queue.next().await else {
            panic!("the retry comes due");
        };
        assert_eq!(due, key);
        assert_eq!(
            engine.queue.pop_ready(&mut None),
            Some((key, changed_at)),
            "the original change time"
        );
    }

    impl Engine {
        /// Entries of every per-object map the loop and its cache keep.
        fn bookkeeping(&self) -> usize {
            self.state.entries()
                + self.queue.tracked()
                + self.reported_warnings.len()
                + self.reported_blocked.len()
        }

        /// Plans and runs (dry run) everything pending, as the loop would.
        async fn settle(&mut self) {
            loop {
                self.dispatch();
                if self.queue.pending() == 0 {
                    return;
                }
                if let crate::reconcile::QueueEvent::Finished(finished) = self.queue.next().await {
                    self.on_finished(finished);
                }
            }
        }
    }

    fn service(name: &str, annotations: serde_json::Value) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"), "annotations": annotations},
            "spec": {"ports": [{"name": "http", "port": 80}], "selector": {"app": name}},
        }))
        .expect("service")
    }

    #[tokio::test]
    async fn churn_leaves_no_bookkeeping_behind() {
        use kube::runtime::watcher::Event;
        let mut engine = engine_leading(true);
        for input in [
            ServiceInput::Service(Scope::All, Event::Init),
            ServiceInput::Service(Scope::All, Event::InitDone),
            ServiceInput::Upstream(Scope::All, Event::Init),
            ServiceInput::Upstream(Scope::All, Event::InitDone),
        ] {
            engine.on_input(input);
        }
        // Someone else's object holds one name, so one Service of each round is blocked.
        let foreign: crate::crd::Upstream = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "shop-s0-80", "namespace": "gloo-system", "uid": "f", "resourceVersion": "1"},
            "spec": {"static": {"hosts": [{"addr": "10.0.0.1", "port": 80}]}},
        }))
        .expect("upstream");
        engine.on_input(ServiceInput::Upstream(Scope::All, Event::Apply(foreign)));
        engine.settle().await;
        let before = engine.bookkeeping();

        for round in 0..20 {
            let services: Vec<Service> = (0..50)
                .map(|i| {
                    // Every fifth one has an annotation that gives a warning.
                    let annotations = match i % 5 {
                        0 => serde_json::json!({"gloo.solo.io/upstream_config": "{not json"}),
                        _ => serde_json::json!({}),
                    };
                    service(&format!("s{i}"), annotations)
                })
                .collect();
            for service in &services {
                engine.on_input(ServiceInput::Service(
                    Scope::All,
                    Event::Apply(service.clone()),
                ));
            }
            engine.settle().await;
            assert!(engine.reported_blocked.len() == 1 && engine.reported_warnings.len() == 10);
            for service in services {
                engine.on_input(ServiceInput::Service(Scope::All, Event::Delete(service)));
            }
            engine.settle().await;
            assert_eq!(engine.bookkeeping(), before, "after round {round}");
        }
    }
}
