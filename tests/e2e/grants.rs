//! ReferenceGrants kept by the daemon (`--reference-grants`, issue 16), on the test API server
//! with Gateway API's ReferenceGrant CRD installed from its published schema facts (written out
//! by hand below). Every expectation is written by hand from the issue: one grant per discovered
//! Upstream, of the Upstream's name, in the write namespace, labelled
//! `discovered_by: kubernetesplugin`, `to` exactly that Upstream, `from` one entry per route
//! kind and namespace (the Service's own first, then its annotation's, sorted).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::core::GroupVersionKind;
use kube::{Api, Client};
use serde_json::{json, Value};

use crate::fault_proxy::{Fault, FaultProxy, Rule};
use crate::scenario::Scenario;
use crate::support::{
    apply_crd, kube_upstream, wait_for_event, wait_for_exact_upstreams, wait_until, with,
};
use crate::test_env::TestEnv;

const EXIT_LIMIT: Duration = Duration::from_secs(5);
const ROUTES: &str = "gateway.networking.k8s.io";

/// Gateway API's ReferenceGrant CRD, as far as the API server needs it: group
/// `gateway.networking.k8s.io`, version `v1beta1` served and stored, namespaced, plural
/// `referencegrants`; `spec.from` 1..16 of `{group, kind, namespace}` (all required, `group`
/// may be empty), `spec.to` 1..16 of `{group, kind, name?}` (`group`, `kind` required).
fn reference_grant_crd() -> CustomResourceDefinition {
    let name = |min: u32, max: u32| json!({"type": "string", "minLength": min, "maxLength": max});
    let group = json!({"type": "string", "maxLength": 253});
    let list = |required: Value, properties: Value| {
        json!({
            "type": "array", "minItems": 1, "maxItems": 16,
            "items": {"type": "object", "required": required, "properties": properties},
        })
    };
    let from = list(
        json!(["group", "kind", "namespace"]),
        json!({"group": group, "kind": name(1, 63), "namespace": name(1, 63)}),
    );
    let to = list(
        json!(["group", "kind"]),
        json!({"group": group, "kind": name(1, 63), "name": name(1, 253)}),
    );
    let schema = json!({
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "required": ["from", "to"],
                "properties": {"from": from, "to": to},
            },
        },
    });
    let names = json!({
        "plural": "referencegrants",
        "singular": "referencegrant",
        "kind": "ReferenceGrant",
        "listKind": "ReferenceGrantList",
        "shortNames": ["refgrant"],
    });
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        // *.k8s.io groups are protected: Gateway API's CRDs carry this approval.
        "metadata": {
            "name": "referencegrants.gateway.networking.k8s.io",
            "annotations": {"api-approved.kubernetes.io": "https://github.com/kubernetes-sigs/gateway-api/pull/2466"},
        },
        "spec": {
            "group": ROUTES,
            "scope": "Namespaced",
            "names": names,
            "versions": [{
                "name": "v1beta1",
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": schema},
            }],
        },
    }))
    .expect("the ReferenceGrant CRD")
}

pub async fn install_grant_crd(admin: &Client) {
    apply_crd(admin, &reference_grant_crd()).await;
}

pub fn grant_api(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(ROUTES, "v1beta1", "ReferenceGrant");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "referencegrants");
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// Every right on `referencegrants` in the write namespace, as the chart grants when enabled.
async fn allow_grants(scenario: &Scenario) {
    allow_grants_in(
        &scenario.admin,
        &scenario.write_ns,
        &scenario.write_ns,
        "upstream-discovery",
    )
    .await;
}

/// The same rights in `namespace`, for the ServiceAccount `account_ns/account`.
pub async fn allow_grants_in(admin: &Client, namespace: &str, account_ns: &str, account: &str) {
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "upstream-discovery-grants"},
        "rules": [{"apiGroups": [ROUTES], "resources": ["referencegrants"],
            "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}],
    }))
    .expect("role");
    Api::<Role>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), &role)
        .await
        .expect("create the grants Role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "upstream-discovery-grants"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "upstream-discovery-grants"},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": account_ns}],
    }))
    .expect("binding");
    Api::<RoleBinding>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), &binding)
        .await
        .expect("create the grants RoleBinding");
}

/// A grant as the test compares it: name, labels and spec.
pub fn essence(grant: &DynamicObject) -> Value {
    json!({
        "name": grant.metadata.name,
        "labels": grant.metadata.labels,
        "spec": grant.data.get("spec"),
    })
}

