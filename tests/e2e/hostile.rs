//! Hostile input beside normal input (issue 13): Services whose annotations are invalid JSON,
//! 200 KiB long, nested 10,000 deep or full of unknown fields must cost the normal Services of
//! their namespace nothing, and each must be reported once.
//!
//! The test checks what can be counted: one write per Service and none repeated, one Warning
//! Event and one count per hostile Service, exact Upstreams, no error. How fast the normal ones
//! converge beside the hostile ones, against alone, is measured by `benches/hostile.rs`, which
//! shares the Services and the timing of this file.
//!
//! Sizes: by default (CI) 200 hostile and 100 normal Services; `UD_HOSTILE_FULL=1` runs the
//! issue's 2,000 hostile and 1,000 normal.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event, Service};
use kube::api::{ListParams, PostParams, WatchEvent, WatchParams};
use kube::{Api, Client};
use serde_json::{json, Value};

use crate::daemon::Daemon;
use crate::scenario::Scenario;
use crate::support::{
    compare::compare_upstreams, kube_upstream, upstream_api, wait_for, wait_for_exact_upstreams,
    wait_until, with, DEADLINE,
};
use crate::test_env::TestEnv;

/// SIGTERM must end the daemon within this.
const EXIT_LIMIT: Duration = Duration::from_secs(5);
/// Services created at once, in every phase alike (the bench's timings include their creation).
const CREATE_CONCURRENCY: usize = 16;

/// The ways a hostile Service is hostile, in turn; each gives exactly one warning.
const KINDS: usize = 5;

/// `(hostile, normal)` Service counts for this run.
pub fn counts() -> (usize, usize) {
    if std::env::var("UD_HOSTILE_FULL").is_ok_and(|v| v == "1") {
        (2_000, 1_000)
    } else {
        (200, 100)
    }
}

/// The annotations of the `index`th hostile Service, and the `skipped_total` reason its one
/// warning is counted under (docs/behaviour.md: the annotation is ignored, a Warning Event and a
/// count).
pub fn hostile_annotations(index: usize) -> (BTreeMap<String, String>, &'static str) {
    let config = "gloo.solo.io/upstream_config".to_string();
    match index % KINDS {
        // Invalid JSON: cut off in the middle.
        0 => (
            BTreeMap::from([(config, r#"{"kube": {"serviceName": "#.to_string())]),
            "invalid_upstream_config",
        ),
        // 200 KiB of fields no Upstream has.
        1 => {
            let mut fields = Vec::new();
            let mut length = 2;
            let mut i = 0;
            while length < 200 * 1024 {
                let field = format!("\"field{i:06}\":{i}");
                length += field.len() + 1;
                fields.push(field);
                i += 1;
            }
            (
                BTreeMap::from([(config, format!("{{{}}}", fields.join(",")))]),
                "unknown_upstream_config_field",
            )
        }
        // Nested 10,000 deep (a recursive parser without a bound would overflow its stack).
        2 => (
            BTreeMap::from([(
                config,
                format!(
                    r#"{{"static": {{"hosts": {}{}}}}}"#,
                    "[".repeat(10_000),
                    "]".repeat(10_000)
                ),
            )]),
            "invalid_upstream_config",
        ),
        // Unknown fields at two depths, among known ones.
        3 => (
            BTreeMap::from([(
                config,
                r#"{"kube": {"serviceName": "elsewhere", "bogus": true}, "circuitBreakers": {"maxConnections": 1}, "nope": 1}"#.to_string(),
            )]),
            "unknown_upstream_config_field",
        ),
        // A 200 KiB value where a boolean belongs.
        _ => (
            BTreeMap::from([(
                "gloo.solo.io/h2_service".to_string(),
                "t".repeat(200 * 1024),
            )]),
            "invalid_boolean_annotation",
        ),
    }
}

pub fn service(name: &str, annotations: &BTreeMap<String, String>) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}, "annotations": annotations},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80}]},
    }))
    .expect("service")
}

pub fn hostile_name(index: usize) -> String {
    format!("hostile-{index:04}")
}

pub fn normal_name(index: usize) -> String {
    format!("normal-{index:04}")
}

/// What docs/behaviour.md says the daemon writes for a Service of [`service`]: the plain Upstream
/// of its port 80, the bad annotation ignored (so nothing of it in the spec) and, like every
/// annotation, copied to the Upstream.
pub fn expected(namespace: &str, name: &str, annotations: &BTreeMap<String, String>) -> Value {
    let plain = kube_upstream(namespace, name, 80);
    if annotations.is_empty() {
        plain
    } else {
        with(plain, "/metadata/annotations", json!(annotations))
    }
}

