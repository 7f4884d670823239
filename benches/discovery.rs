//! Benchmark of issues 6 and 15: is the daemon fast and light at N Services, against the limit
//! of the API server? It starts its own test environment (tests/env/start.sh), creates N
//! Services with two ports each, and runs, in one go:
//!
//! 1. baseline: a bare client applies the 2N Upstreams the daemon would write, with the same
//!    QPS, burst and concurrency as the daemon gets, then deletes them (the floor). The main
//!    row's limits are far above what the API server takes, so the floor is the server;
//! 2. initial sync: the daemon's time to all Upstreams correct, API requests, peak RSS, CPU;
//! 3. churn: Services changed at each `--churn-rates` for `--churn-seconds`: lag;
//! 4. idle for `--idle-seconds`: writes, lists, CPU;
//! 5. restart: SIGTERM, start again: time to ready, writes, peak RSS;
//! 6. the throttled row (unless `--skip-throttled`): the daemon stopped and its Upstreams
//!    deleted, the baseline and a fresh daemon's initial sync again under `--throttled-*`
//!    limits (issue 6's QPS 500), for a ratio comparable with the first benchmark's.
//!
//! It prints a Markdown table and writes it with a JSON file under `--out`. It fails (exit 1)
//! only when the benchmark itself breaks; missed targets are reported, not failed.
//! `--sweep-concurrency 32,64,128` instead measures only the bare client at each concurrency.
//!
//! `cargo bench --bench discovery -- --services 10000`

// The e2e tests' environment and scenario, shared as they are (the bench uses part of them).
#[path = "shared/bench_main.rs"]
mod bench_main;
#[allow(dead_code)]
#[path = "../tests/e2e/daemon.rs"]
mod daemon;
#[allow(dead_code)]
#[path = "../tests/e2e/scenario.rs"]
mod scenario;
#[allow(dead_code)]
#[path = "../tests/e2e/support.rs"]
mod support;
#[allow(dead_code)]
#[path = "../tests/e2e/test_env.rs"]
mod test_env;

#[path = "discovery/cluster.rs"]
mod cluster;
#[path = "discovery/phases.rs"]
mod phases;
#[path = "discovery/process.rs"]
mod process;
#[path = "discovery/prom.rs"]
mod prom;
#[path = "discovery/report.rs"]
mod report;
#[path = "discovery/rows.rs"]
mod rows;
#[path = "discovery/targets.rs"]
mod targets;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

use cluster::Cluster;
use phases::{ChurnTargets, UpstreamWatch, WriteLimits};
use process::Launch;
use report::{Machine, Ratios, Report};

/// The bare client's fastest on the test API server: with `--sweep-concurrency` at 2,000
/// Services, 64, 128 and 256 in flight applied as fast as each other and 16 or 32 slower, so
/// the smallest on the plateau (docs/performance.md).
const DEFAULT_WRITE_CONCURRENCY: usize = 64;

#[derive(Debug, Parser)]
#[command(about = "Benchmark upstream-discovery against a real API server (issues 6 and 15)")]
struct Args {
    /// Services to create (two ports, so two Upstreams, each).
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Where the Markdown and JSON reports go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Length of each churn phase.
    #[arg(long, default_value_t = 60)]
    churn_seconds: u64,
    /// Service changes per second, one churn phase each.
    #[arg(long, value_delimiter = ',', default_value = "20,100")]
    churn_rates: Vec<f64>,
    /// Length of the idle phase.
    #[arg(long, default_value_t = 60)]
    idle_seconds: u64,
    /// Client-side write limits of the baseline client and the daemon in the main row: far
    /// above what the API server takes, so that the floor is the server, not a rate limiter
    /// (the daemon's flags take no 0 for "unlimited").
    #[arg(long, default_value_t = 100_000)]
    kube_api_qps: u32,
    #[arg(long, default_value_t = 100_000)]
    kube_api_burst: u32,
    /// Writes in flight, main row: where the bare client stops getting faster on the test API
    /// server (measured with --sweep-concurrency).
    #[arg(long, default_value_t = DEFAULT_WRITE_CONCURRENCY)]
    write_concurrency: usize,
    /// The throttled row's limits (issue 6's run: QPS 500, burst 500, 32 in flight).
    #[arg(long, default_value_t = 500)]
    throttled_qps: u32,
    #[arg(long, default_value_t = 500)]
    throttled_burst: u32,
    #[arg(long, default_value_t = 32)]
    throttled_concurrency: usize,
    /// Leave out the throttled row (a smoke run that must stay short).
    #[arg(long)]
    skip_throttled: bool,
    /// Only time the bare client's baseline at each of these write concurrencies (with
    /// --kube-api-qps and --kube-api-burst), print them and stop.
    #[arg(long, value_delimiter = ',')]
    sweep_concurrency: Vec<usize>,
    /// Run the daemon under this command, e.g. "heaptrack -o target/bench/heap" (split at
    /// spaces); resource use is still read from the daemon's own process.
    #[arg(long, default_value = "")]
    daemon_wrapper: String,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    bench_main::report_main(run(&args))
}

fn progress(started: Instant, message: &str) {
    eprintln!("[{:7.1}s] {message}", started.elapsed().as_secs_f64());
}

async fn run(args: &Args) -> Result<String, String> {
    if args.services == 0
        || args.churn_rates.iter().any(|rate| *rate <= 0.0)
        || args.sweep_concurrency.contains(&0)
    {
        return Err("--services, --churn-rates and --sweep-concurrency must be positive".into());
    }
    let started = Instant::now();
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;

    progress(started, "starting the test environment");
    let cluster = Cluster::start().await?;
    let result = if args.sweep_concurrency.is_empty() {
        measure(args, &cluster, started).await
    } else {
        sweep(args, &cluster, started).await
    };
    cluster.env.stop();
    result
}

