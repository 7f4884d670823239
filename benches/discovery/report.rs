//! The results of one run: ratios, the targets of issue 6, a Markdown table and JSON.

use serde::Serialize;

use crate::phases::{Baseline, Churn, Idle, InitialSync, Quantiles, Restart, WriteLimits};

const MIB: f64 = 1024.0 * 1024.0;

#[derive(Debug, Serialize)]
pub struct Report {
    pub services: usize,
    pub upstreams: usize,
    pub limits: WriteLimits,
    pub machine: Machine,
    pub setup_seconds: f64,
    pub baseline: Baseline,
    pub initial_sync: InitialSync,
    pub churn: Vec<Churn>,
    pub idle: Idle,
    pub restart: Restart,
    pub ratios: Ratios,
    pub targets: Vec<Target>,
    pub total_seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct Ratios {
    pub initial_sync_over_baseline: f64,
    pub peak_rss_kib_per_service: f64,
    pub api_requests_per_service: f64,
    pub upstream_writes_per_upstream: f64,
}

impl Ratios {
    pub fn new(services: usize, baseline: &Baseline, sync: &InitialSync) -> Self {
        let services = services.max(1) as f64;
        Self {
            initial_sync_over_baseline: sync.seconds / baseline.apply_seconds,
            peak_rss_kib_per_service: sync.usage.peak_rss_bytes as f64 / 1024.0 / services,
            api_requests_per_service: sync.requests_total / services,
            upstream_writes_per_upstream: sync.upstream_writes / sync.upstreams.max(1) as f64,
        }
    }
}

/// One target of issue 6 and whether this run met it.
#[derive(Debug, Serialize)]
pub struct Target {
    pub name: String,
    pub target: String,
    pub measured: String,
    pub met: bool,
}

fn target(name: &str, target: &str, measured: String, met: bool) -> Target {
    Target {
        name: name.to_string(),
        target: target.to_string(),
        measured,
        met,
    }
}

/// The targets, checked against this run (churn lag targets for the rates 20/s and 100/s).
pub fn check_targets(
    ratios: &Ratios,
    sync: &InitialSync,
    churn: &[Churn],
    idle: &Idle,
    restart: &Restart,
) -> Vec<Target> {
    let peak_mib = sync.usage.peak_rss_bytes as f64 / MIB;
    let mut targets = vec![
        target(
            "initial sync / baseline",
            "<= 1.15",
            format!("{:.2}", ratios.initial_sync_over_baseline),
            ratios.initial_sync_over_baseline <= 1.15,
        ),
        target(
            "writes per Upstream at initial sync",
            "<= 1",
            format!("{:.3}", ratios.upstream_writes_per_upstream),
            ratios.upstream_writes_per_upstream <= 1.0,
        ),
        target(
            "peak RSS at initial sync (target is for 10,000 Services)",
            "< 64 MiB",
            format!("{peak_mib:.1} MiB"),
            peak_mib < 64.0,
        ),
    ];
    for phase in churn {
        let limit = if phase.rate <= 20.0 { 0.1 } else { 0.25 };
        let p99 = phase.daemon_lag.p99;
        targets.push(target(
            &format!("lag_seconds p99 at {}/s", phase.rate),
            &format!("< {} ms", limit * 1000.0),
            millis(p99),
            p99.is_some_and(|p99| p99 < limit),
        ));
    }
    targets.extend([
        target(
            "Upstream writes while idle",
            "0",
            format!("{}", idle.upstream_writes.max(idle.daemon_writes)),
            idle.upstream_writes == 0.0 && idle.daemon_writes == 0.0,
        ),
        target(
            "lists while idle (namespaced: the daemon's)",
            "0",
            format!("{}", idle.lists),
            idle.lists == 0.0,
        ),
        target(
            "Upstream writes after a restart",
            "0",
            format!("{}", restart.upstream_writes.max(restart.daemon_writes)),
            restart.upstream_writes == 0.0 && restart.daemon_writes == 0.0,
        ),
    ]);
    targets
}

fn millis(seconds: Option<f64>) -> String {
    seconds.map_or("n/a".to_string(), |s| format!("{:.1} ms", s * 1000.0))
}

fn quantiles(q: &Quantiles) -> String {
    format!(
        "p50 {} / p90 {} / p99 {} (n={})",
        millis(q.p50),
        millis(q.p90),
        millis(q.p99),
        q.count
    )
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB)
}

