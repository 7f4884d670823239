//! The `gloo.solo.io/upstream_config` annotation: JSON of an Upstream spec merged over the
//! discovered one, shallow (each top-level field replaced whole) or, with
//! `gloo.solo.io/upstream_config.deep_merge: "true"`, at every depth with the annotation winning.
//!
//! Gloo reads the annotation as protobuf JSON: field names in `snake_case` or `lowerCamelCase`,
//! every name known at every depth, one member per oneof (`upstream_schema` holds the names).
//! We write the camelCase names only, since Gloo's structural CRD prunes anything else.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::crd::UpstreamSpec;

use super::trace::{record_leaves, FieldSource, Rule, Tracer};
use super::upstream_schema::{self, Kind, Message, Shape, UPSTREAM};
use super::warning::{AnnotationOrigin, TranslateWarning, MAX_UPSTREAM_CONFIG_BYTES};

pub const UPSTREAM_CONFIG_ANNOTATION: &str = "gloo.solo.io/upstream_config";
pub const DEEP_MERGE_ANNOTATION: &str = "gloo.solo.io/upstream_config.deep_merge";

/// Fields discovery owns: the annotation cannot change them (Gloo ignores them too).
const PROTECTED_FIELDS: &[&str] = &["metadata", "discoveryMetadata", "namespacedStatuses"];

/// Applies the annotation found in `annotations` (if any) to `spec`. On any problem the
/// annotation is ignored whole (except protected fields, which are dropped alone) and a
/// warning says why; `spec` is then left as it was.
pub fn apply(
    spec: &mut UpstreamSpec,
    annotations: &BTreeMap<String, String>,
    origin: AnnotationOrigin,
    warnings: &mut Vec<TranslateWarning>,
    trace: &mut Tracer<'_>,
) {
    let Some(raw) = annotations.get(UPSTREAM_CONFIG_ANNOTATION) else {
        return;
    };
    let deep = annotations
        .get(DEEP_MERGE_ANNOTATION)
        .is_some_and(|v| v == "true");
    // Recorded apart, and kept only when the override applies.
    let mut sources = trace.is_some().then(Vec::new);
    match merged(spec, raw, deep, origin, warnings, &mut sources) {
        Ok(new_spec) => {
            *spec = new_spec;
            if let (Some(trace), Some(sources)) = (trace.as_deref_mut(), sources) {
                trace.extend(sources);
            }
        }
        Err(warning) => warnings.push(warning),
    }
}

/// Records, when tracing, the fields the override sets: each top-level one whole, or with a
/// deep merge each leaf it sets.
fn record_override(
    overrides: &Map<String, Value>,
    origin: AnnotationOrigin,
    deep: bool,
    sources: &mut Option<Vec<FieldSource>>,
) {
    let Some(sources) = sources.as_mut() else {
        return;
    };
    let rule = Rule::Override { origin, deep };
    for (name, value) in overrides.iter().filter(|(_, value)| !value.is_null()) {
        let mut path = vec!["spec".to_string(), name.clone()];
        if deep {
            record_leaves(&mut Some(&mut *sources), &mut path, value, &rule);
        } else {
            sources.push(FieldSource {
                path,
                rule: rule.clone(),
            });
        }
    }
}

fn merged(
    spec: &UpstreamSpec,
    raw: &str,
    deep: bool,
    origin: AnnotationOrigin,
    warnings: &mut Vec<TranslateWarning>,
    sources: &mut Option<Vec<FieldSource>>,
) -> Result<UpstreamSpec, TranslateWarning> {
    if raw.len() > MAX_UPSTREAM_CONFIG_BYTES {
        return Err(TranslateWarning::UpstreamConfigTooLarge {
            origin,
            bytes: raw.len(),
        });
    }
    let parsed: Value =
        serde_json::from_str(raw).map_err(|e| TranslateWarning::UpstreamConfigNotJson {
            origin,
            reason: e.to_string(),
        })?;
    let Value::Object(parsed) = parsed else {
        return Err(TranslateWarning::UpstreamConfigNotJson {
            origin,
            reason: "not an object".to_string(),
        });
    };
    // Gloo parses the whole annotation as an Upstream before it drops the protected fields, so
    // they are checked like the rest.
    let mut overrides = normalize(parsed, UPSTREAM).map_err(|misfit| match misfit {
        Misfit::UnknownFields(fields) => {
            TranslateWarning::UpstreamConfigUnknownFields { origin, fields }
        }
        Misfit::Invalid(reason) => TranslateWarning::UpstreamConfigInvalidValue { origin, reason },
    })?;
    for field in PROTECTED_FIELDS {
        if overrides.remove(*field).is_some() {
            warnings.push(TranslateWarning::UpstreamConfigProtectedField {
                origin,
                field: field.to_string(),
            });
        }
    }

    let mut target = match serde_json::to_value(spec) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    record_override(&overrides, origin, deep, sources);
    merge_message(&mut target, overrides, UPSTREAM, deep);
    serde_json::from_value(Value::Object(target)).map_err(|e| {
        TranslateWarning::UpstreamConfigInvalidValue {
            origin,
            reason: e.to_string(),
        }
    })
}

