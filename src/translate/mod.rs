//! Pure translation of a Kubernetes Service into the Upstreams discovery writes for it, one per
//! port, exactly as Gloo's discovery would (docs/behaviour.md).

pub mod grants;
mod http2;
pub mod naming;
mod tls;
pub mod trace;
mod upstream_config;
mod upstream_schema;
mod warning;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::crd::{DiscoveryMetadata, KubeUpstream, Upstream, UpstreamSpec};
use trace::{record, Tracer};

use crate::model::{UpstreamKey, DISCOVERED_BY_LABEL, KUBERNETES_PLUGIN, LAST_APPLIED_ANNOTATION};

pub use grants::{
    desired_grant, route_namespaces, GrantSettings, RouteKind, ROUTE_NAMESPACES_ANNOTATION,
};
pub use http2::H2_ANNOTATION;
pub use naming::{sanitize_name, upstream_name};
pub use tls::{
    ONE_WAY_TLS_ANNOTATION, ROOT_CA_ANNOTATION, SECRET_ANNOTATION, TLS_CERT_ANNOTATION,
    TLS_KEY_ANNOTATION,
};
pub use trace::{FieldSource, Rule};
pub use upstream_config::{DEEP_MERGE_ANNOTATION, UPSTREAM_CONFIG_ANNOTATION};
pub use warning::{
    AnnotationOrigin, TranslateWarning, MAX_LISTED_FIELDS, MAX_QUOTED_CHARS,
    MAX_UPSTREAM_CONFIG_BYTES,
};

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
    translate(service, settings, None)
}

/// Translates one Service as [`translate_service`] does, and says which rule set each field of
/// each Upstream: one list per Upstream, in the same order (`explain`).
pub fn translate_service_traced(
    service: &Service,
    settings: &TranslateSettings,
) -> (ServiceUpstreams, Vec<Vec<FieldSource>>) {
    let mut traces = Vec::new();
    let result = translate(service, settings, Some(&mut traces));
    (result, traces)
}

fn translate(
    service: &Service,
    settings: &TranslateSettings,
    mut traces: Option<&mut Vec<Vec<FieldSource>>>,
) -> ServiceUpstreams {
    let ports = service
        .spec
        .as_ref()
        .and_then(|spec| spec.ports.as_deref())
        .unwrap_or_default();
    let mut result = ServiceUpstreams::default();
    for port in ports {
        let mut warnings = Vec::new();
        let mut sources = traces.is_some().then(Vec::new);
        result.upstreams.push(translate_port(
            service,
            port,
            settings,
            &mut warnings,
            &mut sources.as_mut(),
        ));
        if let (Some(traces), Some(sources)) = (traces.as_deref_mut(), sources) {
            traces.push(sources);
        }
        for warning in warnings.into_iter().map(TranslateWarning::bounded) {
            if !result.warnings.contains(&warning) {
                result.warnings.push(warning);
            }
        }
    }
    result
}

/// The names of the Upstreams `service` maps to, exactly as [`translate_service`] names them:
/// the cache needs them to know who claims which name, and translating in full would cost more.
pub fn upstream_keys(service: &Service, write_namespace: &WriteNamespace) -> Vec<UpstreamKey> {
    let (service_namespace, service_name) = identity(service);
    service
        .spec
        .as_ref()
        .and_then(|spec| spec.ports.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|port| {
            UpstreamKey::new(
                target_namespace(write_namespace, &service_namespace),
                upstream_name(&service_namespace, &service_name, port.port),
            )
        })
        .collect()
}

/// A Service's namespace (`default` when unset, as the API server fills it) and name.
fn identity(service: &Service) -> (String, String) {
    let meta = &service.metadata;
    (
        meta.namespace
            .clone()
            .unwrap_or_else(|| "default".to_string()),
        meta.name.clone().unwrap_or_default(),
    )
}

fn target_namespace(write_namespace: &WriteNamespace, service_namespace: &str) -> String {
    match write_namespace {
        WriteNamespace::Fixed(namespace) => namespace.clone(),
        WriteNamespace::ServiceNamespace => service_namespace.to_string(),
    }
}

