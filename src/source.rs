//! The watch streams that feed the engine: Services, Upstreams and (with a namespace
//! selector) Namespaces, through `kube-runtime`'s watcher (paged lists, then watches,
//! restarted with backoff; a re-list only after a watch is lost, never per event).

use futures::stream::{self, BoxStream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};

use crate::crd::Upstream;
use crate::engine::Input;
use crate::metrics::WatchResource;
use crate::selector::LabelSelector;

/// List page size: big enough for few round trips, small enough to bound memory spikes.
const PAGE_SIZE: u32 = 500;

/// Which namespaces each kind is watched in; `None` means all namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchScopes {
    pub services: Vec<Option<String>>,
    pub upstreams: Vec<Option<String>>,
    pub namespaces: bool,
}

impl WatchScopes {
    /// Services in `watch_namespaces` (all when empty); Upstreams in the write namespace, or,
    /// when each Upstream lives beside its Service, wherever Services are plus the daemon's own
    /// namespace (where the default mode wrote them, so a switch of mode collects those).
    pub fn new(
        watch_namespaces: &[String],
        write_namespace: Option<&str>,
        own_namespace: &str,
        namespace_selector: &LabelSelector,
    ) -> Self {
        let services: Vec<Option<String>> = if watch_namespaces.is_empty() {
            vec![None]
        } else {
            watch_namespaces.iter().map(|ns| Some(ns.clone())).collect()
        };
        let upstreams = match write_namespace {
            Some(namespace) => vec![Some(namespace.to_string())],
            None if services.contains(&None) => vec![None],
            None => {
                let mut scopes = services.clone();
                scopes.push(Some(own_namespace.to_string()));
                scopes.sort();
                scopes.dedup();
                scopes
            }
        };
        Self {
            services,
            upstreams,
            namespaces: !namespace_selector.selects_all(),
        }
    }
}

/// All watch streams, merged into one stream of engine inputs.
pub fn inputs(
    client: &Client,
    scopes: &WatchScopes,
    service_selector: &LabelSelector,
) -> BoxStream<'static, Input> {
    let mut streams: Vec<BoxStream<'static, Input>> = Vec::new();
    let service_config = watcher::Config::default()
        .page_size(PAGE_SIZE)
        .labels(service_selector.as_str());
    for (index, scope) in scopes.services.iter().enumerate() {
        let api: Api<Service> = api_for(client, scope.as_deref());
        streams.push(
            watcher(api, service_config.clone())
                .default_backoff()
                .map(move |event| match event {
                    Ok(event) => Input::Service(index, event),
                    Err(error) => Input::WatchError(WatchResource::Services, error.to_string()),
                })
                .boxed(),
        );
    }
    // All Upstreams, not only ours: a name held by someone else's object must be known before we
    // try to write it, and the moment it frees up.
    let upstream_config = watcher::Config::default().page_size(PAGE_SIZE);
    for (index, scope) in scopes.upstreams.iter().enumerate() {
        let api: Api<Upstream> = api_for(client, scope.as_deref());
        streams.push(
            watcher(api, upstream_config.clone())
                .default_backoff()
                .map(move |event| match event {
                    Ok(event) => Input::Upstream(index, event),
                    Err(error) => Input::WatchError(WatchResource::Upstreams, error.to_string()),
                })
                .boxed(),
        );
    }
    if scopes.namespaces {
        let api: Api<Namespace> = Api::all(client.clone());
        streams.push(
            watcher(api, watcher::Config::default().page_size(PAGE_SIZE))
                .default_backoff()
                .map(|event| match event {
                    Ok(event) => Input::Namespace(event),
                    Err(error) => Input::WatchError(WatchResource::Namespaces, error.to_string()),
                })
                .boxed(),
        );
    }
    stream::select_all(streams).boxed()
}

fn api_for<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        let all = LabelSelector::default();
        let fixed = WatchScopes::new(&[], Some("gloo-system"), "gloo-system", &all);
        assert_eq!(fixed.services, [None]);
        assert_eq!(fixed.upstreams, [Some("gloo-system".to_string())]);
        assert!(!fixed.namespaces);

        let listed = vec!["a".to_string(), "b".to_string()];
        let per_service = WatchScopes::new(
            &listed,
            None,
            "gloo-system",
            &"team=x".parse().expect("valid"),
        );
        assert_eq!(
            per_service.services,
            [Some("a".to_string()), Some("b".to_string())]
        );
        let upstreams: Vec<Option<String>> = ["a", "b", "gloo-system"]
            .iter()
            .map(|ns| Some(ns.to_string()))
            .collect();
        assert_eq!(
            per_service.upstreams, upstreams,
            "the old write namespace too, to collect what it holds"
        );
        assert!(per_service.namespaces);
        assert_eq!(
            WatchScopes::new(&[], None, "gloo-system", &all).upstreams,
            [None]
        );
    }
}
