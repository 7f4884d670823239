//! The bench's phases: setup, initial sync, idle polls, changes; see `benches/lambda.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kube::api::ListParams;
use kube::Api;
use upstream_discovery::crd::Upstream;

use crate::daemon::Daemon;
use crate::fill::{self, AccountRegion, BenchUpstream, Moto, Sizes};
use crate::pager::{Call, Pager, PAGE_SIZE};
use crate::progress;
use crate::report::{Changes, Idle, InitialSync, Report, Setup, Usage};
use crate::scenario::Scenario;
use crate::test_env::TestEnv;

pub struct Settings {
    pub sizes: Sizes,
    pub poll_interval: Duration,
    pub api_rps: u32,
    pub polls: usize,
    pub changes: usize,
    /// Where the daemon's log is copied at the end.
    pub log: PathBuf,
}

impl Settings {
    /// ListFunctions pages of one sweep of an account-region: the target calls per poll.
    pub fn pages(&self) -> usize {
        self.sizes.entries_per_sweep().div_ceil(PAGE_SIZE)
    }

    /// The shortest a sweep can take at the daemon's rate limit (first call free).
    fn sweep_estimate(&self) -> Duration {
        Duration::from_secs_f64(self.pages().saturating_sub(1) as f64 / f64::from(self.api_rps))
    }
}

/// What the run needs to find its way among the calls and Upstreams.
struct Rig<'a> {
    settings: &'a Settings,
    upstreams: Api<Upstream>,
    pager: Pager,
    daemon: Daemon,
    moto: Moto,
    account_regions: Vec<AccountRegion>,
    /// (access key id, region) to account-region.
    keys: HashMap<(String, String), usize>,
    bench_upstreams: Vec<BenchUpstream>,
}

pub async fn run(
    env: &TestEnv,
    scenario: &Scenario,
    settings: &Settings,
    started: Instant,
) -> Result<Report, String> {
    let sizes = settings.sizes;
    let moto_url = env.get("MOTO_URL").to_string();
    let moto = Moto::new(&moto_url);
    progress(
        started,
        &format!(
            "filling moto: {} accounts × {} regions × {} functions × {} versions",
            sizes.accounts, sizes.regions, sizes.functions, sizes.versions
        ),
    );
    let fill_started = Instant::now();
    let (accounts, account_regions) = moto.fill(&sizes).await?;
    let moto_seconds = fill_started.elapsed().as_secs_f64();
    progress(
        started,
        &format!(
            "moto filled in {moto_seconds:.1} s; creating {} Upstreams",
            sizes.upstreams
        ),
    );
    let bench_upstreams = fill::upstreams(&sizes);
    let objects_started = Instant::now();
    fill::create_objects(
        &scenario.admin,
        &scenario.service_ns,
        &accounts,
        &account_regions,
        &bench_upstreams,
    )
    .await?;
    let setup = Setup {
        moto_seconds,
        moto_calls: sizes.account_regions()
            * sizes.functions
            * (sizes.versions + sizes.versions.saturating_sub(2)),
        objects_seconds: objects_started.elapsed().as_secs_f64(),
    };

    let pager = Pager::start(&moto_url).await;
    let poll = format!("{}ms", settings.poll_interval.as_millis());
    let rps = settings.api_rps.to_string();
    progress(started, "starting the daemon");
    let daemon = scenario
        .daemon()
        .args(&["--lambda-poll-interval", &poll, "--lambda-api-rps", &rps])
        .env("AWS_ENDPOINT_URL", pager.url())
        .start();
    let daemon_started = Instant::now();
    let keys = account_regions
        .iter()
        .map(|ar| {
            (
                (
                    accounts[ar.account].access_key_id.clone(),
                    ar.region.clone(),
                ),
                ar.index,
            )
        })
        .collect();
    let mut rig = Rig {
        settings,
        upstreams: Api::namespaced(scenario.admin.clone(), &scenario.service_ns),
        pager,
        daemon,
        moto,
        account_regions,
        keys,
        bench_upstreams,
    };
    let result = phases(&mut rig, setup, daemon_started, started).await;
    if let Err(error) = std::fs::write(&settings.log, rig.daemon.logs()) {
        eprintln!("cannot keep the daemon's log: {error}");
    }
    let Rig { daemon, pager, .. } = rig;
    drop(daemon);
    pager.shutdown().await;
    result
}

