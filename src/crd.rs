//! The `Upstream` custom resource (`gloo.solo.io/v1`).
//!
//! Only the fields the daemon writes or reads are typed. Everything else a user may put in an
//! Upstream (health checks, circuit breakers, load balancer settings, …) is kept as opaque JSON
//! in the `other` maps, and the generated schema marks those levels with
//! `x-kubernetes-preserve-unknown-fields`, so neither our types nor our CRD ever drop a user's
//! values. Field names are Gloo's camelCase JSON names, so Gloo's own structural CRD accepts
//! what we write.
//!
//! The CRD accepts every object Gloo's own CRD accepts (docs/behaviour.md): every spec field of
//! Gloo's schema is listed (the ones we do not model as open objects or with Gloo's scalar
//! type), `status` keeps whatever Gloo's reporters write there, and nothing is required.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSON,
};
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
    status = "UpstreamStatus",
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

/// Gateway API's `ReferenceGrant` (`gateway.networking.k8s.io/v1beta1`), as the daemon writes
/// it with `--reference-grants`: only `from` and `to`, the whole of its spec. Lists are atomic in
/// its schema, so an apply replaces each whole. The CRD is Gateway API's, never generated here.
#[derive(
    CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema,
)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1beta1",
    kind = "ReferenceGrant",
    plural = "referencegrants",
    namespaced,
    derive = "PartialEq",
    derive = "Default"
)]
pub struct ReferenceGrantSpec {
    #[serde(default)]
    pub from: Vec<ReferenceGrantFrom>,
    #[serde(default)]
    pub to: Vec<ReferenceGrantTo>,
}

/// Who may refer: objects of `group`/`kind` (routes) in `namespace`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ReferenceGrantFrom {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub namespace: String,
}

/// What they may refer to, in the grant's namespace: every `group`/`kind`, or only `name`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ReferenceGrantTo {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `status`, as Gloo's reporters write it (`statuses: {<namespace>: {state, reportedBy, …}}`),
/// kept whole: the daemon never writes it, and an object read and written back keeps it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct UpstreamStatus {
    #[serde(flatten)]
    pub fields: BTreeMap<String, Value>,
}

impl JsonSchema for UpstreamStatus {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "UpstreamStatus".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true,
        })
    }
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
    /// `ocspStaple` and anything else, kept as written.
    #[serde(flatten, default)]
    pub other: BTreeMap<String, Value>,
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

