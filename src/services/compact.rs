//! How the cache holds objects between plans: as compact JSON text, expanded only when a
//! Service is planned. A `serde_json::Value` or `k8s-openapi` tree spends a B-tree node (about
//! 600 bytes) on every small map, which at 10,000 Services made the cache several times larger
//! than the objects' text (docs/behaviour.md, deliberate differences: cache only what is used, far
//! lighter than Gloo).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Service;

use crate::model::{ServiceKey, UpstreamKey};
use crate::plan::{managed_leaf_paths, FieldPath, ObservedUpstream};

/// Separates the keys of one field path, and the paths of a set. Kubernetes field names,
/// label and annotation keys cannot hold these control characters.
const KEY_SEPARATOR: char = '\u{1f}';
const PATH_SEPARATOR: char = '\u{1e}';
/// Separates the parts of a [`CompactUpstream`]; JSON text escapes it inside strings.
const PART_SEPARATOR: char = '\u{1d}';

/// A Service as the cache keeps it (already trimmed to what translation reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactService(Box<str>);

impl CompactService {
    pub fn new(service: &Service) -> Self {
        Self(
            serde_json::to_string(service)
                .unwrap_or_default()
                .into_boxed_str(),
        )
    }

    /// The Service again; `None` only if the text was not ours (cannot happen).
    pub fn expand(&self) -> Option<Service> {
        serde_json::from_str(&self.0).ok()
    }
}

/// An owned Upstream as the cache keeps it: one allocation holding uid, resourceVersion, the
/// Service its `spec.kube` names, the discovery fields and the object, in that order. Its
/// namespace and name are the map's key. At 20,000 Upstreams a struct of strings cost as much
/// in allocations and map slots as the objects' text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactUpstream(Box<str>);

/// Stands for discovery fields that are every leaf of the object's managed parts, as they are
/// on every Upstream only discovery writes: recomputed from the object instead of stored.
const ALL_LEAVES: &str = "*";
const FIELDS: usize = 6;

impl CompactUpstream {
    pub fn new(observed: &ObservedUpstream) -> Self {
        let (source_namespace, source_name) = source_service(&observed.object).unwrap_or_default();
        let discovery_fields = if observed.discovery_fields == managed_leaf_paths(&observed.object)
        {
            ALL_LEAVES.to_string()
        } else {
            observed
                .discovery_fields
                .iter()
                .map(|path| path.keys().join(&KEY_SEPARATOR.to_string()))
                .collect::<Vec<_>>()
                .join(&PATH_SEPARATOR.to_string())
        };
        let object = observed.object.to_string();
        let packed = [
            observed.uid.as_str(),
            &observed.resource_version,
            source_namespace,
            source_name,
            &discovery_fields,
            &object,
        ]
        .join(&PART_SEPARATOR.to_string());
        Self(packed.into_boxed_str())
    }

    fn fields(&self) -> [&str; FIELDS] {
        let mut fields = [""; FIELDS];
        for (slot, field) in fields.iter_mut().zip(self.0.splitn(FIELDS, PART_SEPARATOR)) {
            *slot = field;
        }
        fields
    }

    /// The Service named in its `spec.kube` (namespace, name): it keeps the name while it
    /// still maps there.
    pub fn source(&self) -> Option<(&str, &str)> {
        let [_, _, namespace, name, _, _] = self.fields();
        (!name.is_empty()).then_some((namespace, name))
    }

    /// The form plan works on; `None` only if the text was not ours (cannot happen).
    pub fn expand(&self, key: &UpstreamKey) -> Option<ObservedUpstream> {
        let [uid, resource_version, _, _, fields, object] = self.fields();
        let object: serde_json::Value = serde_json::from_str(object).ok()?;
        let discovery_fields: BTreeSet<FieldPath> = match fields {
            ALL_LEAVES => managed_leaf_paths(&object),
            fields => fields
                .split(PATH_SEPARATOR)
                .filter(|path| !path.is_empty())
                .map(|path| FieldPath::new(path.split(KEY_SEPARATOR)))
                .collect(),
        };
        Some(ObservedUpstream {
            namespace: key.namespace.to_string(),
            name: key.name.to_string(),
            uid: uid.to_string(),
            resource_version: resource_version.to_string(),
            object,
            discovery_fields,
        })
    }
}

/// The Service named in an Upstream's `spec.kube`, as namespace and name. A name with a
/// control character (no Service has one) would break the packing: none.
fn source_service(object: &serde_json::Value) -> Option<(&str, &str)> {
    let kube = object.get("spec")?.get("kube")?;
    let source = (
        kube.get("serviceNamespace")?.as_str()?,
        kube.get("serviceName")?.as_str()?,
    );
    let plain = |text: &str| !text.chars().any(char::is_control);
    (plain(source.0) && plain(source.1)).then_some(source)
}

