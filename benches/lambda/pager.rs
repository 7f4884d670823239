//! The bench's AWS endpoint: an HTTP proxy in front of moto that pages ListFunctions like AWS
//! and counts every call the daemon makes.
//!
//! moto answers ListFunctions in one page whatever `MaxItems` and `Marker` say. The e2e tests'
//! `aws_proxy` pages by asking moto for the whole list again at every page, which at 6,000
//! versions per account and region (about 2 s of Python per answer) would make a sweep of 120
//! pages cost minutes of moto time and measure moto, not the daemon. This proxy asks moto at
//! the first page (no `Marker`) and keeps the listing for the later pages, asking again only
//! when the bench changed moto since ([`Pager::moto_changed`]): the pages are as live as AWS's
//! (a version published mid-sweep shows in a page not yet listed; markers are offsets, so a
//! change shifts the rest, as it may on AWS). Pages hold `min(MaxItems, 50)` items, as on AWS.
//! Every other request goes to moto as it is.
//!
//! Each request is recorded (operation, access key, region, first or later page, last page or
//! not, when), so the bench counts the daemon's calls where they arrive.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::proxy_server::{forwardable, full, ProxyBody, Server};

/// AWS's page size for ListFunctions, and the most a page holds whatever `MaxItems` says.
pub const PAGE_SIZE: usize = 50;

/// One request the proxy received.
#[derive(Debug, Clone)]
pub struct Call {
    /// `ListFunctions`, `GetCallerIdentity` (any STS call) or `Other`.
    pub operation: &'static str,
    pub access_key_id: String,
    pub region: String,
    /// A ListFunctions call without `Marker`: the start of a sweep.
    pub first_page: bool,
    /// A ListFunctions answer without `NextMarker`: the end of a sweep.
    pub last_page: bool,
    /// The listing (one per first page) a ListFunctions call walked; 0 when none.
    pub sweep: u64,
    pub status: u16,
    pub at: Instant,
}

/// A listing moto gave for a first page, kept for the pages after it.
struct Snapshot {
    /// [`Shared::generation`] when moto was asked.
    generation: u64,
    items: Arc<Vec<Value>>,
    /// The rest of moto's answer (without `Functions` and `NextMarker`).
    envelope: serde_json::Map<String, Value>,
}

#[derive(Default)]
struct Shared {
    calls: Vec<Call>,
    snapshots: HashMap<u64, Snapshot>,
    /// The latest snapshot per (access key, region, query): older ones are dropped.
    latest: HashMap<(String, String, String), u64>,
    next_snapshot: u64,
    /// Bumped whenever the bench changes moto.
    generation: u64,
}

#[derive(Clone)]
struct Forwarder {
    moto: String,
    client: Client<HttpConnector, Full<Bytes>>,
    shared: Arc<Mutex<Shared>>,
}

pub struct Pager {
    server: Server,
    shared: Arc<Mutex<Shared>>,
}

impl Pager {
    pub async fn start(moto_url: &str) -> Self {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let forwarder = Forwarder {
            moto: moto_url.trim_end_matches('/').to_string(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            shared: shared.clone(),
        };
        let server = Server::start(move |request| {
            let forwarder = forwarder.clone();
            async move { forwarder.handle(request).await }
        })
        .await;
        Self { server, shared }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Tells the proxy that moto changed: later pages of listings taken before are taken again.
    pub fn moto_changed(&self) {
        lock(&self.shared).generation += 1;
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.shared).calls.clone()
    }

    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `(access key id, region, service)` from a SigV4 `Authorization` header.
fn credential_scope(request: &Request<Incoming>) -> (String, String, String) {
    let header = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let scope = header
        .split_once("Credential=")
        .map(|(_, rest)| rest.split([',', ' ']).next().unwrap_or_default())
        .unwrap_or_default();
    let parts: Vec<&str> = scope.split('/').collect();
    let get = |i: usize| parts.get(i).copied().unwrap_or_default().to_string();
    (get(0), get(2), get(3))
}

/// The query without `MaxItems` and `Marker`, and their values (markers are this proxy's own
/// `snapshot.offset`, never escaped).
fn split_paging(query: &str) -> (String, Option<String>, Option<String>) {
    let mut kept = Vec::new();
    let (mut max_items, mut marker) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("MaxItems", value) => max_items = Some(value.to_string()),
            ("Marker", value) => marker = Some(value.replace("%2E", ".").replace("%2e", ".")),
            _ => kept.push(pair),
        }
    }
    (kept.join("&"), max_items, marker)
}

