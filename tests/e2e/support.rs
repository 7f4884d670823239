//! Helpers shared by the end-to-end tests: unique namespaces and waiting with a deadline.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Secret, Service, ServiceAccount};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams,
};
use kube::{Api, Client};
use upstream_discovery::crd::Upstream;

// The comparison of found and expected Upstreams, shared with the conformance corpus's runners.
#[path = "../conformance/compare.rs"]
pub mod compare;

/// Generous: CI machines are slow and shared.
pub const DEADLINE: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(250);

/// A fresh namespace per test, so tests run side by side against one API server.
pub async fn fresh_namespace(client: &Client, purpose: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "e2e-{purpose}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
    name
}

/// A namespace with a fixed name (the conformance cases name theirs): created; or, when an
/// earlier run left it, emptied of its Services and Upstreams (waited for when it is being
/// deleted, then created again).
pub async fn fixed_namespace(client: &Client, name: &str) {
    let namespaces = Api::<Namespace>::all(client.clone());
    wait_for(
        &format!("namespace {name} to be deleted or usable"),
        || async {
            match namespaces.get_opt(name).await {
                Ok(Some(namespace)) => namespace
                    .metadata
                    .deletion_timestamp
                    .is_none()
                    .then_some(true),
                Ok(None) => Some(false),
                Err(_) => None,
            }
        },
    )
    .await;
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("namespace");
    match namespaces.create(&PostParams::default(), &namespace).await {
        Ok(_) => return,
        Err(kube::Error::Api(response)) if response.code == 409 => {}
        Err(error) => panic!("create namespace {name}: {error}"),
    }
    let services = Api::<Service>::namespaced(client.clone(), name);
    for service in services
        .list(&ListParams::default())
        .await
        .expect("list services")
        .items
    {
        let service_name = service.metadata.name.unwrap_or_default();
        let _ = services
            .delete(&service_name, &DeleteParams::default())
            .await;
    }
    let upstreams = upstream_api(client, name);
    let _ = upstreams
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await;
    wait_for(
        &format!("namespace {name} to hold no Services or Upstreams"),
        || async {
            let services_left = services
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .len();
            let upstreams_left = upstreams
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .len();
            (services_left + upstreams_left == 0).then_some(())
        },
    )
    .await;
}

/// Deletes a namespace at the end of a test (the controller manager finishes the job).
pub async fn delete_namespace(client: &Client, name: &str) {
    let _ = Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

/// Polls `check` until it returns `Some`, or panics after [`DEADLINE`] saying what was awaited.
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    wait_until(what, || {
        let attempt = check();
        async move { attempt.await.ok_or_else(String::new) }
    })
    .await
}

/// Like [`wait_for`], with `check` saying why it is not there yet; the last reason is in the
/// panic message.
pub async fn wait_until<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    wait_until_within(DEADLINE, what, check).await
}

/// [`wait_until`] with another deadline (a test whose point is that something happens at once).
pub async fn wait_until_within<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        let reason = match check().await {
            Ok(value) => return value,
            Err(reason) => reason,
        };
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}\n{reason}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Installs (or updates) the Upstream CRD and waits until it is served. Idempotent, so tests
/// running side by side may all call it.
pub async fn install_crd(client: &Client) {
    apply_crd(client, &upstream_discovery::crd::definition()).await;
}

/// Server-side applies `definition` and waits until it is established. Idempotent.
pub async fn apply_crd(
    client: &Client,
    definition: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Patch, PatchParams};

    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let name = definition.metadata.name.clone().expect("crd name");
    crds.patch(
        &name,
        &PatchParams::apply("e2e-tests").force(),
        &Patch::Apply(definition),
    )
    .await
    .unwrap_or_else(|error| panic!("apply the CRD {name}: {error}"));
    wait_for(&format!("the CRD {name} to be established"), || async {
        let crd = crds.get(&name).await.ok()?;
        let established = crd
            .status?
            .conditions?
            .into_iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        established.then_some(())
    })
    .await;
}

