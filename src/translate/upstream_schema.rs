//! The field names of Gloo's `Upstream` spec at every depth, from Gloo's protos
//! (`projects/gloo/api/v1/…`, `projects/gloo/api/external/…` and solo-kit's `api/v1/…`), so the
//! `gloo.solo.io/upstream_config` annotation can be read as protobuf JSON is: every field name
//! known, in its proto (`snake_case`) or JSON (`lowerCamelCase`) spelling, map keys left as the
//! user wrote them, at most one member of each oneof.
//!
//! Each message is a `const`, so the compiler refuses a cycle: the schema is finite and acyclic,
//! and a walk that follows it ends. Where protobuf is recursive (`Status.subresource_statuses`) the
//! field is opaque instead.

/// A protobuf message: its fields.
pub type Message = &'static [Field];

/// One field of a message, by its proto name (the JSON name is derived, as `protoc` does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub shape: Shape,
    /// The oneof the field belongs to: setting one member replaces the others.
    pub oneof: Option<&'static str>,
}

/// Single, `repeated` or `map<string, …>` (whose keys are user data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    One(Kind),
    List(Kind),
    Map(Kind),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Strings, numbers, bools, enums (name or number), bytes, the `google.protobuf` wrappers
    /// (`BoolValue`, `UInt32Value`, …) and `Duration` (a string): one JSON value, not an object.
    Scalar,
    Message(Message),
    /// `google.protobuf.Struct`, `Any`, `Value`: any JSON, taken as written, keys included.
    Opaque,
}

impl Field {
    /// The field as a member of `oneof`.
    const fn of(self, oneof: &'static str) -> Field {
        Field {
            oneof: Some(oneof),
            ..self
        }
    }

    /// The protobuf JSON name, the one written.
    pub fn json_name(&self) -> String {
        to_camel_case(self.name)
    }

    /// Whether `key` names this field in either spelling protobuf JSON accepts.
    fn is_named(&self, key: &str) -> bool {
        key == self.name || camel_case_chars(self.name).eq(key.chars())
    }
}

/// The field `key` names in `message`, in either spelling.
pub fn field(message: Message, key: &str) -> Option<&'static Field> {
    message.iter().find(|field| field.is_named(key))
}

/// `initial_stream_window_size` → `initialStreamWindowSize`, as `protoc` derives JSON names.
fn to_camel_case(name: &str) -> String {
    camel_case_chars(name).collect()
}

fn camel_case_chars(name: &str) -> impl Iterator<Item = char> + '_ {
    let mut upper_next = false;
    name.chars().filter_map(move |c| {
        if c == '_' {
            upper_next = true;
            None
        } else if std::mem::take(&mut upper_next) {
            Some(c.to_ascii_uppercase())
        } else {
            Some(c)
        }
    })
}

// Field constructors for the table: `s` scalar, `o` opaque, `m` message, `ls`/`lm` repeated
// scalar/message, `ms`/`mm`/`mo` map of scalar/message/opaque.
const fn field_of(name: &'static str, shape: Shape) -> Field {
    Field {
        name,
        shape,
        oneof: None,
    }
}
const fn s(name: &'static str) -> Field {
    field_of(name, Shape::One(Kind::Scalar))
}
const fn o(name: &'static str) -> Field {
    field_of(name, Shape::One(Kind::Opaque))
}
const fn m(name: &'static str, message: Message) -> Field {
    field_of(name, Shape::One(Kind::Message(message)))
}
const fn ls(name: &'static str) -> Field {
    field_of(name, Shape::List(Kind::Scalar))
}
const fn lm(name: &'static str, message: Message) -> Field {
    field_of(name, Shape::List(Kind::Message(message)))
}
const fn ms(name: &'static str) -> Field {
    field_of(name, Shape::Map(Kind::Scalar))
}
const fn mm(name: &'static str, message: Message) -> Field {
    field_of(name, Shape::Map(Kind::Message(message)))
}
const fn mo(name: &'static str) -> Field {
    field_of(name, Shape::Map(Kind::Opaque))
}

pub use table::UPSTREAM;

