//! `sslConfig` from the `gloo.solo.io/sslService.*` annotations of a Service.
//!
//! A value `X` applies to every port; `<port>:X` to that port only.

use std::collections::BTreeMap;

use crate::crd::{ResourceRef, SslFiles, UpstreamSslConfig};

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
) -> Option<UpstreamSslConfig> {
    let mut value_for = |key: &'static str| scoped_value(annotations, key, service_port, warnings);
    let secret = value_for(SECRET_ANNOTATION);
    let tls_cert = value_for(TLS_CERT_ANNOTATION);
    let tls_key = value_for(TLS_KEY_ANNOTATION);
    let root_ca = value_for(ROOT_CA_ANNOTATION);
    let one_way_tls = value_for(ONE_WAY_TLS_ANNOTATION);

    let mut config = if !secret.is_empty() {
        UpstreamSslConfig {
            secret_ref: Some(ResourceRef {
                name: secret,
                namespace: service_namespace.to_string(),
            }),
            ..Default::default()
        }
    } else if !(tls_cert.is_empty() && tls_key.is_empty() && root_ca.is_empty()) {
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
    config.one_way_tls = match one_way_tls.as_str() {
        "" => None,
        "true" => Some(true),
        "false" => Some(false),
        other => {
            warnings.push(TranslateWarning::InvalidBoolean {
                origin: super::AnnotationOrigin::Service,
                key: ONE_WAY_TLS_ANNOTATION,
                value: other.to_string(),
            });
            None
        }
    };
    Some(config)
}

/// The annotation's value for this port: empty when it is absent or scoped to another port.
fn scoped_value(
    annotations: &BTreeMap<String, String>,
    key: &'static str,
    service_port: i32,
    warnings: &mut Vec<TranslateWarning>,
) -> String {
    let Some(raw) = annotations.get(key) else {
        return String::new();
    };
    let parts: Vec<&str> = raw.split(':').collect();
    let [prefix, value] = parts[..] else {
        return raw.clone();
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
    if port == 0 || port == service_port {
        value.to_string()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                Some(secret("tls")),
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
}