/// Sets in `target` each field `overrides` sets (both spelled as JSON names): replaced whole,
/// or with `deep` merged at every depth with the override winning. Setting a member of a oneof
/// removes the other members, as a protobuf oneof holds one (`static` replaces `kube`,
/// `sslFiles` replaces `secretRef`).
fn merge_message(
    target: &mut Map<String, Value>,
    overrides: Map<String, Value>,
    message: Message,
    deep: bool,
) {
    for (name, value) in overrides {
        // An explicit null sets nothing, as an unset protobuf field.
        if value.is_null() {
            continue;
        }
        let field = upstream_schema::field(message, &name);
        if let Some(oneof) = field.and_then(|field| field.oneof) {
            target.retain(|existing, _| {
                existing == &name
                    || upstream_schema::field(message, existing).and_then(|f| f.oneof)
                        != Some(oneof)
            });
        }
        match (deep, field, target.get_mut(&name)) {
            (true, Some(field), Some(existing)) => merge_value(existing, value, field.shape),
            _ => {
                target.insert(name, value);
            }
        }
    }
}

/// Deep merge of one field's value, guided by its shape.
fn merge_value(target: &mut Value, value: Value, shape: Shape) {
    match (shape, target, value) {
        (Shape::One(Kind::Message(message)), Value::Object(target), Value::Object(value)) => {
            merge_message(target, value, message, true)
        }
        // Map keys are merged one by one, each entry as a single value of the map's kind.
        (Shape::Map(kind), Value::Object(target), Value::Object(entries)) => {
            for (key, entry) in entries {
                if entry.is_null() {
                    continue;
                }
                match target.get_mut(&key) {
                    Some(existing) => merge_value(existing, entry, Shape::One(kind)),
                    None => {
                        target.insert(key, entry);
                    }
                }
            }
        }
        (Shape::One(Kind::Opaque), target, value) => deep_merge_json(target, value),
        // Scalars and lists: the annotation's value wins whole.
        (_, target, value) => *target = value,
    }
}

/// Merges opaque JSON (a `Struct`) at every depth; on anything but two objects the override
/// wins. Its depth is bounded by the JSON parser's nesting limit, not by the schema.
fn deep_merge_json(target: &mut Value, overrides: Value) {
    match (target, overrides) {
        (Value::Object(target), Value::Object(overrides)) => {
            for (key, value) in overrides {
                if value.is_null() {
                    continue;
                }
                match target.get_mut(&key) {
                    Some(existing) => deep_merge_json(existing, value),
                    None => {
                        target.insert(key, value);
                    }
                }
            }
        }
        (target, value) => *target = value,
    }
}

/// Why an override does not fit the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Misfit {
    /// Where a name no message has was used, as written: `sslConfig.bogus`, `static.hosts[0].x`.
    UnknownFields(Vec<String>),
    /// The first value of the wrong shape, field given in both spellings, or second member of
    /// a oneof (protobuf JSON refuses each).
    Invalid(String),
}

/// Checks `object` against `message` at every depth and writes its field names as JSON names;
/// map keys and opaque values stay as written. The walk descends only where the schema has a
/// message, so it goes no deeper than the schema.
fn normalize(object: Map<String, Value>, message: Message) -> Result<Map<String, Value>, Misfit> {
    let mut walk = Walk::default();
    let normalized = walk.message(object, message, "");
    if !walk.unknown.is_empty() {
        Err(Misfit::UnknownFields(walk.unknown))
    } else if let Some(reason) = walk.invalid {
        Err(Misfit::Invalid(reason))
    } else {
        Ok(normalized)
    }
}