/// Gloo's messages, one `const` each, named after the message (prefixed where two share a
/// name). Written by hand from the protos; fields in proto order.
#[rustfmt::skip]
mod table {
    use super::{lm, ls, m, mm, mo, ms, o, s, Message};

    // ---- gloo.solo.io.Upstream (api/v1/upstream.proto) ----
    pub const UPSTREAM: Message = &[
        m("namespaced_statuses", NAMESPACED_STATUSES), m("metadata", METADATA),
        m("discovery_metadata", DISCOVERY_METADATA), m("ssl_config", UPSTREAM_SSL_CONFIG),
        m("circuit_breakers", CIRCUIT_BREAKER_CONFIG), m("load_balancer_config", LOAD_BALANCER_CONFIG),
        lm("health_checks", HEALTH_CHECK), m("outlier_detection", OUTLIER_DETECTION),
        m("kube", KUBE_SPEC).of("upstream_type"), m("static", STATIC_SPEC).of("upstream_type"),
        m("pipe", PIPE_SPEC).of("upstream_type"), m("aws", AWS_SPEC).of("upstream_type"),
        m("azure", AZURE_SPEC).of("upstream_type"), m("consul", CONSUL_SPEC).of("upstream_type"),
        m("aws_ec2", AWS_EC2_SPEC).of("upstream_type"), m("gcp", GCP_SPEC).of("upstream_type"),
        m("ai", AI_SPEC).of("upstream_type"),
        m("failover", FAILOVER), m("connection_config", CONNECTION_CONFIG), s("protocol_selection"),
        s("use_http2"), s("initial_stream_window_size"), s("initial_connection_window_size"),
        s("max_concurrent_streams"), s("override_stream_error_on_invalid_http_message"),
        s("http_proxy_hostname"), m("http_connect_ssl_config", UPSTREAM_SSL_CONFIG),
        lm("http_connect_headers", HEADER_VALUE), s("ignore_health_on_host_removal"),
        s("respect_dns_ttl"), s("dns_refresh_rate"), s("proxy_protocol_version"),
        m("preconnect_policy", PRECONNECT_POLICY), s("disable_istio_auto_mtls"),
    ];
    const DISCOVERY_METADATA: Message = &[ms("labels")];
    /// Also envoy's `HeaderValue` (solo-kit api/external/envoy/api/v2/core/base.proto).
    const HEADER_VALUE: Message = &[s("key"), s("value")];
    const PRECONNECT_POLICY: Message = &[
        s("per_upstream_preconnect_ratio"), s("predictive_preconnect_ratio"),
    ];
    /// `google.protobuf.Empty` and the messages without fields.
    const EMPTY: Message = &[];

    // ---- solo-kit core.solo.io (api/v1/metadata.proto, status.proto, ref.proto) ----
    const RESOURCE_REF: Message = &[s("name"), s("namespace")];
    const METADATA: Message = &[
        s("name"), s("namespace"), s("cluster"), s("resource_version"), ms("labels"),
        ms("annotations"), s("generation"), lm("owner_references", OWNER_REFERENCE),
    ];
    const OWNER_REFERENCE: Message = &[
        s("api_version"), s("block_owner_deletion"), s("controller"), s("kind"), s("name"),
        s("uid"),
    ];
    const NAMESPACED_STATUSES: Message = &[mm("statuses", STATUS)];
    /// `subresource_statuses` is a map of `Status` again: opaque, to keep the schema finite.
    const STATUS: Message = &[
        s("state"), s("reason"), s("reported_by"), mo("subresource_statuses"), o("details"),
        ls("Messages"),
    ];

