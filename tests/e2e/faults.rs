//! The daemon's failure paths (docs/reliability.md, docs/development.md): the real binary talks to
//! the API server through the fault proxy, which throttles, fails, conflicts, delays and drops
//! watches.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;
use upstream_discovery::crd::Upstream;

use crate::daemon::Daemon;
use crate::fault_proxy::{matching, Fault, FaultProxy, Rule, Seen};
use crate::scenario::{kubeconfig_via, Scenario};
use crate::support::{kube_upstream, wait_for, wait_until, with};
use crate::test_env::TestEnv;

/// SIGTERM must end the daemon within this.
const EXIT_LIMIT: Duration = Duration::from_secs(5);

fn service(name: &str, port: i32) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": port}]},
    }))
    .expect("service")
}

async fn create_service(admin: &Client, namespace: &str, name: &str, port: i32) {
    Api::<Service>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), &service(name, port))
        .await
        .unwrap_or_else(|e| panic!("create service {name}: {e}"));
}

async fn annotate_service(admin: &Client, namespace: &str, name: &str, key: &str, value: &str) {
    Api::<Service>::namespaced(admin.clone(), namespace)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {key: value}}})),
        )
        .await
        .unwrap_or_else(|e| panic!("annotate service {name}: {e}"));
}

async fn delete_service(admin: &Client, namespace: &str, name: &str) {
    Api::<Service>::namespaced(admin.clone(), namespace)
        .delete(name, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("delete service {name}: {e}"));
}

/// The Upstream docs/behaviour.md gives for a Service made by [`service`] with port 80 and no
/// annotations (written out by hand in `kube_upstream`).
fn plain(service_ns: &str, name: &str) -> serde_json::Value {
    kube_upstream(service_ns, name, 80)
}

/// What the owned Upstreams in `write_ns` should be (the default write mode), compared with
/// what they are.
async fn upstreams_match(
    admin: &Client,
    write_ns: &str,
    expected: &[serde_json::Value],
) -> Result<(), String> {
    crate::support::upstreams_match(admin, write_ns, expected)
        .await
        .map(|_| ())
}

/// Waits until the owned Upstreams are exactly those of the Services `services`, made by
/// [`service`] with port 80 and no annotations.
async fn wait_for_exact_upstreams(
    admin: &Client,
    service_ns: &str,
    write_ns: &str,
    services: &[&str],
) {
    let expected: Vec<serde_json::Value> = services
        .iter()
        .map(|name| plain(service_ns, name))
        .collect();
    crate::support::wait_for_exact_upstreams(admin, write_ns, &expected).await;
}

async fn upstream_exists(admin: &Client, write_ns: &str, name: &str) -> bool {
    Api::<Upstream>::namespaced(admin.clone(), write_ns)
        .get_opt(name)
        .await
        .expect("get upstream")
        .is_some()
}

/// A test's scenario, proxy and daemon (talking to the API server through the proxy), ready.
struct Rig {
    scenario: Scenario,
    proxy: FaultProxy,
    daemon: Daemon,
}

impl Rig {
    async fn start(env: Arc<TestEnv>, purpose: &str) -> Self {
        Self::start_with(env, purpose, &[]).await
    }

    /// A rig whose daemon gets `args` besides the scenario's.
    async fn start_with(env: Arc<TestEnv>, purpose: &str, args: &[&str]) -> Self {
        let scenario = Scenario::builder(env.clone(), purpose).build().await;
        let proxy = FaultProxy::start(&env, scenario.token()).await;
        let daemon = scenario.daemon().via(&proxy.url()).args(args).ready().await;
        Self {
            scenario,
            proxy,
            daemon,
        }
    }

    fn admin(&self) -> &Client {
        &self.scenario.admin
    }

    fn ns(&self) -> &str {
        &self.scenario.service_ns
    }

    fn write(&self) -> &str {
        &self.scenario.write_ns
    }

    /// The Upstream name of `service`'s port.
    fn upstream(&self, service: &str, port: i32) -> String {
        format!("{}-{service}-{port}", self.scenario.service_ns)
    }

    /// The writes (creates and updates) of the Upstream `name` that reached the proxy.
    fn writes_of(&self, name: &str) -> Vec<Seen> {
        self.proxy
            .requests()
            .into_iter()
            .filter(|s| {
                matches!(s.method.as_str(), "POST" | "PATCH")
                    && s.resource == "upstreams"
                    && s.name.as_deref() == Some(name)
            })
            .collect()
    }

