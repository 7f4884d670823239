//! Benchmark of issue 13's hostile input: do normal Services converge as fast beside thousands
//! of hostile ones (invalid JSON, 200 KiB values, nesting 10,000 deep, unknown fields) as they
//! do alone? Target: within 1.5x.
//!
//! One daemon and one test environment for the whole run, so that the two measurements differ
//! only in what sits beside the normal Services:
//! 1. alone: `--rounds` batches of `--normal` Services in a namespace of their own, before any
//!    hostile Service exists; the time from the first create until a watch has shown every
//!    Upstream as expected;
//! 2. `--hostile` hostile Services created in another namespace, until each is counted;
//! 3. beside: the same batches in the hostile namespace.
//!
//! The median of each side gives the ratio. It prints the figures and exits non-zero only when
//! the benchmark itself breaks; a missed target is reported, not failed.
//!
//! `cargo bench --bench hostile -- --hostile 2000 --normal 1000`

// The e2e tests' environment, scenario and hostile Services, shared as they are.
#[path = "shared/bench_main.rs"]
mod bench_main;
#[allow(dead_code)]
#[path = "../tests/e2e/daemon.rs"]
mod daemon;
#[allow(dead_code)]
#[path = "../tests/e2e/hostile.rs"]
mod hostile;
#[allow(dead_code)]
#[path = "../tests/e2e/scenario.rs"]
mod scenario;
#[allow(dead_code)]
#[path = "../tests/e2e/support.rs"]
mod support;
#[allow(dead_code)]
#[path = "../tests/e2e/test_env.rs"]
mod test_env;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

use hostile::{create_hostile, hostile_annotations, skipped, time_to_converge};
use scenario::Scenario;
use test_env::TestEnv;

/// The bound on the slowdown.
const TARGET_RATIO: f64 = 1.5;
/// Normal Services converged before anything is measured (first connections, first writes).
const WARM_UP: usize = 20;
/// How long the hostile Services may take to be counted before the run is called broken.
const HOSTILE_DEADLINE: Duration = Duration::from_secs(900);

#[derive(Debug, Parser)]
#[command(about = "Normal Services beside hostile ones, against alone (issue 13)")]
struct Args {
    #[arg(long, default_value_t = 2000)]
    hostile: usize,
    /// Normal Services per batch.
    #[arg(long, default_value_t = 1000)]
    normal: usize,
    /// Batches on each side; the medians are compared.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// More arguments for the daemon, split at spaces (e.g. "--watch-timeout 30s").
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    daemon_args: String,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    bench_main::report_main(async { run(&args).await.map(|()| String::new()) })
}

async fn run(args: &Args) -> Result<(), String> {
    if args.normal == 0 || args.rounds == 0 {
        return Err("--normal and --rounds must be positive".into());
    }
    let env = Arc::new(tokio::task::block_in_place(TestEnv::start)?);
    let result = measure(args, env.clone()).await;
    let dropped = dropped_watchers(&env);
    env.stop();
    eprintln!("kube-apiserver dropped {dropped} watcher(s) as unresponsive during the run");
    let (alone, beside) = result?;
    report(args, &alone, &beside);
    Ok(())
}

/// How often kube-apiserver dropped a watcher it found too slow (its log says so; the client
/// is not told, see `--watch-timeout`).
fn dropped_watchers(env: &TestEnv) -> usize {
    let log = env.state_dir.join("logs/kube-apiserver.log");
    std::fs::read_to_string(log)
        .map(|text| {
            text.lines()
                .filter(|line| line.contains("Forcing watcher close"))
                .count()
        })
        .unwrap_or_default()
}

/// Median of `times`, in seconds.
fn median(times: &[Duration]) -> f64 {
    let mut seconds: Vec<f64> = times.iter().map(Duration::as_secs_f64).collect();
    seconds.sort_by(f64::total_cmp);
    seconds[seconds.len() / 2]
}