    // ---- ssl/ssl.proto ----
    const UPSTREAM_SSL_CONFIG: Message = &[
        m("secret_ref", RESOURCE_REF).of("ssl_secrets"), m("ssl_files", SSL_FILES).of("ssl_secrets"),
        m("sds", SDS_CONFIG).of("ssl_secrets"), s("sni"), ls("verify_subject_alt_name"),
        m("parameters", SSL_PARAMETERS), ls("alpn_protocols"), s("allow_renegotiation"),
        s("one_way_tls"),
    ];
    const SSL_FILES: Message = &[s("tls_cert"), s("tls_key"), s("root_ca"), s("ocsp_staple")];
    const SDS_CONFIG: Message = &[
        s("target_uri"), m("call_credentials", CALL_CREDENTIALS).of("sds_builder"),
        s("cluster_name").of("sds_builder"), s("certificates_secret_name"),
        s("validation_context_name"),
    ];
    const CALL_CREDENTIALS: Message = &[m("file_credential_source", FILE_CREDENTIAL_SOURCE)];
    const FILE_CREDENTIAL_SOURCE: Message = &[s("token_file_name"), s("header")];
    const SSL_PARAMETERS: Message = &[
        s("minimum_protocol_version"), s("maximum_protocol_version"), ls("cipher_suites"),
        ls("ecdh_curves"),
    ];

    // ---- circuit_breaker/circuit_breaker.proto, connection.proto, options/protocol ----
    const CIRCUIT_BREAKER_CONFIG: Message = &[
        s("max_connections"), s("max_pending_requests"), s("max_requests"), s("max_retries"),
        s("track_remaining"),
    ];
    const CONNECTION_CONFIG: Message = &[
        s("max_requests_per_connection"), s("connect_timeout"), m("tcp_keepalive", TCP_KEEPALIVE),
        s("per_connection_buffer_limit_bytes"),
        m("common_http_protocol_options", HTTP_PROTOCOL_OPTIONS),
        m("http1_protocol_options", HTTP1_PROTOCOL_OPTIONS),
    ];
    const TCP_KEEPALIVE: Message = &[s("keepalive_probes"), s("keepalive_time"), s("keepalive_interval")];
    const HTTP_PROTOCOL_OPTIONS: Message = &[
        s("idle_timeout"), s("max_headers_count"), s("max_stream_duration"),
        s("headers_with_underscores_action"),
    ];
    const HTTP1_PROTOCOL_OPTIONS: Message = &[
        s("enable_trailers"), s("proper_case_header_key_format").of("header_format"),
        s("preserve_case_header_key_format").of("header_format"),
        s("override_stream_error_on_invalid_http_message"),
    ];

    // ---- load_balancer.proto ----
    const LOAD_BALANCER_CONFIG: Message = &[
        s("healthy_panic_threshold"), s("update_merge_window"),
        m("round_robin", ROUND_ROBIN).of("type"), m("least_request", LEAST_REQUEST).of("type"),
        m("random", EMPTY).of("type"), m("ring_hash", RING_HASH).of("type"),
        m("maglev", EMPTY).of("type"), m("locality_weighted_lb_config", EMPTY).of("locality_config"),
        s("use_hostname_for_hashing"), s("close_connections_on_host_set_change"),
    ];
    const ROUND_ROBIN: Message = &[m("slow_start_config", SLOW_START_CONFIG)];
    const LEAST_REQUEST: Message = &[s("choice_count"), m("slow_start_config", SLOW_START_CONFIG)];
    const RING_HASH: Message = &[m("ring_hash_config", RING_HASH_CONFIG)];
    const RING_HASH_CONFIG: Message = &[s("minimum_ring_size"), s("maximum_ring_size")];
    const SLOW_START_CONFIG: Message = &[s("slow_start_window"), s("aggression"), s("min_weight_percent")];