    /// Requests with `method` whose path and query contain `contains`.
    fn seen(&self, method: &str, contains: &str) -> Vec<Seen> {
        matching(&self.proxy.requests(), method, contains)
            .cloned()
            .collect()
    }

    async fn metric(&self, name: &str) -> f64 {
        self.daemon
            .metrics()
            .await
            .get(name)
            .copied()
            .unwrap_or(0.0)
    }

    /// Waits until the Service watch and another (the Upstreams') are open at the proxy;
    /// returns the path the Service requests start with.
    async fn wait_for_open_watches(&self) -> String {
        let services_watch = format!("/namespaces/{}/services?", self.ns());
        wait_for("the Service and Upstream watches to be open", || async {
            (!self.seen("GET", &services_watch).is_empty() && self.proxy.open_watches() >= 2)
                .then_some(())
        })
        .await;
        services_watch
    }

    /// The daemon must be alive and ready, with nothing left to do.
    async fn assert_healthy(&self) {
        assert!(
            matches!(self.daemon.get("/healthz").await, Some((200, _))),
            "the daemon is not healthy; its log:\n{}",
            self.daemon.logs()
        );
        assert!(
            matches!(self.daemon.get("/readyz").await, Some((200, _))),
            "the daemon is not ready; its log:\n{}",
            self.daemon.logs()
        );
        self.daemon.wait_idle().await;
    }

    async fn finish(self) {
        self.daemon.terminate(EXIT_LIMIT);
        self.proxy.shutdown().await;
        self.scenario.cleanup().await;
    }
}

fn gaps(seen: &[Seen]) -> Vec<Duration> {
    seen.windows(2).map(|w| w[1].at - w[0].at).collect()
}

const WRITES_ERROR: &str =
    r#"upstream_discovery_writes_total{op="create",result="error",source="kubernetes"}"#;
const WRITES_CONFLICT: &str =
    r#"upstream_discovery_writes_total{op="update",result="conflict",source="kubernetes"}"#;
const LAG_COUNT: &str = r#"upstream_discovery_lag_seconds_count{source="kubernetes"}"#;
const LAG_SUM: &str = r#"upstream_discovery_lag_seconds_sum{source="kubernetes"}"#;