/// The grant the issue asks for: routes of each of `kinds` in each of `namespaces` (in that
/// order) may refer to the Upstream `upstream`, and to nothing else.
pub fn expected_grant(upstream: &str, namespaces: &[&str], kinds: &[&str]) -> Value {
    let from: Vec<Value> = namespaces
        .iter()
        .flat_map(|namespace| {
            kinds
                .iter()
                .map(move |kind| json!({"group": ROUTES, "kind": kind, "namespace": namespace}))
        })
        .collect();
    json!({
        "name": upstream,
        "labels": {"discovered_by": "kubernetesplugin"},
        "spec": {
            "from": from,
            "to": [{"group": "gloo.solo.io", "kind": "Upstream", "name": upstream}],
        },
    })
}

pub async fn list_grants(client: &Client, namespace: &str) -> Vec<DynamicObject> {
    let mut grants = grant_api(client, namespace)
        .list(&ListParams::default())
        .await
        .expect("list grants")
        .items;
    grants.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    grants
}

/// Waits until the grants of `namespace` are exactly `expected` (in any order).
pub async fn wait_for_exact_grants(client: &Client, namespace: &str, expected: &[Value]) {
    let mut expected = expected.to_vec();
    expected.sort_by_key(|grant| grant["name"].as_str().unwrap_or_default().to_string());
    let what = format!(
        "exactly these grants in {namespace}:\n{}",
        serde_json::to_string_pretty(&expected).unwrap_or_default()
    );
    wait_until(&what, || async {
        let found: Vec<Value> = list_grants(client, namespace)
            .await
            .iter()
            .map(essence)
            .collect();
        if found == expected {
            Ok(())
        } else {
            Err(format!(
                "last seen:\n{}",
                serde_json::to_string_pretty(&found).unwrap_or_default()
            ))
        }
    })
    .await;
}

pub fn service(name: &str, ports: &[i32], annotations: Value) -> Service {
    let ports: Vec<Value> = ports
        .iter()
        .map(|port| json!({"name": format!("p{port}"), "port": port}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}, "annotations": annotations},
        "spec": {"selector": {"app": name}, "ports": ports},
    }))
    .expect("service")
}

pub async fn create_service(admin: &Client, namespace: &str, service: &Service) {
    Api::<Service>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), service)
        .await
        .expect("create service");
}

pub async fn patch_service(admin: &Client, namespace: &str, name: &str, patch: Value) {
    Api::<Service>::namespaced(admin.clone(), namespace)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch service");
}

pub async fn delete_service(admin: &Client, namespace: &str, name: &str) {
    Api::<Service>::namespaced(admin.clone(), namespace)
        .delete(name, &DeleteParams::default())
        .await
        .expect("delete service");
}

/// The Upstream of port `port` of a Service made by [`service`].
pub fn upstream(namespace: &str, name: &str, port: u16, annotations: Value) -> Value {
    let upstream = kube_upstream(namespace, name, port);
    if annotations.as_object().is_some_and(|a| a.is_empty()) {
        return upstream;
    }
    with(upstream, "/metadata/annotations", annotations)
}