    // ---- external/envoy/api/v2/core/health_check.proto and what it uses ----
    const HEALTH_CHECK: Message = &[
        s("timeout"), s("interval"), s("initial_jitter"), s("interval_jitter"),
        s("interval_jitter_percent"), s("unhealthy_threshold"), s("healthy_threshold"),
        s("reuse_connection"),
        m("http_health_check", HTTP_HEALTH_CHECK).of("health_checker"),
        m("tcp_health_check", TCP_HEALTH_CHECK).of("health_checker"),
        m("grpc_health_check", GRPC_HEALTH_CHECK).of("health_checker"),
        m("custom_health_check", CUSTOM_HEALTH_CHECK).of("health_checker"),
        s("no_traffic_interval"), s("unhealthy_interval"), s("unhealthy_edge_interval"),
        s("healthy_edge_interval"), s("event_log_path"), s("always_log_health_check_failures"),
    ];
    const PAYLOAD: Message = &[s("text").of("payload")];
    const HTTP_HEALTH_CHECK: Message = &[
        s("host"), s("path"), s("service_name"), lm("request_headers_to_add", HEADER_VALUE_OPTION),
        ls("request_headers_to_remove"), s("use_http2"), lm("expected_statuses", INT64_RANGE),
        m("response_assertions", RESPONSE_ASSERTIONS), s("method"),
    ];
    const TCP_HEALTH_CHECK: Message = &[m("send", PAYLOAD), lm("receive", PAYLOAD)];
    const GRPC_HEALTH_CHECK: Message = &[
        s("service_name"), s("authority"), lm("initial_metadata", HEADER_VALUE_OPTION),
    ];
    const CUSTOM_HEALTH_CHECK: Message = &[
        s("name"), o("config").of("config_type"), o("typed_config").of("config_type"),
    ];
    const HEADER_VALUE_OPTION: Message = &[
        m("header", HEADER_VALUE).of("header_option"),
        m("header_secret_ref", RESOURCE_REF).of("header_option"), s("append"),
    ];
    const INT64_RANGE: Message = &[s("start"), s("end")];
    const RESPONSE_ASSERTIONS: Message = &[
        lm("response_matchers", RESPONSE_MATCHER), s("no_match_health"),
    ];
    const RESPONSE_MATCHER: Message = &[m("response_match", RESPONSE_MATCH), s("match_health")];
    const RESPONSE_MATCH: Message = &[
        m("json_key", JSON_KEY), s("ignore_error_on_parse"), s("header").of("source"),
        m("body", EMPTY).of("source"), s("regex"),
    ];
    const JSON_KEY: Message = &[lm("path", PATH_SEGMENT)];
    const PATH_SEGMENT: Message = &[s("key").of("segment")];

    // ---- external/envoy/api/v2/cluster/outlier_detection.proto ----
    const OUTLIER_DETECTION: Message = &[
        s("consecutive_5xx"), s("interval"), s("base_ejection_time"), s("max_ejection_percent"),
        s("enforcing_consecutive_5xx"), s("enforcing_success_rate"),
        s("success_rate_minimum_hosts"), s("success_rate_request_volume"),
        s("success_rate_stdev_factor"), s("consecutive_gateway_failure"),
        s("enforcing_consecutive_gateway_failure"), s("split_external_local_origin_errors"),
        s("consecutive_local_origin_failure"), s("enforcing_consecutive_local_origin_failure"),
        s("enforcing_local_origin_success_rate"),
    ];

    // ---- failover.proto ----
    const FAILOVER: Message = &[
        lm("prioritized_localities", PRIORITIZED_LOCALITY), m("policy", FAILOVER_POLICY),
    ];
    const PRIORITIZED_LOCALITY: Message = &[lm("locality_endpoints", LOCALITY_LB_ENDPOINTS)];
    const FAILOVER_POLICY: Message = &[s("overprovisioning_factor")];
    const LOCALITY_LB_ENDPOINTS: Message = &[
        m("locality", LOCALITY), lm("lb_endpoints", LB_ENDPOINT), s("load_balancing_weight"),
    ];
    const LB_ENDPOINT: Message = &[
        s("address"), s("port"), m("health_check_config", LB_ENDPOINT_HEALTH_CHECK_CONFIG),
        m("upstream_ssl_config", UPSTREAM_SSL_CONFIG), s("load_balancing_weight"), mo("metadata"),
    ];
    const LB_ENDPOINT_HEALTH_CHECK_CONFIG: Message = &[
        s("port_value"), s("hostname"), s("path"), s("method"),
    ];
    const LOCALITY: Message = &[s("region"), s("zone"), s("sub_zone")];

    // ---- options/kubernetes, options/service_spec.proto, options/subset_spec.proto ----
    const KUBE_SPEC: Message = &[
        s("service_name"), s("service_namespace"), s("service_port"), ms("selector"),
        m("service_spec", SERVICE_SPEC), m("subset_spec", SUBSET_SPEC),
    ];
    const SERVICE_SPEC: Message = &[
        m("rest", REST_SERVICE_SPEC).of("plugin_type"), m("grpc", GRPC_SERVICE_SPEC).of("plugin_type"),
        m("grpc_json_transcoder", GRPC_JSON_TRANSCODER).of("plugin_type"),
    ];
    const SUBSET_SPEC: Message = &[
        lm("selectors", SUBSET_SELECTOR), s("fallbackPolicy"), m("default_subset", SUBSET),
    ];
    const SUBSET_SELECTOR: Message = &[ls("keys"), s("single_host_per_subset")];
    const SUBSET: Message = &[ms("values")];

