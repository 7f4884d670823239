//! A paging, fault-injecting HTTP proxy between the daemon and moto (docs/development.md).
//!
//! It listens on plain HTTP on `127.0.0.1:<free port>` and forwards every request (method,
//! path and query, end-to-end headers, body) to moto, which routes by the credential scope of
//! the `Authorization` header and does not check signatures, so signed requests pass unchanged.
//! It serves Lambda (REST-JSON) and STS or IAM (query protocol, XML answers) alike.
//!
//! What it adds to moto:
//! - **Paging like AWS.** moto answers ListFunctions, ListVersionsByFunction and ListAliases in
//!   one page whatever `MaxItems` and `Marker` say. The proxy forwards these without the two
//!   parameters (keeping the others, e.g. `FunctionVersion=ALL`), then cuts the full answer at
//!   the marker into pages of `min(MaxItems, 50)` items and sets `NextMarker` (an opaque token)
//!   when more follow. A marker it did not issue is refused with `400
//!   InvalidParameterValueException`. Markers are offsets into the list as moto returns it now:
//!   a function created or deleted between two pages shifts the rest, as it may on AWS.
//! - **`LastModified` of `$LATEST` like AWS.** moto never changes it after CreateFunction
//!   (UpdateFunctionCode and UpdateFunctionConfiguration leave it alone). Unless turned off with
//!   [`LambdaProxy::emulate_last_modified`], the proxy remembers the code and configuration of
//!   every `$LATEST` it relays in a ListFunctions or ListVersionsByFunction answer, and when they
//!   change (new `CodeSha256`, handler, ...) it answers a fresh `LastModified` from then on.
//!   A change is noticed only if this proxy listed the function before it.
//! - **Faults.** `proxy.rules.inject` ([`RuleBook::inject`]) an [`AwsRule`]: the next N
//!   requests (or all, until removed) of an operation, optionally only of one region or access
//!   key, get an [`AwsFault`] in the wire format of their protocol instead of (or, for a delay,
//!   before) moto's answer.
//! - **A record.** [`LambdaProxy::requests`], [`LambdaProxy::count`] and
//!   [`LambdaProxy::count_in`] tell which operations came, from which region and key, when, and
//!   what they were answered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use crate::proxy_server::{forwardable, full, BoxError, FaultRule, ProxyBody, RuleBook, Server};

/// AWS's page size for the three list calls, and the most a page holds whatever MaxItems says.
pub const PAGE_SIZE: usize = 50;

/// What a matching request gets. Error faults are answered in the protocol of the operation:
/// REST-JSON for Lambda (`x-amzn-ErrorType` header, `{"Type", "message"}` body), query/XML for
/// STS and IAM (`<ErrorResponse>`).
#[derive(Debug, Clone, PartialEq)]
pub enum AwsFault {
    /// `429 TooManyRequestsException` with `Retry-After: 1` (Lambda's throttling).
    TooManyRequests,
    /// `400 ThrottlingException` for Lambda; `400 Throttling` ("Rate exceeded") for STS and
    /// IAM, the code those services really send.
    Throttling,
    /// `500 ServiceException` for Lambda; `500 InternalFailure` for STS and IAM.
    ServerError,
    /// `403 UnrecognizedClientException` for Lambda, `403 InvalidClientTokenId` for STS and
    /// IAM: "The security token included in the request is invalid."
    Forbidden,
    /// `403 AccessDeniedException` for Lambda, `403 AccessDenied` for STS and IAM.
    AccessDenied,
    /// Wait, then forward.
    Delay(Duration),
}

impl AwsFault {
    fn label(&self) -> String {
        match self {
            AwsFault::TooManyRequests => "TooManyRequests".into(),
            AwsFault::Throttling => "Throttling".into(),
            AwsFault::ServerError => "ServerError".into(),
            AwsFault::Forbidden => "Forbidden".into(),
            AwsFault::AccessDenied => "AccessDenied".into(),
            AwsFault::Delay(delay) => format!("delay {delay:?}"),
        }
    }
}

