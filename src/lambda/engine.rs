//! The function discovery loop: one task owns the aws Upstreams, the namespaces' labels, the
//! credentials and one sweep state per account and region; it starts sweeps when they are due,
//! and writes an Upstream's `lambdaFunctions` only when its answer changed.
//!
//! Only the leader sweeps and writes; followers keep their caches warm. A failed sweep leaves
//! every list as it is, is reported on each Upstream that shares it (Event, metric, log) and is
//! retried with capped exponential backoff.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use regex::Regex;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::aws::{SweepError, Sweepers};
use super::functions::{self, Listing};
use super::secrets::{SecretUpdate, SecretWatches};
use super::selection::{discovers, FUNCTION_DISCOVERY_LABEL};
use super::target::{
    AwsTarget, CredentialSource, SecretKey, StaticKeys, SweepKey, FUNCTION_FILTER_ANNOTATION,
};
use crate::apply::{Applier, Outcome};
use crate::config::{FdsMode, LambdaArgs};
use crate::crd::Upstream;
use crate::engine::backoff::Backoff;
use crate::engine::list_progress::ListProgress;
use crate::engine::state::UpstreamKey;
use crate::events::{EventSink, ObjectEvent, Regarding};
use crate::metrics::{Metrics, Source, WatchResource, WriteOp, WriteResult};

/// Retries of failed sweeps and writes.
const RETRY: Backoff = Backoff {
    base: Duration::from_secs(1),
    cap: Duration::from_secs(300),
};
/// Upstream writes of function discovery in flight at once (the API limiter is shared).
const WRITE_CONCURRENCY: usize = 8;
const PAGE_SIZE: u32 = 500;

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

/// What the watch streams deliver.
#[derive(Debug)]
pub enum Input {
    Upstream(usize, Box<watcher::Event<Upstream>>),
    Namespace(Box<watcher::Event<PartialObjectMeta<Namespace>>>),
    WatchError(WatchResource, String),
}

/// Upstreams in each of `scopes` (`None`: all namespaces) and the labels of every namespace.
pub fn inputs(client: &Client, scopes: &[Option<String>]) -> BoxStream<'static, Input> {
    let config = watcher::Config::default().page_size(PAGE_SIZE);
    let mut streams: Vec<BoxStream<'static, Input>> = scopes
        .iter()
        .enumerate()
        .map(|(index, scope)| {
            let api: Api<Upstream> = match scope {
                Some(namespace) => Api::namespaced(client.clone(), namespace),
                None => Api::all(client.clone()),
            };
            watcher(api, config.clone())
                .default_backoff()
                .map(move |event| match event {
                    Ok(event) => Input::Upstream(index, Box::new(event)),
                    Err(error) => Input::WatchError(WatchResource::Upstreams, error.to_string()),
                })
                .boxed()
        })
        .collect();
    streams.push(
        watcher(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            config,
        )
        .default_backoff()
        .map(|event| match event {
            Ok(event) => Input::Namespace(Box::new(event)),
            Err(error) => Input::WatchError(WatchResource::Namespaces, error.to_string()),
        })
        .boxed(),
    );
    stream::select_all(streams).boxed()
}

/// What is known of a Secret an Upstream names.
#[derive(Debug, Clone)]
enum SecretState {
    Missing,
    /// Its watch fails (e.g. no RBAC to read it); retried with backoff by the watcher.
    Unreadable(String),
    Present(Result<StaticKeys, Vec<&'static str>>),
}

/// One account and region.
#[derive(Debug)]
struct Group {
    members: BTreeSet<UpstreamKey>,
    due: Instant,
    running: bool,
    failures: u32,
    listing: Option<Arc<Listing>>,
    /// The last failure, until a sweep succeeds.
    error: Option<SweepError>,
}

impl Group {
    fn new(now: Instant) -> Self {
        Self {
            members: BTreeSet::new(),
            due: now,
            running: false,
            failures: 0,
            listing: None,
            error: None,
        }
    }
}

/// Why an Upstream cannot be kept current right now; reported once per change.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Problem {
    reason: &'static str,
    note: String,
}

