//! The configuration a discovery run uses: the command line first, then Gloo's Settings for
//! what the command line left unsaid, then the defaults. Worked out again on every change of
//! Settings; [`Discovery`] values compare equal when a change would not alter the run.

use std::collections::BTreeSet;

use super::settings::GlooSettings;
use super::{RunArgs, Scopes};
use crate::lambda::selection::FdsMode;
use crate::model::Scope;
use crate::selector::LabelSelector;
use crate::translate::{TranslateSettings, WriteNamespace};

/// The flags given on the command line (clap ids), as opposed to left at their defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GivenFlags(BTreeSet<String>);

impl GivenFlags {
    /// The ids of `matches` whose value came from the command line.
    pub fn from_matches(matches: &clap::ArgMatches) -> Self {
        Self(
            matches
                .ids()
                .filter(|id| {
                    matches.value_source(id.as_str())
                        == Some(clap::parser::ValueSource::CommandLine)
                })
                .map(|id| id.as_str().to_string())
                .collect(),
        )
    }

    /// Whether the flag of field `id` (`fds_mode` for `--fds-mode`) was given.
    pub fn contains(&self, id: &str) -> bool {
        self.0.contains(id)
    }
}

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "Service discovery and function discovery are both off (udsOptions.enabled / --uds-enabled \
         false and fdsMode / --fds-mode DISABLED): there is nothing to do"
    )]
    NothingToDiscover,
}

/// Everything a discovery run depends on; a new one means the loops start over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    pub scopes: Scopes,
    pub translate: TranslateSettings,
    /// Only Services matching it give Upstreams.
    pub service_selector: LabelSelector,
    pub fds_mode: FdsMode,
    /// Service discovery on (Gloo's `udsOptions.enabled`).
    pub uds_enabled: bool,
}

impl RunArgs {
    /// These flags, with `settings` filling every discovery flag not given on the command line.
    pub fn layered(&self, settings: Option<&GlooSettings>) -> RunArgs {
        let mut args = self.clone();
        let Some(settings) = settings else {
            return args;
        };
        let given = |id: &str| self.given.contains(id);
        if !given("write_namespace") {
            args.translation.write_namespace = Some(settings.write_namespace.clone());
        }
        if !given("watch_namespaces") {
            args.watch_namespaces = settings.watch_namespaces.clone();
        }
        if !given("namespace_selector") {
            args.namespace_selector = LabelSelector::any_of(settings.namespace_selectors.clone());
        }
        if !given("service_selector") {
            args.translation.service_selector = settings.watch_labels.clone();
        }
        if !given("global_annotations") {
            args.translation.global_annotations = settings
                .global_annotations
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
        }
        if !given("fds_mode") {
            args.lambda.fds_mode = settings.fds_mode;
        }
        if !given("uds_enabled") {
            args.uds_enabled = settings.uds_enabled;
        }
        args
    }

    /// The run these flags and `settings` describe; `pod_namespace` is `$POD_NAMESPACE`.
    pub fn discovery(
        &self,
        pod_namespace: Option<&str>,
        settings: Option<&GlooSettings>,
    ) -> Result<Discovery, ConfigError> {
        let args = self.layered(settings);
        if !args.uds_enabled && args.lambda.fds_mode == FdsMode::Disabled {
            return Err(ConfigError::NothingToDiscover);
        }
        Ok(Discovery {
            scopes: args.scopes(pod_namespace),
            translate: args.translation.settings(pod_namespace),
            service_selector: args.translation.service_selector.clone(),
            fds_mode: args.lambda.fds_mode,
            uds_enabled: args.uds_enabled,
        })
    }
}

impl Scopes {
    /// Also watches the Upstreams of `namespaces`, where an earlier run wrote them, so that the
    /// owned ones there (no Service maps to them any more) are collected.
    pub fn collecting_from(mut self, namespaces: &BTreeSet<String>) -> Self {
        if self.upstreams.contains(&Scope::All) {
            return self;
        }
        self.upstreams.extend(
            namespaces
                .iter()
                .map(|namespace| Scope::Namespace(namespace.clone())),
        );
        self.upstreams.sort();
        self.upstreams.dedup();
        self
    }

