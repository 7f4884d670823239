//! What function discovery keeps of an Upstream with `spec.aws`, and the credentials it names:
//! pure.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use super::selection::upstream_label;
use crate::crd::{LambdaFunction, Upstream};
pub use crate::credentials::{keys_from_secret, SecretSeen, StaticKeys};
use crate::model::{SecretKey, UpstreamKey, FUNCTION_FILTER_ANNOTATION};

/// The variables EKS sets for IRSA; with both set, Gloo lists every Upstream's functions with
/// the web identity token.
pub const WEB_IDENTITY_TOKEN_FILE: &str = "AWS_WEB_IDENTITY_TOKEN_FILE";
pub const ROLE_ARN: &str = "AWS_ROLE_ARN";

/// An Upstream with `spec.aws`, trimmed to what function discovery reads.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsTarget {
    pub key: UpstreamKey,
    pub uid: String,
    pub resource_version: String,
    /// The value of `discovery.solo.io/function_discovery` on the Upstream: from
    /// `spec.discoveryMetadata.labels`, else from `metadata.labels`.
    pub discovery_label: Option<String>,
    /// The function-name filter annotation, as written.
    pub filter: Option<String>,
    /// `spec.aws.region`; `None` (also when empty) means the SDK's region chain.
    pub region: Option<String>,
    pub secret: Option<SecretKey>,
    /// `spec.aws.roleArn`: only used in IRSA mode.
    pub role_arn: Option<String>,
    /// `spec.aws.lambdaFunctions` as stored.
    pub functions: Option<Vec<LambdaFunction>>,
}

impl AwsTarget {
    /// `None` for an Upstream without `spec.aws` (or without name, namespace or uid).
    pub fn from_upstream(upstream: &Upstream) -> Option<Self> {
        let aws = upstream.spec.aws.as_ref()?;
        let meta = &upstream.metadata;
        let key = UpstreamKey::of(meta)?;
        let secret = aws.secret_ref.as_ref().map(|r| {
            // Gloo requires the namespace; an empty one most likely means "beside the Upstream".
            let namespace = if r.namespace.is_empty() {
                key.namespace.clone()
            } else {
                r.namespace.as_str().into()
            };
            SecretKey::new(namespace, r.name.as_str())
        });
        Some(Self {
            uid: meta.uid.clone()?,
            resource_version: meta.resource_version.clone().unwrap_or_default(),
            discovery_label: upstream_label(
                upstream
                    .spec
                    .discovery_metadata
                    .as_ref()
                    .and_then(|d| d.labels.as_ref()),
                meta.labels.as_ref(),
            )
            .map(str::to_string),
            filter: label(meta.annotations.as_ref(), FUNCTION_FILTER_ANNOTATION),
            region: aws.region.clone().filter(|r| !r.is_empty()),
            secret,
            role_arn: aws.role_arn.clone().filter(|r| !r.is_empty()),
            functions: aws.lambda_functions.clone(),
            key,
        })
    }
}

fn label(map: Option<&BTreeMap<String, String>>, key: &str) -> Option<String> {
    map.and_then(|m| m.get(key)).cloned()
}

/// The pod's web identity (IRSA): `AWS_WEB_IDENTITY_TOKEN_FILE` and `AWS_ROLE_ARN`, both set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WebIdentity {
    pub token_file: PathBuf,
    pub role_arn: String,
}

impl WebIdentity {
    /// IRSA mode, as Gloo decides it: both variables set and not empty. `lookup` reads one
    /// environment variable.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let value = |name: &str| lookup(name).filter(|v| !v.is_empty());
        Some(Self {
            token_file: PathBuf::from(value(WEB_IDENTITY_TOKEN_FILE)?),
            role_arn: value(ROLE_ARN)?,
        })
    }
}

/// Where a sweep's credentials come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CredentialSource {
    /// The SDK's default chain: environment, web identity token, instance role.
    DefaultChain,
    /// Keys from a Secret; two Secrets with the same keys share sweeps.
    Static(StaticKeys),
    /// IRSA mode: the pod's token exchanged for `role_arn` (the Upstream's `roleArn`, else
    /// `AWS_ROLE_ARN`), whatever else the Upstream names.
    WebIdentity {
        token_file: PathBuf,
        role_arn: String,
    },
}

impl CredentialSource {
    /// The credentials of an Upstream, as Gloo chooses them: in IRSA mode (`web_identity`) the
    /// pod's token for the Upstream's `role_arn` or the pod's role, even when it names a
    /// Secret (whose keys are then unused); otherwise the Secret's `keys`, or the default
    /// chain. Outside IRSA mode `role_arn` plays no part.
    pub fn choose(
        web_identity: Option<&WebIdentity>,
        role_arn: Option<&str>,
        keys: Option<&StaticKeys>,
    ) -> Self {
        match (web_identity, keys) {
            (Some(pod), _) => CredentialSource::WebIdentity {
                token_file: pod.token_file.clone(),
                role_arn: role_arn.unwrap_or(&pod.role_arn).to_string(),
            },
            (None, Some(keys)) => CredentialSource::Static(keys.clone()),
            (None, None) => CredentialSource::DefaultChain,
        }
    }
}

/// One ListFunctions sweep is made per distinct key and shared by every Upstream that has it.
/// Ordered only so that sweeps are started in a stable order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SweepKey {
    pub credentials: CredentialSource,
    pub region: String,
}

