//! Churn (issue 13): rounds of creating and then deleting many Services. Whatever the daemon
//! keeps per Service or Upstream must go with them, so its resident memory once idle after the
//! last round is no more than 10% above what it was once idle after the first. (The
//! bookkeeping itself is checked exactly by `services::tests::churn_leaves_no_bookkeeping_behind`;
//! this is the real binary, its caches, client and allocator included.)
//!
//! CI runs 5 rounds of 300 Services; `UD_CHURN_FULL=1` runs the 20 rounds of 1,000.
//! Each round uses new names, so bookkeeping keyed by name that is never dropped would pile up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};

use crate::daemon::Daemon;
use crate::scenario::Scenario;
use crate::support::{kube_upstream, upstreams_match, wait_until, with};
use crate::test_env::TestEnv;

/// Requests the test itself has in flight at once.
const CONCURRENCY: usize = 32;
/// How much RSS may grow from the first round to the last.
const RSS_GROWTH_ALLOWED: f64 = 0.10;
/// One Service in this many has an annotation that is ignored with a Warning Event, so the
/// daemon's warning bookkeeping churns too.
const WARNED_EVERY: usize = 20;
/// Waiting for a round to settle: 1,000 creates or deletes through the API server on a slow,
/// shared machine.
const ROUND_DEADLINE: Duration = Duration::from_secs(300);
/// Lets the last answers and watch events drain before memory is read.
const SETTLE: Duration = Duration::from_secs(2);

/// `(rounds, Services per round)`.
fn size() -> (usize, usize) {
    if std::env::var("UD_CHURN_FULL").is_ok_and(|v| v == "1") {
        (20, 1000)
    } else {
        (5, 300)
    }
}

fn bad_annotation() -> Value {
    json!({"gloo.solo.io/upstream_config": "{not json"})
}

fn service_name(round: usize, i: usize) -> String {
    format!("c{round:02}-{i:04}")
}

fn service(name: &str, warned: bool) -> Service {
    let annotations = if warned { bad_annotation() } else { json!({}) };
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}, "annotations": annotations},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80}]},
    }))
    .expect("service")
}

/// The Upstream docs/behaviour.md gives for [`service`]: the plain one, with the Service's
/// annotations copied (the invalid `upstream_config` is ignored, not applied).
fn expected_upstream(service_ns: &str, name: &str, warned: bool) -> Value {
    let upstream = kube_upstream(service_ns, name, 80);
    if warned {
        with(upstream, "/metadata/annotations", bad_annotation())
    } else {
        upstream
    }
}

/// Runs `job` on every item, [`CONCURRENCY`] at a time.
async fn in_bulk<T, F, Fut>(items: Vec<T>, job: F)
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    futures::stream::iter(items)
        .map(job)
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
}

/// Waits until the owned Upstreams are exactly `expected` and the daemon has nothing pending,
/// then lets it settle; returns its RSS in bytes.
async fn settled_rss(
    daemon: &Daemon,
    admin: &Client,
    write_ns: &str,
    expected: &[Value],
    what: &str,
) -> f64 {
    crate::support::wait_until_within(ROUND_DEADLINE, what, || async {
        upstreams_match(admin, write_ns, expected)
            .await
            .map(|_| ())
            .map_err(|differences| {
                let lines: Vec<&str> = differences.lines().collect();
                format!(
                    "{} difference line(s), the first:\n{}",
                    lines.len(),
                    lines[..lines.len().min(10)].join("\n")
                )
            })
    })
    .await;
    wait_until("the daemon to have no pending changes", || async {
        let pending = daemon
            .metrics()
            .await
            .get("upstream_discovery_pending_changes")
            .copied();
        if pending == Some(0.0) {
            Ok(())
        } else {
            Err(format!("pending_changes {pending:?}"))
        }
    })
    .await;
    tokio::time::sleep(SETTLE).await;
    let metrics = daemon.metrics().await;
    assert_eq!(
        metrics.get("upstream_discovery_pending_changes"),
        Some(&0.0),
        "{what}: still idle after settling"
    );
    *metrics
        .get("process_resident_memory_bytes")
        .expect("process_resident_memory_bytes in the daemon's metrics")
}

fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

/// Rounds of creating N Services (one Upstream each) and deleting them all: every round ends
/// in exactly the Upstreams expected (N, then none) with nothing pending, and RSS once idle
/// after the last round is within 10% of RSS once idle after the first.
pub async fn rss_stays_flat_over_rounds_of_services_created_and_deleted(env: Arc<TestEnv>) {
    let (rounds, count) = size();
    let scenario = Scenario::builder(env, "churn").build().await;
    let (admin, ns, write_ns) = (
        scenario.admin.clone(),
        scenario.service_ns.clone(),
        scenario.write_ns.clone(),
    );
    // The API server, not the client-side limit, sets the pace.
    let daemon = scenario
        .daemon()
        .args(&[
            "--kube-api-qps",
            "500",
            "--kube-api-burst",
            "500",
            "--write-concurrency",
            "32",
        ])
        .ready()
        .await;
    let services = Api::<Service>::namespaced(admin.clone(), &ns);
    let started = Instant::now();
    let idle_before = settled_rss(&daemon, &admin, &write_ns, &[], "no Upstreams at first").await;
    let mut after_delete = Vec::new();
    eprintln!(
        "churn: {rounds} rounds of {count} Services; RSS idle before: {:.1} MiB",
        mib(idle_before)
    );
    for round in 1..=rounds {
        let round_started = Instant::now();
        let names: Vec<(String, bool)> = (0..count)
            .map(|i| (service_name(round, i), i % WARNED_EVERY == 0))
            .collect();
        in_bulk(names.clone(), |(name, warned)| {
            let services = services.clone();
            async move {
                services
                    .create(&PostParams::default(), &service(&name, warned))
                    .await
                    .unwrap_or_else(|e| panic!("create service {name}: {e}"));
            }
        })
        .await;
        let expected: Vec<Value> = names
            .iter()
            .map(|(name, warned)| expected_upstream(&ns, name, *warned))
            .collect();
        let full = settled_rss(
            &daemon,
            &admin,
            &write_ns,
            &expected,
            &format!("round {round}: the {count} Upstreams"),
        )
        .await;
        let created_in = round_started.elapsed();
        in_bulk(names, |(name, _)| {
            let services = services.clone();
            async move {
                services
                    .delete(&name, &DeleteParams::default())
                    .await
                    .unwrap_or_else(|e| panic!("delete service {name}: {e}"));
            }
        })
        .await;
        let empty = settled_rss(
            &daemon,
            &admin,
            &write_ns,
            &[],
            &format!("round {round}: no Upstreams left"),
        )
        .await;
        eprintln!(
            "churn round {round:2}: {count} created and discovered in {:5.1} s, RSS {:.1} MiB; \
             all deleted and collected, {:5.1} s in all, RSS {:.1} MiB",
            created_in.as_secs_f64(),
            mib(full),
            round_started.elapsed().as_secs_f64(),
            mib(empty)
        );
        after_delete.push(empty);
    }
    let (first, last) = (after_delete[0], after_delete[after_delete.len() - 1]);
    let growth = last / first - 1.0;
    eprintln!(
        "churn: {rounds} rounds of {count} Services in {:.0} s; RSS idle after the first round \
         {:.1} MiB, after the last {:.1} MiB ({:+.1}%)",
        started.elapsed().as_secs_f64(),
        mib(first),
        mib(last),
        growth * 100.0
    );
    assert_eq!(
        daemon
            .metrics()
            .await
            .get("upstream_discovery_upstreams{source=\"kubernetes\"}"),
        Some(&0.0),
        "the daemon counts no Upstream of its own after the last round"
    );
    assert!(
        growth <= RSS_GROWTH_ALLOWED,
        "RSS grew {:.1}% from the first round to the last ({:.1} MiB to {:.1} MiB; by round: {:?} MiB)",
        growth * 100.0,
        mib(first),
        mib(last),
        after_delete.iter().map(|b| (mib(*b) * 10.0).round() / 10.0).collect::<Vec<_>>()
    );
    daemon.terminate(Duration::from_secs(5));
    scenario.cleanup().await;
}
