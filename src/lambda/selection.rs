//! Which Upstreams get function discovery (DESIGN.md §2, Gloo's `fdsMode`): pure rules.

use clap::ValueEnum;

/// Function discovery mode, as Gloo's `discovery.fdsMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum FdsMode {
    /// Gloo's default. For AWS Upstreams it behaves as BLACKLIST, as in Gloo.
    #[default]
    #[value(name = "WHITELIST")]
    Whitelist,
    /// Every Upstream unless it or its namespace is labelled
    /// `discovery.solo.io/function_discovery=disabled`.
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
/// Upstream and on its namespace. For AWS Upstreams Gloo treats WHITELIST as BLACKLIST (the
/// user asked for the Upstream by writing it), so both modes select every Upstream that is
/// not opted out, and an Upstream's `enabled` does not override its namespace's `disabled`.
pub fn discovers(
    mode: FdsMode,
    upstream_label: Option<&str>,
    namespace: &str,
    namespace_label: Option<&str>,
) -> bool {
    if mode == FdsMode::Disabled || upstream_label == Some(DISABLED) {
        return false;
    }
    match namespace_label {
        Some(DISABLED) => false,
        Some(ENABLED) => true,
        _ => !OPTED_OUT_BY_DEFAULT.contains(&namespace),
    }
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
                !discovers(mode, Some("enabled"), "default", Some("disabled")),
                "a disabled namespace wins over the Upstream's label, as in Gloo"
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
                assert!(!discovers(mode, Some("enabled"), namespace, None));
                assert!(discovers(mode, None, namespace, Some("enabled")));
            }
            assert!(discovers(mode, None, "kube-node-lease", None));
        }
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
