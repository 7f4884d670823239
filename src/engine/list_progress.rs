//! Tracks one watch stream's lists, so that objects missing from a re-list are noticed: the
//! watcher reports a re-list as Init, InitApply…, InitDone, with no Delete for what is gone.

use std::collections::HashSet;
use std::hash::Hash;

#[derive(Debug)]
pub struct ListProgress<K> {
    /// The namespace the stream watches; `None` for all.
    scope: Option<String>,
    listing: Option<HashSet<K>>,
    completed_once: bool,
}

impl<K: Eq + Hash + Clone> ListProgress<K> {
    pub fn new(scope: Option<String>) -> Self {
        Self {
            scope,
            listing: None,
            completed_once: false,
        }
    }

    /// Whether objects of `namespace` come through this stream.
    pub fn covers(&self, namespace: &str) -> bool {
        self.scope.as_deref().is_none_or(|scope| scope == namespace)
    }

    pub fn started(&mut self) {
        self.listing = Some(HashSet::new());
    }

    pub fn saw(&mut self, key: &K) {
        if let Some(seen) = self.listing.as_mut() {
            seen.insert(key.clone());
        }
    }

    /// Ends a list; returns the keys it saw, or `None` when no list was in progress.
    pub fn finished(&mut self) -> Option<HashSet<K>> {
        let seen = self.listing.take()?;
        self.completed_once = true;
        Some(seen)
    }

    /// Whether a first list has completed.
    pub fn completed_once(&self) -> bool {
        self.completed_once
    }
}