struct SweepDone {
    key: SweepKey,
    result: Result<Listing, SweepError>,
}

struct WriteDone {
    key: UpstreamKey,
    changed_at: Instant,
    written: Vec<crate::crd::LambdaFunction>,
    outcome: Outcome,
}

pub struct LambdaEngine {
    config: LambdaConfig,
    applier: Applier,
    metrics: Metrics,
    events: EventSink,
    leader: watch::Receiver<bool>,
    sweepers: Sweepers,
    secret_watches: SecretWatches,
    secret_updates: mpsc::UnboundedReceiver<SecretUpdate>,

    targets: BTreeMap<UpstreamKey, AwsTarget>,
    upstream_lists: Vec<ListProgress<UpstreamKey>>,
    namespace_labels: HashMap<String, Option<String>>,
    namespace_list: ListProgress<String>,
    secrets: HashMap<SecretKey, SecretState>,
    groups: HashMap<SweepKey, Group>,
    membership: HashMap<UpstreamKey, SweepKey>,
    /// Upstreams to re-evaluate, with the moment of the oldest change not yet written.
    dirty: BTreeMap<UpstreamKey, Instant>,
    regroup: bool,
    sweeps: JoinSet<SweepDone>,
    writes: JoinSet<WriteDone>,
    writing: HashSet<UpstreamKey>,
    write_retries: HashMap<UpstreamKey, (Instant, Instant)>,
    write_failures: HashMap<UpstreamKey, u32>,
    reported: HashMap<UpstreamKey, Problem>,
    counted: HashSet<UpstreamKey>,
    /// What each running sweep or write task works on, to recover from one that panicked.
    task_keys: HashMap<tokio::task::Id, TaskKey>,
}

#[derive(Debug)]
enum TaskKey {
    Sweep(SweepKey),
    Write(UpstreamKey),
}

impl LambdaEngine {
    pub fn new(
        config: LambdaConfig,
        client: Client,
        scopes: &[Option<String>],
        applier: Applier,
        metrics: Metrics,
        events: EventSink,
        leader: watch::Receiver<bool>,
    ) -> Self {
        let (secret_watches, secret_updates) = SecretWatches::new(client);
        Self {
            sweepers: Sweepers::new(metrics.clone(), config.api_rps),
            config,
            applier,
            metrics,
            events,
            leader,
            secret_watches,
            secret_updates,
            targets: BTreeMap::new(),
            upstream_lists: scopes.iter().cloned().map(ListProgress::new).collect(),
            namespace_labels: HashMap::new(),
            namespace_list: ListProgress::new(None),
            secrets: HashMap::new(),
            groups: HashMap::new(),
            membership: HashMap::new(),
            dirty: BTreeMap::new(),
            regroup: false,
            sweeps: JoinSet::new(),
            writes: JoinSet::new(),
            writing: HashSet::new(),
            write_retries: HashMap::new(),
            write_failures: HashMap::new(),
            reported: HashMap::new(),
            counted: HashSet::new(),
            task_keys: HashMap::new(),
        }
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(
        mut self,
        mut inputs: impl Stream<Item = Input> + Unpin,
        shutdown: CancellationToken,
    ) {
        tracing::info!(
            mode = ?self.config.mode,
            poll_interval = ?self.config.poll_interval,
            api_rps = self.config.api_rps.get(),
            aliases = self.config.aliases,
            max_functions = self.config.max_functions,
            "function discovery on"
        );
        let mut was_leader = *self.leader.borrow();
        loop {
            let wake = self.next_wake();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                input = inputs.next() => match input {
                    Some(input) => self.on_input(input),
                    None => break,
                },
                Some(update) = self.secret_updates.recv() => self.on_secret(update),
                Some(done) = self.sweeps.join_next_with_id(), if !self.sweeps.is_empty() => {
                    match done {
                        Ok((id, done)) => {
                            self.task_keys.remove(&id);
                            self.on_sweep(done);
                        }
                        Err(error) => self.on_lost_task(error),
                    }
                }
                Some(done) = self.writes.join_next_with_id(), if !self.writes.is_empty() => {
                    match done {
                        Ok((id, done)) => {
                            self.task_keys.remove(&id);
                            self.on_write(done);
                        }
                        Err(error) => self.on_lost_task(error),
                    }
                }
                _ = sleep_until(wake) => {}
                changed = self.leader.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
            }
            let leader = *self.leader.borrow();
            if leader && !was_leader {
                // A new leader sweeps at once: the last one may have stopped mid-interval.
                let now = Instant::now();
                for group in self.groups.values_mut() {
                    group.due = now;
                }
            }
            was_leader = leader;
            self.step();
        }
        self.sweeps.abort_all();
        self.writes.abort_all();
    }

