//! What service discovery knows of the cluster: the Services in scope and the Upstreams in the
//! write namespace(s), kept compact (only the fields translation and planning use), and who
//! claims each Upstream name. Pure: fed watch events, it says which jobs they affect; it never
//! talks to the network.
//!
//! Names are claimed and collected by name (docs/behaviour.md), not by what an Upstream's `kube`
//! says: an owned Upstream belongs to the in-scope Service that maps to its name, and one that
//! no in-scope Service maps to is collected, whatever its spec (an override may have replaced
//! `kube`). When several Services map to one name, the one named in the Upstream's `kube` keeps
//! it while it still maps there; otherwise the smallest Service key gets it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::runtime::watcher;

use super::compact::{Claimants, CompactService, CompactUpstream};
use super::grant_cache::GrantCache;
use crate::compact::compact_service;
use crate::crd::{ReferenceGrant, Upstream};
use crate::model::{is_owned, Scope, ServiceKey, UpstreamKey, DISCOVERY_MANAGERS};
use crate::plan::{NameClaims, NameHolder, ObservedGrant, ObservedUpstream, OwnedUpstream};
use crate::reconcile::ListTracker;
use crate::selector::LabelSelector;
use crate::translate::{upstream_keys, WriteNamespace};

/// A unit of work of the loop.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Job {
    /// Write the Upstreams of one Service (the names it holds).
    Service(ServiceKey),
    /// An owned Upstream whose name no in-scope Service maps to: collect it.
    Orphan(UpstreamKey),
}

impl fmt::Display for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Job::Service(key) => write!(f, "Service {key}"),
            Job::Orphan(key) => write!(f, "unclaimed Upstream {key}"),
        }
    }
}

/// The daemon's cache.
#[derive(Debug)]
pub struct State {
    services: HashMap<ServiceKey, CompactService>,
    service_lists: ListTracker<ServiceKey>,
    upstreams: HashMap<UpstreamKey, CompactUpstream>,
    /// Upstreams without our label: their names are taken, their content is none of our business.
    foreign: HashSet<UpstreamKey>,
    upstream_lists: ListTracker<UpstreamKey>,
    /// The names each in-scope Service maps to.
    names_of: HashMap<ServiceKey, Vec<UpstreamKey>>,
    /// The in-scope Services that map to each name (usually one).
    mappers: HashMap<UpstreamKey, Claimants>,
    write_namespace: WriteNamespace,
    /// Labels of each namespace, kept only with a namespace selector.
    namespaces: HashMap<String, BTreeMap<String, String>>,
    namespace_list: ListTracker<String>,
    namespace_selector: LabelSelector,
    /// The ReferenceGrants of the write namespace, with `--reference-grants`.
    grants: Option<GrantCache>,
}

impl State {
    /// The scopes of the watch streams of each kind, and where Upstreams are written (it decides
    /// the names Services claim).
    pub fn new(
        service_scopes: &[Scope],
        upstream_scopes: &[Scope],
        namespace_selector: LabelSelector,
        write_namespace: WriteNamespace,
    ) -> Self {
        Self {
            services: HashMap::new(),
            service_lists: ListTracker::new(service_scopes.iter().cloned()),
            upstreams: HashMap::new(),
            foreign: HashSet::new(),
            upstream_lists: ListTracker::new(upstream_scopes.iter().cloned()),
            names_of: HashMap::new(),
            mappers: HashMap::new(),
            write_namespace,
            namespaces: HashMap::new(),
            namespace_list: ListTracker::new([Scope::All]),
            namespace_selector,
            grants: None,
        }
    }

    /// Keeps a ReferenceGrant beside each Upstream of the write namespace, the first of
    /// `namespaces` (the others: earlier write namespaces, whose owned grants are collected);
    /// grants are planned once their first lists complete.
    pub fn enable_grants(&mut self, namespaces: &[String]) {
        self.grants = Some(GrantCache::new(namespaces));
    }

