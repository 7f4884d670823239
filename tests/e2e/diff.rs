//! `upstream-discovery diff` against the real API server: a namespace prepared as Gloo's
//! discovery leaves it (Upstreams written by another field manager, `discovery`, with a
//! status), then one change at a time; exit codes as `kubectl diff`'s; `-o json`; and no write
//! at all. The expected Upstreams are written by hand from docs/behaviour.md (`kube_upstream`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use futures::{stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Service};
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};

use crate::scenario::Scenario;
use crate::support::{fresh_namespace, kube_upstream, upstream_api, with, without};
use crate::test_env::TestEnv;

/// What one `diff` run gave.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `upstream-discovery diff` with `args` as the daemon would run (POD_NAMESPACE the write
/// namespace), with the client configuration at `kubeconfig`.
async fn diff(kubeconfig: &Path, write_ns: &str, args: &[&str]) -> Run {
    let mut all = vec!["diff"];
    all.extend_from_slice(args);
    run_binary(kubeconfig, write_ns, &all).await
}

/// Runs `upstream-discovery explain NAMESPACE/SERVICE` against the cluster, watching `watched`.
pub async fn explain(kubeconfig: &Path, write_ns: &str, service: &str, watched: &str) -> Run {
    run_binary(
        kubeconfig,
        write_ns,
        &["explain", service, "--watch-namespaces", watched],
    )
    .await
}

/// Runs the binary with `args` against the cluster of `kubeconfig`, as a pod of `write_ns`.
pub async fn run_binary(kubeconfig: &Path, write_ns: &str, args: &[&str]) -> Run {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_upstream-discovery"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("POD_NAMESPACE", write_ns)
        .output()
        .await
        .expect("the binary runs");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The JSON report of `diff -o json`, checked to agree with the exit code.
async fn diff_json(kubeconfig: &Path, write_ns: &str, watched: &str) -> Value {
    let run = diff(
        kubeconfig,
        write_ns,
        &["--watch-namespaces", watched, "-o", "json"],
    )
    .await;
    let report: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("diff -o json is JSON ({e}): {}{}", run.stdout, run.stderr));
    let summary = &report["summary"];
    let changes = ["create", "update", "delete"]
        .iter()
        .map(|k| summary[k].as_u64().expect("a count"))
        .sum::<u64>();
    assert_eq!(run.code, Some(if changes > 0 { 1 } else { 0 }), "{report}");
    report
}

fn names(report: &Value, group: &str) -> Vec<String> {
    report[group]
        .as_array()
        .expect("a list")
        .iter()
        .map(|entry| entry["name"].as_str().expect("a name").to_string())
        .collect()
}

fn service(name: &str, ports: &[(&str, i32)]) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "selector": {"app": name},
            "ports": ports.iter().map(|(n, p)| json!({"name": n, "port": p})).collect::<Vec<_>>(),
        },
    }))
    .expect("service")
}

/// An Upstream as Gloo's discovery writes it: created by its field manager (`discovery`), with
/// the status Gloo's reporter writes together with the object.
async fn gloo_writes(admin: &Client, write_ns: &str, mut upstream: Value) {
    upstream = without(upstream, "/metadata/ownerReferences");
    upstream["apiVersion"] = json!("gloo.solo.io/v1");
    upstream["kind"] = json!("Upstream");
    upstream["status"] = json!({"statuses": {write_ns: {"state": 1, "reportedBy": "gloo"}}});
    let object: DynamicObject = serde_json::from_value(upstream).expect("upstream");
    let gloo = PostParams {
        field_manager: Some("discovery".into()),
        ..Default::default()
    };
    upstream_api(admin, write_ns)
        .create(&gloo, &object)
        .await
        .expect("gloo-style create");
}

/// Every Upstream of the namespace and its resourceVersion.
async fn versions(admin: &Client, write_ns: &str) -> BTreeMap<String, String> {
    upstream_api(admin, write_ns)
        .list(&ListParams::default())
        .await
        .expect("list upstreams")
        .items
        .into_iter()
        .map(|u| {
            (
                u.metadata.name.unwrap_or_default(),
                u.metadata.resource_version.unwrap_or_default(),
            )
        })
        .collect()
}

