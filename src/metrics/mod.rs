//! The daemon's Prometheus metrics (docs/operations.md).
//!
//! Every metric lives in a registry of its own rather than the process-global default, so that
//! tests (and, one day, two daemons in one process) never see each other's counts. Label values
//! come from the typed enums below and the model's ([`SkipReason`], [`ErrorKind`]): an
//! error message or an object name must never become a label value, except for
//! `lambda_functions`, whose point is to say which Upstream holds how many functions.

mod grants;
mod readers;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::model::{ErrorKind, SkipReason};

use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Prefix of every metric of the daemon's own (the process metrics keep their standard names,
/// so that existing dashboards and alerts find them).
pub const PREFIX: &str = "upstream_discovery_";

/// Buckets of `lag_seconds`: a healthy write takes milliseconds, a backed-off retry or a slow
/// Lambda sweep tens of seconds; beyond a minute the exact value no longer matters.
pub const LAG_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot register metric {name}: {source}")]
    Register {
        name: String,
        #[source]
        source: prometheus::Error,
    },
    #[error("cannot encode metrics: {0}")]
    Encode(#[source] prometheus::Error),
}

/// Where the change behind an Upstream write came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Kubernetes,
    Lambda,
}

impl Source {
    pub const ALL: [Source; 2] = [Source::Kubernetes, Source::Lambda];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Kubernetes => "kubernetes",
            Source::Lambda => "lambda",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteOp {
    Create,
    Update,
    Delete,
}

impl WriteOp {
    pub const ALL: [WriteOp; 3] = [WriteOp::Create, WriteOp::Update, WriteOp::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            WriteOp::Create => "create",
            WriteOp::Update => "update",
            WriteOp::Delete => "delete",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteResult {
    Success,
    Error,
    /// The API server refused the write because someone else changed the object (409).
    Conflict,
    /// Nothing was sent: the object already matched, or dry-run, or not owned.
    Skipped,
}

impl WriteResult {
    pub const ALL: [WriteResult; 4] = [
        WriteResult::Success,
        WriteResult::Error,
        WriteResult::Conflict,
        WriteResult::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WriteResult::Success => "success",
            WriteResult::Error => "error",
            WriteResult::Conflict => "conflict",
            WriteResult::Skipped => "skipped",
        }
    }
}

/// A watched resource whose watch stream can restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchResource {
    Services,
    Upstreams,
    Namespaces,
    Secrets,
    ReferenceGrants,
    Settings,
}

impl WatchResource {
    pub const ALL: [WatchResource; 4] = [
        WatchResource::Services,
        WatchResource::Upstreams,
        WatchResource::Namespaces,
        WatchResource::Secrets,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WatchResource::Services => "services",
            WatchResource::Upstreams => "upstreams",
            WatchResource::Namespaces => "namespaces",
            WatchResource::Secrets => "secrets",
            WatchResource::ReferenceGrants => "referencegrants",
            WatchResource::Settings => "settings",
        }
    }

    /// The resource a watch request is for, from its URL path's last segment (the plural).
    pub fn from_plural(plural: &str) -> Option<Self> {
        match plural {
            "services" => Some(WatchResource::Services),
            "upstreams" => Some(WatchResource::Upstreams),
            "namespaces" => Some(WatchResource::Namespaces),
            "secrets" => Some(WatchResource::Secrets),
            "referencegrants" => Some(WatchResource::ReferenceGrants),
            "settings" => Some(WatchResource::Settings),
            _ => None,
        }
    }
}

/// Outcome of one AWS API call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiResult {
    Success,
    /// Told to slow down (throttling, 429): kept apart from errors because it means the rate
    /// limit is too generous, not that something is broken.
    Throttled,
    Error,
}

impl ApiResult {
    pub const ALL: [ApiResult; 3] = [ApiResult::Success, ApiResult::Throttled, ApiResult::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            ApiResult::Success => "success",
            ApiResult::Throttled => "throttled",
            ApiResult::Error => "error",
        }
    }
}

