//! Rights taken away while the daemon runs (issue 12: "any other refused right ... is reported
//! the same way and never costs a deletion"): a refused list gives one warning line and a
//! metric, nothing is deleted meanwhile, and discovery recovers on its own once the right is back.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};

use crate::fault_proxy::{matching, FaultProxy};
use crate::scenario::Scenario;
use crate::support::{create_plain_service, kube_upstream, wait_for, wait_for_exact_upstreams};
use crate::test_env::TestEnv;

const EXIT_LIMIT: Duration = Duration::from_secs(5);

/// Replaces the scenario's ClusterRole with its rules, minus (or plus) the rule on Services.
async fn set_service_rights(admin: &Client, role_name: &str, granted: bool) {
    let roles = Api::<ClusterRole>::all(admin.clone());
    let mut role = roles
        .get(role_name)
        .await
        .expect("the scenario's ClusterRole");
    let rules = role.rules.get_or_insert_with(Vec::new);
    for rule in rules.iter_mut() {
        let resources = rule.resources.get_or_insert_with(Vec::new);
        resources.retain(|resource| resource != "services");
        if granted && resources.iter().any(|resource| resource == "namespaces") {
            resources.push("services".to_string());
        }
    }
    role.metadata.managed_fields = None;
    roles
        .replace(role_name, &PostParams::default(), &role)
        .await
        .expect("replace the ClusterRole");
}

pub async fn a_refused_service_list_is_reported_once_deletes_nothing_and_recovers(
    env: Arc<TestEnv>,
) {
    let scenario = Scenario::builder(env, "norights").build().await;
    let (admin, ns, write) = (
        &scenario.admin,
        scenario.service_ns.clone(),
        scenario.write_ns.clone(),
    );
    let role_name = format!("e2e-{write}");
    for name in ["one", "two"] {
        create_plain_service(admin, &ns, name).await;
    }
    let both = vec![kube_upstream(&ns, "one", 80), kube_upstream(&ns, "two", 80)];
    let first = scenario.daemon().ready().await;
    wait_for_exact_upstreams(admin, &write, &both).await;
    first.terminate(EXIT_LIMIT);

    // The right goes; so does Service `two`. A daemon that took the refused list for an empty
    // one would now delete both Upstreams, and one that could list would delete `two`'s.
    set_service_rights(admin, &role_name, false).await;
    Api::<Service>::namespaced(admin.clone(), &ns)
        .delete("two", &DeleteParams::default())
        .await
        .expect("delete service two");
    let daemon = scenario.daemon().start();
    wait_for("the metrics endpoint", || async {
        daemon.get("/metrics").await.map(|_| ())
    })
    .await;
    // Services are watched in two namespaces (the scenario's and the write namespace, which
    // Gloo adds): two streams, each refused again and again.
    wait_for("six refused lists of Services counted", || async {
        let restarts = daemon
            .metric_sum("upstream_discovery_watch_restarts_total{resource=\"services\"}")
            .await;
        (restarts >= 6.0).then_some(())
    })
    .await;
    let logs = daemon.logs();
    let warnings = logs
        .lines()
        .filter(|line| line.contains("\"WARN\"") && line.contains("watch failed"))
        .filter(|line| line.contains("services"))
        .count();
    assert_eq!(
        warnings, 2,
        "one warning line per stream while its list stays refused:\n{logs}"
    );
    assert!(logs.contains("forbidden"), "the line says why:\n{logs}");
    let (status, _) = daemon.get("/readyz").await.expect("/readyz answers");
    assert_eq!(status, 503, "not ready without the Service cache");
    wait_for_exact_upstreams(admin, &write, &both).await;

    // The right comes back: the daemon lists on its own and collects `two`'s Upstream.
    set_service_rights(admin, &role_name, true).await;
    wait_for_exact_upstreams(admin, &write, &[kube_upstream(&ns, "one", 80)]).await;
    daemon.wait_ready().await;
    daemon.terminate(EXIT_LIMIT);
    scenario.cleanup().await;
}

/// Sets the verbs on Upstreams of the scenario's Role in the write namespace.
async fn set_upstream_verbs(admin: &Client, write_ns: &str, verbs: &[&str]) {
    use k8s_openapi::api::rbac::v1::Role;
    let roles = Api::<Role>::namespaced(admin.clone(), write_ns);
    let mut role = roles
        .get("upstream-discovery")
        .await
        .expect("the scenario's Role");
    let rules = role.rules.get_or_insert_with(Vec::new);
    let rule = rules
        .iter_mut()
        .find(|rule| rule.resources.iter().flatten().any(|r| r == "upstreams"))
        .expect("a rule on Upstreams");
    rule.verbs = verbs.iter().map(|verb| verb.to_string()).collect();
    role.metadata.managed_fields = None;
    roles
        .replace("upstream-discovery", &PostParams::default(), &role)
        .await
        .expect("replace the Role");
}

