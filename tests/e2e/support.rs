//! Helpers shared by the end-to-end tests: unique namespaces and waiting with a deadline.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Secret, Service, ServiceAccount};
use kube::api::ListParams;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use upstream_discovery::crd::Upstream;
use upstream_discovery::translate::{translate_service, TranslateSettings};

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
pub async fn wait_until<T, F, Fut>(what: &str, mut check: F) -> T
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
            started.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}\n{reason}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Installs (or updates) the Upstream CRD and waits until it is served. Idempotent, so tests
/// running side by side may all call it.
pub async fn install_crd(client: &Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Patch, PatchParams};

    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let definition = upstream_discovery::crd::definition();
    let name = definition.metadata.name.clone().expect("crd name");
    crds.patch(
        &name,
        &PatchParams::apply("e2e-tests").force(),
        &Patch::Apply(&definition),
    )
    .await
    .expect("apply the CRD");
    wait_for("the Upstream CRD to be established", || async {
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

/// Compares the owned Upstreams in `write_ns` with what translation gives for the named
/// Services as they are now in the API server: the Upstreams when equal, else the difference.
pub async fn upstreams_match(
    admin: &Client,
    settings: &TranslateSettings,
    service_ns: &str,
    write_ns: &str,
    services: &[&str],
) -> Result<Vec<Upstream>, String> {
    let service_api = Api::<Service>::namespaced(admin.clone(), service_ns);
    let mut expected = BTreeMap::new();
    for name in services {
        let service = service_api.get(name).await.map_err(|e| e.to_string())?;
        for upstream in translate_service(&service, settings).upstreams {
            expected.insert(
                upstream.metadata.name.clone().unwrap_or_default(),
                essence(&upstream),
            );
        }
    }
    let owned = Api::<Upstream>::namespaced(admin.clone(), write_ns)
        .list(&ListParams::default().labels("discovered_by=kubernetesplugin"))
        .await
        .map_err(|e| e.to_string())?;
    let actual: BTreeMap<String, serde_json::Value> = owned
        .items
        .iter()
        .map(|u| (u.metadata.name.clone().unwrap_or_default(), essence(u)))
        .collect();
    if actual == expected {
        Ok(owned.items)
    } else {
        Err(format!(
            "expected {}\nactual {}",
            serde_json::json!(expected),
            serde_json::json!(actual)
        ))
    }
}

/// Waits until the owned Upstreams in `write_ns` are exactly those of `services`; returns them
/// by name.
pub async fn wait_for_exact_upstreams(
    admin: &Client,
    settings: &TranslateSettings,
    service_ns: &str,
    write_ns: &str,
    services: &[&str],
) -> BTreeMap<String, Upstream> {
    let what = format!("exactly the Upstreams of {services:?} in {write_ns}");
    let found = wait_until(&what, || {
        upstreams_match(admin, settings, service_ns, write_ns, services)
    })
    .await;
    found
        .into_iter()
        .map(|u| (u.metadata.name.clone().unwrap_or_default(), u))
        .collect()
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