/// The proxy itself: faults apply to the next N matching requests only, the rest is forwarded
/// with the ServiceAccount's rights, kube-rs sends its bearer token over plain HTTP, watches
/// stream, and dropping them ends them.
pub async fn the_fault_proxy_injects_and_forwards(env: Arc<TestEnv>) {
    let scenario = Scenario::builder(env.clone(), "proxy").build().await;
    let proxy = FaultProxy::start(&env, scenario.token()).await;
    let kubeconfig =
        Kubeconfig::from_yaml(&kubeconfig_via(&proxy.url(), scenario.token())).expect("kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    // kube-rs retries 429/503/504 by itself by default; this client must see each answer.
    config.default_retry = false;
    let client = Client::try_from(config).expect("client over http");
    let services = Api::<Service>::namespaced(client.clone(), &scenario.service_ns);

    // A faulted GET gets the 429 with its Retry-After; the next one goes through.
    proxy
        .rules
        .inject(Rule::new("GET", &["/services"], Fault::too_many_requests(7)).times(1));
    match services.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 429);
            assert_eq!(status.reason, "TooManyRequests");
            assert_eq!(
                status.details.map(|d| d.retry_after_seconds),
                Some(7),
                "retryAfterSeconds in the Status body"
            );
        }
        other => panic!("expected a 429, got {other:?}"),
    }
    services
        .list(&ListParams::default())
        .await
        .expect("the next GET is forwarded");
    let seen = proxy.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].fault.as_deref(), Some("429"));
    assert_eq!(seen[1].fault, None);
    assert_eq!(seen[1].resource, "services");
    assert!(
        seen.iter().all(|s| s.bearer),
        "kube-rs sends the bearer token over http: {seen:?}"
    );

    // The Retry-After header is there too (kube-rs' own retry reads the header, not the body).
    proxy
        .rules
        .inject(Rule::new("GET", &["/api/v1/namespaces"], Fault::too_many_requests(3)).times(1));
    let raw = proxy.url().trim_start_matches("http://").to_string();
    let raw_head = raw_request(&raw, &format!("/api/v1/namespaces/{}", scenario.service_ns)).await;
    assert!(raw_head.starts_with("HTTP/1.1 429"), "{raw_head}");
    assert!(
        raw_head.to_ascii_lowercase().contains("retry-after: 3"),
        "{raw_head}"
    );

    // Forwarded with the ServiceAccount's rights, not the admin's: it may read Secrets (for
    // function discovery) but never write one.
    let secrets = Api::<Secret>::namespaced(client.clone(), "kube-system");
    match secrets
        .delete("no-such-secret", &kube::api::DeleteParams::default())
        .await
    {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403),
        other => panic!(
            "the ServiceAccount may not delete Secrets: {:?}",
            other.map(|_| ())
        ),
    }

    // Each status fault, by method and path, and counted.
    for (fault, code) in [
        (Fault::internal_error(), 500),
        (Fault::unavailable(), 503),
        (Fault::conflict(), 409),
        (Fault::gone(), 410),
    ] {
        let id = proxy
            .rules
            .inject(Rule::new("GET", &["/services/x"], fault));
        for _ in 0..2 {
            match services.get("x").await {
                Err(kube::Error::Api(status)) => assert_eq!(status.code, code),
                other => panic!("expected {code}, got {other:?}"),
            }
        }
        proxy.rules.remove(id);
    }
    match services.get("x").await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 404, "forwarded again"),
        other => panic!("expected a 404 from the API server, got {other:?}"),
    }
    assert_eq!(proxy.count("GET", "services"), 2 + 8 + 1);

    // A delay holds the request that long.
    proxy
        .rules
        .inject(Rule::new("GET", &["/services"], Fault::Delay(Duration::from_secs(1))).times(1));
    let started = Instant::now();
    services
        .list(&ListParams::default())
        .await
        .expect("delayed");
    assert!(started.elapsed() >= Duration::from_secs(1));

    // A watch streams events as they happen, and ends when the proxy drops it.
    use futures::{StreamExt, TryStreamExt};
    let list = services.list(&ListParams::default()).await.expect("list");
    let version = list.metadata.resource_version.expect("resourceVersion");
    let mut stream = services
        .watch(&WatchParams::default().timeout(60), &version)
        .await
        .expect("watch")
        .boxed();
    wait_for("the watch to be open in the proxy", || async {
        (proxy.open_watches() == 1).then_some(())
    })
    .await;
    create_service(&scenario.admin, &scenario.service_ns, "watched", 80).await;
    let event = tokio::time::timeout(Duration::from_secs(30), stream.try_next())
        .await
        .expect("an event in time");
    assert!(
        matches!(event, Ok(Some(WatchEvent::Added(ref s))) if s.metadata.name.as_deref() == Some("watched")),
        "{event:?}"
    );
    assert_eq!(proxy.drop_watches(), 1);
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.next().await {
                None => return "ended",
                Some(Err(_)) => return "failed",
                Some(Ok(WatchEvent::Bookmark(_))) => continue,
                Some(Ok(other)) => panic!("unexpected event after the drop: {other:?}"),
            }
        }
    })
    .await
    .expect("the dropped watch ends");
    eprintln!("proxy self-test: a dropped watch {ended} on the client side");
    wait_for("no watch open in the proxy", || async {
        (proxy.open_watches() == 0).then_some(())
    })
    .await;

    // A watch answered with a 410 Gone event, as for a too old resourceVersion.
    proxy
        .rules
        .inject(Rule::new("GET", &["watch="], Fault::WatchGone).times(1));
    let mut stream = services
        .watch(&WatchParams::default(), &version)
        .await
        .expect("watch")
        .boxed();
    match stream.try_next().await {
        Ok(Some(WatchEvent::Error(status))) => assert_eq!(status.code, 410),
        other => panic!("expected a 410 event, got {other:?}"),
    }

    // Rules can be cleared all at once.
    proxy
        .rules
        .inject(Rule::new("", &["/services"], Fault::internal_error()));
    proxy.rules.clear();
    services
        .list(&ListParams::default())
        .await
        .expect("no fault left");

    proxy.shutdown().await;
    scenario.cleanup().await;
}

/// The response head of a raw GET with no credentials.
async fn raw_request(host_port: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(host_port)
        .await
        .expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host_port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
        .split_once("\r\n\r\n")
        .map(|(head, _)| head.to_string())
        .unwrap_or(response)
}

