//! `/metrics`, `/healthz` and `/readyz` (docs/operations.md) on a minimal HTTP/1.1 server.
//!
//! Plain hyper rather than a web framework: three fixed routes do not justify the dependency
//! tree, and the daemon's image and build time stay small.

use std::convert::Infallible;
use std::io;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::metrics::{Metrics, MetricsError};

/// Content type of the Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A client that sends its request headers slower than this is cut off, so that idle or
/// malicious connections cannot pile up.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long in-flight connections get to finish after shutdown is requested. Kept well under
/// Kubernetes' default 30 s termination grace period, which the rest of the daemon also needs.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Pause after an accept error that is expected to pass (e.g. out of file descriptors), so that
/// the loop does not spin while it lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot accept connections: {0}")]
    Accept(#[source] io::Error),
}

/// Serves until `shutdown` is cancelled, then stops accepting, gives open connections up to
/// [`SHUTDOWN_GRACE`] to finish, and returns. The caller binds `listener`, so it can log the
/// address and tests can use port 0.
///
/// Errors of single connections are logged and never end the server; only an accept error that
/// will not pass does.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    health: Health,
    shutdown: CancellationToken,
) -> Result<(), HttpError> {
    let mut connections = JoinSet::new();
    // A token of their own, so that connections also close when the loop ends on an error.
    let close_connections = shutdown.child_token();
    let result = loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break Ok(()),
            // Reap finished connection tasks so the set does not grow with every scrape.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let metrics = metrics.clone();
                    let health = health.clone();
                    let close = close_connections.clone();
                    connections.spawn(async move {
                        serve_connection(stream, metrics, health, close).await;
                        tracing::trace!(%peer, "http connection closed");
                    });
                }
                Err(error) if is_transient(&error) => {
                    tracing::warn!(%error, "http accept failed, retrying");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                Err(error) => break Err(HttpError::Accept(error)),
            },
        }
    };
    drop(listener);
    close_connections.cancel();

    // Each connection is closing gracefully; wait for that, but not for
    // ever: a client that holds a response open must not delay the daemon's exit.
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tracing::debug!(
            open = connections.len(),
            "http connections still open at shutdown, dropping them"
        );
        connections.abort_all();
    }
    result
}

fn is_transient(error: &io::Error) -> bool {
    use io::ErrorKind::*;
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock | TimedOut | OutOfMemory
    ) {
        return true;
    }
    // EMFILE, ENFILE, ENOBUFS (Linux numbering; std has no ErrorKind for them): resource
    // exhaustion, which may end at any moment.
    cfg!(target_os = "linux") && matches!(error.raw_os_error(), Some(23 | 24 | 105))
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    metrics: Metrics,
    health: Health,
    shutdown: CancellationToken,
) {
    let service = service_fn(move |req: Request<Incoming>| {
        let response = respond(&req, &metrics, &health);
        async move { Ok::<_, Infallible>(response) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);

    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            // Finishes the request in flight, if any, then closes; idle keep-alive connections
            // (Prometheus keeps its scrape connection open) close at once.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        // Clients hanging up or sending garbage are routine, not the daemon's problem.
        tracing::debug!(%error, "http connection error");
    }
}

fn respond<B>(req: &Request<B>, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
    route(req.method(), req.uri().path(), health, || {
        metrics.set_loops_synced(&health.loops_synced());
        metrics.encode()
    })
}

/// The routing, apart from the network and with the encoding passed in, so that every branch
/// (including a failed encode) can be tested directly.
fn route(
    method: &Method,
    path: &str,
    health: &Health,
    encode: impl FnOnce() -> Result<String, MetricsError>,
) -> Response<Full<Bytes>> {
    let known = matches!(path, "/metrics" | "/healthz" | "/readyz");
    if !known {
        return text(StatusCode::NOT_FOUND, "not found");
    }
    // HEAD is answered like GET; hyper leaves out the body.
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/metrics" => match encode() {
            Ok(body) => {
                let mut response = Response::new(Full::new(Bytes::from(body)));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
                response
            }
            Err(error) => {
                tracing::warn!(%error, "cannot encode metrics");
                text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics")
            }
        },
        // Liveness never depends on the API server (see `health`), or an API server outage
        // would restart every replica.
        "/healthz" => check(health.liveness(Instant::now())),
        _ => check(health.readiness(Instant::now())),
    }
}