    fn synced(&self) -> bool {
        self.namespace_list.completed_once()
            && self.upstream_lists.iter().all(ListProgress::completed_once)
    }

    fn next_wake(&self) -> Option<Instant> {
        let sweeps = self
            .groups
            .values()
            .filter(|g| !g.running && !g.members.is_empty())
            .map(|g| g.due);
        let retries = self.write_retries.values().map(|(at, _)| *at);
        sweeps.chain(retries).min()
    }

    fn on_input(&mut self, input: Input) {
        match input {
            Input::Upstream(index, event) => self.on_upstream(index, *event),
            Input::Namespace(event) => self.on_namespace(*event),
            Input::WatchError(resource, message) => {
                self.metrics.watch_restarted(resource);
                tracing::warn!(resource = resource.as_str(), error = %message, "function discovery: watch failed; retrying with backoff");
            }
        }
    }

    fn on_upstream(&mut self, index: usize, event: watcher::Event<Upstream>) {
        match event {
            watcher::Event::Init => {
                if let Some(list) = self.upstream_lists.get_mut(index) {
                    list.started();
                }
            }
            watcher::Event::InitApply(upstream) | watcher::Event::Apply(upstream) => {
                let key = crate::engine::state::upstream_key(&upstream);
                if let (Some(list), Some(key)) = (self.upstream_lists.get_mut(index), &key) {
                    list.saw(key);
                }
                match (AwsTarget::from_upstream(&upstream), key) {
                    (Some(target), _) => self.upsert(target),
                    (None, Some(key)) => self.remove(&key),
                    (None, None) => {}
                }
            }
            watcher::Event::Delete(upstream) => {
                if let Some(key) = crate::engine::state::upstream_key(&upstream) {
                    self.remove(&key);
                }
            }
            watcher::Event::InitDone => {
                let Some(list) = self.upstream_lists.get_mut(index) else {
                    return;
                };
                // An end without a beginning (never sent by the watcher) collects nothing.
                let Some(seen) = list.finished() else {
                    return;
                };
                let list = &self.upstream_lists[index];
                let gone: Vec<UpstreamKey> = self
                    .targets
                    .keys()
                    .filter(|k| list.covers(&k.namespace) && !seen.contains(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    self.remove(&key);
                }
                self.regroup = true;
            }
        }
    }

    fn upsert(&mut self, target: AwsTarget) {
        let key = target.key.clone();
        let changed = self.targets.get(&key) != Some(&target);
        if !changed {
            return;
        }
        let old = self.targets.insert(key.clone(), target);
        let credentials_changed = old.as_ref().is_none_or(|old| {
            let new = &self.targets[&key];
            old.region != new.region
                || old.secret != new.secret
                || old.role_arn != new.role_arn
                || old.discovery_label != new.discovery_label
        });
        if credentials_changed {
            self.regroup = true;
        }
        self.dirty.entry(key).or_insert_with(Instant::now);
    }

    fn remove(&mut self, key: &UpstreamKey) {
        if self.targets.remove(key).is_some() {
            self.regroup = true;
            self.forget(key);
        }
    }

    /// Drops what is kept about an Upstream no longer under function discovery.
    fn forget(&mut self, key: &UpstreamKey) {
        self.dirty.remove(key);
        self.write_retries.remove(key);
        self.write_failures.remove(key);
        self.reported.remove(key);
        if self.counted.remove(key) {
            self.metrics
                .forget_lambda_functions(&key.namespace, &key.name);
        }
    }

    fn on_namespace(&mut self, event: watcher::Event<PartialObjectMeta<Namespace>>) {
        let label_of = |ns: &PartialObjectMeta<Namespace>| {
            ns.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(FUNCTION_DISCOVERY_LABEL))
                .cloned()
        };
        match event {
            watcher::Event::Init => self.namespace_list.started(),
            watcher::Event::InitApply(ns) | watcher::Event::Apply(ns) => {
                let Some(name) = ns.metadata.name.clone() else {
                    return;
                };
                self.namespace_list.saw(&name);
                let label = label_of(&ns);
                if self.namespace_labels.get(&name) != Some(&label) {
                    self.namespace_labels.insert(name, label);
                    self.regroup = true;
                }
            }
            watcher::Event::Delete(ns) => {
                if let Some(name) = ns.metadata.name.as_ref() {
                    self.namespace_labels.remove(name);
                    self.regroup = true;
                }
            }
            watcher::Event::InitDone => {
                if let Some(seen) = self.namespace_list.finished() {
                    self.namespace_labels.retain(|name, _| seen.contains(name));
                }
                self.regroup = true;
            }
        }
    }

