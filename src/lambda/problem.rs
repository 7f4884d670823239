//! What can keep an aws Upstream's function list from being current, as values: each problem
//! knows the Event reason it is reported under and the counter it bumps, so the loop only
//! carries out what the state decided. Pure.

use crate::model::{ErrorKind, EventReason, SecretKey, SkipReason, FUNCTION_FILTER_ANNOTATION};

/// Why a sweep failed. Messages come from AWS or the SDK and never hold credential values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SweepError {
    #[error("AWS throttled {operation} ({code}); backing off")]
    Throttled {
        operation: &'static str,
        code: String,
    },
    #[error("AWS refused the credentials for {operation} ({code}): {message}")]
    CredentialsRefused {
        operation: &'static str,
        code: String,
        message: String,
    },
    #[error("no AWS credentials: {0}")]
    NoCredentials(String),
    #[error("{operation} failed: {message}")]
    Api {
        operation: &'static str,
        message: String,
    },
}

impl SweepError {
    /// Counted once per failed sweep.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SweepError::Throttled { .. } => ErrorKind::LambdaThrottled,
            SweepError::CredentialsRefused { .. } => ErrorKind::LambdaCredentialsRefused,
            SweepError::NoCredentials(_) => ErrorKind::LambdaNoCredentials,
            SweepError::Api { .. } => ErrorKind::LambdaApiError,
        }
    }

    /// For the Warning Event on the Upstreams that share the sweep.
    pub fn reason(&self) -> EventReason {
        match self {
            SweepError::Throttled { .. } => EventReason::LambdaThrottled,
            SweepError::CredentialsRefused { .. } | SweepError::NoCredentials(_) => {
                EventReason::LambdaCredentialsRefused
            }
            SweepError::Api { .. } => EventReason::LambdaDiscoveryFailed,
        }
    }
}

/// Why an Upstream's list cannot be kept current right now; reported once per change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// `spec.aws.region` is not set and the SDK's region chain gives none either.
    NoRegion,
    SecretMissing(SecretKey),
    SecretKeysMissing {
        secret: SecretKey,
        missing: Vec<&'static str>,
    },
    /// Its watch fails (e.g. no RBAC to read it).
    SecretUnreadable {
        secret: SecretKey,
        error: String,
    },
    /// The shared sweep failed (counted per failure by the loop, not per Upstream).
    SweepFailed(SweepError),
    /// The function filter annotation is not a regular expression.
    InvalidFilter(String),
    /// More functions than `--lambda-max-functions`.
    Capped {
        left_out: usize,
        kept: usize,
        cap: usize,
    },
}

/// A counter bumped once when a problem is first reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    Error(ErrorKind),
    Skipped(SkipReason),
}

impl Problem {
    pub fn event_reason(&self) -> EventReason {
        match self {
            Problem::NoRegion => EventReason::InvalidAwsUpstream,
            Problem::SecretMissing(_)
            | Problem::SecretKeysMissing { .. }
            | Problem::SecretUnreadable { .. } => EventReason::LambdaCredentialsMissing,
            Problem::SweepFailed(error) => error.reason(),
            Problem::InvalidFilter(_) => EventReason::InvalidAnnotation,
            Problem::Capped { .. } => EventReason::LambdaFunctionsCapped,
        }
    }

    /// The counter of a newly reported problem; `None` for failed sweeps, which are counted
    /// per failure.
    pub fn counter(&self) -> Option<Counter> {
        match self {
            Problem::NoRegion => Some(Counter::Error(ErrorKind::LambdaInvalidUpstream)),
            Problem::SecretMissing(_)
            | Problem::SecretKeysMissing { .. }
            | Problem::SecretUnreadable { .. } => {
                Some(Counter::Error(ErrorKind::LambdaCredentialsMissing))
            }
            Problem::SweepFailed(_) => None,
            Problem::InvalidFilter(_) => Some(Counter::Skipped(SkipReason::InvalidFunctionFilter)),
            Problem::Capped { .. } => Some(Counter::Skipped(SkipReason::LambdaFunctionsCapped)),
        }
    }