/// 429 with Retry-After on the next two writes: the daemon waits as told, counts the errors,
/// then succeeds, and the lag includes the wait.
pub async fn throttled_writes_wait_for_retry_after_and_are_counted(env: Arc<TestEnv>) {
    let rig = Rig::start(env, "throttle").await;
    let name = rig.upstream("throttled", 80);
    rig.proxy.rules.inject(
        Rule::new("POST", &["/upstreams"], Fault::too_many_requests(2))
            .named(&name)
            .times(2),
    );

    create_service(rig.admin(), rig.ns(), "throttled", 80).await;
    wait_for_exact_upstreams(rig.admin(), rig.ns(), rig.write(), &["throttled"]).await;

    let patches = rig.writes_of(&name);
    let faults: Vec<Option<&str>> = patches.iter().map(|p| p.fault.as_deref()).collect();
    assert_eq!(faults, [Some("429"), Some("429"), None], "{patches:#?}");
    for gap in gaps(&patches) {
        assert!(
            gap >= Duration::from_millis(1900),
            "retried {gap:?} after a 429 with Retry-After: 2"
        );
    }

    // The successful write is recorded once its job ends; the errors before it.
    wait_for("the write to be recorded", || async {
        (rig.daemon.writes().await >= 1.0).then_some(())
    })
    .await;
    let metrics = rig.daemon.metrics().await;
    let errors = metrics.get(WRITES_ERROR).copied().unwrap_or(0.0);
    let throttled = metrics
        .get(r#"upstream_discovery_errors_total{kind="throttled"}"#)
        .copied()
        .unwrap_or(0.0);
    let lag_count = metrics.get(LAG_COUNT).copied().unwrap_or(0.0);
    let lag_sum = metrics.get(LAG_SUM).copied().unwrap_or(0.0);
    assert!(lag_count >= 1.0, "lag measured: {lag_count}");
    assert!(
        lag_sum >= 3.8,
        "the lag includes the two 2 s waits: {lag_sum}"
    );
    assert!(
        errors >= 2.0 && throttled >= 2.0,
        "the two 429s are counted: writes_total{{result=error}} = {errors}, errors_total{{kind=throttled}} = {throttled}; warnings logged:\n{}",
        warnings(&rig.daemon.logs())
    );
    rig.assert_healthy().await;
    rig.finish().await;
}

/// The daemon's log lines at warning level or above.
fn warnings(log: &str) -> String {
    log.lines()
        .filter(|line| line.contains("\"WARN\"") || line.contains("\"ERROR\""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// 500 on one Service's writes, again and again: it is retried with growing backoff while
/// another Service's Upstream is written meanwhile; once the server recovers it is written.
/// 503s are retried too and the Upstream ends right.
pub async fn server_errors_are_retried_with_backoff_without_holding_up_others(env: Arc<TestEnv>) {
    let rig = Rig::start(env, "5xx").await;
    let broken = rig.upstream("broken", 80);
    let failing = rig
        .proxy
        .rules
        .inject(Rule::new("POST", &["/upstreams"], Fault::internal_error()).named(&broken));

    create_service(rig.admin(), rig.ns(), "broken", 80).await;
    wait_for("two failed writes of broken", || async {
        (rig.writes_of(&broken).len() >= 2).then_some(())
    })
    .await;
    create_service(rig.admin(), rig.ns(), "healthy", 80).await;
    wait_until("healthy's Upstream while broken still fails", || async {
        let healthy = rig.upstream("healthy", 80);
        if upstream_exists(rig.admin(), rig.write(), &healthy).await {
            Ok(())
        } else {
            Err(format!("{healthy} not there yet"))
        }
    })
    .await;
    assert!(!upstream_exists(rig.admin(), rig.write(), &rig.upstream("broken", 80)).await);
    wait_for("four failed writes of broken", || async {
        (rig.writes_of(&broken).len() >= 4).then_some(())
    })
    .await;
    rig.proxy.rules.remove(failing);
    wait_for_exact_upstreams(rig.admin(), rig.ns(), rig.write(), &["broken", "healthy"]).await;

    // Backoff: each wait after a failure is longer than the one before (doubling, ±25 %).
    let attempts = rig.writes_of(&broken);
    let failed: Vec<Seen> = attempts
        .iter()
        .filter(|p| p.fault.is_some())
        .cloned()
        .collect();
    let waits = gaps(&failed);
    eprintln!("waits between attempts after a 500: {waits:?}");
    assert!(waits.len() >= 3, "{attempts:#?}");
    assert!(
        waits[0] >= Duration::from_millis(300),
        "first retry {:?} after a 500",
        waits[0]
    );
    for pair in waits.windows(2) {
        assert!(pair[1] > pair[0], "backoff grows: {waits:?}");
    }
    wait_for("the write of broken to be recorded", || async {
        (rig.daemon.writes().await >= 2.0).then_some(())
    })
    .await;
    let server_errors = rig
        .metric(r#"upstream_discovery_errors_total{kind="server_error"}"#)
        .await;
    assert!(
        server_errors >= failed.len() as f64,
        "{} 500s, errors_total{{kind=server_error}} = {server_errors}",
        failed.len()
    );
    assert!(rig.metric(WRITES_ERROR).await >= failed.len() as f64);

    // 503 on the next three writes of another Service: retried, and ends right.
    let flaky = rig.upstream("flaky", 80);
    rig.proxy.rules.inject(
        Rule::new("POST", &["/upstreams"], Fault::unavailable())
            .named(&flaky)
            .times(3),
    );
    create_service(rig.admin(), rig.ns(), "flaky", 80).await;
    wait_for_exact_upstreams(
        rig.admin(),
        rig.ns(),
        rig.write(),
        &["broken", "healthy", "flaky"],
    )
    .await;
    let attempts = rig.writes_of(&flaky);
    let faults: Vec<Option<&str>> = attempts.iter().map(|p| p.fault.as_deref()).collect();
    assert_eq!(faults, [Some("503"), Some("503"), Some("503"), None]);
    let waits = gaps(&attempts);
    eprintln!("waits between attempts after a 503: {waits:?}");
    wait_for("the write of flaky to be recorded", || async {
        (rig.daemon.writes().await >= 3.0).then_some(())
    })
    .await;
    let after = rig
        .metric(r#"upstream_discovery_errors_total{kind="server_error"}"#)
        .await;
    assert!(
        after >= server_errors + 3.0 && waits[0] >= Duration::from_millis(300),
        "the 503s are retried by the engine with its backoff and counted: waits {waits:?}, \
         errors_total{{kind=server_error}} went from {server_errors} to {after}"
    );
    rig.assert_healthy().await;
    rig.finish().await;
}

/// 409 Conflict on an update (and on a create): the daemon re-plans from fresh state and the
/// Upstream ends right.
pub async fn a_conflict_makes_the_daemon_replan(env: Arc<TestEnv>) {
    let rig = Rig::start(env, "conflict").await;
    let name = rig.upstream("contested", 80);

    // On the create.
    rig.proxy.rules.inject(
        Rule::new("POST", &["/upstreams"], Fault::conflict())
            .named(&name)
            .times(1),
    );
    create_service(rig.admin(), rig.ns(), "contested", 80).await;
    wait_for_exact_upstreams(rig.admin(), rig.ns(), rig.write(), &["contested"]).await;
    let creates = rig.writes_of(&name);
    assert_eq!(creates.len(), 2, "{creates:#?}");
    assert_eq!(creates[0].fault.as_deref(), Some("409"));

    // On an update.
    rig.daemon.wait_idle().await;
    rig.proxy.rules.inject(
        Rule::new("PATCH", &["/upstreams"], Fault::conflict())
            .named(&name)
            .times(1),
    );
    annotate_service(rig.admin(), rig.ns(), "contested", "team", "b").await;
    wait_until("the annotation on the Upstream", || async {
        let contested = with(
            plain(rig.ns(), "contested"),
            "/metadata/annotations",
            json!({"team": "b"}),
        );
        upstreams_match(rig.admin(), rig.write(), &[contested]).await?;
        let upstream = Api::<Upstream>::namespaced(rig.admin().clone(), rig.write())
            .get(&rig.upstream("contested", 80))
            .await
            .map_err(|e| e.to_string())?;
        let annotations = upstream.metadata.annotations.unwrap_or_default();
        (annotations.get("team").map(String::as_str) == Some("b"))
            .then_some(())
            .ok_or_else(|| format!("annotations {annotations:?}"))
    })
    .await;
    let patches = rig.writes_of(&name);
    let faults: Vec<Option<&str>> = patches.iter().map(|p| p.fault.as_deref()).collect();
    assert_eq!(
        faults,
        [Some("409"), None, Some("409"), None],
        "{patches:#?}"
    );
    wait_for("the conflict to be counted", || async {
        (rig.metric(WRITES_CONFLICT).await >= 1.0).then_some(())
    })
    .await;
    rig.assert_healthy().await;
    rig.finish().await;
}

/// Watches dropped mid-stream: the watchers come back and the Upstreams follow every change
/// made afterwards. Then a Service deleted while watches are down (dropped, and refused with
/// 503 for a while), the watch answered 410 Gone when it comes back: after the re-list, its
/// Upstream is collected.
pub async fn dropped_watches_are_reestablished_and_a_relist_collects(env: Arc<TestEnv>) {
    let rig = Rig::start(env, "watchdrop").await;
    let (admin, ns, write) = (
        rig.admin().clone(),
        rig.ns().to_string(),
        rig.write().to_string(),
    );
    create_service(&admin, &ns, "first", 80).await;
    create_service(&admin, &ns, "second", 80).await;
    wait_for_exact_upstreams(&admin, &ns, &write, &["first", "second"]).await;
    wait_for("the Service and Upstream watches to be open", || async {
        (rig.proxy.open_watches() >= 2).then_some(())
    })
    .await;

    let watches_before = rig.proxy.requests().iter().filter(|s| s.watch).count();
    let dropped = rig.proxy.drop_watches();
    assert!(dropped >= 2, "dropped {dropped} watches");
    create_service(&admin, &ns, "third", 80).await;
    annotate_service(&admin, &ns, "first", "team", "a").await;
    delete_service(&admin, &ns, "second").await;
    let first = with(
        plain(&ns, "first"),
        "/metadata/annotations",
        json!({"team": "a"}),
    );
    crate::support::wait_for_exact_upstreams(&admin, &write, &[first.clone(), plain(&ns, "third")])
        .await;
    let upstream = Api::<Upstream>::namespaced(admin.clone(), &write)
        .get(&rig.upstream("first", 80))
        .await
        .expect("first's Upstream");
    assert_eq!(
        upstream
            .metadata
            .annotations
            .unwrap_or_default()
            .get("team")
            .map(String::as_str),
        Some("a")
    );
    let rewatches = rig.proxy.requests().iter().filter(|s| s.watch).count() - watches_before;
    assert!(rewatches >= 2, "{rewatches} new watch requests");
    let restarts = rig
        .daemon
        .metric_sum("upstream_discovery_watch_restarts_total")
        .await;
    eprintln!("after dropping {dropped} watches: {rewatches} new watch requests, watch_restarts_total = {restarts}");

    // Watches down for a while, a Service deleted meanwhile.
    wait_for("the watches to be back", || async {
        (rig.proxy.open_watches() >= 2).then_some(())
    })
    .await;
    let refused = rig
        .proxy
        .rules
        .inject(Rule::new("GET", &["watch="], Fault::unavailable()));
    let dropped_at = Instant::now();
    rig.proxy.drop_watches();
    wait_for("the Service watch to be refused", || async {
        rig.proxy
            .requests()
            .iter()
            .any(|s| {
                s.at > dropped_at
                    && s.watch
                    && s.resource == "services"
                    && s.fault.as_deref() == Some("503")
            })
            .then_some(())
    })
    .await;
    delete_service(&admin, &ns, "third").await;
    // The watch comes back with 410 Gone (the resourceVersion it resumes from is too old), so
    // the watcher must re-list; then watches go through again.
    // The watch of the Services' namespace (the write namespace's Services are watched too).
    let services_watch = format!("/namespaces/{ns}/services?");
    let gone = rig
        .proxy
        .rules
        .inject(Rule::new("GET", &[&services_watch, "watch="], Fault::WatchGone).times(1));
    rig.proxy.rules.remove(refused);
    wait_for("the Service watch to get its 410", || async {
        (rig.proxy.rules.remaining(gone) == Some(0)).then_some(())
    })
    .await;
    let gone_at = rig
        .proxy
        .requests()
        .iter()
        .rev()
        .find(|s| s.fault.as_deref() == Some("watch-gone"))
        .expect("the 410 watch")
        .at;
    crate::support::wait_for_exact_upstreams(&admin, &write, &[first]).await;
    let relisted = rig
        .proxy
        .requests()
        .iter()
        .any(|s| s.at > gone_at && s.method == "GET" && s.resource == "services" && !s.watch);
    assert!(relisted, "the Services were re-listed after the 410");
    let restarts = rig
        .daemon
        .metric_sum("upstream_discovery_watch_restarts_total")
        .await;
    assert!(restarts >= 1.0, "watch_restarts_total = {restarts}");
    rig.assert_healthy().await;
    rig.finish().await;
}

/// A Service deleted while the write of its Upstream is held up: the Upstream is created late,
/// then collected; the daemon neither crashes nor stops being ready.
pub async fn a_service_deleted_during_its_write_is_collected(env: Arc<TestEnv>) {
    let rig = Rig::start(env, "inflight").await;
    let name = rig.upstream("inflight", 80);
    let path = format!("/upstreams/{name}");
    rig.proxy.rules.inject(
        Rule::new(
            "POST",
            &["/upstreams"],
            Fault::Delay(Duration::from_secs(2)),
        )
        .named(&name)
        .times(1),
    );
    create_service(rig.admin(), rig.ns(), "inflight", 80).await;
    let held = wait_for("the create to reach the proxy", || async {
        rig.writes_of(&name).first().map(|s| s.at)
    })
    .await;
    delete_service(rig.admin(), rig.ns(), "inflight").await;
    assert!(
        held.elapsed() < Duration::from_secs(2),
        "the Service was deleted while the write was held"
    );
    let deleted = wait_for("the late Upstream to be deleted", || async {
        rig.seen("DELETE", &path).first().cloned()
    })
    .await;
    assert_eq!(deleted.resource, "upstreams");
    assert_eq!(deleted.name.as_deref(), Some(name.as_str()));
    assert!(
        deleted.at >= held + Duration::from_secs(2),
        "deleted after the held write went through"
    );
    wait_for_exact_upstreams(rig.admin(), rig.ns(), rig.write(), &[]).await;
    // Still working: a new Service gets its Upstream.
    create_service(rig.admin(), rig.ns(), "after", 80).await;
    wait_for_exact_upstreams(rig.admin(), rig.ns(), rig.write(), &["after"]).await;
    rig.assert_healthy().await;
    rig.finish().await;
}

/// Creates `first`, waits for the Service watch to be open, stalls every open watch at the
/// proxy without ending it, creates `second` and waits for its Upstream. Returns when the stall
/// began and the Service requests made since, after checking that the Service watch was renewed
/// from its last version and nothing was re-listed.
async fn stall_watches_then_create(rig: &Rig, before_stall: impl AsyncFnOnce(&[Seen])) -> Instant {
    let (admin, ns, write) = (rig.admin(), rig.ns(), rig.write());
    create_service(admin, ns, "first", 80).await;
    wait_for_exact_upstreams(admin, ns, write, &["first"]).await;
    let services_watch = rig.wait_for_open_watches().await;
    before_stall(&rig.seen("GET", &services_watch)).await;

    let stalled_at = Instant::now();
    let stalled = rig.proxy.stall_watches();
    assert!(stalled >= 2, "stalled {stalled} watches");
    create_service(admin, ns, "second", 80).await;
    wait_for_exact_upstreams(admin, ns, write, &["first", "second"]).await;
    let renewals: Vec<Seen> = rig
        .seen("GET", &services_watch)
        .into_iter()
        .filter(|s| s.at > stalled_at)
        .collect();
    assert!(
        renewals
            .iter()
            .any(|s| s.watch && s.path.contains("resourceVersion=")),
        "the Service watch renewed from its last version: {renewals:?}"
    );
    assert!(
        renewals.iter().all(|s| s.watch),
        "no re-list after a stalled watch: {renewals:?}"
    );
    assert_eq!(
        rig.daemon
            .metric_sum("upstream_discovery_watch_restarts_total")
            .await,
        0.0,
        "a renewal is no failure"
    );
    stalled_at
}

/// kube-apiserver 1.20 stops serving a watcher it finds unresponsive without ending its
/// response. The proxy does the same to every open watch: the daemon hears nothing, and only
/// the renewal at `--watch-timeout` (from the last version seen) brings the changes made
/// meanwhile; nothing is counted as an error and nothing is re-listed.
pub async fn a_watch_stalled_without_an_end_is_renewed_at_the_watch_timeout(env: Arc<TestEnv>) {
    let rig = Rig::start_with(env, "watchstall", &["--watch-timeout", "10s"]).await;
    let stalled_at = stall_watches_then_create(&rig, async |watches: &[Seen]| {
        assert!(
            watches
                .iter()
                .filter(|s| s.watch)
                .all(|s| s.path.contains("timeoutSeconds=10")),
            "every watch asks the server to end it after --watch-timeout: {watches:?}"
        );
    })
    .await;
    eprintln!(
        "a stalled Service watch: second's Upstream {:.1?} after the stall (--watch-timeout 10s)",
        stalled_at.elapsed()
    );
    rig.assert_healthy().await;
    rig.finish().await;
}

/// The same stall with the server's own timeout at its default (290 s): the watch has sent
/// nothing for `--watch-silence`, so the daemon ends it and watches again from its last version;
/// the renewal is counted as one for silence, not as a failure, and nothing is re-listed.
pub async fn a_watch_stalled_without_an_end_is_renewed_after_the_silence_limit(env: Arc<TestEnv>) {
    let rig = Rig::start_with(env, "watchsilence", &["--watch-silence", "5s"]).await;
    let silence_renewals =
        r#"upstream_discovery_watch_silence_renewals_total{resource="services"}"#;
    let mut before = 0.0;
    let stalled_at = stall_watches_then_create(&rig, async |_: &[Seen]| {
        before = rig.metric(silence_renewals).await;
    })
    .await;
    let written_after = stalled_at.elapsed();
    assert!(
        written_after < Duration::from_secs(60),
        "renewed after the 5 s silence, not at the 290 s watch timeout: {written_after:?}"
    );
    assert!(
        rig.metric(silence_renewals).await > before,
        "the renewal is counted as one for silence"
    );
    eprintln!(
        "a stalled Service watch: second's Upstream {written_after:.1?} after the stall (--watch-silence 5s, --watch-timeout 290s)"
    );
    rig.assert_healthy().await;
    rig.finish().await;
}

/// A burst far above the write rate: every Upstream write is held at the proxy (two in flight,
/// so about ten a second) while 60 Services are created and then annotated at once. The
/// daemon falls behind (its pending changes pile up) but keeps reading: the watches opened
/// before the burst deliver all of it (no renewal, no re-list, nothing counted for silence or
/// as a failure), and every Service ends with its Upstream as the last change left it.
pub async fn a_burst_far_above_the_write_rate_is_written_whole_with_every_watch_kept(
    env: Arc<TestEnv>,
) {
    const SERVICES: usize = 60;
    let rig = Rig::start_with(env, "burst", &["--write-concurrency", "2"]).await;
    let (admin, ns, write) = (rig.admin(), rig.ns(), rig.write());
    let services_watch = rig.wait_for_open_watches().await;
    for method in ["POST", "PATCH"] {
        rig.proxy.rules.inject(Rule::new(
            method,
            &["/upstreams"],
            Fault::Delay(Duration::from_millis(200)),
        ));
    }
    let burst_at = Instant::now();
    let names: Vec<String> = (0..SERVICES).map(|i| format!("burst-{i:02}")).collect();
    futures::future::join_all(names.iter().map(|name| create_service(admin, ns, name, 80))).await;
    futures::future::join_all(
        names
            .iter()
            .map(|name| annotate_service(admin, ns, name, "example.com/round", "2")),
    )
    .await;

    let expected: Vec<serde_json::Value> = names
        .iter()
        .map(|name| {
            with(
                plain(ns, name),
                "/metadata/annotations",
                json!({"example.com/round": "2"}),
            )
        })
        .collect();
    let most_pending = std::cell::Cell::new(0.0_f64);
    wait_until("every Service's last change written", || async {
        let pending = rig.metric("upstream_discovery_pending_changes").await;
        most_pending.set(most_pending.get().max(pending));
        upstreams_match(admin, write, &expected).await
    })
    .await;
    let most_pending = most_pending.get();
    assert!(
        most_pending >= 10.0,
        "the burst outran the writes (at most {most_pending} changes were pending), so the test \
         says something about a daemon that is behind"
    );
    let renewed: Vec<Seen> = rig
        .proxy
        .requests()
        .into_iter()
        .filter(|s| s.at > burst_at && s.method == "GET" && s.watch)
        .collect();
    assert!(
        renewed.is_empty(),
        "the watches open before the burst carried all of it: {renewed:?}"
    );
    assert!(
        rig.seen("GET", &services_watch)
            .iter()
            .all(|s| s.at < burst_at || s.watch),
        "nothing re-listed"
    );
    for metric in [
        "upstream_discovery_watch_silence_renewals_total",
        "upstream_discovery_watch_restarts_total",
    ] {
        assert_eq!(rig.daemon.metric_sum(metric).await, 0.0, "{metric}");
    }
    eprintln!(
        "a burst of {} changes at 10 writes/s at most: all written {:.1?} after it began, at most {most_pending} pending",
        SERVICES * 2,
        burst_at.elapsed()
    );
    rig.assert_healthy().await;
    rig.finish().await;
}
