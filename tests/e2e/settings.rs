//! The binary in place of Gloo's discovery pod (issue 12): configured by Gloo's `Settings`
//! object with Gloo's defaulting, following its changes while running, and living with exactly
//! the rights Gloo's chart grants (docs/behaviour.md "Gloo's discovery pod"). Every expected
//! Upstream is written out by hand from docs/behaviour.md.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};

use crate::aws_fixture::{Moto, TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY};
use crate::daemon::{Daemon, GLOO_METRICS_PORT};
use crate::gloo_pod::{install_settings_crd, put_settings, GlooAccount};
use crate::leaks::{assert_no_credentials_leaked, Credentials};
use crate::scenario::Scenario;
use crate::support::{
    event_reasons, kube_upstream, upstream_api, upstreams_match, wait_for,
    wait_for_exact_upstreams, wait_until, with,
};
use crate::test_env::TestEnv;

/// SIGTERM must end the daemon within this.
const EXIT_LIMIT: Duration = Duration::from_secs(5);
/// How long a test waits to be confident something does NOT happen.
const QUIET: Duration = Duration::from_secs(5);
const SECRET: &str = "aws-credentials";
const RELOADS: &str = "upstream_discovery_settings_reloads_total";
const BAD_SETTINGS: &str = "upstream_discovery_errors_total{kind=\"bad_settings\"}";

/// A Service `name` with one port named `http`, the labels `app: <name>` and `labels`, the
/// selector `app: <name>`, and `annotations`.
fn service(name: &str, port: i32, labels: Value, annotations: Value) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels_of(name, labels), "annotations": annotations},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": port}]},
    }))
    .expect("service")
}

fn labels_of(name: &str, labels: Value) -> Value {
    let mut all = json!({"app": name});
    if let (Some(all), Value::Object(more)) = (all.as_object_mut(), labels) {
        all.extend(more);
    }
    all
}

/// The Upstream docs/behaviour.md gives for a Service made by [`service`] with no annotations,
/// written to another namespace than the Service's: `kube_upstream` with the Service's labels.
fn discovered(ns: &str, name: &str, port: u16, labels: Value) -> Value {
    with(
        kube_upstream(ns, name, port),
        "/spec/discoveryMetadata/labels",
        labels_of(name, labels),
    )
}

async fn create_service(admin: &Client, namespace: &str, service: &Service) {
    Api::<Service>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), service)
        .await
        .expect("create service");
}

/// The test credentials for moto, as the Secret an aws Upstream names; returns the secret
/// values, which must never come out of the daemon.
async fn aws_secret(admin: &Client, namespace: &str) -> Credentials {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": SECRET},
        "stringData": {"aws_access_key_id": TEST_ACCESS_KEY_ID,
                       "aws_secret_access_key": TEST_SECRET_ACCESS_KEY},
    }))
    .expect("secret");
    Api::<Secret>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
    let credentials = Credentials::default();
    credentials.add_secret_data([
        ("aws_access_key_id", TEST_ACCESS_KEY_ID),
        ("aws_secret_access_key", TEST_SECRET_ACCESS_KEY),
    ]);
    credentials
}

/// An aws Upstream as a user writes it: the region and the test Secret, no labels.
async fn aws_upstream(admin: &Client, namespace: &str, name: &str, region: &str) {
    let upstream: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gloo.solo.io/v1", "kind": "Upstream",
        "metadata": {"name": name},
        "spec": {"aws": {"region": region,
                         "secretRef": {"name": SECRET, "namespace": namespace}}},
    }))
    .expect("upstream");
    upstream_api(admin, namespace)
        .create(&PostParams::default(), &upstream)
        .await
        .expect("create aws upstream");
}

async fn lambda_functions(admin: &Client, namespace: &str, name: &str) -> Option<Value> {
    let upstream = upstream_api(admin, namespace).get(name).await.ok()?;
    upstream.data.pointer("/spec/aws/lambdaFunctions").cloned()
}

async fn wait_for_functions(admin: &Client, namespace: &str, name: &str, expected: &Value) {
    wait_until(
        &format!("the lambdaFunctions of {namespace}/{name}"),
        || async {
            let found = lambda_functions(admin, namespace, name).await;
            if found.as_ref() == Some(expected) {
                Ok(())
            } else {
                Err(format!("expected {expected}\nfound    {found:?}"))
            }
        },
    )
    .await;
}