pub async fn previews_a_switch_from_gloo_exactly_and_writes_nothing(env: Arc<TestEnv>) {
    let scenario = Scenario::builder(env, "diff").build().await;
    let (admin, ns, write) = (
        &scenario.admin,
        scenario.service_ns.clone(),
        scenario.write_ns.clone(),
    );
    let kubeconfig = scenario.kubeconfig().to_path_buf();
    let services = Api::<Service>::namespaced(admin.clone(), &ns);
    for (name, ports) in [
        ("same", &[("http", 80), ("grpc", 9000)][..]),
        ("web", &[("http", 8080)]),
        ("taken", &[("http", 80)]),
    ] {
        services
            .create(&PostParams::default(), &service(name, ports))
            .await
            .expect("create service");
    }
    // As Gloo's discovery left them (docs/behaviour.md): one per port, the port named grpc speaking
    // HTTP/2; `taken`'s name holds someone's own Upstream, which discovery never touches.
    gloo_writes(admin, &write, kube_upstream(&ns, "same", 80)).await;
    gloo_writes(
        admin,
        &write,
        with(
            kube_upstream(&ns, "same", 9000),
            "/spec/useHttp2",
            json!(true),
        ),
    )
    .await;
    gloo_writes(admin, &write, kube_upstream(&ns, "web", 8080)).await;
    for name in [format!("{ns}-taken-80"), "handmade".to_string()] {
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "gloo.solo.io/v1", "kind": "Upstream",
            "metadata": {"name": name},
            "spec": {"static": {"hosts": [{"addr": "10.0.0.1", "port": 80}]}},
        }))
        .expect("upstream");
        upstream_api(admin, &write)
            .create(&PostParams::default(), &object)
            .await
            .expect("create unowned upstream");
    }
    let before = versions(admin, &write).await;

    // Nothing to do: adopted as they are, whoever manages their fields.
    let run = diff(&kubeconfig, &write, &["--watch-namespaces", &ns]).await;
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("Nothing to do"), "{}", run.stdout);
    assert!(
        run.stdout
            .ends_with("0 to create, 0 to update, 0 to delete, 3 unchanged, 2 left alone\n"),
        "{}",
        run.stdout
    );
    let report = diff_json(&kubeconfig, &write, &ns).await;
    assert_eq!(
        names(&report, "unchanged"),
        [
            format!("{ns}-same-80"),
            format!("{ns}-same-9000"),
            format!("{ns}-web-8080")
        ]
    );
    let left = &report["leftAlone"];
    assert_eq!(left.as_array().map(Vec::len), Some(2), "{left}");
    assert_eq!(left[0]["name"], json!(format!("{ns}-taken-80")));
    assert_eq!(left[0]["service"], json!(format!("{ns}/taken")));
    assert_eq!(left[0]["reason"], json!("not_owned"));
    assert_eq!(left[1]["name"], json!("handmade"));
    assert_eq!(left[1]["service"], Value::Null);

    // One Service changes: exactly that change.
    services
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"team": "payments"}}})),
        )
        .await
        .expect("patch service");
    let run = diff(&kubeconfig, &write, &["--watch-namespaces", &ns]).await;
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!(
            "~ {write}/{ns}-web-8080 (Service {ns}/web): metadata.annotations differs"
        )),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("+++ after run"), "{}", run.stdout);
    assert!(run.stdout.contains("+  annotations:\n"), "{}", run.stdout);
    assert!(
        run.stdout.contains("+    team: payments\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .ends_with("0 to create, 1 to update, 0 to delete, 2 unchanged, 2 left alone\n"),
        "{}",
        run.stdout
    );
    let report = diff_json(&kubeconfig, &write, &ns).await;
    assert_eq!(names(&report, "update"), [format!("{ns}-web-8080")]);
    assert_eq!(report["update"][0]["onlyDeliberate"], json!(false));
    assert_eq!(report["update"][0]["remove"], json!([]));

    // A Service more: a create; a Service gone: its Upstreams deleted.
    services
        .create(&PostParams::default(), &service("new", &[("http", 80)]))
        .await
        .expect("create service");
    services
        .delete("same", &DeleteParams::default())
        .await
        .expect("delete service");
    let report = diff_json(&kubeconfig, &write, &ns).await;
    assert_eq!(names(&report, "create"), [format!("{ns}-new-80")]);
    assert_eq!(
        report["create"][0]["upstream"]["spec"],
        kube_upstream(&ns, "new", 80)["spec"]
    );
    assert_eq!(
        names(&report, "delete"),
        [format!("{ns}-same-80"), format!("{ns}-same-9000")]
    );
    assert_eq!(
        report["summary"],
        json!({"create": 1, "update": 1, "updateOnlyDeliberate": 0, "delete": 2, "unchanged": 0, "leftAlone": 2})
    );

    // No write of any kind: the Upstreams as they were, no Lease, no Event.
    assert_eq!(versions(admin, &write).await, before, "diff wrote nothing");
    let leases = Api::<Lease>::namespaced(admin.clone(), &write)
        .list(&ListParams::default())
        .await
        .expect("list leases");
    assert!(leases.items.is_empty(), "no Lease taken");
    for namespace in [&ns, &write] {
        let events = Api::<Event>::namespaced(admin.clone(), namespace)
            .list(&ListParams::default())
            .await
            .expect("list events");
        let ours: Vec<_> = events
            .items
            .iter()
            .filter(|e| e.involved_object.kind.as_deref() == Some("Service"))
            .filter_map(|e| e.reason.clone())
            .collect();
        assert!(ours.is_empty(), "no Event recorded: {ours:?}");
    }

    // explain against the cluster, as an admin (the daemon's account may not list Events).
    let admin_config = Path::new(scenario.env.get("KUBECONFIG")).to_path_buf();
    let web = explain(&admin_config, &write, &format!("{ns}/web"), &ns).await;
    assert_eq!(web.code, Some(0), "{}{}", web.stdout, web.stderr);
    for line in [
        format!("  Upstream {write}/{ns}-web-8080 (port 8080)\n"),
        "    metadata.annotations.team = \"payments\"  <- the Service's annotation team, copied\n"
            .to_string(),
        "    name held by: this Service\n".to_string(),
        "    live: differs (run updates it: metadata.annotations differs)\n".to_string(),
        "      +    team: payments\n".to_string(),
        "  last Event: none\n".to_string(),
    ] {
        assert!(web.stdout.contains(&line), "{line:?} in:\n{}", web.stdout);
    }
    let event: Event = serde_json::from_value(json!({
        "metadata": {"name": "taken-not-owned", "namespace": ns},
        "involvedObject": {"apiVersion": "v1", "kind": "Service", "namespace": ns, "name": "taken"},
        "reason": "UpstreamNotOwned", "type": "Warning", "message": "left alone",
        "lastTimestamp": "2026-01-02T03:04:05Z",
    }))
    .expect("event");
    Api::<Event>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &event)
        .await
        .expect("create event");
    let taken = explain(&admin_config, &write, &format!("{ns}/taken"), &ns).await;
    assert_eq!(taken.code, Some(0), "{}{}", taken.stdout, taken.stderr);
    for line in [
        "    name held by: an Upstream without the discovered_by=kubernetesplugin label (not owned: never touched)\n",
        "    live: left alone by run (not owned)\n",
        "  last Event: Warning UpstreamNotOwned at 2026-01-02T03:04:05Z: left alone\n",
    ] {
        assert!(taken.stdout.contains(line), "{line:?} in:\n{}", taken.stdout);
    }
    let new = explain(&admin_config, &write, &format!("{ns}/new"), &ns).await;
    assert!(
        new.stdout.contains("    live: missing (run creates it)\n"),
        "{}",
        new.stdout
    );
    assert_eq!(
        versions(admin, &write).await,
        before,
        "explain wrote nothing"
    );

    // An API server it cannot reach: exit code 2.
    let dir = tempfile::tempdir().expect("temp dir");
    let unreachable = dir.path().join("kubeconfig");
    std::fs::write(
        &unreachable,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: none\n  cluster:\n    server: https://127.0.0.1:1\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: x\ncontexts:\n- name: c\n  context: {cluster: none, user: u}\ncurrent-context: c\n",
    )
    .expect("write kubeconfig");
    for args in [&[][..], &["-o", "json"]] {
        let run = diff(&unreachable, &write, args).await;
        assert_eq!(run.code, Some(2), "{}{}", run.stdout, run.stderr);
        assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
    }
    let missing = dir.path().join("missing");
    let run = diff(&missing, &write, &[]).await;
    assert_eq!(run.code, Some(2), "{}{}", run.stdout, run.stderr);
    scenario.cleanup().await;
}

/// Scale sanity: 2,000 Services (headless, as in the benchmark, so no cluster IPs run out), one
/// paged pass, every create reported. No timing is asserted.
pub async fn answers_for_two_thousand_services(env: Arc<TestEnv>) {
    let scenario = Scenario::builder(env.clone(), "diffscale").build().await;
    let admin = &scenario.admin;
    let ns = fresh_namespace(admin, "diffscale-s").await;
    let services = Api::<Service>::namespaced(admin.clone(), &ns);
    let count = 2000;
    stream::iter(0..count)
        .map(|i| {
            let services = services.clone();
            async move {
                let service: Service = serde_json::from_value(json!({
                    "metadata": {"name": format!("s{i}")},
                    "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]},
                }))
                .expect("service");
                services
                    .create(&PostParams::default(), &service)
                    .await
                    .expect("create service");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let started = std::time::Instant::now();
    let report = diff_json(scenario.kubeconfig(), &scenario.write_ns, &ns).await;
    eprintln!(
        "diff over {count} Services took {:.2}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(report["summary"]["create"], json!(count));
    assert_eq!(report["summary"]["delete"], json!(0));
    crate::support::delete_namespace(admin, &ns).await;
    scenario.cleanup().await;
}