/// A plain HTTP/1.1 GET to a local server: `(status, body)`, or `None` when nothing answers.
pub async fn http_get(host_port: &str, path: &str) -> Option<(u16, String)> {
    http_get_with(host_port, path, "").await
}

/// [`http_get`] with extra header lines (each ending in `\r\n`).
pub async fn http_get_with(host_port: &str, path: &str, headers: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(host_port).await.ok()?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {host_port}\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// The legacy token Secret Kubernetes 1.20 mints for a ServiceAccount.
pub async fn service_account_token(admin: &Client, namespace: &str, account: &str) -> String {
    let accounts = Api::<ServiceAccount>::namespaced(admin.clone(), namespace);
    let secret_name = wait_for("the ServiceAccount's token Secret", || async {
        let account = accounts.get(account).await.ok()?;
        account
            .secrets?
            .into_iter()
            .find_map(|reference| reference.name)
    })
    .await;
    let secret = Api::<Secret>::namespaced(admin.clone(), namespace)
        .get(&secret_name)
        .await
        .expect("token secret");
    let token = secret
        .data
        .and_then(|mut data| data.remove("token"))
        .expect("token in the secret");
    String::from_utf8(token.0).expect("utf-8 token")
}

/// The comparable part of an Upstream: what discovery decides.
pub fn essence(upstream: &Upstream) -> serde_json::Value {
    serde_json::json!({
        "labels": upstream.metadata.labels,
        "annotations": upstream.metadata.annotations,
        "ownerReferences": upstream.metadata.owner_references,
        "spec": upstream.spec,
    })
}

/// Creates a Service `name` with one port `http` 80, labelled and selecting `app: name`: the
/// Service [`kube_upstream`] describes the Upstream of.
pub async fn create_plain_service(admin: &Client, namespace: &str, name: &str) {
    let service: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80}]},
    }))
    .expect("service");
    Api::<k8s_openapi::api::core::v1::Service>::namespaced(admin.clone(), namespace)
        .create(&kube::api::PostParams::default(), &service)
        .await
        .expect("create service");
}

/// The Upstream docs/behaviour.md says discovery writes (to another namespace than the Service's)
/// for port `port` of a Service `service_ns/service` labelled `app: <service>` with the selector
/// `app: <service>` and no annotations, written out by hand; adjust it with [`with`]. Only for
/// names that need no sanitizing.
pub fn kube_upstream(service_ns: &str, service: &str, port: u16) -> serde_json::Value {
    let name = format!("{service_ns}-{service}-{port}");
    assert!(
        name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
        "{name} would be sanitized: write its expectation out in full"
    );
    serde_json::json!({
        "metadata": {
            "name": name,
            "labels": {"discovered_by": "kubernetesplugin"},
            "ownerReferences": null,
        },
        "spec": {
            "discoveryMetadata": {"labels": {"app": service}},
            "kube": {
                "serviceName": service,
                "serviceNamespace": service_ns,
                "servicePort": port,
                "selector": {"app": service},
            },
        },
    })
}

/// `value` with `new` at the JSON `pointer` (objects on the way created as needed).
pub fn with(
    mut value: serde_json::Value,
    pointer: &str,
    new: serde_json::Value,
) -> serde_json::Value {
    let (parent, last) = pointer.rsplit_once('/').expect("a pointer below the root");
    let mut at = &mut value;
    for part in parent.split('/').skip(1) {
        at = at
            .as_object_mut()
            .expect("an object on the way")
            .entry(part.replace("~1", "/").replace("~0", "~"))
            .or_insert_with(|| serde_json::json!({}));
    }
    at.as_object_mut()
        .expect("an object at the pointer's parent")
        .insert(last.replace("~1", "/").replace("~0", "~"), new);
    value
}