/// One function's `$LATEST` entry (docs/behaviour.md: the logical name of `$LATEST` is the name).
fn latest(function: &str) -> Value {
    json!({"lambdaFunctionName": function, "qualifier": "$LATEST", "logicalName": function})
}

/// A published version's entry: logical name `name:version`.
fn version(function: &str, version: &str) -> Value {
    json!({"lambdaFunctionName": function, "qualifier": version,
           "logicalName": format!("{function}:{version}")})
}

async fn metric(daemon: &Daemon, name: &str) -> f64 {
    daemon.metrics().await.get(name).copied().unwrap_or(0.0)
}

/// Waits until the daemon has taken `count` configurations from Settings while running.
async fn wait_for_reloads(daemon: &Daemon, count: f64) {
    wait_until(&format!("{count} Settings reloads counted"), || async {
        let reloads = metric(daemon, RELOADS).await;
        if reloads >= count {
            Ok(())
        } else {
            Err(format!(
                "{reloads} so far; daemon log tail:\n{}",
                tail(&daemon.logs(), 10)
            ))
        }
    })
    .await;
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The `fds_mode` field of the daemon's first "starting discovery" line (JSON logs), upper-cased
/// and unquoted, whichever of Display or Debug it was logged with.
fn startup_fds_mode(logs: &str) -> Option<String> {
    logs.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| {
            line.get("message").and_then(Value::as_str) == Some("starting discovery")
                || line.pointer("/fields/message").and_then(Value::as_str)
                    == Some("starting discovery")
        })
        .and_then(|line| {
            line.get("fds_mode")
                .or_else(|| line.pointer("/fields/fds_mode"))
                .cloned()
        })
        .map(|mode| match mode {
            Value::String(mode) => mode,
            other => other.to_string(),
        })
        .map(|mode| mode.trim_matches('"').to_ascii_uppercase())
}

/// Asserts the daemon is the same process as before: still running, same PID, same start time.
async fn assert_same_process(daemon: &mut Daemon, pid: u32, started: f64) {
    assert!(
        daemon.running(),
        "the daemon exited; its log:\n{}",
        daemon.logs()
    );
    assert_eq!(daemon.pid(), pid);
    assert_eq!(
        metric(daemon, "process_start_time_seconds").await,
        started,
        "the process did not restart"
    );
}