    fn on_secret(&mut self, update: SecretUpdate) {
        let (key, state) = match update {
            SecretUpdate::Present(key, keys) => (key, SecretState::Present(keys)),
            SecretUpdate::Missing(key) => (key, SecretState::Missing),
            SecretUpdate::WatchError(key, message) => {
                self.metrics.watch_restarted(WatchResource::Secrets);
                tracing::warn!(secret = %key, error = %message, "function discovery: cannot watch a credentials Secret; retrying with backoff");
                // Keys already read stay in use; only a Secret never read is reported.
                if self.secrets.contains_key(&key) {
                    return;
                }
                (key, SecretState::Unreadable(message))
            }
        };
        self.secrets.insert(key, state);
        self.regroup = true;
    }

    fn selected(&self, target: &AwsTarget) -> bool {
        let namespace_label = self
            .namespace_labels
            .get(&target.key.namespace)
            .and_then(Option::as_deref);
        discovers(
            self.config.mode,
            target.discovery_label.as_deref(),
            &target.key.namespace,
            namespace_label,
        )
    }

    /// The sweep an Upstream belongs to, or why it has none.
    fn sweep_key(&self, target: &AwsTarget) -> Result<Option<SweepKey>, Problem> {
        let Some(region) = target.region.clone() else {
            return Err(Problem {
                reason: "InvalidAwsUpstream",
                note: "spec.aws.region is not set; functions cannot be listed".into(),
            });
        };
        let credentials = match &target.secret {
            None => CredentialSource::DefaultChain,
            Some(secret) => match self.secrets.get(secret) {
                // Its watch has not answered yet.
                None => return Ok(None),
                Some(SecretState::Missing) => {
                    return Err(Problem {
                        reason: "LambdaCredentialsMissing",
                        note: format!("the Secret {secret} named by spec.aws.secretRef does not exist; lambdaFunctions left as they are"),
                    })
                }
                Some(SecretState::Present(Err(missing))) => {
                    return Err(Problem {
                        reason: "LambdaCredentialsMissing",
                        note: format!(
                            "the Secret {secret} has no {}; lambdaFunctions left as they are",
                            missing.join(" or ")
                        ),
                    })
                }
                Some(SecretState::Unreadable(error)) => {
                    return Err(Problem {
                        reason: "LambdaCredentialsMissing",
                        note: format!("cannot read the Secret {secret} ({error}); lambdaFunctions left as they are"),
                    })
                }
                Some(SecretState::Present(Ok(keys))) => CredentialSource::Static(keys.clone()),
            },
        };
        Ok(Some(SweepKey {
            credentials,
            role_arn: target.role_arn.clone(),
            region,
        }))
    }

