//! The alerts and the dashboard (issue 14) against a real Prometheus server: Debian's
//! `prometheus` (tests/env/setup.sh installs it) scrapes the real daemon every second while the
//! daemon discovers Services and Lambda functions (moto); then every query of
//! deploy/grafana/upstream-discovery.json returns at least one series, every expression of
//! deploy/prometheus/alerts.yaml evaluates without error, and Prometheus, loading that file as
//! its rules, reports every rule healthy.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::{json, Value};
use upstream_discovery::crd::Upstream;

use crate::aws_fixture::{Moto, TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY};
use crate::daemon::{free_port, Daemon};
use crate::scenario::Scenario;
use crate::support::{list_upstreams, wait_for, wait_until};
use crate::test_env::TestEnv;

/// Not used by any other test: moto is shared by the tests running side by side.
const REGION: &str = "us-west-2";
const EXIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A Prometheus server of the test's own: its config, storage and log in a temp dir; killed
/// (by its process id) when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `target` (host:port) every second and evaluates `rules` every second.
    fn start(target: &str, rules: &Path) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules}\n\
                 scrape_configs:\n  - job_name: upstream-discovery\n    static_configs:\n      - targets: ['{target}']\n",
                rules = rules.display()
            ),
        )
        .expect("write prometheus.yml");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start prometheus ({e}): run tests/env/setup.sh (Debian's prometheus)"
                )
            });
        Self { child, port, dir }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// GET `path` as HTTP/1.0, so that the answer is never chunked: (status, body).
    async fn get(&self, path: &str) -> Option<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, body.to_string()))
    }

    async fn wait_ready(&self) {
        wait_for(
            &format!("prometheus to be ready; its log:\n{}", self.logs()),
            || async { matches!(self.get("/-/ready").await, Some((200, _))).then_some(()) },
        )
        .await;
    }

    /// An instant query: the API's `data` on success, else the error Prometheus gave.
    async fn query(&self, expr: &str) -> Result<Value, String> {
        let (status, body) = self
            .get(&format!("/api/v1/query?query={}", percent_encode(expr)))
            .await
            .ok_or("prometheus does not answer")?;
        let answer: Value =
            serde_json::from_str(&body).map_err(|e| format!("{status}: {e}: {body}"))?;
        if status == 200 && answer["status"] == "success" {
            Ok(answer["data"].clone())
        } else {
            Err(format!("{status}: {body}"))
        }
    }

    /// The series an instant query returns (an error counts as none, with the reason).
    async fn series(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.query(expr).await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// RFC 3986 percent-encoding of everything but the unreserved characters.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every query of the dashboard's panels, with Grafana's variables as a dashboard showing "All"
/// over the last hour would send them.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = repo().join("deploy/grafana/upstream-discovery.json");
    let text = std::fs::read_to_string(&path).expect("read the dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or_default();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .expect("every target has an expr")
                .replace("$__rate_interval", "1m")
                .replace("$namespace", ".*")
                .replace("$job", ".*");
            assert!(!expr.contains('$'), "unknown variable in {title}: {expr}");
            queries.push((title.to_string(), expr));
        }
    }
    queries
}

/// (alert name, expression) of every rule of deploy/prometheus/alerts.yaml.
fn alert_expressions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yaml"))
        .expect("read alerts.yaml");
    let rules: Value = serde_saphyr::from_str(&text).expect("alerts.yaml is YAML");
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
        .map(|rule| {
            (
                rule["alert"].as_str().expect("alert name").to_string(),
                rule["expr"].as_str().expect("expr").to_string(),
            )
        })
        .collect()
}

async fn apply_service(scenario: &Scenario, name: &str, labels: Value, annotations: Value) {
    let service: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {"selector": {"app": name}, "ports": [
            // Server-side apply on 1.20 needs the protocol: it keys the list.
            {"name": "http", "port": 80, "protocol": "TCP"},
            {"name": "grpc", "port": 9000, "protocol": "TCP"}]},
    }))
    .expect("service");
    Api::<Service>::namespaced(scenario.admin.clone(), &scenario.service_ns)
        .patch(
            name,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&service),
        )
        .await
        .unwrap_or_else(|e| panic!("apply service {name}: {e}"));
}

async fn owned_upstreams(scenario: &Scenario) -> usize {
    list_upstreams(
        &scenario.admin,
        &scenario.write_ns,
        Some("discovered_by=kubernetesplugin"),
    )
    .await
    .map(|list| list.len())
    .unwrap_or(usize::MAX)
}