    // ---- options/rest, options/grpc, options/grpc_json ----
    const REST_SERVICE_SPEC: Message = &[
        mm("transformations", TRANSFORMATION_TEMPLATE), m("swagger_info", SWAGGER_INFO),
    ];
    const SWAGGER_INFO: Message = &[s("url").of("swagger_spec"), s("inline").of("swagger_spec")];
    const GRPC_SERVICE_SPEC: Message = &[s("descriptors"), lm("grpc_services", GRPC_SERVICE)];
    const GRPC_SERVICE: Message = &[s("package_name"), s("service_name"), ls("function_names")];
    const GRPC_JSON_TRANSCODER: Message = &[
        s("proto_descriptor").of("descriptor_set"), s("proto_descriptor_bin").of("descriptor_set"),
        m("proto_descriptor_config_map", DESCRIPTOR_CONFIG_MAP).of("descriptor_set"),
        ls("services"), m("print_options", PRINT_OPTIONS), s("match_incoming_request_route"),
        ls("ignored_query_parameters"), s("auto_mapping"), s("ignore_unknown_query_parameters"),
        s("convert_grpc_status"),
    ];
    const DESCRIPTOR_CONFIG_MAP: Message = &[m("config_map_ref", RESOURCE_REF), s("key")];
    const PRINT_OPTIONS: Message = &[
        s("add_whitespace"), s("always_print_primitive_fields"), s("always_print_enums_as_ints"),
        s("preserve_proto_field_names"),
    ];

    // ---- external/envoy/extensions/transformation/transformation.proto ----
    const TRANSFORMATION_TEMPLATE: Message = &[
        s("advanced_templates"), mm("extractors", EXTRACTION), mm("headers", INJA_TEMPLATE),
        lm("headers_to_append", HEADER_TO_APPEND), ls("headers_to_remove"),
        m("body", INJA_TEMPLATE).of("body_transformation"),
        m("passthrough", EMPTY).of("body_transformation"),
        m("merge_extractors_to_body", EMPTY).of("body_transformation"),
        m("merge_json_keys", MERGE_JSON_KEYS).of("body_transformation"),
        s("parse_body_behavior"), s("ignore_error_on_parse"),
        lm("dynamic_metadata_values", DYNAMIC_METADATA_VALUE), s("escape_characters"),
        m("span_transformer", SPAN_TRANSFORMER),
    ];
    const EXTRACTION: Message = &[
        s("header").of("source"), m("body", EMPTY).of("source"), s("regex"), s("subgroup"),
        s("replacement_text"), s("mode"),
    ];
    const INJA_TEMPLATE: Message = &[s("text")];
    const HEADER_TO_APPEND: Message = &[s("key"), m("value", INJA_TEMPLATE)];
    const DYNAMIC_METADATA_VALUE: Message = &[
        s("metadata_namespace"), s("key"), m("value", INJA_TEMPLATE), s("json_to_proto"),
    ];
    const SPAN_TRANSFORMER: Message = &[m("name", INJA_TEMPLATE)];
    const MERGE_JSON_KEYS: Message = &[mm("json_keys", OVERRIDABLE_TEMPLATE)];
    const OVERRIDABLE_TEMPLATE: Message = &[m("tmpl", INJA_TEMPLATE), s("override_empty")];

    // ---- options/static, options/pipe ----
    const STATIC_SPEC: Message = &[
        lm("hosts", HOST), s("use_tls"), m("service_spec", SERVICE_SPEC), s("auto_sni_rewrite"),
    ];
    const HOST: Message = &[
        s("addr"), s("port"), s("sni_addr"), s("load_balancing_weight"),
        m("health_check_config", HOST_HEALTH_CHECK_CONFIG), mo("metadata"),
    ];
    const HOST_HEALTH_CHECK_CONFIG: Message = &[s("path"), s("method")];
    const PIPE_SPEC: Message = &[s("path"), m("service_spec", SERVICE_SPEC)];

