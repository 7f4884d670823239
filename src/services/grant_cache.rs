//! What service discovery knows of the ReferenceGrants in the write namespace (only with
//! `--reference-grants`): the owned ones, whole (they are small), and the names unlabelled ones
//! hold. Pure: fed watch events, it says which names they touch.

use std::collections::{HashMap, HashSet};

use kube::runtime::watcher;

use crate::crd::ReferenceGrant;
use crate::model::{Scope, UpstreamKey};
use crate::plan::ObservedGrant;
use crate::reconcile::ListTracker;

/// What a grant watch event changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GrantChange {
    /// The names whose grant appeared, changed or went.
    pub names: Vec<UpstreamKey>,
    /// The first full list just completed: every Service may now plan its grants.
    pub first_sync: bool,
}

#[derive(Debug)]
pub struct GrantCache {
    owned: HashMap<UpstreamKey, ObservedGrant>,
    /// Grants without our label: their names are taken.
    foreign: HashSet<UpstreamKey>,
    lists: ListTracker<UpstreamKey>,
    synced: bool,
}

impl GrantCache {
    /// Grants of `namespaces`: the write namespace, and those where an earlier configuration
    /// wrote them (the owned ones there no Service maps to are collected).
    pub fn new(namespaces: &[String]) -> Self {
        Self {
            lists: ListTracker::new(
                namespaces
                    .iter()
                    .map(|namespace| Scope::Namespace(namespace.clone())),
            ),
            owned: HashMap::new(),
            foreign: HashSet::new(),
            synced: false,
        }
    }

    /// The first full list of every namespace has completed: grants may be planned (and
    /// deleted). Until then (and
    /// for good without the CRD) Services plan their Upstreams alone.
    pub fn synced(&self) -> bool {
        self.synced
    }

    pub fn owned_count(&self) -> usize {
        self.owned.len()
    }

    pub fn entries(&self) -> usize {
        self.owned.len() + self.foreign.len()
    }

    pub fn owned(&self, name: &UpstreamKey) -> Option<&ObservedGrant> {
        self.owned.get(name)
    }

    pub fn is_foreign(&self, name: &UpstreamKey) -> bool {
        self.foreign.contains(name)
    }

    /// The names of the owned grants.
    pub fn owned_names(&self) -> impl Iterator<Item = &UpstreamKey> {
        self.owned.keys()
    }

    pub fn on_event(
        &mut self,
        scope: &Scope,
        event: watcher::Event<ReferenceGrant>,
    ) -> GrantChange {
        let scope = scope.clone();
        match event {
            watcher::Event::Init => {
                self.lists.started(&scope);
                GrantChange::default()
            }
            watcher::Event::InitApply(grant) | watcher::Event::Apply(grant) => {
                let Some(key) = key_of(&grant) else {
                    return GrantChange::default();
                };
                self.lists.saw(&scope, &key);
                self.put(&grant)
            }
            watcher::Event::Delete(grant) => GrantChange {
                names: key_of(&grant)
                    .filter(|key| self.remove(key))
                    .into_iter()
                    .collect(),
                first_sync: false,
            },
            watcher::Event::InitDone => {
                let known: Vec<UpstreamKey> =
                    self.owned.keys().chain(&self.foreign).cloned().collect();
                let Some(gone) = self.lists.finished(&scope, &known) else {
                    return GrantChange::default();
                };
                let names = gone.into_iter().filter(|key| self.remove(key)).collect();
                let first_sync = !self.synced && self.lists.all_completed();
                self.synced |= first_sync;
                GrantChange { names, first_sync }
            }
        }
    }

    /// Records a grant as the API server returned it (a watch event, or one of our writes).
    pub fn put(&mut self, grant: &ReferenceGrant) -> GrantChange {
        let Some(key) = key_of(grant) else {
            return GrantChange::default();
        };
        let before = (self.owned.remove(&key), self.foreign.remove(&key));
        match ObservedGrant::owned(grant) {
            Some(observed) => {
                self.owned.insert(key.clone(), observed);
            }
            None => {
                self.foreign.insert(key.clone());
            }
        }
        let changed = before != (self.owned.get(&key).cloned(), self.foreign.contains(&key));
        GrantChange {
            names: if changed { vec![key] } else { Vec::new() },
            first_sync: false,
        }
    }

    /// A name a create found taken by an unlabelled grant.
    pub fn mark_foreign(&mut self, key: UpstreamKey) {
        self.owned.remove(&key);
        self.foreign.insert(key);
    }

    /// Forgets the grant at `key`; true when there was one.
    pub fn remove(&mut self, key: &UpstreamKey) -> bool {
        self.owned.remove(key).is_some() | self.foreign.remove(key)
    }
}

fn key_of(grant: &ReferenceGrant) -> Option<UpstreamKey> {
    let meta = &grant.metadata;
    Some(UpstreamKey::new(
        meta.namespace.as_deref()?,
        meta.name.as_deref()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(name: &str, owned: bool) -> ReferenceGrant {
        let mut grant: ReferenceGrant = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "gloo-system", "uid": format!("u-{name}"), "resourceVersion": "1"},
            "spec": {"from": [], "to": []},
        }))
        .expect("grant");
        if owned {
            grant.metadata.labels =
                Some([("discovered_by".into(), "kubernetesplugin".into())].into());
        }
        grant
    }

    #[test]
    fn owned_and_foreign_grants_are_told_apart_and_a_relist_drops_the_gone() {
        let mut cache = GrantCache::new(&["gloo-system".into()]);
        let scope = Scope::Namespace("gloo-system".into());
        assert!(!cache.synced());
        cache.on_event(&scope, watcher::Event::Init);
        cache.on_event(&scope, watcher::Event::InitApply(grant("a", true)));
        cache.on_event(&scope, watcher::Event::InitApply(grant("b", false)));
        let done = cache.on_event(&scope, watcher::Event::InitDone);
        assert!(done.first_sync && cache.synced());
        let a = UpstreamKey::new("gloo-system", "a");
        let b = UpstreamKey::new("gloo-system", "b");
        assert!(cache.owned(&a).is_some() && cache.is_foreign(&b));
        assert_eq!(cache.owned_count(), 1);
        // The same object again changes nothing.
        assert!(cache.put(&grant("a", true)).names.is_empty());

        cache.on_event(&scope, watcher::Event::Init);
        cache.on_event(&scope, watcher::Event::InitApply(grant("b", false)));
        let relist = cache.on_event(&scope, watcher::Event::InitDone);
        assert_eq!(
            relist,
            GrantChange {
                names: vec![a.clone()],
                first_sync: false
            }
        );
        assert_eq!(cache.entries(), 1);
        assert_eq!(
            cache
                .on_event(&scope, watcher::Event::Delete(grant("b", false)))
                .names,
            [b]
        );
        assert_eq!(cache.entries(), 0);
    }
}
