//! A validating admission webhook of the tests' own: HTTPS on `127.0.0.1:<free port>` with a
//! CA made for it by `openssl`, registered with a `ValidatingWebhookConfiguration` that judges
//! Upstreams in one namespace only (a label of that namespace selects it), so tests running side
//! by side never judge each other's writes. It allows, refuses by rule, or hangs past its
//! timeout; "down" is the configuration pointed at a port where nothing listens.

use std::convert::Infallible;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::proxy_server::{full, ProxyBody};
use crate::support::{kube_upstream, upstream_api, wait_until};

/// The label of a namespace whose Upstreams a test's webhook judges (its value: the namespace).
const NAMESPACE_LABEL: &str = "e2e.upstream-discovery.io/admission";
/// The name of the probe object the webhook always refuses to create (see [`Webhook::register`]).
const PROBE: &str = "admission-probe";
/// How long the API server waits for the webhook; a hanging one is cut off after it.
pub const TIMEOUT_SECONDS: i32 = 1;

/// One refusal rule: requests of `operation` (CREATE, UPDATE, DELETE) on the object `name`.
#[derive(Debug, Clone)]
pub struct Rule {
    pub operation: &'static str,
    pub name: String,
    pub message: String,
}

#[derive(Debug, Clone)]
pub enum Mode {
    Allow,
    /// Refuses what a rule matches (403 with the rule's message), allows the rest.
    Deny(Vec<Rule>),
    /// Answers nothing before the API server's timeout.
    Hang,
}

/// One AdmissionReview the webhook answered (probes left out).
#[derive(Debug, Clone)]
pub struct Review {
    pub operation: String,
    pub name: String,
    pub allowed: bool,
}

#[derive(Debug)]
struct Shared {
    mode: Mode,
    reviews: Vec<Review>,
}

pub struct Webhook {
    /// The webhook's name, as the API server quotes it.
    pub name: String,
    port: u16,
    ca_pem: Vec<u8>,
    shared: Arc<Mutex<Shared>>,
    stop: CancellationToken,
    registered: Option<(Client, String)>,
    _dir: tempfile::TempDir,
}

impl Webhook {
    /// Starts the webhook (allowing everything) with a CA and a certificate for 127.0.0.1.
    pub async fn start(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        make_certificates(dir.path());
        let read = |file: &str| std::fs::read(dir.path().join(file)).expect("a PEM file");
        let (ca_pem, cert_pem, key_pem) = (read("ca.crt"), read("tls.crt"), read("tls.key"));
        let acceptor = tls_acceptor(&cert_pem, &key_pem);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the webhook");
        let port = listener.local_addr().expect("webhook address").port();
        let shared = Arc::new(Mutex::new(Shared {
            mode: Mode::Allow,
            reviews: Vec::new(),
        }));
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, acceptor, shared.clone(), stop.clone()));
        Self {
            name: name.to_string(),
            port,
            ca_pem,
            shared,
            stop,
            registered: None,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/validate", self.port)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set(&self, mode: Mode) {
        self.lock().mode = mode;
    }

    pub fn reviews(&self) -> Vec<Review> {
        self.lock().reviews.clone()
    }

    /// How many `operation`s on `name` it refused.
    pub fn refused(&self, operation: &str, name: &str) -> usize {
        self.reviews()
            .iter()
            .filter(|r| !r.allowed && r.operation == operation && r.name == name)
            .count()
    }

    /// Registers the webhook (`failurePolicy: Fail`) for the Upstreams of `namespace` and waits
    /// until the API server calls it: a dry-run create of the probe object is refused.
    pub async fn register(&mut self, admin: &Client, namespace: &str) {
        Api::<Namespace>::all(admin.clone())
            .patch(
                namespace,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {NAMESPACE_LABEL: namespace}}})),
            )
            .await
            .expect("label the namespace");
        let config_name = format!("e2e-{namespace}");
        let config: ValidatingWebhookConfiguration = serde_json::from_value(json!({
            "metadata": {"name": config_name},
            "webhooks": [{
                "name": self.name,
                "clientConfig": {"url": self.url()},
                "rules": [{
                    "apiGroups": ["gloo.solo.io"],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE", "UPDATE", "DELETE"],
                    "resources": ["upstreams"],
                    "scope": "Namespaced",
                }],
                "namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: namespace}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": TIMEOUT_SECONDS,
            }],
        }))
        .expect("a webhook configuration");
        let mut config = config;
        for webhook in config.webhooks.iter_mut().flatten() {
            webhook.client_config.ca_bundle = Some(ByteString(self.ca_pem.clone()));
        }
        Api::<ValidatingWebhookConfiguration>::all(admin.clone())
            .create(&PostParams::default(), &config)
            .await
            .expect("register the webhook");
        self.registered = Some((admin.clone(), config_name));
        let probe: DynamicObject = serde_json::from_value({
            let mut probe = kube_upstream(namespace, "probe", 80);
            probe["apiVersion"] = json!("gloo.solo.io/v1");
            probe["kind"] = json!("Upstream");
            probe["metadata"] = json!({"name": PROBE});
            probe
        })
        .expect("a probe Upstream");
        let upstreams = upstream_api(admin, namespace);
        let dry_run = PostParams {
            dry_run: true,
            ..Default::default()
        };
        wait_until("the API server to call the webhook", || async {
            match upstreams.create(&dry_run, &probe).await {
                Err(error) if error.to_string().contains(PROBE) => Ok(()),
                other => Err(format!("the probe: {other:?}")),
            }
        })
        .await;
    }

    /// Points the registration at `url` (a port where nothing listens makes the webhook down;
    /// [`Webhook::url`] brings it back).
    pub async fn point_at(&self, url: &str) {
        let (admin, config_name) = self.registered.as_ref().expect("registered");
        let configs = Api::<ValidatingWebhookConfiguration>::all(admin.clone());
        let mut config = configs.get(config_name).await.expect("the configuration");
        for webhook in config.webhooks.iter_mut().flatten() {
            webhook.client_config.url = Some(url.to_string());
        }
        config.metadata.managed_fields = None;
        configs
            .replace(config_name, &PostParams::default(), &config)
            .await
            .expect("re-point the webhook");
    }

    /// Unregisters and stops the webhook.
    pub async fn shutdown(mut self) {
        if let Some((admin, config_name)) = self.registered.take() {
            let _ = Api::<ValidatingWebhookConfiguration>::all(admin)
                .delete(&config_name, &DeleteParams::default())
                .await;
        }
        self.stop.cancel();
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A URL where nothing listens (a port just bound and let go).
pub fn nowhere() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    format!("https://127.0.0.1:{port}/validate")
}