fn requests(map: &std::collections::BTreeMap<String, f64>) -> String {
    if map.is_empty() {
        return "none".to_string();
    }
    map.iter()
        .map(|(key, count)| format!("{key} {count}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut rows: Vec<(String, String, String)> = Vec::new();
        let mut row = |phase: &str, measure: &str, value: String| {
            rows.push((phase.to_string(), measure.to_string(), value));
        };
        let base = &self.baseline;
        row(
            "baseline",
            "apply 2N Upstreams (floor)",
            format!("{:.2} s", base.apply_seconds),
        );
        row(
            "baseline",
            "delete them",
            format!("{:.2} s", base.delete_seconds),
        );
        let sync = &self.initial_sync;
        row(
            "initial sync",
            "time to all Upstreams correct",
            format!("{:.2} s", sync.seconds),
        );
        row(
            "initial sync",
            "writes (daemon / API server)",
            format!("{} / {}", sync.daemon_writes, sync.upstream_writes),
        );
        row(
            "initial sync",
            "API requests by verb",
            requests(&sync.requests),
        );
        row(
            "initial sync",
            "peak RSS (VmHWM)",
            mib(sync.usage.peak_rss_bytes),
        );
        row(
            "initial sync",
            "CPU",
            format!("{:.2} s", sync.usage.cpu_seconds),
        );
        for churn in &self.churn {
            let phase = format!("churn {}/s", churn.rate);
            row(
                &phase,
                "Services changed (missing Upstream changes)",
                format!("{} ({})", churn.services_changed, churn.missing),
            );
            row(&phase, "lag_seconds", quantiles(&churn.daemon_lag));
            row(&phase, "end-to-end lag", quantiles(&churn.end_to_end_lag));
            row(&phase, "writes", format!("{}", churn.daemon_writes));
            row(&phase, "CPU", format!("{:.2} s", churn.cpu_seconds));
        }
        let idle = &self.idle;
        let phase = format!("idle {} s", idle.seconds);
        row(
            &phase,
            "Upstream writes",
            format!("{}", idle.upstream_writes),
        );
        row(&phase, "lists (namespaced)", format!("{}", idle.lists));
        row(&phase, "watch restarts", format!("{}", idle.watch_restarts));
        row(&phase, "API requests", requests(&idle.requests));
        row(&phase, "CPU", format!("{:.3} s", idle.cpu_seconds));
        let restart = &self.restart;
        row(
            "restart",
            "SIGTERM to exit",
            format!("{:.2} s", restart.stop_seconds),
        );
        row(
            "restart",
            "start to /readyz 200",
            format!("{:.2} s", restart.ready_seconds),
        );
        row(
            "restart",
            "writes (daemon / API server)",
            format!("{} / {}", restart.daemon_writes, restart.upstream_writes),
        );
        row("restart", "API requests", requests(&restart.requests));
        row("restart", "peak RSS", mib(restart.usage.peak_rss_bytes));

        let mut out = format!(
            "N = {} Services ({} Upstreams), --kube-api-qps {} --kube-api-burst {} --write-concurrency {}; {}\n\n",
            self.services,
            self.upstreams,
            self.limits.qps,
            self.limits.burst,
            self.limits.concurrency,
            self.machine.describe()
        );
        out.push_str("| phase | measure | value |\n|---|---|---|\n");
        for (phase, measure, value) in rows {
            out.push_str(&format!("| {phase} | {measure} | {value} |\n"));
        }
        out.push_str(&format!(
            "\nRatios: initial sync / baseline = {:.2}; peak RSS per Service = {:.2} KiB; API requests per Service at initial sync = {:.2}; Upstream writes per Upstream = {:.3}\n\n",
            self.ratios.initial_sync_over_baseline,
            self.ratios.peak_rss_kib_per_service,
            self.ratios.api_requests_per_service,
            self.ratios.upstream_writes_per_upstream,
        ));
        out.push_str("| target | goal | measured | met |\n|---|---|---|---|\n");
        for t in &self.targets {
            let met = if t.met { "yes" } else { "**no**" };
            out.push_str(&format!(
                "| {} | {} | {} | {met} |\n",
                t.name, t.target, t.measured
            ));
        }
        out
    }
}

/// What the numbers were measured on.
#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
}

impl Machine {
    pub fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let field = |text: &str, name: &str| -> String {
            text.lines()
                .find(|line| line.starts_with(name))
                .and_then(|line| line.split_once(':'))
                .map(|(_, value)| value.trim().to_string())
                .unwrap_or_default()
        };
        let mem_kib: f64 = field(&meminfo, "MemTotal")
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        Self {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: field(&cpuinfo, "model name"),
            memory_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "{} CPUs ({}), {} GiB, Linux {}",
            self.cpus, self.cpu_model, self.memory_gib, self.kernel
        )
    }
}