/// 200 "ok", or 503 with the reasons.
fn check(verdict: Result<(), String>) -> Response<Full<Bytes>> {
    match verdict {
        Ok(()) => text(StatusCode::OK, "ok"),
        Err(reasons) => text(StatusCode::SERVICE_UNAVAILABLE, reasons),
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{HealthLimits, Loop};
    use http_body_util::BodyExt;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::task::JoinHandle;

    /// Generous: CI machines are slow and shared.
    const DEADLINE: Duration = Duration::from_secs(30);

    struct Server {
        addr: SocketAddr,
        health: Health,
        metrics: Metrics,
        shutdown: CancellationToken,
        task: JoinHandle<Result<(), HttpError>>,
    }

    async fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let metrics = Metrics::new().expect("metrics");
        let health = Health::new(HealthLimits {
            stall_timeout: Duration::from_millis(200),
            watch_grace: Duration::from_secs(30),
        });
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(
            listener,
            metrics.clone(),
            health.clone(),
            shutdown.clone(),
        ));
        Server {
            addr,
            health,
            metrics,
            shutdown,
            task,
        }
    }

    struct Reply {
        status: u16,
        headers: String,
        body: String,
    }

    /// A raw HTTP/1.1 request: the point is to test the server as a scraper or kubelet sees it,
    /// bytes on a socket.
    async fn request(addr: SocketAddr, method: &str, path: &str) -> Reply {
        let raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        );
        let reply = send_raw(addr, raw.as_bytes()).await;
        parse(&reply)
    }

    async fn send_raw(addr: SocketAddr, raw: &[u8]) -> String {
        let exchange = async {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            stream.write_all(raw).await.expect("write request");
            let mut reply = Vec::new();
            stream.read_to_end(&mut reply).await.expect("read reply");
            String::from_utf8(reply).expect("utf-8 reply")
        };
        tokio::time::timeout(DEADLINE, exchange)
            .await
            .expect("reply within the deadline")
    }

    fn parse(reply: &str) -> Reply {
        let (head, body) = reply.split_once("\r\n\r\n").expect("end of headers");
        let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        Reply {
            status,
            headers: headers.to_ascii_lowercase(),
            body: body.to_owned(),
        }
    }

    async fn stop(server: Server) {
        server.shutdown.cancel();
        let result = tokio::time::timeout(DEADLINE, server.task)
            .await
            .expect("serve ends after cancel")
            .expect("serve task did not panic");
        assert!(result.is_ok(), "{result:?}");
    }

    #[tokio::test]
    async fn metrics_route_serves_the_registry() {
        let server = start().await;
        server.metrics.skipped(crate::model::SkipReason::NotOwned);
        let reply = request(server.addr, "GET", "/metrics").await;
        assert_eq!(reply.status, 200);
        assert!(
            reply
                .headers
                .contains("content-type: text/plain; version=0.0.4"),
            "{}",
            reply.headers
        );
        assert!(reply
            .body
            .contains("# TYPE upstream_discovery_writes_total counter"));
        assert!(reply
            .body
            .contains(r#"upstream_discovery_skipped_total{reason="not_owned"} 1"#));
        // Query strings (some scrapers add them) do not change the route.
        let reply = request(server.addr, "GET", "/metrics?format=text").await;
        assert_eq!(reply.status, 200);
        stop(server).await;
    }

    #[tokio::test]
    async fn healthz_fails_while_a_loop_with_work_is_stuck() {
        let server = start().await;
        let reply = request(server.addr, "GET", "/healthz").await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, "ok"),
            "not ready, alive"
        );
        let services = server.health.register(Loop::Services);
        services.working(true);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let reply = request(server.addr, "GET", "/healthz").await;
        assert_eq!(reply.status, 503);
        assert!(
            reply
                .body
                .starts_with("services: work in flight and none finished for"),
            "{}",
            reply.body
        );
        services.working(false);
        let reply = request(server.addr, "GET", "/healthz").await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "ok"));
        stop(server).await;
    }

    #[tokio::test]
    async fn readyz_says_why_not() {
        let server = start().await;
        let reply = request(server.addr, "GET", "/readyz").await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (503, "discovery not started\n")
        );
        let services = server.health.register(Loop::Services);
        let reply = request(server.addr, "GET", "/readyz").await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (503, "services: initial lists not complete\n")
        );
        services.synced();
        let reply = request(server.addr, "GET", "/readyz").await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "ok"));
        stop(server).await;
    }

    #[tokio::test]
    async fn unknown_paths_and_methods() {
        let server = start().await;
        for path in ["/", "/metricsx", "/healthz/", "/nope"] {
            let reply = request(server.addr, "GET", path).await;
            assert_eq!(reply.status, 404, "{path}");
        }
        let reply = request(server.addr, "POST", "/metrics").await;
        assert_eq!(reply.status, 405);
        assert!(
            reply.headers.contains("allow: get, head"),
            "{}",
            reply.headers
        );
        let reply = request(server.addr, "DELETE", "/nope").await;
        assert_eq!(reply.status, 404);
        let reply = request(server.addr, "HEAD", "/healthz").await;
        assert_eq!((reply.status, reply.body.as_str()), (200, ""));
        stop(server).await;
    }

    #[tokio::test]
    async fn garbage_does_not_stop_the_server() {
        let server = start().await;
        let reply = send_raw(server.addr, b"\x00\x01 not http at all\r\n\r\n").await;
        assert!(
            reply.is_empty() || reply.starts_with("HTTP/1.1 4"),
            "{reply:?}"
        );
        // A client that connects and hangs up at once.
        drop(TcpStream::connect(server.addr).await.expect("connect"));
        let reply = request(server.addr, "GET", "/healthz").await;
        assert_eq!(reply.status, 200);
        stop(server).await;
    }

    #[tokio::test]
    async fn keep_alive_requests_on_one_connection() {
        let server = start().await;
        let raw = format!(
            "GET /healthz HTTP/1.1\r\nHost: {0}\r\n\r\nGET /readyz HTTP/1.1\r\nHost: {0}\r\nConnection: close\r\n\r\n",
            server.addr
        );
        let reply = send_raw(server.addr, raw.as_bytes()).await;
        assert_eq!(reply.matches("HTTP/1.1 200 OK").count(), 1, "{reply}");
        assert_eq!(
            reply.matches("HTTP/1.1 503 Service Unavailable").count(),
            1,
            "{reply}"
        );
        stop(server).await;
    }

    #[tokio::test]
    async fn cancelling_ends_serve_and_closes_the_port() {
        let server = start().await;
        let addr = server.addr;
        assert_eq!(request(addr, "GET", "/healthz").await.status, 200);
        stop(server).await;
        assert!(TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn cancelling_closes_idle_keep_alive_connections() {
        let server = start().await;
        let mut idle = TcpStream::connect(server.addr).await.expect("connect");
        let raw = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr);
        idle.write_all(raw.as_bytes()).await.expect("write");
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(DEADLINE, idle.read(&mut buf))
            .await
            .expect("first reply in time")
            .expect("read");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        // The connection is now idle in keep-alive; shutdown must not wait for the grace period.
        let started = tokio::time::Instant::now();
        stop(server).await;
        assert!(started.elapsed() < SHUTDOWN_GRACE);
        let mut rest = Vec::new();
        let read = tokio::time::timeout(DEADLINE, idle.read_to_end(&mut rest))
            .await
            .expect("closed in time");
        assert!(matches!(read, Ok(0)) || read.is_err(), "{read:?}");
    }

    async fn body_of(response: Response<Full<Bytes>>) -> String {
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("full body")
            .to_bytes();
        String::from_utf8(bytes.to_vec()).expect("utf-8 body")
    }

    #[tokio::test]
    async fn failed_encode_is_a_500_with_a_short_body() {
        let response = route(&Method::GET, "/metrics", &Health::default(), || {
            Err(MetricsError::Encode(prometheus::Error::Msg(
                "broken".to_owned(),
            )))
        });
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = body_of(response).await;
        assert_eq!(body, "cannot encode metrics");
    }

    #[tokio::test]
    async fn metrics_route_does_not_encode_for_other_paths() {
        let response = route(&Method::GET, "/readyz", &Health::default(), || {
            panic!("encode called for /readyz")
        });
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body_of(response).await, "discovery not started\n");
    }
}
