//! Command-line flags shared by the subcommands, their validation, and what they resolve to:
//! the translation settings and the [`Scopes`] of the daemon. [`settings`] reads Gloo's Settings
//! object; `layered` puts the two together, flags first.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

mod layered;
pub mod settings;

#[cfg(test)]
pub(crate) use layered::parse_run_args;
pub use layered::{ConfigError, Discovery, GivenFlags};

pub use crate::lambda::selection::FdsMode;
use crate::model::Scope;
use crate::selector::LabelSelector;
use crate::translate::{GrantSettings, RouteKind, TranslateSettings, WriteNamespace};

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

    /// Also print the ReferenceGrant `run --reference-grants` keeps beside each Upstream (as
    /// run writes it, but for the ownerReference run adds once the Upstream exists).
    #[arg(long)]
    pub reference_grants: bool,

    /// The route kinds those grants let refer to the Upstreams, as for `run`.
    #[arg(long, value_name = "KIND[,KIND...]", value_delimiter = ',', default_value = "HTTPRoute", value_parser = parse_route_kind)]
    pub reference_grant_kinds: Vec<RouteKind>,
}

/// How `diff` prints its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    /// Grouped, for people, then a one-line summary.
    #[default]
    Text,
    /// One JSON document, for scripts: writeNamespace, serviceDiscovery, notes, create,
    /// update, delete, unchanged, leftAlone, warnings, summary.
    Json,
}

/// Flags of `diff`: `run`'s own, so that it previews exactly the run they describe.
#[derive(Debug, Clone, Args)]
pub struct DiffArgs {
    /// `text` or `json`.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    #[command(flatten)]
    pub run: RunArgs,
}

/// Flags of `explain`: a Service of the cluster, or the Services of a YAML file offline.
#[derive(Debug, Clone, Args)]
pub struct ExplainArgs {
    /// The Service, as NAMESPACE/SERVICE (with -f: only that one of the file).
    #[arg(value_name = "NAMESPACE/SERVICE")]
    pub service: Option<String>,

    /// Read Services from this YAML file (`-` for standard input) instead of the cluster.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: Option<PathBuf>,

    #[command(flatten)]
    pub run: RunArgs,
}

/// Flags of function discovery (AWS Lambda).
#[derive(Debug, Clone, Args)]
pub struct LambdaArgs {
    /// Function discovery: WHITELIST, BLACKLIST or DISABLED (Gloo's `fdsMode`).
    #[arg(long, value_enum, default_value_t = FdsMode::Whitelist, ignore_case = true)]
    pub fds_mode: FdsMode,

    /// How often each account and region is swept with ListFunctions.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub lambda_poll_interval: Duration,

    /// Client-side limit on AWS API calls per second, per account and region (AWS allows 15).
    #[arg(long, value_name = "RPS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub lambda_api_rps: u32,

    /// Also list aliases: `name:alias` entries with `qualifier: alias`.
    #[arg(long)]
    pub lambda_aliases: bool,

    /// Most entries written to one Upstream's `lambdaFunctions`; the rest are left out with a
    /// Warning Event. 2000 entries of the longest names AWS allows stay under 1 MiB.
    #[arg(long, value_name = "N", default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
    pub lambda_max_functions: u32,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Flags of `run`, the daemon.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub translation: TranslationArgs,

    /// Watch only these namespaces (comma-separated) instead of all.
    #[arg(long, value_name = "NS[,NS...]", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,

    /// Watch only Services in namespaces whose labels match this selector.
    #[arg(long, value_name = "SELECTOR", default_value = "")]
    pub namespace_selector: LabelSelector,

    /// Re-check every Service and Upstream this often (zero writes when nothing changed).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub resync_interval: Duration,

    /// Sustained rate of writes to the Kubernetes API, per second.
    #[arg(long, value_name = "QPS", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub kube_api_qps: u32,

    /// Writes allowed in a burst above --kube-api-qps.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub kube_api_burst: u32,

    /// Services whose Upstreams are written at the same time.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub write_concurrency: u32,

    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9091")]
    pub metrics_addr: SocketAddr,

    /// /healthz fails (and the liveness probe restarts the pod) when a discovery loop has had
    /// writes or sweeps in flight and finished none of them for this long. Keep it above the
    /// longest single write or Lambda sweep; waiting out a backoff or the API server does not
    /// count.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub stall_timeout: Duration,

    /// /readyz fails when a watch (or list) of a running loop has been failing for longer than
    /// this; it is ready again once the stream answers.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub watch_grace: Duration,

