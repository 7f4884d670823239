//! `sslConfig` from the `gloo.solo.io/sslService.*` annotations of a Service.
//!
//! A value `X` applies to every port; `<port>:X` to that port only. `oneWayTls` counts only
//! alongside a secret, certificate, key or root CA, as in Gloo.

use std::collections::BTreeMap;

use crate::crd::{ResourceRef, SslFiles, UpstreamSslConfig};

use super::trace::{record, Rule, Tracer};
use super::warning::TranslateWarning;

pub const SECRET_ANNOTATION: &str = "gloo.solo.io/sslService.secret";
pub const TLS_CERT_ANNOTATION: &str = "gloo.solo.io/sslService.tlsCert";
pub const TLS_KEY_ANNOTATION: &str = "gloo.solo.io/sslService.tlsKey";
pub const ROOT_CA_ANNOTATION: &str = "gloo.solo.io/sslService.rootCa";
pub const ONE_WAY_TLS_ANNOTATION: &str = "gloo.solo.io/sslService.oneWayTls";

/// The TLS settings for one port of a Service, if its annotations ask for any.
pub fn ssl_config(
    annotations: &BTreeMap<String, String>,
    service_namespace: &str,
    service_port: i32,
    warnings: &mut Vec<TranslateWarning>,
    trace: &mut Tracer<'_>,
) -> Option<UpstreamSslConfig> {
    let mut value_for = |key: &'static str| scoped_value(annotations, key, service_port, warnings);
    let (secret, secret_port) = value_for(SECRET_ANNOTATION);
    let (tls_cert, cert_port) = value_for(TLS_CERT_ANNOTATION);
    let (tls_key, key_port) = value_for(TLS_KEY_ANNOTATION);
    let (root_ca, ca_port) = value_for(ROOT_CA_ANNOTATION);
    let (one_way_tls, one_way_port) = value_for(ONE_WAY_TLS_ANNOTATION);
    let tls = |annotation, port| move || Rule::Tls { annotation, port };

    let mut config = if !secret.is_empty() {
        record(
            trace,
            &["spec", "sslConfig", "secretRef", "name"],
            tls(SECRET_ANNOTATION, secret_port),
        );
        record(
            trace,
            &["spec", "sslConfig", "secretRef", "namespace"],
            || Rule::TlsSecretNamespace,
        );
        UpstreamSslConfig {
            secret_ref: Some(ResourceRef {
                name: secret,
                namespace: service_namespace.to_string(),
            }),
            ..Default::default()
        }
    } else if !(tls_cert.is_empty() && tls_key.is_empty() && root_ca.is_empty()) {
        for (value, field, annotation, port) in [
            (&tls_cert, "tlsCert", TLS_CERT_ANNOTATION, cert_port),
            (&tls_key, "tlsKey", TLS_KEY_ANNOTATION, key_port),
            (&root_ca, "rootCa", ROOT_CA_ANNOTATION, ca_port),
        ] {
            if !value.is_empty() {
                record(
                    trace,
                    &["spec", "sslConfig", "sslFiles", field],
                    tls(annotation, port),
                );
            }
        }
        UpstreamSslConfig {
            ssl_files: Some(SslFiles {
                tls_cert,
                tls_key,
                root_ca,
                ..Default::default()
            }),
            ..Default::default()
        }
    } else {
        if !one_way_tls.is_empty() {
            warnings.push(TranslateWarning::OneWayTlsWithoutTls);
        }
        return None;
    };
    if !one_way_tls.is_empty() {
        record(
            trace,
            &["spec", "sslConfig", "oneWayTls"],
            tls(ONE_WAY_TLS_ANNOTATION, one_way_port),
        );
    }
    if !one_way_tls.is_empty() {
        // Gloo takes whatever Go's ParseBool does not read as true to be false.
        let parsed = parse_go_bool(&one_way_tls);
        if parsed.is_none() {
            warnings.push(TranslateWarning::OneWayTlsNotABoolean { value: one_way_tls });
        }
        config.one_way_tls = Some(parsed.unwrap_or(false));
    }
    Some(config)
}