fn answer(status: StatusCode, body: String) -> Response<ProxyBody> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(full(body))
        .unwrap_or_else(|_| Response::new(full("bench pager: bad response")))
}

fn invalid(message: &str) -> Response<ProxyBody> {
    let mut response = answer(
        StatusCode::BAD_REQUEST,
        serde_json::json!({"Type": "User", "message": message}).to_string(),
    );
    if let Ok(value) = "InvalidParameterValueException".parse() {
        response.headers_mut().insert("x-amzn-errortype", value);
    }
    response
}

impl Forwarder {
    async fn handle(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        let at = Instant::now();
        let (access_key_id, region, service) = credential_scope(&request);
        let is_list = request.method() == hyper::Method::GET
            && request.uri().path().trim_end_matches('/') == "/2015-03-31/functions";
        let operation = if is_list {
            "ListFunctions"
        } else if service == "sts" {
            "GetCallerIdentity"
        } else {
            "Other"
        };
        let query = request.uri().query().unwrap_or_default().to_string();
        let (kept, max_items, marker) = split_paging(&query);
        let first_page = is_list && marker.is_none();
        let (response, sweep) = if is_list {
            let key = (access_key_id.clone(), region.clone(), kept.clone());
            self.list(request, key, max_items, marker).await
        } else {
            (self.forward(request).await, 0)
        };
        let last_page = is_list && response.headers().get("x-bench-more").is_none();
        lock(&self.shared).calls.push(Call {
            operation,
            access_key_id,
            region,
            first_page,
            last_page,
            sweep,
            status: response.status().as_u16(),
            at,
        });
        response
    }

    /// Sends `parts` with `body` to moto at `path_and_query`; the status, headers and body.
    async fn send(
        &self,
        parts: &hyper::http::request::Parts,
        path_and_query: &str,
        body: Bytes,
    ) -> Result<(hyper::http::response::Parts, Bytes), String> {
        let mut outgoing = Request::builder()
            .method(parts.method.clone())
            .uri(format!("{}{path_and_query}", self.moto));
        for (name, value) in forwardable(&parts.headers, &["expect"]) {
            outgoing = outgoing.header(name, value);
        }
        let outgoing = outgoing
            .body(Full::new(body))
            .map_err(|e| format!("building the request: {e}"))?;
        let response = self
            .client
            .request(outgoing)
            .await
            .map_err(|e| format!("forwarding to moto: {e}"))?;
        let (parts, body) = response.into_parts();
        let bytes = body
            .collect()
            .await
            .map_err(|e| format!("reading moto's answer: {e}"))?
            .to_bytes();
        Ok((parts, bytes))
    }

