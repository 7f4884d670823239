//! Whether an Upstream speaks HTTP/2, decided as Gloo does: first match wins.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ServicePort;

use super::trace::{record, Rule, Tracer};
use super::warning::{AnnotationOrigin, TranslateWarning};

pub const H2_ANNOTATION: &str = "gloo.solo.io/h2_service";

const H2_APP_PROTOCOLS: [&str; 4] = ["http2", "grpc", "grpc-web", "kubernetes.io/h2c"];
const H2_PORT_NAME_PREFIXES: [&str; 3] = ["grpc", "h2", "http2"];

/// `Some(true|false)` when an annotation, the port's `appProtocol` or its name decides;
/// `None` (left unset, not false) otherwise.
pub fn use_http2(
    service_annotations: &BTreeMap<String, String>,
    global_annotations: &BTreeMap<String, String>,
    port: &ServicePort,
    warnings: &mut Vec<TranslateWarning>,
    trace: &mut Tracer<'_>,
) -> Option<bool> {
    const PATH: &[&str] = &["spec", "useHttp2"];
    let annotated = [
        (service_annotations, AnnotationOrigin::Service),
        (global_annotations, AnnotationOrigin::GlobalSettings),
    ];
    for (annotations, origin) in annotated {
        match annotations.get(H2_ANNOTATION).map(String::as_str) {
            Some(value @ ("true" | "false")) => {
                record(trace, PATH, || Rule::Http2Annotation { origin });
                return Some(value == "true");
            }
            Some(other) => warnings.push(TranslateWarning::InvalidBoolean {
                origin,
                key: H2_ANNOTATION,
                value: other.to_string(),
            }),
            None => {}
        }
    }
    if let Some(app_protocol) = port
        .app_protocol
        .as_deref()
        .filter(|p| H2_APP_PROTOCOLS.contains(p))
    {
        record(trace, PATH, || Rule::Http2AppProtocol {
            app_protocol: app_protocol.to_string(),
        });
        return Some(true);
    }
    let name = port.name.as_deref().unwrap_or_default();
    if let Some(prefix) = H2_PORT_NAME_PREFIXES
        .iter()
        .copied()
        .find(|prefix| name.starts_with(prefix))
    {
        record(trace, PATH, || Rule::Http2PortName {
            name: name.to_string(),
            prefix,
        });
        return Some(true);
    }
    record(trace, PATH, || Rule::Http2Unset);
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: &str, app_protocol: Option<&str>) -> ServicePort {
        ServicePort {
            name: Some(name.to_string()),
            port: 80,
            app_protocol: app_protocol.map(str::to_string),
            ..Default::default()
        }
    }

    fn annotations(value: Option<&str>) -> BTreeMap<String, String> {
        value
            .map(|v| (H2_ANNOTATION.to_string(), v.to_string()))
            .into_iter()
            .collect()
    }

    #[test]
    fn first_match_wins() {
        // (service annotation, global annotation, port name, appProtocol) → expected
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            &'a str,
            Option<&'a str>,
            Option<bool>,
        );
        let cases: &[Case] = &[
            (None, None, "http", None, None),
            (Some("true"), None, "http", None, Some(true)),
            (Some("false"), None, "grpc", Some("grpc"), Some(false)),
            (None, Some("true"), "http", None, Some(true)),
            (None, Some("false"), "grpc-api", None, Some(false)),
            (Some("true"), Some("false"), "http", None, Some(true)),
            (None, None, "web", Some("http2"), Some(true)),
            (None, None, "web", Some("grpc"), Some(true)),
            (None, None, "web", Some("grpc-web"), Some(true)),
            (None, None, "web", Some("kubernetes.io/h2c"), Some(true)),
            (None, None, "web", Some("HTTP2"), None),
            (None, None, "web", Some("https"), None),
            (None, None, "grpc-api", None, Some(true)),
            (None, None, "h2c", None, Some(true)),
            (None, None, "http2-web", None, Some(true)),
            (None, None, "my-grpc", None, None),
        ];
        for (service, global, name, app_protocol, want) in cases {
            let mut warnings = Vec::new();
            let got = use_http2(
                &annotations(*service),
                &annotations(*global),
                &port(name, *app_protocol),
                &mut warnings,
                &mut None,
            );
            assert_eq!(got, *want, "{service:?} {global:?} {name} {app_protocol:?}");
            assert!(warnings.is_empty());
        }
    }

    #[test]
    fn a_bad_value_warns_and_falls_through_to_the_next_rule() {
        let mut warnings = Vec::new();
        let got = use_http2(
            &annotations(Some("yes")),
            &annotations(None),
            &port("grpc", None),
            &mut warnings,
            &mut None,
        );
        assert_eq!(got, Some(true));
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].reason().as_str(), "invalid_boolean_annotation");
    }
}
