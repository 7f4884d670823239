//! The metrics of the ReferenceGrants kept with `--reference-grants` (issue 16), apart from the
//! Upstream metrics, whose label sets stay as they are: `reference_grants` (grants owned) and
//! `reference_grant_writes_total{op,result}`. A missing CRD counts in
//! `errors_total{kind="reference_grant_crd_missing"}`.

use prometheus::{IntCounterVec, IntGauge, Registry};

use super::{
    child, counter_vec, int_gauge, saturating_i64, Metrics, MetricsError, WriteOp, WriteResult,
};

#[derive(Clone, Debug)]
pub(super) struct GrantMetrics {
    owned: IntGauge,
    writes: IntCounterVec,
}

impl GrantMetrics {
    pub(super) fn new(registry: &Registry) -> Result<Self, MetricsError> {
        Ok(Self {
            owned: int_gauge(
                registry,
                "reference_grants",
                "ReferenceGrants owned by the daemon (--reference-grants).",
            )?,
            writes: counter_vec(
                registry,
                "reference_grant_writes_total",
                "ReferenceGrant writes by operation and result.",
                &["op", "result"],
            )?,
        })
    }
}

impl Metrics {
    pub fn set_reference_grants(&self, n: usize) {
        self.grants.owned.set(saturating_i64(n));
    }

    pub fn record_grant_write(&self, op: WriteOp, result: WriteResult) {
        if let Some(counter) = child(&self.grants.writes, &[op.as_str(), result.as_str()]) {
            counter.inc();
        }
    }

    pub fn reference_grants(&self) -> i64 {
        self.grants.owned.get()
    }

    pub fn grant_writes(&self, op: WriteOp, result: WriteResult) -> u64 {
        child(&self.grants.writes, &[op.as_str(), result.as_str()]).map_or(0, |c| c.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_metrics_are_apart_from_the_upstream_ones() {
        let metrics = Metrics::new().expect("metrics");
        metrics.set_reference_grants(3);
        metrics.record_grant_write(WriteOp::Create, WriteResult::Success);
        assert_eq!(metrics.reference_grants(), 3);
        assert_eq!(
            metrics.grant_writes(WriteOp::Create, WriteResult::Success),
            1
        );
        let text = metrics.encode().expect("encode");
        assert!(
            text.contains("upstream_discovery_reference_grants 3"),
            "{text}"
        );
        assert!(text.contains(
            "upstream_discovery_reference_grant_writes_total{op=\"create\",result=\"success\"} 1"
        ));
        for source in super::super::Source::ALL {
            assert_eq!(metrics.writes_with_result(source, WriteResult::Success), 0);
        }
    }
}
