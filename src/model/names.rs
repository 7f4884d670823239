//! Names shared across parts: the ownership marker, field managers, labels and annotations.

use std::collections::BTreeMap;

/// The label Gloo's discovery puts on the Upstreams it writes; it is our ownership marker.
pub const DISCOVERED_BY_LABEL: &str = "discovered_by";
/// The value of [`DISCOVERED_BY_LABEL`] for Upstreams discovered from Kubernetes Services.
pub const KUBERNETES_PLUGIN: &str = "kubernetesplugin";

/// Field manager of every write of service discovery.
pub const FIELD_MANAGER: &str = "upstream-discovery";
/// Field manager of function discovery's writes: it owns `spec.aws.lambdaFunctions` only.
pub const LAMBDA_FIELD_MANAGER: &str = "upstream-discovery-lambda";
/// The field manager the API server records for Gloo's own discovery pod: client-go sends no
/// `fieldManager`, so the server takes the user agent's first word, the binary's name.
pub const GLOO_DISCOVERY_MANAGER: &str = "discovery";
/// The managers whose fields of an owned Upstream were produced by discovery: ours, and Gloo's
/// on an Upstream adopted from it. Such a field the Service no longer gives is removed.
pub const DISCOVERY_MANAGERS: [&str; 2] = [FIELD_MANAGER, GLOO_DISCOVERY_MANAGER];

/// kubectl's copy of the whole object: never copied from a Service to its Upstreams.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Gloo's opt-in/opt-out label of function discovery, on Upstreams and namespaces.
pub const FUNCTION_DISCOVERY_LABEL: &str = "discovery.solo.io/function_discovery";
/// Ours: a regular expression narrowing one Upstream's function list.
pub const FUNCTION_FILTER_ANNOTATION: &str = "upstream-discovery.io/lambda-function-filter";

/// The ownership rule: an Upstream is ours exactly when it carries the label; one without it
/// is never written or deleted, whatever its name.
pub fn is_owned(labels: Option<&BTreeMap<String, String>>) -> bool {
    labels
        .and_then(|labels| labels.get(DISCOVERED_BY_LABEL))
        .map(String::as_str)
        == Some(KUBERNETES_PLUGIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_discovery_label_makes_an_upstream_ours() {
        let labels =
            |value: &str| BTreeMap::from([(DISCOVERED_BY_LABEL.to_string(), value.to_string())]);
        assert!(is_owned(Some(&labels(KUBERNETES_PLUGIN))));
        assert!(!is_owned(Some(&labels("awsplugin"))));
        assert!(!is_owned(Some(&BTreeMap::new())));
        assert!(!is_owned(None));
    }
}
