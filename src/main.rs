//! The `upstream-discovery` command: parses the command line and wires the parts.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use upstream_discovery::config::{
    DiffArgs, ExplainArgs, GivenFlags, LogFormat, OutputFormat, RenderArgs, RunArgs,
};
use upstream_discovery::translate::GrantSettings;
use upstream_discovery::{crd, daemon, preview, render};

/// Exit code for input that cannot be used (bad YAML, a bad field, an unreadable file).
const EXIT_BAD_INPUT: u8 = 2;

#[derive(Parser)]
#[command(
    name = "upstream-discovery",
    version,
    about = "Keeps Gloo Upstreams in step with Kubernetes Services and AWS Lambda functions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the discovery daemon.
    Run(Box<RunArgs>),
    /// Translate Services from YAML into the Upstreams the daemon would write, offline.
    Render(RenderArgs),
    /// Preview what `run` would do to the cluster now; writes nothing.
    ///
    /// One read-only pass with the same flags and Settings as `run`: every Upstream it would
    /// create, update (with a diff), delete or leave alone, and why. Exit code 0 when nothing
    /// would change, 1 when something would, 2 on error.
    Diff(Box<DiffArgs>),
    /// Say which rule set each field of a Service's Upstreams.
    ///
    /// A Service of the cluster (NAMESPACE/SERVICE) or of a YAML file (-f, offline): its
    /// Upstreams, the rule behind each field, its warnings; against the cluster also what
    /// `run` would do with each Upstream, who holds its name, and the Service's last Event.
    Explain(Box<ExplainArgs>),
    /// Print the Upstream CustomResourceDefinition as YAML.
    Crd,
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let (cli, given) = parse_command_line();
    match cli.command {
        Command::Run(mut args) => {
            args.given = given;
            run_daemon(args)
        }
        Command::Render(args) => run_render(&args),
        Command::Diff(mut args) => {
            args.run.given = given;
            run_diff(&args)
        }
        Command::Explain(mut args) => {
            args.run.given = given;
            run_explain(&args)
        }
        Command::Crd => match crd::definition_yaml() {
            Ok(yaml) => print_out(&yaml),
            Err(error) => {
                eprintln!("error: cannot serialize the CRD: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Version => print_out(&format!(
            "upstream-discovery {}\n",
            env!("CARGO_PKG_VERSION")
        )),
    }
}

/// The command line, and which `run` flags it gave. No arguments at all is `run`: Gloo's chart
/// starts its discovery image with neither command nor arguments.
fn parse_command_line() -> (Cli, GivenFlags) {
    let mut words: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if words.len() <= 1 {
        words.push("run".into());
    }
    let matches = Cli::command().get_matches_from(words);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    let given = ["run", "diff", "explain"]
        .iter()
        .find_map(|name| matches.subcommand_matches(name))
        .map(GivenFlags::from_matches)
        .unwrap_or_default();
    (cli, given)
}

/// A runtime for the one-shot commands that talk to the cluster.
fn one_shot<T>(
    work: impl std::future::Future<Output = Result<T, preview::PreviewError>>,
) -> Result<T, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the async runtime: {error}"))?;
    runtime.block_on(work).map_err(|error| error.to_string())
}

