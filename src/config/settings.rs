//! Gloo's `Settings` object (`gloo.solo.io/v1`, kind `Settings`): the fields discovery reads,
//! checked, with Gloo's defaulting (docs/behaviour.md, "Gloo's discovery pod"). Everything else in
//! the object belongs to other Gloo components and is ignored.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as KubeLabelSelector;
use kube::core::Selector;
use serde::Deserialize;

use super::DEFAULT_WRITE_NAMESPACE;
use crate::lambda::selection::FdsMode;
use crate::selector::LabelSelector;

/// A Settings object whose discovery fields cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("spec.{path}: {message}")]
    Shape { path: String, message: String },
    #[error("spec.discovery.fdsMode: {0:?} is none of BLACKLIST, WHITELIST, DISABLED")]
    FdsMode(String),
    #[error("spec.{field}: {message}")]
    Selector { field: String, message: String },
}

/// What discovery takes from a Settings object, with Gloo's defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlooSettings {
    /// `discoveryNamespace`, `gloo-system` when empty.
    pub write_namespace: String,
    /// `watchNamespaces`; empty means all.
    pub watch_namespaces: Vec<String>,
    /// `watchNamespaceSelectors`, a namespace matching any of them; only when
    /// `watchNamespaces` is empty.
    pub namespace_selectors: Vec<LabelSelector>,
    /// `discovery.fdsMode`: WHITELIST without a `discovery` block, BLACKLIST (the proto
    /// default) with one that does not say.
    pub fds_mode: FdsMode,
    /// `discovery.udsOptions.enabled`, true when absent.
    pub uds_enabled: bool,
    /// `discovery.udsOptions.watchLabels`, as an equality selector.
    pub watch_labels: LabelSelector,
    /// `upstreamOptions.globalAnnotations`.
    pub global_annotations: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct SpecFields {
    discovery_namespace: Option<String>,
    watch_namespaces: Option<Vec<String>>,
    watch_namespace_selectors: Option<Vec<KubeLabelSelector>>,
    discovery: Option<DiscoveryFields>,
    upstream_options: Option<UpstreamOptionsFields>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DiscoveryFields {
    fds_mode: Option<serde_json::Value>,
    uds_options: Option<UdsOptionsFields>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct UdsOptionsFields {
    enabled: Option<bool>,
    watch_labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct UpstreamOptionsFields {
    global_annotations: Option<BTreeMap<String, String>>,
}

impl GlooSettings {
    /// Reads the `spec` of a Settings object (`null` or absent reads as an empty spec).
    pub fn from_spec(spec: &serde_json::Value) -> Result<Self, SettingsError> {
        let fields: SpecFields = if spec.is_null() {
            SpecFields::default()
        } else {
            serde_path_to_error::deserialize(spec).map_err(|error| SettingsError::Shape {
                path: error.path().to_string(),
                message: error.inner().to_string(),
            })?
        };
        let write_namespace = fields
            .discovery_namespace
            .filter(|namespace| !namespace.is_empty())
            .unwrap_or_else(|| DEFAULT_WRITE_NAMESPACE.to_string());
        let watch_namespaces: Vec<String> = fields
            .watch_namespaces
            .unwrap_or_default()
            .into_iter()
            .filter(|namespace| !namespace.is_empty())
            .collect();
        let namespace_selectors = if watch_namespaces.is_empty() {
            fields
                .watch_namespace_selectors
                .unwrap_or_default()
                .into_iter()
                .enumerate()
                .map(|(index, selector)| {
                    to_selector(selector, &format!("watchNamespaceSelectors[{index}]"))
                })
                .collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        let (fds_mode, uds) = match fields.discovery {
            None => (FdsMode::Whitelist, UdsOptionsFields::default()),
            Some(discovery) => (
                fds_mode(discovery.fds_mode.as_ref())?,
                discovery.uds_options.unwrap_or_default(),
            ),
        };
        let watch_labels = equality_selector(&uds.watch_labels.unwrap_or_default())?;
        Ok(Self {
            write_namespace,
            watch_namespaces,
            namespace_selectors,
            fds_mode,
            uds_enabled: uds.enabled.unwrap_or(true),
            watch_labels,
            global_annotations: fields
                .upstream_options
                .and_then(|options| options.global_annotations)
                .unwrap_or_default(),
        })
    }
}

/// Gloo's proto enum, written as its name or (as protojson also accepts) its number.
fn fds_mode(value: Option<&serde_json::Value>) -> Result<FdsMode, SettingsError> {
    use serde_json::Value;
    match value {
        None | Some(Value::Null) => Ok(FdsMode::Blacklist),
        Some(Value::String(name)) => match name.as_str() {
            "BLACKLIST" => Ok(FdsMode::Blacklist),
            "WHITELIST" => Ok(FdsMode::Whitelist),
            "DISABLED" => Ok(FdsMode::Disabled),
            _ => Err(SettingsError::FdsMode(name.clone())),
        },
        Some(Value::Number(number)) => match number.as_u64() {
            Some(0) => Ok(FdsMode::Blacklist),
            Some(1) => Ok(FdsMode::Whitelist),
            Some(2) => Ok(FdsMode::Disabled),
            _ => Err(SettingsError::FdsMode(number.to_string())),
        },
        Some(other) => Err(SettingsError::FdsMode(other.to_string())),
    }
}

fn equality_selector(labels: &BTreeMap<String, String>) -> Result<LabelSelector, SettingsError> {
    let text = labels
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",");
    text.parse().map_err(|error| SettingsError::Selector {
        field: "discovery.udsOptions.watchLabels".to_string(),
        message: format!("{error}"),
    })
}

fn to_selector(selector: KubeLabelSelector, field: &str) -> Result<LabelSelector, SettingsError> {
    let fail = |message: String| SettingsError::Selector {
        field: field.to_string(),
        message,
    };
    // kube writes the selector in its string form, which our parser reads back, so a selector
    // from Settings and one from a flag are the same thing from here on.
    let parsed = Selector::try_from(selector).map_err(|error| fail(error.to_string()))?;
    parsed
        .to_string()
        .parse()
        .map_err(|error: crate::selector::SelectorError| fail(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(spec: serde_json::Value) -> GlooSettings {
        GlooSettings::from_spec(&spec).expect("valid Settings")
    }

    #[test]
    fn no_discovery_block_means_whitelist_and_uds_on() {
        let settings = read(json!({}));
        assert_eq!(settings.fds_mode, FdsMode::Whitelist);
        assert!(settings.uds_enabled);
        assert_eq!(settings.write_namespace, "gloo-system");
        assert!(settings.watch_namespaces.is_empty());
        assert!(settings.watch_labels.selects_all());
        assert!(settings.global_annotations.is_empty());
        assert_eq!(read(serde_json::Value::Null), settings);
    }

    #[test]
    fn a_discovery_block_without_fds_mode_means_blacklist() {
        let settings = read(json!({"discovery": {"udsOptions": {"watchLabels": {"a": "b"}}}}));
        assert_eq!(settings.fds_mode, FdsMode::Blacklist);
        assert!(settings.uds_enabled, "udsOptions.enabled absent: on");
        let settings = read(json!({"discovery": {}}));
        assert_eq!(settings.fds_mode, FdsMode::Blacklist);
    }

    #[test]
    fn fds_mode_by_name_or_number() {
        for (given, mode) in [
            (json!("BLACKLIST"), FdsMode::Blacklist),
            (json!("WHITELIST"), FdsMode::Whitelist),
            (json!("DISABLED"), FdsMode::Disabled),
            (json!(0), FdsMode::Blacklist),
            (json!(1), FdsMode::Whitelist),
            (json!(2), FdsMode::Disabled),
        ] {
            assert_eq!(
                read(json!({"discovery": {"fdsMode": given}})).fds_mode,
                mode
            );
        }
    }

    #[test]
    fn the_discovery_fields_are_read() {
        let settings = read(json!({
            "discoveryNamespace": "edge",
            "watchNamespaces": ["a", "", "b"],
            "discovery": {
                "fdsMode": "DISABLED",
                "udsOptions": {"enabled": false, "watchLabels": {"team": "x", "discover": "yes"}}
            },
            "upstreamOptions": {"globalAnnotations": {"gloo.solo.io/h2_service": "true"}},
            "gateway": {"validation": {"alwaysAccept": true}},
        }));
        assert_eq!(settings.write_namespace, "edge");
        assert_eq!(settings.watch_namespaces, ["a", "b"]);
        assert_eq!(settings.fds_mode, FdsMode::Disabled);
        assert!(!settings.uds_enabled);
        assert_eq!(settings.watch_labels.as_str(), "discover=yes,team=x");
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(settings.watch_labels.matches(&labels(&[
            ("team", "x"),
            ("discover", "yes"),
            ("z", "1")
        ])));
        assert!(!settings.watch_labels.matches(&labels(&[("team", "x")])));
        assert_eq!(
            settings.global_annotations,
            labels(&[("gloo.solo.io/h2_service", "true")])
        );
    }

    #[test]
    fn namespace_selectors_only_without_listed_namespaces() {
        let selectors = json!([
            {"matchLabels": {"team": "edge"}},
            {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}
        ]);
        let settings = read(json!({"watchNamespaceSelectors": selectors}));
        let texts: Vec<&str> = settings
            .namespace_selectors
            .iter()
            .map(LabelSelector::as_str)
            .collect();
        assert_eq!(texts, ["team=edge", "tier in (a,b)"]);
        let listed = read(json!({"watchNamespaces": ["a"], "watchNamespaceSelectors": selectors}));
        assert!(listed.namespace_selectors.is_empty());
    }

    #[test]
    fn bad_fields_are_refused_with_their_path() {
        let cases = [
            (
                json!({"discovery": {"fdsMode": "NOPE"}}),
                "spec.discovery.fdsMode: \"NOPE\" is none of BLACKLIST, WHITELIST, DISABLED",
            ),
            (
                json!({"discovery": {"fdsMode": 7}}),
                "spec.discovery.fdsMode",
            ),
            (
                json!({"discovery": {"udsOptions": {"watchLabels": {"a": 1}}}}),
                "spec.discovery.udsOptions.watchLabels.a",
            ),
            (json!({"watchNamespaces": "a"}), "spec.watchNamespaces"),
            (
                json!({"discovery": {"udsOptions": {"enabled": "yes"}}}),
                "spec.discovery.udsOptions.enabled",
            ),
            (
                json!({"discovery": {"udsOptions": {"watchLabels": {"bad key!": "x"}}}}),
                "spec.discovery.udsOptions.watchLabels",
            ),
            (
                json!({"watchNamespaceSelectors": [{"matchExpressions": [{"key": "a", "operator": "Near"}]}]}),
                "spec.watchNamespaceSelectors[0]",
            ),
        ];
        for (spec, expected) in cases {
            let error = GlooSettings::from_spec(&spec)
                .expect_err(&format!("{spec} is refused"))
                .to_string();
            assert!(error.starts_with(expected), "{spec}: {error}");
        }
    }
}