/// The Services that map to one Upstream name (usually one), smallest first: a sorted vector,
/// since a B-tree set allocates a node of eleven keys for its first one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claimants(Vec<ServiceKey>);

impl Claimants {
    pub fn insert(&mut self, key: ServiceKey) {
        if let Err(at) = self.0.binary_search(&key) {
            // A vector's first push reserves four; most names have one claimant.
            self.0.reserve_exact(1);
            self.0.insert(at, key);
        }
    }

    pub fn remove(&mut self, key: &ServiceKey) {
        if let Ok(at) = self.0.binary_search(key) {
            self.0.remove(at);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn first(&self) -> Option<&ServiceKey> {
        self.0.first()
    }

    /// The claimant of that namespace and name, if it is one.
    pub fn find(&self, namespace: &str, name: &str) -> Option<&ServiceKey> {
        self.0
            .iter()
            .find(|key| &*key.namespace == namespace && &*key.name == name)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ServiceKey> {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a Claimants {
    type Item = &'a ServiceKey;
    type IntoIter = std::slice::Iter<'a, ServiceKey>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn observed() -> ObservedUpstream {
        ObservedUpstream {
            namespace: "gloo-system".into(),
            name: "shop-web-80".into(),
            uid: "u".into(),
            resource_version: "9".into(),
            object: json!({"metadata": {"labels": {"discovered_by": "kubernetesplugin"}},
                           "spec": {"kube": {"serviceName": "web", "serviceNamespace": "shop"}}}),
            discovery_fields: [
                FieldPath::new(["metadata", "labels", "discovered_by"]),
                FieldPath::new(["metadata", "annotations", "example.com/team"]),
                FieldPath::new(["spec", "kube", "serviceName"]),
            ]
            .into(),
        }
    }

    fn key() -> UpstreamKey {
        UpstreamKey::new("gloo-system", "shop-web-80")
    }

    #[test]
    fn upstreams_round_trip() {
        let observed = observed();
        let compact = CompactUpstream::new(&observed);
        assert_eq!(compact.source(), Some(("shop", "web")));
        assert_eq!(compact.expand(&key()), Some(observed.clone()));

        let none = ObservedUpstream {
            discovery_fields: BTreeSet::new(),
            ..observed
        };
        assert_eq!(CompactUpstream::new(&none).expand(&key()), Some(none));
    }

    #[test]
    fn fields_that_are_every_leaf_are_not_stored_but_come_back() {
        let mut observed = observed();
        observed.discovery_fields = [
            FieldPath::new(["metadata", "labels", "discovered_by"]),
            FieldPath::new(["spec", "kube", "serviceName"]),
            FieldPath::new(["spec", "kube", "serviceNamespace"]),
        ]
        .into();
        let compact = CompactUpstream::new(&observed);
        assert!(compact
            .0
            .contains(&format!("{PART_SEPARATOR}{ALL_LEAVES}{PART_SEPARATOR}")));
        assert_eq!(compact.expand(&key()), Some(observed));
    }

    #[test]
    fn an_upstream_without_kube_names_no_source() {
        let mut observed = observed();
        observed.object = json!({"metadata": {}, "spec": {"static": {"hosts": []}}});
        let compact = CompactUpstream::new(&observed);
        assert_eq!(compact.source(), None);
        assert_eq!(compact.expand(&key()), Some(observed));
    }

    #[test]
    fn claimants_stay_sorted_and_unique() {
        let mut claimants = Claimants::default();
        claimants.insert(ServiceKey::new("b", "x"));
        claimants.insert(ServiceKey::new("a", "y"));
        claimants.insert(ServiceKey::new("b", "x"));
        assert_eq!(claimants.first(), Some(&ServiceKey::new("a", "y")));
        assert_eq!(claimants.iter().count(), 2);
        assert_eq!(claimants.find("b", "x"), Some(&ServiceKey::new("b", "x")));
        claimants.remove(&ServiceKey::new("a", "y"));
        claimants.remove(&ServiceKey::new("b", "x"));
        assert!(claimants.is_empty());
    }

    #[test]
    fn services_round_trip() {
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
            "spec": {"ports": [{"name": "http", "port": 80}], "selector": {"app": "web"}},
        }))
        .expect("service");
        assert_eq!(CompactService::new(&service).expand(), Some(service));
    }
}