fn batch(round: usize, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("normal-{round}-{i:04}"))
        .collect()
}

async fn measure(args: &Args, env: Arc<TestEnv>) -> Result<(Vec<Duration>, Vec<Duration>), String> {
    let started = Instant::now();
    let progress = |message: &str| {
        eprintln!("[{:7.1}s] {message}", started.elapsed().as_secs_f64());
    };
    let scenario = Scenario::builder(env, "hostilebench")
        .another_namespace("base")
        .build()
        .await;
    let (admin, hostile_ns, write) = (
        &scenario.admin,
        scenario.service_ns.clone(),
        scenario.write_ns.clone(),
    );
    let base_ns = scenario.others[0].clone();
    scenario.grant_function_discovery(&base_ns).await;
    let mut daemon_args = vec![
        "run".to_string(),
        "--watch-namespaces".into(),
        format!("{hostile_ns},{base_ns}"),
        "--lease-name".into(),
        "upstream-discovery".into(),
    ];
    daemon_args.extend(args.daemon_args.split_whitespace().map(String::from));
    let daemon = scenario.daemon().exact_args(daemon_args).ready().await;

    progress("warm-up");
    let warm_up: Vec<String> = (0..WARM_UP).map(|i| format!("warm-{i:04}")).collect();
    time_to_converge(admin, &base_ns, &write, &warm_up).await;
    daemon.wait_idle().await;

    let mut alone = Vec::new();
    for round in 0..args.rounds {
        let time = time_to_converge(admin, &base_ns, &write, &batch(round, args.normal)).await;
        daemon.wait_idle().await;
        progress(&format!("alone, round {round}: {time:.2?}"));
        alone.push(time);
    }

    progress(&format!("creating {} hostile Services", args.hostile));
    let annotations: Vec<_> = (0..args.hostile).map(hostile_annotations).collect();
    let mut per_reason: BTreeMap<&str, f64> = BTreeMap::new();
    for (_, reason) in &annotations {
        *per_reason.entry(reason).or_default() += 1.0;
    }
    let hostile_started = Instant::now();
    create_hostile(admin, &hostile_ns, &annotations).await;
    // Not the tests' two-minute wait: at full size on a debug build this is minutes of work,
    // and whether the count still rises or has stopped is what tells slow from stuck.
    let wanted: f64 = per_reason.values().sum();
    let mut last_report = Instant::now();
    loop {
        let found = skipped(&daemon, &per_reason).await;
        if found == per_reason {
            break;
        }
        let counted: f64 = found.values().sum();
        if hostile_started.elapsed() > HOSTILE_DEADLINE {
            return Err(format!(
                "{counted} of {wanted} hostile Services counted after {HOSTILE_DEADLINE:?}"
            ));
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            progress(&format!("{counted} of {wanted} hostile Services counted"));
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    daemon.wait_idle().await;
    progress(&format!(
        "hostile Services counted {:.2?} after their first create",
        hostile_started.elapsed()
    ));

    let mut beside = Vec::new();
    for round in 0..args.rounds {
        let time = time_to_converge(admin, &hostile_ns, &write, &batch(round, args.normal)).await;
        daemon.wait_idle().await;
        progress(&format!("beside, round {round}: {time:.2?}"));
        beside.push(time);
    }
    daemon.terminate(Duration::from_secs(10));
    scenario.cleanup().await;
    Ok((alone, beside))
}

fn report(args: &Args, alone: &[Duration], beside: &[Duration]) {
    let (alone_median, beside_median) = (median(alone), median(beside));
    let ratio = beside_median / alone_median;
    let verdict = if ratio <= TARGET_RATIO {
        "met"
    } else {
        "MISSED"
    };
    println!(
        "| normal Services per batch | hostile Services | rounds | alone (median) | beside (median) | ratio | target |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {alone_median:.2} s | {beside_median:.2} s | {ratio:.2} | <= {TARGET_RATIO} {verdict} |",
        args.normal, args.hostile, args.rounds
    );
}