/// `diff`: 0 when `run` would write nothing, 1 when it would, 2 on error (as `kubectl diff`).
fn run_diff(args: &DiffArgs) -> ExitCode {
    let report = match one_shot(preview::diff(&args.run)) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let text = match args.output {
        OutputFormat::Text => preview::diff_text(&report),
        OutputFormat::Json => match serde_json::to_string_pretty(&report) {
            Ok(json) => json + "\n",
            Err(error) => {
                eprintln!("error: cannot write JSON: {error}");
                return ExitCode::from(EXIT_BAD_INPUT);
            }
        },
    };
    if !write_out(&text) {
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    if report.has_changes() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// `explain`: offline with `-f`, else against the cluster; 2 on error.
fn run_explain(args: &ExplainArgs) -> ExitCode {
    use preview::explain;
    let target = match args
        .service
        .as_deref()
        .map(explain::service_key)
        .transpose()
    {
        Ok(target) => target,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let result = match (&args.file, &target) {
        (Some(file), _) => read_file(file)
            .map_err(|error| error.to_string())
            .and_then(|yaml| {
                explain::explain_file(&args.run, &yaml, target.as_ref())
                    .map_err(|error| error.to_string())
            }),
        (None, Some(key)) => one_shot(explain::explain_cluster(&args.run, key)),
        (None, None) => Err(preview::PreviewError::NothingToExplain.to_string()),
    };
    match result {
        Ok(text) => print_out(&text),
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

/// Gloo's `LOG_LEVEL` (zap's levels) as a tracing filter, when `--log-level` is not given.
fn log_level(args: &RunArgs, gloo_level: Option<&str>) -> String {
    let from_gloo = gloo_level
        .filter(|_| !args.given.contains("log_level"))
        .map(|level| level.trim().to_ascii_lowercase())
        .filter(|level| !level.is_empty());
    match from_gloo.as_deref() {
        Some("dpanic" | "panic" | "fatal") => "error".to_string(),
        Some(level) => level.to_string(),
        None => args.log_level.clone(),
    }
}

/// Gloo's `START_STATS_SERVER`: a false value, with no `--metrics-addr` given, serves nothing.
fn serve_http(args: &RunArgs, start_stats_server: Option<&str>) -> bool {
    if args.given.contains("metrics_addr") {
        return true;
    }
    !start_stats_server.is_some_and(|value| {
        matches!(
            value.trim().to_ascii_lowercase().as_str(),
            "false" | "0" | "no" | "off"
        )
    })
}

/// The daemon's runtime threads, whatever the node's core count.
const DAEMON_WORKER_THREADS: usize = 2;

fn run_daemon(args: Box<RunArgs>) -> ExitCode {
    let gloo_level = std::env::var("LOG_LEVEL").ok();
    init_logging(&log_level(&args, gloo_level.as_deref()), args.log_format);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // Tokio's default is a worker per core: on a 64-core node, 64 stacks and malloc arenas for
    // a loop that mostly waits on the API server. Two keep /metrics and /readyz answering while
    // the loop plans; TOKIO_WORKER_THREADS still overrides.
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(DAEMON_WORKER_THREADS);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let serve_http = serve_http(&args, std::env::var("START_STATS_SERVER").ok().as_deref());
    match runtime.block_on(daemon::run(*args, serve_http)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "upstream-discovery stopped on an error");
            ExitCode::FAILURE
        }
    }
}

/// `RUST_LOG`, when set, wins over `--log-level`.
fn init_logging(level: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

fn run_render(args: &RenderArgs) -> ExitCode {
    let settings = args
        .translation
        .settings(std::env::var("POD_NAMESPACE").ok().as_deref());
    let result = read_input(args)
        .and_then(|yaml| render::parse_services(&yaml))
        .and_then(|input| {
            for skipped in &input.skipped {
                eprintln!(
                    "note: document {}: skipped {} {:?}: not a Service",
                    skipped.document, skipped.kind, skipped.name
                );
            }
            let selector = &args.translation.service_selector;
            let rendered = if args.reference_grants {
                let grants = GrantSettings::new(&args.reference_grant_kinds);
                render::render_with_grants(&input.services, &settings, selector, &grants)
            } else {
                render::render(&input.services, &settings, selector)
            };
            for (service, warning) in &rendered.warnings {
                eprintln!("warning: Service {service}: {warning}");
            }
            render::to_yaml_with_grants(&rendered)
        });
    match result {
        Ok(yaml) => print_out(&yaml),
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

fn read_input(args: &RenderArgs) -> Result<String, render::RenderError> {
    read_file(&args.file)
}

/// A file's text, or standard input's for `-`.
fn read_file(file: &std::path::Path) -> Result<String, render::RenderError> {
    let path = file.to_string_lossy().into_owned();
    let read_error = |source| render::RenderError::Read {
        path: path.clone(),
        source,
    };
    if path == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(read_error)?;
        Ok(text)
    } else {
        std::fs::read_to_string(file).map_err(read_error)
    }
}

/// Writes to standard output; a closed pipe (`| head`) is not an error worth a panic.
fn print_out(text: &str) -> ExitCode {
    if write_out(text) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Writes to standard output; false (said on stderr) when it cannot.
fn write_out(text: &str) -> bool {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => true,
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => true,
        Err(error) => {
            eprintln!("error: cannot write output: {error}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(words: &[&str]) -> RunArgs {
        let command = Cli::command();
        let matches = command
            .try_get_matches_from(["upstream-discovery", "run"].iter().chain(words))
            .expect("valid command line");
        let given = matches
            .subcommand_matches("run")
            .map(GivenFlags::from_matches)
            .unwrap_or_default();
        match Cli::from_arg_matches(&matches).expect("parsed").command {
            Command::Run(mut args) => {
                args.given = given;
                *args
            }
            _ => panic!("not run"),
        }
    }

    #[test]
    fn gloo_log_level_applies_unless_the_flag_is_given() {
        let plain = run_args(&[]);
        assert_eq!(log_level(&plain, None), "info");
        assert_eq!(log_level(&plain, Some("debug")), "debug");
        assert_eq!(log_level(&plain, Some(" WARN ")), "warn");
        assert_eq!(log_level(&plain, Some("fatal")), "error");
        assert_eq!(log_level(&plain, Some("")), "info");
        let flagged = run_args(&["--log-level", "trace"]);
        assert_eq!(log_level(&flagged, Some("debug")), "trace");
    }

    #[test]
    fn start_stats_server_false_turns_http_off_unless_an_address_is_given() {
        let plain = run_args(&[]);
        assert!(serve_http(&plain, None));
        assert!(serve_http(&plain, Some("true")));
        for off in ["false", "0", "no", "OFF"] {
            assert!(!serve_http(&plain, Some(off)), "{off}");
        }
        let addressed = run_args(&["--metrics-addr", "127.0.0.1:9999"]);
        assert!(serve_http(&addressed, Some("false")));
    }
}
