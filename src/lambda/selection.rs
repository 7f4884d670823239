//! Which Upstreams get function discovery (docs/behaviour.md, Gloo's `fdsMode`): pure rules.

use std::collections::BTreeMap;

use clap::ValueEnum;

use crate::model::FUNCTION_DISCOVERY_LABEL;

/// Function discovery mode, as Gloo's `discovery.fdsMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum FdsMode {
    /// Gloo's default. For AWS Upstreams it behaves as BLACKLIST, as in Gloo.
    #[default]
    #[value(name = "WHITELIST")]
    Whitelist,
    /// Every Upstream not labelled `discovery.solo.io/function_discovery=disabled`, unless
    /// its namespace is disabled and it is not labelled `enabled` itself.
    #[value(name = "BLACKLIST")]
    Blacklist,
    /// No function discovery at all.
    #[value(name = "DISABLED")]
    Disabled,
}

const ENABLED: &str = "enabled";
const DISABLED: &str = "disabled";

/// Namespaces that count as disabled unless labelled `enabled`, as in Gloo.
const OPTED_OUT_BY_DEFAULT: [&str; 2] = ["kube-system", "kube-public"];

/// Whether an AWS Upstream gets function discovery.
///
/// `upstream_label` and `namespace_label` are the values of
/// [`FUNCTION_DISCOVERY_LABEL`](crate::model::FUNCTION_DISCOVERY_LABEL) on the
/// Upstream (see [`upstream_label`]) and on its namespace. For AWS Upstreams Gloo treats
/// WHITELIST as BLACKLIST (the user asked for the Upstream by writing it), so both modes select
/// an Upstream when its namespace is not disabled or it is labelled `enabled` itself, and it is
/// not labelled `disabled`.
pub fn discovers(
    mode: FdsMode,
    upstream_label: Option<&str>,
    namespace: &str,
    namespace_label: Option<&str>,
) -> bool {
    if mode == FdsMode::Disabled || upstream_label == Some(DISABLED) {
        return false;
    }
    !namespace_disabled(namespace, namespace_label) || upstream_label == Some(ENABLED)
}

/// A namespace labelled `disabled`, or a system namespace not labelled `enabled`.
fn namespace_disabled(namespace: &str, label: Option<&str>) -> bool {
    match label {
        Some(DISABLED) => true,
        Some(ENABLED) => false,
        _ => OPTED_OUT_BY_DEFAULT.contains(&namespace),
    }
}

/// The Upstream's function discovery label: from `spec.discoveryMetadata.labels` (where Gloo's
/// discovery copies the Service's labels), or, when that has no such key, from
/// `metadata.labels` (Upstreams written by hand).
pub fn upstream_label<'a>(
    discovery_metadata_labels: Option<&'a BTreeMap<String, String>>,
    metadata_labels: Option<&'a BTreeMap<String, String>>,
) -> Option<&'a str> {
    discovery_metadata_labels
        .and_then(|labels| labels.get(FUNCTION_DISCOVERY_LABEL))
        .or_else(|| metadata_labels.and_then(|labels| labels.get(FUNCTION_DISCOVERY_LABEL)))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODES: [FdsMode; 2] = [FdsMode::Whitelist, FdsMode::Blacklist];

    #[test]
    fn aws_upstreams_are_discovered_unless_opted_out() {
        for mode in MODES {
            assert!(discovers(mode, None, "default", None));
            assert!(discovers(mode, Some("enabled"), "default", None));
            assert!(discovers(mode, None, "default", Some("enabled")));
            assert!(!discovers(mode, Some("disabled"), "default", None));
            assert!(!discovers(mode, None, "default", Some("disabled")));
            assert!(
                discovers(mode, Some("enabled"), "default", Some("disabled")),
                "an Upstream labelled enabled is discovered in a disabled namespace"
            );
            assert!(!discovers(
                mode,
                Some("disabled"),
                "default",
                Some("enabled")
            ));
        }
    }

    #[test]
    fn system_namespaces_count_as_disabled_unless_labelled_enabled() {
        for mode in MODES {
            for namespace in ["kube-system", "kube-public"] {
                assert!(!discovers(mode, None, namespace, None));
                assert!(
                    discovers(mode, Some("enabled"), namespace, None),
                    "the Upstream's own enabled wins over the default"
                );
                assert!(!discovers(
                    mode,
                    Some("disabled"),
                    namespace,
                    Some("enabled")
                ));
                assert!(discovers(mode, None, namespace, Some("enabled")));
            }
            assert!(discovers(mode, None, "kube-node-lease", None));
        }
    }

    /// Gloo's rule: (namespace not disabled OR Upstream enabled) AND NOT Upstream disabled,
    /// for every combination of the two labels, in WHITELIST and BLACKLIST alike.
    #[test]
    fn the_whole_table_of_labels() {
        // (upstream label, namespace label, selected)
        let table = [
            (None, None, true),
            (None, Some("enabled"), true),
            (None, Some("disabled"), false),
            (Some("enabled"), None, true),
            (Some("enabled"), Some("enabled"), true),
            (Some("enabled"), Some("disabled"), true),
            (Some("disabled"), None, false),
            (Some("disabled"), Some("enabled"), false),
            (Some("disabled"), Some("disabled"), false),
        ];
        for mode in MODES {
            for (upstream, namespace, selected) in table {
                assert_eq!(
                    discovers(mode, upstream, "team", namespace),
                    selected,
                    "{mode:?}, Upstream {upstream:?}, namespace {namespace:?}"
                );
            }
        }
    }

    fn labels(value: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(FUNCTION_DISCOVERY_LABEL.to_string(), value.to_string())])
    }

    #[test]
    fn the_upstream_label_comes_from_discovery_metadata_then_metadata() {
        let enabled = labels("enabled");
        let disabled = labels("disabled");
        let other = BTreeMap::from([("team".to_string(), "x".to_string())]);
        assert_eq!(upstream_label(Some(&disabled), None), Some("disabled"));
        assert_eq!(
            upstream_label(Some(&enabled), Some(&disabled)),
            Some("enabled"),
            "discoveryMetadata first"
        );
        assert_eq!(
            upstream_label(Some(&other), Some(&disabled)),
            Some("disabled"),
            "metadata when discoveryMetadata has no such key"
        );
        assert_eq!(upstream_label(None, Some(&enabled)), Some("enabled"));
        assert_eq!(upstream_label(Some(&other), Some(&other)), None);
        assert_eq!(upstream_label(None, None), None);
    }

    #[test]
    fn disabled_mode_discovers_nothing() {
        assert!(!discovers(FdsMode::Disabled, None, "default", None));
        assert!(!discovers(
            FdsMode::Disabled,
            Some("enabled"),
            "default",
            Some("enabled")
        ));
    }

    #[test]
    fn other_label_values_change_nothing() {
        assert!(discovers(
            FdsMode::Blacklist,
            Some("maybe"),
            "default",
            Some("yes")
        ));
        assert!(!discovers(
            FdsMode::Blacklist,
            Some("Disabled"),
            "kube-system",
            None
        ));
    }
}
