//! A fault-injecting HTTP proxy between the daemon and the API server (docs/development.md).
//!
//! It listens on plain HTTP on `127.0.0.1:<free port>` and forwards every request (method,
//! path and query, end-to-end headers, body) to the real API server through a `kube::Client`
//! built from a token, normally the daemon's ServiceAccount token, so the daemon keeps exactly
//! its own rights. Responses are streamed back as they come, so watches stay live.
//!
//! A test changes the proxy's behaviour at runtime through [`FaultProxy`]:
//! - `proxy.rules.inject` ([`RuleBook::inject`]) a [`Rule`]: the next N requests (or all, until
//!   removed) matching a method and substrings of the path and query get a [`Fault`] instead of
//!   (or, for a delay, before) being forwarded;
//! - [`FaultProxy::drop_watches`] ends every open watch stream abruptly, mid-body;
//! - [`FaultProxy::stall_watches`] stops relaying every open watch stream without ending it, as
//!   kube-apiserver 1.20 does with a watcher it finds unresponsive;
//! - [`FaultProxy::requests`] and [`FaultProxy::count`] tell what the proxy saw, and when.
//!
//! Requests are forwarded as they come: the proxy's own client does not retry (kube-rs does by
//! default), so what the daemon sees is what the API server (or the fault) answered.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header;
use hyper::{Request, Response, StatusCode};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::proxy_server::{forwardable, full, BoxError, FaultRule, ProxyBody, RuleBook, Server};
use crate::test_env::TestEnv;

/// What a matching request gets.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// An error answered by the proxy: `code` with a Kubernetes `Status` body, and with
    /// `Retry-After` (header and `details.retryAfterSeconds`) when set.
    Status {
        code: u16,
        reason: &'static str,
        retry_after: Option<u32>,
    },
    /// For a watch: `200 OK`, one `ERROR` event carrying `410 Gone` (what the API server sends
    /// when the resourceVersion is too old), then the end. A watcher must re-list.
    WatchGone,
    /// Wait, then forward.
    Delay(Duration),
}

impl Fault {
    /// `429 TooManyRequests` with `Retry-After: seconds`.
    pub fn too_many_requests(seconds: u32) -> Self {
        Fault::Status {
            code: 429,
            reason: "TooManyRequests",
            retry_after: Some(seconds),
        }
    }

    /// `500 InternalError`.
    pub fn internal_error() -> Self {
        Fault::Status {
            code: 500,
            reason: "InternalError",
            retry_after: None,
        }
    }

    /// `503 ServiceUnavailable` (no Retry-After).
    pub fn unavailable() -> Self {
        Fault::Status {
            code: 503,
            reason: "ServiceUnavailable",
            retry_after: None,
        }
    }

    /// `409 Conflict`, as for a stale resourceVersion.
    pub fn conflict() -> Self {
        Fault::Status {
            code: 409,
            reason: "Conflict",
            retry_after: None,
        }
    }

    /// `410 Gone` as an HTTP status (not as a watch event).
    pub fn gone() -> Self {
        Fault::Status {
            code: 410,
            reason: "Expired",
            retry_after: None,
        }
    }

    fn label(&self) -> String {
        match self {
            Fault::Status { code, .. } => code.to_string(),
            Fault::WatchGone => "watch-gone".into(),
            Fault::Delay(delay) => format!("delay {delay:?}"),
        }
    }
}

/// Which requests a fault applies to, and how many times.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `None` matches any method.
    method: Option<String>,
    /// Every one must be a substring of the request's path and query.
    contains: Vec<String>,
    /// The object the request is about, by name (see [`Seen::name`]).
    name: Option<String>,
    fault: Fault,
    /// `None`: every matching request until the rule is removed.
    times: Option<usize>,
}

