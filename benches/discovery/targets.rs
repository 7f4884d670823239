//! The targets of issue 6 (now the floor) and of issue 15 (the goals), each for the sizes it was
//! set for. A target set for another size is still measured and printed, marked n/a: a 2,000
//! Service smoke run shows what the 10,000 goals would read without claiming to meet them.

use serde::Serialize;

use crate::phases::{Churn, Idle, InitialSync, Restart};
use crate::report::{millis, Ratios, ThrottledRow};

const MIB: f64 = 1024.0 * 1024.0;
/// The size issue 15's memory goals are set for.
const GOAL_10K: usize = 10_000;
/// The size of issue 15's large run.
const GOAL_50K: usize = 50_000;

/// The sizes (Services) a target is set for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    All,
    AtMost(usize),
    Exactly(usize),
    AtLeast(usize),
}

impl Scale {
    pub fn applies(self, services: usize) -> bool {
        match self {
            Self::All => true,
            Self::AtMost(n) => services <= n,
            Self::Exactly(n) => services == n,
            Self::AtLeast(n) => services >= n,
        }
    }

    pub fn describe(self) -> String {
        match self {
            Self::All => "all N".to_string(),
            Self::AtMost(n) => format!("N ≤ {}", thousands(n)),
            Self::Exactly(n) => format!("N = {}", thousands(n)),
            Self::AtLeast(n) => format!("N ≥ {}", thousands(n)),
        }
    }
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// One target and whether this run met it.
#[derive(Debug, Serialize)]
pub struct Target {
    pub name: String,
    /// The sizes it is set for, e.g. "N = 10,000".
    pub scale: String,
    pub target: String,
    pub measured: String,
    /// `None`: not set for this run's size (measured all the same).
    pub met: Option<bool>,
}

impl Target {
    pub fn met_cell(&self) -> &'static str {
        match self.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "n/a",
        }
    }
}

/// What the targets are checked against.
pub struct Run<'a> {
    pub services: usize,
    pub ratios: &'a Ratios,
    pub sync: &'a InitialSync,
    pub churn: &'a [Churn],
    pub idle: &'a Idle,
    pub restart: &'a Restart,
    pub throttled: Option<&'a ThrottledRow>,
}

/// Collects targets, each marked n/a when this run's size is not one it is set for.
struct Targets {
    services: usize,
    list: Vec<Target>,
}

impl Targets {
    fn add(&mut self, scale: Scale, name: &str, target: &str, measured: String, met: bool) {
        self.list.push(Target {
            name: name.to_string(),
            scale: scale.describe(),
            target: target.to_string(),
            measured,
            met: scale.applies(self.services).then_some(met),
        });
    }
}

/// Every target, checked against `run`: issue 6's first (churn lag targets for 20/s and
/// 100/s), then issue 15's.
pub fn check_targets(run: &Run<'_>) -> Vec<Target> {
    let mut targets = Targets {
        services: run.services,
        list: Vec::new(),
    };
    floor_targets(&mut targets, run);
    goal_targets(&mut targets, run);
    targets.list
}

fn floor_targets(t: &mut Targets, run: &Run<'_>) {
    let ratio = run.ratios.initial_sync_over_baseline;
    t.add(
        Scale::All,
        "initial sync / baseline",
        "<= 1.15",
        format!("{ratio:.2}"),
        ratio <= 1.15,
    );
    if let Some(throttled) = run.throttled {
        let ratio = throttled.initial_sync_over_baseline;
        t.add(
            Scale::All,
            &format!(
                "initial sync / baseline, throttled row (QPS {})",
                throttled.limits.qps
            ),
            "<= 1.15",
            format!("{ratio:.2}"),
            ratio <= 1.15,
        );
    }
    let writes = run.ratios.upstream_writes_per_upstream;
    t.add(
        Scale::All,
        "writes per Upstream at initial sync",
        "<= 1",
        format!("{writes:.3}"),
        writes <= 1.0,
    );
    let peak = mib(run.sync.usage.peak_rss_bytes);
    t.add(
        Scale::AtMost(GOAL_10K),
        "peak RSS at initial sync",
        "< 64 MiB",
        format!("{peak:.1} MiB"),
        peak < 64.0,
    );
    for phase in run.churn {
        let limit = if phase.rate <= 20.0 { 0.1 } else { 0.25 };
        let p99 = phase.daemon_lag.p99;
        t.add(
            Scale::All,
            &format!("lag_seconds p99 at {}/s", phase.rate),
            &format!("< {} ms", limit * 1000.0),
            millis(p99),
            p99.is_some_and(|p99| p99 < limit),
        );
    }
    let idle = run.idle;
    t.add(
        Scale::All,
        "Upstream writes while idle",
        "0",
        format!("{}", idle.upstream_writes.max(idle.daemon_writes)),
        idle.upstream_writes == 0.0 && idle.daemon_writes == 0.0,
    );
    t.add(
        Scale::All,
        "lists while idle (namespaced: the daemon's)",
        "0",
        format!("{}", idle.lists),
        idle.lists == 0.0,
    );
    t.add(
        Scale::All,
        "Upstream writes after a restart",
        "0",
        format!("{}", restart_writes(run.restart)),
        restart_writes(run.restart) == 0.0,
    );
}

fn goal_targets(t: &mut Targets, run: &Run<'_>) {
    let sync_peak = mib(run.sync.usage.peak_rss_bytes);
    let restart_peak = mib(run.restart.usage.peak_rss_bytes);
    let ten_k = Scale::Exactly(GOAL_10K);
    t.add(
        ten_k,
        "peak RSS at initial sync",
        "< 32 MiB",
        format!("{sync_peak:.1} MiB"),
        sync_peak < 32.0,
    );
    t.add(
        ten_k,
        "peak RSS on restart",
        "< 32 MiB",
        format!("{restart_peak:.1} MiB"),
        restart_peak < 32.0,
    );
    t.add(
        ten_k,
        "restart peak RSS / initial-sync peak RSS",
        "<= 1",
        format!("{:.2}", restart_peak / sync_peak.max(f64::MIN_POSITIVE)),
        run.restart.usage.peak_rss_bytes <= run.sync.usage.peak_rss_bytes,
    );

    let large = Scale::AtLeast(GOAL_50K);
    let ratio = run.ratios.initial_sync_over_baseline;
    t.add(
        large,
        "initial sync / baseline",
        "<= 1.05",
        format!("{ratio:.2}"),
        ratio <= 1.05,
    );
    let peak = sync_peak.max(restart_peak);
    t.add(
        large,
        "peak RSS (initial sync and restart)",
        "< 96 MiB",
        format!("{peak:.1} MiB"),
        peak < 96.0,
    );
    let ready = run.restart.ready_seconds;
    let writes = restart_writes(run.restart);
    t.add(
        large,
        "start to /readyz after a restart, with zero writes",
        "< 15 s, 0 writes",
        format!("{ready:.2} s, {writes} writes"),
        ready < 15.0 && writes == 0.0,
    );
    let at_100 = run
        .churn
        .iter()
        .find(|phase| (phase.rate - 100.0).abs() < 1e-9);
    let p99 = at_100.and_then(|phase| phase.daemon_lag.p99);
    t.add(
        large,
        "lag_seconds p99 at 100/s",
        "< 100 ms",
        match at_100 {
            Some(_) => millis(p99),
            None => "no 100/s phase".to_string(),
        },
        p99.is_some_and(|p99| p99 < 0.1),
    );
}

fn restart_writes(restart: &Restart) -> f64 {
    restart.upstream_writes.max(restart.daemon_writes)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}