/// Which requests a fault applies to, and how many times.
#[derive(Debug, Clone)]
pub struct AwsRule {
    operation: String,
    region: Option<String>,
    access_key_id: Option<String>,
    fault: AwsFault,
    /// `None`: every matching request until the rule is removed.
    times: Option<usize>,
}

impl AwsRule {
    /// Every request of `operation` (as in [`AwsSeen::operation`], e.g. `"ListFunctions"`,
    /// `"AssumeRole"`), until the rule is removed; see [`AwsRule::times`].
    pub fn new(operation: &str, fault: AwsFault) -> Self {
        Self {
            operation: operation.to_string(),
            region: None,
            access_key_id: None,
            fault,
            times: None,
        }
    }

    /// Only the next `n` matching requests.
    pub fn times(mut self, n: usize) -> Self {
        self.times = Some(n);
        self
    }

    /// Only requests signed for `region`.
    pub fn region(mut self, region: &str) -> Self {
        self.region = Some(region.to_string());
        self
    }

    /// Only requests signed with `access_key_id`.
    pub fn access_key_id(mut self, access_key_id: &str) -> Self {
        self.access_key_id = Some(access_key_id.to_string());
        self
    }

    fn matches(&self, request: &Classified) -> bool {
        self.operation == request.operation
            && self.region.as_deref().is_none_or(|r| r == request.region)
            && self
                .access_key_id
                .as_deref()
                .is_none_or(|k| k == request.access_key_id)
    }
}

impl FaultRule for AwsRule {
    fn limit(&self) -> Option<usize> {
        self.times
    }
}

/// One request the proxy received.
#[derive(Debug, Clone)]
pub struct AwsSeen {
    /// `ListFunctions`, `ListVersionsByFunction`, `ListAliases`, `AssumeRole`,
    /// `AssumeRoleWithWebIdentity`, `GetCallerIdentity`, `CreateFunction`, `PublishVersion`,
    /// `CreateAlias`, `DeleteFunction`, or `Other`.
    pub operation: String,
    /// From the credential scope; empty for unsigned requests (AssumeRoleWithWebIdentity).
    pub region: String,
    /// From the credential scope; empty for unsigned requests.
    pub access_key_id: String,
    /// The status answered (by moto or by a fault); 0 while the request is in flight.
    pub status: u16,
    /// When it arrived (before any delay).
    pub at: Instant,
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    /// The fault applied, if any (`"TooManyRequests"`, `"delay 2s"`, ...).
    pub fault: Option<String>,
}

/// What the proxy remembers of one `$LATEST`, to give it a new `LastModified` when it changes.
struct Latest {
    fingerprint: Value,
    last_modified: String,
    at: SystemTime,
}

struct Shared {
    seen: Vec<AwsSeen>,
    emulate_last_modified: bool,
    /// Per (region, function name).
    latest: HashMap<(String, String), Latest>,
    next_request_id: u64,
    /// Secret access keys and session tokens STS handed out through this proxy.
    issued: Vec<String>,
}

/// A running proxy; stopped by [`LambdaProxy::shutdown`] or when dropped.
pub struct LambdaProxy {
    /// The fault rules in force: `proxy.rules.inject(AwsRule::new(..))`.
    pub rules: RuleBook<AwsRule>,
    server: Server,
    shared: Arc<Mutex<Shared>>,
}

