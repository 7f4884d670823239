//! The fixed sets of Kubernetes Event reasons and metric label values. Each is an enum, so a
//! reason is named in one place and a metric label can never be an error message or a name.

/// Defines an enum of unit variants, each with the text it stands for.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named_enum!(
    /// Reasons of the Events the daemon records (PascalCase, as Kubernetes writes them).
    EventReason {
        /// A Service annotation (or function filter) was not usable; the rest went on.
        InvalidAnnotation => "InvalidAnnotation",
        /// The Upstream's name is held by an object without our label.
        UpstreamNotOwned => "UpstreamNotOwned",
        /// Another Service holds the Upstream's name (Gloo's naming gives both the same one).
        UpstreamNameCollision => "UpstreamNameCollision",
        /// The ReferenceGrant's name (the Upstream's) is held by a grant without our label.
        ReferenceGrantNotOwned => "ReferenceGrantNotOwned",
        LambdaCredentialsMissing => "LambdaCredentialsMissing",
        LambdaCredentialsRefused => "LambdaCredentialsRefused",
        LambdaThrottled => "LambdaThrottled",
        LambdaDiscoveryFailed => "LambdaDiscoveryFailed",
        LambdaFunctionsCapped => "LambdaFunctionsCapped",
        InvalidAwsUpstream => "InvalidAwsUpstream",
        /// Normal: function discovery works again after a problem.
        LambdaFunctionsDiscovered => "LambdaFunctionsDiscovered",
        /// An admission webhook or policy refused a write of the Upstream.
        AdmissionDenied => "AdmissionDenied",
        /// A webhook with `failurePolicy: Fail` could not be called (down, or timed out), so the
        /// API server refused the write without a verdict.
        AdmissionUnavailable => "AdmissionUnavailable",
    }
);

named_enum!(
    /// `skipped_total{reason}`: something left out on purpose, with a warning.
    SkipReason {
        NotOwned => "not_owned",
        NameCollision => "name_collision",
        InvalidBooleanAnnotation => "invalid_boolean_annotation",
        InvalidUpstreamConfig => "invalid_upstream_config",
        UnknownUpstreamConfigField => "unknown_upstream_config_field",
        ProtectedUpstreamConfigField => "protected_upstream_config_field",
        InvalidUpstreamConfigValue => "invalid_upstream_config_value",
        InvalidTlsPort => "invalid_tls_port",
        OneWayTlsWithoutTls => "one_way_tls_without_tls",
        InvalidFunctionFilter => "invalid_function_filter",
        LambdaFunctionsCapped => "lambda_functions_capped",
        /// A namespace in `upstream-discovery.io/route-namespaces` that is no namespace name.
        InvalidRouteNamespace => "invalid_route_namespace",
        /// Namespaces beyond what one ReferenceGrant's 16 `from` entries hold.
        TooManyRouteNamespaces => "too_many_route_namespaces",
    }
);

named_enum!(
    /// `errors_total{kind}`: a failure, by kind.
    ErrorKind {
        /// HTTP 429 from the API server.
        Throttled => "throttled",
        Forbidden => "forbidden",
        /// An admission webhook or admission policy refused the write (not a missing right).
        AdmissionDenied => "admission_denied",
        /// An admission webhook with `failurePolicy: Fail` could not be called or timed out.
        AdmissionUnavailable => "admission_unavailable",
        /// HTTP 422: the object was refused as invalid.
        Invalid => "invalid",
        ServerError => "server_error",
        ApiError => "api_error",
        /// No answer from the API server (connection, TLS, timeout).
        Transport => "transport",
        /// A write task of service discovery ended abnormally (a bug); its work is retried.
        TaskFailed => "task_failed",
        LambdaThrottled => "lambda_throttled",
        LambdaCredentialsRefused => "lambda_credentials_refused",
        LambdaNoCredentials => "lambda_no_credentials",
        LambdaApiError => "lambda_api_error",
        LambdaCredentialsMissing => "lambda_credentials_missing",
        LambdaInvalidUpstream => "lambda_invalid_upstream",
        /// A sweep or write task of function discovery ended abnormally; its work is retried.
        LambdaTaskFailed => "lambda_task_failed",
        /// The API server refused an Event (403: Gloo's chart grants no Events); it is in the
        /// log, and discovery goes on.
        EventForbidden => "event_forbidden",
        /// Gloo's Settings object has a discovery field that cannot be used; the last good
        /// configuration is kept.
        BadSettings => "bad_settings",
        /// Gloo's Settings object cannot be read (forbidden, or an API error); the daemon runs
        /// on its flags (or the last Settings it read) meanwhile.
        SettingsUnreadable => "settings_unreadable",
        /// `--reference-grants` is on but the API server has no ReferenceGrant CRD
        /// (`gateway.networking.k8s.io/v1beta1`): no grant is kept; Upstreams are unaffected.
        ReferenceGrantCrdMissing => "reference_grant_crd_missing",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_distinct_and_in_their_style() {
        fn distinct(texts: Vec<&str>) {
            let mut sorted = texts.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), texts.len(), "{texts:?}");
        }
        distinct(EventReason::ALL.iter().map(|r| r.as_str()).collect());
        distinct(SkipReason::ALL.iter().map(|r| r.as_str()).collect());
        distinct(ErrorKind::ALL.iter().map(|r| r.as_str()).collect());
        for reason in EventReason::ALL {
            assert!(reason.as_str().starts_with(char::is_uppercase), "{reason}");
        }
        for text in SkipReason::ALL
            .iter()
            .map(|r| r.as_str())
            .chain(ErrorKind::ALL.iter().map(|r| r.as_str()))
        {
            assert!(
                text.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{text}"
            );
        }
    }
}