    /// Recomputes which Upstreams share which sweep, which Secrets to watch and what to forget.
    fn regroup(&mut self) {
        let now = Instant::now();
        let mut membership = HashMap::new();
        let mut wanted_secrets = BTreeSet::new();
        let mut selected = 0;
        let mut unselected = Vec::new();
        let mut problems = Vec::new();
        for target in self.targets.values() {
            if !self.selected(target) {
                unselected.push(target.key.clone());
                continue;
            }
            selected += 1;
            if let Some(secret) = &target.secret {
                wanted_secrets.insert(secret.clone());
            }
            match self.sweep_key(target) {
                Ok(Some(key)) => {
                    membership.insert(target.key.clone(), key);
                }
                Ok(None) => {}
                Err(problem) => problems.push((target.key.clone(), problem)),
            }
        }
        for key in unselected {
            self.forget(&key);
        }
        for (key, problem) in problems {
            let kind = match problem.reason {
                "InvalidAwsUpstream" => "lambda_invalid_upstream",
                _ => "lambda_credentials_missing",
            };
            if self.report(&key, Some(problem)) {
                self.metrics.error(kind);
            }
        }
        self.secret_watches.set(&wanted_secrets);
        self.secrets.retain(|key, _| wanted_secrets.contains(key));

        for group in self.groups.values_mut() {
            group.members.clear();
        }
        for (upstream, key) in &membership {
            let group = self
                .groups
                .entry(key.clone())
                .or_insert_with(|| Group::new(now));
            group.members.insert(upstream.clone());
            if self.membership.get(upstream) != Some(key) {
                self.dirty.entry(upstream.clone()).or_insert(now);
            }
        }
        self.groups
            .retain(|_, group| !group.members.is_empty() || group.running);
        let groups = &self.groups;
        self.sweepers.retain(|key| groups.contains_key(key));
        self.membership = membership;
        self.metrics.set_upstreams(Source::Lambda, selected);
    }

    /// Everything that follows from the state: regroup, start due sweeps, write what changed.
    fn step(&mut self) {
        if !self.synced() {
            return;
        }
        if std::mem::take(&mut self.regroup) {
            self.regroup();
        }
        let now = Instant::now();
        let due: Vec<UpstreamKey> = self
            .write_retries
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in due {
            if let Some((_, changed_at)) = self.write_retries.remove(&key) {
                let oldest = self.dirty.entry(key).or_insert(changed_at);
                *oldest = (*oldest).min(changed_at);
            }
        }
        let leader = *self.leader.borrow();
        if leader {
            self.start_due_sweeps(now);
        }
        let dirty: Vec<(UpstreamKey, Instant)> = self
            .dirty
            .iter()
            .filter(|(key, _)| {
                !self.writing.contains(*key) && !self.write_retries.contains_key(*key)
            })
            .map(|(k, t)| (k.clone(), *t))
            .collect();
        for (key, changed_at) in dirty {
            if leader && self.writes.len() >= WRITE_CONCURRENCY {
                break;
            }
            self.dirty.remove(&key);
            self.evaluate(&key, changed_at, leader);
        }
    }

