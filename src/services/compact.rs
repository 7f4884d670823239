//! How the cache holds objects between plans: as compact JSON text, expanded only when a
//! Service is planned. A `serde_json::Value` or `k8s-openapi` tree spends a B-tree node (about
//! 600 bytes) on every small map, which at 10,000 Services made the cache several times larger
//! than the objects' text (DESIGN §3: cache only what is used, far lighter than Gloo).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Service;

use crate::model::ServiceKey;
use crate::plan::{FieldPath, ObservedUpstream};

/// Separates the keys of one field path, and the paths of a set. Kubernetes field names,
/// label and annotation keys cannot hold these control characters.
const KEY_SEPARATOR: char = '\u{1f}';
const PATH_SEPARATOR: char = '\u{1e}';

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

/// An owned Upstream as the cache keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactUpstream {
    namespace: String,
    name: String,
    uid: String,
    resource_version: String,
    object: Box<str>,
    discovery_fields: Box<str>,
    /// The Service named in its `spec.kube`: it keeps the name while it still maps there.
    pub source: Option<ServiceKey>,
}

impl CompactUpstream {
    pub fn new(observed: &ObservedUpstream) -> Self {
        let source = source_service(&observed.object);
        let discovery_fields = observed
            .discovery_fields
            .iter()
            .map(|path| path.keys().join(&KEY_SEPARATOR.to_string()))
            .collect::<Vec<_>>()
            .join(&PATH_SEPARATOR.to_string());
        Self {
            namespace: observed.namespace.clone(),
            name: observed.name.clone(),
            uid: observed.uid.clone(),
            resource_version: observed.resource_version.clone(),
            object: observed.object.to_string().into_boxed_str(),
            discovery_fields: discovery_fields.into_boxed_str(),
            source,
        }
    }

    /// The form plan works on.
    pub fn expand(&self) -> Option<ObservedUpstream> {
        let discovery_fields: BTreeSet<FieldPath> = self
            .discovery_fields
            .split(PATH_SEPARATOR)
            .filter(|path| !path.is_empty())
            .map(|path| FieldPath::new(path.split(KEY_SEPARATOR)))
            .collect();
        Some(ObservedUpstream {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            resource_version: self.resource_version.clone(),
            object: serde_json::from_str(&self.object).ok()?,
            discovery_fields,
        })
    }
}

/// The Service named in an Upstream's `spec.kube`.
fn source_service(object: &serde_json::Value) -> Option<ServiceKey> {
    let kube = object.get("spec")?.get("kube")?;
    Some(ServiceKey::new(
        kube.get("serviceNamespace")?.as_str()?,
        kube.get("serviceName")?.as_str()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn upstreams_round_trip() {
        let observed = ObservedUpstream {
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
        };
        let compact = CompactUpstream::new(&observed);
        assert_eq!(compact.source, Some(ServiceKey::new("shop", "web")));
        assert_eq!(compact.expand(), Some(observed.clone()));

        let none = ObservedUpstream {
            discovery_fields: BTreeSet::new(),
            ..observed
        };
        assert_eq!(CompactUpstream::new(&none).expand(), Some(none));
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
