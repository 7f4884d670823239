//! A watch the API server has stopped serving without ending its response is renewed once it
//! has sent nothing for `--watch-silence`.
//!
//! kube-apiserver drops a watcher it finds too slow ("Forcing watcher close due to
//! unresponsiveness") and a 1.20 server may do so without ending the response: the daemon
//! would then hear nothing until the request's own timeout (`--watch-timeout`, up to 290 s).
//! The server sends a bookmark about once a minute on a quiet watch, so any byte, event or
//! bookmark, shows the stream is alive. This layer sits in the client's HTTP stack and ends the
//! body of a watch response that stays silent for the limit; kube's watcher then watches again
//! from the last resourceVersion it saw: one request, no re-list, nothing missed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

use crate::metrics::{Metrics, WatchResource};

/// What a renewal for silence tells: the metric counts each, the log says it once per resource.
#[derive(Clone)]
struct Reporter {
    metrics: Metrics,
    said: Arc<std::sync::Mutex<Vec<WatchResource>>>,
}

impl Reporter {
    fn renewed(&self, resource: Option<WatchResource>, path: &str, silence: Duration) {
        if let Some(resource) = resource {
            self.metrics.watch_renewed_for_silence(resource);
        }
        let first = match self.said.lock() {
            Ok(mut said) => match resource {
                Some(resource) if said.contains(&resource) => false,
                Some(resource) => {
                    said.push(resource);
                    true
                }
                None => true,
            },
            Err(_) => true,
        };
        if first {
            tracing::info!(
                resource = resource.map_or("other", WatchResource::as_str),
                %path,
                silence_s = silence.as_secs(),
                "a watch sent nothing (no event, no bookmark) for --watch-silence: renewed from its last version (said once per resource; watch_silence_renewals_total counts each)"
            );
        } else {
            tracing::debug!(%path, "watch renewed for silence");
        }
    }
}

/// The layer: guards every response to a request with `watch=true` (or `watch=1`).
#[derive(Clone)]
pub struct SilenceLayer {
    silence: Duration,
    reporter: Reporter,
}

impl SilenceLayer {
    pub fn new(silence: Duration, metrics: Metrics) -> Self {
        Self {
            silence,
            reporter: Reporter {
                metrics,
                said: Arc::default(),
            },
        }
    }
}

impl<S> Layer<S> for SilenceLayer {
    type Service = SilenceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SilenceService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct SilenceService<S> {
    inner: S,
    layer: SilenceLayer,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SilenceService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body<Data = Bytes> + Unpin + Send + 'static,
{
    type Response = Response<SilenceBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let guard = (is_watch(request.uri().query()) && !self.layer.silence.is_zero()).then(|| {
            let path = request.uri().path().to_string();
            Guard {
                resource: path.rsplit('/').next().and_then(WatchResource::from_plural),
                path,
                silence: self.layer.silence,
                reporter: self.layer.reporter.clone(),
                sleep: Box::pin(tokio::time::sleep(self.layer.silence)),
            }
        });
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|inner| SilenceBody {
                inner,
                guard,
                ended: false,
            }))
        })
    }
}

fn is_watch(query: Option<&str>) -> bool {
    query
        .unwrap_or_default()
        .split('&')
        .any(|pair| pair == "watch=true" || pair == "watch=1")
}

struct Guard {
    resource: Option<WatchResource>,
    path: String,
    silence: Duration,
    reporter: Reporter,
    sleep: Pin<Box<Sleep>>,
}

/// A response body that ends when a watch stays silent for the limit.
pub struct SilenceBody<B> {
    inner: B,
    guard: Option<Guard>,
    ended: bool,
}

impl<B> Body for SilenceBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            if let Some(guard) = this.guard.as_mut() {
                guard.sleep.as_mut().reset(Instant::now() + guard.silence);
            }
            return Poll::Ready(frame);
        }
        if let Some(guard) = this.guard.as_mut() {
            if guard.sleep.as_mut().poll(cx).is_ready() {
                guard
                    .reporter
                    .renewed(guard.resource, &guard.path, guard.silence);
                this.ended = true;
                return Poll::Ready(None);
            }
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    type TestBody = StreamBody<
        futures::stream::BoxStream<'static, Result<Frame<Bytes>, std::convert::Infallible>>,
    >;

    fn guarded(
        frames: Vec<&'static str>,
        then_silent: bool,
        metrics: &Metrics,
    ) -> SilenceBody<TestBody> {
        use futures::StreamExt;
        let items = futures::stream::iter(
            frames
                .into_iter()
                .map(|text| Ok(Frame::data(Bytes::from_static(text.as_bytes())))),
        );
        let stream = if then_silent {
            items.chain(futures::stream::pending()).boxed()
        } else {
            items.boxed()
        };
        let silence = Duration::from_secs(60);
        SilenceBody {
            inner: StreamBody::new(stream),
            guard: Some(Guard {
                resource: Some(WatchResource::Services),
                path: "/api/v1/services".into(),
                silence,
                reporter: SilenceLayer::new(silence, metrics.clone()).reporter,
                sleep: Box::pin(tokio::time::sleep(silence)),
            }),
            ended: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_watch_ends_after_the_limit_and_is_counted() {
        let metrics = Metrics::new().expect("metrics");
        let mut body = guarded(vec!["{\"type\":\"ADDED\"}\n"], true, &metrics);
        let started = Instant::now();
        let first = body.frame().await.expect("a frame").expect("data");
        assert!(first.is_data());
        assert!(body.frame().await.is_none(), "ends once silent");
        let waited = started.elapsed();
        assert!(
            (Duration::from_secs(60)..Duration::from_secs(61)).contains(&waited),
            "{waited:?}"
        );
        assert_eq!(metrics.watch_silence_renewals(WatchResource::Services), 1);
        assert!(body.is_end_stream());
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_that_ends_by_itself_is_not_counted() {
        let metrics = Metrics::new().expect("metrics");
        let mut body = guarded(vec!["a", "b"], false, &metrics);
        while body.frame().await.is_some() {}
        assert_eq!(metrics.watch_silence_renewals(WatchResource::Services), 0);
    }

    #[test]
    fn only_watch_requests_are_guarded() {
        assert!(is_watch(Some(
            "allowWatchBookmarks=true&watch=true&timeoutSeconds=290"
        )));
        assert!(is_watch(Some("watch=1")));
        assert!(!is_watch(Some("limit=500")));
        assert!(!is_watch(Some("watchx=true")));
        assert!(!is_watch(None));
    }
}
