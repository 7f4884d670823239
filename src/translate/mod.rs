//! Pure translation of a Kubernetes Service into the Upstreams discovery writes for it, one per
//! port, exactly as Gloo's discovery would (DESIGN.md §2).

mod http2;
pub mod naming;
mod tls;
mod upstream_config;
mod warning;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::crd::{
    DiscoveryMetadata, KubeUpstream, Upstream, UpstreamSpec, DISCOVERED_BY_LABEL, KUBERNETES_PLUGIN,
};

pub use http2::H2_ANNOTATION;
pub use naming::{sanitize_name, upstream_name};
pub use tls::{
    ONE_WAY_TLS_ANNOTATION, ROOT_CA_ANNOTATION, SECRET_ANNOTATION, TLS_CERT_ANNOTATION,
    TLS_KEY_ANNOTATION,
};
pub use upstream_config::{DEEP_MERGE_ANNOTATION, UPSTREAM_CONFIG_ANNOTATION};
pub use warning::{AnnotationOrigin, TranslateWarning};

/// Annotation kubectl leaves on applied objects; never copied onto an Upstream.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Where Upstreams are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteNamespace {
    /// All Upstreams in one namespace (Gloo's `writeNamespace`).
    Fixed(String),
    /// Each Upstream in its Service's own namespace.
    ServiceNamespace,
}

/// Settings that shape translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranslateSettings {
    pub write_namespace: WriteNamespace,
    /// Gloo's `settings.upstreamOptions.globalAnnotations`: applied before the Service's own.
    pub global_annotations: BTreeMap<String, String>,
}

impl TranslateSettings {
    /// Settings with a fixed write namespace and no global annotations.
    pub fn new(write_namespace: impl Into<String>) -> Self {
        Self {
            write_namespace: WriteNamespace::Fixed(write_namespace.into()),
            global_annotations: BTreeMap::new(),
        }
    }
}

/// The Upstreams desired for one Service, and what was wrong with its annotations.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServiceUpstreams {
    pub upstreams: Vec<Upstream>,
    /// Each distinct problem once, even when it affects several ports.
    pub warnings: Vec<TranslateWarning>,
}

/// Translates one Service. Services without ports give no Upstream.
pub fn translate_service(service: &Service, settings: &TranslateSettings) -> ServiceUpstreams {
    let ports = service
        .spec
        .as_ref()
        .and_then(|spec| spec.ports.as_deref())
        .unwrap_or_default();
    let mut result = ServiceUpstreams::default();
    for port in ports {
        let mut warnings = Vec::new();
        result
            .upstreams
            .push(translate_port(service, port, settings, &mut warnings));
        for warning in warnings {
            if !result.warnings.contains(&warning) {
                result.warnings.push(warning);
            }
        }
    }
    result
}

fn translate_port(
    service: &Service,
    port: &ServicePort,
    settings: &TranslateSettings,
    warnings: &mut Vec<TranslateWarning>,
) -> Upstream {
    let service_meta = &service.metadata;
    let service_name = service_meta.name.clone().unwrap_or_default();
    let service_namespace = service_meta
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let empty = BTreeMap::new();
    let annotations = service_meta.annotations.as_ref().unwrap_or(&empty);

    let mut spec = UpstreamSpec {
        discovery_metadata: Some(DiscoveryMetadata {
            labels: service_meta.labels.clone(),
        }),
        kube: Some(KubeUpstream {
            service_name: Some(service_name.clone()),
            service_namespace: Some(service_namespace.clone()),
            service_port: u32::try_from(port.port).ok(),
            selector: service.spec.as_ref().and_then(|spec| spec.selector.clone()),
            ..Default::default()
        }),
        use_http2: http2::use_http2(annotations, &settings.global_annotations, port, warnings),
        ssl_config: tls::ssl_config(annotations, &service_namespace, port.port, warnings),
        ..Default::default()
    };
    upstream_config::apply(
        &mut spec,
        &settings.global_annotations,
        AnnotationOrigin::GlobalSettings,
        warnings,
    );
    upstream_config::apply(&mut spec, annotations, AnnotationOrigin::Service, warnings);

    let namespace = match &settings.write_namespace {
        WriteNamespace::Fixed(namespace) => namespace.clone(),
        WriteNamespace::ServiceNamespace => service_namespace.clone(),
    };
    let mut copied_annotations = annotations.clone();
    copied_annotations.remove(LAST_APPLIED_ANNOTATION);
    let owner_references = (namespace == service_namespace)
        .then(|| owner_reference(service))
        .flatten()
        .map(|owner| vec![owner]);

    Upstream {
        metadata: ObjectMeta {
            name: Some(upstream_name(&service_namespace, &service_name, port.port)),
            namespace: Some(namespace),
            labels: Some(BTreeMap::from([(
                DISCOVERED_BY_LABEL.to_string(),
                KUBERNETES_PLUGIN.to_string(),
            )])),
            annotations: (!copied_annotations.is_empty()).then_some(copied_annotations),
            owner_references,
            ..Default::default()
        },
        spec,
    }
}

/// An ownerReference to the Service, so Kubernetes collects the Upstream even while the daemon is
/// down. Only ever used within one namespace: a cross-namespace owner counts as missing and gets
/// the dependent deleted. `blockOwnerDeletion` stays unset so no finalizer rights are needed.
fn owner_reference(service: &Service) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "v1".to_string(),
        kind: "Service".to_string(),
        name: service.metadata.name.clone()?,
        uid: service.metadata.uid.clone()?,
        controller: None,
        block_owner_deletion: None,
    })
}

#[cfg(test)]
mod tests;
