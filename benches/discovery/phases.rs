//! The five phases of issue 6: baseline, initial sync, churn, idle, restart. Each returns what
//! it measured; an `Err` means the benchmark itself broke (not that a target was missed).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{stream, StreamExt, TryStreamExt};
use governor::{Quota, RateLimiter};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;
use upstream_discovery::crd::Upstream;
use upstream_discovery::model::FIELD_MANAGER;

use crate::cluster::{upstream_names_by_service, Cluster, ListPass, REVISION_ANNOTATION};
use crate::process::{DaemonProcess, Launch, Usage};
use crate::prom::{exact_quantile, Histogram, RequestCounts, Samples};

/// The resources the daemon reads or writes; API server requests are counted on these.
pub const DAEMON_RESOURCES: &[&str] = &["upstreams", "services", "namespaces", "leases", "events"];
/// Server-side apply is its own verb, `APPLY`, in `apiserver_request_total`.
const WRITE_VERBS: &[&str] = &["APPLY", "POST", "PUT", "PATCH", "DELETE"];
const POLL: Duration = Duration::from_millis(50);
/// How long churn waits for the last changes to show up before calling them missing.
const CHURN_GRACE: Duration = Duration::from_secs(30);
/// How long a restarted daemon is watched for writes once it leads with nothing pending.
const RESTART_SETTLE: Duration = Duration::from_secs(5);
/// Generous for a profiler wrapper that writes its data at exit.
pub const SIGTERM_LIMIT: Duration = Duration::from_secs(60);

/// The client-side write limits, the same for the baseline client and the daemon of a row.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct WriteLimits {
    pub qps: u32,
    pub burst: u32,
    pub concurrency: usize,
}

impl WriteLimits {
    pub fn describe(&self) -> String {
        format!(
            "--kube-api-qps {} --kube-api-burst {} --write-concurrency {}",
            self.qps, self.burst, self.concurrency
        )
    }

    pub fn daemon_args(&self) -> Vec<String> {
        vec![
            "--kube-api-qps".into(),
            self.qps.to_string(),
            "--kube-api-burst".into(),
            self.burst.to_string(),
            "--write-concurrency".into(),
            self.concurrency.to_string(),
        ]
    }
}

/// p50/p90/p99 of a latency, in seconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Quantiles {
    pub count: f64,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
}

impl Quantiles {
    fn of_histogram(histogram: &Histogram) -> Self {
        Self {
            count: histogram.count(),
            p50: histogram.quantile(0.5),
            p90: histogram.quantile(0.9),
            p99: histogram.quantile(0.99),
        }
    }

    fn of_values(mut values: Vec<f64>) -> Self {
        values.sort_by(f64::total_cmp);
        Self {
            count: values.len() as f64,
            p50: exact_quantile(&values, 0.5),
            p90: exact_quantile(&values, 0.9),
            p99: exact_quantile(&values, 0.99),
        }
    }
}

// ------------------------------------------------------------------ baseline ------

#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    pub upstreams: usize,
    /// Wall time of the applies: the floor for the initial sync.
    pub apply_seconds: f64,
    pub delete_seconds: f64,
    pub requests: BTreeMap<String, f64>,
}

/// A bare client, as the daemon's ServiceAccount, applies `upstreams` as the daemon creates
/// them (server-side apply, same field manager, same limits), then deletes them.
pub async fn baseline(
    cluster: &Cluster,
    upstreams: &[Upstream],
    limits: WriteLimits,
) -> Result<Baseline, String> {
    let client = cluster.daemon_client().await;
    let namespace = cluster.write_namespace();
    let before = cluster.apiserver_requests()?;
    let apply = rate_limited(upstreams, limits, |upstream| {
        apply_upstream(client.clone(), namespace, upstream)
    })
    .await?;
    let names: Vec<String> = upstreams
        .iter()
        .filter_map(|u| u.metadata.name.clone())
        .collect();
    let delete = rate_limited(&names, limits, |name| {
        delete_upstream(client.clone(), namespace, name)
    })
    .await?;
    let requests = cluster
        .apiserver_requests()?
        .since(&before, DAEMON_RESOURCES);
    let left = cluster.count_upstreams().await?;
    if left != 0 {
        return Err(format!(
            "{left} Upstreams left after the baseline's deletes"
        ));
    }
    Ok(Baseline {
        upstreams: upstreams.len(),
        apply_seconds: apply.as_secs_f64(),
        delete_seconds: delete.as_secs_f64(),
        requests: requests.to_map(),
    })
}

