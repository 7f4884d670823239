//! The reconcile kit both discovery loops are built from (docs/architecture.md): a work queue keyed
//! by object, per-stream list tracking, backoff, report-once bookkeeping and the leader gate. No
//! network and no knowledge of Services or Lambda: the loops decide what a key means.

mod backoff;
mod gate;
mod lists;
mod queue;
mod report;

pub use backoff::Backoff;
pub use gate::{Fence, LeaderGate, NotLeader};
pub use lists::{ListKey, ListTracker};
pub use queue::{Event as QueueEvent, Finished, WorkQueue};
pub use report::{Change, ReportOnce, SayOnce};