/// Gloo's chart with only the discovery image swapped: the binary started with no arguments and
/// only the environment of Gloo's pod, as the ServiceAccount `discovery` bound to exactly Gloo's
/// rules, configured by the Settings `default` of its namespace. It discovers the Services that
/// match `watchLabels` in `watchNamespaces` into `discoveryNamespace`, lists the functions of an
/// aws Upstream, records no Event (refused: one warning line and a metric) and goes on, and
/// serves its metrics on :9091.
pub async fn gloo_pod_with_gloo_rbac_runs_from_settings(env: Arc<TestEnv>) {
    let moto = Moto::new(&env, "ap-southeast-1").await;
    moto.clean_region().await;
    moto.create_function("checkout").await;
    let published = moto.publish_version("checkout").await;
    let scenario = Scenario::builder(env.clone(), "gpod")
        .without_account()
        .another_namespace("d")
        .build()
        .await;
    let admin = &scenario.admin;
    // POD_NAMESPACE (Gloo's `gloo-system`), the Services' namespace, `discoveryNamespace`.
    let (pod_ns, ns, write) = (
        scenario.write_ns.as_str(),
        scenario.service_ns.as_str(),
        scenario.others[0].as_str(),
    );
    install_settings_crd(admin).await;
    let account = GlooAccount::create(&env, admin, pod_ns).await;
    let credentials = aws_secret(admin, ns).await;
    credentials.add(&account.token);
    aws_upstream(admin, ns, "lambdas", moto.region()).await;
    put_settings(
        admin,
        pod_ns,
        json!({
            "discoveryNamespace": write,
            "watchNamespaces": [ns],
            "discovery": {"fdsMode": "WHITELIST",
                          "udsOptions": {"watchLabels": {"discover": "yes"}}},
        }),
    )
    .await;
    let chosen = json!({"discover": "yes"});
    let bad_config = json!({"gloo.solo.io/upstream_config": "{not json"});
    create_service(
        admin,
        ns,
        &service("petstore", 8080, chosen.clone(), json!({})),
    )
    .await;
    create_service(admin, ns, &service("ignored", 80, json!({}), json!({}))).await;
    // Its annotation gives a Warning Event, which Gloo's rights do not allow.
    create_service(
        admin,
        ns,
        &service("broken", 81, chosen.clone(), bad_config.clone()),
    )
    .await;

    let pod_env: Vec<(String, String)> = [
        ("POD_NAMESPACE", pod_ns),
        ("START_STATS_SERVER", "true"),
        ("LOG_LEVEL", "debug"),
        // Not in Gloo's pod: points the AWS SDK at moto.
        ("AWS_ENDPOINT_URL", moto.url()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut daemon = Daemon::start_as_gloo_pod(&account.kubeconfig, &pod_env).await;
    assert_eq!(daemon.port, GLOO_METRICS_PORT);
    daemon.wait_ready().await;

    let broken = with(
        discovered(ns, "broken", 81, chosen.clone()),
        "/metadata/annotations",
        bad_config.clone(),
    );
    wait_for_exact_upstreams(
        admin,
        write,
        &[
            discovered(ns, "petstore", 8080, chosen.clone()),
            broken.clone(),
        ],
    )
    .await;
    // Nothing in POD_NAMESPACE: the Settings say where to write.
    wait_for_exact_upstreams(admin, pod_ns, &[]).await;
    wait_for_functions(
        admin,
        ns,
        "lambdas",
        &json!([latest("checkout"), version("checkout", &published)]),
    )
    .await;
    wait_for("the refused Event counted", || async {
        (metric(
            &daemon,
            "upstream_discovery_errors_total{kind=\"event_forbidden\"}",
        )
        .await
            >= 1.0)
            .then_some(())
    })
    .await;
    assert_eq!(
        event_reasons(admin, ns, "Service", "broken")
            .await
            .expect("list events"),
        Vec::<String>::new(),
        "no Event recorded under Gloo's rights"
    );

    // It goes on: a Service labelled later is discovered, one unlabelled is collected.
    Api::<Service>::namespaced(admin.clone(), ns)
        .patch(
            "ignored",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"discover": "yes"}}})),
        )
        .await
        .expect("label service");
    Api::<Service>::namespaced(admin.clone(), ns)
        .patch(
            "petstore",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"discover": null}}})),
        )
        .await
        .expect("unlabel service");
    create_service(admin, ns, &service("late", 8081, chosen.clone(), json!({}))).await;
    wait_for_exact_upstreams(
        admin,
        write,
        &[
            broken,
            discovered(ns, "ignored", 80, chosen.clone()),
            discovered(ns, "late", 8081, chosen.clone()),
        ],
    )
    .await;

    let metrics = daemon.metrics().await;
    assert!(
        metrics
            .keys()
            .any(|name| name.starts_with("upstream_discovery_build_info{")),
        "metrics on :{GLOO_METRICS_PORT}"
    );
    for kind in ["forbidden", "bad_settings"] {
        let key = format!("upstream_discovery_errors_total{{kind=\"{kind}\"}}");
        assert_eq!(
            metrics.get(&key).copied().unwrap_or(0.0),
            0.0,
            "no {kind} errors under Gloo's rights"
        );
    }
    assert!(daemon.running());
    let logs = daemon.logs();
    assert_eq!(
        logs.matches("Kubernetes Events are forbidden").count(),
        1,
        "one warning line for the refused Events; log:\n{logs}"
    );
    assert!(logs.contains("DEBUG"), "LOG_LEVEL=debug is honoured");
    assert!(
        !logs.contains("no Settings"),
        "the Settings were found; log:\n{logs}"
    );
    assert_no_credentials_leaked(&daemon, admin, &[pod_ns, ns, write], &credentials).await;
    daemon.terminate(EXIT_LIMIT);
    account.delete(admin).await;
    moto.clean_region().await;
    scenario.cleanup().await;
}