/// Handles on every metric of the daemon. Cloning is cheap: the prometheus handles and the
/// registry are reference-counted, so every clone updates the same values.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    lag: HistogramVec,
    upstreams: IntGaugeVec,
    writes: IntCounterVec,
    pending: IntGauge,
    last_sync: GaugeVec,
    watch_restarts: IntCounterVec,
    watch_silence_renewals: IntCounterVec,
    skipped: IntCounterVec,
    is_leader: IntGauge,
    lambda_api_calls: IntCounterVec,
    lambda_functions: IntGaugeVec,
    build_info: IntGaugeVec,
    errors: IntCounterVec,
    settings_reloads: IntCounter,
    loops_synced: IntGaugeVec,
    grants: grants::GrantMetrics,
}

fn register<C>(registry: &Registry, name: &str, collector: C) -> Result<C, MetricsError>
where
    C: prometheus::core::Collector + Clone + 'static,
{
    registry
        .register(Box::new(collector.clone()))
        .map_err(|source| MetricsError::Register {
            name: name.to_owned(),
            source,
        })?;
    Ok(collector)
}

fn registration_error(name: &str) -> impl FnOnce(prometheus::Error) -> MetricsError + '_ {
    move |source| MetricsError::Register {
        name: name.to_owned(),
        source,
    }
}

fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, MetricsError> {
    let full = format!("{PREFIX}{name}");
    let vec = IntCounterVec::new(Opts::new(full.as_str(), help), labels)
        .map_err(registration_error(&full))?;
    register(registry, &full, vec)
}

fn int_gauge_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, MetricsError> {
    let full = format!("{PREFIX}{name}");
    let vec = IntGaugeVec::new(Opts::new(full.as_str(), help), labels)
        .map_err(registration_error(&full))?;
    register(registry, &full, vec)
}

fn int_counter(registry: &Registry, name: &str, help: &str) -> Result<IntCounter, MetricsError> {
    let full = format!("{PREFIX}{name}");
    let counter = IntCounter::new(full.as_str(), help).map_err(registration_error(&full))?;
    register(registry, &full, counter)
}

fn int_gauge(registry: &Registry, name: &str, help: &str) -> Result<IntGauge, MetricsError> {
    let full = format!("{PREFIX}{name}");
    let gauge = IntGauge::new(full.as_str(), help).map_err(registration_error(&full))?;
    register(registry, &full, gauge)
}

impl Metrics {
    /// Creates the registry and registers every metric. Fails only on a programming error (a
    /// duplicate or malformed name), which the daemon reports at startup.
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();

        let lag_name = format!("{PREFIX}lag_seconds");
        let lag = HistogramVec::new(
            HistogramOpts::new(
                lag_name.as_str(),
                "Seconds from seeing a change to the API server acknowledging the Upstream write.",
            )
            .buckets(LAG_BUCKETS.to_vec()),
            &["source"],
        )
        .map_err(registration_error(&lag_name))?;
        let lag = register(&registry, &lag_name, lag)?;

        let sync_name = format!("{PREFIX}last_sync_timestamp_seconds");
        let last_sync = GaugeVec::new(
            Opts::new(
                sync_name.as_str(),
                "Unix time of the last completed synchronisation of a source.",
            ),
            &["source"],
        )
        .map_err(registration_error(&sync_name))?;
        let last_sync = register(&registry, &sync_name, last_sync)?;

