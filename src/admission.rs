//! Writes refused by admission control rather than by RBAC. Both can answer 403, but they send
//! an operator to different places (a webhook's or policy's rules, not a Role), so a refusal is
//! told apart by the API server's Status message, whose shapes are fixed by the API server:
//!
//! - a webhook's verdict: `admission webhook "NAME" denied the request: MESSAGE` (or `... denied
//!   the request without explanation`), with the webhook's code (400 when it gives none);
//! - a ValidatingAdmissionPolicy's: `... ValidatingAdmissionPolicy 'NAME' with binding
//!   'BINDING' denied request: MESSAGE` (403 or 422, after the object's name);
//! - no verdict, with `failurePolicy: Fail`: `... failed calling webhook "NAME": REASON` (a 500
//!   InternalError), when the webhook is down, times out or answers nonsense.

use crate::model::{ErrorKind, EventReason, UpstreamKey};

/// A write of an Upstream that admission control refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedWrite {
    pub upstream: UpstreamKey,
    /// The Upstream's uid when it exists (an update or a delete): its Event goes on it; a
    /// refused create's goes on the Service.
    pub uid: Option<String>,
    pub refusal: Refusal,
}

/// Who refused a write and what they said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// [`ErrorKind::AdmissionDenied`] or [`ErrorKind::AdmissionUnavailable`].
    pub kind: ErrorKind,
    /// The webhook's or the policy's name (for the Event and the log, never a metric label).
    pub by: String,
    /// The API server's message, word for word.
    pub message: String,
}

impl Refusal {
    /// The refusal a Status message describes, if it is one of admission control's.
    pub fn from_message(message: &str) -> Option<Self> {
        let found = |kind, by: &str| {
            Some(Self {
                kind,
                by: by.to_string(),
                message: message.to_string(),
            })
        };
        if let Some((name, rest)) = quoted_after(message, "admission webhook \"", '"') {
            if rest.starts_with(" denied the request") {
                return found(ErrorKind::AdmissionDenied, name);
            }
        }
        if let Some((name, rest)) = quoted_after(message, "ValidatingAdmissionPolicy '", '\'') {
            if rest.starts_with(" with binding '") && rest.contains("' denied request") {
                return found(ErrorKind::AdmissionDenied, name);
            }
        }
        if let Some((name, _)) = quoted_after(message, "failed calling webhook \"", '"') {
            return found(ErrorKind::AdmissionUnavailable, name);
        }
        None
    }

    /// The refusal an API error is, if admission control's.
    pub fn from_error(error: &kube::Error) -> Option<Self> {
        match error {
            kube::Error::Api(status) => Self::from_message(&status.message),
            _ => None,
        }
    }

    /// The reason of the Warning Event that reports it.
    pub fn event_reason(&self) -> EventReason {
        if self.kind == ErrorKind::AdmissionUnavailable {
            EventReason::AdmissionUnavailable
        } else {
            EventReason::AdmissionDenied
        }
    }

    /// "admission webhook \"NAME\"" or "ValidatingAdmissionPolicy 'NAME'", as the message names it.
    pub fn by_what(&self) -> String {
        if self.message.contains("ValidatingAdmissionPolicy '") {
            format!("ValidatingAdmissionPolicy '{}'", self.by)
        } else {
            format!("admission webhook \"{}\"", self.by)
        }
    }
}

/// The non-empty text between `opening` and the next `close`, and what follows `close`.
fn quoted_after<'a>(message: &'a str, opening: &str, close: char) -> Option<(&'a str, &'a str)> {
    let start = message.find(opening)? + opening.len();
    let rest = &message[start..];
    let end = rest.find(close)?;
    let name = &rest[..end];
    (!name.is_empty()).then_some((name, &rest[end + close.len_utf8()..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_and_name(message: &str) -> Option<(ErrorKind, String)> {
        Refusal::from_message(message).map(|r| (r.kind, r.by))
    }

    #[test]
    fn a_webhooks_verdict_is_a_denial() {
        let message = "admission webhook \"upstreams.example.com\" denied the request: deletes of Upstreams are frozen";
        let refusal = Refusal::from_message(message).expect("a refusal");
        assert_eq!(refusal.kind, ErrorKind::AdmissionDenied);
        assert_eq!(refusal.by, "upstreams.example.com");
        assert_eq!(refusal.message, message, "word for word");
        assert_eq!(
            refusal.by_what(),
            "admission webhook \"upstreams.example.com\""
        );
        assert_eq!(
            kind_and_name(
                "admission webhook \"w.example.com\" denied the request without explanation"
            ),
            Some((ErrorKind::AdmissionDenied, "w.example.com".into()))
        );
    }

    #[test]
    fn a_policys_verdict_is_a_denial() {
        let message = "upstreams.gloo.solo.io \"shop-web-80\" is forbidden: ValidatingAdmissionPolicy 'no-http' with binding 'no-http-binding' denied request: failed expression: object.spec.kube.servicePort != 80";
        let refusal = Refusal::from_message(message).expect("a refusal");
        assert_eq!(refusal.kind, ErrorKind::AdmissionDenied);
        assert_eq!(refusal.by, "no-http");
        assert_eq!(refusal.by_what(), "ValidatingAdmissionPolicy 'no-http'");
    }

    #[test]
    fn a_webhook_that_cannot_be_called_is_unavailable() {
        for message in [
            "Internal error occurred: failed calling webhook \"w.example.com\": Post \"https://127.0.0.1:9443/validate?timeout=2s\": context deadline exceeded",
            "Internal error occurred: failed calling webhook \"w.example.com\": failed to call webhook: Post \"https://127.0.0.1:9443/validate?timeout=2s\": dial tcp 127.0.0.1:9443: connect: connection refused",
        ] {
            assert_eq!(
                kind_and_name(message),
                Some((ErrorKind::AdmissionUnavailable, "w.example.com".into()))
            );
        }
    }

    #[test]
    fn rbac_and_other_errors_are_not_admissions() {
        for message in [
            "upstreams.gloo.solo.io \"a\" is forbidden: User \"system:serviceaccount:x:y\" cannot delete resource \"upstreams\" in API group \"gloo.solo.io\" in the namespace \"x\"",
            "Upstream.gloo.solo.io \"a\" is invalid: spec.kube.servicePort: Invalid value",
            "admission webhook \"\" denied the request: no name",
            "admission webhook \"w\" said something else",
            "",
        ] {
            assert_eq!(kind_and_name(message), None, "{message}");
        }
    }
}
