//! Our CRD accepts what Gloo's accepts (docs/behaviour.md, issue 11): Upstreams as Gloo and its
//! users write them, `status` included, go through `kubectl apply` with strict field validation
//! and read back exactly as written.

use std::sync::Arc;

use kube::Api;
use serde_json::{json, Value};
use upstream_discovery::crd::Upstream;

use crate::support::{delete_namespace, fresh_namespace, install_crd};
use crate::test_env::TestEnv;

/// An Upstream as Gloo's discovery writes it, with the status Gloo's reporter adds.
fn discovered(namespace: &str) -> Value {
    json!({
        "apiVersion": "gloo.solo.io/v1",
        "kind": "Upstream",
        "metadata": {
            "name": "shop-petstore-8080",
            "namespace": namespace,
            "labels": {"discovered_by": "kubernetesplugin"},
        },
        "spec": {
            "discoveryMetadata": {"labels": {"app": "petstore"}},
            "kube": {"selector": {"app": "petstore"}, "serviceName": "petstore",
                     "serviceNamespace": "shop", "servicePort": 8080},
        },
        "status": {"statuses": {"gloo-system": {"state": 1, "reportedBy": "gloo"}}},
    })
}

/// An Upstream a user wrote with Gloo's other spec fields, messages and scalars, and a status
/// with more than one reporter.
fn hand_written(namespace: &str) -> Value {
    json!({
        "apiVersion": "gloo.solo.io/v1",
        "kind": "Upstream",
        "metadata": {"name": "legacy-static", "namespace": namespace},
        "spec": {
            "static": {"hosts": [{"addr": "10.0.0.1", "port": 8080}], "useTls": false},
            "sslConfig": {"sslFiles": {"tlsCert": "/c", "tlsKey": "/k", "rootCa": "/r",
                                       "ocspStaple": "/o"},
                          "sni": "legacy.example.com", "alpnProtocols": ["h2"]},
            "healthChecks": [{"timeout": "1s", "interval": "5s",
                              "httpHealthCheck": {"path": "/healthz"}}],
            "httpConnectHeaders": [{"key": "x-tenant", "value": "a"}],
            "circuitBreakers": {"maxConnections": 10},
            "connectionConfig": {"maxRequestsPerConnection": 5},
            "loadBalancerConfig": {"roundRobin": {}},
            "outlierDetection": {"consecutive5xx": 3},
            "failover": {"prioritizedLocalities": []},
            "preconnectPolicy": {"perUpstreamPreconnectRatio": 1.5},
            "namespacedStatuses": {"statuses": {"gloo-system": {"state": 1}}},
            "dnsRefreshRate": "5s",
            "respectDnsTtl": true,
            "disableIstioAutoMtls": false,
            "ignoreHealthOnHostRemoval": true,
            "overrideStreamErrorOnInvalidHttpMessage": true,
            "httpProxyHostname": "proxy.example.com:3128",
            "proxyProtocolVersion": "V2",
            "initialConnectionWindowSize": 65535,
            "initialStreamWindowSize": 65535,
            "maxConcurrentStreams": 100,
            "protocolSelection": 1,
            "useHttp2": true,
        },
        "status": {
            "statuses": {
                "gloo-system": {"state": 2, "reason": "no endpoints", "reportedBy": "gloo",
                                "messages": ["a", "b"]},
                "edge": {"state": 1, "reportedBy": "gateway",
                         "subresourceStatuses": {"x": {"state": 1}}},
            },
        },
    })
}

/// Writes `objects` as a YAML stream and `kubectl apply`s it with `extra` flags.
fn kubectl_apply(env: &TestEnv, objects: &[&Value], extra: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("upstreams.yaml");
    let text: Vec<String> = objects
        .iter()
        .map(|object| serde_saphyr::to_string(object).expect("yaml"))
        .collect();
    std::fs::write(&path, text.join("---\n")).expect("write yaml");
    let path = path.display().to_string();
    let mut args = vec!["apply", "--validate=strict", "-f", &path];
    args.extend_from_slice(extra);
    env.kubectl(&args)
}

