//! Names held by someone else (docs/behaviour.md, issue 11 failure 5): "Creating never merges into
//! an existing object: a name found taken by an unlabelled object leaves that object byte-for-byte
//! as it was", whatever the daemon's cache believed. The conformance cases `issue-05b-*` cover the
//! same rule where the cache may already know the object; here the daemon's watch of the write
//! namespace's Upstreams is held up at the fault proxy, so its cache certainly has not seen the
//! object when the Service asks for the name.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use kube::api::{DynamicObject, PostParams};
use kube::Api;
use serde_json::json;

use crate::fault_proxy::{matching, Fault, FaultProxy, Rule};
use crate::scenario::Scenario;
use crate::support::{event_reasons, upstream_api, wait_for, DEADLINE};
use crate::test_env::TestEnv;

/// SIGTERM must end the daemon within this.
const EXIT_LIMIT: Duration = Duration::from_secs(5);
/// How long the daemon's Upstream watch is held before it reaches the API server.
const HELD: Duration = Duration::from_secs(15);

pub async fn a_create_never_merges_into_an_object_the_cache_has_not_seen(env: Arc<TestEnv>) {
    let scenario = Scenario::builder(env.clone(), "nomerge").build().await;
    let (admin, ns, write) = (
        scenario.admin.clone(),
        scenario.service_ns.clone(),
        scenario.write_ns.clone(),
    );
    let proxy = FaultProxy::start(&env, scenario.token()).await;
    let upstream_path = format!("/namespaces/{write}/upstreams?");
    proxy
        .rules
        .inject(Rule::new("GET", &[&upstream_path, "watch="], Fault::Delay(HELD)).times(1));
    // Ready after its first lists; the watch that would tell it about new Upstreams is held.
    let daemon = scenario.daemon().via(&proxy.url()).ready().await;
    let held_since = wait_for("the daemon's Upstream watch to reach the proxy", || async {
        matching(&proxy.requests(), "GET", &upstream_path)
            .find(|seen| seen.watch)
            .map(|seen| seen.at)
    })
    .await;

    // Someone creates an Upstream by hand under the name `web`'s port maps to; then `web`.
    let name = format!("{ns}-web-80");
    let foreign: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gloo.solo.io/v1", "kind": "Upstream",
        "metadata": {"name": name, "annotations": {"owner": "a-human"}},
        "spec": {"static": {"hosts": [{"addr": "10.9.8.7", "port": 80}]}},
    }))
    .expect("upstream");
    let upstreams = upstream_api(&admin, &write);
    let by_hand = PostParams {
        field_manager: Some("kubectl-create".into()),
        ..Default::default()
    };
    let created = upstreams
        .create(&by_hand, &foreign)
        .await
        .expect("create the Upstream by hand");
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]},
    }))
    .expect("service");
    Api::<Service>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &service)
        .await
        .expect("create the Service");

    // The daemon tries the name, finds it taken, says so on the Service, and writes nothing.
    let started = Instant::now();
    let unchanged = || async {
        let now = upstreams
            .get(&name)
            .await
            .expect("the Upstream is still there");
        assert_eq!(
            now.metadata.resource_version,
            created.metadata.resource_version,
            "the daemon wrote into an Upstream it does not own: {}\nits log:\n{}",
            serde_json::to_string(&now).unwrap_or_default(),
            daemon.logs()
        );
    };
    loop {
        unchanged().await;
        let events = event_reasons(&admin, &ns, "Service", "web")
            .await
            .unwrap_or_default();
        if events.iter().any(|reason| reason == "UpstreamNotOwned") {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "no UpstreamNotOwned Event on Service web after {DEADLINE:?} (Events: {events:?})\nthe daemon's log:\n{}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        held_since.elapsed() < HELD,
        "the Service was handled only after the Upstream watch went through: the test proves \
         nothing on a machine this slow"
    );
    daemon.terminate(EXIT_LIMIT);
    proxy.shutdown().await;
    scenario.cleanup().await;
}