    /// How long the API server holds one watch request before the daemon renews it (from the
    /// last version seen: a request, not a re-list). It bounds how long a watch the server has
    /// stopped serving without ending it goes unnoticed (kube-apiserver drops a watcher it
    /// finds too slow that way). Between 10s and 290s.
    #[arg(long, value_name = "DURATION", default_value = "290s", value_parser = parse_watch_timeout)]
    pub watch_timeout: Duration,

    /// A watch that sends nothing (no event, no bookmark) for this long is renewed from the last
    /// version seen, so a watch the server stopped serving without ending it costs at most this
    /// much. The API server sends a bookmark on a quiet watch about once a minute: a limit of a
    /// minute loses that race on every quiet watch, and renewing from a version that old is
    /// often refused (410) and re-lists, so the default leaves the bookmark half a minute.
    /// 0 turns it off.
    #[arg(long, value_name = "DURATION", default_value = "90s", value_parser = parse_watch_silence)]
    pub watch_silence: Duration,

    /// Elect one writer among replicas with a Lease in the daemon's namespace.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,

    /// Name of the Lease used for leader election.
    #[arg(long, value_name = "NAME", default_value = "upstream-discovery")]
    pub lease_name: String,

    /// How long other replicas wait, after the Lease last changed, before taking it over.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// A leader that has not renewed the Lease for this long stops writing (shorter than
    /// --lease-duration, so it stops before anyone can take over).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub renew_deadline: Duration,

    /// How often the Lease is renewed, or tried for.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub retry_period: Duration,

    /// Plan and log every write, write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Service discovery (Gloo's `discovery.udsOptions.enabled`); `false` leaves only function
    /// discovery running.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub uds_enabled: bool,

    /// Read Gloo's `Settings` object in the daemon's namespace and follow its changes; flags
    /// given on the command line win over it.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub read_settings: bool,

    /// Name of the `Settings` object (Gloo's is `default`).
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub settings_name: String,

    /// Keep, beside each discovered Upstream in the write namespace, a ReferenceGrant
    /// (gateway.networking.k8s.io/v1beta1) of the same name that lets routes in the Service's
    /// namespace (and those of its `upstream-discovery.io/route-namespaces` annotation) refer to
    /// exactly that Upstream. Not in `--write-namespace-mode=service`.
    #[arg(long)]
    pub reference_grants: bool,

    /// The route kinds those grants let refer to the Upstreams (Gateway API kinds: HTTPRoute,
    /// GRPCRoute, TCPRoute, TLSRoute, UDPRoute).
    #[arg(long, value_name = "KIND[,KIND...]", value_delimiter = ',', default_value = "HTTPRoute", value_parser = parse_route_kind)]
    pub reference_grant_kinds: Vec<RouteKind>,

    #[command(flatten)]
    pub lambda: LambdaArgs,

    /// Log level or filter (`info`, `debug`, `upstream_discovery=debug,kube=info`); RUST_LOG wins when set.
    #[arg(long, value_name = "FILTER", default_value = "info")]
    pub log_level: String,

    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// The flags above that were given on the command line; `main` fills it.
    #[arg(skip)]
    pub given: GivenFlags,
}

impl RunArgs {
    /// The grants to keep with `--reference-grants`, when on.
    pub fn grant_settings(&self) -> Option<GrantSettings> {
        self.reference_grants
            .then(|| GrantSettings::new(&self.reference_grant_kinds))
    }

    /// Where the daemon watches and writes; `pod_namespace` is `$POD_NAMESPACE`.
    pub fn scopes(&self, pod_namespace: Option<&str>) -> Scopes {
        let pod_namespace = pod_namespace.filter(|ns| !ns.is_empty());
        let write_namespace = self.translation.settings(pod_namespace).write_namespace;
        let own_namespace = match (pod_namespace, &write_namespace) {
            (Some(namespace), _) => namespace.to_string(),
            (None, WriteNamespace::Fixed(namespace)) => namespace.clone(),
            (None, WriteNamespace::ServiceNamespace) => DEFAULT_WRITE_NAMESPACE.to_string(),
        };
        let services: Vec<Scope> = if self.watch_namespaces.is_empty() {
            vec![Scope::All]
        } else {
            let mut listed: Vec<Scope> = self
                .watch_namespaces
                .iter()
                .map(|ns| Scope::Namespace(ns.clone()))
                .collect();
            // Gloo adds its write namespace to the watched ones, so the Services there keep
            // their Upstreams. In `service` mode there is no single write namespace to add.
            if let WriteNamespace::Fixed(namespace) = &write_namespace {
                listed.push(Scope::Namespace(namespace.clone()));
            }
            listed.sort();
            listed.dedup();
            listed
        };
        let upstreams = match &write_namespace {
            WriteNamespace::Fixed(namespace) => vec![Scope::Namespace(namespace.clone())],
            WriteNamespace::ServiceNamespace if services.contains(&Scope::All) => vec![Scope::All],
            // Each Upstream beside its Service, plus the daemon's own namespace, where the
            // default mode wrote them, so that a switch of mode collects those.
            WriteNamespace::ServiceNamespace => {
                let mut scopes = services.clone();
                scopes.push(Scope::Namespace(own_namespace.clone()));
                scopes.sort();
                scopes.dedup();
                scopes
            }
        };
        Scopes {
            function_upstreams: services.clone(),
            services,
            upstreams,
            namespace_selector: self.namespace_selector.clone(),
            write_namespace,
            own_namespace,
        }
    }
}