impl Rule {
    /// Every request with `method` (any, if empty) whose path and query contain each of
    /// `contains`, until the rule is removed; see [`Rule::times`].
    pub fn new(method: &str, contains: &[&str], fault: Fault) -> Self {
        Self {
            method: (!method.is_empty()).then(|| method.to_ascii_uppercase()),
            contains: contains.iter().map(|s| s.to_string()).collect(),
            name: None,
            fault,
            times: None,
        }
    }

    /// Only requests about the object `name` (a create names it in its body, not its path).
    pub fn named(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    /// Only the next `n` matching requests.
    pub fn times(mut self, n: usize) -> Self {
        self.times = Some(n);
        self
    }

    fn matches(&self, method: &str, path_and_query: &str, name: Option<&str>) -> bool {
        self.method.as_deref().is_none_or(|m| m == method)
            && self.contains.iter().all(|s| path_and_query.contains(s))
            && self.name.as_deref().is_none_or(|n| Some(n) == name)
    }
}

impl FaultRule for Rule {
    fn limit(&self) -> Option<usize> {
        self.times
    }
}

/// One request the proxy received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// When it arrived (before any delay).
    pub at: Instant,
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    /// The resource (plural) named by the path, e.g. `upstreams`, `services`, `leases`.
    pub resource: String,
    /// The object's name, for requests on one object: from the path, or for a create (POST)
    /// from the body's `metadata.name`.
    pub name: Option<String>,
    /// `watch=` in the query.
    pub watch: bool,
    /// The client sent `Authorization: Bearer ...`.
    pub bearer: bool,
    /// The fault applied, if any (`"429"`, `"watch-gone"`, `"delay 2s"`, ...).
    pub fault: Option<String>,
}

struct Shared {
    seen: Vec<Seen>,
    /// Cancelled to drop every watch stream open at that moment; replaced after.
    watches: CancellationToken,
    /// Cancelled to stall every watch stream open at that moment; replaced after.
    stalls: CancellationToken,
}

/// A running proxy; stopped by [`FaultProxy::shutdown`] or when dropped.
pub struct FaultProxy {
    /// The fault rules in force: `proxy.rules.inject(Rule::new(..))`.
    pub rules: RuleBook<Rule>,
    server: Server,
    shared: Arc<Mutex<Shared>>,
    open_watches: Arc<AtomicUsize>,
}

impl FaultProxy {
    /// Starts a proxy to the test API server that authenticates with `token` (the daemon's
    /// ServiceAccount token, so requests keep the daemon's rights).
    pub async fn start(env: &TestEnv, token: &str) -> Self {
        let kubeconfig = Kubeconfig::from_yaml(&env.kubeconfig_yaml(token)).expect("kubeconfig");
        let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("usable kubeconfig");
        // Transparent: no retries of its own, and watches may stay quiet for minutes.
        config.default_retry = false;
        config.read_timeout = None;
        let client = Client::try_from(config).expect("client");

        let rules = RuleBook::default();
        let shared = Arc::new(Mutex::new(Shared {
            seen: Vec::new(),
            watches: CancellationToken::new(),
            stalls: CancellationToken::new(),
        }));
        let open_watches = Arc::new(AtomicUsize::new(0));
        let state = Forwarder {
            client,
            rules: rules.clone(),
            shared: shared.clone(),
            open_watches: open_watches.clone(),
        };
        let server = Server::start(move |request| {
            let state = state.clone();
            async move { state.handle(request).await }
        })
        .await;
        Self {
            rules,
            server,
            shared,
            open_watches,
        }
    }

    /// The URL to give the daemon as its `server:`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends every watch stream open now, abruptly (the chunked body stops without its end);
    /// returns how many were open.
    pub fn drop_watches(&self) -> usize {
        let open = self.open_watches();
        let old = std::mem::take(&mut self.lock().watches);
        old.cancel();
        open
    }

    /// Stops relaying every watch stream open now, without ending it: the client sees neither
    /// an event nor an end until it gives up on its own; returns how many were open. Watches
    /// opened afterwards are relayed as usual.
    pub fn stall_watches(&self) -> usize {
        let open = self.open_watches();
        let old = std::mem::take(&mut self.lock().stalls);
        old.cancel();
        open
    }

