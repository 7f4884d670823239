//! What the daemon knows of the cluster: the Services in scope and the Upstreams in the write
//! namespace(s), kept compact (only the fields translation and planning use), with an index from
//! each Service to the Upstreams it owns. Pure: fed watch events, it says which Services they
//! affect; it never talks to the network.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use k8s_openapi::api::core::v1::{Namespace, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher;

use crate::crd::{Upstream, DISCOVERED_BY_LABEL, KUBERNETES_PLUGIN};
use crate::plan::ObservedUpstream;

use super::compact::{CompactService, CompactUpstream};
use super::list_progress::ListProgress;
use crate::selector::LabelSelector;
use crate::translate::LAST_APPLIED_ANNOTATION;

/// Field manager of every write the daemon makes.
pub const FIELD_MANAGER: &str = "upstream-discovery";

/// A Service, by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// An Upstream, by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UpstreamKey {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for UpstreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The daemon's cache.
#[derive(Debug)]
pub struct State {
    services: HashMap<ServiceKey, CompactService>,
    service_lists: Vec<ListProgress<ServiceKey>>,
    upstreams: HashMap<UpstreamKey, CompactUpstream>,
    /// Upstreams without our label: their names are taken, their content is none of our business.
    foreign: HashSet<UpstreamKey>,
    /// The Service that wants each foreign name, so it is re-planned when the name frees up.
    wanted_by: HashMap<UpstreamKey, ServiceKey>,
    upstream_lists: Vec<ListProgress<UpstreamKey>>,
    by_service: HashMap<ServiceKey, BTreeSet<UpstreamKey>>,
    /// Labels of each namespace, kept only with a namespace selector.
    namespaces: HashMap<String, BTreeMap<String, String>>,
    namespace_list: ListProgress<String>,
    namespace_selector: LabelSelector,
}

impl State {
    /// One entry per watch stream of each kind: the namespace it watches, `None` for all.
    pub fn new(
        service_scopes: Vec<Option<String>>,
        upstream_scopes: Vec<Option<String>>,
        namespace_selector: LabelSelector,
    ) -> Self {
        // Every kind has at least one stream, so the list trackers can always be indexed.
        let at_least_one = |scopes: Vec<Option<String>>| {
            if scopes.is_empty() {
                vec![None]
            } else {
                scopes
            }
        };
        let (service_scopes, upstream_scopes) =
            (at_least_one(service_scopes), at_least_one(upstream_scopes));
        Self {
            services: HashMap::new(),
            service_lists: service_scopes.into_iter().map(ListProgress::new).collect(),
            upstreams: HashMap::new(),
            foreign: HashSet::new(),
            wanted_by: HashMap::new(),
            upstream_lists: upstream_scopes.into_iter().map(ListProgress::new).collect(),
            by_service: HashMap::new(),
            namespaces: HashMap::new(),
            namespace_list: ListProgress::new(None),
            namespace_selector,
        }
    }

    /// True once every stream has completed its first full list: only then may anything be
    /// deleted, and only then is the daemon ready.
    pub fn synced(&self) -> bool {
        self.service_lists.iter().all(|l| l.completed_once())
            && self.upstream_lists.iter().all(|l| l.completed_once())
            && (self.namespace_selector.selects_all() || self.namespace_list.completed_once())
    }

    pub fn owned_upstream_count(&self) -> usize {
        self.upstreams.len()
    }

    /// Every Service a full pass must look at: those we know and those that own Upstreams.
    pub fn all_service_keys(&self) -> BTreeSet<ServiceKey> {
        self.services
            .keys()
            .chain(self.by_service.keys())
            .cloned()
            .collect()
    }

    /// The Service, when it exists and is in scope (its namespace matches the selector).
    pub fn service_in_scope(&self, key: &ServiceKey) -> Option<Service> {
        let service = self.services.get(key)?;
        if !self.namespace_selector.selects_all() {
            let labels = self.namespaces.get(&key.namespace)?;
            if !self.namespace_selector.matches(labels) {
                return None;
            }
        }
        service.expand()
    }

