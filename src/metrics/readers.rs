//! Readers of the metrics' current values, for the daemon's tests and for diagnostics (apart
//! from `mod.rs`, which holds the metrics themselves and is at the size limit).

use std::time::Duration;

use super::{child, existing, ApiResult, Metrics, Source, WatchResource, WriteOp, WriteResult};
use crate::model::{ErrorKind, SkipReason};

impl Metrics {
    pub fn writes(&self, source: Source, op: WriteOp, result: WriteResult) -> u64 {
        child(
            &self.writes,
            &[source.as_str(), op.as_str(), result.as_str()],
        )
        .map_or(0, |c| c.get())
    }

    /// Total writes of `source` with `result`, whatever the operation.
    pub fn writes_with_result(&self, source: Source, result: WriteResult) -> u64 {
        WriteOp::ALL
            .into_iter()
            .map(|op| self.writes(source, op, result))
            .sum()
    }

    pub fn lag_count(&self, source: Source) -> u64 {
        child(&self.lag, &[source.as_str()]).map_or(0, |h| h.get_sample_count())
    }

    pub fn lag_sum(&self, source: Source) -> Duration {
        child(&self.lag, &[source.as_str()])
            .map(|h| h.get_sample_sum())
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .unwrap_or_default()
    }

    pub fn upstreams(&self, source: Source) -> i64 {
        child(&self.upstreams, &[source.as_str()]).map_or(0, |g| g.get())
    }

    pub fn pending(&self) -> i64 {
        self.pending.get()
    }

    /// Unix seconds of the last sync of `source`, 0 if never.
    pub fn last_sync(&self, source: Source) -> f64 {
        child(&self.last_sync, &[source.as_str()]).map_or(0.0, |g| g.get())
    }

    pub fn watch_silence_renewals(&self, resource: WatchResource) -> u64 {
        child(&self.watch_silence_renewals, &[resource.as_str()]).map_or(0, |c| c.get())
    }

    pub fn watch_restarts(&self, resource: WatchResource) -> u64 {
        child(&self.watch_restarts, &[resource.as_str()]).map_or(0, |c| c.get())
    }

    pub fn skipped_count(&self, reason: SkipReason) -> u64 {
        existing(&self.skipped, &[("reason", reason.as_str())]).map_or(0, |c| c.get())
    }

    pub fn is_leader(&self) -> bool {
        self.is_leader.get() == 1
    }

    pub fn settings_reloads(&self) -> u64 {
        self.settings_reloads.get()
    }

    pub fn errors(&self, kind: ErrorKind) -> u64 {
        existing(&self.errors, &[("kind", kind.as_str())]).map_or(0, |c| c.get())
    }

    pub fn lambda_api_calls(&self, operation: &str, result: ApiResult) -> u64 {
        existing(
            &self.lambda_api_calls,
            &[("operation", operation), ("result", result.as_str())],
        )
        .map_or(0, |c| c.get())
    }

    /// `None` when the Upstream has no series (never set, or forgotten).
    pub fn lambda_functions(&self, namespace: &str, upstream: &str) -> Option<i64> {
        existing(
            &self.lambda_functions,
            &[("namespace", namespace), ("upstream", upstream)],
        )
        .map(|g| g.get())
    }
}
