//! The `gloo.solo.io/upstream_config` annotation: JSON of an Upstream spec merged over the
//! discovered one, shallow (each top-level field replaced whole) or, with
//! `gloo.solo.io/upstream_config.deep_merge: "true"`, at every depth with the annotation winning.
//!
//! Gloo reads the annotation as protobuf JSON, which accepts both `snake_case` and `camelCase`
//! field names; we write camelCase only, since Gloo's structural CRD prunes anything else.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::crd::UpstreamSpec;

use super::warning::{AnnotationOrigin, TranslateWarning};

pub const UPSTREAM_CONFIG_ANNOTATION: &str = "gloo.solo.io/upstream_config";
pub const DEEP_MERGE_ANNOTATION: &str = "gloo.solo.io/upstream_config.deep_merge";

/// Top-level fields of Gloo's `Upstream` message (camelCase JSON names).
const KNOWN_FIELDS: &[&str] = &[
    "aws",
    "awsEc2",
    "azure",
    "circuitBreakers",
    "connectionConfig",
    "consul",
    "disableIstioAutoMtls",
    "discoveryMetadata",
    "dnsRefreshRate",
    "failover",
    "gcp",
    "healthChecks",
    "httpConnectHeaders",
    "httpConnectSslConfig",
    "httpProxyHostname",
    "ignoreHealthOnHostRemoval",
    "initialConnectionWindowSize",
    "initialStreamWindowSize",
    "kube",
    "loadBalancerConfig",
    "maxConcurrentStreams",
    "metadata",
    "namespacedStatuses",
    "outlierDetection",
    "overrideStreamErrorOnInvalidHttpMessage",
    "pipe",
    "preconnectPolicy",
    "protocolSelection",
    "proxyProtocolVersion",
    "respectDnsTtl",
    "sslConfig",
    "static",
    "useHttp2",
];

/// Fields discovery owns: the annotation cannot change them (Gloo ignores them too).
const PROTECTED_FIELDS: &[&str] = &["metadata", "discoveryMetadata", "namespacedStatuses"];

/// The members of Gloo's `upstream_type` oneof: setting one replaces any other.
const UPSTREAM_TYPES: &[&str] = &[
    "kube", "static", "pipe", "aws", "azure", "consul", "awsEc2", "gcp",
];

/// Fields of `spec.kube` (the only upstream type whose fields we check).
const KUBE_FIELDS: &[&str] = &[
    "serviceName",
    "serviceNamespace",
    "servicePort",
    "selector",
    "serviceSpec",
    "subsetSpec",
];

/// Map-typed fields: their keys are user data (label names, function names, header names) and
/// keep their spelling; their values are messages again.
const MAP_FIELDS: &[&str] = &[
    "selector",
    "labels",
    "transformations",
    "extractors",
    "headers",
];
/// `google.protobuf.Struct`/`Any` fields: taken as they are, keys included.
const OPAQUE_FIELDS: &[&str] = &["config", "typedConfig"];

/// Applies the annotation found in `annotations` (if any) to `spec`. On any problem the
/// annotation is ignored whole (except protected fields, which are dropped alone) and a
/// warning says why; `spec` is then left as it was.
pub fn apply(
    spec: &mut UpstreamSpec,
    annotations: &BTreeMap<String, String>,
    origin: AnnotationOrigin,
    warnings: &mut Vec<TranslateWarning>,
) {
    let Some(raw) = annotations.get(UPSTREAM_CONFIG_ANNOTATION) else {
        return;
    };
    let deep = annotations
        .get(DEEP_MERGE_ANNOTATION)
        .is_some_and(|v| v == "true");
    match merged(spec, raw, deep, origin, warnings) {
        Ok(new_spec) => *spec = new_spec,
        Err(warning) => warnings.push(warning),
    }
}

fn merged(
    spec: &UpstreamSpec,
    raw: &str,
    deep: bool,
    origin: AnnotationOrigin,
    warnings: &mut Vec<TranslateWarning>,
) -> Result<UpstreamSpec, TranslateWarning> {
    let parsed: Value =
        serde_json::from_str(raw).map_err(|e| TranslateWarning::UpstreamConfigNotJson {
            origin,
            reason: e.to_string(),
        })?;
    let Value::Object(overrides) = camel_case_keys(parsed, false) else {
        return Err(TranslateWarning::UpstreamConfigNotJson {
            origin,
            reason: "not an object".to_string(),
        });
    };
    check_known_fields(&overrides, origin)?;

    let mut target = match serde_json::to_value(spec) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    for (field, value) in overrides {
        if PROTECTED_FIELDS.contains(&field.as_str()) {
            warnings.push(TranslateWarning::UpstreamConfigProtectedField { origin, field });
            continue;
        }
        // An explicit null sets nothing, as an unset protobuf field.
        if value.is_null() {
            continue;
        }
        if UPSTREAM_TYPES.contains(&field.as_str()) {
            target.retain(|existing, _| {
                existing == &field || !UPSTREAM_TYPES.contains(&existing.as_str())
            });
        }
        match (deep, target.get_mut(&field)) {
            (true, Some(existing)) => deep_merge(existing, value),
            _ => {
                target.insert(field, value);
            }
        }
    }
    serde_json::from_value(Value::Object(target)).map_err(|e| {
        TranslateWarning::UpstreamConfigInvalidValue {
            origin,
            reason: e.to_string(),
        }
    })
}