/// Creates the hostile Services of `annotations` (from [`hostile_annotations`]) in `namespace`.
pub async fn create_hostile(
    admin: &Client,
    namespace: &str,
    annotations: &[(BTreeMap<String, String>, &'static str)],
) {
    let services = annotations
        .iter()
        .enumerate()
        .map(|(i, (annotations, _))| service(&hostile_name(i), annotations))
        .collect();
    create_all(admin, namespace, services).await;
}

/// Creates `services` in `namespace`, [`CREATE_CONCURRENCY`] at a time.
pub async fn create_all(admin: &Client, namespace: &str, services: Vec<Service>) {
    let api = Api::<Service>::namespaced(admin.clone(), namespace);
    futures::stream::iter(services)
        .map(|service| {
            let api = api.clone();
            async move {
                let name = service.metadata.name.clone().unwrap_or_default();
                api.create(&PostParams::default(), &service)
                    .await
                    .map_err(|e| format!("create Service {name}: {e}"))
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Creates `count` normal Services in `namespace` while watching the Upstreams of `write_ns`:
/// the time from the first create until the watch has shown each of their Upstreams as
/// expected. A watch rather than polled lists, so that measuring costs the API server nothing
/// that grows with the (large) hostile Upstreams beside them.
pub async fn time_to_converge(
    admin: &Client,
    namespace: &str,
    write_ns: &str,
    names: &[String],
) -> Duration {
    let api = upstream_api(admin, write_ns);
    let list = api
        .list_metadata(&ListParams::default().limit(1))
        .await
        .expect("list Upstreams");
    let mut version = list.metadata.resource_version.expect("a list version");
    let wanted: BTreeMap<String, Value> = names
        .iter()
        .map(|name| {
            (
                format!("{namespace}-{name}-80"),
                expected(namespace, name, &BTreeMap::new()),
            )
        })
        .collect();
    let watcher = tokio::spawn(async move {
        let mut matched = BTreeSet::new();
        loop {
            let params = WatchParams::default()
                .labels("discovered_by=kubernetesplugin")
                .timeout(290);
            let stream = api.watch(&params, &version).await.expect("watch Upstreams");
            futures::pin_mut!(stream);
            while let Some(event) = stream.try_next().await.expect("watch event") {
                let (object, present) = match event {
                    WatchEvent::Added(object) | WatchEvent::Modified(object) => (object, true),
                    WatchEvent::Deleted(object) => (object, false),
                    WatchEvent::Bookmark(bookmark) => {
                        version = bookmark.metadata.resource_version;
                        continue;
                    }
                    WatchEvent::Error(error) => panic!("watch error: {error:?}"),
                };
                if let Some(at) = object.metadata.resource_version.clone() {
                    version = at;
                }
                let name = object.metadata.name.clone().unwrap_or_default();
                let Some(want) = wanted.get(&name) else {
                    continue;
                };
                let found = serde_json::to_value(&object).expect("json");
                if present && compare_upstreams(&[found], std::slice::from_ref(want)).is_ok() {
                    matched.insert(name);
                } else {
                    matched.remove(&name);
                }
                if matched.len() == wanted.len() {
                    return Instant::now();
                }
            }
        }
    });
    let started = Instant::now();
    create_all(
        admin,
        namespace,
        names
            .iter()
            .map(|name| service(name, &BTreeMap::new()))
            .collect(),
    )
    .await;
    let converged = tokio::time::timeout(DEADLINE, watcher)
        .await
        .unwrap_or_else(|_| panic!("{} normal Upstreams within {DEADLINE:?}", names.len()))
        .expect("the watch task");
    converged - started
}

/// The daemon's last few warning and error log lines, each cut short (they may quote 200 KiB
/// annotations), to say why a wait failed.
pub fn last_warnings(daemon: &Daemon) -> String {
    let logs = daemon.logs();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("\"WARN\"") || line.contains("\"ERROR\""))
        .collect();
    lines[lines.len().saturating_sub(8)..]
        .iter()
        .map(|line| line.chars().take(600).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `skipped_total` of each reason in `reasons`.
pub async fn skipped<'a>(
    daemon: &Daemon,
    reasons: &BTreeMap<&'a str, f64>,
) -> BTreeMap<&'a str, f64> {
    let metrics = daemon.metrics().await;
    reasons
        .keys()
        .map(|reason| {
            let key = format!("upstream_discovery_skipped_total{{reason=\"{reason}\"}}");
            (*reason, metrics.get(&key).copied().unwrap_or_default())
        })
        .collect()
}

/// The Warning Events about Services of `namespace` with reason `InvalidAnnotation`, by
/// Service name.
pub async fn invalid_annotation_events(
    admin: &Client,
    namespace: &str,
) -> Result<BTreeMap<String, Vec<Event>>, String> {
    let list = Api::<Event>::namespaced(admin.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    let mut by_service: BTreeMap<String, Vec<Event>> = BTreeMap::new();
    for event in list.items {
        if event.involved_object.kind.as_deref() == Some("Service")
            && event.reason.as_deref() == Some("InvalidAnnotation")
        {
            let name = event.involved_object.name.clone().unwrap_or_default();
            by_service.entry(name).or_default().push(event);
        }
    }
    Ok(by_service)
}

pub async fn hostile_services_cost_the_normal_ones_nothing_and_are_each_reported_once(
    env: Arc<TestEnv>,
) {
    let (hostile, normal) = counts();
    let scenario = Scenario::builder(env, "hostile").build().await;
    let (admin, ns, write) = (
        &scenario.admin,
        scenario.service_ns.clone(),
        scenario.write_ns.clone(),
    );
    let mut daemon = scenario.daemon().ready().await;

    // 1. The hostile Services: each Upstream written once as if the bad annotation were absent,
    // one Warning Event and one count each.
    let annotations: Vec<_> = (0..hostile).map(hostile_annotations).collect();
    let writes_before = daemon.writes().await;
    create_hostile(admin, &ns, &annotations).await;
    let mut per_reason: BTreeMap<&str, f64> = BTreeMap::new();
    for (_, reason) in &annotations {
        *per_reason.entry(reason).or_default() += 1.0;
    }
    // Within the usual deadline: kube-apiserver 1.20 force-closes a Service watch that reads
    // too slowly ("Forcing watcher close due to unresponsiveness") without ending its response,
    // so a watch the client does not replace before its 290 s timeout misses these Services.
    wait_until("one count per hostile Service", || async {
        let found = skipped(&daemon, &per_reason).await;
        (found == per_reason).then_some(()).ok_or_else(|| {
            format!(
                "skipped_total {found:?}, want {per_reason:?}; the daemon's last warnings:\n{}",
                last_warnings(&daemon)
            )
        })
    })
    .await;
    daemon.wait_idle().await;
    let hostile_writes = daemon.writes().await - writes_before;
    assert_eq!(
        hostile_writes, hostile as f64,
        "one write per hostile Service, none retried or repeated"
    );
    wait_until("one Warning Event per hostile Service", || async {
        let events = invalid_annotation_events(admin, &ns).await?;
        (events.len() == hostile)
            .then_some(())
            .ok_or_else(|| format!("{} of {hostile} Services have their Event", events.len()))
    })
    .await;

    // 2. Normal Services beside the hostile ones: nothing written but their own Upstreams, each
    // once; the hostile ones cost no further write.
    let writes_before = daemon.writes().await;
    let normal_names: Vec<String> = (0..normal).map(normal_name).collect();
    let beside = time_to_converge(admin, &ns, &write, &normal_names).await;
    daemon.wait_idle().await;
    let writes_beside = daemon.writes().await - writes_before;
    eprintln!(
        "hostile: {normal} normal Services beside {hostile} hostile ones converged in \
         {beside:.2?} ({writes_beside} writes); the ratio against alone is measured by \
         `cargo bench --bench hostile`"
    );
    assert_eq!(
        writes_beside, normal as f64,
        "one write per normal Service and none for the hostile ones"
    );

    // 3. The end state: exactly the expected Upstreams, each hostile Service reported exactly
    // once (no more counts, one Event object never repeated), none of the normal ones reported,
    // and the daemon still running without an error.
    let mut all: Vec<Value> = normal_names
        .iter()
        .map(|name| expected(&ns, name, &BTreeMap::new()))
        .collect();
    for (i, (annotations, _)) in annotations.iter().enumerate() {
        all.push(expected(&ns, &hostile_name(i), annotations));
    }
    wait_for_exact_upstreams(admin, &write, &all).await;
    assert_eq!(
        skipped(&daemon, &per_reason).await,
        per_reason,
        "no hostile Service counted twice"
    );
    let events = invalid_annotation_events(admin, &ns).await.expect("Events");
    let names: BTreeSet<String> = (0..hostile).map(hostile_name).collect();
    assert_eq!(
        events.keys().cloned().collect::<BTreeSet<_>>(),
        names,
        "an Event for each hostile Service and none for a normal one"
    );
    for (name, events) in &events {
        let [event] = events.as_slice() else {
            panic!("{name} has {} Events", events.len());
        };
        assert_eq!(event.type_.as_deref(), Some("Warning"), "{name}");
        assert!(
            event.count.unwrap_or(1) <= 1 && event.series.is_none(),
            "{name} reported more than once: {event:?}"
        );
        let message = event.message.as_deref().unwrap_or_default();
        assert!(
            message.len() <= 2_000,
            "{name}: an Event of {} bytes",
            message.len()
        );
    }
    assert!(daemon.running(), "the daemon still runs");
    // No Settings in this scenario: the daemon counts that once, which is no fault here.
    let errors: Vec<(String, f64)> = daemon
        .metrics()
        .await
        .into_iter()
        .filter(|(name, value)| {
            name.starts_with("upstream_discovery_errors_total{")
                && !name.contains("settings_unreadable")
                && *value > 0.0
        })
        .collect();
    assert!(
        errors.is_empty(),
        "errors: {errors:?}; the daemon's last warnings:\n{}",
        last_warnings(&daemon)
    );
    wait_for("the daemon to stay ready", || async {
        matches!(daemon.get("/readyz").await, Some((200, _))).then_some(())
    })
    .await;
    daemon.terminate(EXIT_LIMIT);
    scenario.cleanup().await;
}