        let metrics = Metrics {
            lag,
            last_sync,
            upstreams: int_gauge_vec(
                &registry,
                "upstreams",
                "Upstreams owned by the daemon.",
                &["source"],
            )?,
            writes: counter_vec(
                &registry,
                "writes_total",
                "Upstream writes by operation and result.",
                &["source", "op", "result"],
            )?,
            pending: int_gauge(
                &registry,
                "pending_changes",
                "Changes seen but not yet written.",
            )?,
            watch_restarts: counter_vec(
                &registry,
                "watch_restarts_total",
                "Restarts of a watch stream.",
                &["resource"],
            )?,
            watch_silence_renewals: counter_vec(
                &registry,
                "watch_silence_renewals_total",
                "Watch requests ended and renewed from their last version because the API server sent nothing (no event, no bookmark) for --watch-silence.",
                &["resource"],
            )?,
            skipped: counter_vec(
                &registry,
                "skipped_total",
                "Objects or settings ignored, by reason.",
                &["reason"],
            )?,
            is_leader: int_gauge(
                &registry,
                "is_leader",
                "1 while this replica holds the leader lease, else 0.",
            )?,
            lambda_api_calls: counter_vec(
                &registry,
                "lambda_api_calls_total",
                "AWS API calls made for Lambda discovery.",
                &["operation", "result"],
            )?,
            lambda_functions: int_gauge_vec(
                &registry,
                "lambda_functions",
                "Lambda functions listed in an Upstream.",
                &["namespace", "upstream"],
            )?,
            build_info: int_gauge_vec(
                &registry,
                "build_info",
                "Always 1; the labels say which build is running.",
                &["version"],
            )?,
            errors: counter_vec(&registry, "errors_total", "Errors by kind.", &["kind"])?,
            settings_reloads: int_counter(
                &registry,
                "settings_reloads_total",
                "Times a change of Gloo's Settings restarted discovery with a new configuration.",
            )?,
            loops_synced: int_gauge_vec(
                &registry,
                "cache_synced",
                "Per running discovery loop: 1 once its first lists are complete, else 0.",
                &["loop"],
            )?,
            grants: grants::GrantMetrics::new(&registry)?,
            registry,
        };

        // The process collector only exists on Linux (it reads /proc).
        #[cfg(target_os = "linux")]
        metrics
            .registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .map_err(registration_error("process_*"))?;

