//! What translation reports about bad input. A warning never costs an Upstream: the offending
//! annotation (or part of it) is ignored and the rest of the Service is translated.

use crate::model::SkipReason;
use std::fmt;

/// The largest annotation value read, in bytes (256 KiB): the API server refuses an object whose
/// annotations together exceed this (`TotalAnnotationSizeLimitB`), so no Service it accepts is
/// refused here; what did not come through it (the global annotations setting, `render` input)
/// gets the same bound. The annotation is copied into each Upstream as well as merged into its
/// spec, so a value this size keeps the Upstream (about twice it, plus managed fields) well
/// under etcd's 1.5 MiB request limit. Depth needs no bound of ours: serde_json refuses input
/// nested 128 levels deep, and the schema walk goes no deeper than the schema.
pub const MAX_UPSTREAM_CONFIG_BYTES: usize = 256 * 1024;

/// The longest text a warning quotes from its input (a value, a field path, a parser's message),
/// in characters: annotation values run to 256 KiB and a parser's message can quote one, but a
/// warning goes into a log line, an Event (whose note is cut at 1,000 characters anyway) and the
/// per-Service memory of what was reported.
pub const MAX_QUOTED_CHARS: usize = 120;

/// The most unknown field names a warning lists (an annotation can hold thousands).
pub const MAX_LISTED_FIELDS: usize = 8;

/// Where an annotation came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnotationOrigin {
    /// The Service's own annotations.
    Service,
    /// The daemon's `--global-annotations` setting.
    GlobalSettings,
}

impl fmt::Display for AnnotationOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Service => "the Service",
            Self::GlobalSettings => "the global annotations setting",
        })
    }
}

/// A problem with a Service's annotations, found while translating it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateWarning {
    #[error("annotation {key} on {origin} is {value:?}, neither \"true\" nor \"false\"; ignored")]
    InvalidBoolean {
        origin: AnnotationOrigin,
        key: &'static str,
        value: String,
    },

    #[error("annotation gloo.solo.io/upstream_config on {origin} is not a JSON object ({reason}); ignored")]
    UpstreamConfigNotJson {
        origin: AnnotationOrigin,
        reason: String,
    },

    #[error("annotation gloo.solo.io/upstream_config on {origin} is {bytes} bytes, more than the {MAX_UPSTREAM_CONFIG_BYTES} read; ignored")]
    UpstreamConfigTooLarge {
        origin: AnnotationOrigin,
        bytes: usize,
    },

    #[error("annotation gloo.solo.io/upstream_config on {origin} sets unknown Upstream field(s) {}; ignored", fields.join(", "))]
    UpstreamConfigUnknownFields {
        origin: AnnotationOrigin,
        fields: Vec<String>,
    },

    #[error("annotation gloo.solo.io/upstream_config on {origin} sets {field}, which discovery owns; that field is ignored")]
    UpstreamConfigProtectedField {
        origin: AnnotationOrigin,
        field: String,
    },

    #[error("annotation gloo.solo.io/upstream_config on {origin} is not a valid Upstream spec ({reason}); ignored")]
    UpstreamConfigInvalidValue {
        origin: AnnotationOrigin,
        reason: String,
    },

    #[error("annotation {key} is {value:?}: {prefix:?} before ':' is not a port number, so it applies to every port, as in Gloo")]
    TlsPortNotANumber {
        key: &'static str,
        value: String,
        prefix: String,
    },

    #[error("annotation gloo.solo.io/sslService.oneWayTls is {value:?}, which Go's strconv.ParseBool does not read (1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False); read as false, as Gloo does")]
    OneWayTlsNotABoolean { value: String },

    #[error("annotation gloo.solo.io/sslService.oneWayTls is set without a secret, certificate, key or root CA; ignored")]
    OneWayTlsWithoutTls,

    #[error("annotation upstream-discovery.io/route-namespaces names {value:?}, which is not a namespace name (a DNS-1123 label); that entry is ignored")]
    InvalidRouteNamespace { value: String },

    #[error("annotation upstream-discovery.io/route-namespaces: a ReferenceGrant holds at most 16 entries in `from` ({kinds} route kind(s) per namespace), so namespace(s) {} are left out", dropped.join(", "))]
    TooManyRouteNamespaces { kinds: usize, dropped: Vec<String> },
}

impl TranslateWarning {
    /// The fixed label it is counted under (never the message itself).
    pub fn reason(&self) -> SkipReason {
        match self {
            Self::InvalidBoolean { .. } => SkipReason::InvalidBooleanAnnotation,
            Self::UpstreamConfigNotJson { .. } | Self::UpstreamConfigTooLarge { .. } => {
                SkipReason::InvalidUpstreamConfig
            }
            Self::UpstreamConfigUnknownFields { .. } => SkipReason::UnknownUpstreamConfigField,
            Self::UpstreamConfigProtectedField { .. } => SkipReason::ProtectedUpstreamConfigField,
            Self::UpstreamConfigInvalidValue { .. } => SkipReason::InvalidUpstreamConfigValue,
            Self::TlsPortNotANumber { .. } => SkipReason::InvalidTlsPort,
            Self::OneWayTlsNotABoolean { .. } => SkipReason::InvalidBooleanAnnotation,
            Self::OneWayTlsWithoutTls => SkipReason::OneWayTlsWithoutTls,
            Self::InvalidRouteNamespace { .. } => SkipReason::InvalidRouteNamespace,
            Self::TooManyRouteNamespaces { .. } => SkipReason::TooManyRouteNamespaces,
        }
    }