    /// The owned Upstreams that point at this Service.
    pub fn observed_for(&self, key: &ServiceKey) -> Vec<ObservedUpstream> {
        self.by_service
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|upstream| self.upstreams.get(upstream)?.expand())
            .collect()
    }

    pub fn is_foreign(&self, key: &UpstreamKey) -> bool {
        self.foreign.contains(key)
    }

    /// The Service an owned Upstream was discovered from, if that name is ours.
    pub fn owner_of(&self, key: &UpstreamKey) -> Option<ServiceKey> {
        self.upstreams
            .get(key)
            .and_then(|cached| cached.source.clone())
    }

    /// A Service watch event; returns the Services whose Upstreams may need work.
    pub fn on_service_event(
        &mut self,
        stream: usize,
        event: watcher::Event<Service>,
    ) -> Vec<ServiceKey> {
        match event {
            watcher::Event::Init => {
                self.service_list(stream).started();
                Vec::new()
            }
            watcher::Event::InitApply(service) | watcher::Event::Apply(service) => {
                let Some(key) = service_key(&service) else {
                    return Vec::new();
                };
                self.service_list(stream).saw(&key);
                let service = CompactService::new(&compact_service(service));
                let changed = self.services.get(&key) != Some(&service);
                self.services.insert(key.clone(), service);
                if changed {
                    vec![key]
                } else {
                    Vec::new()
                }
            }
            watcher::Event::Delete(service) => {
                let Some(key) = service_key(&service) else {
                    return Vec::new();
                };
                self.services.remove(&key);
                vec![key]
            }
            watcher::Event::InitDone => {
                let Some(seen) = self.service_list(stream).finished() else {
                    return Vec::new();
                };
                // A Service gone while the watch was down shows up as missing from the re-list.
                let covered: Vec<ServiceKey> = self
                    .services
                    .keys()
                    .filter(|key| list_covers(&self.service_lists, stream, &key.namespace))
                    .cloned()
                    .collect();
                let gone: Vec<ServiceKey> = covered
                    .into_iter()
                    .filter(|key| !seen.contains(key))
                    .collect();
                for key in &gone {
                    self.services.remove(key);
                }
                gone
            }
        }
    }

    /// An Upstream watch event; returns the Services whose Upstreams may need work.
    pub fn on_upstream_event(
        &mut self,
        stream: usize,
        event: watcher::Event<Upstream>,
    ) -> Vec<ServiceKey> {
        match event {
            watcher::Event::Init => {
                self.upstream_list(stream).started();
                Vec::new()
            }
            watcher::Event::InitApply(upstream) | watcher::Event::Apply(upstream) => {
                let Some(key) = upstream_key(&upstream) else {
                    return Vec::new();
                };
                self.upstream_list(stream).saw(&key);
                self.put_upstream(key, &upstream)
            }
            watcher::Event::Delete(upstream) => match upstream_key(&upstream) {
                Some(key) => self.remove_upstream(&key),
                None => Vec::new(),
            },
            watcher::Event::InitDone => {
                let Some(seen) = self.upstream_list(stream).finished() else {
                    return Vec::new();
                };
                let gone: Vec<UpstreamKey> = self
                    .upstreams
                    .keys()
                    .chain(self.foreign.iter())
                    .filter(|key| {
                        list_covers(&self.upstream_lists, stream, &key.namespace)
                            && !seen.contains(*key)
                    })
                    .cloned()
                    .collect();
                gone.iter()
                    .flat_map(|key| self.remove_upstream(key))
                    .collect()
            }
        }
    }

    /// Records the object the API server returned for one of our writes, so the next plan sees
    /// it even before the watch delivers it.
    pub fn on_written(&mut self, upstream: &Upstream) -> Vec<ServiceKey> {
        match upstream_key(upstream) {
            Some(key) => self.put_upstream(key, upstream),
            None => Vec::new(),
        }
    }

    /// Records a name that a create found taken by someone else's object.
    pub fn mark_foreign(&mut self, key: UpstreamKey) {
        self.remove_upstream(&key);
        self.foreign.insert(key);
    }

    /// Remembers that `service` wants a name a foreign object holds.
    pub fn wants(&mut self, key: UpstreamKey, service: ServiceKey) {
        self.wanted_by.insert(key, service);
    }

    /// Records that one of our deletes went through.
    pub fn on_deleted(&mut self, key: &UpstreamKey) {
        self.remove_upstream(key);
    }

    /// A Namespace watch event (only with a namespace selector); returns the Services whose
    /// scope may have changed.
    pub fn on_namespace_event(&mut self, event: watcher::Event<Namespace>) -> Vec<ServiceKey> {
        let changed_namespaces: Vec<String> = match event {
            watcher::Event::Init => {
                self.namespace_list.started();
                Vec::new()
            }
            watcher::Event::InitApply(namespace) | watcher::Event::Apply(namespace) => {
                let Some(name) = namespace.metadata.name.clone() else {
                    return Vec::new();
                };
                self.namespace_list.saw(&name);
                let labels = namespace.metadata.labels.unwrap_or_default();
                let changed = self.namespaces.get(&name) != Some(&labels);
                self.namespaces.insert(name.clone(), labels);
                if changed {
                    vec![name]
                } else {
                    Vec::new()
                }
            }
            watcher::Event::Delete(namespace) => namespace
                .metadata
                .name
                .into_iter()
                .filter(|name| self.namespaces.remove(name).is_some())
                .collect(),
            watcher::Event::InitDone => {
                let Some(seen) = self.namespace_list.finished() else {
                    return Vec::new();
                };
                let gone: Vec<String> = self
                    .namespaces
                    .keys()
                    .filter(|n| !seen.contains(*n))
                    .cloned()
                    .collect();
                for name in &gone {
                    self.namespaces.remove(name);
                }
                // The first list decides the scope of every Service already known.
                self.namespaces.keys().cloned().chain(gone).collect()
            }
        };
        let changed: HashSet<&String> = changed_namespaces.iter().collect();
        self.all_service_keys()
            .into_iter()
            .filter(|key| changed.contains(&key.namespace))
            .collect()
    }

    fn service_list(&mut self, stream: usize) -> &mut ListProgress<ServiceKey> {
        let last = self.service_lists.len().saturating_sub(1);
        &mut self.service_lists[stream.min(last)]
    }

    fn upstream_list(&mut self, stream: usize) -> &mut ListProgress<UpstreamKey> {
        let last = self.upstream_lists.len().saturating_sub(1);
        &mut self.upstream_lists[stream.min(last)]
    }

    fn put_upstream(&mut self, key: UpstreamKey, upstream: &Upstream) -> Vec<ServiceKey> {
        let mut affected = self.remove_upstream(&key);
        if !is_owned(upstream) {
            self.foreign.insert(key);
            // A foreign object appearing or going may block or free a name a Service wants.
            return affected;
        }
        let Some(observed) = ObservedUpstream::from_upstream(upstream, FIELD_MANAGER) else {
            return affected;
        };
        let cached = CompactUpstream::new(&observed);
        if let Some(service) = cached.source.clone() {
            self.by_service
                .entry(service.clone())
                .or_default()
                .insert(key.clone());
            if !affected.contains(&service) {
                affected.push(service);
            }
        }
        self.upstreams.insert(key, cached);
        affected
    }

    fn remove_upstream(&mut self, key: &UpstreamKey) -> Vec<ServiceKey> {
        if self.foreign.remove(key) {
            return self.wanted_by.remove(key).into_iter().collect();
        }
        let Some(old) = self.upstreams.remove(key) else {
            return Vec::new();
        };
        let Some(service) = old.source else {
            return Vec::new();
        };
        if let Some(set) = self.by_service.get_mut(&service) {
            set.remove(key);
            if set.is_empty() {
                self.by_service.remove(&service);
            }
        }
        vec![service]
    }
}