    /// Whether its end is worth a Normal Event: a capped list is still written, so no.
    pub fn recovery_is_news(&self) -> bool {
        !matches!(self, Problem::Capped { .. })
    }

    /// The Event's text; never a credential value.
    pub fn note(&self) -> String {
        const LEFT: &str = "lambdaFunctions left as they are";
        match self {
            Problem::NoRegion => "spec.aws.region is not set and the SDK has no region (AWS_REGION, profile or instance metadata); functions cannot be listed".into(),
            Problem::SecretMissing(secret) => format!(
                "the Secret {secret} named by spec.aws.secretRef does not exist; {LEFT}"
            ),
            Problem::SecretKeysMissing { secret, missing } => {
                format!("the Secret {secret} has no {}; {LEFT}", missing.join(" or "))
            }
            Problem::SecretUnreadable { secret, error } => {
                format!("cannot read the Secret {secret} ({error}); {LEFT}")
            }
            Problem::SweepFailed(error) => format!("{error}; {LEFT}, retrying"),
            Problem::InvalidFilter(error) => format!(
                "{FUNCTION_FILTER_ANNOTATION} is not a valid regular expression ({error}); {LEFT}"
            ),
            Problem::Capped {
                left_out,
                kept,
                cap,
            } => format!(
                "{left_out} of {} functions left out: the list is capped at {cap} (--lambda-max-functions)",
                left_out + kept
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_problem_knows_its_event_and_counter() {
        let secret = SecretKey::new("team", "creds");
        let throttled = Problem::SweepFailed(SweepError::Throttled {
            operation: "ListFunctions",
            code: "TooManyRequestsException".into(),
        });
        let cases = [
            (
                Problem::NoRegion,
                EventReason::InvalidAwsUpstream,
                Some(Counter::Error(ErrorKind::LambdaInvalidUpstream)),
            ),
            (
                Problem::SecretMissing(secret.clone()),
                EventReason::LambdaCredentialsMissing,
                Some(Counter::Error(ErrorKind::LambdaCredentialsMissing)),
            ),
            (throttled, EventReason::LambdaThrottled, None),
            (
                Problem::InvalidFilter("x".into()),
                EventReason::InvalidAnnotation,
                Some(Counter::Skipped(SkipReason::InvalidFunctionFilter)),
            ),
            (
                Problem::Capped {
                    left_out: 1,
                    kept: 4,
                    cap: 4,
                },
                EventReason::LambdaFunctionsCapped,
                Some(Counter::Skipped(SkipReason::LambdaFunctionsCapped)),
            ),
        ];
        for (problem, reason, counter) in cases {
            assert_eq!(problem.event_reason(), reason, "{problem:?}");
            assert_eq!(problem.counter(), counter, "{problem:?}");
        }
        let capped = Problem::Capped {
            left_out: 1,
            kept: 4,
            cap: 4,
        };
        assert_eq!(
            capped.note(),
            "1 of 5 functions left out: the list is capped at 4 (--lambda-max-functions)"
        );
        assert!(!capped.recovery_is_news());
        let keys = Problem::SecretKeysMissing {
            secret,
            missing: vec!["aws_access_key_id", "aws_secret_access_key"],
        };
        assert_eq!(keys.note(), "the Secret team/creds has no aws_access_key_id or aws_secret_access_key; lambdaFunctions left as they are");
    }

    #[test]
    fn sweep_errors_map_to_kinds_and_reasons() {
        let refused = SweepError::CredentialsRefused {
            operation: "ListFunctions",
            code: "AccessDeniedException".into(),
            message: "no".into(),
        };
        assert_eq!(refused.kind(), ErrorKind::LambdaCredentialsRefused);
        assert_eq!(refused.reason(), EventReason::LambdaCredentialsRefused);
        let none = SweepError::NoCredentials("chain".into());
        assert_eq!(none.kind(), ErrorKind::LambdaNoCredentials);
        assert_eq!(none.reason(), EventReason::LambdaCredentialsRefused);
        let other = SweepError::Api {
            operation: "ListFunctions",
            message: "boom".into(),
        };
        assert_eq!(other.kind(), ErrorKind::LambdaApiError);
        assert_eq!(other.reason(), EventReason::LambdaDiscoveryFailed);
    }
}