/// One daemon while each Settings field changes in turn: after each change, exactly the
/// Upstreams docs/behaviour.md gives for the new configuration, with no restart of the process.
pub async fn settings_changes_apply_while_running(env: Arc<TestEnv>) {
    let scenario = Scenario::builder(env.clone(), "live")
        .without_account()
        .another_namespace("w1")
        .another_namespace("w2")
        .another_namespace("s2")
        .build()
        .await;
    let admin = &scenario.admin;
    let pod_ns = scenario.write_ns.as_str();
    let (s1, w1, w2, s2) = (
        scenario.service_ns.as_str(),
        scenario.others[0].as_str(),
        scenario.others[1].as_str(),
        scenario.others[2].as_str(),
    );
    install_settings_crd(admin).await;
    let account = GlooAccount::create(&env, admin, pod_ns).await;

    let front = json!({"discover": "yes", "tier": "front"});
    let back = json!({"discover": "yes", "tier": "back"});
    create_service(admin, s1, &service("a", 80, front.clone(), json!({}))).await;
    create_service(admin, s1, &service("b", 81, back.clone(), json!({}))).await;
    create_service(admin, s1, &service("c", 82, json!({}), json!({}))).await;
    create_service(admin, s2, &service("d", 83, front.clone(), json!({}))).await;
    // Someone's own Upstream in the first write namespace: never touched.
    let hand_made: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gloo.solo.io/v1", "kind": "Upstream",
        "metadata": {"name": "hand-made"},
        "spec": {"static": {"hosts": [{"addr": "10.0.0.1", "port": 80}]}},
    }))
    .expect("upstream");
    let hand_made = upstream_api(admin, w1)
        .create(&PostParams::default(), &hand_made)
        .await
        .expect("create the hand-made upstream");

    let mut settings = json!({
        "discoveryNamespace": w1,
        "watchNamespaces": [s1],
        "discovery": {"fdsMode": "WHITELIST",
                      "udsOptions": {"watchLabels": {"discover": "yes"}}},
    });
    put_settings(admin, pod_ns, settings.clone()).await;
    // Only `run`: every flag at its default, so the Settings decide.
    let mut daemon = scenario
        .daemon()
        .token(&account.token)
        .exact_args(vec!["run".into()])
        .ready()
        .await;
    let pid = daemon.pid();
    let started = metric(&daemon, "process_start_time_seconds").await;
    assert!(started > 0.0, "process_start_time_seconds exported");
    wait_for_exact_upstreams(
        admin,
        w1,
        &[
            discovered(s1, "a", 80, front.clone()),
            discovered(s1, "b", 81, back.clone()),
        ],
    )
    .await;
    assert_eq!(
        metric(&daemon, RELOADS).await,
        0.0,
        "the first configuration is no reload"
    );

    // watchLabels: b leaves the scope and its Upstream is collected.
    settings["discovery"]["udsOptions"]["watchLabels"] = json!({"tier": "front"});
    put_settings(admin, pod_ns, settings.clone()).await;
    wait_for_reloads(&daemon, 1.0).await;
    wait_for_exact_upstreams(admin, w1, &[discovered(s1, "a", 80, front.clone())]).await;
    assert_same_process(&mut daemon, pid, started).await;

    // watchNamespaces: s1 leaves (a collected), s2 comes (d discovered).
    settings["watchNamespaces"] = json!([s2]);
    put_settings(admin, pod_ns, settings.clone()).await;
    wait_for_reloads(&daemon, 2.0).await;
    let found =
        wait_for_exact_upstreams(admin, w1, &[discovered(s2, "d", 83, front.clone())]).await;
    let d_uid = found[&format!("{s2}-d-83")].metadata.uid.clone();
    assert_same_process(&mut daemon, pid, started).await;

    // upstreamOptions.globalAnnotations: the global h2_service annotation turns on HTTP/2 for
    // every Service without its own (docs/behaviour.md); the Upstream is rewritten in place.
    settings["upstreamOptions"] = json!({"globalAnnotations": {"gloo.solo.io/h2_service": "true"}});
    put_settings(admin, pod_ns, settings.clone()).await;
    wait_for_reloads(&daemon, 3.0).await;
    let h2 = |upstream: Value| with(upstream, "/spec/useHttp2", json!(true));
    let found =
        wait_for_exact_upstreams(admin, w1, &[h2(discovered(s2, "d", 83, front.clone()))]).await;
    assert_eq!(
        found[&format!("{s2}-d-83")].metadata.uid,
        d_uid,
        "rewritten in place, not re-created"
    );
    assert_same_process(&mut daemon, pid, started).await;

    // discoveryNamespace: written in w2, collected from w1; the hand-made one stays as it was.
    settings["discoveryNamespace"] = json!(w2);
    put_settings(admin, pod_ns, settings.clone()).await;
    wait_for_reloads(&daemon, 4.0).await;
    wait_for_exact_upstreams(admin, w2, &[h2(discovered(s2, "d", 83, front.clone()))]).await;
    wait_for_exact_upstreams(admin, w1, &[]).await;
    let left = upstream_api(admin, w1)
        .get("hand-made")
        .await
        .expect("the hand-made Upstream is still there");
    assert_eq!(left.metadata.uid, hand_made.metadata.uid);
    assert_eq!(
        left.metadata.resource_version, hand_made.metadata.resource_version,
        "untouched"
    );
    assert_same_process(&mut daemon, pid, started).await;

    // udsOptions.enabled false: Service discovery off. The Upstreams it wrote stay in place (not
    // deleted), and a new Service gets none.
    settings["discovery"]["udsOptions"]["enabled"] = json!(false);
    put_settings(admin, pod_ns, settings.clone()).await;
    wait_for_reloads(&daemon, 5.0).await;
    create_service(admin, s2, &service("e", 84, front.clone(), json!({}))).await;
    tokio::time::sleep(QUIET).await;
    upstreams_match(admin, w2, &[h2(discovered(s2, "d", 83, front.clone()))])
        .await
        .unwrap_or_else(|differences| {
            panic!("Service discovery off: nothing written or deleted\n{differences}")
        });
    assert_same_process(&mut daemon, pid, started).await;

    // udsOptions.enabled back on (absent means on): e is discovered.
    settings["discovery"]["udsOptions"]
        .as_object_mut()
        .expect("udsOptions")
        .remove("enabled");
    put_settings(admin, pod_ns, settings.clone()).await;
    wait_for_reloads(&daemon, 6.0).await;
    wait_for_exact_upstreams(
        admin,
        w2,
        &[
            h2(discovered(s2, "d", 83, front.clone())),
            h2(discovered(s2, "e", 84, front.clone())),
        ],
    )
    .await;
    assert_same_process(&mut daemon, pid, started).await;

    // An invalid Settings (fdsMode NOPE), every other field changed too: none of it is taken;
    // a warning, a metric, and the last good configuration goes on.
    let reloads = metric(&daemon, RELOADS).await;
    put_settings(
        admin,
        pod_ns,
        json!({
            "discoveryNamespace": w1,
            "watchNamespaces": [s1],
            "discovery": {"fdsMode": "NOPE",
                          "udsOptions": {"watchLabels": {"discover": "yes"}}},
        }),
    )
    .await;
    wait_until("the invalid Settings reported", || async {
        let bad = metric(&daemon, BAD_SETTINGS).await;
        let logged = daemon.logs().contains("invalid Settings");
        if bad >= 1.0 && logged {
            Ok(())
        } else {
            Err(format!(
                "bad_settings {bad}, logged {logged}; log tail:\n{}",
                tail(&daemon.logs(), 10)
            ))
        }
    })
    .await;
    // Per the last good configuration: f (tier front) discovered into w2 with HTTP/2, g (only
    // discover: yes, the invalid Settings' label) not; nothing moves back to w1.
    create_service(admin, s2, &service("f", 85, front.clone(), json!({}))).await;
    create_service(
        admin,
        s2,
        &service("g", 86, json!({"discover": "yes"}), json!({})),
    )
    .await;
    wait_for_exact_upstreams(
        admin,
        w2,
        &[
            h2(discovered(s2, "d", 83, front.clone())),
            h2(discovered(s2, "e", 84, front.clone())),
            h2(discovered(s2, "f", 85, front.clone())),
        ],
    )
    .await;
    tokio::time::sleep(QUIET).await;
    upstreams_match(admin, w1, &[])
        .await
        .unwrap_or_else(|differences| panic!("nothing written to w1\n{differences}"));
    assert_eq!(
        metric(&daemon, RELOADS).await,
        reloads,
        "an invalid Settings is not taken"
    );
    let warning = daemon
        .logs()
        .lines()
        .find(|line| line.contains("invalid Settings"))
        .map(str::to_string)
        .expect("the warning line");
    assert!(warning.contains("WARN"), "a Warning log line: {warning}");
    assert_same_process(&mut daemon, pid, started).await;
    assert_eq!(
        metric(
            &daemon,
            "upstream_discovery_errors_total{kind=\"forbidden\"}"
        )
        .await,
        0.0,
        "Gloo's rights are enough"
    );

    // The Settings deleted: the configuration in force is kept (the lead's decision: falling
    // back to flags and defaults would move every Upstream on an accidental delete).
    crate::gloo_pod::settings_api(admin, pod_ns)
        .delete(crate::gloo_pod::SETTINGS_NAME, &DeleteParams::default())
        .await
        .expect("delete the Settings");
    create_service(admin, s2, &service("h", 87, front.clone(), json!({}))).await;
    wait_for_exact_upstreams(
        admin,
        w2,
        &[
            h2(discovered(s2, "d", 83, front.clone())),
            h2(discovered(s2, "e", 84, front.clone())),
            h2(discovered(s2, "f", 85, front.clone())),
            h2(discovered(s2, "h", 87, front.clone())),
        ],
    )
    .await;
    wait_for_exact_upstreams(admin, pod_ns, &[]).await;
    assert_eq!(metric(&daemon, RELOADS).await, reloads);
    assert_same_process(&mut daemon, pid, started).await;

    daemon.terminate(EXIT_LIMIT);
    let _ = upstream_api(admin, w1)
        .delete("hand-made", &DeleteParams::default())
        .await;
    account.delete(admin).await;
    scenario.cleanup().await;
}

