//! Provenance: which rule of docs/behaviour.md set each field of an Upstream, recorded by
//! translation itself while it works (`explain`), so that the explanation can never drift from the
//! rules. Translation records only when it is handed a trace: the daemon and `render` pass none and
//! pay a branch per rule, nothing more.

use std::fmt;

use super::warning::AnnotationOrigin;
use super::{DEEP_MERGE_ANNOTATION, H2_ANNOTATION, UPSTREAM_CONFIG_ANNOTATION};

/// One field of the Upstream and the rule that set it. `path` is the field as JSON keys from
/// the top of the object (`["spec", "kube", "servicePort"]`); a later entry whose path covers an
/// earlier one overrides it, as the later rule did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSource {
    pub path: Vec<String>,
    pub rule: Rule,
}

/// Why a field holds its value (or is unset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// `<namespace>-<service>-<port>` (`raw`), sanitized; hashed when over 63 characters.
    Name {
        raw: String,
        hashed: bool,
    },
    /// The fixed write namespace.
    WriteNamespace,
    /// `--write-namespace-mode service`: beside the Service.
    ServiceNamespaceMode,
    /// The ownership label.
    OwnershipLabel,
    /// One of the Service's annotations, copied.
    CopiedAnnotation {
        key: String,
    },
    ServiceName,
    ServiceNamespace,
    /// The Service port (not targetPort), named `port_name` when it has a name.
    ServicePort {
        port_name: Option<String>,
    },
    ServiceSelector,
    ServiceLabels,
    /// An ownerReference to the Service, which lives in the Upstream's namespace.
    OwnerReference,
    /// HTTP/2 by the `gloo.solo.io/h2_service` annotation.
    Http2Annotation {
        origin: AnnotationOrigin,
    },
    /// HTTP/2 by the port's `appProtocol`.
    Http2AppProtocol {
        app_protocol: String,
    },
    /// HTTP/2 by the start of the port's name.
    Http2PortName {
        name: String,
        prefix: &'static str,
    },
    /// `useHttp2` left unset: nothing asked for HTTP/2.
    Http2Unset,
    /// A `gloo.solo.io/sslService.*` annotation; `port` when it was scoped with `<port>:`.
    Tls {
        annotation: &'static str,
        port: Option<i32>,
    },
    /// `sslConfig.secretRef.namespace`: the Service's own.
    TlsSecretNamespace,
    /// The `gloo.solo.io/upstream_config` override, shallow (each top-level field replaced
    /// whole) or deep (merged at every depth).
    Override {
        origin: AnnotationOrigin,
        deep: bool,
    },
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Name { raw, hashed: false } => {
                write!(f, "<namespace>-<service>-<port> {raw:?}, sanitized")
            }
            Rule::Name { raw, hashed: true } => write!(
                f,
                "<namespace>-<service>-<port> {raw:?}, sanitized, over 63 characters: its first 31, \"-\", 31 hex digits of its MD5"
            ),
            Rule::WriteNamespace => f.write_str("the write namespace"),
            Rule::ServiceNamespaceMode => {
                f.write_str("the Service's namespace (--write-namespace-mode service)")
            }
            Rule::OwnershipLabel => f.write_str("the ownership label of discovery"),
            Rule::CopiedAnnotation { key } => write!(f, "the Service's annotation {key}, copied"),
            Rule::ServiceName => f.write_str("the Service's name"),
            Rule::ServiceNamespace => f.write_str("the Service's namespace"),
            Rule::ServicePort {
                port_name: Some(name),
            } => write!(f, "port {name:?} of the Service (port, not targetPort)"),
            Rule::ServicePort { port_name: None } => {
                f.write_str("the Service's port (port, not targetPort)")
            }
            Rule::ServiceSelector => f.write_str("the Service's selector"),
            Rule::ServiceLabels => f.write_str("the Service's labels"),
            Rule::OwnerReference => {
                f.write_str("owner reference to the Service, in the Upstream's namespace")
            }
            Rule::Http2Annotation { origin } => {
                write!(f, "annotation {H2_ANNOTATION} on {origin}")
            }
            Rule::Http2AppProtocol { app_protocol } => {
                write!(f, "port appProtocol {app_protocol:?}")
            }
            Rule::Http2PortName { name, prefix } => {
                write!(f, "port name {name:?} starts with {prefix:?}")
            }
            Rule::Http2Unset => write!(
                f,
                "no {H2_ANNOTATION} annotation, HTTP/2 appProtocol or port name: left unset"
            ),
            Rule::Tls {
                annotation,
                port: None,
            } => write!(f, "annotation {annotation} (every port)"),
            Rule::Tls {
                annotation,
                port: Some(port),
            } => write!(f, "annotation {annotation} (\"{port}:\", this port only)"),
            Rule::TlsSecretNamespace => f.write_str("the Service's namespace (TLS secret)"),
            Rule::Override {
                origin,
                deep: false,
            } => write!(
                f,
                "annotation {UPSTREAM_CONFIG_ANNOTATION} on {origin}, replacing the field whole"
            ),
            Rule::Override { origin, deep: true } => write!(
                f,
                "annotation {UPSTREAM_CONFIG_ANNOTATION} on {origin}, deep merge ({DEEP_MERGE_ANNOTATION})"
            ),
        }
    }
}

/// Where translation records provenance: `None` records nothing.
pub(super) type Tracer<'a> = Option<&'a mut Vec<FieldSource>>;

/// Records `rule` for the field at `path`, when tracing.
pub(super) fn record(trace: &mut Tracer<'_>, path: &[&str], rule: impl FnOnce() -> Rule) {
    if let Some(sources) = trace.as_deref_mut() {
        sources.push(FieldSource {
            path: path.iter().map(|key| key.to_string()).collect(),
            rule: rule(),
        });
    }
}

/// Records `rule` for every leaf of `value` below `path` (objects are walked, lists and
/// scalars are leaves): a deep merge sets exactly those.
pub(super) fn record_leaves(
    trace: &mut Tracer<'_>,
    path: &mut Vec<String>,
    value: &serde_json::Value,
    rule: &Rule,
) {
    let Some(sources) = trace.as_deref_mut() else {
        return;
    };
    match value {
        serde_json::Value::Null => {}
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                path.push(key.clone());
                record_leaves(&mut Some(&mut *sources), path, child, rule);
                path.pop();
            }
        }
        _ => sources.push(FieldSource {
            path: path.clone(),
            rule: rule.clone(),
        }),
    }
}