impl LambdaProxy {
    /// Starts a proxy to moto at `moto_url` (`http://127.0.0.1:PORT`).
    pub async fn start(moto_url: &str) -> Self {
        let rules = RuleBook::default();
        let shared = Arc::new(Mutex::new(Shared {
            seen: Vec::new(),
            emulate_last_modified: true,
            latest: HashMap::new(),
            next_request_id: 0,
            issued: Vec::new(),
        }));
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(10))
            .build(connector);
        let state = Forwarder {
            client,
            upstream: moto_url.trim_end_matches('/').to_string(),
            rules: rules.clone(),
            shared: shared.clone(),
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
        }
    }

    /// The URL to give an AWS client as its endpoint.
    pub fn url(&self) -> String {
        self.server.url()
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        lock(&self.shared)
    }

    /// Turns the `LastModified` emulation of `$LATEST` on (the default) or off.
    pub fn emulate_last_modified(&self, on: bool) {
        self.lock().emulate_last_modified = on;
    }

    /// Every request seen so far, in order of arrival.
    pub fn requests(&self) -> Vec<AwsSeen> {
        self.lock().seen.clone()
    }

    /// Requests of `operation` seen so far, from any region.
    pub fn count(&self, operation: &str) -> usize {
        self.lock()
            .seen
            .iter()
            .filter(|seen| seen.operation == operation)
            .count()
    }

    /// Requests of `operation` signed for `region` seen so far.
    pub fn count_in(&self, operation: &str, region: &str) -> usize {
        self.lock()
            .seen
            .iter()
            .filter(|seen| seen.operation == operation && seen.region == region)
            .count()
    }

    /// The secret access keys and session tokens of every AssumeRole and
    /// AssumeRoleWithWebIdentity answer relayed so far: credentials the daemon holds, which must
    /// never come out of it (`leaks`).
    pub fn issued_credentials(&self) -> Vec<String> {
        self.lock().issued.clone()
    }

    /// Stops listening and cuts every connection.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone)]
struct Forwarder {
    client: Client<HttpConnector, Full<Bytes>>,
    upstream: String,
    rules: RuleBook<AwsRule>,
    shared: Arc<Mutex<Shared>>,
}

/// The wire protocol of a request, for answering faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// Lambda.
    RestJson,
    /// STS, IAM: form-encoded `Action=...`, XML answers.
    Query,
}

/// One of the three list calls the proxy pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListCall {
    Functions,
    Versions,
    Aliases,
}

impl ListCall {
    /// The array of items in the answer.
    fn key(self) -> &'static str {
        match self {
            ListCall::Functions => "Functions",
            ListCall::Versions => "Versions",
            ListCall::Aliases => "Aliases",
        }
    }

    /// Ties a marker to the call that issued it.
    fn tag(self) -> &'static str {
        match self {
            ListCall::Functions => "fn",
            ListCall::Versions => "ver",
            ListCall::Aliases => "alias",
        }
    }

    fn marker(self, offset: usize) -> String {
        format!("udproxy.{}.{offset:x}", self.tag())
    }

    fn offset(self, marker: &str) -> Option<usize> {
        let rest = marker.strip_prefix("udproxy.")?;
        let (tag, offset) = rest.split_once('.')?;
        if tag != self.tag() {
            return None;
        }
        usize::from_str_radix(offset, 16).ok()
    }
}

/// What the proxy makes of a request.
#[derive(Debug, Clone)]
struct Classified {
    operation: String,
    region: String,
    access_key_id: String,
    protocol: Protocol,
    list: Option<ListCall>,
}

/// `(access key id, region, service)` of a SigV4 `Authorization` header or presigned query.
fn credential_scope(headers: &HeaderMap, query: &str) -> (String, String, String) {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once("Credential="))
        .map(|(_, rest)| {
            rest.split([',', ' '])
                .next()
                .unwrap_or_default()
                .to_string()
        });
    let scope = from_header.or_else(|| {
        form_pairs(query)
            .into_iter()
            .find(|(k, _)| k == "X-Amz-Credential")
            .map(|(_, v)| v)
    });
    let Some(scope) = scope else {
        return Default::default();
    };
    let parts: Vec<&str> = scope.split('/').collect();
    match parts.as_slice() {
        [key, _date, region, service, _] => {
            (key.to_string(), region.to_string(), service.to_string())
        }
        _ => Default::default(),
    }
}

