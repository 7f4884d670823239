//! The results of one run: ratios, the targets of issues 6 and 15 (by the size they are set
//! for), a Markdown table and JSON.

use serde::Serialize;

use crate::phases::{Baseline, Churn, Idle, InitialSync, Quantiles, Restart, WriteLimits};
use crate::targets::Target;

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
    /// The second row: baseline and initial sync again under a client-side throttle.
    pub throttled: Option<ThrottledRow>,
    pub ratios: Ratios,
    pub targets: Vec<Target>,
    pub total_seconds: f64,
}

/// The baseline and the daemon's initial sync once more, both under the client-side throttle
/// the first benchmark ran with (QPS 500): the ratio of issue 6, kept for comparison.
#[derive(Debug, Serialize)]
pub struct ThrottledRow {
    pub limits: WriteLimits,
    pub baseline: Baseline,
    pub initial_sync: InitialSync,
    pub initial_sync_over_baseline: f64,
}

impl ThrottledRow {
    pub fn new(limits: WriteLimits, baseline: Baseline, initial_sync: InitialSync) -> Self {
        Self {
            limits,
            initial_sync_over_baseline: initial_sync.seconds / baseline.apply_seconds,
            baseline,
            initial_sync,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Ratios {
    pub initial_sync_over_baseline: f64,
    pub peak_rss_kib_per_service: f64,
    /// Peak RSS scaled to 10,000 Services (the fixed cost included, so small runs read high).
    pub initial_sync_peak_rss_mib_per_10k_services: f64,
    pub restart_peak_rss_mib_per_10k_services: f64,
    pub api_requests_per_service: f64,
    pub upstream_writes_per_upstream: f64,
}

impl Ratios {
    pub fn new(
        services: usize,
        baseline: &Baseline,
        sync: &InitialSync,
        restart: &Restart,
    ) -> Self {
        let services = services.max(1) as f64;
        let per_10k = |bytes: u64| bytes as f64 / MIB / services * 10_000.0;
        Self {
            initial_sync_over_baseline: sync.seconds / baseline.apply_seconds,
            peak_rss_kib_per_service: sync.usage.peak_rss_bytes as f64 / 1024.0 / services,
            initial_sync_peak_rss_mib_per_10k_services: per_10k(sync.usage.peak_rss_bytes),
            restart_peak_rss_mib_per_10k_services: per_10k(restart.usage.peak_rss_bytes),
            api_requests_per_service: sync.requests_total / services,
            upstream_writes_per_upstream: sync.upstream_writes / sync.upstreams.max(1) as f64,
        }
    }
}

pub fn millis(seconds: Option<f64>) -> String {
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

/// LISTs per resource beside one pass, from the API server's own `apiserver_request_total`.
fn list_passes(lists: &crate::phases::ListCounts) -> String {
    format!(
        "upstreams {} (one pass: {}), services {} (one pass: {})",
        lists.upstreams, lists.one_pass.upstreams, lists.services, lists.one_pass.services
    )
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
        row("initial sync", "LIST requests", list_passes(&sync.lists));
        row(
            "initial sync",
            "peak RSS (VmHWM)",
            mib(sync.usage.peak_rss_bytes),
        );
        row(
            "initial sync",
            "of it file-backed (the code that ran: RssFile)",
            mib(sync.usage.file_rss_bytes),
        );
        row(
            "initial sync",
            "peak RSS per 10,000 Services",
            format!(
                "{:.1} MiB",
                self.ratios.initial_sync_peak_rss_mib_per_10k_services
            ),
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
        row(
            "restart",
            "LIST requests",
            list_passes(&restart.list_counts),
        );
        row(
            "restart",
            "GET upstreams",
            format!("{}", restart.list_counts.upstream_gets),
        );
        row("restart", "peak RSS", mib(restart.usage.peak_rss_bytes));
        row(
            "restart",
            "of it file-backed (the code that ran: RssFile)",
            mib(restart.usage.file_rss_bytes),
        );
        row(
            "restart",
            "peak RSS per 10,000 Services",
            format!(
                "{:.1} MiB",
                self.ratios.restart_peak_rss_mib_per_10k_services
            ),
        );
        if let Some(throttled) = &self.throttled {
            let phase = format!("throttled (QPS {})", throttled.limits.qps);
            row(
                &phase,
                "baseline: apply 2N Upstreams",
                format!("{:.2} s", throttled.baseline.apply_seconds),
            );
            row(
                &phase,
                "initial sync: time to all Upstreams correct",
                format!("{:.2} s", throttled.initial_sync.seconds),
            );
            row(
                &phase,
                "initial sync: writes (daemon / API server)",
                format!(
                    "{} / {}",
                    throttled.initial_sync.daemon_writes, throttled.initial_sync.upstream_writes
                ),
            );
            row(
                &phase,
                "initial sync: peak RSS",
                mib(throttled.initial_sync.usage.peak_rss_bytes),
            );
        }

        let throttled_limits = self.throttled.as_ref().map_or(String::new(), |row| {
            format!(" (throttled row: {})", row.limits.describe())
        });
        let mut out = format!(
            "N = {} Services ({} Upstreams), {}{throttled_limits}; {}\n\n",
            self.services,
            self.upstreams,
            self.limits.describe(),
            self.machine.describe()
        );
        out.push_str("| phase | measure | value |\n|---|---|---|\n");
        for (phase, measure, value) in rows {
            out.push_str(&format!("| {phase} | {measure} | {value} |\n"));
        }
        let throttled_ratio = self.throttled.as_ref().map_or(String::new(), |row| {
            format!(" (throttled row: {:.2})", row.initial_sync_over_baseline)
        });
        out.push_str(&format!(
            "\nRatios: initial sync / baseline = {:.2}{throttled_ratio}; peak RSS per Service = {:.2} KiB; peak RSS per 10,000 Services = {:.1} MiB at initial sync, {:.1} MiB on restart; API requests per Service at initial sync = {:.2}; Upstream writes per Upstream = {:.3}\n\n",
            self.ratios.initial_sync_over_baseline,
            self.ratios.peak_rss_kib_per_service,
            self.ratios.initial_sync_peak_rss_mib_per_10k_services,
            self.ratios.restart_peak_rss_mib_per_10k_services,
            self.ratios.api_requests_per_service,
            self.ratios.upstream_writes_per_upstream,
        ));
        out.push_str("| target | for | goal | measured | met |\n|---|---|---|---|---|\n");
        for t in &self.targets {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                t.name,
                t.scale,
                t.target,
                t.measured,
                t.met_cell()
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