        // Series of the fixed label sets exist from the start, at zero, so that `rate()` and
        // absence alerts work before the first event rather than only after it.
        for source in Source::ALL {
            touch(&metrics.lag, &[source.as_str()]);
            touch(&metrics.upstreams, &[source.as_str()]);
            touch(&metrics.last_sync, &[source.as_str()]);
            for op in WriteOp::ALL {
                for result in WriteResult::ALL {
                    touch(
                        &metrics.writes,
                        &[source.as_str(), op.as_str(), result.as_str()],
                    );
                }
            }
        }
        for resource in WatchResource::ALL {
            touch(&metrics.watch_restarts, &[resource.as_str()]);
            touch(&metrics.watch_silence_renewals, &[resource.as_str()]);
        }
        if let Some(info) = child(&metrics.build_info, &[env!("CARGO_PKG_VERSION")]) {
            info.set(1);
        }
        Ok(metrics)
    }

    /// The registry, for a caller that wants to add collectors of its own.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Everything in the Prometheus text exposition format (`text/plain; version=0.0.4`).
    pub fn encode(&self) -> Result<String, MetricsError> {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .map_err(MetricsError::Encode)
    }

    /// Time from seeing a change to the API server's acknowledgement of the write.
    pub fn observe_lag(&self, source: Source, lag: Duration) {
        if let Some(h) = child(&self.lag, &[source.as_str()]) {
            h.observe(lag.as_secs_f64());
        }
    }

    pub fn record_write(&self, source: Source, op: WriteOp, result: WriteResult) {
        if let Some(c) = child(
            &self.writes,
            &[source.as_str(), op.as_str(), result.as_str()],
        ) {
            c.inc();
        }
    }

    pub fn set_upstreams(&self, source: Source, n: usize) {
        if let Some(g) = child(&self.upstreams, &[source.as_str()]) {
            g.set(saturating_i64(n));
        }
    }

    pub fn set_pending(&self, n: usize) {
        self.pending.set(saturating_i64(n));
    }

    /// Records that `source` has just completed a synchronisation (wall-clock time, since the
    /// value is meant to be compared with `time()` in PromQL).
    pub fn mark_synced(&self, source: Source) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        if let Some(g) = child(&self.last_sync, &[source.as_str()]) {
            g.set(now);
        }
    }

    pub fn watch_restarted(&self, resource: WatchResource) {
        if let Some(c) = child(&self.watch_restarts, &[resource.as_str()]) {
            c.inc();
        }
    }

    pub fn watch_renewed_for_silence(&self, resource: WatchResource) {
        if let Some(c) = child(&self.watch_silence_renewals, &[resource.as_str()]) {
            c.inc();
        }
    }

    pub fn skipped(&self, reason: SkipReason) {
        if let Some(c) = child(&self.skipped, &[reason.as_str()]) {
            c.inc();
        }
    }

    pub fn set_leader(&self, leader: bool) {
        self.is_leader.set(i64::from(leader));
    }

    /// Mirrors the loops' health records at scrape time; a loop not running has no series.
    pub fn set_loops_synced(&self, loops: &[(&'static str, bool)]) {
        self.loops_synced.reset();
        for (name, synced) in loops {
            if let Some(g) = child(&self.loops_synced, &[name]) {
                g.set(i64::from(*synced));
            }
        }
    }

    pub fn settings_reloaded(&self) {
        self.settings_reloads.inc();
    }

    pub fn error(&self, kind: ErrorKind) {
        if let Some(c) = child(&self.errors, &[kind.as_str()]) {
            c.inc();
        }
    }

    /// `operation` is the AWS operation name, e.g. `"ListFunctions"` or `"AssumeRole"`.
    pub fn lambda_api_call(&self, operation: &'static str, result: ApiResult) {
        if let Some(c) = child(&self.lambda_api_calls, &[operation, result.as_str()]) {
            c.inc();
        }
    }

    pub fn set_lambda_functions(&self, namespace: &str, upstream: &str, n: usize) {
        if let Some(g) = child(&self.lambda_functions, &[namespace, upstream]) {
            g.set(saturating_i64(n));
        }
    }

    /// Drops the series of an Upstream that no longer exists, so that it does not linger at its
    /// last value for the life of the process.
    pub fn forget_lambda_functions(&self, namespace: &str, upstream: &str) {
        // An error only means there was no such series.
        let _ = self
            .lambda_functions
            .remove_label_values(&[namespace, upstream]);
    }
}

/// The child of a metric vector, created if needed. Every call site passes as many label values
/// as the vector has labels, so the `None` case is a programming error; it is logged rather than
/// allowed to panic the daemon (which `with_label_values` would do).
fn child<B: prometheus::core::MetricVecBuilder>(
    vec: &prometheus::core::MetricVec<B>,
    values: &[&str],
) -> Option<B::M> {
    match vec.get_metric_with_label_values(values) {
        Ok(m) => Some(m),
        Err(error) => {
            tracing::error!(%error, ?values, "metric label values do not match the metric");
            None
        }
    }
}

fn touch<B: prometheus::core::MetricVecBuilder>(
    vec: &prometheus::core::MetricVec<B>,
    values: &[&str],
) {
    let _ = child(vec, values);
}

/// The child of a metric vector only if it already exists, so that a reader does not create a
/// series (which would then show up in `/metrics` at zero) for a label value never recorded.
/// `labels` are (name, value) pairs in the vector's label order.
fn existing<B: prometheus::core::MetricVecBuilder>(
    vec: &prometheus::core::MetricVec<B>,
    labels: &[(&str, &str)],
) -> Option<B::M> {
    let families = prometheus::core::Collector::collect(vec);
    let present = families.iter().flat_map(|f| f.get_metric()).any(|m| {
        let have = m.get_label();
        have.len() == labels.len()
            && labels.iter().all(|(name, value)| {
                have.iter()
                    .any(|pair| pair.name() == *name && pair.value() == *value)
            })
    });
    if !present {
        return None;
    }
    let values: Vec<&str> = labels.iter().map(|(_, value)| *value).collect();
    vec.get_metric_with_label_values(&values).ok()
}

fn saturating_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        Metrics::new().expect("metrics register")
    }

    fn text(m: &Metrics) -> String {
        m.encode().expect("metrics encode")
    }

    /// The value of the sample line that starts with `series` followed by a space.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
    }

    #[test]
    fn every_metric_has_its_type_line() {
        let m = metrics();
        // Vectors without a free-form label set appear from the start; these need one event.
        m.skipped(SkipReason::NotOwned);
        m.error(ErrorKind::ApiError);
        m.lambda_api_call("ListFunctions", ApiResult::Success);
        m.set_lambda_functions("gloo-system", "aws-eu", 3);
        let t = text(&m);
        for (name, kind) in [
            ("lag_seconds", "histogram"),
            ("upstreams", "gauge"),
            ("writes_total", "counter"),
            ("pending_changes", "gauge"),
            ("last_sync_timestamp_seconds", "gauge"),
            ("watch_restarts_total", "counter"),
            ("watch_silence_renewals_total", "counter"),
            ("skipped_total", "counter"),
            ("is_leader", "gauge"),
            ("lambda_api_calls_total", "counter"),
            ("lambda_functions", "gauge"),
            ("build_info", "gauge"),
            ("errors_total", "counter"),
        ] {
            let line = format!("# TYPE upstream_discovery_{name} {kind}");
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
    }

    #[test]
    fn fixed_label_sets_are_present_at_zero() {
        let t = text(&metrics());
        assert_eq!(
            sample(
                &t,
                r#"upstream_discovery_writes_total{op="delete",result="conflict",source="lambda"}"#
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &t,
                r#"upstream_discovery_watch_restarts_total{resource="secrets"}"#
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &t,
                r#"upstream_discovery_lag_seconds_count{source="kubernetes"}"#
            ),
            Some(0.0)
        );
        assert_eq!(sample(&t, "upstream_discovery_is_leader"), Some(0.0));
        assert_eq!(sample(&t, "upstream_discovery_pending_changes"), Some(0.0));
    }

    #[test]
    fn writes_count_per_label_set() {
        let m = metrics();
        m.record_write(Source::Kubernetes, WriteOp::Create, WriteResult::Success);
        m.record_write(Source::Kubernetes, WriteOp::Create, WriteResult::Success);
        m.record_write(Source::Kubernetes, WriteOp::Update, WriteResult::Conflict);
        m.record_write(Source::Lambda, WriteOp::Update, WriteResult::Error);
        assert_eq!(
            m.writes(Source::Kubernetes, WriteOp::Create, WriteResult::Success),
            2
        );
        assert_eq!(
            m.writes(Source::Kubernetes, WriteOp::Update, WriteResult::Conflict),
            1
        );
        assert_eq!(
            m.writes(Source::Kubernetes, WriteOp::Update, WriteResult::Error),
            0
        );
        assert_eq!(
            m.writes(Source::Lambda, WriteOp::Update, WriteResult::Error),
            1
        );
        assert_eq!(
            m.writes_with_result(Source::Kubernetes, WriteResult::Success),
            2
        );
        let t = text(&m);
        assert_eq!(
            sample(
                &t,
                r#"upstream_discovery_writes_total{op="create",result="success",source="kubernetes"}"#
            ),
            Some(2.0)
        );
    }

    #[test]
    fn clones_share_values() {
        let m = metrics();
        let c = m.clone();
        c.record_write(Source::Lambda, WriteOp::Delete, WriteResult::Skipped);
        c.set_pending(4);
        assert_eq!(
            m.writes(Source::Lambda, WriteOp::Delete, WriteResult::Skipped),
            1
        );
        assert_eq!(m.pending(), 4);
    }

    #[test]
    fn separate_instances_do_not_share_values() {
        let a = metrics();
        let b = metrics();
        a.set_leader(true);
        assert!(a.is_leader());
        assert!(!b.is_leader());
    }

    #[test]
    fn lag_histogram_counts_and_sums() {
        let m = metrics();
        m.observe_lag(Source::Kubernetes, Duration::from_millis(3));
        m.observe_lag(Source::Kubernetes, Duration::from_millis(200));
        m.observe_lag(Source::Lambda, Duration::from_secs(90));
        assert_eq!(m.lag_count(Source::Kubernetes), 2);
        assert_eq!(m.lag_count(Source::Lambda), 1);
        let sum = m.lag_sum(Source::Kubernetes).as_secs_f64();
        assert!((sum - 0.203).abs() < 1e-9, "{sum}");

        let t = text(&m);
        let k = r#"source="kubernetes""#;
        assert_eq!(
            sample(
                &t,
                &format!(r#"upstream_discovery_lag_seconds_bucket{{{k},le="0.0025"}}"#)
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &t,
                &format!(r#"upstream_discovery_lag_seconds_bucket{{{k},le="0.005"}}"#)
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &t,
                &format!(r#"upstream_discovery_lag_seconds_bucket{{{k},le="0.25"}}"#)
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &t,
                &format!(r#"upstream_discovery_lag_seconds_count{{{k}}}"#)
            ),
            Some(2.0)
        );
        let l = r#"source="lambda""#;
        assert_eq!(
            sample(
                &t,
                &format!(r#"upstream_discovery_lag_seconds_bucket{{{l},le="60"}}"#)
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &t,
                &format!(r#"upstream_discovery_lag_seconds_bucket{{{l},le="+Inf"}}"#)
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&t, &format!(r#"upstream_discovery_lag_seconds_sum{{{l}}}"#)),
            Some(90.0)
        );
    }

    #[test]
    fn gauges_take_the_last_value() {
        let m = metrics();
        m.set_upstreams(Source::Kubernetes, 12);
        m.set_upstreams(Source::Kubernetes, 7);
        m.set_pending(3);
        m.set_leader(true);
        assert_eq!(m.upstreams(Source::Kubernetes), 7);
        assert_eq!(m.upstreams(Source::Lambda), 0);
        let t = text(&m);
        assert_eq!(
            sample(&t, r#"upstream_discovery_upstreams{source="kubernetes"}"#),
            Some(7.0)
        );
        assert_eq!(sample(&t, "upstream_discovery_pending_changes"), Some(3.0));
        assert_eq!(sample(&t, "upstream_discovery_is_leader"), Some(1.0));
        m.set_leader(false);
        assert!(!m.is_leader());
    }

    #[test]
    fn mark_synced_sets_wall_clock_seconds() {
        let m = metrics();
        assert_eq!(m.last_sync(Source::Lambda), 0.0);
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs_f64();
        m.mark_synced(Source::Lambda);
        let after = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs_f64();
        let synced = m.last_sync(Source::Lambda);
        assert!(
            before <= synced && synced <= after,
            "{before} {synced} {after}"
        );
        assert_eq!(m.last_sync(Source::Kubernetes), 0.0);
        let t = text(&m);
        let shown = sample(
            &t,
            r#"upstream_discovery_last_sync_timestamp_seconds{source="lambda"}"#,
        )
        .expect("last_sync sample");
        assert!((shown - synced).abs() < 1.0);
    }

    #[test]
    fn counters_by_reason_kind_and_resource() {
        let m = metrics();
        m.watch_restarted(WatchResource::Services);
        m.watch_restarted(WatchResource::Services);
        m.skipped(SkipReason::NotOwned);
        m.skipped(SkipReason::InvalidUpstreamConfig);
        m.skipped(SkipReason::InvalidUpstreamConfig);
        m.error(ErrorKind::ApiError);
        assert_eq!(m.watch_restarts(WatchResource::Services), 2);
        assert_eq!(m.watch_restarts(WatchResource::Namespaces), 0);
        assert_eq!(m.skipped_count(SkipReason::InvalidUpstreamConfig), 2);
        assert_eq!(m.skipped_count(SkipReason::NotOwned), 1);
        assert_eq!(m.skipped_count(SkipReason::NameCollision), 0);
        assert_eq!(m.errors(ErrorKind::ApiError), 1);
        assert_eq!(m.errors(ErrorKind::Transport), 0);
        let t = text(&m);
        assert_eq!(
            sample(
                &t,
                r#"upstream_discovery_watch_restarts_total{resource="services"}"#
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &t,
                r#"upstream_discovery_skipped_total{reason="invalid_upstream_config"}"#
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(&t, r#"upstream_discovery_errors_total{kind="api_error"}"#),
            Some(1.0)
        );
        // Reading a value never recorded must not create a series.
        assert!(!t.contains("name_collision"));
        assert!(!t.contains(r#"kind="transport""#));
    }

    #[test]
    fn lambda_metrics() {
        let m = metrics();
        m.lambda_api_call("ListFunctions", ApiResult::Success);
        m.lambda_api_call("ListFunctions", ApiResult::Throttled);
        m.lambda_api_call("ListFunctions", ApiResult::Throttled);
        m.set_lambda_functions("gloo-system", "aws-eu", 5);
        assert_eq!(m.lambda_api_calls("ListFunctions", ApiResult::Throttled), 2);
        assert_eq!(m.lambda_api_calls("AssumeRole", ApiResult::Success), 0);
        assert_eq!(m.lambda_functions("gloo-system", "aws-eu"), Some(5));
        let t = text(&m);
        assert_eq!(
            sample(
                &t,
                r#"upstream_discovery_lambda_api_calls_total{operation="ListFunctions",result="throttled"}"#
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &t,
                r#"upstream_discovery_lambda_functions{namespace="gloo-system",upstream="aws-eu"}"#
            ),
            Some(5.0)
        );
        m.forget_lambda_functions("gloo-system", "aws-eu");
        m.forget_lambda_functions("gloo-system", "never-set");
        assert_eq!(m.lambda_functions("gloo-system", "aws-eu"), None);
        assert!(!text(&m).contains("aws-eu"));
    }

    #[test]
    fn cache_synced_has_a_series_per_running_loop_only() {
        let m = metrics();
        assert!(!text(&m).contains("cache_synced{"));
        m.set_loops_synced(&[("services", true), ("functions", false)]);
        let t = text(&m);
        assert!(t.contains("# TYPE upstream_discovery_cache_synced gauge"));
        let services = r#"upstream_discovery_cache_synced{loop="services"}"#;
        assert_eq!(sample(&t, services), Some(1.0));
        let functions = r#"upstream_discovery_cache_synced{loop="functions"}"#;
        assert_eq!(sample(&t, functions), Some(0.0));
        // A loop that stopped (Settings turned it off) loses its series.
        m.set_loops_synced(&[("services", true)]);
        let t = text(&m);
        assert_eq!(sample(&t, functions), None);
        assert_eq!(sample(&t, services), Some(1.0));
    }

    #[test]
    fn build_info_carries_the_crate_version() {
        let t = text(&metrics());
        let series = format!(
            r#"upstream_discovery_build_info{{version="{}"}}"#,
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(sample(&t, &series), Some(1.0), "{t}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_are_exported() {
        let t = text(&metrics());
        for name in [
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_max_fds",
        ] {
            let value = sample(&t, name).unwrap_or_else(|| panic!("{name} missing in\n{t}"));
            assert!(value >= 0.0);
        }
        assert!(sample(&t, "process_resident_memory_bytes").is_some_and(|v| v > 0.0));
    }

    #[test]
    fn label_values_are_the_documented_strings() {
        let all: Vec<&str> = Source::ALL
            .iter()
            .map(|s| s.as_str())
            .chain(WriteOp::ALL.iter().map(|o| o.as_str()))
            .chain(WriteResult::ALL.iter().map(|r| r.as_str()))
            .chain(WatchResource::ALL.iter().map(|r| r.as_str()))
            .chain(ApiResult::ALL.iter().map(|r| r.as_str()))
            .collect();
        assert_eq!(
            all,
            [
                "kubernetes",
                "lambda",
                "create",
                "update",
                "delete",
                "success",
                "error",
                "conflict",
                "skipped",
                "services",
                "upstreams",
                "namespaces",
                "secrets",
                "success",
                "throttled",
                "error",
            ]
        );
    }

    #[test]
    fn every_own_metric_carries_the_prefix() {
        let m = metrics();
        m.skipped(SkipReason::NotOwned);
        m.error(ErrorKind::ApiError);
        m.lambda_api_call("ListFunctions", ApiResult::Error);
        m.set_lambda_functions("ns", "up", 1);
        for family in m.registry().gather() {
            let name = family.name();
            assert!(
                name.starts_with(PREFIX) || name.starts_with("process_"),
                "{name}"
            );
        }
    }
}