pub async fn refused_writes_are_said_once_counted_and_retried_until_the_right_is_back(
    env: Arc<TestEnv>,
) {
    let scenario = Scenario::builder(env, "nowrite").build().await;
    let (admin, ns, write) = (
        &scenario.admin,
        scenario.service_ns.clone(),
        scenario.write_ns.clone(),
    );
    // Reading stays allowed (so the caches sync); writing goes.
    set_upstream_verbs(admin, &write, &["get", "list", "watch"]).await;
    let daemon = scenario.daemon().ready().await;
    for name in ["one", "two", "three"] {
        create_plain_service(admin, &ns, name).await;
    }
    wait_for("each Service's refused create counted", || async {
        let refused = daemon
            .metric_sum("upstream_discovery_errors_total{kind=\"forbidden\"}")
            .await;
        (refused >= 4.0).then_some(())
    })
    .await;
    let logs = daemon.logs();
    let warnings = logs
        .lines()
        .filter(|line| line.contains("\"WARN\"") && line.contains("write failed"))
        .count();
    assert_eq!(
        warnings, 1,
        "one warning line for all refused writes:\n{logs}"
    );
    wait_for_exact_upstreams(admin, &write, &[]).await;

    set_upstream_verbs(
        admin,
        &write,
        &[
            "get", "list", "watch", "create", "update", "patch", "delete",
        ],
    )
    .await;
    let expected = vec![
        kube_upstream(&ns, "one", 80),
        kube_upstream(&ns, "three", 80),
        kube_upstream(&ns, "two", 80),
    ];
    wait_for_exact_upstreams(admin, &write, &expected).await;
    daemon.terminate(EXIT_LIMIT);
    scenario.cleanup().await;
}

/// The list right on Services goes while the daemon runs with its caches synced. An API server
/// keeps serving a watch opened before the right went, so the proxy drops the watches, as a
/// server does when a watch times out; every re-watch and re-list is then refused.
pub async fn a_list_right_lost_while_running_deletes_nothing_and_recovers(env: Arc<TestEnv>) {
    let scenario = Scenario::builder(env.clone(), "listlost").build().await;
    let (admin, ns, write) = (
        &scenario.admin,
        scenario.service_ns.clone(),
        scenario.write_ns.clone(),
    );
    let role_name = format!("e2e-{write}");
    let proxy = FaultProxy::start(&env, scenario.token()).await;
    let daemon = scenario
        .daemon()
        .via(&proxy.url())
        .args(&["--watch-grace", "1s"])
        .ready()
        .await;
    for name in ["one", "two"] {
        create_plain_service(admin, &ns, name).await;
    }
    let both = vec![kube_upstream(&ns, "one", 80), kube_upstream(&ns, "two", 80)];
    wait_for_exact_upstreams(admin, &write, &both).await;
    let restarts_before = daemon
        .metric_sum("upstream_discovery_watch_restarts_total{resource=\"services\"}")
        .await;

    set_service_rights(admin, &role_name, false).await;
    assert!(proxy.drop_watches() >= 2, "the Service watches were open");
    wait_for("the refused re-lists counted on both streams", || async {
        let restarts = daemon
            .metric_sum("upstream_discovery_watch_restarts_total{resource=\"services\"}")
            .await;
        (restarts >= restarts_before + 4.0).then_some(())
    })
    .await;
    // Deleted only now that the daemon cannot see it: while its watch was open it would have
    // seen the deletion and rightly collected `two`'s Upstream.
    Api::<Service>::namespaced(admin.clone(), &ns)
        .delete("two", &DeleteParams::default())
        .await
        .expect("delete service two");
    wait_for("/readyz to say the Service watch is down", || async {
        let (status, body) = daemon.get("/readyz").await?;
        (status == 503 && body.contains("services")).then_some(())
    })
    .await;
    let logs = daemon.logs();
    assert!(
        logs.lines()
            .any(|line| line.contains("\"WARN\"") && line.contains("forbidden")),
        "a warning says the list is forbidden:\n{logs}"
    );
    // The cache still holds `two` from before the right went: it is not taken as gone.
    wait_for_exact_upstreams(admin, &write, &both).await;
    let deletes = matching(&proxy.requests(), "DELETE", "upstreams").count();
    assert_eq!(deletes, 0, "no Upstream deleted while the list is refused");

    set_service_rights(admin, &role_name, true).await;
    wait_for_exact_upstreams(admin, &write, &[kube_upstream(&ns, "one", 80)]).await;
    daemon.wait_ready().await;
    daemon.terminate(EXIT_LIMIT);
    proxy.shutdown().await;
    scenario.cleanup().await;
}
