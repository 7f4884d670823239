//! What service discovery knows of the cluster: the Services in scope and the Upstreams in the
//! write namespace(s), kept compact (only the fields translation and planning use), with an
//! index from each Service to the Upstreams it owns and who holds each name. Pure: fed watch
//! events, it says which Services they affect; it never talks to the network.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use k8s_openapi::api::core::v1::{Namespace, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher;

use super::compact::{CompactService, CompactUpstream};
use crate::crd::Upstream;
use crate::model::{
    is_owned, Scope, ServiceKey, UpstreamKey, FIELD_MANAGER, LAST_APPLIED_ANNOTATION,
};
use crate::plan::{NameClaims, NameHolder, ObservedUpstream};
use crate::reconcile::ListTracker;
use crate::selector::LabelSelector;

/// The daemon's cache.
#[derive(Debug)]
pub struct State {
    services: HashMap<ServiceKey, CompactService>,
    service_lists: ListTracker<ServiceKey>,
    upstreams: HashMap<UpstreamKey, CompactUpstream>,
    /// Upstreams without our label: their names are taken, their content is none of our business.
    foreign: HashSet<UpstreamKey>,
    /// The Service that wants each foreign name, so it is re-planned when the name frees up.
    wanted_by: HashMap<UpstreamKey, ServiceKey>,
    upstream_lists: ListTracker<UpstreamKey>,
    by_service: HashMap<ServiceKey, BTreeSet<UpstreamKey>>,
    /// Labels of each namespace, kept only with a namespace selector.
    namespaces: HashMap<String, BTreeMap<String, String>>,
    namespace_list: ListTracker<String>,
    namespace_selector: LabelSelector,
}

impl State {
    /// The scopes of the watch streams of each kind.
    pub fn new(
        service_scopes: &[Scope],
        upstream_scopes: &[Scope],
        namespace_selector: LabelSelector,
    ) -> Self {
        Self {
            services: HashMap::new(),
            service_lists: ListTracker::new(service_scopes.iter().cloned()),
            upstreams: HashMap::new(),
            foreign: HashSet::new(),
            wanted_by: HashMap::new(),
            upstream_lists: ListTracker::new(upstream_scopes.iter().cloned()),
            by_service: HashMap::new(),
            namespaces: HashMap::new(),
            namespace_list: ListTracker::new([Scope::All]),
            namespace_selector,
        }
    }