    // ---- options/aws, options/aws/ec2, options/azure, options/consul, enterprise gcp ----
    const AWS_SPEC: Message = &[
        s("region"), m("secret_ref", RESOURCE_REF), lm("lambda_functions", LAMBDA_FUNCTION_SPEC),
        s("role_arn"), s("aws_account_id"), s("disable_role_chaining"),
        m("destination_overrides", AWS_DESTINATION_SPEC),
    ];
    const LAMBDA_FUNCTION_SPEC: Message = &[s("logical_name"), s("lambda_function_name"), s("qualifier")];
    const AWS_DESTINATION_SPEC: Message = &[
        s("logical_name"), s("invocation_style"), s("request_transformation"),
        s("response_transformation"), s("unwrap_as_alb"), s("unwrap_as_api_gateway"),
        s("wrap_as_api_gateway"),
    ];
    const AWS_EC2_SPEC: Message = &[
        s("region"), m("secret_ref", RESOURCE_REF), s("role_arn"), lm("filters", TAG_FILTER),
        s("public_ip"), s("port"),
    ];
    const TAG_FILTER: Message = &[s("key").of("spec"), m("kv_pair", TAG_FILTER_KV_PAIR).of("spec")];
    const TAG_FILTER_KV_PAIR: Message = &[s("key"), s("value")];
    const AZURE_SPEC: Message = &[
        s("function_app_name"), m("secret_ref", RESOURCE_REF), lm("functions", AZURE_FUNCTION_SPEC),
    ];
    const AZURE_FUNCTION_SPEC: Message = &[s("function_name"), s("auth_level")];
    const CONSUL_SPEC: Message = &[
        s("service_name"), ls("service_tags"), ls("subset_tags"), ls("instance_tags"),
        ls("instance_blacklist_tags"), m("service_spec", SERVICE_SPEC), s("consistencyMode"),
        m("query_options", CONSUL_QUERY_OPTIONS), s("connect_enabled"), ls("data_centers"),
    ];
    const CONSUL_QUERY_OPTIONS: Message = &[s("use_cache")];
    const GCP_SPEC: Message = &[s("host"), s("audience")];