/// Services created, changed and deleted, one with a broken override; an aws Upstream whose
/// functions moto lists and one whose credentials Secret does not exist: every series the
/// dashboard draws exists on a real Prometheus, and the alerts evaluate there.
pub async fn dashboard_queries_and_alert_rules_work_on_a_real_prometheus(env: Arc<TestEnv>) {
    let scenario = Scenario::builder(env.clone(), "obs").build().await;
    let moto = Moto::new(&env, REGION).await;
    moto.clean_region().await;
    moto.create_function("checkout").await;
    moto.create_function("refunds").await;
    let ns = scenario.service_ns.clone();

    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "aws-credentials"},
        "stringData": {"aws_access_key_id": TEST_ACCESS_KEY_ID,
                       "aws_secret_access_key": TEST_SECRET_ACCESS_KEY},
    }))
    .expect("secret");
    Api::<Secret>::namespaced(scenario.admin.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
    let upstreams = Api::<Upstream>::namespaced(scenario.admin.clone(), &ns);
    for (name, secret) in [("lambdas", "aws-credentials"), ("no-secret", "missing")] {
        let upstream: Upstream = serde_json::from_value(json!({
            "apiVersion": "gloo.solo.io/v1", "kind": "Upstream",
            "metadata": {"name": name},
            "spec": {"aws": {"region": REGION, "secretRef": {"name": secret, "namespace": ns}}},
        }))
        .expect("upstream");
        upstreams
            .create(&PostParams::default(), &upstream)
            .await
            .unwrap_or_else(|e| panic!("create upstream {name}: {e}"));
    }

    let daemon = scenario
        .daemon()
        .args(&["--lambda-poll-interval", "2s"])
        .env("AWS_ENDPOINT_URL", moto.url())
        .ready()
        .await;
    let prometheus = Prometheus::start(
        &format!("127.0.0.1:{}", daemon.port),
        &repo().join("deploy/prometheus/alerts.yaml"),
    );
    prometheus.wait_ready().await;

    drive_services(&scenario, &daemon).await;
    wait_for_daemon_series(&daemon).await;

    // Enough scrapes for `rate(...[1m])` (two samples of every series at least).
    wait_until("prometheus to have scraped the daemon 10 times", || async {
        let series = prometheus
            .series(r#"count_over_time(up{job="upstream-discovery"}[1m]) >= 10"#)
            .await?;
        if series.is_empty() {
            return Err("fewer scrapes so far".to_string());
        }
        let up = prometheus.series("up == 1").await?;
        (!up.is_empty())
            .then_some(())
            .ok_or_else(|| format!("the daemon's target is not up; {}", prometheus.logs()))
    })
    .await;

    let queries = dashboard_queries();
    assert!(queries.len() >= 13, "{queries:?}");
    for (title, expr) in &queries {
        wait_until(
            &format!("panel {title:?}: {expr} to return a series"),
            || async {
                let series = prometheus.series(expr).await?;
                (!series.is_empty())
                    .then_some(())
                    .ok_or_else(|| "no series".to_string())
            },
        )
        .await;
    }

    let alerts = alert_expressions();
    assert_eq!(alerts.len(), 7, "{alerts:?}");
    for (alert, expr) in &alerts {
        if let Err(error) = prometheus.query(expr).await {
            panic!("the expression of {alert} fails on Prometheus: {error}\n{expr}");
        }
    }
    wait_until("every alert rule evaluated and healthy", || async {
        let (status, body) = prometheus.get("/api/v1/rules").await.ok_or("no answer")?;
        let answer: Value = serde_json::from_str(&body).map_err(|e| format!("{status} {e}"))?;
        let rules: Vec<&Value> = answer["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|group| group["rules"].as_array().into_iter().flatten())
            .collect();
        let names: Vec<&str> = rules.iter().filter_map(|r| r["name"].as_str()).collect();
        let expected: Vec<&str> = alerts.iter().map(|(name, _)| name.as_str()).collect();
        if names != expected {
            return Err(format!("rules {names:?}, want {expected:?}"));
        }
        for rule in &rules {
            let evaluated = rule["lastEvaluation"]
                .as_str()
                .is_some_and(|at| !at.starts_with("0001-"));
            if rule["health"] != "ok" || !evaluated {
                return Err(format!("not (yet) evaluated and healthy: {rule}"));
            }
        }
        Ok(())
    })
    .await;
    // The daemon is healthy: none of the alerts is firing or pending.
    let active = prometheus.series("ALERTS").await.expect("ALERTS query");
    assert!(active.is_empty(), "alerts active: {active:?}");

    daemon.terminate(EXIT_LIMIT);
    drop(prometheus);
    moto.clean_region().await;
    scenario.cleanup().await;
}

/// Ten Services of two ports, each changed once, four deleted, and one with an override that
/// is not JSON (a skip); waits until the Upstreams follow.
async fn drive_services(scenario: &Scenario, daemon: &Daemon) {
    let names: Vec<String> = (0..10).map(|i| format!("web-{i}")).collect();
    for name in &names {
        apply_service(scenario, name, json!({"app": name}), json!({})).await;
    }
    apply_service(
        scenario,
        "broken",
        json!({"app": "broken"}),
        json!({"gloo.solo.io/upstream_config": "{not json"}),
    )
    .await;
    wait_until("22 Upstreams", || async {
        let count = owned_upstreams(scenario).await;
        (count == 22)
            .then_some(())
            .ok_or_else(|| format!("{count} so far; daemon log:\n{}", daemon.logs()))
    })
    .await;
    for name in &names {
        apply_service(
            scenario,
            name,
            json!({"app": name, "tier": "front"}),
            json!({}),
        )
        .await;
    }
    let services = Api::<Service>::namespaced(scenario.admin.clone(), &scenario.service_ns);
    for name in names.iter().take(4) {
        services
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete service {name}: {e}"));
    }
    wait_until("14 Upstreams", || async {
        let count = owned_upstreams(scenario).await;
        (count == 14)
            .then_some(())
            .ok_or_else(|| format!("{count} so far"))
    })
    .await;
}

/// The series that only exist after an event: a skip, an error, a Lambda call and a list of
/// functions.
async fn wait_for_daemon_series(daemon: &Daemon) {
    for prefix in [
        r#"upstream_discovery_skipped_total{reason="invalid_upstream_config"}"#,
        r#"upstream_discovery_errors_total{kind="lambda_credentials_missing"}"#,
        r#"upstream_discovery_lambda_api_calls_total{operation="ListFunctions",result="success"}"#,
        "upstream_discovery_lambda_functions{",
        r#"upstream_discovery_cache_synced{loop="services"} 1"#,
    ] {
        wait_until(&format!("{prefix} on /metrics"), || async {
            let (_, body) = daemon.get("/metrics").await.ok_or("no answer")?;
            body.lines()
                .any(|line| line.starts_with(prefix))
                .then_some(())
                .ok_or_else(|| format!("not yet; log tail:\n{}", tail(&daemon.logs(), 10)))
        })
        .await;
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
