//! The `Upstream` custom resource (`gloo.solo.io/v1`).
//!
//! Only the fields the daemon writes or reads are typed. Everything else a user may put in an
//! Upstream (health checks, circuit breakers, load balancer settings, …) is kept as opaque JSON
//! in the `other` maps, and the generated schema marks those levels with
//! `x-kubernetes-preserve-unknown-fields`, so neither our types nor our CRD ever drop a user's
//! values. Field names are Gloo's camelCase JSON names, so Gloo's own structural CRD accepts
//! what we write.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Spec of a Gloo `Upstream`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "gloo.solo.io",
    version = "v1",
    kind = "Upstream",
    plural = "upstreams",
    singular = "upstream",
    namespaced,
    shortname = "us",
    shortname = "gus",
    category = "gloo-gateway",
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name": "Type", "type": "string", "jsonPath": ".metadata.labels.discovered_by", "description": "The discovery plugin that wrote this Upstream"}"#,
    printcolumn = r#"{"name": "Service", "type": "string", "jsonPath": ".spec.kube.serviceName", "description": "Kubernetes Service this Upstream routes to"}"#,
    printcolumn = r#"{"name": "Service-Namespace", "type": "string", "jsonPath": ".spec.kube.serviceNamespace", "description": "Namespace of that Service", "priority": 1}"#,
    printcolumn = r#"{"name": "Port", "type": "integer", "jsonPath": ".spec.kube.servicePort", "description": "Service port"}"#,
    printcolumn = r#"{"name": "Lambda-Region", "type": "string", "jsonPath": ".spec.aws.region", "description": "AWS region of a Lambda Upstream"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_metadata: Option<DiscoveryMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube: Option<KubeUpstream>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsUpstream>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_config: Option<UpstreamSslConfig>,
    /// Left unset (not `false`) when nothing asks for HTTP/2, as Gloo does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_http2: Option<bool>,
    /// Every other spec field, kept as the user wrote it.
    #[serde(flatten, default)]
    pub other: BTreeMap<String, Value>,
}

/// Metadata Gloo's discovery records about the source of an Upstream.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveryMetadata {
    /// The labels of the Service the Upstream was discovered from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// `spec.kube`: an Upstream that routes to the endpoints of a Kubernetes Service port.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubeUpstream {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_namespace: Option<String>,
    /// The Service port (not its targetPort).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<BTreeMap<String, String>>,
    /// `serviceSpec`, `subsetSpec` and anything else, kept as written.
    #[serde(flatten, default)]
    pub other: BTreeMap<String, Value>,
}

/// `spec.aws`: an Upstream for the Lambda functions of one AWS region.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsUpstream {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<ResourceRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda_functions: Option<Vec<LambdaFunction>>,
    /// `destinationOverrides`, `awsAccountId` and anything else, kept as written.
    #[serde(flatten, default)]
    pub other: BTreeMap<String, Value>,
}

/// One entry of `spec.aws.lambdaFunctions`.
#[derive(
    Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = without_defaults)]
pub struct LambdaFunction {
    #[serde(default)]
    pub lambda_function_name: String,
    #[serde(default)]
    pub qualifier: String,
    #[serde(default)]
    pub logical_name: String,
}

/// A reference to a namespaced object, as Gloo's `core.solo.io.ResourceRef`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[schemars(transform = without_defaults)]
pub struct ResourceRef {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
}

/// `spec.sslConfig`: TLS from the gateway to the Upstream.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamSslConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<ResourceRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_files: Option<SslFiles>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_way_tls: Option<bool>,
    /// `sni`, `alpnProtocols`, `parameters` and anything else, kept as written.
    #[serde(flatten, default)]
    pub other: BTreeMap<String, Value>,
}

/// Paths of TLS files mounted into the gateway.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SslFiles {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tls_cert: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tls_key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub root_ca: String,
}