/// Two namespaces: each Service gets grants for exactly its own Upstreams, from its own
/// namespace (and its annotation's); a port removed or a Service deleted takes its grants along.
pub async fn each_namespace_gets_grants_for_exactly_its_own_upstreams(env: Arc<TestEnv>) {
    let scenario = Scenario::builder(env, "grants")
        .another_namespace("b")
        .build()
        .await;
    let admin = &scenario.admin;
    install_grant_crd(admin).await;
    allow_grants(&scenario).await;
    let (a, b, write) = (
        scenario.service_ns.clone(),
        scenario.others[0].clone(),
        scenario.write_ns.clone(),
    );
    let daemon = scenario
        .daemon()
        // No function discovery: its rights are granted in the scenario's first namespace only.
        .args(&[
            "--watch-namespaces",
            &b,
            "--fds-mode",
            "DISABLED",
            "--reference-grants",
            "--reference-grant-kinds",
            "HTTPRoute,GRPCRoute",
        ])
        .ready()
        .await;
    let both = ["HTTPRoute", "GRPCRoute"];
    let route_namespaces = json!({"upstream-discovery.io/route-namespaces": " zeta-edge , alpha-edge,Not_A_Namespace,alpha-edge"});
    create_service(admin, &a, &service("web", &[80, 8080], json!({}))).await;
    create_service(admin, &a, &service("shop", &[80], route_namespaces.clone())).await;
    create_service(admin, &b, &service("api", &[80], json!({}))).await;

    wait_for_exact_upstreams(
        admin,
        &write,
        &[
            upstream(&a, "web", 80, json!({})),
            upstream(&a, "web", 8080, json!({})),
            upstream(&a, "shop", 80, route_namespaces.clone()),
            upstream(&b, "api", 80, json!({})),
        ],
    )
    .await;
    let web_80 = format!("{a}-web-80");
    let web_8080 = format!("{a}-web-8080");
    let shop_80 = format!("{a}-shop-80");
    let api_80 = format!("{b}-api-80");
    wait_for_exact_grants(
        admin,
        &write,
        &[
            expected_grant(&web_80, &[&a], &both),
            expected_grant(&web_8080, &[&a], &both),
            expected_grant(&shop_80, &[&a, "alpha-edge", "zeta-edge"], &both),
            expected_grant(&api_80, &[&b], &both),
        ],
    )
    .await;
    // Said another way: no grant lets one team's namespace name another team's Upstream.
    for grant in list_grants(admin, &write).await {
        let spec = &grant.data["spec"];
        let to = spec["to"].as_array().expect("to");
        assert_eq!(to.len(), 1, "{spec}");
        let named = to[0]["name"].as_str().expect("a name");
        let owner_ns = if named.starts_with(&format!("{b}-")) {
            &b
        } else {
            &a
        };
        for from in spec["from"].as_array().expect("from") {
            let namespace = from["namespace"].as_str().expect("namespace");
            assert!(
                namespace == owner_ns || namespace.ends_with("-edge"),
                "grant {named} lets {namespace} in"
            );
            assert!(namespace != if owner_ns == &a { &b } else { &a });
        }
    }
    // The bad entry of the annotation: a Warning Event on the Service and a count.
    wait_for_event(admin, &a, "Service", "shop", "InvalidAnnotation").await;
    assert_eq!(
        daemon
            .metric_sum("upstream_discovery_skipped_total{reason=\"invalid_route_namespace\"}")
            .await,
        1.0
    );

    // The annotation changes: the grant follows, in place.
    patch_service(
        admin,
        &a,
        "shop",
        json!({"metadata": {"annotations": {"upstream-discovery.io/route-namespaces": "mid-edge"}}}),
    )
    .await;
    let shop_annotations = json!({"upstream-discovery.io/route-namespaces": "mid-edge"});
    // A port goes: its Upstream and its grant go.
    patch_service(
        admin,
        &a,
        "web",
        json!({"spec": {"ports": [{"name": "p80", "port": 80}]}}),
    )
    .await;
    // A Service goes: its Upstreams and grants go.
    delete_service(admin, &b, "api").await;
    wait_for_exact_upstreams(
        admin,
        &write,
        &[
            upstream(&a, "web", 80, json!({})),
            upstream(&a, "shop", 80, shop_annotations),
        ],
    )
    .await;
    wait_for_exact_grants(
        admin,
        &write,
        &[
            expected_grant(&web_80, &[&a], &both),
            expected_grant(&shop_80, &[&a, "mid-edge"], &both),
        ],
    )
    .await;
    daemon.wait_idle().await;
    assert_eq!(
        daemon
            .metric_sum("upstream_discovery_reference_grants")
            .await,
        2.0
    );
    // Grant writes are counted apart: 4 creates, 1 update, 2 deletes.
    let grant_writes = |op: &'static str| {
        let daemon = &daemon;
        async move {
            daemon
                .metric_sum(&format!(
                    "upstream_discovery_reference_grant_writes_total{{op=\"{op}\",result=\"success\"}}"
                ))
                .await
        }
    };
    assert_eq!(grant_writes("create").await, 4.0);
    assert_eq!(grant_writes("update").await, 1.0);
    assert_eq!(grant_writes("delete").await, 2.0);
    assert_eq!(
        daemon.writes().await,
        4.0 + 1.0 + 2.0,
        "Upstream writes alone"
    );
    daemon.terminate(EXIT_LIMIT);
    scenario.cleanup().await;
}