    /// The grants, once listed: `None` while grants are off, or not listed yet (no CRD).
    pub fn grants(&self) -> Option<&GrantCache> {
        self.grants.as_ref().filter(|grants| grants.synced())
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

    /// Entries of every map the cache keeps, for tests of bounded memory.
    #[cfg(test)]
    pub fn entries(&self) -> usize {
        self.services.len()
            + self.upstreams.len()
            + self.foreign.len()
            + self.names_of.len()
            + self.mappers.len()
            + self.namespaces.len()
            + self.grants.as_ref().map_or(0, GrantCache::entries)
    }

    /// Every job a full pass must look at: each known Service, and each unclaimed Upstream.
    pub fn all_jobs(&self) -> BTreeSet<Job> {
        let services = self.services.keys().cloned().map(Job::Service);
        let grants = self.grants.iter().flat_map(GrantCache::owned_names);
        let orphans = self
            .upstreams
            .keys()
            .chain(grants)
            .filter(|name| !self.mappers.contains_key(*name))
            .cloned()
            .map(Job::Orphan);
        services.chain(orphans).collect()
    }

    /// The Service, when it exists and is in scope (its namespace matches the selector).
    pub fn service_in_scope(&self, key: &ServiceKey) -> Option<Service> {
        let service = self.services.get(key)?;
        if !self.in_scope(key) {
            return None;
        }
        service.expand()
    }

    fn in_scope(&self, key: &ServiceKey) -> bool {
        self.namespace_selector.selects_all()
            || self
                .namespaces
                .get(&*key.namespace)
                .is_some_and(|labels| self.namespace_selector.matches(labels))
    }

    /// The owned Upstreams at the names this Service holds: what its plan updates in place.
    pub fn owned_for(&self, key: &ServiceKey) -> Vec<OwnedUpstream> {
        let holder = NameHolder::Service(key.clone());
        self.names_of
            .get(key)
            .into_iter()
            .flatten()
            .filter(|name| self.holder(name) == holder)
            .filter_map(|name| self.upstreams.get(name)?.expand(name))
            .collect()
    }

    /// The owned Upstream of that name, when no in-scope Service maps to it.
    pub fn unclaimed(&self, name: &UpstreamKey) -> Option<OwnedUpstream> {
        if self.mappers.contains_key(name) {
            return None;
        }
        self.upstreams.get(name)?.expand(name)
    }

    /// The owned grants at the names this Service answers for: those it holds, and those an
    /// unlabelled Upstream holds (a grant must never point at someone else's Upstream).
    pub fn grants_for(&self, key: &ServiceKey) -> Vec<ObservedGrant> {
        let Some(grants) = self.grants() else {
            return Vec::new();
        };
        let holder = NameHolder::Service(key.clone());
        self.names_of
            .get(key)
            .into_iter()
            .flatten()
            .filter(|name| {
                matches!(self.holder(name), NameHolder::Foreign) || self.holder(name) == holder
            })
            .filter_map(|name| grants.owned(name).cloned())
            .collect()
    }

    /// The owned grant of that name, when no in-scope Service maps to it.
    pub fn unclaimed_grant(&self, name: &UpstreamKey) -> Option<ObservedGrant> {
        if self.mappers.contains_key(name) {
            return None;
        }
        self.grants()?.owned(name).cloned()
    }

    /// A ReferenceGrant watch event; returns the jobs that may need work (all of them once the
    /// first list completes).
    pub fn on_grant_event(
        &mut self,
        scope: &Scope,
        event: watcher::Event<ReferenceGrant>,
    ) -> Vec<Job> {
        let Some(grants) = self.grants.as_mut() else {
            return Vec::new();
        };
        let change = grants.on_event(scope, event);
        if change.first_sync {
            return self.all_jobs().into_iter().collect();
        }
        change
            .names
            .iter()
            .flat_map(|name| self.jobs_for_name(name))
            .collect()
    }

    /// Records a grant the API server returned for one of our writes.
    pub fn on_grant_written(&mut self, grant: &ReferenceGrant) {
        if let Some(grants) = self.grants.as_mut() {
            grants.put(grant);
        }
    }

    /// Records a name a grant create found taken by someone else's grant.
    pub fn mark_foreign_grant(&mut self, key: UpstreamKey) {
        if let Some(grants) = self.grants.as_mut() {
            grants.mark_foreign(key);
        }
    }

    /// Records that one of our grant deletes went through.
    pub fn on_grant_deleted(&mut self, key: &UpstreamKey) {
        if let Some(grants) = self.grants.as_mut() {
            grants.remove(key);
        }
    }

    pub fn owned_grant_count(&self) -> usize {
        self.grants.as_ref().map_or(0, GrantCache::owned_count)
    }

    /// A Service watch event; returns the jobs that may need work.
    pub fn on_service_event(&mut self, scope: &Scope, event: watcher::Event<Service>) -> Vec<Job> {
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
                if self.services.get(&key) == Some(&service) {
                    return Vec::new();
                }
                self.services.insert(key.clone(), service);
                self.service_changed(key)
            }
            watcher::Event::Delete(service) => {
                let Some(key) = ServiceKey::of(&service.metadata) else {
                    return Vec::new();
                };
                self.services.remove(&key);
                self.service_changed(key)
            }
            watcher::Event::InitDone => {
                // A Service gone while the watch was down shows up as missing from the re-list.
                let Some(gone) = self.service_lists.finished(scope, self.services.keys()) else {
                    return Vec::new();
                };
                let mut jobs = Vec::new();
                for key in gone {
                    self.services.remove(&key);
                    jobs.extend(self.service_changed(key));
                }
                jobs
            }
        }
    }

    /// An Upstream watch event; returns the jobs that may need work.
    pub fn on_upstream_event(
        &mut self,
        scope: &Scope,
        event: watcher::Event<Upstream>,
    ) -> Vec<Job> {
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
    pub fn on_written(&mut self, upstream: &Upstream) {
        if let Some(key) = UpstreamKey::of(&upstream.metadata) {
            self.put_upstream(key, upstream);
        }
    }

    /// Records a name that a create found taken by someone else's object.
    pub fn mark_foreign(&mut self, key: UpstreamKey) {
        self.remove_upstream(&key);
        self.foreign.insert(key);
    }

    /// Records that one of our deletes went through.
    pub fn on_deleted(&mut self, key: &UpstreamKey) {
        self.remove_upstream(key);
    }

    /// A Namespace watch event (only with a namespace selector); returns the jobs whose scope
    /// may have changed.
    pub fn on_namespace_event(&mut self, event: watcher::Event<Namespace>) -> Vec<Job> {
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
        let changed: HashSet<&str> = changed_namespaces.iter().map(String::as_str).collect();
        let services: Vec<ServiceKey> = self
            .services
            .keys()
            .filter(|key| changed.contains(&*key.namespace))
            .cloned()
            .collect();
        services
            .into_iter()
            .flat_map(|key| self.service_changed(key))
            .collect()
    }

    /// Re-reads which names a Service maps to after it changed, appeared, went or changed scope;
    /// returns its job and those of every name whose claimants changed.
    fn service_changed(&mut self, key: ServiceKey) -> Vec<Job> {
        let names = match self.service_in_scope(&key) {
            Some(service) => upstream_keys(&service, &self.write_namespace),
            None => Vec::new(),
        };
        let old = match names.is_empty() {
            true => self.names_of.remove(&key),
            false => self.names_of.insert(key.clone(), names.clone()),
        }
        .unwrap_or_default();
        let mut jobs = vec![Job::Service(key.clone())];
        for name in old.iter().filter(|name| !names.contains(name)) {
            if let Some(claimants) = self.mappers.get_mut(name) {
                claimants.remove(&key);
                if claimants.is_empty() {
                    self.mappers.remove(name);
                }
            }
            jobs.extend(self.jobs_for_name(name));
        }
        for name in names.iter().filter(|name| !old.contains(name)) {
            self.mappers
                .entry(name.clone())
                .or_default()
                .insert(key.clone());
            jobs.extend(self.jobs_for_name(name));
        }
        jobs.sort();
        jobs.dedup();
        jobs
    }

    /// The jobs a change at `name` may concern: every Service that maps to it (one may take it
    /// over), and its collection when it is owned and unclaimed.
    fn jobs_for_name(&self, name: &UpstreamKey) -> Vec<Job> {
        let mut jobs: Vec<Job> = self
            .mappers
            .get(name)
            .into_iter()
            .flatten()
            .cloned()
            .map(Job::Service)
            .collect();
        let owned_grant = self
            .grants
            .as_ref()
            .is_some_and(|grants| grants.owned(name).is_some());
        if jobs.is_empty() && (self.upstreams.contains_key(name) || owned_grant) {
            jobs.push(Job::Orphan(name.clone()));
        }
        jobs
    }

    fn put_upstream(&mut self, key: UpstreamKey, upstream: &Upstream) -> Vec<Job> {
        self.upstreams.remove(&key);
        self.foreign.remove(&key);
        if !is_owned(upstream.metadata.labels.as_ref()) {
            // A foreign object appearing may block a name a Service wants.
            self.foreign.insert(key.clone());
        } else if let Some(observed) =
            ObservedUpstream::from_upstream(upstream, &DISCOVERY_MANAGERS)
        {
            self.upstreams
                .insert(key.clone(), CompactUpstream::new(&observed));
        }
        self.jobs_for_name(&key)
    }

    fn remove_upstream(&mut self, key: &UpstreamKey) -> Vec<Job> {
        let known = self.upstreams.remove(key).is_some() | self.foreign.remove(key);
        if !known {
            return Vec::new();
        }
        // A freed name passes at once to a Service waiting for it.
        self.jobs_for_name(key)
    }
}