/// Runs `op` on every item, `limits.concurrency` at a time, each after the rate limiter let it
/// through; returns the wall time, or the first error.
async fn rate_limited<'a, T, F, Fut>(
    items: &'a [T],
    limits: WriteLimits,
    op: F,
) -> Result<Duration, String>
where
    F: Fn(&'a T) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let quota = Quota::per_second(NonZeroU32::new(limits.qps).unwrap_or(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(limits.burst).unwrap_or(NonZeroU32::MIN));
    let limiter = RateLimiter::direct(quota);
    let started = Instant::now();
    stream::iter(items)
        .map(|item| {
            let request = op(item);
            let limiter = &limiter;
            async move {
                limiter.until_ready().await;
                request.await
            }
        })
        .buffer_unordered(limits.concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(started.elapsed())
}

/// Deletes the named Upstreams (as the daemon's ServiceAccount, within `limits`) and checks
/// that none is left: the write namespace emptied between the two rows of the run.
pub async fn delete_upstreams(
    cluster: &Cluster,
    upstreams: &[Upstream],
    limits: WriteLimits,
) -> Result<(), String> {
    let client = cluster.daemon_client().await;
    let namespace = cluster.write_namespace();
    let names: Vec<String> = upstreams
        .iter()
        .filter_map(|u| u.metadata.name.clone())
        .collect();
    rate_limited(&names, limits, |name| {
        delete_upstream(client.clone(), namespace, name)
    })
    .await?;
    match cluster.count_upstreams().await? {
        0 => Ok(()),
        left => Err(format!("{left} Upstreams left after deleting them all")),
    }
}

async fn apply_upstream(
    client: Client,
    namespace: &str,
    upstream: &Upstream,
) -> Result<(), String> {
    let name = upstream.metadata.name.clone().unwrap_or_default();
    Api::<Upstream>::namespaced(client, namespace)
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(upstream),
        )
        .await
        .map(|_| ())
        .map_err(|e| format!("baseline apply {name}: {e}"))
}

async fn delete_upstream(client: Client, namespace: &str, name: &str) -> Result<(), String> {
    Api::<Upstream>::namespaced(client, namespace)
        .delete(name, &DeleteParams::default())
        .await
        .map(|_| ())
        .map_err(|e| format!("baseline delete {name}: {e}"))
}

// -------------------------------------------------------------- initial sync ------

#[derive(Debug, Clone, Serialize)]
pub struct InitialSync {
    pub upstreams: usize,
    /// From starting the process to all Upstreams written and seen, nothing pending.
    pub seconds: f64,
    /// Successful writes the daemon counted.
    pub daemon_writes: f64,
    pub daemon_write_errors: f64,
    /// Write requests on Upstreams the API server counted.
    pub upstream_writes: f64,
    /// API server requests on the daemon's resources (WATCH is counted when a watch ends).
    pub requests: BTreeMap<String, f64>,
    pub requests_total: f64,
    /// LISTs per resource, beside one pass (⌈objects / page size⌉ per namespace).
    pub lists: ListCounts,
    pub usage: Usage,
}

/// LISTs of Upstreams and Services the API server counted, and GETs of Upstreams, beside what
/// one list pass takes.
#[derive(Debug, Clone, Serialize)]
pub struct ListCounts {
    pub upstreams: f64,
    pub services: f64,
    pub upstream_gets: f64,
    pub one_pass: ListPass,
}

impl ListCounts {
    fn of(requests: &RequestCounts, one_pass: ListPass) -> Self {
        Self {
            upstreams: requests.of(&["LIST"], "upstreams"),
            services: requests.of(&["LIST"], "services"),
            upstream_gets: requests.of(&["GET"], "upstreams"),
            one_pass,
        }
    }
}

