//! The watch streams of both loops, in one place: kube-runtime's watcher (paged lists, then
//! watches, restarted with backoff; a re-list only after a watch is lost, never per event).
//! Every event carries the [`Scope`] of its stream, so a state can tell which of its objects a
//! re-list covers. The credentials Secrets of function discovery are watched one by one
//! (`secrets`).

mod backoff;
mod grants;
mod read_ahead;
mod secrets;
pub mod settings;
mod silence;
mod slim;
mod upstreams;

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::core::PartialObjectMeta;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use crate::config::Scopes;
use crate::crd::{ReferenceGrant, Upstream};
use crate::health::{LoopHealth, StreamHealth};
use crate::metrics::WatchResource;
use crate::model::Scope;
use crate::selector::LabelSelector;

pub use grants::{grant_inputs, CRD_RECHECK as GRANT_CRD_RECHECK};
pub use secrets::{SecretUpdate, SecretWatches};
pub use silence::SilenceLayer;
use slim::{into_event, SlimService};
pub use upstreams::{upstream_inputs, UpstreamScopes, UpstreamStreams};

/// List page size: big enough for few round trips, small enough to bound memory spikes.
const PAGE_SIZE: u32 = 500;

/// What every list and watch of a loop is asked for: pages of [`PAGE_SIZE`], and watches the
/// server ends after `timeout` (`--watch-timeout`), renewed from the last version seen.
fn watch_config(timeout: Duration) -> watcher::Config {
    let seconds = u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX);
    watcher::Config::default()
        .page_size(PAGE_SIZE)
        .timeout(seconds)
}

/// What service discovery's streams deliver.
#[derive(Debug)]
pub enum ServiceInput {
    Service(Scope, watcher::Event<Service>),
    Upstream(Scope, watcher::Event<Upstream>),
    /// Only with a namespace selector.
    Namespace(watcher::Event<Namespace>),
    /// Only with `--reference-grants`: the grants of the write namespace (and of the earlier
    /// ones, to collect the daemon's grants left there), one watch per namespace.
    Grant(Scope, watcher::Event<ReferenceGrant>),
    /// Only with `--reference-grants`: the API server serves no ReferenceGrant (no CRD);
    /// looked for again periodically, and the grants' watch starts once it is there.
    GrantsUnavailable,
    WatchError(WatchFailure),
}

/// What function discovery's streams deliver.
#[derive(Debug)]
pub enum LambdaInput {
    Upstream(Scope, Box<watcher::Event<Upstream>>),
    /// Labels only: the opt-out label is all function discovery reads of a namespace.
    Namespace(Box<watcher::Event<PartialObjectMeta<Namespace>>>),
    WatchError(WatchFailure),
}

impl ServiceInput {
    /// A list or watch answered: not a failure, and not the `Init` each retry starts with.
    pub fn is_answer(&self) -> bool {
        match self {
            ServiceInput::Service(_, event) => !matches!(event, watcher::Event::Init),
            ServiceInput::Upstream(_, event) => !matches!(event, watcher::Event::Init),
            ServiceInput::Namespace(event) => !matches!(event, watcher::Event::Init),
            ServiceInput::Grant(_, event) => !matches!(event, watcher::Event::Init),
            ServiceInput::WatchError(_) | ServiceInput::GrantsUnavailable => false,
        }
    }
}

impl LambdaInput {
    /// A list or watch answered: not a failure, and not the `Init` each retry starts with.
    pub fn is_answer(&self) -> bool {
        match self {
            LambdaInput::Upstream(_, event) => !matches!(**event, watcher::Event::Init),
            LambdaInput::Namespace(event) => !matches!(**event, watcher::Event::Init),
            LambdaInput::WatchError(_) => false,
        }
    }
}