/// What kubectl reads back, without the fields the API server adds to metadata.
fn read_back(env: &TestEnv, namespace: &str, name: &str) -> Value {
    let text = env.kubectl(&["get", "upstreams", "-n", namespace, name, "-o", "json"]);
    let mut object: Value = serde_json::from_str(&text).expect("kubectl prints JSON");
    let metadata = object["metadata"].as_object_mut().expect("metadata");
    metadata.retain(|key, _| ["name", "namespace", "labels"].contains(&key.as_str()));
    object
}

pub async fn gloo_objects_with_status_apply_strictly_and_read_back_unchanged(env: Arc<TestEnv>) {
    let client = env.admin_client().await;
    install_crd(&client).await;
    let namespace = fresh_namespace(&client, "crd-gloo").await;
    let discovered = discovered(&namespace);
    let hand_written = hand_written(&namespace);

    // Client-side apply with strict validation: kubectl checks every field against the
    // schema the API server publishes, so an unknown `status` or spec field is refused.
    kubectl_apply(&env, &[&discovered, &hand_written], &[]);
    assert_eq!(
        read_back(&env, &namespace, "shop-petstore-8080"),
        discovered
    );
    assert_eq!(read_back(&env, &namespace, "legacy-static"), hand_written);

    // Gloo's reporter replaces the status with the whole object: stored as written.
    let mut reported = discovered.clone();
    reported["status"]["statuses"]["gloo-system"] =
        json!({"state": 2, "reason": "1 error occurred", "reportedBy": "gloo"});
    kubectl_apply(&env, &[&reported], &[]);
    assert_eq!(read_back(&env, &namespace, "shop-petstore-8080"), reported);

    // Server-side apply, strict too, as `kubectl apply --server-side` users do.
    let mut again = hand_written.clone();
    again["status"]["statuses"]["edge"]["state"] = json!(3);
    kubectl_apply(
        &env,
        &[&again],
        &[
            "--server-side",
            "--force-conflicts",
            "--field-manager",
            "gloo",
        ],
    );
    assert_eq!(read_back(&env, &namespace, "legacy-static"), again);

    // Our types keep the status whole too.
    let typed = Api::<Upstream>::namespaced(client.clone(), &namespace)
        .get("legacy-static")
        .await
        .expect("get");
    assert_eq!(
        serde_json::to_value(&typed.status).expect("status"),
        again["status"]
    );
    assert_eq!(
        serde_json::to_value(&typed.spec).expect("spec"),
        again["spec"]
    );

    // The schema stays usable for server-side apply: a field manager owns exactly the leaves it
    // applied. (A schema the API server cannot convert, e.g. with an int-or-string field on
    // Kubernetes 1.20, makes it fall back to a deduced one, which records `.` for every map.)
    let applied = json!({
        "apiVersion": "gloo.solo.io/v1", "kind": "Upstream",
        "metadata": {"name": "applied", "namespace": namespace},
        "spec": {"aws": {"lambdaFunctions": [
            {"lambdaFunctionName": "f", "qualifier": "$LATEST", "logicalName": "f"}]}},
    });
    kubectl_apply(
        &env,
        &[&applied],
        &["--server-side", "--field-manager", "schema-check"],
    );
    let text = env.kubectl(&[
        "get",
        "upstreams",
        "-n",
        &namespace,
        "applied",
        "-o",
        "json",
        "--show-managed-fields",
    ]);
    let object: Value = serde_json::from_str(&text).expect("kubectl prints JSON");
    let fields: Vec<&Value> = object["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields")
        .iter()
        .filter(|entry| entry["manager"] == "schema-check")
        .map(|entry| &entry["fieldsV1"])
        .collect();
    assert_eq!(
        fields,
        [&json!({"f:spec": {"f:aws": {"f:lambdaFunctions": {}}}})],
        "the API server uses the CRD's schema for server-side apply"
    );
    delete_namespace(&client, &namespace).await;
}