/// Where the daemon watches and writes, resolved from the flags, the environment and Settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scopes {
    pub write_namespace: WriteNamespace,
    /// The daemon's own namespace (`$POD_NAMESPACE`, else the write namespace): its Lease.
    pub own_namespace: String,
    /// Where Services are watched: `--watch-namespaces` and the write namespace, or all.
    pub services: Vec<Scope>,
    /// Where service discovery's Upstreams are watched (all Upstreams there, not only ours: a
    /// name held by someone else's object must be known before we write it).
    pub upstreams: Vec<Scope>,
    /// Only Services in namespaces with matching labels (all when empty).
    pub namespace_selector: LabelSelector,
    /// Where function discovery's aws Upstreams are watched: the watched namespaces.
    pub function_upstreams: Vec<Scope>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))?;
    if duration.is_zero() {
        return Err("must be more than zero".to_string());
    }
    Ok(duration)
}

/// kube's client gives up reading a response after 295 s, so the server's timeout stays below;
/// under 10 s renewals would be most of the traffic.
fn parse_watch_timeout(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if !(Duration::from_secs(10)..=Duration::from_secs(290)).contains(&duration) {
        return Err(format!("{text:?}: must be between 10s and 290s"));
    }
    Ok(duration)
}

/// Under 5 s a quiet watch would be renewed more often than it could say anything.
fn parse_watch_silence(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|error| format!("{text:?}: {error}"))?;
    if !duration.is_zero() && duration < Duration::from_secs(5) {
        return Err(format!("{text:?}: must be 0 (off) or at least 5s"));
    }
    Ok(duration)
}