async fn phases(
    rig: &mut Rig<'_>,
    setup: Setup,
    daemon_started: Instant,
    started: Instant,
) -> Result<Report, String> {
    let settings = rig.settings;
    progress(started, "phase: initial sync");
    let initial_sync = initial_sync(rig, daemon_started).await?;
    progress(
        started,
        &format!(
            "initial sync in {:.1} s; phase: idle for {} polls",
            initial_sync.seconds, settings.polls
        ),
    );
    let idle = idle(rig, started).await?;
    progress(started, "phase: changes");
    let changes = changes(rig, started).await?;
    let usage = Usage::read(rig.daemon.pid(), daemon_started)?;
    let calls = rig.pager.calls();
    let list_calls = calls
        .iter()
        .filter(|c| c.operation == "ListFunctions")
        .count();
    if list_calls == 0 {
        return Err("the proxy saw no ListFunctions call: nothing was measured".into());
    }
    let metrics = rig.daemon.metrics().await;
    let daemon_list_calls = metric(&metrics, |name| {
        name.contains("lambda_api_calls_total") && name.contains("operation=\"ListFunctions\"")
    });
    let mut report = Report::new(
        settings,
        setup,
        initial_sync,
        idle,
        changes,
        usage,
        list_calls,
        daemon_list_calls,
        calls
            .iter()
            .filter(|c| c.operation != "ListFunctions")
            .count(),
    );
    report.aws_errors = calls.iter().filter(|c| c.status >= 400).count();
    Ok(report)
}

fn metric(metrics: &BTreeMap<String, f64>, select: impl Fn(&str) -> bool) -> f64 {
    metrics
        .iter()
        .filter(|(name, _)| select(name))
        .map(|(_, value)| value)
        .sum()
}

async fn lambda_writes(daemon: &Daemon) -> f64 {
    metric(&daemon.metrics().await, |name| {
        name.contains("upstream_discovery_writes_total") && name.contains("source=\"lambda\"")
    })
}

/// Every Upstream of the bench: its resourceVersion and the `logicalName`s it lists.
async fn current(
    api: &Api<Upstream>,
) -> Result<HashMap<String, (String, BTreeSet<String>)>, String> {
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("list Upstreams: {e}"))?;
    Ok(list
        .items
        .into_iter()
        .map(|u| {
            let names = u
                .spec
                .aws
                .and_then(|aws| aws.lambda_functions)
                .unwrap_or_default()
                .into_iter()
                .map(|f| f.logical_name)
                .collect();
            (
                u.metadata.name.unwrap_or_default(),
                (u.metadata.resource_version.unwrap_or_default(), names),
            )
        })
        .collect())
}