/// The CustomResourceDefinition of `Upstream`, as `upstream-discovery crd` prints it: the
/// derived one, made to accept what Gloo's accepts.
pub fn definition() -> CustomResourceDefinition {
    let mut crd = Upstream::crd();
    for version in &mut crd.spec.versions {
        // Gloo writes `status` with the object: with a /status subresource the API server
        // would silently drop it from those writes.
        version.subresources = None;
        let Some(root) = version
            .schema
            .as_mut()
            .and_then(|schema| schema.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        // Gloo's objects may lack `spec`.
        root.required = None;
        let Some(properties) = root.properties.as_mut() else {
            continue;
        };
        properties.insert("status".into(), status_schema());
        if let Some(spec) = properties
            .get_mut("spec")
            .and_then(|spec| spec.properties.as_mut())
        {
            for (name, schema) in gloo_spec_fields() {
                spec.entry(name.to_string()).or_insert(schema);
            }
        }
    }
    crd
}

/// `status` as Gloo's CRD declares it: an open object that the API server defaults to
/// `{statuses: {}}`, so an Upstream reads back the same under either CRD. Defaults apply only
/// where a field is absent, so a status Gloo's reporters write is stored as written; and the
/// daemon never sends `status`, so server-side apply gives it no owner there.
fn status_schema() -> JSONSchemaProps {
    let empty = || Some(JSON(serde_json::json!({})));
    let statuses = JSONSchemaProps {
        default: empty(),
        nullable: None,
        ..open_object()
    };
    JSONSchemaProps {
        default: empty(),
        properties: Some(BTreeMap::from([("statuses".to_string(), statuses)])),
        ..open_object()
    }
}

/// An object that keeps whatever it holds.
fn open_object() -> JSONSchemaProps {
    JSONSchemaProps {
        type_: Some("object".into()),
        nullable: Some(true),
        x_kubernetes_preserve_unknown_fields: Some(true),
        ..Default::default()
    }
}

fn scalar(type_: &str) -> JSONSchemaProps {
    JSONSchemaProps {
        type_: Some(type_.into()),
        nullable: Some(true),
        ..Default::default()
    }
}

/// A protobuf `uint32` (wrapper), with Gloo's bounds.
fn uint32() -> JSONSchemaProps {
    JSONSchemaProps {
        minimum: Some(0.0),
        maximum: Some(f64::from(u32::MAX)),
        ..scalar("integer")
    }
}

fn list_of_open_objects() -> JSONSchemaProps {
    let item = JSONSchemaProps {
        nullable: None,
        ..open_object()
    };
    JSONSchemaProps {
        items: Some(JSONSchemaPropsOrArray::Schema(Box::new(item))),
        ..scalar("array")
    }
}

/// The spec fields of Gloo's Upstream schema the daemon does not model, each accepting at
/// least what Gloo's schema accepts: messages as open objects, scalars with Gloo's type.
/// (`aws`, `kube`, `sslConfig`, `discoveryMetadata` and `useHttp2` are modelled.)
fn gloo_spec_fields() -> Vec<(&'static str, JSONSchemaProps)> {
    let objects = [
        "ai",
        "awsEc2",
        "azure",
        "circuitBreakers",
        "connectionConfig",
        "consul",
        "failover",
        "gcp",
        "httpConnectSslConfig",
        "loadBalancerConfig",
        "namespacedStatuses",
        "outlierDetection",
        "pipe",
        "preconnectPolicy",
        "static",
    ];
    let booleans = [
        "disableIstioAutoMtls",
        "ignoreHealthOnHostRemoval",
        "overrideStreamErrorOnInvalidHttpMessage",
        "respectDnsTtl",
    ];
    let mut fields: Vec<(&'static str, JSONSchemaProps)> = objects
        .into_iter()
        .map(|name| (name, open_object()))
        .chain(booleans.into_iter().map(|name| (name, scalar("boolean"))))
        .collect();
    fields.extend([
        ("healthChecks", list_of_open_objects()),
        ("httpConnectHeaders", list_of_open_objects()),
        // A protobuf Duration ("5s") and two string wrappers.
        ("dnsRefreshRate", scalar("string")),
        ("httpProxyHostname", scalar("string")),
        ("proxyProtocolVersion", scalar("string")),
        ("initialConnectionWindowSize", uint32()),
        ("initialStreamWindowSize", uint32()),
        ("maxConcurrentStreams", uint32()),
        // A protobuf enum: its name or its number, as Gloo's `x-kubernetes-int-or-string`.
        // Left untyped instead: on Kubernetes 1.20 any int-or-string field makes the API
        // server give up the CRD's schema for server-side apply (it falls back to a deduced
        // one, so every map would be merged key by key whatever its markers say).
        (
            "protocolSelection",
            JSONSchemaProps {
                x_kubernetes_preserve_unknown_fields: Some(true),
                ..Default::default()
            },
        ),
    ]);
    fields
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
            "sslConfig": {"sslFiles": {"tlsCert": "/c", "ocspStaple": "/o"}, "sni": "x"},
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

    fn root_schema() -> Value {
        let crd = serde_json::to_value(definition()).expect("crd serializes");
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    /// Gloo writes `status` with the object; it must be stored as written, and nothing at the
    /// top level may be required (Gloo's own CRD requires nothing).
    #[test]
    fn status_is_kept_whole_and_nothing_is_required_at_the_top() {
        let root = root_schema();
        assert_eq!(root["type"], "object");
        assert_eq!(root.get("required"), None, "{root}");
        let status = &root["properties"]["status"];
        assert_eq!(status["type"], "object");
        assert_eq!(status["x-kubernetes-preserve-unknown-fields"], true);
        // Defaulted as Gloo's CRD does, and still open at both levels: nothing in it is pruned.
        assert_eq!(status["default"], serde_json::json!({}));
        let statuses = &status["properties"]["statuses"];
        assert_eq!(statuses["type"], "object");
        assert_eq!(statuses["default"], serde_json::json!({}));
        assert_eq!(statuses["x-kubernetes-preserve-unknown-fields"], true);
        let names: Vec<&String> = status["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .collect();
        assert_eq!(names, ["statuses"]);
        assert_eq!(root["properties"]["spec"]["type"], "object");
        let crd = serde_json::to_value(definition()).expect("crd serializes");
        assert_eq!(
            crd["spec"]["versions"][0].get("subresources"),
            None,
            "a /status subresource would drop the status Gloo writes with the object"
        );
    }

    /// Every spec field of Gloo's schema (docs/behaviour.md), with the type Gloo's CRD gives it;
    /// messages we do not model are open objects.
    #[test]
    fn every_spec_field_of_gloo_schema_is_listed_with_its_type() {
        let spec = spec_schema();
        let properties = spec["properties"].as_object().expect("properties");
        let objects = [
            "ai",
            "aws",
            "awsEc2",
            "azure",
            "circuitBreakers",
            "connectionConfig",
            "consul",
            "discoveryMetadata",
            "failover",
            "gcp",
            "httpConnectSslConfig",
            "kube",
            "loadBalancerConfig",
            "namespacedStatuses",
            "outlierDetection",
            "pipe",
            "preconnectPolicy",
            "sslConfig",
            "static",
        ];
        let scalars = [
            ("disableIstioAutoMtls", "boolean"),
            ("dnsRefreshRate", "string"),
            ("healthChecks", "array"),
            ("httpConnectHeaders", "array"),
            ("httpProxyHostname", "string"),
            ("ignoreHealthOnHostRemoval", "boolean"),
            ("initialConnectionWindowSize", "integer"),
            ("initialStreamWindowSize", "integer"),
            ("maxConcurrentStreams", "integer"),
            ("overrideStreamErrorOnInvalidHttpMessage", "boolean"),
            ("proxyProtocolVersion", "string"),
            ("respectDnsTtl", "boolean"),
            ("useHttp2", "boolean"),
        ];
        for name in objects {
            let field = &properties[name];
            assert_eq!(field["type"], "object", "{name}: {field}");
            let open = field["x-kubernetes-preserve-unknown-fields"] == true;
            assert!(
                open || name == "discoveryMetadata",
                "{name} must keep the fields we do not model: {field}"
            );
        }
        for (name, type_) in scalars {
            assert_eq!(properties[name]["type"], type_, "{name}");
        }
        for name in ["healthChecks", "httpConnectHeaders"] {
            assert_eq!(properties[name]["items"]["type"], "object", "{name}");
            assert_eq!(
                properties[name]["items"]["x-kubernetes-preserve-unknown-fields"],
                true
            );
        }
        assert_eq!(properties["maxConcurrentStreams"]["maximum"], 4294967295.0);
        // A name or a number: untyped (an int-or-string would cost server-side apply its
        // schema on Kubernetes 1.20).
        let protocol = &properties["protocolSelection"];
        assert_eq!(
            protocol["x-kubernetes-preserve-unknown-fields"], true,
            "{protocol}"
        );
        assert_eq!(protocol.get("type"), None, "any value: {protocol}");
        assert_eq!(protocol.get("x-kubernetes-int-or-string"), None);
        assert_eq!(
            properties.len(),
            objects.len() + scalars.len() + 1,
            "exactly Gloo's fields: {:?}",
            properties.keys().collect::<Vec<_>>()
        );
        assert_eq!(
            spec["x-kubernetes-preserve-unknown-fields"], true,
            "and any field a newer Gloo adds"
        );
    }

    /// The fields below the ones we model, from Gloo's schema: each is either typed as Gloo
    /// types it or kept by an open object, so none is pruned.
    #[test]
    fn gloo_fields_below_the_modelled_ones_are_kept() {
        let spec = spec_schema();
        let levels: [(&str, &Value, &[&str]); 4] = [
            (
                "aws",
                &spec["properties"]["aws"],
                &[
                    "awsAccountId",
                    "destinationOverrides",
                    "disableRoleChaining",
                    "lambdaFunctions",
                    "region",
                    "roleArn",
                    "secretRef",
                ],
            ),
            (
                "kube",
                &spec["properties"]["kube"],
                &[
                    "selector",
                    "serviceName",
                    "serviceNamespace",
                    "servicePort",
                    "serviceSpec",
                    "subsetSpec",
                ],
            ),
            (
                "sslConfig",
                &spec["properties"]["sslConfig"],
                &[
                    "allowRenegotiation",
                    "alpnProtocols",
                    "oneWayTls",
                    "parameters",
                    "sds",
                    "secretRef",
                    "sni",
                    "sslFiles",
                    "verifySubjectAltName",
                ],
            ),
            (
                "sslConfig.sslFiles",
                &spec["properties"]["sslConfig"]["properties"]["sslFiles"],
                &["ocspStaple", "rootCa", "tlsCert", "tlsKey"],
            ),
        ];
        for (path, schema, gloo_fields) in levels {
            let open = schema["x-kubernetes-preserve-unknown-fields"] == true;
            for field in gloo_fields {
                assert!(
                    open || schema["properties"].get(*field).is_some(),
                    "{path}.{field} would be pruned: {schema}"
                );
            }
        }
        assert_eq!(
            spec["properties"]["discoveryMetadata"]["properties"]["labels"]["additionalProperties"]
                ["type"],
            "string"
        );
    }

    #[test]
    fn a_status_survives_a_round_trip_through_our_types() {
        let written = serde_json::json!({
            "apiVersion": "gloo.solo.io/v1", "kind": "Upstream",
            "metadata": {"name": "petstore", "namespace": "gloo-system"},
            "spec": {"kube": {"serviceName": "petstore"}},
            "status": {"statuses": {"gloo-system": {"state": 1, "reportedBy": "gloo"}}}
        });
        let upstream: Upstream = serde_json::from_value(written.clone()).expect("parses");
        assert!(upstream.status.is_some());
        assert_eq!(
            serde_json::to_value(&upstream).expect("serializes"),
            written
        );
        let without = Upstream::new("x", UpstreamSpec::default());
        assert_eq!(
            serde_json::to_value(&without)
                .expect("serializes")
                .get("status"),
            None,
            "an Upstream we build has no status to write"
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
        for wanted in [
            "Type",
            "Service",
            "Service-Namespace",
            "Port",
            "Lambda-Region",
            "Age",
        ] {
            assert!(
                columns.iter().any(|c| c == wanted),
                "missing column {wanted}: {columns:?}"
            );
        }
    }
}
