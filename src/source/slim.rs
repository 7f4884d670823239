//! What the watches parse objects into: only what the loops read, trimmed as each object is
//! parsed, so that nothing bigger is ever held. A watcher holds a whole list page (500 objects)
//! per stream and the read-ahead up to 256 more; parsed whole, a Service's managedFields alone
//! are kilobytes of JSON trees, and at 10,000 Services these in-flight objects, not the cache,
//! were most of the daemon's peak heap (docs/performance.md).

use std::borrow::Cow;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher;
use kube::Resource;
use serde::{Deserialize, Deserializer};

use crate::compact::compact_service;
use crate::crd::Upstream;
use crate::model::DISCOVERY_MANAGERS;

/// An object the watch parses into `Self` and hands on as `Self::Object`.
pub trait Slim: Resource + Sized {
    type Object;
    fn into_object(self) -> Self::Object;
}

/// A Service with only what translation reads, plus the resourceVersion the watcher resumes
/// from.
#[derive(Clone, Debug)]
pub struct SlimService(Service);

impl<'de> Deserialize<'de> for SlimService {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let service = Service::deserialize(deserializer)?;
        let resource_version = service.metadata.resource_version.clone();
        let mut slim = compact_service(service);
        slim.metadata.resource_version = resource_version;
        Ok(Self(slim))
    }
}

impl Slim for SlimService {
    type Object = Service;
    fn into_object(self) -> Service {
        self.0
    }
}

/// An Upstream without its status and with only discovery's managedFields entries: the rest
/// is other writers' business and never read (see `ObservedUpstream::from_upstream`).
#[derive(Clone, Debug)]
pub struct SlimUpstream(Upstream);

impl<'de> Deserialize<'de> for SlimUpstream {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut upstream = Upstream::deserialize(deserializer)?;
        upstream.status = None;
        if let Some(entries) = upstream.metadata.managed_fields.as_mut() {
            entries.retain(|entry| {
                entry
                    .manager
                    .as_deref()
                    .is_some_and(|manager| DISCOVERY_MANAGERS.contains(&manager))
            });
        }
        Ok(Self(upstream))
    }
}

impl Slim for SlimUpstream {
    type Object = Upstream;
    fn into_object(self) -> Upstream {
        self.0
    }
}

/// The kube identity of the full type, so a slim type is listed and watched at the same URL.
macro_rules! resource_as {
    ($slim:ty, $full:ty) => {
        impl Resource for $slim {
            type DynamicType = ();
            type Scope = <$full as Resource>::Scope;

            fn kind(dt: &()) -> Cow<'_, str> {
                <$full>::kind(dt)
            }
            fn group(dt: &()) -> Cow<'_, str> {
                <$full>::group(dt)
            }
            fn version(dt: &()) -> Cow<'_, str> {
                <$full>::version(dt)
            }
            fn plural(dt: &()) -> Cow<'_, str> {
                <$full>::plural(dt)
            }
            fn meta(&self) -> &ObjectMeta {
                self.0.meta()
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                self.0.meta_mut()
            }
        }
    };
}

resource_as!(SlimService, Service);
resource_as!(SlimUpstream, Upstream);

/// The event with its object handed on in full type.
pub fn into_event<S: Slim>(event: watcher::Event<S>) -> watcher::Event<S::Object> {
    match event {
        watcher::Event::Apply(object) => watcher::Event::Apply(object.into_object()),
        watcher::Event::Delete(object) => watcher::Event::Delete(object.into_object()),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(object) => watcher::Event::InitApply(object.into_object()),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FIELD_MANAGER, LAST_APPLIED_ANNOTATION};
    use serde_json::json;

    #[test]
    fn a_service_keeps_what_translation_reads_and_its_resource_version() {
        let text = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {
                "name": "web", "namespace": "team", "uid": "u-1", "resourceVersion": "42",
                "labels": {"app": "web"},
                "annotations": {"gloo.solo.io/h2_service": "true", LAST_APPLIED_ANNOTATION: "{\"big\":1}"},
                "managedFields": [{"manager": "kubectl", "operation": "Update", "fieldsType": "FieldsV1",
                                   "fieldsV1": {"f:spec": {"f:ports": {}}}}],
                "creationTimestamp": "2026-01-01T00:00:00Z",
            },
            "spec": {"selector": {"app": "web"}, "clusterIP": "10.0.0.1", "type": "ClusterIP",
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP",
                                "appProtocol": "http"}]},
            "status": {"loadBalancer": {}},
        });
        let SlimService(service) = serde_json::from_value(text).expect("parses");
        let expected: Service = serde_json::from_value(json!({
            "metadata": {
                "name": "web", "namespace": "team", "uid": "u-1", "resourceVersion": "42",
                "labels": {"app": "web"},
                "annotations": {"gloo.solo.io/h2_service": "true"},
            },
            "spec": {"selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "appProtocol": "http"}]},
        }))
        .expect("expected");
        assert_eq!(service, expected);
    }

    #[test]
    fn an_upstream_keeps_its_spec_and_only_discovery_field_entries() {
        let text = json!({
            "apiVersion": "gloo.solo.io/v1", "kind": "Upstream",
            "metadata": {
                "name": "team-web-80", "namespace": "gloo-system", "uid": "u-2",
                "resourceVersion": "7", "labels": {"discovered_by": "kubernetesplugin"},
                "managedFields": [
                    {"manager": FIELD_MANAGER, "operation": "Apply", "fieldsType": "FieldsV1",
                     "fieldsV1": {"f:spec": {"f:kube": {"f:serviceName": {}}}}},
                    {"manager": "gloo", "operation": "Update", "subresource": "status",
                     "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {}}},
                    {"manager": "kubectl-edit", "operation": "Update", "fieldsType": "FieldsV1",
                     "fieldsV1": {"f:spec": {"f:useHttp2": {}}}},
                ],
            },
            "spec": {"kube": {"serviceName": "web", "serviceNamespace": "team", "servicePort": 80},
                     "useHttp2": true},
            "status": {"statuses": {"gloo-system": {"state": 1}}},
        });
        let SlimUpstream(upstream) = serde_json::from_value(text).expect("parses");
        let managers: Vec<_> = upstream
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .filter_map(|entry| entry.manager.as_deref())
            .collect();
        assert_eq!(managers, [FIELD_MANAGER]);
        assert_eq!(upstream.status, None);
        assert_eq!(upstream.spec.use_http2, Some(true));
        assert_eq!(upstream.metadata.resource_version.as_deref(), Some("7"));
        let kube = upstream.spec.kube.expect("kube kept");
        assert_eq!(kube.service_name.as_deref(), Some("web"));
    }

    #[test]
    fn slim_types_are_listed_at_the_full_types_urls() {
        assert_eq!(
            SlimService::url_path(&(), Some("team")),
            Service::url_path(&(), Some("team"))
        );
        assert_eq!(
            SlimUpstream::url_path(&(), None),
            Upstream::url_path(&(), None)
        );
    }
}