/// Gloo's defaulting (docs/behaviour.md): no `discovery` block means WHITELIST, a `discovery` block
/// without `fdsMode` BLACKLIST, and `udsOptions.enabled` absent means Service discovery on.
///
/// For aws Upstreams WHITELIST and BLACKLIST select alike (Gloo treats AWS Upstreams in
/// WHITELIST mode as in BLACKLIST mode, docs/behaviour.md), so no Upstream can tell them apart: the
/// mode is read off the daemon's "starting discovery" line, and what can be observed is
/// checked too: functions listed in both, none with DISABLED, Services discovered in all three.
pub async fn gloo_defaulting_of_fds_mode(env: Arc<TestEnv>) {
    let moto = Moto::new(&env, "ap-northeast-1").await;
    moto.clean_region().await;
    moto.create_function("billing").await;
    let scenario = Scenario::builder(env.clone(), "fdsdef")
        .without_account()
        .another_namespace("d")
        .build()
        .await;
    let admin = &scenario.admin;
    let (pod_ns, ns, write) = (
        scenario.write_ns.as_str(),
        scenario.service_ns.as_str(),
        scenario.others[0].as_str(),
    );
    install_settings_crd(admin).await;
    let account = GlooAccount::create(&env, admin, pod_ns).await;
    let credentials = aws_secret(admin, ns).await;
    credentials.add(&account.token);
    let chosen = json!({"discover": "yes"});
    create_service(admin, ns, &service("plain", 80, json!({}), json!({}))).await;
    create_service(admin, ns, &service("chosen", 81, chosen.clone(), json!({}))).await;
    let base = json!({"discoveryNamespace": write, "watchNamespaces": [ns]});
    let start = || {
        scenario
            .daemon()
            .token(&account.token)
            .exact_args(vec!["run".into(), "--leader-elect".into(), "false".into()])
            .env("AWS_ENDPOINT_URL", moto.url())
            .ready()
    };

    // No `discovery` block: WHITELIST; Service discovery on, every Service.
    put_settings(admin, pod_ns, base.clone()).await;
    aws_upstream(admin, ns, "lambdas-a", moto.region()).await;
    let daemon = start().await;
    assert_eq!(
        startup_fds_mode(&daemon.logs()).as_deref(),
        Some("WHITELIST"),
        "log:\n{}",
        daemon.logs()
    );
    wait_for_exact_upstreams(
        admin,
        write,
        &[
            discovered(ns, "chosen", 81, chosen.clone()),
            discovered(ns, "plain", 80, json!({})),
        ],
    )
    .await;
    wait_for_functions(admin, ns, "lambdas-a", &json!([latest("billing")])).await;
    assert_no_credentials_leaked(&daemon, admin, &[pod_ns, ns, write], &credentials).await;
    daemon.terminate(EXIT_LIMIT);

    // A `discovery` block without fdsMode: BLACKLIST (the proto default); udsOptions without
    // `enabled`: Service discovery on, with its watchLabels.
    let mut settings = base.clone();
    settings["discovery"] = json!({"udsOptions": {"watchLabels": {"discover": "yes"}}});
    put_settings(admin, pod_ns, settings).await;
    aws_upstream(admin, ns, "lambdas-b", moto.region()).await;
    let daemon = start().await;
    assert_eq!(
        startup_fds_mode(&daemon.logs()).as_deref(),
        Some("BLACKLIST"),
        "log:\n{}",
        daemon.logs()
    );
    wait_for_exact_upstreams(
        admin,
        write,
        &[discovered(ns, "chosen", 81, chosen.clone())],
    )
    .await;
    wait_for_functions(admin, ns, "lambdas-b", &json!([latest("billing")])).await;
    assert_no_credentials_leaked(&daemon, admin, &[pod_ns, ns, write], &credentials).await;
    daemon.terminate(EXIT_LIMIT);

    // fdsMode DISABLED, no udsOptions: no function discovery at all; Service discovery on.
    let mut settings = base.clone();
    settings["discovery"] = json!({"fdsMode": "DISABLED"});
    put_settings(admin, pod_ns, settings).await;
    aws_upstream(admin, ns, "lambdas-c", moto.region()).await;
    let daemon = start().await;
    assert_eq!(
        startup_fds_mode(&daemon.logs()).as_deref(),
        Some("DISABLED"),
        "log:\n{}",
        daemon.logs()
    );
    wait_for_exact_upstreams(
        admin,
        write,
        &[
            discovered(ns, "chosen", 81, chosen.clone()),
            discovered(ns, "plain", 80, json!({})),
        ],
    )
    .await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(lambda_functions(admin, ns, "lambdas-c").await, None);
    assert_eq!(
        daemon
            .metric_sum("upstream_discovery_lambda_api_calls_total")
            .await,
        0.0
    );
    assert_no_credentials_leaked(&daemon, admin, &[pod_ns, ns, write], &credentials).await;
    daemon.terminate(EXIT_LIMIT);

    account.delete(admin).await;
    moto.clean_region().await;
    scenario.cleanup().await;
}

