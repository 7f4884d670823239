//! How the cache holds objects between plans: a Service as compact JSON text, expanded only
//! when it is planned (a `serde_json::Value` or `k8s-openapi` tree spends a B-tree node, about
//! 600 bytes, on every small map); an owned Upstream as its identity and a fingerprint, never
//! the object (cache only what is decided with).

use k8s_openapi::api::core::v1::Service;

use crate::model::{ServiceKey, UpstreamKey};
use crate::plan::fingerprint::{self, Fingerprint};
use crate::plan::{ObservedUpstream, OwnedUpstream};

/// Separates the parts of a [`CompactUpstream`]. Kubernetes names and uids cannot hold it.
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
/// Service its `spec.kube` names and the fingerprint of the fields discovery owns, in that
/// order; never the object (it is read fresh when a write is due). Its namespace and name are
/// the map's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactUpstream(Box<str>);

const FIELDS: usize = 5;

impl CompactUpstream {
    pub fn new(observed: &ObservedUpstream) -> Self {
        let (source_namespace, source_name) = source_service(&observed.object).unwrap_or_default();
        let fingerprint = fingerprint::observed(observed);
        let fingerprint = format!("{:016x}{:016x}", fingerprint.fields, fingerprint.paths);
        let packed = [
            observed.uid.as_str(),
            &observed.resource_version,
            source_namespace,
            source_name,
            &fingerprint,
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
        let [_, _, namespace, name, _] = self.fields();
        (!name.is_empty()).then_some((namespace, name))
    }

    /// The form plan works on; `None` only if the text was not ours (cannot happen).
    pub fn expand(&self, key: &UpstreamKey) -> Option<OwnedUpstream> {
        let [uid, resource_version, _, _, fingerprint] = self.fields();
        Some(OwnedUpstream {
            namespace: key.namespace.to_string(),
            name: key.name.to_string(),
            uid: uid.to_string(),
            resource_version: resource_version.to_string(),
            fingerprint: Fingerprint {
                fields: u64::from_str_radix(fingerprint.get(..16)?, 16).ok()?,
                paths: u64::from_str_radix(fingerprint.get(16..)?, 16).ok()?,
            },
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
    use crate::plan::FieldPath;
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
            .into_iter()
            .collect(),
        }
    }

    fn key() -> UpstreamKey {
        UpstreamKey::new("gloo-system", "shop-web-80")
    }

    #[test]
    fn an_owned_upstream_keeps_its_identity_source_and_fingerprint_only() {
        let observed = observed();
        let compact = CompactUpstream::new(&observed);
        assert_eq!(compact.source(), Some(("shop", "web")));
        assert_eq!(compact.expand(&key()), Some(OwnedUpstream::of(&observed)));
        assert!(
            !compact.0.contains("kubernetesplugin"),
            "no object kept: {:?}",
            compact.0
        );
    }

    #[test]
    fn an_upstream_without_kube_names_no_source() {
        let mut observed = observed();
        observed.object = json!({"metadata": {}, "spec": {"static": {"hosts": []}}});
        let compact = CompactUpstream::new(&observed);
        assert_eq!(compact.source(), None);
        assert_eq!(compact.expand(&key()), Some(OwnedUpstream::of(&observed)));
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