/// What a walk found: every unknown name (all are worth telling), the first invalid value.
#[derive(Default)]
struct Walk {
    unknown: Vec<String>,
    invalid: Option<String>,
}

impl Walk {
    fn invalid(&mut self, reason: String) {
        self.invalid.get_or_insert(reason);
    }

    fn message(
        &mut self,
        object: Map<String, Value>,
        message: Message,
        path: &str,
    ) -> Map<String, Value> {
        let mut out = Map::new();
        let mut oneofs_set: Vec<(&str, String)> = Vec::new();
        for (key, value) in object {
            let Some(field) = upstream_schema::field(message, &key) else {
                self.unknown.push(join(path, &key));
                continue;
            };
            let name = field.json_name();
            let field_path = join(path, &name);
            if out.contains_key(&name) {
                self.invalid(format!(
                    "{field_path} is set twice, as {} and as {name}",
                    field.name
                ));
                continue;
            }
            // protobuf JSON reads a null as "not set", so it does not count as a member set.
            if let Some(oneof) = field.oneof.filter(|_| !value.is_null()) {
                match oneofs_set.iter().find(|(set, _)| *set == oneof) {
                    Some((_, other)) => self.invalid(format!(
                        "{} and {field_path} are both set, but only one member of oneof {oneof} may be",
                        join(path, other)
                    )),
                    None => oneofs_set.push((oneof, name.clone())),
                }
            }
            let value = self.shaped(value, field.shape, &field_path);
            out.insert(name, value);
        }
        out
    }