fn daemon_alive(daemon: &mut Daemon) -> Result<(), String> {
    if daemon.running() {
        Ok(())
    } else {
        let logs = daemon.logs();
        let tail: Vec<&str> = logs.lines().rev().take(20).collect();
        Err(format!(
            "the daemon exited; last lines of its log:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ))
    }
}

async fn initial_sync(rig: &mut Rig<'_>, daemon_started: Instant) -> Result<InitialSync, String> {
    let settings = rig.settings;
    let deadline =
        Duration::from_secs(300) + settings.sweep_estimate() * 4 + settings.poll_interval;
    loop {
        daemon_alive(&mut rig.daemon)?;
        let now = current(&rig.upstreams).await?;
        let done = rig
            .bench_upstreams
            .iter()
            .filter(|u| {
                now.get(&u.name)
                    .is_some_and(|(_, names)| *names == u.expected)
            })
            .count();
        if done == rig.bench_upstreams.len() {
            let seconds = daemon_started.elapsed().as_secs_f64();
            return Ok(InitialSync {
                seconds,
                usage: Usage::read(rig.daemon.pid(), daemon_started)?,
                upstream_writes: lambda_writes(&rig.daemon).await,
                list_calls: rig
                    .pager
                    .calls()
                    .iter()
                    .filter(|c| c.operation == "ListFunctions")
                    .count(),
            });
        }
        if daemon_started.elapsed() > deadline {
            return Err(format!(
                "initial sync: {done} of {} Upstreams right after {deadline:?}",
                rig.bench_upstreams.len()
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One sweep as the proxy saw it.
#[derive(Debug, Clone)]
struct Sweep {
    account_region: usize,
    calls: usize,
    start: Instant,
    end: Option<Instant>,
}

/// Sweeps (by listing) that started at or after `since`, in order of start.
fn sweeps(rig: &Rig<'_>, calls: &[Call], since: Instant) -> Vec<Sweep> {
    let mut by_id: BTreeMap<u64, Sweep> = BTreeMap::new();
    for call in calls
        .iter()
        .filter(|c| c.operation == "ListFunctions" && c.sweep != 0)
    {
        let key = (call.access_key_id.clone(), call.region.clone());
        let Some(&account_region) = rig.keys.get(&key) else {
            continue;
        };
        let sweep = by_id.entry(call.sweep).or_insert(Sweep {
            account_region,
            calls: 0,
            start: call.at,
            end: None,
        });
        sweep.calls += 1;
        if call.first_page {
            sweep.start = call.at;
        }
        if call.last_page {
            sweep.end = Some(call.at);
        }
    }
    let mut list: Vec<Sweep> = by_id.into_values().filter(|s| s.start >= since).collect();
    list.sort_by_key(|s| s.start);
    list
}

async fn idle(rig: &mut Rig<'_>, started: Instant) -> Result<Idle, String> {
    let settings = rig.settings;
    let ars = rig.account_regions.len();
    let idle_start = Instant::now();
    let before = current(&rig.upstreams).await?;
    let writes_before = lambda_writes(&rig.daemon).await;
    let cpu_before = Usage::read(rig.daemon.pid(), idle_start)?;
    let cycle = settings.poll_interval + settings.sweep_estimate();
    let deadline = cycle * 3 * u32::try_from(settings.polls + 1).unwrap_or(u32::MAX)
        + Duration::from_secs(120);
    let complete = loop {
        daemon_alive(&mut rig.daemon)?;
        let complete: Vec<Sweep> = sweeps(rig, &rig.pager.calls(), idle_start)
            .into_iter()
            .filter(|s| s.end.is_some())
            .collect();
        let fewest = (0..ars)
            .map(|k| complete.iter().filter(|s| s.account_region == k).count())
            .min()
            .unwrap_or(0);
        if fewest >= settings.polls {
            break complete;
        }
        if idle_start.elapsed() > deadline {
            return Err(format!(
                "idle: some account-region swept only {fewest} times in {deadline:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let idle_end = Instant::now();
    let seconds = idle_end.duration_since(idle_start).as_secs_f64();
    let usage = Usage::read(rig.daemon.pid(), idle_start)?;
    let after = current(&rig.upstreams).await?;
    let changed = after
        .iter()
        .filter(|(name, (rv, _))| before.get(*name).is_none_or(|(old, _)| old != rv))
        .count();
    let writes = lambda_writes(&rig.daemon).await - writes_before;
    progress(
        started,
        &format!("idle: {} sweeps in {seconds:.1} s", complete.len()),
    );

    // One sweep per poll: sweeps of an account-region start at a fixed rate, a poll interval
    // after the last one started (right after it, when it overran); one that starts sooner
    // than 0.9 of an interval after the last start is a second sweep in the same poll.
    let mut early = 0;
    let mut gaps = Vec::new();
    for k in 0..ars {
        let own: Vec<&Sweep> = complete.iter().filter(|s| s.account_region == k).collect();
        for pair in own.windows(2) {
            let gap = pair[1]
                .start
                .saturating_duration_since(pair[0].end.unwrap_or(pair[0].start));
            gaps.push(gap.as_secs_f64());
            if pair[1].start < pair[0].start + settings.poll_interval.mul_f64(0.9) {
                early += 1;
            }
        }
    }
    let calls: Vec<usize> = complete.iter().map(|s| s.calls).collect();
    let durations: Vec<f64> = complete
        .iter()
        .filter_map(|s| Some(s.end?.duration_since(s.start).as_secs_f64()))
        .collect();
    Ok(Idle {
        seconds,
        sweeps: complete.len(),
        calls_per_sweep_min: calls.iter().copied().min().unwrap_or(0),
        calls_per_sweep_max: calls.iter().copied().max().unwrap_or(0),
        early_sweeps: early,
        sweep_seconds_mean: durations.iter().sum::<f64>() / durations.len().max(1) as f64,
        sweep_seconds_max: durations.iter().copied().fold(0.0, f64::max),
        gap_seconds_min: gaps.iter().copied().fold(f64::INFINITY, f64::min),
        upstream_writes: writes,
        upstreams_changed: changed,
        cpu_seconds: usage.cpu_seconds - cpu_before.cpu_seconds,
        cpu_percent: (usage.cpu_seconds - cpu_before.cpu_seconds) / seconds.max(1e-9) * 100.0,
    })
}

/// Where in the poll cycle each round publishes, as a fraction of it.
const PHASES: &[f64] = &[0.15, 0.55, 0.85, 0.35, 0.7];

async fn changes(rig: &mut Rig<'_>, started: Instant) -> Result<Changes, String> {
    let settings = rig.settings;
    let sizes = settings.sizes;
    // Sweeps start at a fixed rate: one cycle is a poll interval, whatever a sweep takes.
    let cycle = settings.poll_interval.as_secs_f64();
    let mut latencies = Vec::new();
    let mut missed = 0;
    let mut writes = 0.0;
    for round in 0..settings.changes {
        // Publish at a different point of account-region 0's cycle each round.
        let last_start = sweeps(rig, &rig.pager.calls(), started)
            .iter()
            .rev()
            .find(|s| s.account_region == 0)
            .map(|s| s.start)
            .unwrap_or_else(Instant::now);
        let mut at = last_start + Duration::from_secs_f64(cycle * PHASES[round % PHASES.len()]);
        while at < Instant::now() {
            at += Duration::from_secs_f64(cycle);
        }
        tokio::time::sleep_until(at.into()).await;
        let writes_before = lambda_writes(&rig.daemon).await;
        let index = sizes.functions - 1 - round % sizes.functions;
        let published = futures::future::try_join_all(rig.account_regions.iter().map(|ar| {
            let group = index % sizes.groups(ar.index);
            let name = fill::function_name(group, index);
            let moto = &rig.moto;
            async move {
                let version = moto.publish(&ar.client, &name).await?;
                Ok::<_, String>((
                    format!("lambda-{:02}-{group:04}", ar.index),
                    format!("{name}:{version}"),
                    Instant::now(),
                ))
            }
        }))
        .await?;
        rig.pager.moto_changed();
        let deadline = Duration::from_secs_f64(cycle * 3.0) + Duration::from_secs(60);
        let round_started = Instant::now();
        let mut waiting: Vec<(String, String, Instant)> = published;
        while !waiting.is_empty() {
            daemon_alive(&mut rig.daemon)?;
            let mut still = Vec::new();
            for (upstream, entry, published_at) in waiting {
                let has = rig
                    .upstreams
                    .get_opt(&upstream)
                    .await
                    .map_err(|e| format!("get Upstream {upstream}: {e}"))?
                    .and_then(|u| u.spec.aws)
                    .and_then(|aws| aws.lambda_functions)
                    .is_some_and(|list| list.iter().any(|f| f.logical_name == entry));
                if has {
                    latencies.push(published_at.elapsed().as_secs_f64());
                } else {
                    still.push((upstream, entry, published_at));
                }
            }
            waiting = still;
            if round_started.elapsed() > deadline {
                missed += waiting.len();
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        writes += lambda_writes(&rig.daemon).await - writes_before;
        progress(started, &format!("change round {} done", round + 1));
    }
    latencies.sort_by(f64::total_cmp);
    Ok(Changes {
        rounds: settings.changes,
        affected: settings.changes * rig.account_regions.len(),
        seen: latencies.len(),
        missed,
        latency_seconds_max: latencies.last().copied().unwrap_or(f64::NAN),
        latency_seconds_median: latencies
            .get(latencies.len() / 2)
            .copied()
            .unwrap_or(f64::NAN),
        upstream_writes: writes,
    })
}