/// A grant of the Upstream's name without our label stays as it is, through the Service's
/// life and death; the Service gets a Warning Event.
pub async fn an_unlabelled_grant_of_the_same_name_is_left_alone(env: Arc<TestEnv>) {
    let scenario = Scenario::builder(env, "grantforeign").build().await;
    let admin = &scenario.admin;
    install_grant_crd(admin).await;
    allow_grants(&scenario).await;
    let (ns, write) = (scenario.service_ns.clone(), scenario.write_ns.clone());
    let taken = format!("{ns}-web-80");
    let theirs: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {"name": taken, "labels": {"team": "platform"}},
        "spec": {
            "from": [{"group": ROUTES, "kind": "HTTPRoute", "namespace": "platform"}],
            "to": [{"group": "gloo.solo.io", "kind": "Upstream"}],
        },
    }))
    .expect("grant");
    let theirs = grant_api(admin, &write)
        .create(&PostParams::default(), &theirs)
        .await
        .expect("create the unlabelled grant");
    let before = serde_json::to_value(&theirs).expect("json");

    let daemon = scenario
        .daemon()
        .args(&["--reference-grants"])
        .ready()
        .await;
    create_service(admin, &ns, &service("web", &[80, 81], json!({}))).await;
    wait_for_exact_upstreams(
        admin,
        &write,
        &[
            upstream(&ns, "web", 80, json!({})),
            upstream(&ns, "web", 81, json!({})),
        ],
    )
    .await;
    let ours = format!("{ns}-web-81");
    let unchanged = json!({
        "name": taken,
        "labels": {"team": "platform"},
        "spec": before["spec"],
    });
    wait_for_exact_grants(
        admin,
        &write,
        &[
            unchanged.clone(),
            expected_grant(&ours, &[&ns], &["HTTPRoute"]),
        ],
    )
    .await;
    wait_for_event(admin, &ns, "Service", "web", "ReferenceGrantNotOwned").await;
    daemon.wait_idle().await;
    let now = grant_api(admin, &write)
        .get(&taken)
        .await
        .expect("still there");
    assert_eq!(
        serde_json::to_value(&now).expect("json"),
        before,
        "not modified at all"
    );
    assert_eq!(
        daemon
            .metric_sum("upstream_discovery_skipped_total{reason=\"not_owned\"}")
            .await,
        1.0
    );

    delete_service(admin, &ns, "web").await;
    wait_for_exact_upstreams(admin, &write, &[]).await;
    wait_for_exact_grants(admin, &write, &[unchanged]).await;
    daemon.wait_idle().await;
    let now = grant_api(admin, &write)
        .get(&taken)
        .await
        .expect("not deleted");
    assert_eq!(serde_json::to_value(&now).expect("json"), before);
    daemon.terminate(EXIT_LIMIT);
    scenario.cleanup().await;
}

/// Nothing changed between two runs: the second writes no grant (nor Upstream), even over
/// periodic resyncs.
pub async fn a_restart_with_nothing_changed_writes_no_grant(env: Arc<TestEnv>) {
    let scenario = Scenario::builder(env, "grantrestart").build().await;
    let admin = &scenario.admin;
    install_grant_crd(admin).await;
    allow_grants(&scenario).await;
    let (ns, write) = (scenario.service_ns.clone(), scenario.write_ns.clone());
    let annotations = json!({"upstream-discovery.io/route-namespaces": "edge-b,edge-a"});
    create_service(admin, &ns, &service("web", &[80, 9000], annotations)).await;
    create_service(admin, &ns, &service("db", &[5432], json!({}))).await;
    let first = scenario
        .daemon()
        .args(&["--reference-grants"])
        .ready()
        .await;
    let expected = [
        expected_grant(
            &format!("{ns}-web-80"),
            &[&ns, "edge-a", "edge-b"],
            &["HTTPRoute"],
        ),
        expected_grant(
            &format!("{ns}-web-9000"),
            &[&ns, "edge-a", "edge-b"],
            &["HTTPRoute"],
        ),
        expected_grant(&format!("{ns}-db-5432"), &[&ns], &["HTTPRoute"]),
    ];
    wait_for_exact_grants(admin, &write, &expected).await;
    first.wait_idle().await;
    assert_eq!(
        first
            .metric_sum("upstream_discovery_reference_grant_writes_total")
            .await,
        3.0,
        "one write per grant"
    );
    first.terminate(EXIT_LIMIT);

    let second = scenario
        .daemon()
        .args(&["--reference-grants", "--resync-interval", "1s"])
        .ready()
        .await;
    second.wait_idle().await;
    second.wait_resyncs(2.0).await;
    second.wait_idle().await;
    assert_eq!(
        second
            .metric_sum("upstream_discovery_reference_grants")
            .await,
        3.0
    );
    assert_eq!(
        second
            .metric_sum("upstream_discovery_reference_grant_writes_total")
            .await,
        0.0,
        "no grant written, not even tried"
    );
    assert_eq!(
        second.metric_sum("upstream_discovery_writes_total").await,
        0.0
    );
    wait_for_exact_grants(admin, &write, &expected).await;
    second.terminate(EXIT_LIMIT);
    scenario.cleanup().await;
}

