//! A Service trimmed to what translation reads: a Service in the cache is a few hundred bytes,
//! not kilobytes. Pure, and below both the watches (`source`), which trim each Service as it is
//! parsed, and service discovery's state (`services`), which keeps them.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::model::LAST_APPLIED_ANNOTATION;

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
}