    /// Watch streams currently being relayed.
    pub fn open_watches(&self) -> usize {
        self.open_watches.load(Ordering::SeqCst)
    }

    /// Every request seen so far, in order of arrival.
    pub fn requests(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    /// Requests seen with `method` on `resource` (e.g. `("PATCH", "upstreams")`).
    pub fn count(&self, method: &str, resource: &str) -> usize {
        self.lock()
            .seen
            .iter()
            .filter(|seen| seen.method.eq_ignore_ascii_case(method) && seen.resource == resource)
            .count()
    }

    /// Stops listening and cuts every connection (open watches end abruptly).
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

#[derive(Clone)]
struct Forwarder {
    client: Client,
    rules: RuleBook<Rule>,
    shared: Arc<Mutex<Shared>>,
    open_watches: Arc<AtomicUsize>,
}

/// Also not forwarded: the proxy's client authenticates with its own token.
const DROPPED: &[&str] = &["authorization"];

/// `(resource, name)` from an API path: `/api/v1/[namespaces/NS/]RES[/NAME[/SUB]]` or
/// `/apis/GROUP/VERSION/[namespaces/NS/]RES[/NAME[/SUB]]`.
fn resource_of(path: &str) -> (String, Option<String>) {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segments.first() {
        Some(&"api") => segments.get(2..),
        Some(&"apis") => segments.get(3..),
        _ => None,
    }
    .unwrap_or_default();
    let rest = if rest.len() >= 3 && rest[0] == "namespaces" {
        &rest[2..]
    } else {
        rest
    };
    (
        rest.first().map(|s| s.to_string()).unwrap_or_default(),
        rest.get(1).map(|s| s.to_string()),
    )
}

fn status_body(code: u16, reason: &str, retry_after: Option<u32>) -> serde_json::Value {
    let mut status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("injected by the fault proxy: {code} {reason}"),
        "reason": reason,
        "code": code,
    });
    if let Some(seconds) = retry_after {
        status["details"] = json!({"retryAfterSeconds": seconds});
    }
    status
}

