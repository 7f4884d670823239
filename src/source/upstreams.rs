//! One Upstream stream for both loops: the Upstreams of the write namespace(s) and those of the
//! watched namespaces are listed and watched once, parsed once, and handed to service discovery
//! and function discovery, each narrowed to its own scopes. On a start or a restart the API
//! server sees one list pass of Upstreams, not one per loop.
//!
//! The streams are read by a task of their own into unbounded channels: a loop that is busy
//! never stops the reading (kube-apiserver drops a watcher that stops reading), and a loop's
//! backlog stays the dirty keys of its work queue.

use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt};
use kube::runtime::watcher;
use kube::Client;
use tokio::sync::mpsc;

use super::read_ahead::receiver_stream;
use super::slim::{into_event, SlimUpstream};
use super::{api_for, watch, watch_config, LambdaInput, ServiceInput, WatchFailure};
use crate::crd::Upstream;
use crate::health::{LoopHealth, StreamHealth};
use crate::metrics::WatchResource;
use crate::model::Scope;

/// Which Upstreams each loop wants; `None` for a loop that does not run.
pub struct UpstreamScopes<'a> {
    pub services: Option<&'a [Scope]>,
    pub functions: Option<&'a [Scope]>,
}

/// The inputs of each loop that runs.
pub struct UpstreamStreams {
    pub services: Option<BoxStream<'static, ServiceInput>>,
    pub functions: Option<BoxStream<'static, LambdaInput>>,
}

/// The fewest streams that cover every scope either loop wants: one stream of all namespaces
/// as soon as one loop wants them all, else one per namespace.
pub fn shared_scopes(wanted: &UpstreamScopes<'_>) -> Vec<Scope> {
    let all: Vec<&Scope> = wanted
        .services
        .into_iter()
        .chain(wanted.functions)
        .flatten()
        .collect();
    if all.contains(&&Scope::All) {
        return vec![Scope::All];
    }
    let mut scopes: Vec<Scope> = all.into_iter().cloned().collect();
    scopes.sort();
    scopes.dedup();
    scopes
}

/// Which of a loop's `scopes` an event of the shared stream of `shared` is for: the start and
/// end of a list go to each scope it covers, an object to the scope its namespace is in.
pub fn narrow(shared: &Scope, event: &watcher::Event<Upstream>, scopes: &[Scope]) -> Vec<Scope> {
    let covered = |scope: &&Scope| *shared == Scope::All || *scope == shared;
    let object = match event {
        watcher::Event::Init | watcher::Event::InitDone => {
            return scopes.iter().filter(covered).cloned().collect();
        }
        watcher::Event::Apply(upstream)
        | watcher::Event::InitApply(upstream)
        | watcher::Event::Delete(upstream) => upstream,
    };
    let namespace = object.metadata.namespace.as_deref().unwrap_or_default();
    scopes
        .iter()
        .filter(covered)
        .find(|scope| scope.covers(namespace))
        .cloned()
        .into_iter()
        .collect()
}

/// What function discovery reads of an Upstream: an aws one whole but for its managedFields;
/// of any other only its identity, enough to drop a target that lost its `spec.aws`.
fn for_functions(upstream: &Upstream) -> Upstream {
    let mut metadata = upstream.metadata.clone();
    metadata.managed_fields = None;
    if upstream.spec.aws.is_some() {
        return Upstream {
            metadata,
            spec: upstream.spec.clone(),
            status: None,
        };
    }
    metadata.labels = None;
    metadata.annotations = None;
    metadata.owner_references = None;
    Upstream {
        metadata,
        spec: Default::default(),
        status: None,
    }
}

fn map_event(
    event: &watcher::Event<Upstream>,
    f: impl Fn(&Upstream) -> Upstream,
) -> watcher::Event<Upstream> {
    match event {
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
        watcher::Event::Apply(upstream) => watcher::Event::Apply(f(upstream)),
        watcher::Event::InitApply(upstream) => watcher::Event::InitApply(f(upstream)),
        watcher::Event::Delete(upstream) => watcher::Event::Delete(f(upstream)),
    }
}

enum Item {
    Event(Scope, Box<watcher::Event<Upstream>>),
    Failed(WatchFailure),
}