/// A failed list or watch; the stream retries it with backoff.
#[derive(Debug, Clone)]
pub struct WatchFailure {
    pub resource: WatchResource,
    pub message: String,
    /// The same failure as the stream's last one, with no success in between: a right that
    /// stays refused (403) or a server that stays away is worth one warning line, not one per
    /// retry.
    pub repeated: bool,
    /// Whether the loop that gets it counts it in `watch_restarts_total`: a stream that feeds
    /// both loops (the Upstreams) is counted once.
    pub counted: bool,
}

/// Services in their scopes (server-side filtered by `service_selector`), the loop's share of
/// the Upstream stream (`upstreams`, see [`upstream_inputs`]), and Namespaces when a namespace
/// selector needs their labels. Each stream reports its failures and recoveries into `health`.
pub fn service_inputs(
    client: &Client,
    scopes: &Scopes,
    service_selector: &LabelSelector,
    upstreams: BoxStream<'static, ServiceInput>,
    watch_timeout: Duration,
    health: &LoopHealth,
) -> BoxStream<'static, ServiceInput> {
    let mut streams = vec![upstreams];
    let services = watch_config(watch_timeout).labels(service_selector.as_str());
    for scope in &scopes.services {
        let scope = scope.clone();
        streams.push(watch(
            api_for::<SlimService>(client, &scope),
            services.clone(),
            vec![health.stream(format!("services in {scope}"))],
            WatchResource::Services,
            move |event| ServiceInput::Service(scope.clone(), into_event(event)),
            ServiceInput::WatchError,
        ));
    }
    if !scopes.namespace_selector.selects_all() {
        streams.push(watch(
            Api::<Namespace>::all(client.clone()),
            watch_config(watch_timeout),
            vec![health.stream("namespaces".to_string())],
            WatchResource::Namespaces,
            ServiceInput::Namespace,
            ServiceInput::WatchError,
        ));
    }
    read_ahead::read_ahead(stream::select_all(streams).boxed())
}

/// The loop's share of the Upstream stream (`upstreams`) and the labels of every namespace,
/// reporting into `health`.
pub fn lambda_inputs(
    client: &Client,
    upstreams: BoxStream<'static, LambdaInput>,
    watch_timeout: Duration,
    health: &LoopHealth,
) -> BoxStream<'static, LambdaInput> {
    let namespaces = watch(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        watch_config(watch_timeout),
        vec![health.stream("namespaces".to_string())],
        WatchResource::Namespaces,
        |event| LambdaInput::Namespace(Box::new(event)),
        LambdaInput::WatchError,
    );
    read_ahead::read_ahead(stream::select(upstreams, namespaces).boxed())
}

/// One watch stream, its events and errors wrapped into the loop's input type, its failures
/// and recoveries reported to each of `health` (one per loop it feeds).
fn watch<K, I>(
    api: Api<K>,
    config: watcher::Config,
    health: Vec<StreamHealth>,
    resource: WatchResource,
    event: impl Fn(watcher::Event<K>) -> I + Send + 'static,
    error: fn(WatchFailure) -> I,
) -> BoxStream<'static, I>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
    I: Send + 'static,
{
    let mut last_failure: Option<String> = None;
    let signals = Arc::new(backoff::Signals::default());
    let observer = signals.clone();
    watcher(api, config)
        .inspect(move |item| observer.observe(item))
        .backoff(backoff::WatchBackoff::new(signals))
        .map(move |item| match item {
            Ok(item) => {
                // Each retry starts with `Init` before its list is even sent: only what a
                // list or watch answered counts as success.
                if !matches!(item, watcher::Event::Init) && last_failure.take().is_some() {
                    health.iter().for_each(StreamHealth::up);
                }
                event(item)
            }
            Err(failure) => {
                let message = failure.to_string();
                let repeated = last_failure.as_deref() == Some(message.as_str());
                health.iter().for_each(|stream| stream.failed(&message));
                last_failure = Some(message.clone());
                error(WatchFailure {
                    resource,
                    message,
                    repeated,
                    counted: true,
                })
            }
        })
        .boxed()
}

/// The API of `K` in `scope`: one namespace, or all of them.
pub fn api_for<K>(client: &Client, scope: &Scope) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match scope.namespace() {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}