    /// True once every stream has completed its first full list: only then may anything be
    /// deleted, and only then is the daemon ready.
    pub fn synced(&self) -> bool {
        self.service_lists.all_completed()
            && self.upstream_lists.all_completed()
            && (self.namespace_selector.selects_all() || self.namespace_list.all_completed())
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

    /// A Service watch event; returns the Services whose Upstreams may need work.
    pub fn on_service_event(
        &mut self,
        scope: &Scope,
        event: watcher::Event<Service>,
    ) -> Vec<ServiceKey> {
        match event {
            watcher::Event::Init => {
                self.service_lists.started(scope);
                Vec::new()
            }
            watcher::Event::InitApply(service) | watcher::Event::Apply(service) => {
                let Some(key) = ServiceKey::of(&service.metadata) else {
                    return Vec::new();
                };
                self.service_lists.saw(scope, &key);
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
                let Some(key) = ServiceKey::of(&service.metadata) else {
                    return Vec::new();
                };
                self.services.remove(&key);
                vec![key]
            }
            watcher::Event::InitDone => {
                // A Service gone while the watch was down shows up as missing from the re-list.
                let Some(gone) = self.service_lists.finished(scope, self.services.keys()) else {
                    return Vec::new();
                };
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
        scope: &Scope,
        event: watcher::Event<Upstream>,
    ) -> Vec<ServiceKey> {
        match event {
            watcher::Event::Init => {
                self.upstream_lists.started(scope);
                Vec::new()
            }
            watcher::Event::InitApply(upstream) | watcher::Event::Apply(upstream) => {
                let Some(key) = UpstreamKey::of(&upstream.metadata) else {
                    return Vec::new();
                };
                self.upstream_lists.saw(scope, &key);
                self.put_upstream(key, &upstream)
            }
            watcher::Event::Delete(upstream) => match UpstreamKey::of(&upstream.metadata) {
                Some(key) => self.remove_upstream(&key),
                None => Vec::new(),
            },
            watcher::Event::InitDone => {
                let known = self.upstreams.keys().chain(self.foreign.iter());
                let Some(gone) = self.upstream_lists.finished(scope, known) else {
                    return Vec::new();
                };
                gone.iter()
                    .flat_map(|key| self.remove_upstream(key))
                    .collect()
            }
        }
    }

    /// Records the object the API server returned for one of our writes, so the next plan sees
    /// it even before the watch delivers it.
    pub fn on_written(&mut self, upstream: &Upstream) -> Vec<ServiceKey> {
        match UpstreamKey::of(&upstream.metadata) {
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
                self.namespace_list.started(&Scope::All);
                Vec::new()
            }
            watcher::Event::InitApply(namespace) | watcher::Event::Apply(namespace) => {
                let Some(name) = namespace.metadata.name.clone() else {
                    return Vec::new();
                };
                self.namespace_list.saw(&Scope::All, &name);
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
                let Some(gone) = self
                    .namespace_list
                    .finished(&Scope::All, self.namespaces.keys())
                else {
                    return Vec::new();
                };
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

    fn put_upstream(&mut self, key: UpstreamKey, upstream: &Upstream) -> Vec<ServiceKey> {
        let mut affected = self.remove_upstream(&key);
        if !is_owned(upstream.metadata.labels.as_ref()) {
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

/// Who holds each name: an object without our label, or the Service an owned one was
/// discovered from (named in its `spec.kube`).
impl NameClaims for State {
    fn holder(&self, name: &UpstreamKey) -> NameHolder {
        if self.foreign.contains(name) {
            return NameHolder::Foreign;
        }
        match self
            .upstreams
            .get(name)
            .and_then(|cached| cached.source.clone())
        {
            Some(service) => NameHolder::Service(service),
            None => NameHolder::Free,
        }
    }
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
mod tests {
    use super::*;
    use serde_json::json;

    fn service(namespace: &str, name: &str, port: i32) -> Service {
        serde_json::from_value(json!({
            "metadata": {
                "name": name, "namespace": namespace, "uid": format!("uid-{name}"),
                "resourceVersion": "7",
                "managedFields": [{"manager": "kubectl", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {}}],
                "annotations": {LAST_APPLIED_ANNOTATION: "{}", "team": "a"},
            },
            "spec": {"ports": [{"name": "http", "port": port, "targetPort": 8080, "protocol": "TCP"}],
                     "clusterIP": "10.0.0.1", "selector": {"app": name}},
            "status": {"loadBalancer": {}},
        }))
        .expect("service")
    }

    fn upstream(namespace: &str, name: &str, owned: bool, service: &str) -> Upstream {
        let labels = if owned {
            json!({"discovered_by": "kubernetesplugin"})
        } else {
            json!({})
        };
        serde_json::from_value(json!({
            "apiVersion": "gloo.solo.io/v1", "kind": "Upstream",
            "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}"), "resourceVersion": "1", "labels": labels},
            "spec": {"kube": {"serviceName": service, "serviceNamespace": "shop", "servicePort": 80}},
        }))
        .expect("upstream")
    }

    fn key(name: &str) -> ServiceKey {
        ServiceKey::new("shop", name)
    }

    fn ukey(name: &str) -> UpstreamKey {
        UpstreamKey::new("gloo-system", name)
    }

    fn ns(name: &str) -> Scope {
        Scope::Namespace(name.into())
    }

    const ALL: &Scope = &Scope::All;

    fn synced_state() -> State {
        let mut state = State::new(
            &[Scope::All],
            &[ns("gloo-system")],
            LabelSelector::default(),
        );
        for event in [watcher::Event::Init, watcher::Event::InitDone] {
            state.on_service_event(ALL, event);
        }
        for event in [watcher::Event::Init, watcher::Event::InitDone] {
            state.on_upstream_event(&ns("gloo-system"), event);
        }
        state
    }

    #[test]
    fn the_cache_keeps_only_what_translation_reads() {
        let compact = compact_service(service("shop", "web", 80));
        let value = serde_json::to_value(&compact).expect("json");
        assert_eq!(
            value,
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "namespace": "shop", "uid": "uid-web", "annotations": {"team": "a"}},
                "spec": {"ports": [{"name": "http", "port": 80}], "selector": {"app": "web"}},
            })
        );
    }

    #[test]
    fn service_events_touch_only_on_change() {
        let mut state = synced_state();
        assert_eq!(
            state.on_service_event(ALL, watcher::Event::Apply(service("shop", "web", 80))),
            [key("web")]
        );
        assert!(
            state
                .on_service_event(ALL, watcher::Event::Apply(service("shop", "web", 80)))
                .is_empty(),
            "same content"
        );
        assert_eq!(
            state.on_service_event(ALL, watcher::Event::Apply(service("shop", "web", 81))),
            [key("web")]
        );
        assert!(state.service_in_scope(&key("web")).is_some());
        assert_eq!(
            state.on_service_event(ALL, watcher::Event::Delete(service("shop", "web", 81))),
            [key("web")]
        );
        assert!(state.service_in_scope(&key("web")).is_none());
    }

    #[test]
    fn synced_only_after_every_first_list() {
        let mut state = State::new(&[ns("a"), ns("b")], &[Scope::All], LabelSelector::default());
        assert!(!state.synced());
        for scope in [ns("a"), ns("b")] {
            state.on_service_event(&scope, watcher::Event::Init);
            state.on_service_event(&scope, watcher::Event::InitDone);
        }
        assert!(!state.synced(), "Upstreams not listed yet");
        state.on_upstream_event(ALL, watcher::Event::Init);
        state.on_upstream_event(ALL, watcher::Event::InitDone);
        assert!(state.synced());
    }

    #[test]
    fn a_relist_notices_services_deleted_while_the_watch_was_down() {
        let mut state = State::new(
            &[ns("shop"), ns("other")],
            &[Scope::All],
            LabelSelector::default(),
        );
        state.on_service_event(&ns("shop"), watcher::Event::Init);
        state.on_service_event(
            &ns("shop"),
            watcher::Event::InitApply(service("shop", "web", 80)),
        );
        state.on_service_event(
            &ns("shop"),
            watcher::Event::InitApply(service("shop", "api", 80)),
        );
        state.on_service_event(&ns("shop"), watcher::Event::InitDone);
        state.on_service_event(&ns("other"), watcher::Event::Init);
        state.on_service_event(
            &ns("other"),
            watcher::Event::InitApply(service("other", "db", 80)),
        );
        state.on_service_event(&ns("other"), watcher::Event::InitDone);

        // The "shop" watch restarts and its list no longer has "api".
        state.on_service_event(&ns("shop"), watcher::Event::Init);
        state.on_service_event(
            &ns("shop"),
            watcher::Event::InitApply(service("shop", "web", 80)),
        );
        let gone = state.on_service_event(&ns("shop"), watcher::Event::InitDone);
        assert_eq!(gone, [key("api")]);
        let other = ServiceKey::new("other", "db");
        assert!(
            state.service_in_scope(&other).is_some(),
            "another stream's objects stay"
        );
    }

    #[test]
    fn owned_upstreams_are_indexed_by_their_service_and_foreign_ones_only_block_names() {
        let mut state = synced_state();
        let touched = state.on_upstream_event(
            &ns("gloo-system"),
            watcher::Event::Apply(upstream("gloo-system", "shop-web-80", true, "web")),
        );
        assert_eq!(touched, [key("web")]);
        assert_eq!(state.observed_for(&key("web")).len(), 1);
        assert_eq!(
            state.holder(&ukey("shop-web-80")),
            NameHolder::Service(key("web"))
        );
        assert_eq!(state.owned_upstream_count(), 1);

        let touched = state.on_upstream_event(
            &ns("gloo-system"),
            watcher::Event::Apply(upstream("gloo-system", "shop-api-80", false, "api")),
        );
        assert!(touched.is_empty(), "nobody wanted that name yet");
        assert_eq!(state.holder(&ukey("shop-api-80")), NameHolder::Foreign);
        assert!(
            state.observed_for(&key("api")).is_empty(),
            "never planned against"
        );
        state.wants(ukey("shop-api-80"), key("api"));
        let touched = state.on_upstream_event(
            &ns("gloo-system"),
            watcher::Event::Delete(upstream("gloo-system", "shop-api-80", false, "api")),
        );
        assert_eq!(
            touched,
            [key("api")],
            "the Service that wanted the name is re-planned"
        );

        // Someone replaces our object with an unlabelled one of the same name.
        let touched = state.on_upstream_event(
            &ns("gloo-system"),
            watcher::Event::Apply(upstream("gloo-system", "shop-web-80", false, "web")),
        );
        assert_eq!(touched, [key("web")]);
        assert_eq!(state.holder(&ukey("shop-web-80")), NameHolder::Foreign);
        assert!(state.observed_for(&key("web")).is_empty());
    }

    #[test]
    fn an_upstream_relist_drops_what_is_gone() {
        let mut state = synced_state();
        state.on_upstream_event(
            &ns("gloo-system"),
            watcher::Event::Apply(upstream("gloo-system", "shop-web-80", true, "web")),
        );
        state.on_upstream_event(&ns("gloo-system"), watcher::Event::Init);
        let touched = state.on_upstream_event(&ns("gloo-system"), watcher::Event::InitDone);
        assert_eq!(touched, [key("web")]);
        assert_eq!(state.owned_upstream_count(), 0);
    }

    #[test]
    fn namespace_selector_scopes_services() {
        let mut state = State::new(
            &[Scope::All],
            &[Scope::All],
            "team=a".parse().expect("selector"),
        );
        let namespace = |labels: serde_json::Value| -> Namespace {
            serde_json::from_value(json!({"metadata": {"name": "shop", "labels": labels}}))
                .expect("ns")
        };
        state.on_service_event(ALL, watcher::Event::Apply(service("shop", "web", 80)));
        assert!(
            state.service_in_scope(&key("web")).is_none(),
            "namespace not seen yet"
        );
        state.on_namespace_event(watcher::Event::Init);
        state.on_namespace_event(watcher::Event::InitApply(namespace(json!({"team": "a"}))));
        let touched = state.on_namespace_event(watcher::Event::InitDone);
        assert_eq!(touched, [key("web")]);
        assert!(state.service_in_scope(&key("web")).is_some());
        let touched =
            state.on_namespace_event(watcher::Event::Apply(namespace(json!({"team": "b"}))));
        assert_eq!(touched, [key("web")]);
        assert!(state.service_in_scope(&key("web")).is_none());
    }
}