/// Go's `strconv.ParseBool`, which Gloo reads `oneWayTls` with.
fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The annotation's value for this port: empty when it is absent or scoped to another port;
/// with the port it was scoped to, when it was.
fn scoped_value(
    annotations: &BTreeMap<String, String>,
    key: &'static str,
    service_port: i32,
    warnings: &mut Vec<TranslateWarning>,
) -> (String, Option<i32>) {
    let Some(raw) = annotations.get(key) else {
        return (String::new(), None);
    };
    let parts: Vec<&str> = raw.split(':').collect();
    let [prefix, value] = parts[..] else {
        return (raw.clone(), None);
    };
    // Gloo reads an unparsable port as 0, which means "every port"; keep that, but say so.
    let port = prefix.parse::<i32>().unwrap_or_else(|_| {
        warnings.push(TranslateWarning::TlsPortNotANumber {
            key,
            value: raw.clone(),
            prefix: prefix.to_string(),
        });
        0
    });
    match port {
        0 => (value.to_string(), None),
        port if port == service_port => (value.to_string(), Some(port)),
        _ => (String::new(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssl_config(
        annotations: &BTreeMap<String, String>,
        service_namespace: &str,
        service_port: i32,
        warnings: &mut Vec<TranslateWarning>,
    ) -> Option<UpstreamSslConfig> {
        super::ssl_config(
            annotations,
            service_namespace,
            service_port,
            warnings,
            &mut None,
        )
    }

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn secret(name: &str) -> UpstreamSslConfig {
        UpstreamSslConfig {
            secret_ref: Some(ResourceRef {
                name: name.to_string(),
                namespace: "shop".to_string(),
            }),
            ..Default::default()
        }
    }

    fn files(cert: &str, key: &str, ca: &str) -> UpstreamSslConfig {
        UpstreamSslConfig {
            ssl_files: Some(SslFiles {
                tls_cert: cert.into(),
                tls_key: key.into(),
                root_ca: ca.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    type Pairs<'a> = Vec<(&'a str, &'a str)>;

    #[test]
    fn table() {
        let one_way = |mut c: UpstreamSslConfig, v: bool| {
            c.one_way_tls = Some(v);
            c
        };
        let cases: Vec<(Pairs, i32, Option<UpstreamSslConfig>)> = vec![
            (vec![], 443, None),
            (vec![(SECRET_ANNOTATION, "tls")], 443, Some(secret("tls"))),
            (vec![(SECRET_ANNOTATION, "tls")], 8080, Some(secret("tls"))),
            (
                vec![(SECRET_ANNOTATION, "443:tls")],
                443,
                Some(secret("tls")),
            ),
            (vec![(SECRET_ANNOTATION, "443:tls")], 8080, None),
            (
                vec![(SECRET_ANNOTATION, "tls"), (TLS_CERT_ANNOTATION, "/c")],
                443,
                Some(secret("tls")),
            ),
            (
                vec![(TLS_CERT_ANNOTATION, "/c"), (TLS_KEY_ANNOTATION, "/k")],
                443,
                Some(files("/c", "/k", "")),
            ),
            (
                vec![(ROOT_CA_ANNOTATION, "443:/ca")],
                443,
                Some(files("", "", "/ca")),
            ),
            (vec![(ROOT_CA_ANNOTATION, "443:/ca")], 80, None),
            (
                vec![(SECRET_ANNOTATION, "tls"), (ONE_WAY_TLS_ANNOTATION, "true")],
                443,
                Some(one_way(secret("tls"), true)),
            ),
            (
                vec![
                    (ROOT_CA_ANNOTATION, "/ca"),
                    (ONE_WAY_TLS_ANNOTATION, "443:false"),
                ],
                443,
                Some(one_way(files("", "", "/ca"), false)),
            ),
            (
                vec![
                    (ROOT_CA_ANNOTATION, "/ca"),
                    (ONE_WAY_TLS_ANNOTATION, "443:true"),
                ],
                80,
                Some(files("", "", "/ca")),
            ),
            // A value with more than one ':' is taken whole, as Gloo does.
            (
                vec![(ROOT_CA_ANNOTATION, "443:/a:b")],
                80,
                Some(files("", "", "443:/a:b")),
            ),
        ];
        for (pairs, port, want) in cases {
            let mut warnings = Vec::new();
            let got = ssl_config(&annotations(&pairs), "shop", port, &mut warnings);
            assert_eq!(got, want, "{pairs:?} on port {port}");
            assert!(warnings.is_empty(), "{pairs:?}: {warnings:?}");
        }
    }

    #[test]
    fn bad_values_warn_and_never_lose_the_config() {
        let cases: Vec<(Pairs, Option<UpstreamSslConfig>, &str)> = vec![
            (
                vec![(SECRET_ANNOTATION, "https:tls")],
                Some(secret("tls")),
                "invalid_tls_port",
            ),
            (
                vec![(ONE_WAY_TLS_ANNOTATION, "true")],
                None,
                "one_way_tls_without_tls",
            ),
            (
                vec![
                    (SECRET_ANNOTATION, "tls"),
                    (ONE_WAY_TLS_ANNOTATION, "maybe"),
                ],
                Some(UpstreamSslConfig {
                    one_way_tls: Some(false),
                    ..secret("tls")
                }),
                "invalid_boolean_annotation",
            ),
        ];
        for (pairs, want, reason) in cases {
            let mut warnings = Vec::new();
            assert_eq!(
                ssl_config(&annotations(&pairs), "shop", 443, &mut warnings),
                want,
                "{pairs:?}"
            );
            let reasons: Vec<&str> = warnings.iter().map(|w| w.reason().as_str()).collect();
            assert_eq!(reasons, vec![reason], "{pairs:?}");
        }
    }

    #[test]
    fn one_way_tls_is_read_as_go_parse_bool() {
        let spellings = [
            ("1", true, false),
            ("t", true, false),
            ("T", true, false),
            ("TRUE", true, false),
            ("true", true, false),
            ("True", true, false),
            ("0", false, false),
            ("f", false, false),
            ("F", false, false),
            ("FALSE", false, false),
            ("false", false, false),
            ("False", false, false),
            // Anything else is false, with a warning.
            ("yes", false, true),
            ("tRUE", false, true),
            ("on", false, true),
            (" true", false, true),
            ("2", false, true),
        ];
        for (value, want, warns) in spellings {
            for (cert_key, want_config) in [
                (SECRET_ANNOTATION, secret("tls")),
                (TLS_CERT_ANNOTATION, files("tls", "", "")),
                (TLS_KEY_ANNOTATION, files("", "tls", "")),
                (ROOT_CA_ANNOTATION, files("", "", "tls")),
            ] {
                let mut warnings = Vec::new();
                let got = ssl_config(
                    &annotations(&[(cert_key, "tls"), (ONE_WAY_TLS_ANNOTATION, value)]),
                    "shop",
                    443,
                    &mut warnings,
                );
                let want_config = UpstreamSslConfig {
                    one_way_tls: Some(want),
                    ..want_config
                };
                assert_eq!(got, Some(want_config), "{value:?} with {cert_key}");
                let reasons: Vec<&str> = warnings.iter().map(|w| w.reason().as_str()).collect();
                let want_reasons: Vec<&str> = if warns {
                    vec!["invalid_boolean_annotation"]
                } else {
                    vec![]
                };
                assert_eq!(reasons, want_reasons, "{value:?}");
            }
        }
    }

    #[test]
    fn one_way_tls_per_port() {
        let pairs = [
            (SECRET_ANNOTATION, "tls"),
            (ONE_WAY_TLS_ANNOTATION, "443:T"),
        ];
        let with = |v: Option<bool>| {
            Some(UpstreamSslConfig {
                one_way_tls: v,
                ..secret("tls")
            })
        };
        for (port, want) in [(443, with(Some(true))), (8443, with(None))] {
            let mut warnings = Vec::new();
            assert_eq!(
                ssl_config(&annotations(&pairs), "shop", port, &mut warnings),
                want,
                "port {port}"
            );
            assert!(warnings.is_empty());
        }
        // A bad value scoped to another port is never read, so it gives no warning there.
        let bad = [
            (SECRET_ANNOTATION, "tls"),
            (ONE_WAY_TLS_ANNOTATION, "443:nope"),
        ];
        let mut warnings = Vec::new();
        assert_eq!(
            ssl_config(&annotations(&bad), "shop", 80, &mut warnings),
            with(None)
        );
        assert!(warnings.is_empty());
        assert_eq!(
            ssl_config(&annotations(&bad), "shop", 443, &mut warnings),
            with(Some(false))
        );
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn one_way_tls_alone_gives_no_tls_whatever_its_value() {
        for value in ["true", "1", "false", "nope", "443:true"] {
            let mut warnings = Vec::new();
            assert_eq!(
                ssl_config(
                    &annotations(&[(ONE_WAY_TLS_ANNOTATION, value)]),
                    "shop",
                    443,
                    &mut warnings
                ),
                None,
                "{value}"
            );
            let reasons: Vec<&str> = warnings.iter().map(|w| w.reason().as_str()).collect();
            assert_eq!(reasons, vec!["one_way_tls_without_tls"], "{value}");
        }
    }
}
