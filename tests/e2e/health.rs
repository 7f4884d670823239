//! `/readyz` and `/healthz` of a running daemon (issue 13): readiness follows the watches after
//! a grace period and says why it is off; liveness fails while a loop's work is stuck.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;

use crate::fault_proxy::{Fault, FaultProxy, Rule};
use crate::scenario::Scenario;
use crate::support::{kube_upstream, wait_for, wait_for_exact_upstreams, with};
use crate::test_env::TestEnv;

const EXIT_LIMIT: Duration = Duration::from_secs(5);

async fn create_service(admin: &Client, namespace: &str, name: &str) -> Service {
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80}]},
    }))
    .expect("service");
    Api::<Service>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), &service)
        .await
        .expect("create service")
}

/// The Services right is refused (403 from the proxy) while the daemon runs: once its Service
/// watches have failed for the grace period, /readyz is 503 and names them; /healthz stays 200
/// (the API server's answers never restart the pod), nothing is deleted, and when the right is
/// back the daemon is ready again on its own.
pub async fn readyz_names_a_failing_service_watch_and_recovers(env: Arc<TestEnv>) {
    let scenario = Scenario::builder(env.clone(), "readyz").build().await;
    let (admin, ns, write) = (
        &scenario.admin,
        scenario.service_ns.clone(),
        scenario.write_ns.clone(),
    );
    create_service(admin, &ns, "one").await;
    let proxy = FaultProxy::start(&env, scenario.token()).await;
    let daemon = scenario
        .daemon()
        .via(&proxy.url())
        .args(&["--watch-grace", "2s"])
        .ready()
        .await;
    let one = kube_upstream(&ns, "one", 80);
    wait_for_exact_upstreams(admin, &write, std::slice::from_ref(&one)).await;

    let refused = proxy.rules.inject(Rule::new(
        "GET",
        &["/services"],
        Fault::Status {
            code: 403,
            reason: "Forbidden",
            retry_after: None,
        },
    ));
    proxy.drop_watches();
    let reasons = wait_for("/readyz to name the failing Service watch", || async {
        match daemon.get("/readyz").await {
            Some((503, body)) if body.contains("services: watch of services in") => Some(body),
            _ => None,
        }
    })
    .await;
    eprintln!("/readyz while Services are refused:\n{reasons}");
    assert!(
        reasons.contains(&format!("services: watch of services in {ns} failing for")),
        "{reasons}"
    );
    assert!(reasons.contains("403"), "the reason says why: {reasons}");
    assert_eq!(
        daemon.get("/healthz").await,
        Some((200, "ok".to_string())),
        "a refused watch is not a reason to restart"
    );
    wait_for_exact_upstreams(admin, &write, std::slice::from_ref(&one)).await;

    // The right comes back. A resumed watch says nothing until an object changes (else the
    // stream counts as back once its next retry is overdue, 35 s): a change in each
    // watched namespace.
    proxy.rules.remove(refused);
    create_service(admin, &ns, "two").await;
    let three = create_service(admin, &write, "three").await;
    daemon.wait_ready().await;
    // Beside its Service, an Upstream is owned by it (docs/behaviour.md).
    let owner = json!([{"apiVersion": "v1", "kind": "Service", "name": "three",
                        "uid": three.metadata.uid.expect("uid")}]);
    let three = with(
        kube_upstream(&write, "three", 80),
        "/metadata/ownerReferences",
        owner,
    );
    let expected = [one, kube_upstream(&ns, "two", 80), three];
    wait_for_exact_upstreams(admin, &write, &expected).await;
    assert_eq!(daemon.get("/readyz").await, Some((200, "ok".to_string())));
    daemon.terminate(EXIT_LIMIT);
    proxy.shutdown().await;
    scenario.cleanup().await;
}

/// A write the API server never answers (the proxy holds it) leaves service discovery with
/// work in flight and nothing finished: after `--stall-timeout`, /healthz is 503 and names the
/// loop, while /readyz (caches and watches fine) stays 200.
pub async fn healthz_fails_while_a_write_hangs(env: Arc<TestEnv>) {
    let scenario = Scenario::builder(env.clone(), "stall").build().await;
    let (admin, ns) = (&scenario.admin, scenario.service_ns.clone());
    let proxy = FaultProxy::start(&env, scenario.token()).await;
    let daemon = scenario
        .daemon()
        .via(&proxy.url())
        .args(&["--stall-timeout", "3s", "--leader-elect", "false"])
        .ready()
        .await;
    assert_eq!(daemon.get("/healthz").await, Some((200, "ok".to_string())));

    proxy.rules.inject(Rule::new(
        "POST",
        &["/upstreams"],
        Fault::Delay(Duration::from_secs(3600)),
    ));
    create_service(admin, &ns, "slow").await;
    let reasons = wait_for("/healthz to report the stuck loop", || async {
        match daemon.get("/healthz").await {
            Some((503, body)) => Some(body),
            _ => None,
        }
    })
    .await;
    eprintln!("/healthz while a write hangs:\n{reasons}");
    assert!(
        reasons.starts_with("services: work in flight and none finished for"),
        "{reasons}"
    );
    assert_eq!(
        daemon.get("/readyz").await,
        Some((200, "ok".to_string())),
        "a stuck loop is a liveness matter"
    );
    daemon.terminate(EXIT_LIMIT);
    proxy.shutdown().await;
    scenario.cleanup().await;
}