fn percent_decode(text: &str) -> String {
    fn hex(byte: u8) -> Option<u8> {
        (byte as char)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high * 16 + low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The decoded `key=value` pairs of a query string or form body.
fn form_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

const STS_OPERATIONS: &[&str] = &[
    "AssumeRole",
    "AssumeRoleWithWebIdentity",
    "GetCallerIdentity",
];

fn classify(method: &str, path: &str, query: &str, headers: &HeaderMap, body: &[u8]) -> Classified {
    let (access_key_id, region, service) = credential_scope(headers, query);
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let action = form_pairs(query)
        .into_iter()
        .chain(if is_form {
            form_pairs(&String::from_utf8_lossy(body))
        } else {
            Vec::new()
        })
        .find(|(k, _)| k == "Action")
        .map(|(_, v)| v);
    if action.is_some() || matches!(service.as_str(), "sts" | "iam") {
        let operation = action
            .filter(|a| STS_OPERATIONS.contains(&a.as_str()))
            .unwrap_or_else(|| "Other".into());
        return Classified {
            operation,
            region,
            access_key_id,
            protocol: Protocol::Query,
            list: None,
        };
    }
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (operation, list) = match (method, segments.as_slice()) {
        ("GET", [_, "functions"]) => ("ListFunctions", Some(ListCall::Functions)),
        ("POST", [_, "functions"]) => ("CreateFunction", None),
        ("DELETE", [_, "functions", _]) => ("DeleteFunction", None),
        ("GET", [_, "functions", _, "versions"]) => {
            ("ListVersionsByFunction", Some(ListCall::Versions))
        }
        ("POST", [_, "functions", _, "versions"]) => ("PublishVersion", None),
        ("GET", [_, "functions", _, "aliases"]) => ("ListAliases", Some(ListCall::Aliases)),
        ("POST", [_, "functions", _, "aliases"]) => ("CreateAlias", None),
        _ => ("Other", None),
    };
    Classified {
        operation: operation.to_string(),
        region,
        access_key_id,
        protocol: Protocol::RestJson,
        list,
    }
}

/// Also not forwarded: `Expect` (the proxy's client sends the whole body at once).
const DROPPED: &[&str] = &["expect"];

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An error answer in the wire format of `protocol`.
fn error_response(
    protocol: Protocol,
    status: u16,
    code: &str,
    message: &str,
    request_id: &str,
) -> Response<ProxyBody> {
    let builder = Response::builder()
        .status(status)
        .header("x-amzn-RequestId", request_id);
    let response = match protocol {
        Protocol::RestJson => {
            let kind = if status >= 500 { "Service" } else { "User" };
            let mut body = json!({"Type": kind, "message": message});
            let mut builder = builder
                .header(header::CONTENT_TYPE, "application/json")
                .header("x-amzn-ErrorType", code);
            if code == "TooManyRequestsException" {
                body["Reason"] = json!("CallerRateLimitExceeded");
                builder = builder.header(header::RETRY_AFTER, "1");
            }
            builder.body(full(body.to_string()))
        }
        Protocol::Query => {
            let kind = if status >= 500 { "Receiver" } else { "Sender" };
            let body = format!(
                "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <Error>\n    <Type>{kind}</Type>\n    <Code>{code}</Code>\n    <Message>{}</Message>\n  </Error>\n  <RequestId>{request_id}</RequestId>\n</ErrorResponse>\n",
                xml_escape(message)
            );
            builder
                .header(header::CONTENT_TYPE, "text/xml")
                .body(full(body))
        }
    };
    response.unwrap_or_else(|_| Response::new(full(message.to_string())))
}

/// `(status, code, message)` of an error fault in `protocol`; `None` for a delay.
fn fault_answer(
    fault: &AwsFault,
    protocol: Protocol,
    operation: &str,
) -> Option<(u16, &'static str, String)> {
    let lambda = protocol == Protocol::RestJson;
    let service = if lambda { "lambda" } else { "sts" };
    Some(match fault {
        AwsFault::TooManyRequests => (429, "TooManyRequestsException", "Rate exceeded".into()),
        AwsFault::Throttling => (
            400,
            if lambda { "ThrottlingException" } else { "Throttling" },
            "Rate exceeded".into(),
        ),
        AwsFault::ServerError => (
            500,
            if lambda { "ServiceException" } else { "InternalFailure" },
            "injected by the Lambda proxy: internal error".into(),
        ),
        AwsFault::Forbidden => (
            403,
            if lambda {
                "UnrecognizedClientException"
            } else {
                "InvalidClientTokenId"
            },
            "The security token included in the request is invalid.".into(),
        ),
        AwsFault::AccessDenied => (
            403,
            if lambda { "AccessDeniedException" } else { "AccessDenied" },
            format!(
                "User: arn:aws:iam::123456789012:user/e2e is not authorized to perform: {service}:{operation}"
            ),
        ),
        AwsFault::Delay(_) => return None,
    })
}

/// The moto-style timestamp (`2026-01-01T00:00:00.123456000Z`) of `at`.
fn moto_timestamp(at: SystemTime) -> String {
    let micros = humantime::format_rfc3339_micros(at).to_string();
    format!("{}000Z", micros.trim_end_matches('Z'))
}

/// What makes a `$LATEST` change on AWS: its code and configuration, and moto's own
/// `LastModified` (new when the function was deleted and created again).
fn fingerprint(entry: &Value) -> Value {
    const FIELDS: &[&str] = &[
        "LastModified",
        "CodeSha256",
        "CodeSize",
        "Description",
        "Handler",
        "Runtime",
        "MemorySize",
        "Timeout",
        "Role",
        "Environment",
        "Layers",
    ];
    Value::Array(FIELDS.iter().map(|f| entry[*f].clone()).collect())
}

impl Shared {
    fn request_id(&mut self) -> String {
        self.next_request_id += 1;
        format!(
            "{:08x}-5eed-4000-8000-{:012x}",
            std::process::id(),
            self.next_request_id
        )
    }

    /// Gives every `$LATEST` in `items` the `LastModified` AWS would show (see the module doc).
    fn emulate_last_modified(&mut self, region: &str, items: &mut [Value]) {
        if !self.emulate_last_modified {
            return;
        }
        for item in items.iter_mut() {
            if item["Version"] != "$LATEST" {
                continue;
            }
            let Some(name) = item["FunctionName"].as_str() else {
                continue;
            };
            let moto_modified = item["LastModified"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let print = fingerprint(item);
            let key = (region.to_string(), name.to_string());
            let answer = match self.latest.get_mut(&key) {
                None => {
                    self.latest.insert(
                        key,
                        Latest {
                            fingerprint: print,
                            last_modified: moto_modified.clone(),
                            at: SystemTime::now(),
                        },
                    );
                    moto_modified
                }
                Some(known) if known.fingerprint == print => known.last_modified.clone(),
                Some(known) => {
                    let recreated = known.fingerprint[0] != print[0];
                    let (at, modified) = if recreated {
                        (SystemTime::now(), moto_modified)
                    } else {
                        // Strictly later than the last one, in whole microseconds.
                        let now = SystemTime::now().max(known.at + Duration::from_micros(1));
                        let micros = now
                            .duration_since(UNIX_EPOCH)
                            .map(|d| d.as_micros())
                            .unwrap_or_default();
                        let now = UNIX_EPOCH
                            + Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX));
                        (now, moto_timestamp(now))
                    };
                    *known = Latest {
                        fingerprint: print,
                        last_modified: modified.clone(),
                        at,
                    };
                    modified
                }
            };
            item["LastModified"] = Value::String(answer);
        }
    }
}

/// The query without `MaxItems` and `Marker`, and their decoded values.
fn split_paging(query: &str) -> (String, Option<String>, Option<String>) {
    let mut kept = Vec::new();
    let mut max_items = None;
    let mut marker = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match percent_decode(key).as_str() {
            "MaxItems" => max_items = Some(percent_decode(value)),
            "Marker" => marker = Some(percent_decode(value)),
            _ => kept.push(pair),
        }
    }
    (kept.join("&"), max_items, marker)
}