/// Starts the daemon with the Services present and times it to all Upstreams correct.
pub async fn initial_sync(
    cluster: &Cluster,
    launch: &Launch<'_>,
    expected: &[Upstream],
    deadline: Duration,
) -> Result<(DaemonProcess, InitialSync), String> {
    let before = cluster.apiserver_requests()?;
    let started = Instant::now();
    let mut daemon = DaemonProcess::start(launch)?;
    let wanted = expected.len() as f64;
    let samples = poll_daemon(&mut daemon, deadline, "all Upstreams written", |m| {
        owned_upstreams(m) >= wanted && m.sum("upstream_discovery_pending_changes", &[]) == 0.0
    })
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    let usage = daemon.usage()?;
    let requests = cluster
        .apiserver_requests()?
        .since(&before, DAEMON_RESOURCES);
    cluster.check_upstreams(expected).await?;
    Ok((
        daemon,
        InitialSync {
            upstreams: expected.len(),
            seconds,
            daemon_writes: successful_writes(&samples),
            daemon_write_errors: samples
                .sum("upstream_discovery_writes_total", &[("result", "error")]),
            upstream_writes: requests.of(WRITE_VERBS, "upstreams"),
            requests: requests.to_map(),
            requests_total: requests.total(),
            lists: ListCounts::of(
                &requests,
                cluster.one_list_pass(expected.len(), expected.len() / 2),
            ),
            usage,
        },
    ))
}

fn owned_upstreams(samples: &Samples) -> f64 {
    samples.sum("upstream_discovery_upstreams", &[("source", "kubernetes")])
}

fn successful_writes(samples: &Samples) -> f64 {
    samples.sum("upstream_discovery_writes_total", &[("result", "success")])
}

fn watch_restarts(samples: &Samples) -> f64 {
    samples.sum("upstream_discovery_watch_restarts_total", &[])
}

fn lag_histogram(samples: &Samples) -> Histogram {
    Histogram::read(
        samples,
        "upstream_discovery_lag_seconds",
        &[("source", "kubernetes")],
    )
}