/// Who holds each name: an object without our label; else the Service named in the owned
/// Upstream's `spec.kube` while that Service still maps to the name; else the smallest Service
/// key among those that map to it.
impl NameClaims for State {
    fn holder(&self, name: &UpstreamKey) -> NameHolder {
        if self.foreign.contains(name) {
            return NameHolder::Foreign;
        }
        let Some(claimants) = self.mappers.get(name) else {
            return NameHolder::Free;
        };
        let named_in_kube = self
            .upstreams
            .get(name)
            .and_then(CompactUpstream::source)
            .and_then(|(namespace, service)| claimants.find(namespace, service));
        match named_in_kube.or_else(|| claimants.first()) {
            Some(holder) => NameHolder::Service(holder.clone()),
            None => NameHolder::Free,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LAST_APPLIED_ANNOTATION;
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

    /// An Upstream whose `kube` names Service `kube_ns`/`kube_name` (`None`: an override
    /// replaced `kube` with `static`).
    fn upstream(name: &str, owned: bool, kube: Option<(&str, &str)>) -> Upstream {
        let labels = if owned {
            json!({"discovered_by": "kubernetesplugin"})
        } else {
            json!({})
        };
        let spec = match kube {
            Some((namespace, service)) => {
                json!({"kube": {"serviceName": service, "serviceNamespace": namespace, "servicePort": 80}})
            }
            None => json!({"static": {"hosts": [{"addr": "10.0.0.9", "port": 80}]}}),
        };
        serde_json::from_value(json!({
            "apiVersion": "gloo.solo.io/v1", "kind": "Upstream",
            "metadata": {"name": name, "namespace": "gloo-system", "uid": format!("uid-{name}"), "resourceVersion": "1", "labels": labels},
            "spec": spec,
        }))
        .expect("upstream")
    }

    fn key(name: &str) -> ServiceKey {
        ServiceKey::new("shop", name)
    }

    fn job(name: &str) -> Job {
        Job::Service(key(name))
    }

    fn ukey(name: &str) -> UpstreamKey {
        UpstreamKey::new("gloo-system", name)
    }

    fn ns(name: &str) -> Scope {
        Scope::Namespace(name.into())
    }

    const ALL: &Scope = &Scope::All;

    fn new_state(services: &[Scope], upstreams: &[Scope], selector: LabelSelector) -> State {
        State::new(
            services,
            upstreams,
            selector,
            WriteNamespace::Fixed("gloo-system".into()),
        )
    }

    fn synced_state() -> State {
        let mut state = new_state(
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

    fn add_upstream(state: &mut State, upstream: Upstream) -> Vec<Job> {
        state.on_upstream_event(&ns("gloo-system"), watcher::Event::Apply(upstream))
    }

    fn observed_names(state: &State, service: &ServiceKey) -> Vec<String> {
        state
            .owned_for(service)
            .into_iter()
            .map(|observed| observed.name)
            .collect()
    }

    #[test]
    fn service_events_touch_only_on_change() {
        let mut state = synced_state();
        assert_eq!(
            state.on_service_event(ALL, watcher::Event::Apply(service("shop", "web", 80))),
            [job("web")]
        );
        assert!(
            state
                .on_service_event(ALL, watcher::Event::Apply(service("shop", "web", 80)))
                .is_empty(),
            "same content"
        );
        assert_eq!(
            state.on_service_event(ALL, watcher::Event::Apply(service("shop", "web", 81))),
            [job("web")]
        );
        assert!(state.service_in_scope(&key("web")).is_some());
        assert_eq!(
            state.on_service_event(ALL, watcher::Event::Delete(service("shop", "web", 81))),
            [job("web")]
        );
        assert!(state.service_in_scope(&key("web")).is_none());
    }

    #[test]
    fn synced_only_after_every_first_list() {
        let mut state = new_state(&[ns("a"), ns("b")], &[Scope::All], LabelSelector::default());
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
        let mut state = new_state(
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
        assert_eq!(gone, [job("api")]);
        let other = ServiceKey::new("other", "db");
        assert!(
            state.service_in_scope(&other).is_some(),
            "another stream's objects stay"
        );
    }

    #[test]
    fn an_owned_upstream_belongs_to_the_service_that_maps_to_its_name() {
        let mut state = synced_state();
        state.on_service_event(ALL, watcher::Event::Apply(service("shop", "web", 80)));
        let touched = add_upstream(
            &mut state,
            upstream("shop-web-80", true, Some(("shop", "web"))),
        );
        assert_eq!(touched, [job("web")]);
        assert_eq!(observed_names(&state, &key("web")), ["shop-web-80"]);
        assert_eq!(
            state.holder(&ukey("shop-web-80")),
            NameHolder::Service(key("web"))
        );
        assert_eq!(state.owned_upstream_count(), 1);
    }

    #[test]
    fn whatever_its_kube_says_the_name_decides() {
        // Issue 11, failure 4: `kube` names a Service that does not exist.
        let mut state = synced_state();
        state.on_service_event(ALL, watcher::Event::Apply(service("shop", "web", 80)));
        add_upstream(
            &mut state,
            upstream("shop-web-80", true, Some(("elsewhere", "ghost"))),
        );
        assert_eq!(
            state.holder(&ukey("shop-web-80")),
            NameHolder::Service(key("web"))
        );
        assert_eq!(
            observed_names(&state, &key("web")),
            ["shop-web-80"],
            "updated in place, not re-created"
        );
        assert!(state.unclaimed(&ukey("shop-web-80")).is_none());
        assert!(!state.all_jobs().contains(&Job::Orphan(ukey("shop-web-80"))));
    }

    #[test]
    fn a_freed_name_passes_at_once_to_the_other_service() {
        // Issue 11, failure 3: `x-y/z` and `x/y-z` both map to `x-y-z-80`.
        let mut state = synced_state();
        let first = ServiceKey::new("x-y", "z");
        let second = ServiceKey::new("x", "y-z");
        state.on_service_event(ALL, watcher::Event::Apply(service("x-y", "z", 80)));
        add_upstream(&mut state, upstream("x-y-z-80", true, Some(("x-y", "z"))));
        let touched = state.on_service_event(ALL, watcher::Event::Apply(service("x", "y-z", 80)));
        assert_eq!(
            touched,
            [Job::Service(second.clone()), Job::Service(first.clone())]
        );
        assert_eq!(
            state.holder(&ukey("x-y-z-80")),
            NameHolder::Service(first.clone())
        );
        assert!(observed_names(&state, &second).is_empty());

        let touched = state.on_service_event(ALL, watcher::Event::Delete(service("x-y", "z", 80)));
        assert!(
            touched.contains(&Job::Service(second.clone())),
            "the waiting Service is planned at once: {touched:?}"
        );
        assert_eq!(
            state.holder(&ukey("x-y-z-80")),
            NameHolder::Service(second.clone())
        );
        assert_eq!(observed_names(&state, &second), ["x-y-z-80"]);
    }

    #[test]
    fn without_a_holder_the_smallest_service_key_gets_the_name() {
        let mut state = synced_state();
        state.on_service_event(ALL, watcher::Event::Apply(service("x", "y-z", 80)));
        state.on_service_event(ALL, watcher::Event::Apply(service("x-y", "z", 80)));
        assert_eq!(
            state.holder(&ukey("x-y-z-80")),
            NameHolder::Service(ServiceKey::new("x", "y-z"))
        );
    }

    #[test]
    fn an_owned_upstream_no_service_maps_to_is_collected_whatever_its_spec() {
        // Issue 11, failure 5: an override replaced `kube` with `static`.
        let mut state = synced_state();
        state.on_service_event(ALL, watcher::Event::Apply(service("shop", "web", 80)));
        add_upstream(&mut state, upstream("shop-web-80", true, None));
        assert_eq!(observed_names(&state, &key("web")), ["shop-web-80"]);
        let touched =
            state.on_service_event(ALL, watcher::Event::Delete(service("shop", "web", 80)));
        assert_eq!(touched, [job("web"), Job::Orphan(ukey("shop-web-80"))]);
        assert!(state.unclaimed(&ukey("shop-web-80")).is_some());
        assert!(state.all_jobs().contains(&Job::Orphan(ukey("shop-web-80"))));

        let mut state = synced_state();
        let touched = add_upstream(&mut state, upstream("left-over-80", true, None));
        assert_eq!(
            touched,
            [Job::Orphan(ukey("left-over-80"))],
            "found unclaimed"
        );
    }

    #[test]
    fn foreign_upstreams_only_block_names_and_free_them_when_gone() {
        let mut state = synced_state();
        let touched = add_upstream(
            &mut state,
            upstream("shop-api-80", false, Some(("shop", "api"))),
        );
        assert!(touched.is_empty(), "nobody wants that name yet");
        assert!(
            !state.all_jobs().contains(&Job::Orphan(ukey("shop-api-80"))),
            "never collected"
        );
        state.on_service_event(ALL, watcher::Event::Apply(service("shop", "api", 80)));
        assert_eq!(state.holder(&ukey("shop-api-80")), NameHolder::Foreign);
        assert!(
            observed_names(&state, &key("api")).is_empty(),
            "never planned against"
        );
        let touched = state.on_upstream_event(
            &ns("gloo-system"),
            watcher::Event::Delete(upstream("shop-api-80", false, Some(("shop", "api")))),
        );
        assert_eq!(
            touched,
            [job("api")],
            "the Service that wants the name is re-planned"
        );

        // Someone replaces our object with an unlabelled one of the same name.
        state.on_service_event(ALL, watcher::Event::Apply(service("shop", "web", 80)));
        add_upstream(
            &mut state,
            upstream("shop-web-80", true, Some(("shop", "web"))),
        );
        let touched = add_upstream(
            &mut state,
            upstream("shop-web-80", false, Some(("shop", "web"))),
        );
        assert_eq!(touched, [job("web")]);
        assert_eq!(state.holder(&ukey("shop-web-80")), NameHolder::Foreign);
        assert!(observed_names(&state, &key("web")).is_empty());
    }

    #[test]
    fn an_upstream_relist_drops_what_is_gone() {
        let mut state = synced_state();
        state.on_service_event(ALL, watcher::Event::Apply(service("shop", "web", 80)));
        add_upstream(
            &mut state,
            upstream("shop-web-80", true, Some(("shop", "web"))),
        );
        state.on_upstream_event(&ns("gloo-system"), watcher::Event::Init);
        let touched = state.on_upstream_event(&ns("gloo-system"), watcher::Event::InitDone);
        assert_eq!(touched, [job("web")]);
        assert_eq!(state.owned_upstream_count(), 0);
    }

    #[test]
    fn namespace_selector_scopes_services_and_their_claims() {
        let mut state = new_state(
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
        assert_eq!(state.holder(&ukey("shop-web-80")), NameHolder::Free);
        state.on_namespace_event(watcher::Event::Init);
        state.on_namespace_event(watcher::Event::InitApply(namespace(json!({"team": "a"}))));
        let touched = state.on_namespace_event(watcher::Event::InitDone);
        assert_eq!(touched, [job("web")]);
        assert!(state.service_in_scope(&key("web")).is_some());
        assert_eq!(
            state.holder(&ukey("shop-web-80")),
            NameHolder::Service(key("web"))
        );
        add_upstream(
            &mut state,
            upstream("shop-web-80", true, Some(("shop", "web"))),
        );
        let touched =
            state.on_namespace_event(watcher::Event::Apply(namespace(json!({"team": "b"}))));
        assert_eq!(touched, [job("web"), Job::Orphan(ukey("shop-web-80"))]);
        assert!(state.service_in_scope(&key("web")).is_none());
        assert!(
            state.unclaimed(&ukey("shop-web-80")).is_some(),
            "out of scope: collected"
        );
    }
}
