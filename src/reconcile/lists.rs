//! Tracks each watch stream's lists, so that objects missing from a re-list are noticed: the
//! watcher reports a re-list as Init, InitApply…, InitDone, with no Delete for what is gone.
//! Streams are told apart by their [`Scope`], which every event carries.
//!
//! A list remembers what it saw as 64-bit hashes of the keys, not copies of them: a list of
//! 20,000 Upstreams would otherwise copy 40,000 strings at the very moment (start and restart)
//! the daemon's memory peaks. Two keys share a hash with odds of about n²/2⁶⁴ (10⁻¹¹ for
//! 20,000 keys); a gone key hidden that way is only noticed at the next re-list.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;

use crate::model::{ObjectKey, Scope};

/// A key a list can see: namespaced objects belong to one namespace, cluster-wide ones to none.
pub trait ListKey: Eq + Hash + Clone {
    fn namespace(&self) -> Option<&str>;
}

impl<K> ListKey for ObjectKey<K> {
    fn namespace(&self) -> Option<&str> {
        Some(&self.namespace)
    }
}

/// Cluster-scoped objects (namespaces) by name.
impl ListKey for String {
    fn namespace(&self) -> Option<&str> {
        None
    }
}

#[derive(Debug)]
struct Progress {
    listing: Option<HashSet<u64>>,
    completed_once: bool,
}

/// The lists of every stream of one kind.
#[derive(Debug)]
pub struct ListTracker<K> {
    streams: BTreeMap<Scope, Progress>,
    hasher: RandomState,
    key: PhantomData<fn() -> K>,
}

impl<K: ListKey> ListTracker<K> {
    pub fn new(scopes: impl IntoIterator<Item = Scope>) -> Self {
        let streams = scopes
            .into_iter()
            .map(|scope| {
                let progress = Progress {
                    listing: None,
                    completed_once: false,
                };
                (scope, progress)
            })
            .collect();
        Self {
            streams,
            hasher: RandomState::new(),
            key: PhantomData,
        }
    }

    pub fn started(&mut self, scope: &Scope) {
        if let Some(stream) = self.streams.get_mut(scope) {
            stream.listing = Some(HashSet::new());
        }
    }

    pub fn saw(&mut self, scope: &Scope, key: &K) {
        if let Some(seen) = self
            .streams
            .get_mut(scope)
            .and_then(|stream| stream.listing.as_mut())
        {
            seen.insert(self.hasher.hash_one(key));
        }
    }

    /// Ends a list; returns those of the `known` keys this stream covers that the list did not
    /// see (gone while the watch was down), or `None` when no list was in progress.
    pub fn finished<'a>(
        &mut self,
        scope: &Scope,
        known: impl IntoIterator<Item = &'a K>,
    ) -> Option<Vec<K>>
    where
        K: 'a,
    {
        let stream = self.streams.get_mut(scope)?;
        let seen = stream.listing.take()?;
        stream.completed_once = true;
        let gone = known
            .into_iter()
            .filter(|key| key.namespace().is_none_or(|ns| scope.covers(ns)))
            .filter(|key| !seen.contains(&self.hasher.hash_one(key)))
            .cloned()
            .collect();
        Some(gone)
    }

    /// Whether every stream has completed a first list: only then may anything be deleted.
    pub fn all_completed(&self) -> bool {
        self.streams.values().all(|stream| stream.completed_once)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ServiceKey;

    #[test]
    fn a_relist_reports_what_it_covers_and_did_not_see() {
        let team = Scope::Namespace("team".into());
        let mut lists = ListTracker::new([team.clone(), Scope::Namespace("other".into())]);
        let known = [
            ServiceKey::new("team", "a"),
            ServiceKey::new("team", "b"),
            ServiceKey::new("other", "c"),
        ];
        assert_eq!(lists.finished(&team, &known), None, "no list in progress");
        lists.started(&team);
        lists.saw(&team, &known[0]);
        assert_eq!(
            lists.finished(&team, &known),
            Some(vec![ServiceKey::new("team", "b")])
        );
        assert!(
            !lists.all_completed(),
            "the other stream has not listed yet"
        );
        let other = Scope::Namespace("other".into());
        lists.started(&other);
        assert_eq!(lists.finished(&other, &[]), Some(vec![]));
        assert!(lists.all_completed());
    }

    #[test]
    fn cluster_scoped_keys_are_covered_by_the_stream_of_all() {
        let mut lists = ListTracker::new([Scope::All]);
        lists.started(&Scope::All);
        lists.saw(&Scope::All, &"kept".to_string());
        let known = ["kept".to_string(), "gone".to_string()];
        assert_eq!(
            lists.finished(&Scope::All, &known),
            Some(vec!["gone".to_string()])
        );
    }

    #[test]
    fn events_of_an_unknown_stream_change_nothing() {
        let mut lists: ListTracker<ServiceKey> = ListTracker::new([Scope::All]);
        let stray = Scope::Namespace("x".into());
        lists.started(&stray);
        assert_eq!(lists.finished(&stray, &[]), None);
        assert!(!lists.all_completed());
    }
}