/// `value` without the member at the JSON `pointer`.
pub fn without(mut value: serde_json::Value, pointer: &str) -> serde_json::Value {
    let (parent, last) = pointer.rsplit_once('/').expect("a pointer below the root");
    if let Some(object) = value.pointer_mut(parent).and_then(|p| p.as_object_mut()) {
        object.remove(&last.replace("~1", "/").replace("~0", "~"));
    }
    value
}

/// The Upstream API, untyped: whole objects, `status` included.
pub fn upstream_api(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gloo.solo.io", "v1", "Upstream"),
        "upstreams",
    );
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// The Upstreams of `namespace` (those matching `labels`, when given) as JSON objects.
pub async fn list_upstreams(
    client: &Client,
    namespace: &str,
    labels: Option<&str>,
) -> Result<Vec<serde_json::Value>, String> {
    let mut params = ListParams::default();
    if let Some(labels) = labels {
        params = params.labels(labels);
    }
    let list = upstream_api(client, namespace)
        .list(&params)
        .await
        .map_err(|e| e.to_string())?;
    list.items
        .into_iter()
        .map(|item| serde_json::to_value(item).map_err(|e| e.to_string()))
        .collect()
}

/// Compares the owned Upstreams in `write_ns` with `expected` (hand-written, see
/// [`kube_upstream`] and `tests/conformance/compare.rs`): the Upstreams when they match, else
/// the differences.
pub async fn upstreams_match(
    admin: &Client,
    write_ns: &str,
    expected: &[serde_json::Value],
) -> Result<Vec<Upstream>, String> {
    let owned = list_upstreams(admin, write_ns, Some("discovered_by=kubernetesplugin")).await?;
    compare::compare_upstreams(&owned, expected)?;
    owned
        .into_iter()
        .map(|object| serde_json::from_value(object).map_err(|e| e.to_string()))
        .collect()
}

/// Waits until the owned Upstreams in `write_ns` are exactly `expected`; returns them by name.
pub async fn wait_for_exact_upstreams(
    admin: &Client,
    write_ns: &str,
    expected: &[serde_json::Value],
) -> BTreeMap<String, Upstream> {
    let names: Vec<&str> = expected
        .iter()
        .filter_map(|u| {
            u.pointer("/metadata/name")
                .and_then(serde_json::Value::as_str)
        })
        .collect();
    let what = format!("exactly the Upstreams {names:?} in {write_ns}");
    let found = wait_until(&what, || upstreams_match(admin, write_ns, expected)).await;
    found
        .into_iter()
        .map(|u| (u.metadata.name.clone().unwrap_or_default(), u))
        .collect()
}

/// The reasons of the Events recorded about the object `kind` `namespace`/`name`.
pub async fn event_reasons(
    admin: &Client,
    namespace: &str,
    kind: &str,
    name: &str,
) -> Result<Vec<String>, String> {
    let list = Api::<k8s_openapi::api::core::v1::Event>::namespaced(admin.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(list
        .items
        .into_iter()
        .filter(|event| {
            event.involved_object.kind.as_deref() == Some(kind)
                && event.involved_object.name.as_deref() == Some(name)
        })
        .filter_map(|event| event.reason)
        .collect())
}

/// Waits for an Event with `reason` about the object `kind` `namespace`/`name`.
pub async fn wait_for_event(
    admin: &Client,
    namespace: &str,
    kind: &str,
    name: &str,
    reason: &str,
) -> k8s_openapi::api::core::v1::Event {
    let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(admin.clone(), namespace);
    wait_for(&format!("a {reason} Event on {kind} {name}"), || async {
        let list = events.list(&kube::api::ListParams::default()).await.ok()?;
        list.items.into_iter().find(|event| {
            event.involved_object.kind.as_deref() == Some(kind)
                && event.involved_object.name.as_deref() == Some(name)
                && event.reason.as_deref() == Some(reason)
        })
    })
    .await
}