fn parse_route_kind(text: &str) -> Result<RouteKind, String> {
    text.parse()
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

    #[derive(Parser)]
    struct RunCli {
        #[command(flatten)]
        args: RunArgs,
    }

    fn parse_run(args: &[&str]) -> Result<RunArgs, clap::Error> {
        RunCli::try_parse_from(std::iter::once("test").chain(args.iter().copied()))
            .map(|cli| cli.args)
    }

    #[test]
    fn scopes_are_resolved_once_for_each_mode() {
        let fixed = parse_run(&[]).expect("valid").scopes(Some("gloo-system"));
        assert_eq!(fixed.services, [Scope::All]);
        assert_eq!(fixed.upstreams, [Scope::Namespace("gloo-system".into())]);
        assert_eq!(fixed.own_namespace, "gloo-system");
        assert!(fixed.namespace_selector.selects_all());

        let per_service = parse_run(&[
            "--write-namespace-mode",
            "service",
            "--watch-namespaces",
            "b,a",
            "--namespace-selector",
            "team=x",
        ])
        .expect("valid")
        .scopes(None);
        let ns = |name: &str| Scope::Namespace(name.into());
        assert_eq!(per_service.services, [ns("a"), ns("b")]);
        assert_eq!(
            per_service.upstreams,
            [ns("a"), ns("b"), ns("gloo-system")],
            "the old write namespace too, to collect what it holds"
        );
        assert_eq!(per_service.function_upstreams, [ns("a"), ns("b")]);
        assert!(!per_service.namespace_selector.selects_all());
        assert_eq!(
            per_service.write_namespace,
            WriteNamespace::ServiceNamespace
        );

        let everywhere = parse_run(&["--write-namespace-mode", "service"])
            .expect("valid")
            .scopes(Some("edge"));
        assert_eq!(everywhere.upstreams, [Scope::All]);
        assert_eq!(everywhere.own_namespace, "edge");
        let elsewhere = parse_run(&["--write-namespace", "mine"])
            .expect("valid")
            .scopes(None);
        assert_eq!(
            elsewhere.own_namespace, "mine",
            "no POD_NAMESPACE: the write namespace"
        );
    }

    #[test]
    fn listed_watch_namespaces_always_include_the_write_namespace() {
        let ns = |name: &str| Scope::Namespace(name.into());
        let listed = parse_run(&["--watch-namespaces", "team-b,team-a"])
            .expect("valid")
            .scopes(Some("gloo-system"));
        assert_eq!(
            listed.services,
            [ns("gloo-system"), ns("team-a"), ns("team-b")]
        );
        assert_eq!(
            listed.function_upstreams,
            [ns("gloo-system"), ns("team-a"), ns("team-b")]
        );
        assert_eq!(listed.upstreams, [ns("gloo-system")]);

        let explicit = parse_run(&[
            "--watch-namespaces",
            "team-a,edge",
            "--write-namespace",
            "edge",
        ])
        .expect("valid")
        .scopes(Some("gloo-system"));
        assert_eq!(
            explicit.services,
            [ns("edge"), ns("team-a")],
            "listed once, even when named too"
        );

        let all = parse_run(&[]).expect("valid").scopes(Some("gloo-system"));
        assert_eq!(
            all.services,
            [Scope::All],
            "nothing listed: all, nothing added"
        );
    }

    #[test]
    fn run_defaults() {
        let args = parse_run(&[]).expect("valid");
        assert_eq!(args.resync_interval, Duration::from_secs(600));
        assert!(args.leader_elect);
        assert!(!args.dry_run);
        assert!(args.watch_namespaces.is_empty());
        assert_eq!(args.metrics_addr.port(), 9091);
        assert_eq!(args.stall_timeout, Duration::from_secs(300));
        assert_eq!(args.watch_grace, Duration::from_secs(30));
        assert_eq!(args.watch_timeout, Duration::from_secs(290));
        assert_eq!(args.watch_silence, Duration::from_secs(90));
        assert_eq!(args.log_format, LogFormat::Text);
        assert_eq!(args.lambda.fds_mode, FdsMode::Whitelist);
        assert_eq!(args.lambda.lambda_poll_interval, Duration::from_secs(30));
        assert_eq!(args.lambda.lambda_api_rps, 5);
        assert!(!args.lambda.lambda_aliases);
        assert_eq!(args.lambda.lambda_max_functions, 2000);
    }

    #[test]
    fn lambda_flags() {
        let args = parse_run(&[
            "--fds-mode=DISABLED",
            "--lambda-poll-interval=2s",
            "--lambda-api-rps=10",
            "--lambda-aliases",
            "--lambda-max-functions=7",
        ])
        .expect("valid");
        assert_eq!(args.lambda.fds_mode, FdsMode::Disabled);
        assert_eq!(args.lambda.lambda_poll_interval, Duration::from_secs(2));
        assert_eq!(args.lambda.lambda_api_rps, 10);
        assert!(args.lambda.lambda_aliases);
        assert_eq!(args.lambda.lambda_max_functions, 7);
        let blacklist = parse_run(&["--fds-mode", "blacklist"]).expect("case is ignored");
        assert_eq!(blacklist.lambda.fds_mode, FdsMode::Blacklist);
        for bad in [
            &["--fds-mode", "SOMETIMES"][..],
            &["--lambda-api-rps", "0"],
            &["--lambda-poll-interval", "0s"],
            &["--lambda-max-functions", "0"],
        ] {
            assert!(parse_run(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn run_flags() {
        let args = parse_run(&[
            "--watch-namespaces",
            "a,b",
            "--resync-interval",
            "30s",
            "--leader-elect",
            "false",
            "--kube-api-qps",
            "5",
            "--log-format",
            "json",
            "--dry-run",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .expect("valid");
        assert_eq!(args.watch_namespaces, ["a", "b"]);
        assert_eq!(args.resync_interval, Duration::from_secs(30));
        assert!(!args.leader_elect);
        assert_eq!(args.kube_api_qps, 5);
        assert!(args.dry_run);
        for bad in [
            &["--resync-interval", "0s"][..],
            &["--resync-interval", "soon"],
            &["--kube-api-qps", "0"],
            &["--metrics-addr", "nowhere"],
        ] {
            assert!(parse_run(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(parse(&["--global-annotations", "novalue"]).is_err());
        assert!(parse(&["--global-annotations", "=x"]).is_err());
        assert!(parse(&["--service-selector", "app in (web"]).is_err());
        assert!(parse(&["--write-namespace-mode", "sideways"]).is_err());
    }
}