/// Starts the shared Upstream watches; each stream reports its failures and recoveries to the
/// health of every loop it feeds.
pub fn upstream_inputs(
    client: &Client,
    wanted: UpstreamScopes<'_>,
    watch_timeout: Duration,
    health: &[&LoopHealth],
) -> UpstreamStreams {
    let services_scopes: Option<Vec<Scope>> = wanted.services.map(<[Scope]>::to_vec);
    let function_scopes: Option<Vec<Scope>> = wanted.functions.map(<[Scope]>::to_vec);
    let streams: Vec<BoxStream<'static, Item>> = shared_scopes(&wanted)
        .into_iter()
        .map(|scope| {
            let healths: Vec<StreamHealth> = health
                .iter()
                .map(|loop_health| loop_health.stream(format!("upstreams in {scope}")))
                .collect();
            let event_scope = scope.clone();
            watch(
                api_for::<SlimUpstream>(client, &scope),
                watch_config(watch_timeout),
                healths,
                WatchResource::Upstreams,
                move |event| Item::Event(event_scope.clone(), Box::new(into_event(event))),
                Item::Failed,
            )
        })
        .collect();
    let mut source = stream::select_all(streams);

    let (services_tx, services_rx) = channel(services_scopes.is_some());
    let (functions_tx, functions_rx) = channel(function_scopes.is_some());
    tokio::spawn(async move {
        loop {
            let all_gone = async {
                match (&services_tx, &functions_tx) {
                    (Some(a), Some(b)) => {
                        tokio::join!(a.closed(), b.closed());
                    }
                    (Some(a), None) => a.closed().await,
                    (None, Some(b)) => b.closed().await,
                    (None, None) => {}
                }
            };
            let item = tokio::select! {
                _ = all_gone => return,
                item = source.next() => item,
            };
            let Some(item) = item else { return };
            match item {
                Item::Event(shared, event) => {
                    let event = *event;
                    if let (Some(tx), Some(scopes)) = (&services_tx, &services_scopes) {
                        for scope in narrow(&shared, &event, scopes) {
                            let _ = tx.send(ServiceInput::Upstream(scope, event.clone()));
                        }
                    }
                    if let (Some(tx), Some(scopes)) = (&functions_tx, &function_scopes) {
                        for scope in narrow(&shared, &event, scopes) {
                            let lean = map_event(&event, for_functions);
                            let _ = tx.send(LambdaInput::Upstream(scope, Box::new(lean)));
                        }
                    }
                }
                Item::Failed(failure) => {
                    // One stream, one count: the services loop counts it when it runs.
                    if let Some(tx) = &functions_tx {
                        let counted = services_tx.is_none();
                        let _ = tx.send(LambdaInput::WatchError(WatchFailure {
                            counted,
                            ..failure.clone()
                        }));
                    }
                    if let Some(tx) = &services_tx {
                        let _ = tx.send(ServiceInput::WatchError(failure));
                    }
                }
            }
        }
    });
    UpstreamStreams {
        services: services_rx.map(receiver_stream),
        functions: functions_rx.map(receiver_stream),
    }
}

type Channel<T> = (
    Option<mpsc::UnboundedSender<T>>,
    Option<mpsc::UnboundedReceiver<T>>,
);

fn channel<T>(wanted: bool) -> Channel<T> {
    if !wanted {
        return (None, None);
    }
    let (tx, rx) = mpsc::unbounded_channel();
    (Some(tx), Some(rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(name: &str) -> Scope {
        Scope::Namespace(name.to_string())
    }

    fn upstream(namespace: &str, aws: bool) -> Upstream {
        let spec = if aws {
            serde_json::json!({"aws": {"region": "eu-west-1"}, "useHttp2": true})
        } else {
            serde_json::json!({"kube": {"serviceName": "web"}})
        };
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "u", "namespace": namespace, "uid": "1", "resourceVersion": "5",
                         "labels": {"a": "b"}},
            "spec": spec,
        }))
        .expect("upstream")
    }

    #[test]
    fn one_stream_of_all_namespaces_serves_both_loops_when_one_wants_them_all() {
        let services = [ns("gloo-system")];
        let functions = [Scope::All];
        let wanted = UpstreamScopes {
            services: Some(&services),
            functions: Some(&functions),
        };
        assert_eq!(shared_scopes(&wanted), [Scope::All]);
    }

    #[test]
    fn listed_namespaces_are_watched_once_each() {
        let services = [ns("gloo-system")];
        let functions = [ns("team"), ns("gloo-system")];
        let wanted = UpstreamScopes {
            services: Some(&services),
            functions: Some(&functions),
        };
        assert_eq!(shared_scopes(&wanted), [ns("gloo-system"), ns("team")]);
        let only = UpstreamScopes {
            services: Some(&services),
            functions: None,
        };
        assert_eq!(shared_scopes(&only), [ns("gloo-system")]);
    }

    #[test]
    fn a_loop_gets_the_list_markers_of_its_scopes_and_only_its_objects() {
        let scopes = [ns("gloo-system")];
        assert_eq!(
            narrow(&Scope::All, &watcher::Event::Init, &scopes),
            [ns("gloo-system")]
        );
        assert_eq!(
            narrow(&Scope::All, &watcher::Event::InitDone, &[Scope::All]),
            [Scope::All]
        );
        let inside = watcher::Event::Apply(upstream("gloo-system", false));
        let outside = watcher::Event::InitApply(upstream("team", false));
        assert_eq!(narrow(&Scope::All, &inside, &scopes), [ns("gloo-system")]);
        assert!(narrow(&Scope::All, &outside, &scopes).is_empty());
        // A stream of one namespace says nothing about another loop scope.
        assert!(narrow(&ns("team"), &watcher::Event::Init, &scopes).is_empty());
        assert!(narrow(&ns("team"), &outside, &scopes).is_empty());
    }

    #[test]
    fn function_discovery_gets_aws_upstreams_whole_and_others_as_identity_only() {
        let aws = for_functions(&upstream("team", true));
        assert!(aws.spec.aws.is_some());
        assert_eq!(aws.spec.use_http2, Some(true));
        assert!(
            aws.metadata.labels.is_some(),
            "labels select function discovery"
        );
        let other = for_functions(&upstream("team", false));
        assert!(other.spec.kube.is_none() && other.spec.aws.is_none());
        assert_eq!(other.metadata.name.as_deref(), Some("u"));
        assert_eq!(other.metadata.resource_version.as_deref(), Some("5"));
        assert_eq!(other.metadata.labels, None);
    }
}