fn limits(args: &Args) -> (WriteLimits, WriteLimits) {
    let main = WriteLimits {
        qps: args.kube_api_qps,
        burst: args.kube_api_burst,
        concurrency: args.write_concurrency,
    };
    let throttled = WriteLimits {
        qps: args.throttled_qps,
        burst: args.throttled_burst,
        concurrency: args.throttled_concurrency,
    };
    (main, throttled)
}

async fn sweep(args: &Args, cluster: &Cluster, started: Instant) -> Result<String, String> {
    progress(started, &format!("creating {} Services", args.services));
    let expected = cluster.desired_upstreams(&cluster.create_services(args.services).await?);
    progress(started, "bare-client baseline at each write concurrency");
    let markdown = rows::sweep(cluster, &expected, limits(args).0, &args.sweep_concurrency).await?;
    let path = args
        .out
        .join(format!("baseline-sweep-{}.md", args.services));
    std::fs::write(&path, &markdown)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(markdown)
}

async fn measure(args: &Args, cluster: &Cluster, started: Instant) -> Result<String, String> {
    let (limits, throttled_limits) = limits(args);
    progress(started, &format!("creating {} Services", args.services));
    let setup_started = Instant::now();
    let expected = cluster.desired_upstreams(&cluster.create_services(args.services).await?);
    let setup_seconds = setup_started.elapsed().as_secs_f64();

    progress(started, "phase 1: baseline");
    let baseline = phases::baseline(cluster, &expected, limits).await?;

    let wrapper: Vec<String> = args
        .daemon_wrapper
        .split_whitespace()
        .map(String::from)
        .collect();
    let daemon_args = |limits: WriteLimits| {
        let mut daemon_args = cluster.daemon_args();
        daemon_args.extend(limits.daemon_args());
        daemon_args
    };
    let main_args = daemon_args(limits);
    let throttled_args = daemon_args(throttled_limits);
    let launch = |run: usize, daemon_args| Launch {
        kubeconfig: cluster.setup.kubeconfig(),
        pod_namespace: cluster.write_namespace(),
        args: daemon_args,
        log: args
            .out
            .join(format!("daemon-{}-run{run}.log", args.services)),
        wrapper: &wrapper,
    };
    let deadline = rows::sync_deadline(baseline.apply_seconds);
    progress(started, "phase 2: initial sync");
    let (mut daemon, initial_sync) =
        phases::initial_sync(cluster, &launch(1, &main_args), &expected, deadline).await?;

    let watch = UpstreamWatch::start(cluster, rows::watch_deadline(expected.len())).await?;
    let mut targets = ChurnTargets::new(&expected);
    let upstreams = expected.len();
    // From here on what the daemon should hold is read back from the Services (churn changed
    // them); the setup's copy would only double what the benchmark holds.
    drop(expected);
    let mut churn = Vec::new();
    for rate in &args.churn_rates {
        progress(started, &format!("phase 3: churn at {rate}/s"));
        let phase = phases::churn(
            cluster,
            &mut daemon,
            &watch,
            &mut targets,
            *rate,
            Duration::from_secs(args.churn_seconds),
        )
        .await?;
        if phase.missing > 0 || phase.patch_errors > 0 {
            return Err(format!(
                "churn at {rate}/s: {} Upstream changes never seen, {} Service patches failed",
                phase.missing, phase.patch_errors
            ));
        }
        churn.push(phase);
    }
    drop(watch);
    drop(targets);
    let current = cluster.desired_upstreams(&cluster.list_services().await?);
    cluster.check_upstreams(&current).await?;

    progress(started, "phase 4: idle");
    let idle = phases::idle(cluster, &mut daemon, Duration::from_secs(args.idle_seconds)).await?;

    progress(started, "phase 5: restart");
    let (daemon, restart) = phases::restart(
        cluster,
        daemon,
        &launch(2, &main_args),
        deadline,
        cluster.one_list_pass(current.len(), current.len() / 2),
    )
    .await?;
    cluster.check_upstreams(&current).await?;

    let throttled = if args.skip_throttled {
        drop(daemon);
        None
    } else {
        progress(
            started,
            &format!("phase 6: throttled row ({})", throttled_limits.describe()),
        );
        let row = rows::throttled_row(
            cluster,
            daemon,
            &current,
            limits,
            throttled_limits,
            &launch(3, &throttled_args),
        )
        .await?;
        Some(row)
    };

    let ratios = Ratios::new(args.services, &baseline, &initial_sync, &restart);
    let targets = targets::check_targets(&targets::Run {
        services: args.services,
        ratios: &ratios,
        sync: &initial_sync,
        churn: &churn,
        idle: &idle,
        restart: &restart,
        throttled: throttled.as_ref(),
    });
    progress(started, "done");
    let report = Report {
        services: args.services,
        upstreams,
        limits,
        machine: Machine::read(),
        setup_seconds,
        baseline,
        initial_sync,
        churn,
        idle,
        restart,
        throttled,
        ratios,
        targets,
        total_seconds: started.elapsed().as_secs_f64(),
    };
    let base = args.out.join(format!("discovery-{}", report.services));
    let markdown = report.markdown();
    bench_main::write_reports(&base, &report, &markdown)?;
    Ok(markdown)
}