    /// The same warning with whatever it quotes from the input cut to [`MAX_QUOTED_CHARS`] and
    /// at most [`MAX_LISTED_FIELDS`] field names (then how many more), so its message stays
    /// short whatever the annotation held.
    pub fn bounded(self) -> Self {
        match self {
            Self::InvalidBoolean { origin, key, value } => Self::InvalidBoolean {
                origin,
                key,
                value: cut(value),
            },
            Self::UpstreamConfigNotJson { origin, reason } => Self::UpstreamConfigNotJson {
                origin,
                reason: cut(reason),
            },
            Self::UpstreamConfigUnknownFields { origin, fields } => {
                let more = fields.len().saturating_sub(MAX_LISTED_FIELDS);
                let mut fields: Vec<String> = fields
                    .into_iter()
                    .take(MAX_LISTED_FIELDS)
                    .map(cut)
                    .collect();
                if more > 0 {
                    fields.push(format!("and {more} more"));
                }
                Self::UpstreamConfigUnknownFields { origin, fields }
            }
            Self::UpstreamConfigProtectedField { origin, field } => {
                Self::UpstreamConfigProtectedField {
                    origin,
                    field: cut(field),
                }
            }
            Self::UpstreamConfigInvalidValue { origin, reason } => {
                Self::UpstreamConfigInvalidValue {
                    origin,
                    reason: cut(reason),
                }
            }
            Self::TlsPortNotANumber { key, value, prefix } => Self::TlsPortNotANumber {
                key,
                value: cut(value),
                prefix: cut(prefix),
            },
            Self::OneWayTlsNotABoolean { value } => {
                Self::OneWayTlsNotABoolean { value: cut(value) }
            }
            Self::InvalidRouteNamespace { value } => {
                Self::InvalidRouteNamespace { value: cut(value) }
            }
            Self::TooManyRouteNamespaces { kinds, dropped } => {
                let more = dropped.len().saturating_sub(MAX_LISTED_FIELDS);
                let mut dropped: Vec<String> =
                    dropped.into_iter().take(MAX_LISTED_FIELDS).collect();
                if more > 0 {
                    dropped.push(format!("and {more} more"));
                }
                Self::TooManyRouteNamespaces { kinds, dropped }
            }
            unchanged @ (Self::UpstreamConfigTooLarge { .. } | Self::OneWayTlsWithoutTls) => {
                unchanged
            }
        }
    }
}

/// `text` cut to [`MAX_QUOTED_CHARS`] characters, saying how much was left out.
fn cut(text: String) -> String {
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((end, _)) => format!("{}… ({} bytes in all)", &text[..end], text.len()),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_whole_and_long_text_is_cut_on_a_character() {
        assert_eq!(
            cut("é".repeat(MAX_QUOTED_CHARS)),
            "é".repeat(MAX_QUOTED_CHARS)
        );
        let long = "é".repeat(MAX_QUOTED_CHARS + 1);
        assert_eq!(
            cut(long),
            format!("{}… (242 bytes in all)", "é".repeat(MAX_QUOTED_CHARS))
        );
    }

    #[test]
    fn a_warning_lists_a_few_fields_then_how_many_more() {
        let fields: Vec<String> = (0..1000).map(|i| format!("f{i}")).collect();
        let warning = TranslateWarning::UpstreamConfigUnknownFields {
            origin: AnnotationOrigin::Service,
            fields,
        }
        .bounded();
        assert_eq!(
            warning.to_string(),
            "annotation gloo.solo.io/upstream_config on the Service sets unknown Upstream \
             field(s) f0, f1, f2, f3, f4, f5, f6, f7, and 992 more; ignored"
        );
        let few = TranslateWarning::UpstreamConfigUnknownFields {
            origin: AnnotationOrigin::Service,
            fields: vec!["a".into(), "b".into()],
        };
        assert_eq!(few.clone().bounded(), few);
    }

    #[test]
    fn a_quoted_value_of_200_kib_becomes_a_line() {
        let warning = TranslateWarning::InvalidBoolean {
            origin: AnnotationOrigin::Service,
            key: "gloo.solo.io/h2_service",
            value: "x".repeat(200 * 1024),
        }
        .bounded();
        assert_eq!(
            warning.to_string(),
            format!(
                "annotation gloo.solo.io/h2_service on the Service is \"{}… (204800 bytes in all)\", \
                 neither \"true\" nor \"false\"; ignored",
                "x".repeat(MAX_QUOTED_CHARS)
            )
        );
    }

    #[test]
    fn the_size_warning_says_both_sizes() {
        let warning = TranslateWarning::UpstreamConfigTooLarge {
            origin: AnnotationOrigin::GlobalSettings,
            bytes: 300_000,
        };
        assert_eq!(
            warning.to_string(),
            "annotation gloo.solo.io/upstream_config on the global annotations setting is 300000 \
             bytes, more than the 262144 read; ignored"
        );
        assert_eq!(warning.reason(), SkipReason::InvalidUpstreamConfig);
    }
}