/// The Settings CRD is there but no Settings object: one info line saying so, and discovery as
/// the flags and defaults say (write namespace POD_NAMESPACE, WHITELIST).
pub async fn no_settings_means_flags_and_defaults(env: Arc<TestEnv>) {
    let scenario = Scenario::builder(env.clone(), "nosettings")
        .without_account()
        .build()
        .await;
    let admin = &scenario.admin;
    let (write, ns) = (scenario.write_ns.as_str(), scenario.service_ns.as_str());
    install_settings_crd(admin).await;
    // Gloo's rights, settings included: the object is missing, not forbidden.
    let account = GlooAccount::create(&env, admin, write).await;
    let chosen = json!({"discover": "yes"});
    create_service(
        admin,
        ns,
        &service("petstore", 8080, chosen.clone(), json!({})),
    )
    .await;
    create_service(admin, ns, &service("other", 80, json!({}), json!({}))).await;
    // `run --watch-namespaces <ns> --lease-name upstream-discovery`, and a selector.
    let daemon = scenario
        .daemon()
        .token(&account.token)
        .args(&["--service-selector", "discover=yes"])
        .ready()
        .await;
    wait_for_exact_upstreams(
        admin,
        write,
        &[discovered(ns, "petstore", 8080, chosen.clone())],
    )
    .await;
    let logs = daemon.logs();
    let notes: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("no Settings"))
        .collect();
    assert_eq!(notes.len(), 1, "one line saying so; log:\n{logs}");
    assert!(notes[0].contains("INFO"), "an info line: {}", notes[0]);
    assert_eq!(
        startup_fds_mode(&logs).as_deref(),
        Some("WHITELIST"),
        "log:\n{logs}"
    );
    assert_eq!(metric(&daemon, RELOADS).await, 0.0);
    assert_eq!(metric(&daemon, BAD_SETTINGS).await, 0.0);
    daemon.terminate(EXIT_LIMIT);
    account.delete(admin).await;
    scenario.cleanup().await;
}