fn translate_port(
    service: &Service,
    port: &ServicePort,
    settings: &TranslateSettings,
    warnings: &mut Vec<TranslateWarning>,
    trace: &mut Tracer<'_>,
) -> Upstream {
    let service_meta = &service.metadata;
    let (service_namespace, service_name) = identity(service);
    let empty = BTreeMap::new();
    let annotations = service_meta.annotations.as_ref().unwrap_or(&empty);
    if trace.is_some() {
        record_discovered(trace, service, port, settings);
    }

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
        use_http2: http2::use_http2(
            annotations,
            &settings.global_annotations,
            port,
            warnings,
            trace,
        ),
        ssl_config: tls::ssl_config(annotations, &service_namespace, port.port, warnings, trace),
        ..Default::default()
    };
    upstream_config::apply(
        &mut spec,
        &settings.global_annotations,
        AnnotationOrigin::GlobalSettings,
        warnings,
        trace,
    );
    upstream_config::apply(
        &mut spec,
        annotations,
        AnnotationOrigin::Service,
        warnings,
        trace,
    );

    let namespace = target_namespace(&settings.write_namespace, &service_namespace);
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
        status: None,
    }
}

/// Records the rules behind what every Upstream of a Service port starts from (names, labels,
/// copied annotations, `kube`, `discoveryMetadata`, the owner reference); only when tracing.
fn record_discovered(
    trace: &mut Tracer<'_>,
    service: &Service,
    port: &ServicePort,
    settings: &TranslateSettings,
) {
    let (service_namespace, service_name) = identity(service);
    let raw = format!("{service_namespace}-{service_name}-{}", port.port);
    let (_, hashed) = naming::sanitize_name_hashed(&raw);
    record(trace, &["metadata", "name"], || Rule::Name { raw, hashed });
    record(trace, &["metadata", "namespace"], || {
        match settings.write_namespace {
            WriteNamespace::Fixed(_) => Rule::WriteNamespace,
            WriteNamespace::ServiceNamespace => Rule::ServiceNamespaceMode,
        }
    });
    record(trace, &["metadata", "labels", DISCOVERED_BY_LABEL], || {
        Rule::OwnershipLabel
    });
    for key in service
        .metadata
        .annotations
        .iter()
        .flatten()
        .map(|(k, _)| k)
    {
        if key != LAST_APPLIED_ANNOTATION {
            record(trace, &["metadata", "annotations", key.as_str()], || {
                Rule::CopiedAnnotation { key: key.clone() }
            });
        }
    }
    record(trace, &["metadata", "ownerReferences"], || {
        Rule::OwnerReference
    });
    record(trace, &["spec", "kube", "serviceName"], || {
        Rule::ServiceName
    });
    record(trace, &["spec", "kube", "serviceNamespace"], || {
        Rule::ServiceNamespace
    });
    record(trace, &["spec", "kube", "servicePort"], || {
        Rule::ServicePort {
            port_name: port.name.clone().filter(|name| !name.is_empty()),
        }
    });
    record(trace, &["spec", "kube", "selector"], || {
        Rule::ServiceSelector
    });
    record(trace, &["spec", "discoveryMetadata"], || {
        Rule::ServiceLabels
    });
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
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ServiceSpec;
    use serde_json::{json, Value};

    fn service(namespace: &str, name: &str, ports: &[(&str, i32)]) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                uid: Some(format!("uid-{name}")),
                labels: Some(BTreeMap::from([("app".to_string(), name.to_string())])),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(BTreeMap::from([("app".to_string(), name.to_string())])),
                ports: Some(
                    ports
                        .iter()
                        .map(|(port_name, port)| ServicePort {
                            name: Some(port_name.to_string()),
                            port: *port,
                            target_port: Some(
                                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(
                                    9999,
                                ),
                            ),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn annotate(mut service: Service, pairs: &[(&str, &str)]) -> Service {
        let annotations = service
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new);
        for (key, value) in pairs {
            annotations.insert(key.to_string(), value.to_string());
        }
        service
    }

    fn as_json(upstream: &Upstream) -> Value {
        serde_json::to_value(upstream).expect("serializes")
    }

    #[test]
    fn one_upstream_per_port_with_gloo_names_labels_and_spec() {
        let svc = service("default", "petstore", &[("http", 8080), ("metrics", 9090)]);
        let result = translate_service(&svc, &TranslateSettings::new("gloo-system"));
        assert!(result.warnings.is_empty());
        let names: Vec<_> = result
            .upstreams
            .iter()
            .map(|u| u.metadata.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(names, ["default-petstore-8080", "default-petstore-9090"]);
        assert_eq!(
            as_json(&result.upstreams[0]),
            json!({
                "apiVersion": "gloo.solo.io/v1",
                "kind": "Upstream",
                "metadata": {
                    "name": "default-petstore-8080",
                    "namespace": "gloo-system",
                    "labels": {"discovered_by": "kubernetesplugin"}
                },
                "spec": {
                    "discoveryMetadata": {"labels": {"app": "petstore"}},
                    "kube": {
                        "serviceName": "petstore",
                        "serviceNamespace": "default",
                        "servicePort": 8080,
                        "selector": {"app": "petstore"}
                    }
                }
            })
        );
    }

    #[test]
    fn service_without_ports_gives_nothing() {
        let mut svc = service("default", "headless", &[]);
        assert!(
            translate_service(&svc, &TranslateSettings::new("gloo-system"))
                .upstreams
                .is_empty()
        );
        svc.spec = None;
        assert!(
            translate_service(&svc, &TranslateSettings::new("gloo-system"))
                .upstreams
                .is_empty()
        );
    }

    #[test]
    fn service_without_selector_or_labels_leaves_them_unset() {
        let mut svc = service("default", "external", &[("http", 80)]);
        svc.metadata.labels = None;
        if let Some(spec) = svc.spec.as_mut() {
            spec.selector = None;
        }
        let spec =
            &as_json(&translate_service(&svc, &TranslateSettings::new("gloo-system")).upstreams[0])
                ["spec"];
        assert_eq!(spec["discoveryMetadata"], json!({}));
        assert!(spec["kube"].get("selector").is_none());
    }

    #[test]
    fn annotations_are_copied_without_last_applied_configuration() {
        let svc = annotate(
            service("default", "petstore", &[("http", 8080)]),
            &[(LAST_APPLIED_ANNOTATION, "{}"), ("team", "payments")],
        );
        let upstream =
            &translate_service(&svc, &TranslateSettings::new("gloo-system")).upstreams[0];
        assert_eq!(
            upstream.metadata.annotations,
            Some(BTreeMap::from([(
                "team".to_string(),
                "payments".to_string()
            )]))
        );

        let only_last_applied = annotate(
            service("default", "p", &[("http", 1)]),
            &[(LAST_APPLIED_ANNOTATION, "{}")],
        );
        let upstream =
            &translate_service(&only_last_applied, &TranslateSettings::new("gloo-system"))
                .upstreams[0];
        assert_eq!(upstream.metadata.annotations, None);
    }

    #[test]
    fn long_names_are_hashed() {
        let svc = service(
            "payments-production",
            "eu-west-transaction-authorization-gateway",
            &[("https", 8443)],
        );
        let upstream =
            &translate_service(&svc, &TranslateSettings::new("gloo-system")).upstreams[0];
        assert_eq!(
            upstream.metadata.name.as_deref(),
            Some("payments-production-eu-west-tra-3280707d2beaa613e35a16dbfb55484")
        );
    }

    #[test]
    fn owner_reference_only_within_the_service_namespace() {
        let in_other = service("shop", "petstore", &[("http", 80)]);
        let fixed = translate_service(&in_other, &TranslateSettings::new("gloo-system"));
        assert_eq!(
            fixed.upstreams[0].metadata.owner_references, None,
            "never across namespaces"
        );

        let in_write_ns = service("gloo-system", "petstore", &[("http", 80)]);
        let same = translate_service(&in_write_ns, &TranslateSettings::new("gloo-system"));
        let owners = same.upstreams[0]
            .metadata
            .owner_references
            .clone()
            .expect("owner in same namespace");
        assert_eq!(
            serde_json::to_value(&owners).expect("json"),
            json!([{"apiVersion": "v1", "kind": "Service", "name": "petstore", "uid": "uid-petstore"}])
        );

        let settings = TranslateSettings {
            write_namespace: WriteNamespace::ServiceNamespace,
            global_annotations: BTreeMap::new(),
        };
        let per_service = translate_service(&in_other, &settings);
        assert_eq!(
            per_service.upstreams[0].metadata.namespace.as_deref(),
            Some("shop")
        );
        assert!(per_service.upstreams[0].metadata.owner_references.is_some());

        let mut without_uid = in_other.clone();
        without_uid.metadata.uid = None;
        assert_eq!(
            translate_service(&without_uid, &settings).upstreams[0]
                .metadata
                .owner_references,
            None
        );
    }

    #[test]
    fn http2_tls_and_upstream_config_come_together() {
        let svc = annotate(
            service("shop", "api", &[("grpc", 9000), ("https", 443)]),
            &[
                (SECRET_ANNOTATION, "443:api-tls"),
                (
                    UPSTREAM_CONFIG_ANNOTATION,
                    r#"{"circuit_breakers": {"max_connections": 10}}"#,
                ),
            ],
        );
        let result = translate_service(&svc, &TranslateSettings::new("gloo-system"));
        assert!(result.warnings.is_empty(), "{:?}", result.warnings);
        let grpc = as_json(&result.upstreams[0]);
        let https = as_json(&result.upstreams[1]);
        assert_eq!(grpc["spec"]["useHttp2"], json!(true));
        assert!(grpc["spec"].get("sslConfig").is_none());
        assert!(https["spec"].get("useHttp2").is_none(), "unset, not false");
        assert_eq!(
            https["spec"]["sslConfig"],
            json!({"secretRef": {"name": "api-tls", "namespace": "shop"}})
        );
        for upstream in [&grpc, &https] {
            assert_eq!(
                upstream["spec"]["circuitBreakers"],
                json!({"maxConnections": 10})
            );
        }
    }

    #[test]
    fn tracing_changes_nothing_and_records_the_rule_of_each_field() {
        let svc = annotate(
            service("shop", "api", &[("grpc", 9000), ("https", 443)]),
            &[
                (SECRET_ANNOTATION, "443:api-tls"),
                (
                    UPSTREAM_CONFIG_ANNOTATION,
                    r#"{"circuit_breakers": {"max_connections": 10}, "bogus": 1}"#,
                ),
            ],
        );
        let settings = TranslateSettings::new("gloo-system");
        let (traced, traces) = translate_service_traced(&svc, &settings);
        assert_eq!(traced, translate_service(&svc, &settings));
        assert_eq!(traces.len(), 2, "one trace per Upstream");
        let rule = |trace: &[FieldSource], path: &[&str]| {
            trace
                .iter()
                .rev()
                .find(|source| source.path == path)
                .map(|source| source.rule.clone())
        };
        assert_eq!(
            rule(&traces[0], &["spec", "useHttp2"]),
            Some(Rule::Http2PortName {
                name: "grpc".into(),
                prefix: "grpc"
            })
        );
        assert_eq!(
            rule(&traces[1], &["spec", "sslConfig", "secretRef", "name"]),
            Some(Rule::Tls {
                annotation: SECRET_ANNOTATION,
                port: Some(443)
            })
        );
        assert_eq!(
            rule(&traces[0], &["spec", "sslConfig", "secretRef", "name"]),
            None
        );
        assert_eq!(
            rule(&traces[1], &["spec", "circuitBreakers"]),
            None,
            "an annotation ignored for a bad field sets nothing"
        );
        assert_eq!(
            rule(&traces[1], &["metadata", "name"]),
            Some(Rule::Name {
                raw: "shop-api-443".into(),
                hashed: false
            })
        );
    }

    #[test]
    fn global_annotations_apply_first_and_the_service_wins() {
        let settings = TranslateSettings {
            write_namespace: WriteNamespace::Fixed("gloo-system".into()),
            global_annotations: BTreeMap::from([
                (H2_ANNOTATION.to_string(), "true".to_string()),
                (
                    UPSTREAM_CONFIG_ANNOTATION.to_string(),
                    r#"{"initialStreamWindowSize": 1000, "maxConcurrentStreams": 5}"#.to_string(),
                ),
            ]),
        };
        let plain = service("default", "a", &[("http", 80)]);
        let spec = as_json(&translate_service(&plain, &settings).upstreams[0])["spec"].clone();
        assert_eq!(spec["useHttp2"], json!(true));
        assert_eq!(spec["initialStreamWindowSize"], json!(1000));

        let overriding = annotate(
            plain,
            &[
                (H2_ANNOTATION, "false"),
                (
                    UPSTREAM_CONFIG_ANNOTATION,
                    r#"{"initialStreamWindowSize": 2000}"#,
                ),
            ],
        );
        let spec = as_json(&translate_service(&overriding, &settings).upstreams[0])["spec"].clone();
        assert_eq!(spec["useHttp2"], json!(false));
        assert_eq!(spec["initialStreamWindowSize"], json!(2000));
        assert_eq!(
            spec["maxConcurrentStreams"],
            json!(5),
            "global fields the Service does not set stay"
        );
    }

    #[test]
    fn a_bad_annotation_warns_once_and_loses_no_upstream() {
        let svc = annotate(
            service("default", "broken", &[("http", 80), ("admin", 81)]),
            &[
                (UPSTREAM_CONFIG_ANNOTATION, "{oops"),
                (H2_ANNOTATION, "maybe"),
            ],
        );
        let result = translate_service(&svc, &TranslateSettings::new("gloo-system"));
        assert_eq!(result.upstreams.len(), 2);
        let reasons: Vec<_> = result
            .warnings
            .iter()
            .map(|warning| warning.reason().as_str())
            .collect();
        assert_eq!(
            reasons,
            ["invalid_boolean_annotation", "invalid_upstream_config"]
        );
        let spec = as_json(&result.upstreams[0])["spec"].clone();
        assert_eq!(spec["kube"]["serviceName"], json!("broken"));
        assert!(spec.get("useHttp2").is_none());
    }

    #[test]
    fn the_annotation_cannot_change_discovery_metadata() {
        let svc = annotate(
            service("default", "petstore", &[("http", 80)]),
            &[(
                UPSTREAM_CONFIG_ANNOTATION,
                r#"{"discoveryMetadata": {"labels": {"forged": "yes"}}}"#,
            )],
        );
        let result = translate_service(&svc, &TranslateSettings::new("gloo-system"));
        assert_eq!(
            as_json(&result.upstreams[0])["spec"]["discoveryMetadata"],
            json!({"labels": {"app": "petstore"}})
        );
        assert_eq!(result.warnings.len(), 1);
    }

    #[test]
    fn a_config_nested_ten_thousand_deep_is_refused_with_a_warning() {
        // A recursive parser with no bound would overflow the stack here; serde_json stops at
        // 128 levels, which is far deeper than any field of Gloo's Upstream.
        let deep = format!(
            "{{\"static\":{}{}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        let service = annotate(
            service("shop", "web", &[("http", 80)]),
            &[("gloo.solo.io/upstream_config", deep.as_str())],
        );
        let translated = translate_service(&service, &TranslateSettings::new("gloo-system"));
        assert_eq!(
            translated.upstreams.len(),
            1,
            "the Upstream is still discovered"
        );
        let [warning] = translated.warnings.as_slice() else {
            panic!("one warning: {:?}", translated.warnings);
        };
        assert!(
            matches!(warning, TranslateWarning::UpstreamConfigNotJson { reason, .. } if reason.contains("recursion limit")),
            "{warning}"
        );
        assert!(!translated.upstreams[0].spec.other.contains_key("static"));
    }

    #[test]
    fn the_worst_inputs_translate_on_a_quarter_of_a_worker_stack() {
        // tokio's worker threads have 2 MiB of stack; translation runs on them. A value nested
        // to the parser's limit inside an opaque field goes through the parser, the walk, both
        // merges, serde's conversions and drop, once from the global annotations and once from
        // the Service's (so the deep merge meets it twice).
        let nested = |depth: usize, leaf: &str| {
            format!(
                r#"{{"healthChecks": [{{"customHealthCheck": {{"config": {}{leaf}{}}}}}]}}"#,
                r#"{"a":"#.repeat(depth),
                "}".repeat(depth)
            )
        };
        let global = nested(123, "1");
        let own = nested(123, "2");
        let worker = std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(move || {
                let settings = TranslateSettings {
                    write_namespace: WriteNamespace::ServiceNamespace,
                    global_annotations: BTreeMap::from([
                        (UPSTREAM_CONFIG_ANNOTATION.to_string(), global),
                        (DEEP_MERGE_ANNOTATION.to_string(), "true".to_string()),
                    ]),
                };
                let deep_service = annotate(
                    service("shop", "web", &[("http", 80), ("admin", 81)]),
                    &[
                        (UPSTREAM_CONFIG_ANNOTATION, own.as_str()),
                        (DEEP_MERGE_ANNOTATION, "true"),
                    ],
                );
                let translated = translate_service(&deep_service, &settings);
                let too_deep = annotate(
                    service("shop", "web", &[("http", 80)]),
                    &[(UPSTREAM_CONFIG_ANNOTATION, &nested(10_000, "3"))],
                );
                (translated, translate_service(&too_deep, &settings))
            })
            .expect("spawn");
        let (translated, too_deep) = worker.join().expect("no stack overflow");
        assert!(translated.warnings.is_empty(), "{:?}", translated.warnings);
        let mut want = json!(2);
        for _ in 0..123 {
            want = json!({"a": want});
        }
        for upstream in &translated.upstreams {
            assert_eq!(
                as_json(upstream)["spec"]["healthChecks"],
                json!([{"customHealthCheck": {"config": want}}])
            );
        }
        assert_eq!(
            too_deep
                .warnings
                .iter()
                .map(|w| w.reason().as_str())
                .collect::<Vec<_>>(),
            ["invalid_upstream_config"]
        );
    }

    #[test]
    fn warnings_quote_little_of_a_200_kib_annotation() {
        let big = "x".repeat(200 * 1024);
        let unknown = format!(
            "{{{}}}",
            (0..20_000)
                .map(|i| format!("\"f{i:05}\":1"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let svc = annotate(
            service("shop", "web", &[("http", 80)]),
            &[
                (H2_ANNOTATION, big.as_str()),
                (SECRET_ANNOTATION, &format!("{big}:tls")),
                (ONE_WAY_TLS_ANNOTATION, big.as_str()),
                (UPSTREAM_CONFIG_ANNOTATION, unknown.as_str()),
            ],
        );
        let translated = translate_service(&svc, &TranslateSettings::new("gloo-system"));
        let messages: Vec<String> = translated.warnings.iter().map(|w| w.to_string()).collect();
        let xs = "x".repeat(MAX_QUOTED_CHARS);
        assert_eq!(
            messages,
            [
                format!("annotation gloo.solo.io/h2_service on the Service is \"{xs}… (204800 bytes in all)\", neither \"true\" nor \"false\"; ignored"),
                format!("annotation gloo.solo.io/sslService.secret is \"{xs}… (204804 bytes in all)\": \"{xs}… (204800 bytes in all)\" before ':' is not a port number, so it applies to every port, as in Gloo"),
                format!("annotation gloo.solo.io/sslService.oneWayTls is \"{xs}… (204800 bytes in all)\", which Go's strconv.ParseBool does not read (1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False); read as false, as Gloo does"),
                "annotation gloo.solo.io/upstream_config on the Service sets unknown Upstream field(s) f00000, f00001, f00002, f00003, f00004, f00005, f00006, f00007, and 19992 more; ignored".to_string(),
            ]
        );
        // The Upstream is still there, the annotations copied as they are (Gloo copies them).
        let upstream = &translated.upstreams[0];
        assert_eq!(
            upstream
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(H2_ANNOTATION)),
            Some(&big)
        );
    }

    mod never_panics {
        use super::*;
        use proptest::prelude::*;

        /// Field names of Gloo's Upstream mixed with unknown ones, so that both the merge and
        /// the rejection paths are exercised.
        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                prop::sample::select(vec![
                    "static",
                    "hosts",
                    "addr",
                    "port",
                    "kube",
                    "selector",
                    "serviceName",
                    "sslConfig",
                    "secretRef",
                    "name",
                    "sni",
                    "useHttp2",
                    "healthChecks",
                    "timeout",
                    "circuitBreakers",
                    "maxConnections",
                    "ai",
                    "metadata",
                    "discoveryMetadata",
                    "connection_config",
                    "use_http2",
                ])
                .prop_map(str::to_string),
                "[a-zA-Z_]{1,6}",
            ]
        }

        fn json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(
                    |f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
                ),
                ".{0,8}".prop_map(Value::from),
            ];
            leaf.prop_recursive(6, 48, 5, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                    prop::collection::btree_map(key(), inner, 0..5)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        /// The annotations translation reads, with arbitrary values (JSON or not).
        fn annotations() -> impl Strategy<Value = Vec<(String, String)>> {
            let name = prop::sample::select(vec![
                "gloo.solo.io/h2_service",
                "gloo.solo.io/sslService.secret",
                "gloo.solo.io/sslService.tlsCert",
                "gloo.solo.io/sslService.tlsKey",
                "gloo.solo.io/sslService.rootCa",
                "gloo.solo.io/sslService.oneWayTls",
                "gloo.solo.io/upstream_config",
                "gloo.solo.io/upstream_config.deep_merge",
                "team",
            ]);
            let value = prop_oneof![
                json().prop_map(|v| v.to_string()),
                ".{0,12}",
                ".{100,400}",
                (".{0,200}", 0usize..3000).prop_map(|(unit, times)| unit.repeat(times)),
                (1usize..2000).prop_map(|n| format!(
                    "{{{}}}",
                    (0..n)
                        .map(|i| format!("\"k{i}\":{i}"))
                        .collect::<Vec<_>>()
                        .join(",")
                )),
                "(80|443|x)?:?(true|false|1|T|no|secret)?",
                Just("true".to_string()),
            ];
            prop::collection::vec((name.prop_map(str::to_string), value), 0..6)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Whatever the annotations, names and ports: no panic, one Upstream per port, and
            /// a name of at most 63 bytes from an ASCII one.
            #[test]
            fn translation_never_panics(
                pairs in annotations(),
                global in annotations(),
                ports in prop::collection::vec((".{0,10}", any::<i32>(), prop::option::of(".{0,10}")), 0..4),
                namespace in "[a-z0-9.-]{1,70}",
                name in ".{1,70}",
            ) {
                let mut service = service(&namespace, &name, &[]);
                let spec = service.spec.get_or_insert_with(Default::default);
                spec.ports = Some(ports.iter().map(|(port_name, port, app_protocol)| ServicePort {
                    name: Some(port_name.clone()),
                    port: *port,
                    app_protocol: app_protocol.clone(),
                    ..Default::default()
                }).collect());
                service.metadata.annotations = Some(pairs.into_iter().collect());
                let settings = TranslateSettings {
                    write_namespace: WriteNamespace::Fixed("gloo-system".into()),
                    global_annotations: global.into_iter().collect(),
                };
                let translated = translate_service(&service, &settings);
                prop_assert_eq!(translated.upstreams.len(), ports.len());
                for upstream in &translated.upstreams {
                    let upstream_name = upstream.metadata.name.as_deref().unwrap_or_default();
                    // Gloo lower-cases after cutting to 63 bytes, which can lengthen a name
                    // with some non-ASCII letters; Kubernetes names are ASCII.
                    if name.is_ascii() {
                        prop_assert!(upstream_name.len() <= 63, "{}", upstream_name);
                    }
                    prop_assert!(serde_json::to_value(upstream).is_ok());
                }
                for warning in &translated.warnings {
                    let message = warning.to_string();
                    prop_assert!(message.chars().count() <= 1_500, "{}", message);
                }
            }
        }
    }
}
