//! The results of one run: the targets of issue 15's function-discovery phase, a Markdown table
//! and JSON.

use std::time::Instant;

use serde::Serialize;

use crate::fill::Sizes;
use crate::measure::Settings;

const MIB: f64 = 1024.0 * 1024.0;
/// Clock ticks per second of /proc's CPU times: 100 on every Linux this runs on.
const CLOCK_TICKS: f64 = 100.0;

#[derive(Debug, Serialize)]
pub struct Setup {
    pub moto_seconds: f64,
    /// CreateFunction, UpdateFunctionCode and PublishVersion calls it took.
    pub moto_calls: usize,
    pub objects_seconds: f64,
}

/// The daemon's resource use, from /proc.
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub peak_rss_bytes: u64,
    pub rss_bytes: u64,
    /// User and system CPU time since the process started.
    pub cpu_seconds: f64,
    /// Seconds since the daemon (or phase) started, when read.
    pub at_seconds: f64,
}

impl Usage {
    pub fn read(pid: u32, since: Instant) -> Result<Self, String> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| format!("read /proc/{pid}/status: {e}"))?;
        let kib = |field: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(field))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .map(|n| n * 1024)
                .ok_or_else(|| format!("no {field} in /proc/{pid}/status"))
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_err(|e| format!("read /proc/{pid}/stat: {e}"))?;
        // Fields after the command name (which may hold spaces): utime and stime are the 12th
        // and 13th of them.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        Ok(Self {
            peak_rss_bytes: kib("VmHWM:")?,
            rss_bytes: kib("VmRSS:")?,
            cpu_seconds: (ticks(11) + ticks(12)) / CLOCK_TICKS,
            at_seconds: since.elapsed().as_secs_f64(),
        })
    }
}

#[derive(Debug, Serialize)]
pub struct InitialSync {
    /// From the daemon's start to every Upstream listing its functions.
    pub seconds: f64,
    pub usage: Usage,
    pub upstream_writes: f64,
    pub list_calls: usize,
}

#[derive(Debug, Serialize)]
pub struct Idle {
    pub seconds: f64,
    /// Complete sweeps seen (every account-region at least `--polls`).
    pub sweeps: usize,
    pub calls_per_sweep_min: usize,
    pub calls_per_sweep_max: usize,
    /// Sweeps that started sooner than 0.9 poll intervals after the account-region's last one
    /// ended: more than one sweep in a poll.
    pub early_sweeps: usize,
    pub sweep_seconds_mean: f64,
    pub sweep_seconds_max: f64,
    /// Shortest time from a sweep's end to the next sweep of its account-region.
    pub gap_seconds_min: f64,
    /// `writes_total{source="lambda"}` over the phase.
    pub upstream_writes: f64,
    /// Upstreams whose resourceVersion changed over the phase.
    pub upstreams_changed: usize,
    pub cpu_seconds: f64,
    /// Of one core.
    pub cpu_percent: f64,
}

#[derive(Debug, Serialize)]
pub struct Changes {
    pub rounds: usize,
    /// Upstreams that had to list a new version (one per account-region per round).
    pub affected: usize,
    pub seen: usize,
    pub missed: usize,
    /// From PublishVersion's answer to the Upstream listing the version (polled every 200 ms).
    pub latency_seconds_max: f64,
    pub latency_seconds_median: f64,
    pub upstream_writes: f64,
}

/// One target and whether this run met it.
#[derive(Debug, Serialize)]
pub struct Target {
    pub name: String,
    pub target: String,
    pub measured: String,
    pub met: bool,
}