fn list_covers<K>(lists: &[ListProgress<K>], stream: usize, namespace: &str) -> bool
where
    K: Eq + std::hash::Hash + Clone,
{
    lists.get(stream).is_some_and(|list| list.covers(namespace))
}

pub fn service_key(service: &Service) -> Option<ServiceKey> {
    Some(ServiceKey {
        namespace: service.metadata.namespace.clone()?,
        name: service.metadata.name.clone()?,
    })
}

pub fn upstream_key(upstream: &Upstream) -> Option<UpstreamKey> {
    Some(UpstreamKey {
        namespace: upstream.metadata.namespace.clone()?,
        name: upstream.metadata.name.clone()?,
    })
}

/// Our ownership marker: the label Gloo's discovery puts on what it writes.
pub fn is_owned(upstream: &Upstream) -> bool {
    upstream
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(DISCOVERED_BY_LABEL))
        .map(String::as_str)
        == Some(KUBERNETES_PLUGIN)
}

/// Only what translation reads: a Service in the cache is a few hundred bytes, not kilobytes
/// (no managedFields, no status, no last-applied-configuration).
pub fn compact_service(service: Service) -> Service {
    let Service { metadata, spec, .. } = service;
    let mut annotations = metadata.annotations;
    if let Some(annotations) = annotations.as_mut() {
        annotations.remove(LAST_APPLIED_ANNOTATION);
    }
    Service {
        metadata: ObjectMeta {
            name: metadata.name,
            namespace: metadata.namespace,
            uid: metadata.uid,
            labels: metadata.labels,
            annotations,
            ..Default::default()
        },
        spec: spec.map(|spec| ServiceSpec {
            selector: spec.selector,
            ports: spec.ports.map(|ports| {
                ports
                    .into_iter()
                    .map(|port| ServicePort {
                        name: port.name,
                        port: port.port,
                        app_protocol: port.app_protocol,
                        ..Default::default()
                    })
                    .collect()
            }),
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests;
