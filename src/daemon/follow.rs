//! Following Gloo's Settings while running: each update of the object either leaves the
//! running configuration as it is or gives the next one. An update that cannot be used keeps
//! the last good configuration, so a typo in Settings never stops or empties discovery.

use std::collections::BTreeSet;

use crate::config::settings::GlooSettings;
use crate::config::{Discovery, RunArgs};
use crate::metrics::Metrics;
use crate::model::ErrorKind;
use crate::source::settings::{FirstRead, SettingsUpdate};

/// What to do with an update.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing that discovery uses changed, or the update cannot be used.
    Keep,
    /// Start over with this configuration.
    Restart(Box<Discovery>),
}

/// The configuration in force and what is needed to work out the next one.
pub struct Follower {
    args: RunArgs,
    pod_namespace: Option<String>,
    metrics: Metrics,
    current: Discovery,
    /// Whether the object existed at the last update, so that its absence is said once.
    present: bool,
    /// The last read error said, so that a failing watch logs once per kind of error, not
    /// once per retry.
    last_unreadable: Option<String>,
    /// Namespaces an earlier configuration wrote to: their owned Upstreams are collected.
    earlier_write_namespaces: BTreeSet<String>,
}

impl Follower {
    /// The configuration to start with. Fails only when the flags and Settings together turn
    /// every discovery off.
    pub fn start(
        args: RunArgs,
        pod_namespace: Option<String>,
        metrics: Metrics,
        first: FirstRead,
        settings_name: &str,
        settings_namespace: &str,
    ) -> Result<Self, crate::config::ConfigError> {
        let (settings, present) = match first {
            FirstRead::Found(spec) => match GlooSettings::from_spec(&spec) {
                Ok(settings) => {
                    tracing::info!(name = settings_name, namespace = settings_namespace, "reading discovery's configuration from Gloo's Settings (flags given on the command line win)");
                    (Some(settings), true)
                }
                Err(error) => {
                    tracing::warn!(name = settings_name, namespace = settings_namespace, %error, "invalid Settings: starting from flags and defaults; fix the object and the daemon follows it");
                    metrics.error(ErrorKind::BadSettings);
                    (None, true)
                }
            },
            FirstRead::Missing => {
                tracing::info!(name = settings_name, namespace = settings_namespace, "no Settings object (or no Settings CRD): using flags and defaults; the daemon follows the object if it appears");
                (None, false)
            }
            FirstRead::Unreadable(error) => {
                tracing::warn!(name = settings_name, namespace = settings_namespace, %error, "cannot read Settings: using flags and defaults until it can be read");
                metrics.error(ErrorKind::SettingsUnreadable);
                (None, false)
            }
        };
        Self::with(args, pod_namespace, metrics, settings.as_ref(), present)
    }

    /// A configuration of flags alone (Settings not read).
    pub fn without_settings(
        args: RunArgs,
        pod_namespace: Option<String>,
        metrics: Metrics,
    ) -> Result<Self, crate::config::ConfigError> {
        Self::with(args, pod_namespace, metrics, None, false)
    }

    fn with(
        args: RunArgs,
        pod_namespace: Option<String>,
        metrics: Metrics,
        settings: Option<&GlooSettings>,
        present: bool,
    ) -> Result<Self, crate::config::ConfigError> {
        let current = args.discovery(pod_namespace.as_deref(), settings)?;
        Ok(Self {
            args,
            pod_namespace,
            metrics,
            current,
            present,
            last_unreadable: None,
            earlier_write_namespaces: BTreeSet::new(),
        })
    }

    pub fn current(&self) -> &Discovery {
        &self.current
    }

    /// Where earlier configurations wrote Upstreams that the current one does not.
    pub fn earlier_write_namespaces(&self) -> &BTreeSet<String> {
        &self.earlier_write_namespaces
    }