fn target(name: &str, target: String, measured: String, met: bool) -> Target {
    Target {
        name: name.to_string(),
        target,
        measured,
        met,
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub sizes: Sizes,
    pub poll_interval_seconds: f64,
    pub lambda_api_rps: u32,
    pub entries_per_sweep: usize,
    pub pages_per_sweep: usize,
    pub cpus: usize,
    pub setup: Setup,
    pub initial_sync: InitialSync,
    pub idle: Idle,
    pub changes: Changes,
    /// At the end of the run.
    pub usage: Usage,
    /// ListFunctions calls the proxy answered, and the daemon's own count of them.
    pub list_calls: usize,
    pub daemon_list_calls: f64,
    /// Every other AWS call (GetCallerIdentity, ...).
    pub other_aws_calls: usize,
    /// AWS calls answered with an error status (by moto or the proxy).
    pub aws_errors: usize,
    pub targets: Vec<Target>,
    pub total_seconds: f64,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: &Settings,
        setup: Setup,
        initial_sync: InitialSync,
        idle: Idle,
        changes: Changes,
        usage: Usage,
        list_calls: usize,
        daemon_list_calls: f64,
        other_aws_calls: usize,
    ) -> Self {
        let pages = settings.pages();
        let poll = settings.poll_interval.as_secs_f64();
        let targets = vec![
            target(
                "ListFunctions calls per poll per account-region",
                format!("= ⌈F×V/50⌉ = {pages}, one sweep per poll"),
                format!(
                    "{}–{} per sweep, {} extra sweeps",
                    idle.calls_per_sweep_min, idle.calls_per_sweep_max, idle.early_sweeps
                ),
                idle.calls_per_sweep_min == pages
                    && idle.calls_per_sweep_max == pages
                    && idle.early_sweeps == 0,
            ),
            target(
                "Upstream writes while idle",
                "0".into(),
                format!(
                    "{} ({} resourceVersions changed)",
                    idle.upstream_writes, idle.upstreams_changed
                ),
                idle.upstream_writes == 0.0 && idle.upstreams_changed == 0,
            ),
            target(
                "new version to every affected Upstream",
                format!(
                    "≤ poll interval + sweep duration (max) + 2 s = {:.1} s",
                    poll + idle.sweep_seconds_max + 2.0
                ),
                format!(
                    "max {:.1} s, median {:.1} s, {} of {} seen",
                    changes.latency_seconds_max,
                    changes.latency_seconds_median,
                    changes.seen,
                    changes.affected
                ),
                changes.missed == 0
                    && changes.latency_seconds_max <= poll + idle.sweep_seconds_max + 2.0,
            ),
        ];
        Self {
            sizes: settings.sizes,
            poll_interval_seconds: poll,
            lambda_api_rps: settings.api_rps,
            entries_per_sweep: settings.sizes.entries_per_sweep(),
            pages_per_sweep: pages,
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            setup,
            initial_sync,
            idle,
            changes,
            usage,
            list_calls,
            daemon_list_calls,
            other_aws_calls,
            aws_errors: 0,
            targets,
            total_seconds: 0.0,
        }
    }

    pub fn markdown(&self) -> String {
        let s = &self.sizes;
        let mut out = format!(
            "### Function discovery: {} functions × {} versions × {} accounts × {} regions, {} Upstreams\n\n\
             Poll interval {:.0} s, {} Lambda calls/s per account-region, {} CPUs. Setup (not measured): \
             moto filled in {:.1} s ({} calls), Secrets and Upstreams in {:.1} s. Whole run {:.0} s.\n\n",
            s.functions,
            s.versions,
            s.accounts,
            s.regions,
            s.upstreams,
            self.poll_interval_seconds,
            self.lambda_api_rps,
            self.cpus,
            self.setup.moto_seconds,
            self.setup.moto_calls,
            self.setup.objects_seconds,
            self.total_seconds,
        );
        let sync = &self.initial_sync;
        let idle = &self.idle;
        let changes = &self.changes;
        let rows = [
            (
                "entries per sweep (F×V) / pages",
                format!("{} / {}", self.entries_per_sweep, self.pages_per_sweep),
            ),
            (
                "initial sync: all Upstreams written",
                format!("{:.1} s", sync.seconds),
            ),
            (
                "initial sync: Upstream writes",
                format!("{}", sync.upstream_writes),
            ),
            (
                "initial sync: ListFunctions calls",
                format!("{}", sync.list_calls),
            ),
            (
                "initial sync: peak RSS",
                format!("{:.1} MiB", sync.usage.peak_rss_bytes as f64 / MIB),
            ),
            (
                "initial sync: CPU",
                format!("{:.1} s", sync.usage.cpu_seconds),
            ),
            (
                "idle: sweeps seen",
                format!("{} in {:.0} s", idle.sweeps, idle.seconds),
            ),
            (
                "idle: ListFunctions calls per sweep",
                format!("{}–{}", idle.calls_per_sweep_min, idle.calls_per_sweep_max),
            ),
            (
                "idle: sweeps started early (< 0.9 interval after the last start)",
                format!("{}", idle.early_sweeps),
            ),
            (
                "idle: sweep duration mean / max",
                format!(
                    "{:.1} s / {:.1} s",
                    idle.sweep_seconds_mean, idle.sweep_seconds_max
                ),
            ),
            (
                "idle: shortest pause between sweeps",
                format!("{:.1} s", idle.gap_seconds_min),
            ),
            (
                "idle: Upstream writes (metric / resourceVersions changed)",
                format!("{} / {}", idle.upstream_writes, idle.upstreams_changed),
            ),
            (
                "idle: CPU",
                format!(
                    "{:.1} s ({:.1} % of a core)",
                    idle.cpu_seconds, idle.cpu_percent
                ),
            ),
            (
                "change: new version to Upstream, median / max",
                format!(
                    "{:.1} s / {:.1} s",
                    changes.latency_seconds_median, changes.latency_seconds_max
                ),
            ),
            (
                "change: worst case of the daemon's schedule (sweeps at a fixed rate: interval + one sweep)",
                format!(
                    "{:.1} s",
                    self.poll_interval_seconds + idle.sweep_seconds_mean
                ),
            ),
            (
                "change: affected Upstreams seen / missed",
                format!("{} / {}", changes.seen, changes.missed),
            ),
            (
                "change: Upstream writes",
                format!("{}", changes.upstream_writes),
            ),
            (
                "peak RSS (VmHWM, whole run)",
                format!("{:.1} MiB", self.usage.peak_rss_bytes as f64 / MIB),
            ),
            (
                "CPU (whole run)",
                format!(
                    "{:.1} s in {:.0} s",
                    self.usage.cpu_seconds, self.usage.at_seconds
                ),
            ),
            (
                "ListFunctions calls: proxy / daemon's metric",
                format!("{} / {}", self.list_calls, self.daemon_list_calls),
            ),
            (
                "other AWS calls (GetCallerIdentity, ...)",
                format!("{}", self.other_aws_calls),
            ),
            (
                "AWS calls answered with an error",
                format!("{}", self.aws_errors),
            ),
        ];
        out.push_str("| measure | value |\n|---|---|\n");
        for (name, value) in rows {
            out.push_str(&format!("| {name} | {value} |\n"));
        }
        out.push_str("\n| target | goal | measured | met |\n|---|---|---|---|\n");
        for t in &self.targets {
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                t.name,
                t.target,
                t.measured,
                if t.met { "yes" } else { "**no**" }
            ));
        }
        out
    }
}