impl SweepKey {
    /// A short label for logs: region, role and the kind of credentials, never their values.
    pub fn describe(&self) -> String {
        match &self.credentials {
            CredentialSource::DefaultChain => format!("{} (default chain)", self.region),
            CredentialSource::Static(keys) => format!("{} ({keys:?})", self.region),
            CredentialSource::WebIdentity { role_arn, .. } => {
                format!("{} as {role_arn} (web identity)", self.region)
            }
        }
    }

    /// The role whose account the calls count against, when known without asking STS.
    pub fn role_arn(&self) -> Option<&str> {
        match &self.credentials {
            CredentialSource::WebIdentity { role_arn, .. } => Some(role_arn),
            _ => None,
        }
    }

    /// A stable number for this key within the process (no credential value in it).
    pub fn fingerprint(&self) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut hasher);
        hasher.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{AwsUpstream, ResourceRef, UpstreamSpec};

    fn upstream(aws: Option<AwsUpstream>) -> Upstream {
        let mut upstream = Upstream::new(
            "fns",
            UpstreamSpec {
                aws,
                ..Default::default()
            },
        );
        upstream.metadata.namespace = Some("team".into());
        upstream.metadata.uid = Some("u1".into());
        upstream.metadata.resource_version = Some("7".into());
        upstream
    }

    #[test]
    fn only_aws_upstreams_are_targets() {
        assert_eq!(AwsTarget::from_upstream(&upstream(None)), None);
        let target = AwsTarget::from_upstream(&upstream(Some(AwsUpstream {
            region: Some("eu-west-1".into()),
            secret_ref: Some(ResourceRef {
                name: "aws".into(),
                namespace: String::new(),
            }),
            role_arn: Some(String::new()),
            ..Default::default()
        })))
        .expect("an aws Upstream");
        assert_eq!(target.key.to_string(), "team/fns");
        assert_eq!(target.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            target.secret,
            Some(SecretKey::new("team", "aws")),
            "an empty namespace means the Upstream's own"
        );
        assert_eq!(target.role_arn, None, "an empty role is no role");
        assert_eq!(target.resource_version, "7");
    }

    #[test]
    fn credentials_never_show_in_debug_or_descriptions() {
        let keys = StaticKeys {
            access_key_id: "AKIDEXAMPLE1234".into(),
            secret_access_key: "very-secret".into(),
            session_token: Some("token-value".into()),
        };
        let key = SweepKey {
            credentials: CredentialSource::Static(keys.clone()),
            region: "eu-west-1".into(),
        };
        for text in [format!("{keys:?}"), format!("{key:?}"), key.describe()] {
            assert!(!text.contains("very-secret"), "{text}");
            assert!(!text.contains("token-value"), "{text}");
            assert!(!text.contains("AKIDEXAMPLE"), "{text}");
        }
        assert!(key.describe().contains("1234"));
    }

    #[test]
    fn irsa_mode_needs_both_variables() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            WebIdentity::from_lookup(env(&[
                ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/token"),
                ("AWS_ROLE_ARN", "arn:aws:iam::111111111111:role/pod"),
            ])),
            Some(WebIdentity {
                token_file: "/var/run/token".into(),
                role_arn: "arn:aws:iam::111111111111:role/pod".into(),
            })
        );
        for partial in [
            &[("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/token")][..],
            &[("AWS_ROLE_ARN", "arn:aws:iam::111111111111:role/pod")],
            &[
                ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/token"),
                ("AWS_ROLE_ARN", ""),
            ],
            &[],
        ] {
            assert_eq!(WebIdentity::from_lookup(env(partial)), None, "{partial:?}");
        }
    }

    #[test]
    fn credentials_are_chosen_as_gloo_does() {
        let pod = WebIdentity {
            token_file: "/var/run/token".into(),
            role_arn: "arn:aws:iam::111111111111:role/pod".into(),
        };
        let keys = StaticKeys {
            access_key_id: "AKIDEXAMPLE1234".into(),
            secret_access_key: "s".into(),
            session_token: None,
        };
        let upstream_role = Some("arn:aws:iam::222222222222:role/upstream");
        let web = |role: &str| CredentialSource::WebIdentity {
            token_file: "/var/run/token".into(),
            role_arn: role.into(),
        };
        // IRSA mode: the token always, for the Upstream's role, else the pod's; keys unused.
        assert_eq!(
            CredentialSource::choose(Some(&pod), upstream_role, Some(&keys)),
            web("arn:aws:iam::222222222222:role/upstream")
        );
        assert_eq!(
            CredentialSource::choose(Some(&pod), None, Some(&keys)),
            web("arn:aws:iam::111111111111:role/pod")
        );
        assert_eq!(
            CredentialSource::choose(Some(&pod), upstream_role, None),
            web("arn:aws:iam::222222222222:role/upstream")
        );
        assert_eq!(
            CredentialSource::choose(Some(&pod), None, None),
            web("arn:aws:iam::111111111111:role/pod")
        );
        // Outside IRSA mode the role is ignored.
        assert_eq!(
            CredentialSource::choose(None, upstream_role, Some(&keys)),
            CredentialSource::Static(keys.clone())
        );
        assert_eq!(
            CredentialSource::choose(None, upstream_role, None),
            CredentialSource::DefaultChain
        );
    }
}
