//! Command-line flags shared by the subcommands, and their validation.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::selector::LabelSelector;
use crate::translate::{TranslateSettings, WriteNamespace};

/// Namespace used when neither `--write-namespace` nor `POD_NAMESPACE` says otherwise.
pub const DEFAULT_WRITE_NAMESPACE: &str = "gloo-system";

/// How the write namespace is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum WriteNamespaceMode {
    /// Every Upstream in the write namespace, as Gloo does.
    #[default]
    Fixed,
    /// Each Upstream in its Service's namespace, owned by that Service.
    Service,
}

/// The flags that shape translation: `run` and `render` take the same ones.
#[derive(Debug, Clone, Args)]
pub struct TranslationArgs {
    /// Namespace the Upstreams are written to [default: $POD_NAMESPACE, else gloo-system].
    #[arg(long, value_name = "NAMESPACE")]
    pub write_namespace: Option<String>,

    /// `fixed`: all Upstreams in the write namespace; `service`: each in its Service's namespace.
    #[arg(long, value_enum, default_value_t = WriteNamespaceMode::Fixed)]
    pub write_namespace_mode: WriteNamespaceMode,

    /// Only Services matching this label selector give Upstreams (Gloo's `watchLabels`),
    /// e.g. `discovery=enabled,tier!=internal`.
    #[arg(long, value_name = "SELECTOR", default_value = "")]
    pub service_selector: LabelSelector,

    /// An annotation applied to every Service before its own (Gloo's
    /// `upstreamOptions.globalAnnotations`), as KEY=VALUE; repeat for several.
    #[arg(long = "global-annotations", value_name = "KEY=VALUE", value_parser = parse_annotation)]
    pub global_annotations: Vec<(String, String)>,
}

impl TranslationArgs {
    /// The translation settings these flags describe; `pod_namespace` is `$POD_NAMESPACE`.
    pub fn settings(&self, pod_namespace: Option<&str>) -> TranslateSettings {
        let write_namespace = match self.write_namespace_mode {
            WriteNamespaceMode::Service => WriteNamespace::ServiceNamespace,
            WriteNamespaceMode::Fixed => WriteNamespace::Fixed(
                self.write_namespace
                    .clone()
                    .or_else(|| {
                        pod_namespace
                            .filter(|ns| !ns.is_empty())
                            .map(str::to_string)
                    })
                    .unwrap_or_else(|| DEFAULT_WRITE_NAMESPACE.to_string()),
            ),
        };
        TranslateSettings {
            write_namespace,
            global_annotations: self
                .global_annotations
                .iter()
                .cloned()
                .collect::<BTreeMap<_, _>>(),
        }
    }
}

/// Flags of `render`.
#[derive(Debug, Clone, Args)]
pub struct RenderArgs {
    /// YAML of Services, as `kubectl get svc -A -o yaml` prints it (a List or several
    /// documents); `-` reads standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,

    #[command(flatten)]
    pub translation: TranslationArgs,
}

fn parse_annotation(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.to_string()))
        }
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: TranslationArgs,
    }

    fn parse(args: &[&str]) -> Result<TranslationArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("test").chain(args.iter().copied())).map(|cli| cli.args)
    }

    #[test]
    fn write_namespace_defaults() {
        let args = parse(&[]).expect("valid");
        assert_eq!(
            args.settings(None).write_namespace,
            WriteNamespace::Fixed("gloo-system".into())
        );
        assert_eq!(
            args.settings(Some("")).write_namespace,
            WriteNamespace::Fixed("gloo-system".into())
        );
        assert_eq!(
            args.settings(Some("edge")).write_namespace,
            WriteNamespace::Fixed("edge".into())
        );
        let args = parse(&["--write-namespace", "mine"]).expect("valid");
        assert_eq!(
            args.settings(Some("edge")).write_namespace,
            WriteNamespace::Fixed("mine".into())
        );
        let args = parse(&["--write-namespace-mode", "service"]).expect("valid");
        assert_eq!(
            args.settings(Some("edge")).write_namespace,
            WriteNamespace::ServiceNamespace
        );
    }

    #[test]
    fn global_annotations_split_at_the_first_equals_sign() {
        let args = parse(&[
            "--global-annotations",
            r#"gloo.solo.io/upstream_config={"a=b": 1}"#,
            "--global-annotations",
            "gloo.solo.io/h2_service=true",
        ])
        .expect("valid");
        let settings = args.settings(None);
        assert_eq!(
            settings.global_annotations["gloo.solo.io/upstream_config"],
            r#"{"a=b": 1}"#
        );
        assert_eq!(
            settings.global_annotations["gloo.solo.io/h2_service"],
            "true"
        );
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(parse(&["--global-annotations", "novalue"]).is_err());
        assert!(parse(&["--global-annotations", "=x"]).is_err());
        assert!(parse(&["--service-selector", "app in (web"]).is_err());
        assert!(parse(&["--write-namespace-mode", "sideways"]).is_err());
    }
}
