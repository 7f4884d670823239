//! Benchmark of issue 6: is the daemon fast and light at N Services, against the limit of the
//! API server? It starts its own test environment (tests/env/start.sh), creates N Services with
//! two ports each, and runs, in one go:
//!
//! 1. baseline: a bare client applies the 2N Upstreams the daemon would write, with the same
//!    QPS, burst and concurrency as the daemon gets, then deletes them (the floor);
//! 2. initial sync: the daemon's time to all Upstreams correct, API requests, peak RSS, CPU;
//! 3. churn: Services changed at each `--churn-rates` for `--churn-seconds`: lag;
//! 4. idle for `--idle-seconds`: writes, lists, CPU;
//! 5. restart: SIGTERM, start again: time to ready, writes.
//!
//! It prints a Markdown table and writes it with a JSON file under `--out`. It fails (exit 1)
//! only when the benchmark itself breaks; missed targets are reported, not failed.
//!
//! `cargo bench --bench discovery -- --services 10000`

// The e2e tests' environment and scenario, shared as they are (the bench uses part of them).
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

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

use cluster::Cluster;
use phases::{ChurnTargets, UpstreamWatch, WriteLimits};
use process::Launch;
use report::{Machine, Ratios, Report};

#[derive(Debug, Parser)]
#[command(about = "Benchmark upstream-discovery against a real API server (issue 6)")]
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
    /// Client-side write limit of the baseline client and the daemon.
    #[arg(long, default_value_t = 500)]
    kube_api_qps: u32,
    #[arg(long, default_value_t = 500)]
    kube_api_burst: u32,
    #[arg(long, default_value_t = 32)]
    write_concurrency: usize,
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("benchmark failed: no tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(report) => {
            println!("{}", report.markdown());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("benchmark failed: {error}");
            ExitCode::FAILURE
        }
    }
}

fn progress(started: Instant, message: &str) {
    eprintln!("[{:7.1}s] {message}", started.elapsed().as_secs_f64());
}

async fn run(args: &Args) -> Result<Report, String> {
    if args.services == 0 || args.churn_rates.iter().any(|rate| *rate <= 0.0) {
        return Err("--services and --churn-rates must be positive".into());
    }
    let started = Instant::now();
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let limits = WriteLimits {
        qps: args.kube_api_qps,
        burst: args.kube_api_burst,
        concurrency: args.write_concurrency,
    };

    progress(started, "starting the test environment");
    let cluster = Cluster::start().await?;
    let result = measure(args, &cluster, limits, started).await;
    cluster.env.stop();
    let report = result?;
    write_reports(&args.out, &report)?;
    Ok(report)
}

async fn measure(
    args: &Args,
    cluster: &Cluster,
    limits: WriteLimits,
    started: Instant,
) -> Result<Report, String> {
    progress(started, &format!("creating {} Services", args.services));
    let setup_started = Instant::now();
    let services = cluster.create_services(args.services).await?;
    let setup_seconds = setup_started.elapsed().as_secs_f64();
    let expected = cluster.desired_upstreams(&services);

    progress(started, "phase 1: baseline");
    let baseline = phases::baseline(cluster, &expected, limits).await?;

    let mut daemon_args = cluster.daemon_args();
    daemon_args.extend(limits.daemon_args());
    let wrapper: Vec<String> = args
        .daemon_wrapper
        .split_whitespace()
        .map(String::from)
        .collect();
    let launch = |run: usize| Launch {
        kubeconfig: cluster.setup.kubeconfig(),
        pod_namespace: cluster.write_namespace(),
        args: &daemon_args,
        log: args
            .out
            .join(format!("daemon-{}-run{run}.log", args.services)),
        wrapper: &wrapper,
    };
    let deadline = Duration::from_secs_f64((baseline.apply_seconds * 10.0).max(120.0));
    progress(started, "phase 2: initial sync");
    let (mut daemon, initial_sync) =
        phases::initial_sync(cluster, &launch(1), &expected, deadline).await?;

    let watch = UpstreamWatch::start(cluster).await?;
    let mut targets = ChurnTargets::new(&expected);
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
    let current = cluster.desired_upstreams(&cluster.list_services().await?);
    cluster.check_upstreams(&current).await?;

    progress(started, "phase 4: idle");
    let idle = phases::idle(cluster, &mut daemon, Duration::from_secs(args.idle_seconds)).await?;

    progress(started, "phase 5: restart");
    let (daemon, restart) = phases::restart(cluster, daemon, &launch(2), deadline).await?;
    drop(daemon);
    cluster.check_upstreams(&current).await?;

    let ratios = Ratios::new(args.services, &baseline, &initial_sync);
    let targets = report::check_targets(&ratios, &initial_sync, &churn, &idle, &restart);
    progress(started, "done");
    Ok(Report {
        services: args.services,
        upstreams: expected.len(),
        limits,
        machine: Machine::read(),
        setup_seconds,
        baseline,
        initial_sync,
        churn,
        idle,
        restart,
        ratios,
        targets,
        total_seconds: started.elapsed().as_secs_f64(),
    })
}

fn write_reports(out: &Path, report: &Report) -> Result<(), String> {
    let base = out.join(format!("discovery-{}", report.services));
    let json = serde_json::to_string_pretty(report).map_err(|e| format!("JSON report: {e}"))?;
    for (path, text) in [
        (base.with_extension("json"), json),
        (base.with_extension("md"), report.markdown()),
    ] {
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