    /// The namespace every Upstream is written to, if there is one.
    pub fn fixed_write_namespace(&self) -> Option<&str> {
        match &self.write_namespace {
            WriteNamespace::Fixed(namespace) => Some(namespace),
            WriteNamespace::ServiceNamespace => None,
        }
    }
}

/// `run`'s flags parsed from `words`, with the ones given recorded, for unit tests.
#[cfg(test)]
pub(crate) fn parse_run_args(words: &[&str]) -> RunArgs {
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    let matches = Cli::command()
        .try_get_matches_from(std::iter::once("test").chain(words.iter().copied()))
        .expect("valid flags");
    let mut run = Cli::from_arg_matches(&matches).expect("flags").run;
    run.given = GivenFlags::from_matches(&matches);
    run
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(args: &[&str]) -> RunArgs {
        parse_run_args(args)
    }

    fn settings(spec: serde_json::Value) -> GlooSettings {
        GlooSettings::from_spec(&spec).expect("valid Settings")
    }

    fn namespaces(scopes: &[Scope]) -> Vec<String> {
        scopes
            .iter()
            .map(|scope| match scope {
                Scope::All => "*".to_string(),
                Scope::Namespace(namespace) => namespace.clone(),
            })
            .collect()
    }

    #[test]
    fn only_flags_given_on_the_command_line_are_recorded() {
        let run = parse(&["--fds-mode", "DISABLED", "--write-namespace=edge"]);
        assert!(run.given.contains("fds_mode"));
        assert!(run.given.contains("write_namespace"));
        assert!(!run.given.contains("uds_enabled"));
        assert!(!run.given.contains("service_selector"));
    }

    #[test]
    fn settings_fill_what_the_command_line_left_unsaid() {
        let gloo = settings(json!({
            "discoveryNamespace": "gloo-edge",
            "watchNamespaces": ["team-a"],
            "discovery": {"fdsMode": "DISABLED", "udsOptions": {"watchLabels": {"discover": "yes"}}},
            "upstreamOptions": {"globalAnnotations": {"gloo.solo.io/h2_service": "true"}},
        }));
        let run = parse(&[])
            .discovery(Some("gloo-system"), Some(&gloo))
            .expect("runs");
        assert_eq!(
            run.translate.write_namespace,
            WriteNamespace::Fixed("gloo-edge".to_string())
        );
        assert_eq!(namespaces(&run.scopes.services), ["gloo-edge", "team-a"]);
        assert_eq!(namespaces(&run.scopes.upstreams), ["gloo-edge"]);
        assert_eq!(
            run.scopes.own_namespace, "gloo-system",
            "the Lease stays home"
        );
        assert_eq!(run.service_selector.as_str(), "discover=yes");
        assert_eq!(run.fds_mode, FdsMode::Disabled);
        assert!(run.uds_enabled);
        assert_eq!(
            run.translate
                .global_annotations
                .get("gloo.solo.io/h2_service"),
            Some(&"true".to_string())
        );
    }

    #[test]
    fn a_flag_given_wins_over_settings() {
        let gloo = settings(json!({
            "discoveryNamespace": "gloo-edge",
            "watchNamespaces": ["team-a"],
            "discovery": {"fdsMode": "DISABLED", "udsOptions": {"enabled": false, "watchLabels": {"a": "b"}}},
            "upstreamOptions": {"globalAnnotations": {"x": "y"}},
        }));
        let run = parse(&[
            "--write-namespace=mine",
            "--watch-namespaces=team-b",
            "--fds-mode=BLACKLIST",
            "--uds-enabled=true",
            "--service-selector=c=d",
            "--global-annotations=k=v",
        ])
        .discovery(Some("gloo-system"), Some(&gloo))
        .expect("runs");
        assert_eq!(
            run.translate.write_namespace,
            WriteNamespace::Fixed("mine".to_string())
        );
        assert_eq!(namespaces(&run.scopes.services), ["mine", "team-b"]);
        assert_eq!(run.fds_mode, FdsMode::Blacklist);
        assert!(run.uds_enabled);
        assert_eq!(run.service_selector.as_str(), "c=d");
        assert_eq!(
            run.translate.global_annotations.keys().collect::<Vec<_>>(),
            ["k"]
        );
    }

    #[test]
    fn no_settings_means_flags_and_defaults() {
        let run = parse(&[]).discovery(Some("ops"), None).expect("runs");
        assert_eq!(
            run.translate.write_namespace,
            WriteNamespace::Fixed("ops".to_string()),
            "the pod's namespace, as without Settings before"
        );
        assert_eq!(run.fds_mode, FdsMode::Whitelist);
        assert!(run.uds_enabled);
        assert_eq!(namespaces(&run.scopes.services), ["*"]);
    }

    #[test]
    fn an_empty_settings_object_means_gloo_defaults() {
        let run = parse(&[])
            .discovery(Some("ops"), Some(&settings(json!({}))))
            .expect("runs");
        assert_eq!(
            run.translate.write_namespace,
            WriteNamespace::Fixed("gloo-system".to_string()),
            "an empty discoveryNamespace is gloo-system, as in Gloo"
        );
        assert_eq!(run.fds_mode, FdsMode::Whitelist);
    }

    #[test]
    fn namespace_selectors_from_settings_select_any() {
        let gloo = settings(json!({"watchNamespaceSelectors": [
            {"matchLabels": {"team": "edge"}}, {"matchLabels": {"team": "core"}}
        ]}));
        let run = parse(&[]).discovery(None, Some(&gloo)).expect("runs");
        let labels = |team: &str| [("team".to_string(), team.to_string())].into();
        assert!(run.scopes.namespace_selector.matches(&labels("edge")));
        assert!(run.scopes.namespace_selector.matches(&labels("core")));
        assert!(!run.scopes.namespace_selector.matches(&labels("other")));
    }

    #[test]
    fn both_discoveries_off_cannot_run() {
        let error = parse(&["--uds-enabled=false", "--fds-mode=DISABLED"]).discovery(None, None);
        assert_eq!(error, Err(ConfigError::NothingToDiscover));
        let gloo = settings(
            json!({"discovery": {"fdsMode": "DISABLED", "udsOptions": {"enabled": false}}}),
        );
        assert_eq!(
            parse(&[]).discovery(None, Some(&gloo)),
            Err(ConfigError::NothingToDiscover)
        );
        assert!(
            parse(&["--uds-enabled=true"])
                .discovery(None, Some(&gloo))
                .is_ok(),
            "the flag wins"
        );
    }

    #[test]
    fn a_change_that_alters_nothing_compares_equal() {
        let before = settings(json!({"discoveryNamespace": "a", "gateway": {"x": 1}}));
        let after = settings(json!({"discoveryNamespace": "a", "gateway": {"x": 2}}));
        let run = parse(&[]);
        assert_eq!(
            run.discovery(None, Some(&before)),
            run.discovery(None, Some(&after))
        );
        let moved = settings(json!({"discoveryNamespace": "b"}));
        assert_ne!(
            run.discovery(None, Some(&before)),
            run.discovery(None, Some(&moved))
        );
    }

    #[test]
    fn a_moved_write_namespace_keeps_the_old_one_watched_for_collection() {
        let run = parse(&[])
            .discovery(None, Some(&settings(json!({"discoveryNamespace": "new"}))))
            .expect("runs");
        let scopes = run.scopes.collecting_from(&["old".to_string()].into());
        assert_eq!(namespaces(&scopes.upstreams), ["new", "old"]);
        assert_eq!(scopes.fixed_write_namespace(), Some("new"));
    }
}