/// Scrapes the daemon until `done` holds; fails if it exits or `deadline` passes.
async fn poll_daemon(
    daemon: &mut DaemonProcess,
    deadline: Duration,
    what: &str,
    done: impl Fn(&Samples) -> bool,
) -> Result<Samples, String> {
    let started = Instant::now();
    loop {
        daemon.check_alive()?;
        if let Some(samples) = daemon.metrics().await {
            if done(&samples) {
                return Ok(samples);
            }
        }
        if started.elapsed() > deadline {
            return Err(format!(
                "timed out after {deadline:?} waiting for {what}; the daemon's log: {}",
                daemon.log.display()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn scrape(daemon: &mut DaemonProcess) -> Result<Samples, String> {
    poll_daemon(daemon, Duration::from_secs(10), "/metrics", |_| true).await
}

/// Waits until the daemon leads and has nothing pending.
async fn wait_settled(daemon: &mut DaemonProcess, deadline: Duration) -> Result<Samples, String> {
    poll_daemon(daemon, deadline, "the daemon to settle", |m| {
        m.sum("upstream_discovery_is_leader", &[]) == 1.0
            && m.sum("upstream_discovery_pending_changes", &[]) == 0.0
    })
    .await
}

// --------------------------------------------------------------------- churn ------

#[derive(Debug, Clone, Serialize)]
pub struct Churn {
    pub rate: f64,
    pub seconds: f64,
    pub services_changed: u64,
    pub patch_errors: u64,
    /// Upstream changes expected (2 per Service change) that never showed up.
    pub missing: usize,
    /// The daemon's `lag_seconds` over the phase (from the histogram's buckets).
    pub daemon_lag: Quantiles,
    /// From the benchmark's Service write to the Upstream change seen through its watch.
    pub end_to_end_lag: Quantiles,
    pub daemon_writes: f64,
    pub cpu_seconds: f64,
}

/// A watch on the write namespace's Upstreams that matches each revision seen to the moments
/// the benchmark wrote it (and any earlier revision it supersedes).
pub struct UpstreamWatch {
    tracker: Arc<Mutex<Tracker>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Tracker {
    /// Upstream name → revision → when the Service change was sent.
    pending: HashMap<String, BTreeMap<u64, Instant>>,
    lags: Vec<f64>,
}

impl Tracker {
    fn seen(&mut self, upstream: &Upstream, at: Instant) {
        let (Some(name), Some(revision)) = (upstream.metadata.name.as_ref(), revision(upstream))
        else {
            return;
        };
        let Some(pending) = self.pending.get_mut(name) else {
            return;
        };
        let later = pending.split_off(&(revision + 1));
        for sent in std::mem::replace(pending, later).into_values() {
            self.lags
                .push(at.saturating_duration_since(sent).as_secs_f64());
        }
        if pending.is_empty() {
            self.pending.remove(name);
        }
    }

    fn outstanding(&self) -> usize {
        self.pending.values().map(BTreeMap::len).sum()
    }
}

fn revision(upstream: &Upstream) -> Option<u64> {
    upstream
        .metadata
        .annotations
        .as_ref()?
        .get(REVISION_ANNOTATION)?
        .parse()
        .ok()
}

impl UpstreamWatch {
    /// Starts watching; returns once the initial list is in (within `deadline`: it pages
    /// through every Upstream).
    pub async fn start(cluster: &Cluster, deadline: Duration) -> Result<Self, String> {
        let api = Api::<Upstream>::namespaced(cluster.admin().clone(), cluster.write_namespace());
        let tracker = Arc::new(Mutex::new(Tracker::default()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(watch_upstreams(api, tracker.clone(), ready_tx));
        tokio::time::timeout(deadline, ready_rx)
            .await
            .map_err(|_| "the benchmark's Upstream watch did not start".to_string())?
            .map_err(|_| "the benchmark's Upstream watch ended".to_string())?;
        Ok(Self { tracker, task })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.tracker
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn expect(&self, upstreams: &[String], revision: u64, sent: Instant) {
        let mut tracker = self.lock();
        for name in upstreams {
            tracker
                .pending
                .entry(name.clone())
                .or_default()
                .insert(revision, sent);
        }
    }

    /// Waits up to `grace` for what is outstanding; returns the lags and how many are missing.
    async fn collect(&self, grace: Duration) -> (Vec<f64>, usize) {
        let started = Instant::now();
        while self.lock().outstanding() > 0 && started.elapsed() < grace {
            tokio::time::sleep(POLL).await;
        }
        let mut tracker = self.lock();
        let missing = tracker.outstanding();
        tracker.pending.clear();
        (std::mem::take(&mut tracker.lags), missing)
    }
}

impl Drop for UpstreamWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn watch_upstreams(
    api: Api<Upstream>,
    tracker: Arc<Mutex<Tracker>>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        let at = Instant::now();
        match event {
            Ok(watcher::Event::Apply(upstream)) | Ok(watcher::Event::InitApply(upstream)) => {
                let mut tracker = tracker.lock().unwrap_or_else(|p| p.into_inner());
                tracker.seen(&upstream, at);
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            }
            Ok(_) => {}
            Err(error) => eprintln!("benchmark watch on Upstreams: {error}"),
        }
    }
}

/// The Services churn changes, in turn, with their Upstreams' names.
pub struct ChurnTargets {
    targets: Vec<(String, String, Vec<String>)>,
    next: usize,
    revision: u64,
}

impl ChurnTargets {
    pub fn new(upstreams: &[Upstream]) -> Self {
        let targets = upstream_names_by_service(upstreams)
            .into_iter()
            .map(|((namespace, name), upstreams)| (namespace, name, upstreams))
            .collect();
        Self {
            targets,
            next: 0,
            revision: 0,
        }
    }

    fn next(&mut self) -> Option<(String, String, Vec<String>, u64)> {
        let (namespace, name, upstreams) =
            self.targets.get(self.next % self.targets.len().max(1))?;
        self.next += 1;
        self.revision += 1;
        Some((
            namespace.clone(),
            name.clone(),
            upstreams.clone(),
            self.revision,
        ))
    }
}

/// Changes `rate` Services per second for `duration`, then measures both lags.
pub async fn churn(
    cluster: &Cluster,
    daemon: &mut DaemonProcess,
    watch: &UpstreamWatch,
    targets: &mut ChurnTargets,
    rate: f64,
    duration: Duration,
) -> Result<Churn, String> {
    let before = scrape(daemon).await?;
    let cpu_before = daemon.usage()?.cpu_seconds;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut patches = JoinSet::new();
    let started = Instant::now();
    let mut changed = 0u64;
    while started.elapsed() < duration {
        ticker.tick().await;
        let Some((namespace, name, upstreams, revision)) = targets.next() else {
            return Err("no Services to change".into());
        };
        let sent = Instant::now();
        watch.expect(&upstreams, revision, sent);
        let client = cluster.admin().clone();
        patches.spawn(async move {
            crate::cluster::set_revision(&client, &namespace, &name, revision).await
        });
        changed += 1;
    }
    let mut patch_errors = 0u64;
    while let Some(result) = patches.join_next().await {
        if !matches!(result, Ok(Ok(()))) {
            patch_errors += 1;
        }
    }
    let (lags, missing) = watch.collect(CHURN_GRACE).await;
    let samples = wait_settled(daemon, CHURN_GRACE).await?;
    Ok(Churn {
        rate,
        seconds: duration.as_secs_f64(),
        services_changed: changed,
        patch_errors,
        missing,
        daemon_lag: Quantiles::of_histogram(
            &lag_histogram(&samples).since(&lag_histogram(&before)),
        ),
        end_to_end_lag: Quantiles::of_values(lags),
        daemon_writes: successful_writes(&samples) - successful_writes(&before),
        cpu_seconds: daemon.usage()?.cpu_seconds - cpu_before,
    })
}

// ---------------------------------------------------------------------- idle ------

#[derive(Debug, Clone, Serialize)]
pub struct Idle {
    pub seconds: f64,
    pub daemon_writes: f64,
    pub upstream_writes: f64,
    /// Namespaced LISTs on the daemon's resources (the daemon's lists in this benchmark, which
    /// watches namespaces by name; cluster-wide ones are the API server's own loops).
    pub lists: f64,
    pub watch_restarts: f64,
    /// API server requests on the daemon's resources (all clients; the benchmark makes none).
    pub requests: BTreeMap<String, f64>,
    pub cpu_seconds: f64,
}

/// Nothing changes for `duration`: what does the daemon do?
pub async fn idle(
    cluster: &Cluster,
    daemon: &mut DaemonProcess,
    duration: Duration,
) -> Result<Idle, String> {
    wait_settled(daemon, CHURN_GRACE).await?;
    let before = scrape(daemon).await?;
    let requests_before = cluster.apiserver_requests()?;
    let cpu_before = daemon.usage()?.cpu_seconds;
    tokio::time::sleep(duration).await;
    let after = scrape(daemon).await?;
    let requests = cluster
        .apiserver_requests()?
        .since(&requests_before, DAEMON_RESOURCES);
    Ok(Idle {
        seconds: duration.as_secs_f64(),
        daemon_writes: successful_writes(&after) - successful_writes(&before),
        upstream_writes: requests.of(WRITE_VERBS, "upstreams"),
        lists: requests.verbs_in_scope(&["LIST"], "namespace"),
        watch_restarts: watch_restarts(&after) - watch_restarts(&before),
        requests: requests.to_map(),
        cpu_seconds: daemon.usage()?.cpu_seconds - cpu_before,
    })
}

// ------------------------------------------------------------------- restart ------

#[derive(Debug, Clone, Serialize)]
pub struct Restart {
    pub stop_seconds: f64,
    pub exit_status: String,
    /// From starting the new process to `/readyz` answering 200.
    pub ready_seconds: f64,
    /// From starting it to leading with nothing pending.
    pub settled_seconds: f64,
    pub daemon_writes: f64,
    pub upstream_writes: f64,
    /// Namespaced LISTs: the initial (paged) lists of its caches.
    pub lists: f64,
    /// LISTs and GETs per resource, beside one pass.
    pub list_counts: ListCounts,
    pub requests: BTreeMap<String, f64>,
    pub usage: Usage,
}

/// SIGTERM, start again with nothing changed: time to ready, and writes (there should be none).
pub async fn restart(
    cluster: &Cluster,
    daemon: DaemonProcess,
    launch: &Launch<'_>,
    deadline: Duration,
    one_pass: ListPass,
) -> Result<(DaemonProcess, Restart), String> {
    let (stopped_in, status) = tokio::task::block_in_place(|| daemon.terminate(SIGTERM_LIMIT))?;
    let before = cluster.apiserver_requests()?;
    let started = Instant::now();
    let mut daemon = DaemonProcess::start(launch)?;
    while !daemon.is_ready().await {
        daemon.check_alive()?;
        if started.elapsed() > deadline {
            return Err(format!(
                "the restarted daemon is not ready after {deadline:?}"
            ));
        }
        tokio::time::sleep(POLL).await;
    }
    let ready_seconds = started.elapsed().as_secs_f64();
    wait_settled(&mut daemon, deadline).await?;
    let settled_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(RESTART_SETTLE).await;
    let samples = scrape(&mut daemon).await?;
    let requests = cluster
        .apiserver_requests()?
        .since(&before, DAEMON_RESOURCES);
    let usage = daemon.usage()?;
    Ok((
        daemon,
        Restart {
            stop_seconds: stopped_in.as_secs_f64(),
            exit_status: status.to_string(),
            ready_seconds,
            settled_seconds,
            daemon_writes: successful_writes(&samples),
            upstream_writes: requests.of(WRITE_VERBS, "upstreams"),
            lists: requests.verbs_in_scope(&["LIST"], "namespace"),
            list_counts: ListCounts::of(&requests, one_pass),
            requests: requests.to_map(),
            usage,
        },
    ))
}