    async fn forward(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        let (parts, body) = request.into_parts();
        let body = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => return answer(StatusCode::BAD_GATEWAY, format!("request body: {e}")),
        };
        let path = parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        match self.send(&parts, &path, body).await {
            Ok((answer_parts, bytes)) => {
                let mut reply = Response::builder().status(answer_parts.status);
                for (name, value) in forwardable(&answer_parts.headers, &[]) {
                    reply = reply.header(name, value);
                }
                reply
                    .body(full(bytes))
                    .unwrap_or_else(|e| answer(StatusCode::BAD_GATEWAY, e.to_string()))
            }
            Err(error) => answer(StatusCode::BAD_GATEWAY, error),
        }
    }

    async fn list(
        &self,
        request: Request<Incoming>,
        key: (String, String, String),
        max_items: Option<String>,
        marker: Option<String>,
    ) -> (Response<ProxyBody>, u64) {
        let page_size = match max_items.as_deref().map(str::parse::<usize>) {
            None => PAGE_SIZE,
            Some(Ok(n)) if (1..=10_000).contains(&n) => n.min(PAGE_SIZE),
            Some(_) => return (invalid("Invalid value for MaxItems"), 0),
        };
        let (parts, _) = request.into_parts();
        let (id, start) = match marker {
            Some(marker) => {
                let parsed = marker.split_once('.').and_then(|(id, at)| {
                    Some((id.parse::<u64>().ok()?, at.parse::<usize>().ok()?))
                });
                match parsed {
                    Some(parsed) => parsed,
                    None => return (invalid("Invalid marker"), 0),
                }
            }
            None => match self.snapshot(&parts, &key, None).await {
                Ok(id) => (id, 0),
                Err(response) => return (response, 0),
            },
        };
        let stale = {
            let shared = lock(&self.shared);
            let generation = shared.generation;
            shared
                .snapshots
                .get(&id)
                .is_some_and(|s| s.generation < generation)
        };
        if stale {
            if let Err(response) = self.snapshot(&parts, &key, Some(id)).await {
                return (response, id);
            }
        }
        let (items, mut envelope) = {
            let shared = lock(&self.shared);
            match shared.snapshots.get(&id) {
                Some(snapshot) => (snapshot.items.clone(), snapshot.envelope.clone()),
                None => return (invalid("Invalid marker: the listing expired"), id),
            }
        };
        let start = start.min(items.len());
        let end = (start + page_size).min(items.len());
        envelope.insert("Functions".into(), Value::Array(items[start..end].to_vec()));
        let more = end < items.len();
        if more {
            envelope.insert("NextMarker".into(), Value::String(format!("{id}.{end}")));
        }
        let mut response = answer(StatusCode::OK, Value::Object(envelope).to_string());
        if more {
            // Read back by `handle` to record the page; the SDK ignores unknown headers.
            if let Ok(value) = "1".parse() {
                response.headers_mut().insert("x-bench-more", value);
            }
        }
        (response, id)
    }

    /// Asks moto for the whole listing and keeps it as the newest listing of `key`, or in
    /// place of listing `again`.
    async fn snapshot(
        &self,
        parts: &hyper::http::request::Parts,
        key: &(String, String, String),
        again: Option<u64>,
    ) -> Result<u64, Response<ProxyBody>> {
        let path = if key.2.is_empty() {
            parts.uri.path().to_string()
        } else {
            format!("{}?{}", parts.uri.path(), key.2)
        };
        let (answer_parts, bytes) = self
            .send(parts, &path, Bytes::new())
            .await
            .map_err(|e| answer(StatusCode::BAD_GATEWAY, e))?;
        if answer_parts.status != StatusCode::OK {
            let mut reply = Response::builder().status(answer_parts.status);
            for (name, value) in forwardable(&answer_parts.headers, &[]) {
                reply = reply.header(name, value);
            }
            return Err(reply
                .body(full(bytes))
                .unwrap_or_else(|e| answer(StatusCode::BAD_GATEWAY, e.to_string())));
        }
        let mut document: serde_json::Map<String, Value> = serde_json::from_slice(&bytes)
            .map_err(|e| answer(StatusCode::BAD_GATEWAY, format!("moto's answer: {e}")))?;
        let items = match document.remove("Functions") {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        document.remove("NextMarker");
        let mut shared = lock(&self.shared);
        let snapshot = Snapshot {
            generation: shared.generation,
            items: Arc::new(items),
            envelope: document,
        };
        if let Some(id) = again {
            shared.snapshots.insert(id, snapshot);
            return Ok(id);
        }
        shared.next_snapshot += 1;
        let id = shared.next_snapshot;
        shared.snapshots.insert(id, snapshot);
        if let Some(old) = shared.latest.insert(key.clone(), id) {
            shared.snapshots.remove(&old);
        }
        Ok(id)
    }
}
