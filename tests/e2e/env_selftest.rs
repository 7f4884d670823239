//! Proof that the test environment is real: TLS and token auth, RBAC, our CRD served with its
//! schema, garbage collection by the controller manager, and moto answering Lambda calls.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::Api;
use serde_json::json;
use upstream_discovery::crd::Upstream;

use crate::support::{
    delete_namespace, fresh_namespace, install_crd, service_account_token, wait_for,
};
use crate::test_env::TestEnv;

fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

fn upstream(namespace: &str, name: &str, spec: serde_json::Value) -> Upstream {
    serde_json::from_value(json!({
        "apiVersion": "gloo.solo.io/v1",
        "kind": "Upstream",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }))
    .expect("an Upstream")
}

pub async fn api_server_is_v1_20_2_with_tls(env: Arc<TestEnv>) {
    assert!(env.get("KUBE_SERVER").starts_with("https://127.0.0.1:"));
    let version = env
        .admin_client()
        .await
        .apiserver_version()
        .await
        .expect("version");
    assert_eq!(version.git_version, "v1.20.2");
}

pub async fn crd_applies_and_an_upstream_round_trips_through_kubectl(env: Arc<TestEnv>) {
    let client = env.admin_client().await;
    install_crd(&client).await;
    let namespace = fresh_namespace(&client, "crd").await;
    let written = upstream(
        &namespace,
        "shop-petstore-8080",
        json!({
            "discoveryMetadata": {"labels": {"app": "petstore"}},
            "kube": {"serviceName": "petstore", "serviceNamespace": "shop", "servicePort": 8080,
                     "selector": {"app": "petstore"},
                     "subsetSpec": {"selectors": [{"keys": ["version"]}]}},
            "useHttp2": true,
            "sslConfig": {"secretRef": {"name": "tls", "namespace": "shop"}, "sni": "petstore.shop"},
            "healthChecks": [{"timeout": "1s", "interval": "5s", "httpHealthCheck": {"path": "/healthz"}}],
            "circuitBreakers": {"maxConnections": 10},
        }),
    );
    Api::<Upstream>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &written)
        .await
        .expect("create through kube");

    let yaml = env.kubectl(&[
        "get",
        "upstreams",
        "-n",
        &namespace,
        "shop-petstore-8080",
        "-o",
        "yaml",
    ]);
    let read: Upstream = serde_saphyr::from_str(&yaml).expect("kubectl prints an Upstream");
    assert_eq!(
        read.spec, written.spec,
        "every field, typed or not, survives the API server"
    );

    for short_name in ["us", "gus"] {
        let table = env.kubectl(&["get", short_name, "-n", &namespace]);
        let columns = table_columns(&table);
        let names: Vec<&str> = columns.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            ["NAME", "TYPE", "SERVICE", "PORT", "LAMBDA-REGION", "AGE"],
            "{table}"
        );
        let cell = |column: &str| {
            columns
                .iter()
                .find(|(name, _)| name == column)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(cell("NAME"), Some("shop-petstore-8080"), "{table}");
        assert_eq!(cell("TYPE"), Some(""), "no discovered_by label: {table}");
        assert_eq!(cell("SERVICE"), Some("petstore"), "{table}");
        assert_eq!(cell("PORT"), Some("8080"), "{table}");
    }
    delete_namespace(&client, &namespace).await;
}

pub async fn rendered_upstreams_are_accepted_by_the_api_server(env: Arc<TestEnv>) {
    let client = env.admin_client().await;
    install_crd(&client).await;
    let namespace = fresh_namespace(&client, "render").await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_upstream-discovery"))
        .args([
            "render",
            "-f",
            concat!(env!("CARGO_MANIFEST_DIR"), "/examples/services.yaml"),
        ])
        .args(["--write-namespace", &namespace])
        .output()
        .expect("render runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rendered: Vec<Upstream> =
        serde_saphyr::from_multiple(&String::from_utf8_lossy(&output.stdout)).expect("Upstreams");
    assert_eq!(rendered.len(), 11);
    let api = Api::<Upstream>::namespaced(client.clone(), &namespace);
    for upstream in &rendered {
        let name = upstream.metadata.name.clone().unwrap_or_default();
        let stored = api
            .create(&PostParams::default(), upstream)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            stored.spec, upstream.spec,
            "{name}: the API server pruned or changed nothing"
        );
        assert_eq!(stored.metadata.labels, upstream.metadata.labels, "{name}");
        assert_eq!(
            stored.metadata.annotations, upstream.metadata.annotations,
            "{name}"
        );
    }
    delete_namespace(&client, &namespace).await;
}