impl Forwarder {
    async fn handle(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        let method = request.method().as_str().to_string();
        let path = request
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let watch = request
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("watch=")));
        let (resource, name) = resource_of(request.uri().path());
        let bearer = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Bearer "));
        let (parts, body) = request.into_parts();
        let body = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) => return bad_gateway(&format!("reading the request body: {error}")),
        };
        let name = name.or_else(|| {
            let created: serde_json::Value = serde_json::from_slice(&body).ok()?;
            (method == "POST").then(|| created["metadata"]["name"].as_str().map(str::to_string))?
        });

        let (fault, cancel_watch, stall_watch) = {
            // Both locks at once, so the record is in the order the rules were taken.
            let mut rules = self.rules.lock();
            let fault = rules
                .take(|rule| rule.matches(&method, &path, name.as_deref()))
                .map(|rule| rule.fault.clone());
            let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            shared.seen.push(Seen {
                at: Instant::now(),
                method: method.clone(),
                path: path.clone(),
                resource,
                name,
                watch,
                bearer,
                fault: fault.as_ref().map(Fault::label),
            });
            (fault, shared.watches.clone(), shared.stalls.clone())
        };

        match fault {
            Some(Fault::Status {
                code,
                reason,
                retry_after,
            }) => {
                let mut response = Response::builder()
                    .status(code)
                    .header(header::CONTENT_TYPE, "application/json");
                if let Some(seconds) = retry_after {
                    response = response.header(header::RETRY_AFTER, seconds.to_string());
                }
                return response
                    .body(full(status_body(code, reason, retry_after).to_string()))
                    .expect("fault response");
            }
            Some(Fault::WatchGone) => {
                let event = json!({"type": "ERROR", "object": status_body(410, "Expired", None)});
                return Response::builder()
                    .status(StatusCode::OK)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(full(format!("{event}\n")))
                    .expect("gone response");
            }
            Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
            None => {}
        }
        self.forward(parts, body, watch, cancel_watch, stall_watch)
            .await
    }

    async fn forward(
        &self,
        parts: hyper::http::request::Parts,
        body: Bytes,
        watch: bool,
        cancel_watch: CancellationToken,
        stall_watch: CancellationToken,
    ) -> Response<ProxyBody> {
        let mut outgoing = Request::builder()
            .method(parts.method.clone())
            .uri(parts.uri.path_and_query().map_or("/", |pq| pq.as_str()));
        for (name, value) in forwardable(&parts.headers, DROPPED) {
            outgoing = outgoing.header(name, value);
        }
        let outgoing = match outgoing.body(kube::client::Body::from(body)) {
            Ok(outgoing) => outgoing,
            Err(error) => return bad_gateway(&format!("building the request: {error}")),
        };
        let response = match self.client.send(outgoing).await {
            Ok(response) => response,
            Err(error) => return bad_gateway(&format!("forwarding: {error}")),
        };
        let (parts, body) = response.into_parts();
        let mut reply = Response::builder().status(parts.status);
        for (name, value) in forwardable(&parts.headers, DROPPED) {
            reply = reply.header(name, value);
        }
        if let Some(length) = parts.headers.get(header::CONTENT_LENGTH) {
            reply = reply.header(header::CONTENT_LENGTH, length);
        }
        let body: ProxyBody = if watch {
            WatchBody::new(body, cancel_watch, stall_watch, self.open_watches.clone())
                .boxed_unsync()
        } else {
            body.map_err(|e| Box::new(e) as BoxError).boxed_unsync()
        };
        reply
            .body(body)
            .unwrap_or_else(|error| bad_gateway(&error.to_string()))
    }
}

fn bad_gateway(message: &str) -> Response<ProxyBody> {
    Response::builder()
        .status(StatusCode::BAD_GATEWAY)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(status_body(502, "BadGateway", None).to_string()))
        .unwrap_or_else(|_| Response::new(full(message.to_string())))
}

/// A relayed watch response that ends with an error (so hyper cuts the connection without
/// the chunked terminator) once `cancelled` fires.
struct WatchBody {
    inner: kube::client::Body,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    stall: Pin<Box<WaitForCancellationFutureOwned>>,
    stalled: bool,
    open: Arc<AtomicUsize>,
    done: bool,
}

impl WatchBody {
    fn new(
        inner: kube::client::Body,
        token: CancellationToken,
        stall: CancellationToken,
        open: Arc<AtomicUsize>,
    ) -> Self {
        open.fetch_add(1, Ordering::SeqCst);
        Self {
            inner,
            cancelled: Box::pin(token.cancelled_owned()),
            stall: Box::pin(stall.cancelled_owned()),
            stalled: false,
            open,
            done: false,
        }
    }
}

impl Drop for WatchBody {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Body for WatchBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.cancelled.as_mut().poll(cx).is_ready() {
            self.done = true;
            return Poll::Ready(Some(Err("watch dropped by the fault proxy".into())));
        }
        if !self.stalled && self.stall.as_mut().poll(cx).is_ready() {
            self.stalled = true;
        }
        if self.stalled {
            // Nothing more, and no end: only a drop (registered above) wakes this body again.
            return Poll::Pending;
        }
        Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map_err(|e| Box::new(e) as BoxError)
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// The requests in `seen` with `method` whose path and query contain `contains`, oldest first.
pub fn matching<'a>(
    seen: &'a [Seen],
    method: &'a str,
    contains: &'a str,
) -> impl Iterator<Item = &'a Seen> + 'a {
    seen.iter()
        .filter(move |s| s.method.eq_ignore_ascii_case(method) && s.path.contains(contains))
}