/// Gloo's CRD defaults `status` and `status.statuses` to `{}`; ours does too (DESIGN.md §2,
/// issue 25), so an Upstream reads back the same under either. A status Gloo's reporter writes
/// is stored as written, and the daemon neither owns nor rewrites the defaulted one.
pub async fn an_upstream_created_without_status_reads_back_gloo_s_default_status(
    env: Arc<TestEnv>,
) {
    let scenario = crate::scenario::Scenario::builder(env.clone(), "crd-default")
        .build()
        .await;
    let (admin, write) = (&scenario.admin, scenario.write_ns.clone());

    // A user's Upstream, created without status, with kubectl and with the API.
    let bare = json!({
        "apiVersion": "gloo.solo.io/v1", "kind": "Upstream",
        "metadata": {"name": "bare", "namespace": write},
        "spec": {"static": {"hosts": [{"addr": "10.0.0.1", "port": 80}]}},
    });
    kubectl_apply(&env, &[&bare], &[]);
    let mut expected = bare.clone();
    expected["status"] = json!({"statuses": {}});
    assert_eq!(read_back(&env, &write, "bare"), expected);
    let typed = Upstream::new("typed", Default::default());
    let created = Api::<Upstream>::namespaced(admin.clone(), &write)
        .create(&Default::default(), &typed)
        .await
        .expect("create");
    assert_eq!(
        serde_json::to_value(&created.status).expect("status"),
        json!({"statuses": {}})
    );
    // `status: {}` gets its `statuses`; a Gloo-written status is left exactly as written.
    let mut empty = bare.clone();
    empty["metadata"]["name"] = json!("empty-status");
    empty["status"] = json!({});
    let mut reported = bare.clone();
    reported["metadata"]["name"] = json!("reported");
    reported["status"] =
        json!({"statuses": {"gloo-system": {"state": 1, "reportedBy": "gloo"}}, "extra": 1});
    kubectl_apply(&env, &[&empty, &reported], &[]);
    let mut defaulted = empty.clone();
    defaulted["status"] = json!({"statuses": {}});
    assert_eq!(read_back(&env, &write, "empty-status"), defaulted);
    assert_eq!(read_back(&env, &write, "reported"), reported);

    // What the daemon discovers reads back with the default, which no entry of the daemon's
    // field manager claims; once idle it writes nothing more over it.
    let daemon = scenario.daemon().ready().await;
    let service: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
    }))
    .expect("service");
    Api::<k8s_openapi::api::core::v1::Service>::namespaced(admin.clone(), &scenario.service_ns)
        .create(&Default::default(), &service)
        .await
        .expect("create service");
    let name = format!("{}-web-80", scenario.service_ns);
    let discovered = crate::support::wait_for("the discovered Upstream", || async {
        crate::support::upstream_api(admin, &write)
            .get(&name)
            .await
            .ok()
    })
    .await;
    assert_eq!(discovered.data["status"], json!({"statuses": {}}));
    daemon.wait_idle().await;
    assert_eq!(
        daemon.writes().await,
        1.0,
        "one create, nothing over the status"
    );

    // Gloo's reporter writes a status; then the Service changes, so the daemon updates the
    // Upstream by server-side apply: the status stays Gloo's, and no Apply entry claims it.
    let upstreams = crate::support::upstream_api(admin, &write);
    let status = json!({"statuses": {write.clone(): {"state": 1, "reportedBy": "gloo"}}});
    upstreams
        .patch(
            &name,
            &kube::api::PatchParams {
                field_manager: Some("gloo".into()),
                ..Default::default()
            },
            &kube::api::Patch::Merge(json!({"status": status})),
        )
        .await
        .expect("gloo writes its status");
    Api::<k8s_openapi::api::core::v1::Service>::namespaced(admin.clone(), &scenario.service_ns)
        .patch(
            "web",
            &Default::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"labels": {"tier": "front"}}})),
        )
        .await
        .expect("label the service");
    let updated = crate::support::wait_for("the daemon's update", || async {
        let upstream = upstreams.get(&name).await.ok()?;
        let labels = &upstream.data["spec"]["discoveryMetadata"]["labels"];
        (labels["tier"] == "front").then_some(upstream)
    })
    .await;
    assert_eq!(
        updated.data["status"], status,
        "the daemon leaves Gloo's status"
    );
    let applied: Vec<Value> = updated
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| entry.operation.as_deref() == Some("Apply"))
        .map(|entry| serde_json::to_value(&entry.fields_v1).expect("fields"))
        .collect();
    assert!(!applied.is_empty(), "the update was applied");
    for fields in applied {
        assert_eq!(
            fields.get("f:status"),
            None,
            "apply owns no status: {fields}"
        );
    }
    daemon.terminate(std::time::Duration::from_secs(5));
    scenario.cleanup().await;
}