/// A CA (`ca.crt`) and a certificate it signs for IP 127.0.0.1 (`tls.crt`, `tls.key`).
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut ca = vec!["req", "-x509", "-nodes", "-days", "2"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=e2e-webhook-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    openssl(&ca);
    let mut request = vec!["req", "-nodes"];
    request.extend(ec);
    request.extend([
        "-keyout",
        "tls.key",
        "-out",
        "tls.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(&request);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write ext.cnf");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "tls.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        "tls.crt",
        "-extfile",
        "ext.cnf",
    ]);
}

fn tls_acceptor(cert_pem: &[u8], key_pem: &[u8]) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .expect("the certificate");
    let key = PrivateKeyDer::from_pem_slice(key_pem).expect("the key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("a server configuration");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Mutex<Shared>>,
    stop: CancellationToken,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let (acceptor, shared) = (acceptor.clone(), shared.clone());
                connections.spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else { return };
                    let service = hyper::service::service_fn(move |request| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(review(request, shared).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

/// Answers one AdmissionReview.
async fn review(request: Request<Incoming>, shared: Arc<Mutex<Shared>>) -> Response<ProxyBody> {
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return Response::new(full("unreadable body")),
    };
    let review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let field = |name: &str| {
        review
            .pointer(&format!("/request/{name}"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (uid, operation, name) = (field("uid"), field("operation"), field("name"));
    let verdict = if name == PROBE {
        Some(format!("{PROBE} refused"))
    } else {
        let mode = shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .mode
            .clone();
        let verdict = match mode {
            Mode::Allow => None,
            Mode::Deny(rules) => rules
                .iter()
                .find(|rule| rule.operation == operation && rule.name == name)
                .map(|rule| rule.message.clone()),
            Mode::Hang => {
                // Past the API server's timeout, which ends the call on its side.
                tokio::time::sleep(Duration::from_secs(5 * TIMEOUT_SECONDS as u64)).await;
                Some("too late".to_string())
            }
        };
        shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reviews
            .push(Review {
                operation,
                name,
                allowed: verdict.is_none(),
            });
        verdict
    };
    let response = match verdict {
        None => json!({"uid": uid, "allowed": true}),
        Some(message) => json!({
            "uid": uid,
            "allowed": false,
            "status": {"code": 403, "message": message},
        }),
    };
    let answer = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    });
    let mut response = Response::new(full(answer.to_string()));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}