impl Forwarder {
    async fn handle(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        let at = Instant::now();
        let (parts, body) = request.into_parts();
        let body = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) => {
                return bad_gateway(&format!("reading the request body: {error}"));
            }
        };
        let method = parts.method.as_str().to_string();
        let path = parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let query = parts.uri.query().unwrap_or_default().to_string();
        let classified = classify(&method, parts.uri.path(), &query, &parts.headers, &body);

        let (index, fault, request_id) = {
            // Both locks at once, so the record is in the order the rules were taken.
            let mut rules = self.rules.lock();
            let fault = rules
                .take(|rule| rule.matches(&classified))
                .map(|rule| rule.fault.clone());
            let mut shared = lock(&self.shared);
            shared.seen.push(AwsSeen {
                operation: classified.operation.clone(),
                region: classified.region.clone(),
                access_key_id: classified.access_key_id.clone(),
                status: 0,
                at,
                method: method.clone(),
                path: path.clone(),
                fault: fault.as_ref().map(AwsFault::label),
            });
            let index = shared.seen.len() - 1;
            (index, fault, shared.request_id())
        };

        let response = match &fault {
            Some(AwsFault::Delay(delay)) => {
                tokio::time::sleep(*delay).await;
                None
            }
            Some(fault) => fault_answer(fault, classified.protocol, &classified.operation).map(
                |(status, code, message)| {
                    error_response(classified.protocol, status, code, &message, &request_id)
                },
            ),
            None => None,
        };
        let response = match response {
            Some(response) => response,
            None => match classified.list {
                Some(list) => {
                    self.list(list, &classified, parts, body, &query, &request_id)
                        .await
                }
                None if classified.operation.starts_with("AssumeRole") => {
                    self.forward_remembering_credentials(parts, &path, body)
                        .await
                }
                None => self.forward(parts, &path, body).await,
            },
        };
        if let Some(seen) = lock(&self.shared).seen.get_mut(index) {
            seen.status = response.status().as_u16();
        }
        response
    }

    /// Sends a request to moto; the answer's parts and streaming body.
    async fn send(
        &self,
        parts: &hyper::http::request::Parts,
        path_and_query: &str,
        body: Bytes,
    ) -> Result<Response<Incoming>, String> {
        let mut outgoing = Request::builder()
            .method(parts.method.clone())
            .uri(format!("{}{path_and_query}", self.upstream));
        for (name, value) in forwardable(&parts.headers, DROPPED) {
            outgoing = outgoing.header(name, value);
        }
        let outgoing = outgoing
            .body(Full::new(body))
            .map_err(|e| format!("building the request: {e}"))?;
        self.client
            .request(outgoing)
            .await
            .map_err(|e| format!("forwarding to moto: {e}"))
    }

    async fn forward(
        &self,
        parts: hyper::http::request::Parts,
        path_and_query: &str,
        body: Bytes,
    ) -> Response<ProxyBody> {
        let response = match self.send(&parts, path_and_query, body).await {
            Ok(response) => response,
            Err(error) => return bad_gateway(&error),
        };
        let (parts, body) = response.into_parts();
        let mut reply = Response::builder().status(parts.status);
        for (name, value) in forwardable(&parts.headers, DROPPED) {
            reply = reply.header(name, value);
        }
        if let Some(length) = parts.headers.get(header::CONTENT_LENGTH) {
            reply = reply.header(header::CONTENT_LENGTH, length);
        }
        reply
            .body(body.map_err(|e| Box::new(e) as BoxError).boxed_unsync())
            .unwrap_or_else(|error| bad_gateway(&error.to_string()))
    }

    /// [`Forwarder::forward`] for an STS answer holding credentials: read whole, its secrets
    /// remembered, then relayed as it is.
    async fn forward_remembering_credentials(
        &self,
        parts: hyper::http::request::Parts,
        path_and_query: &str,
        body: Bytes,
    ) -> Response<ProxyBody> {
        let response = match self.send(&parts, path_and_query, body).await {
            Ok(response) => response,
            Err(error) => return bad_gateway(&error),
        };
        let (answer, answer_body) = response.into_parts();
        let bytes = match answer_body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) => return bad_gateway(&format!("reading moto's answer: {error}")),
        };
        let text = String::from_utf8_lossy(&bytes);
        let issued: Vec<String> = ["SecretAccessKey", "SessionToken"]
            .iter()
            .filter_map(|tag| {
                let (_, rest) = text.split_once(&format!("<{tag}>"))?;
                let (value, _) = rest.split_once(&format!("</{tag}>"))?;
                Some(value.trim().to_string())
            })
            .collect();
        lock(&self.shared).issued.extend(issued);
        let mut reply = Response::builder().status(answer.status);
        for (name, value) in forwardable(&answer.headers, DROPPED) {
            reply = reply.header(name, value);
        }
        reply
            .body(full(bytes))
            .unwrap_or_else(|error| bad_gateway(&error.to_string()))
    }

    /// A list call: all of it from moto, then the page the marker asks for.
    async fn list(
        &self,
        list: ListCall,
        classified: &Classified,
        parts: hyper::http::request::Parts,
        body: Bytes,
        query: &str,
        request_id: &str,
    ) -> Response<ProxyBody> {
        let invalid = |message: String| {
            error_response(
                Protocol::RestJson,
                400,
                "InvalidParameterValueException",
                &message,
                request_id,
            )
        };
        let (kept, max_items, marker) = split_paging(query);
        let page_size = match max_items.as_deref() {
            None => PAGE_SIZE,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=10_000).contains(&n) => n.min(PAGE_SIZE),
                _ => return invalid(format!("Invalid value for MaxItems: {text}")),
            },
        };
        let start = match marker.as_deref() {
            None | Some("") => 0,
            Some(text) => match list.offset(text) {
                Some(offset) => offset,
                None => return invalid(format!("Invalid marker: {text}")),
            },
        };
        let path_and_query = if kept.is_empty() {
            parts.uri.path().to_string()
        } else {
            format!("{}?{kept}", parts.uri.path())
        };
        let response = match self.send(&parts, &path_and_query, body).await {
            Ok(response) => response,
            Err(error) => return bad_gateway(&error),
        };
        let (answer, answer_body) = response.into_parts();
        let bytes = match answer_body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) => return bad_gateway(&format!("reading moto's answer: {error}")),
        };
        let mut reply = Response::builder().status(answer.status);
        for (name, value) in forwardable(&answer.headers, DROPPED) {
            if name != header::CONTENT_TYPE {
                reply = reply.header(name, value);
            }
        }
        if answer.status != StatusCode::OK {
            if let Some(kind) = answer.headers.get(header::CONTENT_TYPE) {
                reply = reply.header(header::CONTENT_TYPE, kind);
            }
            return reply
                .body(full(bytes))
                .unwrap_or_else(|error| bad_gateway(&error.to_string()));
        }
        let mut document: Value = match serde_json::from_slice(&bytes) {
            Ok(document) => document,
            Err(error) => return bad_gateway(&format!("moto's answer is not JSON: {error}")),
        };
        let mut items = match document.get_mut(list.key()).map(Value::take) {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        if list != ListCall::Aliases {
            lock(&self.shared).emulate_last_modified(&classified.region, &mut items);
        }
        let total = items.len();
        let start = start.min(total);
        let end = (start + page_size).min(total);
        let page: Vec<Value> = items.drain(start..end).collect();
        let Some(object) = document.as_object_mut() else {
            return bad_gateway("moto's answer is not a JSON object");
        };
        object.insert(list.key().to_string(), Value::Array(page));
        object.remove("NextMarker");
        if end < total {
            object.insert("NextMarker".into(), Value::String(list.marker(end)));
        }
        reply
            .header(header::CONTENT_TYPE, "application/json")
            .body(full(document.to_string()))
            .unwrap_or_else(|error| bad_gateway(&error.to_string()))
    }
}

fn bad_gateway(message: &str) -> Response<ProxyBody> {
    Response::builder()
        .status(StatusCode::BAD_GATEWAY)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(full(format!("Lambda proxy: {message}")))
        .unwrap_or_else(|_| Response::new(full(message.to_string())))
}
