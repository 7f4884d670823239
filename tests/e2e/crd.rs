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