    /// Works out what `update` means for the running configuration.
    pub fn on_update(&mut self, update: SettingsUpdate) -> Step {
        let spec = match update {
            SettingsUpdate::Changed(spec) => spec,
            SettingsUpdate::Deleted => {
                if std::mem::take(&mut self.present) {
                    // Gloo's own pods cannot run without it either; falling back to the flags
                    // would move every Upstream on an accidental delete.
                    tracing::warn!(
                        "the Settings object was deleted: keeping the configuration in force"
                    );
                }
                return Step::Keep;
            }
            SettingsUpdate::Unreadable(error) => {
                if self.last_unreadable.as_deref() != Some(error.as_str()) {
                    tracing::warn!(%error, "cannot watch Settings: keeping the configuration in force; the watch retries");
                    self.metrics.error(ErrorKind::SettingsUnreadable);
                    self.last_unreadable = Some(error);
                }
                return Step::Keep;
            }
        };
        self.present = true;
        self.last_unreadable = None;
        let next = GlooSettings::from_spec(&spec)
            .map_err(|error| error.to_string())
            .and_then(|settings| {
                self.args
                    .discovery(self.pod_namespace.as_deref(), Some(&settings))
                    .map_err(|error| error.to_string())
            });
        let next = match next {
            Ok(next) => next,
            Err(error) => {
                tracing::warn!(%error, "invalid Settings: keeping the last good configuration");
                self.metrics.error(ErrorKind::BadSettings);
                return Step::Keep;
            }
        };
        if next == self.current {
            return Step::Keep;
        }
        if let Some(old) = self.current.scopes.fixed_write_namespace() {
            self.earlier_write_namespaces.insert(old.to_string());
        }
        if let Some(new) = next.scopes.fixed_write_namespace() {
            self.earlier_write_namespaces.remove(new);
        }
        self.current = next.clone();
        self.metrics.settings_reloaded();
        Step::Restart(Box::new(next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_run_args as args;
    use crate::lambda::selection::FdsMode;
    use serde_json::json;

    fn follower(first: FirstRead) -> (Follower, Metrics) {
        let metrics = Metrics::new().expect("metrics");
        let follower = Follower::start(
            args(&[]),
            Some("gloo-system".to_string()),
            metrics.clone(),
            first,
            "default",
            "gloo-system",
        )
        .expect("runs");
        (follower, metrics)
    }

    fn restart(step: Step) -> Discovery {
        match step {
            Step::Restart(next) => *next,
            Step::Keep => panic!("expected a restart"),
        }
    }

    #[test]
    fn a_change_that_matters_restarts_and_one_that_does_not_keeps() {
        let (mut follower, metrics) =
            follower(FirstRead::Found(json!({"discoveryNamespace": "a"})));
        assert_eq!(
            follower.on_update(SettingsUpdate::Changed(
                json!({"discoveryNamespace": "a", "gloo": {"x": 1}})
            )),
            Step::Keep
        );
        let next = restart(follower.on_update(SettingsUpdate::Changed(
            json!({"discoveryNamespace": "a", "discovery": {"fdsMode": "DISABLED"}}),
        )));
        assert_eq!(next.fds_mode, FdsMode::Disabled);
        assert_eq!(follower.current(), &next);
        assert_eq!(metrics.settings_reloads(), 1);
    }

    #[test]
    fn a_moved_write_namespace_is_remembered_until_it_is_used_again() {
        let (mut follower, _) = follower(FirstRead::Found(json!({"discoveryNamespace": "a"})));
        restart(follower.on_update(SettingsUpdate::Changed(json!({"discoveryNamespace": "b"}))));
        assert_eq!(
            follower
                .earlier_write_namespaces()
                .iter()
                .collect::<Vec<_>>(),
            ["a"]
        );
        restart(follower.on_update(SettingsUpdate::Changed(json!({"discoveryNamespace": "c"}))));
        restart(follower.on_update(SettingsUpdate::Changed(json!({"discoveryNamespace": "a"}))));
        assert_eq!(
            follower
                .earlier_write_namespaces()
                .iter()
                .collect::<Vec<_>>(),
            ["b", "c"]
        );
    }

    #[test]
    fn invalid_settings_keep_the_last_good_configuration() {
        let (mut follower, metrics) =
            follower(FirstRead::Found(json!({"discoveryNamespace": "a"})));
        let before = follower.current().clone();
        for bad in [
            json!({"discovery": {"fdsMode": "NOPE"}}),
            json!({"discovery": {"fdsMode": "DISABLED", "udsOptions": {"enabled": false}}}),
        ] {
            assert_eq!(follower.on_update(SettingsUpdate::Changed(bad)), Step::Keep);
        }
        assert_eq!(follower.current(), &before);
        assert_eq!(metrics.errors(ErrorKind::BadSettings), 2);
    }

    #[test]
    fn deletion_and_read_errors_keep_the_configuration_and_are_said_once() {
        let (mut follower, metrics) =
            follower(FirstRead::Found(json!({"discoveryNamespace": "a"})));
        let before = follower.current().clone();
        assert_eq!(follower.on_update(SettingsUpdate::Deleted), Step::Keep);
        for _ in 0..3 {
            assert_eq!(
                follower.on_update(SettingsUpdate::Unreadable("403".to_string())),
                Step::Keep
            );
        }
        assert_eq!(follower.current(), &before);
        assert_eq!(metrics.errors(ErrorKind::SettingsUnreadable), 1);
    }

    #[test]
    fn missing_settings_start_from_flags_and_follow_the_object_when_it_appears() {
        let (mut follower, _) = follower(FirstRead::Missing);
        assert_eq!(
            follower.current().translate.write_namespace,
            crate::translate::WriteNamespace::Fixed("gloo-system".to_string())
        );
        assert_eq!(follower.on_update(SettingsUpdate::Deleted), Step::Keep);
        let next = restart(follower.on_update(SettingsUpdate::Changed(
            json!({"discoveryNamespace": "edge"}),
        )));
        assert_eq!(next.scopes.fixed_write_namespace(), Some("edge"));
    }

    #[test]
    fn invalid_settings_at_start_run_on_flags() {
        let (follower, metrics) = follower(FirstRead::Found(json!({"discovery": {"fdsMode": 9}})));
        assert_eq!(follower.current().fds_mode, FdsMode::Whitelist);
        assert_eq!(metrics.errors(ErrorKind::BadSettings), 1);
    }
}