/// Off (the default), the daemon writes no grant and needs no right on them: its
/// ServiceAccount has none here, and nothing is refused.
pub async fn off_by_default_writes_none_and_needs_no_rights(env: Arc<TestEnv>) {
    let scenario = Scenario::builder(env, "grantoff").build().await;
    let admin = &scenario.admin;
    install_grant_crd(admin).await;
    let (ns, write) = (scenario.service_ns.clone(), scenario.write_ns.clone());
    let annotations = json!({"upstream-discovery.io/route-namespaces": "edge"});
    create_service(admin, &ns, &service("web", &[80], annotations.clone())).await;
    let daemon = scenario.daemon().ready().await;
    wait_for_exact_upstreams(admin, &write, &[upstream(&ns, "web", 80, annotations)]).await;
    daemon.wait_idle().await;
    assert!(list_grants(admin, &write).await.is_empty());
    assert_eq!(
        daemon
            .metric_sum("upstream_discovery_reference_grant_writes_total")
            .await,
        0.0
    );
    for kind in ["forbidden", "reference_grant_crd_missing"] {
        let errors = format!("upstream_discovery_errors_total{{kind=\"{kind}\"}}");
        assert_eq!(daemon.metric_sum(&errors).await, 0.0, "{errors}");
    }
    assert_eq!(
        daemon
            .metric_sum("upstream_discovery_watch_restarts_total{resource=\"referencegrants\"}")
            .await,
        0.0
    );
    assert!(matches!(daemon.get("/readyz").await, Some((200, _))));
    let logs = daemon.logs();
    assert!(!logs.to_lowercase().contains("referencegrant"), "{logs}");
    daemon.terminate(EXIT_LIMIT);
    scenario.cleanup().await;
}

/// Without the CRD (the proxy answers 404 for the group, as a server without it does): one
/// warning line and a metric, Upstreams converge, and the grants come once it is served.
pub async fn without_the_crd_one_warning_a_metric_and_upstreams_converge(env: Arc<TestEnv>) {
    let scenario = Scenario::builder(env.clone(), "grantnocrd").build().await;
    let admin = &scenario.admin;
    install_grant_crd(admin).await;
    allow_grants(&scenario).await;
    let (ns, write) = (scenario.service_ns.clone(), scenario.write_ns.clone());
    let proxy = FaultProxy::start(&env, scenario.token()).await;
    let missing = proxy.rules.inject(Rule::new(
        "",
        &["/apis/gateway.networking.k8s.io/"],
        Fault::Status {
            code: 404,
            reason: "NotFound",
            retry_after: None,
        },
    ));
    create_service(admin, &ns, &service("web", &[80], json!({}))).await;
    let daemon = scenario
        .daemon()
        .args(&["--reference-grants"])
        .via(&proxy.url())
        .ready()
        .await;
    wait_for_exact_upstreams(admin, &write, &[upstream(&ns, "web", 80, json!({}))]).await;
    create_service(admin, &ns, &service("api", &[80], json!({}))).await;
    wait_for_exact_upstreams(
        admin,
        &write,
        &[
            upstream(&ns, "web", 80, json!({})),
            upstream(&ns, "api", 80, json!({})),
        ],
    )
    .await;
    daemon.wait_idle().await;
    assert_eq!(
        daemon
            .metric_sum("upstream_discovery_errors_total{kind=\"reference_grant_crd_missing\"}")
            .await,
        1.0
    );
    let warnings = daemon
        .logs()
        .lines()
        .filter(|line| line.contains("serves no ReferenceGrant"))
        .count();
    assert_eq!(warnings, 1, "{}", daemon.logs());
    assert!(list_grants(admin, &write).await.is_empty());
    assert!(matches!(daemon.get("/readyz").await, Some((200, _))));

    // The CRD is served now: the grants follow at the next look (every 30 s).
    proxy.rules.remove(missing);
    wait_for_exact_grants(
        admin,
        &write,
        &[
            expected_grant(&format!("{ns}-web-80"), &[&ns], &["HTTPRoute"]),
            expected_grant(&format!("{ns}-api-80"), &[&ns], &["HTTPRoute"]),
        ],
    )
    .await;
    assert_eq!(
        daemon
            .metric_sum("upstream_discovery_errors_total{kind=\"reference_grant_crd_missing\"}")
            .await,
        1.0,
        "said once"
    );
    daemon.terminate(EXIT_LIMIT);
    proxy.shutdown().await;
    scenario.cleanup().await;
}
