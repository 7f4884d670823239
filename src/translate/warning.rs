//! What translation reports about bad input. A warning never costs an Upstream: the offending
//! annotation (or part of it) is ignored and the rest of the Service is translated.

use crate::model::SkipReason;
use std::fmt;

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
}

impl TranslateWarning {
    /// The fixed label it is counted under (never the message itself).
    pub fn reason(&self) -> SkipReason {
        match self {
            Self::InvalidBoolean { .. } => SkipReason::InvalidBooleanAnnotation,
            Self::UpstreamConfigNotJson { .. } => SkipReason::InvalidUpstreamConfig,
            Self::UpstreamConfigUnknownFields { .. } => SkipReason::UnknownUpstreamConfigField,
            Self::UpstreamConfigProtectedField { .. } => SkipReason::ProtectedUpstreamConfigField,
            Self::UpstreamConfigInvalidValue { .. } => SkipReason::InvalidUpstreamConfigValue,
            Self::TlsPortNotANumber { .. } => SkipReason::InvalidTlsPort,
            Self::OneWayTlsNotABoolean { .. } => SkipReason::InvalidBooleanAnnotation,
            Self::OneWayTlsWithoutTls => SkipReason::OneWayTlsWithoutTls,
        }
    }
}