/// Drops the `default` schemars derives from `#[serde(default)]`: a default in the CRD would
/// make the API server write values into other people's Upstreams.
fn without_defaults(schema: &mut schemars::Schema) {
    if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        for property in properties.values_mut() {
            if let Some(property) = property.as_object_mut() {
                property.remove("default");
            }
        }
    }
}

/// The CustomResourceDefinition of `Upstream`, as `upstream-discovery crd` prints it.
pub fn definition() -> CustomResourceDefinition {
    Upstream::crd()
}

/// The CRD as YAML, exactly as shipped in `deploy/crds/upstreams.gloo.solo.io.yaml`.
pub fn definition_yaml() -> Result<String, serde_saphyr::SerializeError> {
    yaml_document(&definition())
}

/// One YAML document of an Upstream or the CRD, as `render` and `crd` print them: a long string
/// stays on its line (the serializer would fold it).
pub fn yaml_document<T: Serialize>(value: &T) -> Result<String, serde_saphyr::SerializeError> {
    let options = serde_saphyr::ser_options! { folded_wrap_chars: usize::MAX };
    serde_saphyr::to_string_with_options(value, options)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_schema() -> Value {
        let crd = serde_json::to_value(definition()).expect("crd serializes");
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
    }

    #[test]
    fn names_match_gloo() {
        let crd = definition();
        assert_eq!(crd.metadata.name.as_deref(), Some("upstreams.gloo.solo.io"));
        assert_eq!(crd.spec.group, "gloo.solo.io");
        assert_eq!(crd.spec.scope, "Namespaced");
        let names = &crd.spec.names;
        assert_eq!(names.kind, "Upstream");
        assert_eq!(names.plural, "upstreams");
        assert_eq!(
            names.short_names.as_deref(),
            Some(&["us".to_string(), "gus".to_string()][..])
        );
        assert_eq!(
            names.categories.as_deref(),
            Some(&["gloo-gateway".to_string()][..])
        );
    }

    #[test]
    fn unknown_spec_fields_are_preserved_at_every_open_level() {
        let spec = spec_schema();
        assert_eq!(
            spec["x-kubernetes-preserve-unknown-fields"],
            Value::Bool(true)
        );
        for typed in ["kube", "aws", "sslConfig"] {
            assert_eq!(
                spec["properties"][typed]["x-kubernetes-preserve-unknown-fields"],
                Value::Bool(true),
                "{typed} must keep fields we do not model"
            );
        }
    }

    #[test]
    fn user_fields_survive_a_round_trip_through_our_types() {
        let written = serde_json::json!({
            "kube": {"serviceName": "petstore", "servicePort": 8080,
                     "subsetSpec": {"selectors": [{"keys": ["version"]}]}},
            "healthChecks": [{"timeout": "1s", "httpHealthCheck": {"path": "/healthz"}}],
            "circuitBreakers": {"maxConnections": 7},
            "useHttp2": true
        });
        let spec: UpstreamSpec = serde_json::from_value(written.clone()).expect("parses");
        assert_eq!(spec.use_http2, Some(true));
        assert_eq!(serde_json::to_value(&spec).expect("serializes"), written);
    }

    /// Objects Gloo or a user wrote without some field must still be valid under our CRD.
    #[test]
    fn nothing_is_required() {
        let spec = spec_schema().to_string();
        assert!(
            !spec.contains("\"required\""),
            "a required field would reject existing Upstreams"
        );
        assert!(
            !spec.contains("\"default\""),
            "a default would change existing Upstreams"
        );
    }

    #[test]
    fn printer_columns_show_type_service_port_and_age() {
        let crd = definition();
        let columns: Vec<String> = crd.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.clone())
            .collect();
        for wanted in ["Type", "Service", "Port", "Age"] {
            assert!(
                columns.iter().any(|c| c == wanted),
                "missing column {wanted}: {columns:?}"
            );
        }
    }
}
