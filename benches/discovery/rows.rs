//! The second row of a run, the baseline and a fresh daemon's initial sync under the
//! client-side throttle issue 6 ran with; and the bare client's concurrency sweep, which chose
//! the main row's `--write-concurrency`.

use std::time::Duration;

use upstream_discovery::crd::Upstream;

use crate::cluster::Cluster;
use crate::phases::{self, WriteLimits, SIGTERM_LIMIT};
use crate::process::{DaemonProcess, Launch};
use crate::report::ThrottledRow;

/// How long an initial sync (or a restart) may take: ten times the bare client's time for the
/// same writes, and never less than two minutes.
pub fn sync_deadline(apply_seconds: f64) -> Duration {
    Duration::from_secs_f64((apply_seconds * 10.0).max(120.0))
}

/// How long the benchmark's own watch may take to page through `upstreams` Upstreams before
/// it counts as started: two minutes, plus 5 ms per Upstream (10 min at 100,000).
pub fn watch_deadline(upstreams: usize) -> Duration {
    Duration::from_secs(120) + Duration::from_millis(5 * upstreams as u64)
}

/// Stops `daemon`, empties the write namespace (with the main row's limits: that is not
/// measured), then measures the bare client and a fresh daemon under `throttled`. `launch`
/// must give the daemon the throttled limits.
pub async fn throttled_row(
    cluster: &Cluster,
    daemon: DaemonProcess,
    upstreams: &[Upstream],
    unthrottled: WriteLimits,
    throttled: WriteLimits,
    launch: &Launch<'_>,
) -> Result<ThrottledRow, String> {
    stop(daemon)?;
    phases::delete_upstreams(cluster, upstreams, unthrottled).await?;
    let baseline = phases::baseline(cluster, upstreams, throttled).await?;
    let deadline = sync_deadline(baseline.apply_seconds);
    let (daemon, initial_sync) = phases::initial_sync(cluster, launch, upstreams, deadline).await?;
    stop(daemon)?;
    Ok(ThrottledRow::new(throttled, baseline, initial_sync))
}

fn stop(daemon: DaemonProcess) -> Result<(), String> {
    tokio::task::block_in_place(|| daemon.terminate(SIGTERM_LIMIT)).map(|_| ())
}

/// The bare client's baseline at each of `concurrencies` (the rest of `limits` kept), as a
/// Markdown table: the concurrency past which it writes no faster is the API server's limit.
pub async fn sweep(
    cluster: &Cluster,
    upstreams: &[Upstream],
    limits: WriteLimits,
    concurrencies: &[usize],
) -> Result<String, String> {
    let mut out = format!(
        "Bare-client baseline, {} Upstreams, --kube-api-qps {} --kube-api-burst {}\n\n\
         | write concurrency | apply (s) | applies/s | delete (s) |\n|---|---|---|---|\n",
        upstreams.len(),
        limits.qps,
        limits.burst
    );
    for &concurrency in concurrencies {
        let limits = WriteLimits {
            concurrency,
            ..limits
        };
        let baseline = phases::baseline(cluster, upstreams, limits).await?;
        let row = format!(
            "| {concurrency} | {:.2} | {:.0} | {:.2} |\n",
            baseline.apply_seconds,
            upstreams.len() as f64 / baseline.apply_seconds,
            baseline.delete_seconds
        );
        eprint!("{row}");
        out.push_str(&row);
    }
    Ok(out)
}