/// `watchNamespaceSelectors` (used when `watchNamespaces` is empty; a namespace matching any of
/// them is watched, `matchLabels` and `matchExpressions` alike) scope discovery, following the
/// namespaces' labels; then flags given on the command line win over the Settings while flags
/// left at their defaults do not; and both discoveries off is a start-up error.
pub async fn namespace_selectors_and_flags_given_on_the_command_line(env: Arc<TestEnv>) {
    use k8s_openapi::api::core::v1::Namespace;

    let scenario = Scenario::builder(env.clone(), "nssettings")
        .without_account()
        .another_namespace("d")
        .another_namespace("x")
        .another_namespace("y")
        .another_namespace("f")
        .build()
        .await;
    let admin = &scenario.admin;
    let (pod_ns, s, write, x, y, flag_write) = (
        scenario.write_ns.as_str(),
        scenario.service_ns.as_str(),
        scenario.others[0].as_str(),
        scenario.others[1].as_str(),
        scenario.others[2].as_str(),
        scenario.others[3].as_str(),
    );
    install_settings_crd(admin).await;
    let account = GlooAccount::create(&env, admin, pod_ns).await;
    // Label values of this test only, so no other test's namespace is in scope.
    let tag = pod_ns.to_string();
    let namespaces = Api::<Namespace>::all(admin.clone());
    let label = |ns: &str, key: &str| {
        let namespaces = namespaces.clone();
        let patch = json!({"metadata": {"labels": {key: tag}}});
        let ns = ns.to_string();
        async move {
            namespaces
                .patch(&ns, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("label namespace");
        }
    };
    label(s, "e2e-settings-team").await;
    label(x, "e2e-settings-tier").await;
    create_service(admin, s, &service("a", 80, json!({}), json!({}))).await;
    create_service(admin, x, &service("b", 81, json!({}), json!({}))).await;
    create_service(admin, y, &service("c", 82, json!({}), json!({}))).await;
    let selectors = json!([
        {"matchLabels": {"e2e-settings-team": tag}},
        {"matchExpressions": [{"key": "e2e-settings-tier", "operator": "In", "values": [tag]}]},
    ]);
    put_settings(
        admin,
        pod_ns,
        json!({"discoveryNamespace": write, "watchNamespaces": [],
               "watchNamespaceSelectors": selectors}),
    )
    .await;
    let daemon = scenario
        .daemon()
        .token(&account.token)
        .exact_args(vec!["run".into()])
        .ready()
        .await;
    wait_for_exact_upstreams(
        admin,
        write,
        &[
            discovered(s, "a", 80, json!({})),
            discovered(x, "b", 81, json!({})),
        ],
    )
    .await;
    // y comes into scope when labelled like s.
    label(y, "e2e-settings-team").await;
    wait_for_exact_upstreams(
        admin,
        write,
        &[
            discovered(s, "a", 80, json!({})),
            discovered(x, "b", 81, json!({})),
            discovered(y, "c", 82, json!({})),
        ],
    )
    .await;
    daemon.terminate(EXIT_LIMIT);

    // Flags given on the command line win: the write namespace and the watched namespaces. The
    // fdsMode flag left at its default (WHITELIST) does not: the Settings' DISABLED holds.
    put_settings(
        admin,
        pod_ns,
        json!({"discoveryNamespace": write, "watchNamespaces": [],
               "watchNamespaceSelectors": selectors,
               "discovery": {"fdsMode": "DISABLED"}}),
    )
    .await;
    let daemon = scenario
        .daemon()
        .token(&account.token)
        .exact_args(vec![
            "run".into(),
            "--write-namespace".into(),
            flag_write.into(),
            "--watch-namespaces".into(),
            x.into(),
        ])
        .ready()
        .await;
    wait_for_exact_upstreams(admin, flag_write, &[discovered(x, "b", 81, json!({}))]).await;
    assert_eq!(
        startup_fds_mode(&daemon.logs()).as_deref(),
        Some("DISABLED"),
        "log:\n{}",
        daemon.logs()
    );
    daemon.terminate(EXIT_LIMIT);

    // Service discovery and function discovery both off: a start-up error.
    let daemon = scenario
        .daemon()
        .token(&account.token)
        .exact_args(vec![
            "run".into(),
            "--uds-enabled=false".into(),
            "--fds-mode=DISABLED".into(),
        ])
        .start();
    let (code, logs) = daemon.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(1), "log:\n{logs}");
    assert!(
        logs.contains("Service discovery and function discovery are both off"),
        "log:\n{logs}"
    );

    account.delete(admin).await;
    scenario.cleanup().await;
}
