//! What the test proxies (`fault_proxy` for Kubernetes, `aws_proxy` for moto) have in common:
//! the HTTP/1 accept loop, the response body type, which headers are never forwarded, and the
//! fault rules a test injects ([`RuleBook`]).

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub type BoxError = Box<dyn StdError + Send + Sync>;
pub type ProxyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A whole body at once.
pub fn full(body: impl Into<Bytes>) -> ProxyBody {
    http_body_util::Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A proxy's HTTP server on `127.0.0.1:<free port>`; stopped by [`Server::shutdown`] or when
/// dropped.
pub struct Server {
    port: u16,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Serves HTTP/1, each request answered by `handle`.
    pub async fn start<F, Fut>(handle: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<ProxyBody>> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a test proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, stop.clone(), handle));
        Self {
            port,
            stop,
            task: Some(task),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops accepting, ends every open connection, and waits for that.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Serves HTTP/1 on `listener`, each request answered by `handle`, until `stop`; then ends
/// every open connection.
async fn serve<F, Fut>(listener: tokio::net::TcpListener, stop: CancellationToken, handle: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let handle = handle.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let answer = handle(request);
                        async move { Ok::<_, Infallible>(answer.await) }
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

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1), plus those the
/// proxy's own client sets.
const NOT_FORWARDED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// The headers to forward: all but [`NOT_FORWARDED`], those the `Connection` header names, and
/// `also_dropped` (lower case).
pub fn forwardable<'a>(
    headers: &'a HeaderMap,
    also_dropped: &'a [&'a str],
) -> impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)> {
    let named_in_connection: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_ascii_lowercase())
        .collect();
    headers.iter().filter(move |(name, _)| {
        !NOT_FORWARDED.contains(&name.as_str())
            && !also_dropped.contains(&name.as_str())
            && !named_in_connection.iter().any(|n| n == name.as_str())
    })
}

/// Identifies an injected rule, to remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleId(u64);

/// A fault rule of a proxy: which requests it matches is the proxy's business; how many it
/// applies to is the rule book's.
pub trait FaultRule {
    /// How many matching requests the rule applies to (`None`: every one until removed).
    fn limit(&self) -> Option<usize>;
}

/// A proxy's fault rules. The newest rule is tried first and the first that matches applies,
/// so a rule added on top of a standing one overrides it for the requests it matches; a rule
/// may apply to its next `n` matches only.
#[derive(Debug)]
pub struct Rules<R> {
    /// Each rule with how many more requests it applies to (`None`: until removed).
    rules: Vec<(RuleId, R, Option<usize>)>,
    next: u64,
}

impl<R> Default for Rules<R> {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            next: 0,
        }
    }
}

impl<R> Rules<R> {
    /// The newest rule that is not used up and `matches`, counting one use of it.
    pub fn take(&mut self, matches: impl Fn(&R) -> bool) -> Option<&R> {
        let (_, rule, remaining) = self
            .rules
            .iter_mut()
            .rev()
            .find(|(_, rule, remaining)| *remaining != Some(0) && matches(rule))?;
        if let Some(n) = remaining.as_mut() {
            *n -= 1;
        }
        Some(rule)
    }
}

/// The handle on a proxy's [`Rules`] that a test holds (as `proxy.rules`) and the proxy's
/// request handler shares: clones are the same rules.
#[derive(Debug)]
pub struct RuleBook<R>(Arc<Mutex<Rules<R>>>);

impl<R> Default for RuleBook<R> {
    fn default() -> Self {
        Self(Arc::default())
    }
}

impl<R> Clone for RuleBook<R> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<R: FaultRule> RuleBook<R> {
    /// Adds a fault rule; see [`Rules`] for which rule applies.
    pub fn inject(&self, rule: R) -> RuleId {
        let mut rules = self.lock();
        let id = RuleId(rules.next);
        rules.next += 1;
        let limit = rule.limit();
        rules.rules.push((id, rule, limit));
        id
    }
}

impl<R> RuleBook<R> {
    /// Removes a rule (whether or not it is used up).
    pub fn remove(&self, id: RuleId) {
        self.lock().rules.retain(|(rule, _, _)| *rule != id);
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.lock().rules.clear();
    }

    /// How many more requests rule `id` applies to (`None`: unlimited or removed).
    pub fn remaining(&self, id: RuleId) -> Option<usize> {
        self.lock()
            .rules
            .iter()
            .find(|(rule, _, _)| *rule == id)
            .and_then(|(_, _, remaining)| *remaining)
    }

    /// The rules themselves, for the request handler to [`Rules::take`] one.
    pub fn lock(&self) -> MutexGuard<'_, Rules<R>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