    // ---- enterprise/options/ai/ai.proto ----
    const AI_SPEC: Message = &[
        m("openai", AI_OPENAI).of("llm"), m("mistral", AI_MISTRAL).of("llm"),
        m("anthropic", AI_ANTHROPIC).of("llm"), m("azure_openai", AI_AZURE_OPENAI).of("llm"),
        m("multi", AI_MULTI_POOL).of("llm"), m("gemini", AI_GEMINI).of("llm"),
        m("vertex_ai", AI_VERTEX_AI).of("llm"), m("bedrock", AI_BEDROCK).of("llm"),
    ];
    const AI_SINGLE_AUTH_TOKEN: Message = &[
        s("inline").of("auth_token_source"), m("secret_ref", RESOURCE_REF).of("auth_token_source"),
        m("passthrough", EMPTY).of("auth_token_source"),
    ];
    const AI_PATH_OVERRIDE: Message = &[s("full_path").of("override_type"), s("base_path").of("override_type")];
    const AI_CUSTOM_HOST: Message = &[
        s("host"), s("port"), s("hostname"), m("path_override", AI_PATH_OVERRIDE),
    ];
    const AI_OPENAI: Message = &[
        m("auth_token", AI_SINGLE_AUTH_TOKEN), m("custom_host", AI_CUSTOM_HOST), s("model"),
    ];
    const AI_MISTRAL: Message = AI_OPENAI;
    const AI_AZURE_OPENAI: Message = &[
        m("auth_token", AI_SINGLE_AUTH_TOKEN).of("auth_token_source"), s("endpoint"),
        s("deployment_name"), s("api_version"), m("custom_host", AI_CUSTOM_HOST),
    ];
    const AI_GEMINI: Message = &[
        m("auth_token", AI_SINGLE_AUTH_TOKEN).of("auth_token_source"), s("model"),
        s("api_version"), m("custom_host", AI_CUSTOM_HOST),
    ];
    const AI_VERTEX_AI: Message = &[
        m("auth_token", AI_SINGLE_AUTH_TOKEN).of("auth_token_source"), s("model"),
        s("api_version"), s("project_id"), s("location"), s("model_path"), s("publisher"),
        s("json_schema"), m("custom_host", AI_CUSTOM_HOST),
    ];
    const AI_ANTHROPIC: Message = &[
        m("auth_token", AI_SINGLE_AUTH_TOKEN), m("custom_host", AI_CUSTOM_HOST), s("version"),
        s("model"),
    ];
    const AI_BEDROCK: Message = &[
        m("credential_provider", AI_AWS_CREDENTIAL_PROVIDER), m("custom_host", AI_CUSTOM_HOST),
        s("model"), s("region"),
    ];
    const AI_AWS_CREDENTIAL_PROVIDER: Message = &[
        m("secret_ref", RESOURCE_REF).of("auth_token_source"),
        m("inline", AI_AWS_INLINE).of("auth_token_source"),
    ];
    const AI_AWS_INLINE: Message = &[s("access_key_id"), s("secret_access_key"), s("session_token")];
    const AI_MULTI_POOL: Message = &[lm("priorities", AI_PRIORITY)];
    const AI_PRIORITY: Message = &[lm("pool", AI_BACKEND)];
    const AI_BACKEND: Message = &[
        m("openai", AI_OPENAI).of("llm"), m("mistral", AI_MISTRAL).of("llm"),
        m("anthropic", AI_ANTHROPIC).of("llm"), m("azure_openai", AI_AZURE_OPENAI).of("llm"),
        m("gemini", AI_GEMINI).of("llm"), m("vertex_ai", AI_VERTEX_AI).of("llm"),
        m("bedrock", AI_BEDROCK).of("llm"),
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_names(message: Message) -> Vec<String> {
        message.iter().map(Field::json_name).collect()
    }

    #[test]
    fn camel_case_conversion() {
        for (snake, camel) in [
            ("use_http2", "useHttp2"),
            ("aws_ec2", "awsEc2"),
            ("consecutive_5xx", "consecutive5xx"),
            ("vertex_ai", "vertexAi"),
            ("fallbackPolicy", "fallbackPolicy"),
            ("already", "already"),
        ] {
            assert_eq!(to_camel_case(snake), camel);
        }
    }

    #[test]
    fn the_top_level_is_gloos_spec_schema_plus_metadata() {
        let mut names = json_names(UPSTREAM);
        names.sort();
        let want = [
            "ai",
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
        assert_eq!(names, want);
    }

    #[test]
    fn the_upstream_types_are_one_oneof() {
        let mut members: Vec<String> = UPSTREAM
            .iter()
            .filter(|field| field.oneof == Some("upstream_type"))
            .map(Field::json_name)
            .collect();
        members.sort();
        assert_eq!(
            members,
            ["ai", "aws", "awsEc2", "azure", "consul", "gcp", "kube", "pipe", "static"]
        );
    }

    /// Every message of the schema, each once per place it is used.
    fn messages(message: Message, depth: usize, found: &mut Vec<(Message, usize)>) {
        found.push((message, depth));
        for field in message {
            let (Shape::One(Kind::Message(child))
            | Shape::List(Kind::Message(child))
            | Shape::Map(Kind::Message(child))) = field.shape
            else {
                continue;
            };
            messages(child, depth + 1, found);
        }
    }

    #[test]
    fn the_schema_is_a_finite_tree_with_distinct_names() {
        let mut found = Vec::new();
        messages(UPSTREAM, 1, &mut found);
        let deepest = found.iter().map(|(_, depth)| *depth).max();
        // Upstream.failover.prioritizedLocalities.localityEndpoints.lbEndpoints
        // .upstreamSslConfig.sds.callCredentials.fileCredentialSource
        assert_eq!(deepest, Some(9));
        for (message, _) in found {
            let mut names = json_names(message);
            let count = names.len();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), count, "{names:?}");
        }
    }
}