pub async fn controller_manager_collects_dependents_of_a_deleted_owner(env: Arc<TestEnv>) {
    let client = env.admin_client().await;
    install_crd(&client).await;
    let namespace = fresh_namespace(&client, "gc").await;
    let services = Api::<Service>::namespaced(client.clone(), &namespace);
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "petstore"},
        "spec": {"ports": [{"port": 8080}], "selector": {"app": "petstore"}},
    }))
    .expect("service");
    let service = services
        .create(&PostParams::default(), &service)
        .await
        .expect("create service");
    let uid = service.metadata.uid.clone().expect("uid");

    let mut dependent = upstream(
        &namespace,
        "petstore-8080",
        json!({"kube": {"serviceName": "petstore"}}),
    );
    dependent.metadata.owner_references = Some(vec![serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "name": "petstore", "uid": uid,
    }))
    .expect("owner reference")]);
    let upstreams = Api::<Upstream>::namespaced(client.clone(), &namespace);
    upstreams
        .create(&PostParams::default(), &dependent)
        .await
        .expect("create dependent");
    let unowned = upstream(&namespace, "unowned", json!({}));
    upstreams
        .create(&PostParams::default(), &unowned)
        .await
        .expect("create unowned");

    services
        .delete("petstore", &DeleteParams::default())
        .await
        .expect("delete owner");
    wait_for(
        "the garbage collector to delete the dependent Upstream",
        || async {
            match upstreams.get_opt("petstore-8080").await {
                Ok(None) => Some(()),
                _ => None,
            }
        },
    )
    .await;
    assert!(
        upstreams.get_opt("unowned").await.expect("get").is_some(),
        "objects without owners stay"
    );
    delete_namespace(&client, &namespace).await;
}

pub async fn a_token_without_rights_is_refused_with_403(env: Arc<TestEnv>) {
    let limited = env.client_with_token(env.get("KUBE_LIMITED_TOKEN")).await;
    let error = Api::<Service>::namespaced(limited.clone(), "default")
        .list(&ListParams::default())
        .await
        .expect_err("the limited user has no rights");
    assert_eq!(status_code(&error), Some(403), "{error}");

    let stranger = env.client_with_token("not-a-token").await;
    let error = Api::<Service>::namespaced(stranger, "default")
        .list(&ListParams::default())
        .await
        .expect_err("unknown token");
    assert_eq!(status_code(&error), Some(401), "{error}");
}

pub async fn a_service_account_has_only_the_rights_it_is_bound_to(env: Arc<TestEnv>) {
    let admin = env.admin_client().await;
    install_crd(&admin).await;
    let namespace = fresh_namespace(&admin, "rbac").await;
    let other = fresh_namespace(&admin, "rbac-other").await;
    let accounts = Api::<ServiceAccount>::namespaced(admin.clone(), &namespace);
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "discovery"}})).expect("sa");
    accounts
        .create(&PostParams::default(), &account)
        .await
        .expect("create service account");
    let token = service_account_token(&admin, &namespace, "discovery").await;
    let as_account = env.client_with_token(&token).await;

    let upstreams = Api::<Upstream>::namespaced(as_account.clone(), &namespace);
    let error = upstreams
        .list(&ListParams::default())
        .await
        .expect_err("no binding yet");
    assert_eq!(status_code(&error), Some(403), "{error}");

    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "upstream-writer"},
        "rules": [{"apiGroups": ["gloo.solo.io"], "resources": ["upstreams"], "verbs": ["get", "list", "create"]}],
    }))
    .expect("role");
    Api::<Role>::namespaced(admin.clone(), &namespace)
        .create(&PostParams::default(), &role)
        .await
        .expect("role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "upstream-writer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "upstream-writer"},
        "subjects": [{"kind": "ServiceAccount", "name": "discovery", "namespace": namespace}],
    }))
    .expect("binding");
    Api::<RoleBinding>::namespaced(admin.clone(), &namespace)
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding");

    wait_for("the RoleBinding to take effect", || async {
        upstreams.list(&ListParams::default()).await.ok()
    })
    .await;
    upstreams
        .create(
            &PostParams::default(),
            &upstream(&namespace, "allowed", json!({})),
        )
        .await
        .expect("bound: may create in its namespace");
    let elsewhere = Api::<Upstream>::namespaced(as_account, &other);
    let error = elsewhere
        .create(
            &PostParams::default(),
            &upstream(&other, "denied", json!({})),
        )
        .await
        .expect_err("not bound in the other namespace");
    assert_eq!(status_code(&error), Some(403), "{error}");
    delete_namespace(&admin, &namespace).await;
    delete_namespace(&admin, &other).await;
}

pub async fn moto_serves_lambda(env: Arc<TestEnv>) {
    let url = env
        .get("MOTO_URL")
        .trim_start_matches("http://")
        .to_string();
    let (status, body) = crate::support::http_get_with(
        &url,
        "/2015-03-31/functions/",
        "Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/lambda/aws4_request\r\n",
    )
    .await
    .expect("moto answers");
    assert_eq!(status, 200, "{body}");
    let functions: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert!(functions["Functions"].is_array(), "{body}");
}

/// The header names of a `kubectl get` table with the first row's cells, cut at the header's
/// column offsets (cells may be empty).
fn table_columns(table: &str) -> Vec<(String, String)> {
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    let row = lines.next().unwrap_or_default();
    let starts: Vec<usize> = header
        .char_indices()
        .filter(|&(i, c)| c != ' ' && (i == 0 || header.as_bytes()[i - 1] == b' '))
        .map(|(i, _)| i)
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(index, &start)| {
            let end = starts.get(index + 1).copied().unwrap_or(usize::MAX);
            let cut = |line: &str| {
                line.get(start..end.min(line.len()))
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            };
            (cut(header), cut(row))
        })
        .collect()
}