    fn start_due_sweeps(&mut self, now: Instant) {
        let due: Vec<SweepKey> = self
            .groups
            .iter()
            .filter(|(_, g)| !g.running && !g.members.is_empty() && g.due <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in due {
            let Some(group) = self.groups.get_mut(&key) else {
                continue;
            };
            group.running = true;
            let previous = group.listing.clone();
            let aliases = self.config.aliases;
            let sweepers = self.sweepers.clone();
            let sweep_key = key.clone();
            let task = self.sweeps.spawn(async move {
                // Building a client may read the SDK's environment: done here, not in the loop.
                let sweeper = sweepers.get(&key).await;
                let started = std::time::Instant::now();
                let result = sweeper.sweep(previous.as_deref(), aliases).await;
                match &result {
                    Ok(listing) => tracing::debug!(sweep = %key.describe(), versions = listing.versions.len(), elapsed = ?started.elapsed(), "swept"),
                    Err(error) => tracing::debug!(sweep = %key.describe(), %error, "sweep failed"),
                }
                SweepDone { key, result }
            });
            self.task_keys.insert(task.id(), TaskKey::Sweep(sweep_key));
        }
    }

    /// A sweep or write task that panicked (a bug): its work is retried like a failure.
    fn on_lost_task(&mut self, error: tokio::task::JoinError) {
        let lost = self.task_keys.remove(&error.id());
        tracing::error!(%error, task = ?lost, "function discovery: a task failed; retrying its work");
        self.metrics.error("lambda_task_failed");
        let now = Instant::now();
        match lost {
            Some(TaskKey::Sweep(key)) => {
                if let Some(group) = self.groups.get_mut(&key) {
                    group.running = false;
                    group.failures = group.failures.saturating_add(1);
                    group.due = now + RETRY.after(group.failures);
                }
            }
            Some(TaskKey::Write(key)) => {
                self.writing.remove(&key);
                self.write_retries.insert(key, (now + RETRY.after(1), now));
            }
            None => {}
        }
    }

    fn on_sweep(&mut self, done: SweepDone) {
        let now = Instant::now();
        let Some(group) = self.groups.get_mut(&done.key) else {
            return;
        };
        group.running = false;
        let members: Vec<UpstreamKey> = group.members.iter().cloned().collect();
        match done.result {
            Ok(listing) => {
                group.failures = 0;
                group.error = None;
                group.due = now + self.config.poll_interval;
                group.listing = Some(Arc::new(listing));
                self.metrics.mark_synced(Source::Lambda);
                // Every member is re-checked, changed answer or not (a stored list may have
                // been edited); lag counts from this sweep, which saw the change.
                for member in members {
                    self.dirty.entry(member).or_insert(now);
                }
            }
            Err(error) => {
                group.failures = group.failures.saturating_add(1);
                let delay = RETRY
                    .after(group.failures)
                    .min(self.config.poll_interval.max(RETRY.base) * 10);
                group.due = now + delay;
                group.error = Some(error.clone());
                self.metrics.error(error.kind());
                tracing::warn!(sweep = %done.key.describe(), %error, retry_in = ?delay, "function discovery: sweep failed; lambdaFunctions left as they are");
                let problem = Problem {
                    reason: error.reason(),
                    note: format!("{error}; lambdaFunctions left as they are, retrying"),
                };
                for member in members {
                    self.report(&member, Some(problem.clone()));
                }
            }
        }
    }

    /// Decides whether an Upstream's list must be written, and starts the write.
    fn evaluate(&mut self, key: &UpstreamKey, changed_at: Instant, leader: bool) {
        let Some(target) = self.targets.get(key) else {
            return;
        };
        let Some(sweep) = self.membership.get(key) else {
            return;
        };
        let Some(group) = self.groups.get(sweep) else {
            return;
        };
        if group.error.is_some() {
            return;
        }
        let Some(listing) = group.listing.clone() else {
            return;
        };
        let filter = match target.filter.as_deref().map(Regex::new).transpose() {
            Ok(filter) => filter,
            Err(error) => {
                let problem = Problem {
                    reason: "InvalidAnnotation",
                    note: format!("{FUNCTION_FILTER_ANNOTATION} is not a valid regular expression ({error}); lambdaFunctions left as they are"),
                };
                if self.report(key, Some(problem)) {
                    self.metrics.skipped("invalid_function_filter");
                }
                return;
            }
        };
        let desired = functions::desired(&listing, filter.as_ref(), self.config.max_functions);
        let problem = (desired.left_out > 0).then(|| Problem {
            reason: "LambdaFunctionsCapped",
            note: format!(
                "{} of {} functions left out: the list is capped at {} (--lambda-max-functions)",
                desired.left_out,
                desired.left_out + desired.functions.len(),
                self.config.max_functions
            ),
        });
        let unchanged = functions::unchanged(target.functions.as_deref(), &desired.functions);
        if !unchanged && !leader {
            return;
        }
        let uid = target.uid.clone();
        let resource_version = target.resource_version.clone();
        if self.report(key, problem) {
            self.metrics.skipped("lambda_functions_capped");
        }
        if unchanged {
            self.count(key, desired.functions.len());
            return;
        }
        let applier = self.applier.clone();
        let upstream = key.clone();
        self.writing.insert(key.clone());
        let task = self.writes.spawn(async move {
            let outcome = applier
                .apply_lambda_functions(&upstream, &uid, &resource_version, &desired.functions)
                .await;
            WriteDone {
                key: upstream,
                changed_at,
                written: desired.functions,
                outcome,
            }
        });
        self.task_keys
            .insert(task.id(), TaskKey::Write(key.clone()));
    }

    fn on_write(&mut self, done: WriteDone) {
        self.writing.remove(&done.key);
        let now = Instant::now();
        match done.outcome {
            Outcome::Written { upstream, .. } => {
                self.metrics
                    .record_write(Source::Lambda, WriteOp::Update, WriteResult::Success);
                self.metrics
                    .observe_lag(Source::Lambda, now - done.changed_at);
                self.write_failures.remove(&done.key);
                tracing::info!(upstream = %done.key, functions = done.written.len(), "lambdaFunctions written");
                self.count(&done.key, done.written.len());
                // Take the stored version now: the watch may deliver it later.
                if let (Some(stored), Some(target)) = (
                    AwsTarget::from_upstream(&upstream),
                    self.targets.get_mut(&done.key),
                ) {
                    if stored.uid == target.uid {
                        *target = stored;
                    }
                }
            }
            Outcome::DryRun => {
                self.metrics
                    .record_write(Source::Lambda, WriteOp::Update, WriteResult::Skipped);
                if let Some(target) = self.targets.get_mut(&done.key) {
                    target.functions = Some(done.written);
                }
            }
            Outcome::Conflict(_) | Outcome::Deleted(_) | Outcome::NotOwned(_) => {
                // Changed or deleted since planned: the watch brings the new state, and a
                // short retry covers an event that is slow to come.
                self.metrics
                    .record_write(Source::Lambda, WriteOp::Update, WriteResult::Conflict);
                self.write_retries
                    .insert(done.key, (now + RETRY.base, done.changed_at));
            }
            Outcome::Failed {
                kind,
                retry_after,
                message,
                ..
            } => {
                self.metrics
                    .record_write(Source::Lambda, WriteOp::Update, WriteResult::Error);
                self.metrics.error(kind);
                let failures = self.write_failures.entry(done.key.clone()).or_insert(0);
                *failures = failures.saturating_add(1);
                let delay = retry_after.unwrap_or_else(|| RETRY.after(*failures));
                tracing::warn!(upstream = %done.key, kind, error = %message, retry_in = ?delay, "cannot write lambdaFunctions; retrying");
                self.write_retries
                    .insert(done.key, (now + delay, done.changed_at));
            }
        }
    }

    fn count(&mut self, key: &UpstreamKey, functions: usize) {
        self.metrics
            .set_lambda_functions(&key.namespace, &key.name, functions);
        self.counted.insert(key.clone());
    }

    /// Records a Warning Event when an Upstream's problem changes (not on every sweep), and a
    /// Normal one when it is over.
    /// Returns whether a new problem was reported (for the caller's metric, counted once per
    /// change like the Event).
    fn report(&mut self, key: &UpstreamKey, problem: Option<Problem>) -> bool {
        let uid = self.targets.get(key).map(|t| t.uid.clone());
        match problem {
            Some(problem) => {
                if self.reported.get(key) == Some(&problem) {
                    return false;
                }
                self.events.record(ObjectEvent {
                    regarding: Regarding::upstream(key, uid),
                    warning: true,
                    reason: problem.reason,
                    note: problem.note.clone(),
                });
                self.reported.insert(key.clone(), problem);
                true
            }
            None => {
                if let Some(previous) = self.reported.remove(key) {
                    if previous.reason != "LambdaFunctionsCapped" {
                        self.events.record(ObjectEvent {
                            regarding: Regarding::upstream(key, uid),
                            warning: false,
                            reason: "LambdaFunctionsDiscovered",
                            note: "functions listed again".into(),
                        });
                    }
                }
                false
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