    fn shaped(&mut self, value: Value, shape: Shape, path: &str) -> Value {
        match (shape, value) {
            (_, Value::Null) => Value::Null,
            (Shape::One(kind), value) => self.single(value, kind, path),
            (Shape::List(kind), Value::Array(items)) => Value::Array(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| self.single(item, kind, &format!("{path}[{i}]")))
                    .collect(),
            ),
            (Shape::Map(kind), Value::Object(entries)) => Value::Object(
                entries
                    .into_iter()
                    .map(|(key, item)| {
                        let item = self.single(item, kind, &format!("{path}[{key:?}]"));
                        (key, item)
                    })
                    .collect(),
            ),
            (Shape::List(_), value) => {
                self.invalid(format!("{path} must be a list"));
                value
            }
            (Shape::Map(_), value) => {
                self.invalid(format!("{path} must be an object (a map)"));
                value
            }
        }
    }

    fn single(&mut self, value: Value, kind: Kind, path: &str) -> Value {
        match (kind, value) {
            (Kind::Opaque, value) => value,
            (Kind::Message(message), Value::Object(object)) => {
                Value::Object(self.message(object, message, path))
            }
            (Kind::Message(_), value) => {
                self.invalid(format!("{path} must be an object"));
                value
            }
            (Kind::Scalar, value @ (Value::Object(_) | Value::Array(_))) => {
                self.invalid(format!(
                    "{path} must be a single value, not an object or a list"
                ));
                value
            }
            (Kind::Scalar, value) => value,
        }
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
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
            &mut None,
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
            &mut None,
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
            &mut None,
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

    /// The warnings of applying `config` (shallow) to the discovered spec, whole.
    fn warnings_of(config: &str) -> Vec<TranslateWarning> {
        let annotations =
            BTreeMap::from([(UPSTREAM_CONFIG_ANNOTATION.to_string(), config.to_string())]);
        let mut warnings = Vec::new();
        apply(
            &mut discovered(),
            &annotations,
            AnnotationOrigin::Service,
            &mut warnings,
            &mut None,
        );
        warnings
    }

    #[test]
    fn an_unknown_field_at_any_depth_rejects_the_annotation() {
        let cases = [
            (
                r#"{"sslConfig": {"sni": "x", "bogus": 1}}"#,
                "sslConfig.bogus",
            ),
            (
                r#"{"static": {"hosts": [{"addr": "a", "port": 80, "bogus": 1}]}}"#,
                "static.hosts[0].bogus",
            ),
            (
                r#"{"kube": {"subset_spec": {"selectors": [{"keys": ["a"]}, {"keyz": ["b"]}]}}}"#,
                "kube.subsetSpec.selectors[1].keyz",
            ),
            (
                r#"{"circuitBreakers": {"maxConnection": 1}}"#,
                "circuitBreakers.maxConnection",
            ),
            (
                r#"{"loadBalancerConfig": {"random": {"seed": 1}}}"#,
                "loadBalancerConfig.random.seed",
            ),
            (
                r#"{"healthChecks": [{"httpHealthCheck": {"path": "/", "pathh": "/x"}}]}"#,
                "healthChecks[0].httpHealthCheck.pathh",
            ),
            (
                r#"{"outlierDetection": {"consecutive5XX": 1}}"#,
                "outlierDetection.consecutive5XX",
            ),
            (
                r#"{"connectionConfig": {"http1ProtocolOptions": {"enableTrailer": true}}}"#,
                "connectionConfig.http1ProtocolOptions.enableTrailer",
            ),
            (
                r#"{"failover": {"prioritizedLocalities": [{"localityEndpoints": [{"lbEndpoints":
                   [{"upstreamSslConfig": {"sds": {"callCredentials": {"fileCredentialSource":
                   {"tokenFileName": "t", "file": "f"}}}}}]}]}]}}"#,
                "failover.prioritizedLocalities[0].localityEndpoints[0].lbEndpoints[0]\
                 .upstreamSslConfig.sds.callCredentials.fileCredentialSource.file",
            ),
            (
                r#"{"aws": {"region": "us-east-1", "lambdaFunctions": [{"logicalName": "a", "arn": "x"}]}}"#,
                "aws.lambdaFunctions[0].arn",
            ),
            (
                r#"{"kube": {"serviceSpec": {"rest": {"transformations": {"my_fn":
                   {"headers": {"X-Header": {"text": "a", "txt": "b"}}}}}}}}"#,
                r#"kube.serviceSpec.rest.transformations["my_fn"].headers["X-Header"].txt"#,
            ),
            (
                r#"{"ai": {"multi": {"priorities": [{"pool": [{"vertex_ai": {"model": "m", "projectID": "p"}}]}]}}}"#,
                "ai.multi.priorities[0].pool[0].vertexAi.projectID",
            ),
            (
                r#"{"consul": {"query_options": {"useCache": true, "cache": 1}}}"#,
                "consul.queryOptions.cache",
            ),
            (r#"{"gcp": {"host": "h", "audiance": "a"}}"#, "gcp.audiance"),
            (
                r#"{"pipe": {"path": "/p", "serviceSpec": {"soap": {}}}}"#,
                "pipe.serviceSpec.soap",
            ),
            (
                r#"{"azure": {"functions": [{"functionName": "f", "level": 1}]}}"#,
                "azure.functions[0].level",
            ),
            (
                r#"{"awsEc2": {"filters": [{"kvPair": {"key": "k", "val": "v"}}]}}"#,
                "awsEc2.filters[0].kvPair.val",
            ),
            (
                r#"{"httpConnectHeaders": [{"key": "k", "value": "v", "append": true}]}"#,
                "httpConnectHeaders[0].append",
            ),
            (
                r#"{"preconnectPolicy": {"ratio": 2}}"#,
                "preconnectPolicy.ratio",
            ),
            // Protected fields are checked too: Gloo parses the whole annotation first.
            (
                r#"{"metadata": {"labels": {"a": "b"}, "nam": "x"}}"#,
                "metadata.nam",
            ),
            // A mistyped top-level field, as before.
            (r#"{"initialStreamWindowSiz": 1}"#, "initialStreamWindowSiz"),
        ];
        for (config, path) in cases {
            let (spec, reasons) = apply_json(config, false);
            assert_eq!(spec, discovered_json(), "{config} is ignored whole");
            assert_eq!(reasons, vec!["unknown_upstream_config_field"], "{config}");
            assert_eq!(
                warnings_of(config),
                vec![TranslateWarning::UpstreamConfigUnknownFields {
                    origin: AnnotationOrigin::Service,
                    fields: vec![path.to_string()],
                }],
                "{config}"
            );
            let (spec, _) = apply_json(config, true);
            assert_eq!(
                spec,
                discovered_json(),
                "{config} is ignored whole in a deep merge too"
            );
        }
    }

    #[test]
    fn every_unknown_field_is_named() {
        assert_eq!(
            warnings_of(r#"{"aBogus": 1, "sslConfig": {"sni": "x", "zBogus": {"y": 1}}}"#),
            vec![TranslateWarning::UpstreamConfigUnknownFields {
                origin: AnnotationOrigin::Service,
                fields: vec!["aBogus".to_string(), "sslConfig.zBogus".to_string()],
            }]
        );
    }

    #[test]
    fn snake_case_at_any_depth_is_written_in_camel_case() {
        let (spec, warnings) = apply_json(r#"{"ssl_config": {"one_way_tls": true}}"#, false);
        assert!(warnings.is_empty(), "{warnings:?}");
        let mut want = discovered_json();
        want["sslConfig"] = json!({"oneWayTls": true});
        assert_eq!(spec, want);

        let config = r#"{
            "static": {"hosts": [{"addr": "10.0.0.1", "port": 80, "sni_addr": "a.example",
                "load_balancing_weight": 2, "health_check_config": {"path": "/healthz"},
                "metadata": {"filter_x": {"my_key": 1}}}], "use_tls": true},
            "health_checks": [{"timeout": "1s", "interval": "2s", "http_health_check": {"path": "/h",
                "request_headers_to_add": [{"header": {"key": "x-a", "value": "b"}, "append": true}],
                "expected_statuses": [{"start": 200, "end": 300}]}}],
            "outlier_detection": {"consecutive_5xx": 3},
            "load_balancer_config": {"least_request": {"choice_count": 2,
                "slow_start_config": {"slow_start_window": "10s"}}},
            "connection_config": {"tcp_keepalive": {"keepalive_probes": 3},
                "common_http_protocol_options": {"headers_with_underscores_action": "REJECT_REQUEST"}},
            "protocol_selection": 1,
            "http_connect_headers": [{"key": "X-Tunnel", "value": "1"}],
            "preconnect_policy": {"per_upstream_preconnect_ratio": 1.5}
        }"#;
        let (spec, warnings) = apply_json(config, false);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            spec,
            json!({
                "static": {"hosts": [{"addr": "10.0.0.1", "port": 80, "sniAddr": "a.example",
                    "loadBalancingWeight": 2, "healthCheckConfig": {"path": "/healthz"},
                    "metadata": {"filter_x": {"my_key": 1}}}], "useTls": true},
                "healthChecks": [{"timeout": "1s", "interval": "2s", "httpHealthCheck": {"path": "/h",
                    "requestHeadersToAdd": [{"header": {"key": "x-a", "value": "b"}, "append": true}],
                    "expectedStatuses": [{"start": 200, "end": 300}]}}],
                "outlierDetection": {"consecutive5xx": 3},
                "loadBalancerConfig": {"leastRequest": {"choiceCount": 2,
                    "slowStartConfig": {"slowStartWindow": "10s"}}},
                "connectionConfig": {"tcpKeepalive": {"keepaliveProbes": 3},
                    "commonHttpProtocolOptions": {"headersWithUnderscoresAction": "REJECT_REQUEST"}},
                "protocolSelection": 1,
                "httpConnectHeaders": [{"key": "X-Tunnel", "value": "1"}],
                "preconnectPolicy": {"perUpstreamPreconnectRatio": 1.5},
                "useHttp2": true
            })
        );
    }

    #[test]
    fn map_keys_keep_their_spelling() {
        let config =
            r#"{"kube": {"service_name": "x", "selector": {"app_name": "a", "tier-Name": "b"}}}"#;
        for deep in [false, true] {
            let (spec, warnings) = apply_json(config, deep);
            assert!(warnings.is_empty(), "{warnings:?}");
            let want = if deep {
                json!({"serviceName": "x", "serviceNamespace": "shop", "servicePort": 8080,
                       "selector": {"app": "petstore", "app_name": "a", "tier-Name": "b"}})
            } else {
                json!({"serviceName": "x", "selector": {"app_name": "a", "tier-Name": "b"}})
            };
            assert_eq!(spec["kube"], want, "deep={deep}");
        }
    }

    #[test]
    fn ai_is_an_upstream_type_and_replaces_kube() {
        let config = r#"{"ai": {"openai": {"auth_token": {"secret_ref": {"name": "key", "namespace": "ai"}},
                         "model": "gpt-4o"}}}"#;
        for deep in [false, true] {
            let (spec, warnings) = apply_json(config, deep);
            assert!(warnings.is_empty(), "{warnings:?}");
            assert_eq!(
                spec,
                json!({
                    "ai": {"openai": {"authToken": {"secretRef": {"name": "key", "namespace": "ai"}},
                           "model": "gpt-4o"}},
                    "useHttp2": true
                }),
                "deep={deep}"
            );
        }
    }

    #[test]
    fn values_of_the_wrong_shape_reject_the_annotation() {
        for config in [
            r#"{"sslConfig": "tls"}"#,
            r#"{"static": {"hosts": {"addr": "a"}}}"#,
            r#"{"kube": {"selector": ["app"]}}"#,
            r#"{"sslConfig": {"sni": {"name": "x"}}}"#,
            r#"{"healthChecks": [1]}"#,
            r#"{"static": {"hosts": [{"addr": "a", "metadata": [1]}]}}"#,
        ] {
            let (spec, reasons) = apply_json(config, false);
            assert_eq!(spec, discovered_json(), "{config}");
            assert_eq!(reasons, vec!["invalid_upstream_config_value"], "{config}");
        }
    }

    #[test]
    fn a_field_in_both_spellings_or_two_members_of_a_oneof_reject_the_annotation() {
        for config in [
            r#"{"kube": {"service_name": "a", "serviceName": "b"}}"#,
            r#"{"use_http2": true, "useHttp2": false}"#,
            r#"{"kube": {"serviceName": "a"}, "static": {"hosts": []}}"#,
            r#"{"aws": {}, "ai": {}}"#,
            r#"{"sslConfig": {"secretRef": {"name": "a"}, "sslFiles": {"rootCa": "/ca"}}}"#,
            r#"{"ai": {"openai": {"model": "a"}, "mistral": {"model": "b"}}}"#,
            r#"{"loadBalancerConfig": {"random": {}, "maglev": {}}}"#,
        ] {
            let (spec, reasons) = apply_json(config, false);
            assert_eq!(spec, discovered_json(), "{config}");
            assert_eq!(reasons, vec!["invalid_upstream_config_value"], "{config}");
        }
        // A null member is not set, so it is no second member.
        let (spec, reasons) = apply_json(r#"{"kube": null, "static": {"hosts": []}}"#, false);
        assert!(reasons.is_empty(), "{reasons:?}");
        assert_eq!(spec, json!({"static": {"hosts": []}, "useHttp2": true}));
    }

    #[test]
    fn setting_a_oneof_member_replaces_the_others_at_any_depth() {
        let mut with_tls = discovered();
        with_tls.ssl_config = Some(crate::crd::UpstreamSslConfig {
            secret_ref: Some(crate::crd::ResourceRef {
                name: "tls".into(),
                namespace: "shop".into(),
            }),
            one_way_tls: Some(true),
            ..Default::default()
        });
        let annotations = |deep: &str| {
            BTreeMap::from([
                (
                    UPSTREAM_CONFIG_ANNOTATION.to_string(),
                    r#"{"sslConfig": {"ssl_files": {"root_ca": "/ca"}}}"#.to_string(),
                ),
                (DEEP_MERGE_ANNOTATION.to_string(), deep.to_string()),
            ])
        };
        for (deep, want) in [
            ("false", json!({"sslFiles": {"rootCa": "/ca"}})),
            (
                "true",
                json!({"sslFiles": {"rootCa": "/ca"}, "oneWayTls": true}),
            ),
        ] {
            let mut spec = with_tls.clone();
            let mut warnings = Vec::new();
            apply(
                &mut spec,
                &annotations(deep),
                AnnotationOrigin::Service,
                &mut warnings,
                &mut None,
            );
            assert!(warnings.is_empty(), "{warnings:?}");
            let spec = serde_json::to_value(spec).expect("serializes");
            assert_eq!(spec["sslConfig"], want, "deep={deep}");
        }
    }

    #[test]
    fn a_config_up_to_the_size_bound_is_read_and_a_byte_more_is_refused() {
        // Valid JSON padded with spaces to exactly the bound: the size alone decides.
        let config = r#"{"useHttp2": false}"#;
        let at_bound = format!(
            "{config}{}",
            " ".repeat(MAX_UPSTREAM_CONFIG_BYTES - config.len())
        );
        let (spec, reasons) = apply_json(&at_bound, false);
        assert!(reasons.is_empty(), "{reasons:?}");
        let mut want = discovered_json();
        want["useHttp2"] = json!(false);
        assert_eq!(spec, want);

        let over = format!("{at_bound} ");
        let (spec, reasons) = apply_json(&over, false);
        assert_eq!(spec, discovered_json(), "ignored whole");
        assert_eq!(reasons, vec!["invalid_upstream_config"]);
        assert_eq!(
            warnings_of(&over),
            vec![TranslateWarning::UpstreamConfigTooLarge {
                origin: AnnotationOrigin::Service,
                bytes: 262_145,
            }]
        );
    }

    #[test]
    fn a_config_of_200_kib_of_unknown_fields_is_refused_naming_them_all_here() {
        // The full list stays here; translate_service bounds what the warning quotes.
        let fields: Vec<String> = (0..20_000).map(|i| format!("f{i:05}")).collect();
        let config = format!(
            "{{{}}}",
            fields
                .iter()
                .map(|f| format!("\"{f}\":1"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert!(config.len() > 200 * 1024 && config.len() < MAX_UPSTREAM_CONFIG_BYTES);
        let (spec, reasons) = apply_json(&config, true);
        assert_eq!(spec, discovered_json());
        assert_eq!(reasons, vec!["unknown_upstream_config_field"]);
        assert_eq!(
            warnings_of(&config),
            vec![TranslateWarning::UpstreamConfigUnknownFields {
                origin: AnnotationOrigin::Service,
                fields,
            }]
        );
    }

    #[test]
    fn nesting_at_the_parser_limit_is_read_and_one_deeper_is_refused() {
        // `healthChecks[0].customHealthCheck.config` is opaque (a Struct): its contents are kept
        // as written, at any depth the parser allows: 127 levels in all (it refuses the 128th), four of
        // them the wrapper's.
        let nested = |depth: usize| {
            format!(
                r#"{{"healthChecks": [{{"customHealthCheck": {{"config": {}1{}}}}}]}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            )
        };
        let (spec, reasons) = apply_json(&nested(123), true);
        assert!(reasons.is_empty(), "{reasons:?}");
        let mut inner = json!(1);
        for _ in 0..123 {
            inner = json!([inner]);
        }
        assert_eq!(
            spec["healthChecks"],
            json!([{"customHealthCheck": {"config": inner}}])
        );

        let (spec, reasons) = apply_json(&nested(124), true);
        assert_eq!(spec, discovered_json());
        assert_eq!(reasons, vec!["invalid_upstream_config"]);
    }

    mod arbitrary_json {
        use super::*;
        use proptest::prelude::*;

        /// Any JSON: every kind of value, keys from the schema (in both spellings) or not, so
        /// that the walk, both merges and each way of refusing are reached.
        fn json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                any::<f64>().prop_map(|f| {
                    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
                }),
                any::<String>().prop_map(Value::from),
            ];
            let key = prop_oneof![
                prop::sample::select(vec![
                    "kube",
                    "static",
                    "hosts",
                    "addr",
                    "port",
                    "sslConfig",
                    "ssl_config",
                    "secretRef",
                    "sslFiles",
                    "useHttp2",
                    "use_http2",
                    "healthChecks",
                    "customHealthCheck",
                    "config",
                    "metadata",
                    "selector",
                    "serviceName",
                    "ai",
                    "openai",
                    "loadBalancerConfig",
                    "random",
                    "discoveryMetadata",
                    "circuitBreakers",
                    "maxConnections",
                    "subsetSpec",
                    "selectors",
                    "keys",
                ])
                .prop_map(str::to_string),
                any::<String>(),
            ];
            leaf.prop_recursive(8, 96, 6, move |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                    prop::collection::vec((key.clone(), inner), 0..6)
                        .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
                ]
            })
        }

        /// `value` wrapped in `depth` arrays or objects (up to past the parser's limit).
        fn deepened(value: Value, depth: usize, in_objects: bool) -> String {
            let (open, close) = if in_objects {
                (r#"{"config":"#, "}")
            } else {
                ("[", "]")
            };
            format!("{}{value}{}", open.repeat(depth), close.repeat(depth))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1024))]

            /// Whatever the JSON (and however deep): no panic; refused means the discovered
            /// spec is left exactly as it was; anything but an object is refused as such.
            #[test]
            fn any_json_is_merged_or_refused_whole(
                value in json(),
                depth in 0usize..200,
                in_objects in any::<bool>(),
                deep in any::<bool>(),
            ) {
                for config in [value.to_string(), deepened(value.clone(), depth, in_objects)] {
                    let mut annotations = BTreeMap::from([(UPSTREAM_CONFIG_ANNOTATION.to_string(), config.clone())]);
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
                        &mut None,
                    );
                    let refusals: Vec<_> = warnings.iter().filter(|w| !matches!(w, TranslateWarning::UpstreamConfigProtectedField { .. })).collect();
                    let refused = !refusals.is_empty();
                    if refused {
                        prop_assert_eq!(refusals.len(), 1, "{:?}", warnings);
                        prop_assert_eq!(&spec, &discovered());
                    }
                    let parsed: Result<Value, _> = serde_json::from_str(&config);
                    if !matches!(parsed, Ok(Value::Object(_))) {
                        prop_assert!(refused);
                        prop_assert_eq!(refusals[0].reason(), crate::model::SkipReason::InvalidUpstreamConfig);
                    }
                    prop_assert!(serde_json::to_value(&spec).is_ok());
                }
            }

            /// Bytes that are not JSON at all, or JSON cut short anywhere: refused, never a panic.
            #[test]
            fn any_text_is_merged_or_refused_whole(text in any::<String>(), value in json(), cut_at in any::<prop::sample::Index>()) {
                let full = value.to_string();
                let mut end = cut_at.index(full.len() + 1);
                while !full.is_char_boundary(end) {
                    end -= 1;
                }
                for config in [text, full[..end].to_string()] {
                    let annotations = BTreeMap::from([(UPSTREAM_CONFIG_ANNOTATION.to_string(), config)]);
                    let mut spec = discovered();
                    let mut warnings = Vec::new();
                    apply(
                        &mut spec,
                        &annotations,
                        AnnotationOrigin::Service,
                        &mut warnings,
                        &mut None,
                    );
                    if warnings.iter().any(|w| !matches!(w, TranslateWarning::UpstreamConfigProtectedField { .. })) {
                        prop_assert_eq!(&spec, &discovered());
                    }
                }
            }
        }
    }

    fn normalized(value: serde_json::Value) -> Result<Map<String, Value>, Misfit> {
        let Value::Object(object) = value else {
            panic!("test input must be an object");
        };
        normalize(object, UPSTREAM)
    }

    #[test]
    fn normalize_names_fields_and_keeps_data() {
        let got = normalized(json!({
            "kube": {"service_name": "a", "selector": {"k_1": "v"}},
            "health_checks": [{"custom_health_check": {"name": "x", "typed_config": {"@type": "t", "a_b": 1}}}],
            "ssl_config": null
        }));
        let want = json!({
            "kube": {"serviceName": "a", "selector": {"k_1": "v"}},
            "healthChecks": [{"customHealthCheck": {"name": "x", "typedConfig": {"@type": "t", "a_b": 1}}}],
            "sslConfig": null
        });
        assert_eq!(got.map(Value::Object), Ok(want));
    }

    #[test]
    fn normalize_reports_unknown_names_before_invalid_values() {
        assert_eq!(
            normalized(json!({"sslConfig": "x", "kube": {"bogus": 1}})),
            Err(Misfit::UnknownFields(vec!["kube.bogus".to_string()]))
        );
        assert_eq!(
            normalized(json!({"kube": {"selector": {"app": {"x": 1}}}})),
            Err(Misfit::Invalid(
                "kube.selector[\"app\"] must be a single value, not an object or a list"
                    .to_string()
            ))
        );
    }

    #[test]
    fn the_warning_says_what_is_wrong_and_where() {
        let cases = [
            (
                r#"{"kube": {"serviceName": "a"}, "static": {}}"#,
                "annotation gloo.solo.io/upstream_config on the Service is not a valid Upstream \
                 spec (kube and static are both set, but only one member of oneof upstream_type \
                 may be); ignored",
            ),
            (
                r#"{"kube": {"service_port": 1, "servicePort": 2}}"#,
                "annotation gloo.solo.io/upstream_config on the Service is not a valid Upstream \
                 spec (kube.servicePort is set twice, as service_port and as servicePort); ignored",
            ),
            (
                r#"{"static": {"hosts": [{"addr": "a", "bogus": 1}]}, "zz": 1}"#,
                "annotation gloo.solo.io/upstream_config on the Service sets unknown Upstream \
                 field(s) static.hosts[0].bogus, zz; ignored",
            ),
        ];
        for (config, want) in cases {
            let messages: Vec<String> = warnings_of(config).iter().map(|w| w.to_string()).collect();
            assert_eq!(messages, vec![want.to_string()], "{config}");
        }
    }
}
