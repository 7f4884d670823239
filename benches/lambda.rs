//! Benchmark of function discovery at scale (issue 15): moto holding F functions × V versions
//! (`$LATEST` included) in each of A accounts × R regions, U aws Upstreams spread over them,
//! the real daemon polling through a paging proxy that counts its calls. In one go:
//!
//! 1. setup (timed, not measured): accounts, functions and versions in moto; Secrets and
//!    Upstreams in the cluster;
//! 2. initial sync: time from the daemon's start to every Upstream holding its functions;
//! 3. idle for `--polls` sweeps of every account-region: ListFunctions calls per sweep and per
//!    poll, sweeps per poll, Upstream writes (metric and resourceVersions), CPU;
//! 4. changes (`--changes` rounds): a new version of one function in every account-region,
//!    published at a different point of the poll cycle each round; time until every affected
//!    Upstream lists it;
//! 5. the daemon's peak RSS (VmHWM) and CPU time.
//!
//! It prints a Markdown table and writes it with a JSON file under `--out`. It fails (exit 1)
//! only when the benchmark itself breaks, or when it saw no ListFunctions call at all (it would
//! have measured nothing); missed targets are reported, not failed.
//!
//! Full size (the default): `cargo bench --bench lambda`; a smoke run:
//! `cargo bench --profile dev --bench lambda -- --functions 20 --versions 2 --accounts 2
//! --regions 1 --upstreams 4 --poll-interval 2s --polls 2 --changes 1`.

// The e2e tests' environment and helpers, shared as they are (the bench uses part of them).
#[allow(dead_code)]
#[path = "../tests/e2e/aws_fixture.rs"]
mod aws_fixture;
#[path = "shared/bench_main.rs"]
mod bench_main;
#[allow(dead_code)]
#[path = "../tests/e2e/daemon.rs"]
mod daemon;
#[allow(dead_code)]
#[path = "../tests/e2e/proxy_server.rs"]
mod proxy_server;
#[allow(dead_code)]
#[path = "../tests/e2e/scenario.rs"]
mod scenario;
#[allow(dead_code)]
#[path = "../tests/e2e/support.rs"]
mod support;
#[allow(dead_code)]
#[path = "../tests/e2e/test_env.rs"]
mod test_env;

#[path = "lambda/fill.rs"]
mod fill;
#[path = "lambda/measure.rs"]
mod measure;
#[path = "lambda/pager.rs"]
mod pager;
#[path = "lambda/report.rs"]
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

use fill::Sizes;
use report::Report;

#[derive(Debug, Parser)]
#[command(about = "Benchmark function discovery against moto and a real API server (issue 15)")]
struct Args {
    /// Functions per account and region.
    #[arg(long, default_value_t = 2000)]
    functions: usize,
    /// Versions per function, `$LATEST` included (so V − 1 published).
    #[arg(long, default_value_t = 3)]
    versions: usize,
    #[arg(long, default_value_t = 4)]
    accounts: usize,
    #[arg(long, default_value_t = 2)]
    regions: usize,
    /// aws Upstreams, spread round-robin over the account-regions (at least one each).
    #[arg(long, default_value_t = 400)]
    upstreams: usize,
    /// The daemon's `--lambda-poll-interval` (its default).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    poll_interval: Duration,
    /// The daemon's `--lambda-api-rps` (its default).
    #[arg(long, default_value_t = 5)]
    lambda_api_rps: u32,
    /// Sweeps of every account-region watched while idle.
    #[arg(long, default_value_t = 3)]
    polls: usize,
    /// Rounds of "publish a version in every account-region, wait for the Upstreams".
    #[arg(long, default_value_t = 3)]
    changes: usize,
    /// Where the Markdown and JSON reports go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

impl Args {
    fn sizes(&self) -> Sizes {
        Sizes {
            functions: self.functions,
            versions: self.versions,
            accounts: self.accounts,
            regions: self.regions,
            upstreams: self.upstreams,
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    bench_main::report_main(async { run(&args).await.map(|report| report.markdown()) })
}

pub fn progress(started: Instant, message: &str) {
    eprintln!("[{:7.1}s] {message}", started.elapsed().as_secs_f64());
}

async fn run(args: &Args) -> Result<Report, String> {
    let sizes = args.sizes();
    sizes.validate()?;
    if args.polls < 2 || args.lambda_api_rps == 0 || args.poll_interval.is_zero() {
        return Err(
            "--polls must be at least 2, --lambda-api-rps and --poll-interval positive".into(),
        );
    }
    let started = Instant::now();
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;

    progress(started, "starting the test environment");
    let env = Arc::new(tokio::task::block_in_place(test_env::TestEnv::start)?);
    let scenario = scenario::Scenario::builder(env.clone(), "lambda")
        .build()
        .await;
    let settings = measure::Settings {
        sizes,
        poll_interval: args.poll_interval,
        api_rps: args.lambda_api_rps,
        polls: args.polls,
        changes: args.changes,
        log: args
            .out
            .join(format!("lambda-{}.daemon.log", file_stem(&sizes))),
    };
    let result = measure::run(&env, &scenario, &settings, started).await;
    env.stop();
    let mut report = result?;
    report.total_seconds = started.elapsed().as_secs_f64();
    let base = args
        .out
        .join(format!("lambda-{}", file_stem(&report.sizes)));
    bench_main::write_reports(&base, &report, &report.markdown())?;
    Ok(report)
}

fn file_stem(sizes: &Sizes) -> String {
    format!(
        "{}x{}-{}x{}-{}",
        sizes.functions, sizes.versions, sizes.accounts, sizes.regions, sizes.upstreams
    )
}
