//! One key type for every object the daemon tracks: namespace and name, typed by kind so a
//! Service key is never passed where an Upstream key is meant.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// A namespaced object of kind `K`, by namespace and name. Shared strings: the cache holds each
/// key in several maps (a Service by its names, each name by its claimants), and a clone is a
/// count, not two allocations (issue 15).
pub struct ObjectKey<K> {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    // `fn() -> K`: the key neither holds a `K` nor needs `K: Send + Sync` to be sent.
    kind: PhantomData<fn() -> K>,
}

/// A Service, by namespace and name.
pub type ServiceKey = ObjectKey<Service>;
/// A Gloo Upstream, by namespace and name.
pub type UpstreamKey = ObjectKey<UpstreamKind>;
/// A Secret, by namespace and name.
pub type SecretKey = ObjectKey<Secret>;

/// Marks [`UpstreamKey`]; the Upstream type itself lives in `crd`, above the model.
#[derive(Debug)]
pub enum UpstreamKind {}

impl<K> ObjectKey<K> {
    pub fn new(namespace: impl Into<Arc<str>>, name: impl Into<Arc<str>>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            kind: PhantomData,
        }
    }

    /// The key of an object as the API server returns it; `None` without name or namespace.
    pub fn of(metadata: &ObjectMeta) -> Option<Self> {
        Some(Self::new(
            metadata.namespace.as_deref()?,
            metadata.name.as_deref()?,
        ))
    }
}

impl<K> Clone for ObjectKey<K> {
    fn clone(&self) -> Self {
        Self::new(self.namespace.clone(), self.name.clone())
    }
}

impl<K> PartialEq for ObjectKey<K> {
    fn eq(&self, other: &Self) -> bool {
        (&self.namespace, &self.name) == (&other.namespace, &other.name)
    }
}

impl<K> Eq for ObjectKey<K> {}

impl<K> Hash for ObjectKey<K> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.namespace.hash(state);
        self.name.hash(state);
    }
}

impl<K> PartialOrd for ObjectKey<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<K> Ord for ObjectKey<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        (&self.namespace, &self.name).cmp(&(&other.namespace, &other.name))
    }
}

impl<K> fmt::Debug for ObjectKey<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl<K> fmt::Display for ObjectKey<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Where a watch stream looks: one namespace, or all of them. Every event carries the scope of
/// its stream, so a re-list can tell which cached objects it covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    All,
    Namespace(String),
}

impl Scope {
    /// Whether objects of `namespace` come through a stream of this scope.
    pub fn covers(&self, namespace: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Namespace(scope) => scope == namespace,
        }
    }

    /// The namespace, `None` for all.
    pub fn namespace(&self) -> Option<&str> {
        match self {
            Scope::All => None,
            Scope::Namespace(namespace) => Some(namespace),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::All => f.write_str("all namespaces"),
            Scope::Namespace(namespace) => f.write_str(namespace),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_and_print_by_namespace_then_name() {
        let a = ServiceKey::new("a", "z");
        let b = ServiceKey::new("b", "a");
        assert!(a < b);
        assert_eq!(a, ServiceKey::new("a", "z"));
        assert_eq!(a.to_string(), "a/z");
        assert_eq!(format!("{a:?}"), "a/z");
        let metadata = ObjectMeta {
            namespace: Some("shop".into()),
            name: Some("web".into()),
            ..Default::default()
        };
        assert_eq!(
            UpstreamKey::of(&metadata),
            Some(UpstreamKey::new("shop", "web"))
        );
        assert_eq!(UpstreamKey::of(&ObjectMeta::default()), None);
    }

    #[test]
    fn scopes_cover_their_namespace() {
        assert!(Scope::All.covers("x"));
        assert!(Scope::Namespace("x".into()).covers("x"));
        assert!(!Scope::Namespace("x".into()).covers("y"));
        assert_eq!(Scope::All.namespace(), None);
    }
}