fn check_known_fields(
    overrides: &Map<String, Value>,
    origin: AnnotationOrigin,
) -> Result<(), TranslateWarning> {
    let mut unknown: Vec<String> = overrides
        .keys()
        .filter(|field| !KNOWN_FIELDS.contains(&field.as_str()))
        .cloned()
        .collect();
    if let Some(Value::Object(kube)) = overrides.get("kube") {
        unknown.extend(
            kube.keys()
                .filter(|field| !KUBE_FIELDS.contains(&field.as_str()))
                .map(|field| format!("kube.{field}")),
        );
    }
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(TranslateWarning::UpstreamConfigUnknownFields {
            origin,
            fields: unknown,
        })
    }
}

/// Merges `overrides` into `target` at every depth; on anything but two objects the override wins.
fn deep_merge(target: &mut Value, overrides: Value) {
    match (target, overrides) {
        (Value::Object(target), Value::Object(overrides)) => {
            for (key, value) in overrides {
                if value.is_null() {
                    continue;
                }
                match target.get_mut(&key) {
                    Some(existing) => deep_merge(existing, value),
                    None => {
                        target.insert(key, value);
                    }
                }
            }
        }
        (target, value) => *target = value,
    }
}

/// Rewrites protobuf field names to their JSON (lowerCamelCase) names, recursively, leaving the
/// keys of map fields and the contents of opaque fields as the user wrote them.
fn camel_case_keys(value: Value, keys_are_data: bool) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| {
                    let key = if keys_are_data {
                        key
                    } else {
                        to_camel_case(&key)
                    };
                    let value = if !keys_are_data && OPAQUE_FIELDS.contains(&key.as_str()) {
                        value
                    } else {
                        let children_are_data =
                            !keys_are_data && MAP_FIELDS.contains(&key.as_str());
                        camel_case_keys(value, children_are_data)
                    };
                    (key, value)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| camel_case_keys(item, false))
                .collect(),
        ),
        other => other,
    }
}

/// `initial_stream_window_size` → `initialStreamWindowSize`, as protoc derives JSON names.
fn to_camel_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper_next = false;
    for c in name.chars() {
        if c == '_' {
            upper_next = true;
        } else if upper_next {
            out.extend(c.to_uppercase());
            upper_next = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::KubeUpstream;
    use serde_json::json;

    fn discovered() -> UpstreamSpec {
        UpstreamSpec {
            kube: Some(KubeUpstream {
                service_name: Some("petstore".into()),
                service_namespace: Some("shop".into()),
                service_port: Some(8080),
                selector: Some([("app".to_string(), "petstore".to_string())].into()),
                ..Default::default()
            }),
            use_http2: Some(true),
            ..Default::default()
        }
    }

    fn apply_json(config: &str, deep: bool) -> (Value, Vec<&'static str>) {
        let mut annotations =
            BTreeMap::from([(UPSTREAM_CONFIG_ANNOTATION.to_string(), config.to_string())]);
        if deep {
            annotations.insert(DEEP_MERGE_ANNOTATION.to_string(), "true".to_string());
        }
        let mut spec = discovered();
        let mut warnings = Vec::new();
        apply(
            &mut spec,
            &annotations,
            AnnotationOrigin::Service,
            &mut warnings,
        );
        (
            serde_json::to_value(spec).expect("serializes"),
            warnings.iter().map(|w| w.reason().as_str()).collect(),
        )
    }

    fn discovered_json() -> Value {
        serde_json::to_value(discovered()).expect("serializes")
    }

    #[test]
    fn adds_fields_and_accepts_both_spellings() {
        for config in [
            r#"{"initial_stream_window_size": 2048}"#,
            r#"{"initialStreamWindowSize": 2048}"#,
        ] {
            let (spec, warnings) = apply_json(config, false);
            assert!(warnings.is_empty());
            let mut want = discovered_json();
            want["initialStreamWindowSize"] = json!(2048);
            assert_eq!(spec, want, "{config}");
        }
    }

    #[test]
    fn shallow_merge_replaces_top_level_fields_whole() {
        let (spec, warnings) = apply_json(
            r#"{"kube": {"service_port": 9090}, "use_http2": false}"#,
            false,
        );
        assert!(warnings.is_empty());
        assert_eq!(spec["kube"], json!({"servicePort": 9090}));
        assert_eq!(spec["useHttp2"], json!(false));
    }

    #[test]
    fn deep_merge_merges_at_every_depth_with_the_annotation_winning() {
        let config = r#"{"kube": {"servicePort": 9090, "selector": {"tier_name": "web"},
                         "subset_spec": {"selectors": [{"keys": ["version"]}]}}}"#;
        let (spec, warnings) = apply_json(config, true);
        assert!(warnings.is_empty());
        assert_eq!(
            spec["kube"],
            json!({
                "serviceName": "petstore", "serviceNamespace": "shop", "servicePort": 9090,
                "selector": {"app": "petstore", "tier_name": "web"},
                "subsetSpec": {"selectors": [{"keys": ["version"]}]}
            })
        );
        assert_eq!(spec["useHttp2"], json!(true));
    }

    #[test]
    fn deep_merge_flag_must_be_exactly_true() {
        let mut annotations = BTreeMap::from([
            (
                UPSTREAM_CONFIG_ANNOTATION.to_string(),
                r#"{"kube": {"servicePort": 1}}"#.to_string(),
            ),
            (DEEP_MERGE_ANNOTATION.to_string(), "yes".to_string()),
        ]);
        let mut spec = discovered();
        apply(
            &mut spec,
            &annotations,
            AnnotationOrigin::Service,
            &mut Vec::new(),
        );
        assert_eq!(
            spec.kube.as_ref().and_then(|k| k.service_name.clone()),
            None,
            "shallow: kube replaced whole"
        );
        annotations.insert(DEEP_MERGE_ANNOTATION.to_string(), "true".to_string());
        let mut spec = discovered();
        apply(
            &mut spec,
            &annotations,
            AnnotationOrigin::Service,
            &mut Vec::new(),
        );
        assert_eq!(
            spec.kube.and_then(|k| k.service_name),
            Some("petstore".to_string())
        );
    }

    #[test]
    fn another_upstream_type_replaces_kube() {
        for deep in [false, true] {
            let (spec, warnings) = apply_json(
                r#"{"static": {"hosts": [{"addr": "10.0.0.1", "port": 80}]}}"#,
                deep,
            );
            assert!(warnings.is_empty());
            assert!(spec.get("kube").is_none(), "deep={deep}: {spec}");
            assert_eq!(spec["static"]["hosts"][0]["addr"], json!("10.0.0.1"));
        }
    }

    #[test]
    fn opaque_and_map_contents_keep_their_keys() {
        let config = r#"{"health_checks": [{"custom_health_check": {"name": "x", "config": {"my_key": 1}}}]}"#;
        let (spec, _) = apply_json(config, false);
        assert_eq!(
            spec["healthChecks"],
            json!([{"customHealthCheck": {"name": "x", "config": {"my_key": 1}}}])
        );
    }

    #[test]
    fn bad_annotations_are_ignored_with_a_warning() {
        let cases = [
            ("{not json", "invalid_upstream_config"),
            ("[1, 2]", "invalid_upstream_config"),
            (
                r#"{"initialStreamWindowSiz": 1}"#,
                "unknown_upstream_config_field",
            ),
            (
                r#"{"kube": {"servicePrt": 1}}"#,
                "unknown_upstream_config_field",
            ),
            (r#"{"useHttp2": "yes"}"#, "invalid_upstream_config_value"),
            (
                r#"{"kube": {"servicePort": -1}}"#,
                "invalid_upstream_config_value",
            ),
        ];
        for (config, reason) in cases {
            let (spec, warnings) = apply_json(config, false);
            assert_eq!(
                spec,
                discovered_json(),
                "{config} must leave the discovered spec alone"
            );
            assert_eq!(warnings, vec![reason], "{config}");
        }
    }

    #[test]
    fn protected_fields_are_dropped_but_the_rest_applies() {
        let (spec, warnings) = apply_json(
            r#"{"discoveryMetadata": {"labels": {"a": "b"}}, "metadata": {"name": "x"}, "useHttp2": false}"#,
            false,
        );
        assert_eq!(
            warnings,
            vec![
                "protected_upstream_config_field",
                "protected_upstream_config_field"
            ]
        );
        assert!(spec.get("discoveryMetadata").is_none());
        assert_eq!(spec["useHttp2"], json!(false));
    }

    #[test]
    fn camel_case_conversion() {
        for (snake, camel) in [
            ("use_http2", "useHttp2"),
            ("aws_ec2", "awsEc2"),
            ("consecutive_5xx", "consecutive5xx"),
            ("already", "already"),
        ] {
            assert_eq!(to_camel_case(snake), camel);
        }
    }
}
