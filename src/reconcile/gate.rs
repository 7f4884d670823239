//! The leader gate: only the leader writes; followers keep their caches warm. Both loops read
//! leadership through it, so a lost election task closes the gate the same way for both.
//!
//! Leadership is a claim that expires: the [`Fence`] holds the instant until which the last
//! renewal of the Lease makes this replica's writes safe. It is read at the moment of each
//! write, not from a flag some task updates, so a replica that was paused (SIGSTOP) or starved
//! past that instant refuses its own writes on waking, before the election task runs again.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;
use tokio::time::Instant;

/// Until when this replica may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Validity {
    /// No election (`--leader-elect=false`): always.
    Always,
    /// Until this instant, unless renewed.
    Until(Instant),
    /// Not the leader.
    Closed,
}

/// The write permission leadership gives, shared by the election (which extends or closes it)
/// and every writer (which checks it).
#[derive(Debug, Clone)]
pub struct Fence(Arc<Mutex<Validity>>);

impl Fence {
    /// Writes are always allowed: there is no election.
    pub fn always() -> Self {
        Self(Arc::new(Mutex::new(Validity::Always)))
    }

    /// Writes are not allowed until [`Fence::extend_until`].
    pub fn closed() -> Self {
        Self(Arc::new(Mutex::new(Validity::Closed)))
    }

    fn set(&self, validity: Validity) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = validity;
    }

    fn get(&self) -> Validity {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A renewal succeeded: writes are safe until `until`.
    pub fn extend_until(&self, until: Instant) {
        self.set(Validity::Until(until));
    }

    /// Leadership is lost or given up.
    pub fn close(&self) {
        self.set(Validity::Closed);
    }

    /// Whether a write may start now.
    pub fn is_valid(&self) -> bool {
        match self.get() {
            Validity::Always => true,
            Validity::Until(until) => Instant::now() < until,
            Validity::Closed => false,
        }
    }

    /// When a write started now must be abandoned: `Err(NotLeader)` if it may not start at all,
    /// `Ok(None)` if it has no deadline.
    pub fn deadline(&self) -> Result<Option<Instant>, NotLeader> {
        match self.get() {
            Validity::Always => Ok(None),
            Validity::Until(until) if Instant::now() < until => Ok(Some(until)),
            Validity::Until(_) | Validity::Closed => Err(NotLeader),
        }
    }
}

/// A write refused because this replica's leadership is not (or no longer) current.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not the leader (or the lease was not renewed in time): write refused")]
pub struct NotLeader;

pub struct LeaderGate {
    receiver: watch::Receiver<bool>,
    fence: Fence,
    /// The election task is gone: without a lease, never write again.
    closed: bool,
}

impl LeaderGate {
    pub fn new(receiver: watch::Receiver<bool>, fence: Fence) -> Self {
        Self {
            receiver,
            fence,
            closed: false,
        }
    }

    /// Whether this replica may write now.
    pub fn is_open(&self) -> bool {
        !self.closed && *self.receiver.borrow() && self.fence.is_valid()
    }

    /// Waits for leadership to change and returns the new value; never returns again once the
    /// election is gone (after one last `false`).
    pub async fn changed(&mut self) -> bool {
        if self.closed {
            return std::future::pending().await;
        }
        if self.receiver.changed().await.is_err() {
            tracing::error!("leader election ended; no longer writing");
            self.closed = true;
            return false;
        }
        *self.receiver.borrow_and_update()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_gate_follows_the_election_and_closes_for_good_when_it_ends() {
        let (sender, receiver) = watch::channel(false);
        let mut gate = LeaderGate::new(receiver, Fence::always());
        assert!(!gate.is_open());
        sender.send(true).expect("send");
        assert!(gate.changed().await);
        assert!(gate.is_open());
        drop(sender);
        assert!(!gate.changed().await);
        assert!(!gate.is_open());
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(20), gate.changed()).await;
        assert!(waited.is_err(), "no further changes once closed");
    }

    #[tokio::test(start_paused = true)]
    async fn the_fence_expires_by_the_clock_alone() {
        let fence = Fence::closed();
        assert!(!fence.is_valid());
        assert_eq!(fence.deadline(), Err(NotLeader));
        let until = Instant::now() + std::time::Duration::from_secs(10);
        fence.extend_until(until);
        let (_sender, receiver) = watch::channel(true);
        let gate = LeaderGate::new(receiver, fence.clone());
        assert!(gate.is_open());
        assert_eq!(fence.deadline(), Ok(Some(until)));
        // Nobody closes it: time passing is enough, as for a process paused past its lease.
        tokio::time::advance(std::time::Duration::from_secs(10)).await;
        assert!(!fence.is_valid());
        assert!(
            !gate.is_open(),
            "the gate reads the fence at the moment it is asked"
        );
        assert_eq!(fence.deadline(), Err(NotLeader));
        fence.extend_until(Instant::now() + std::time::Duration::from_secs(1));
        assert!(gate.is_open());
        fence.close();
        assert!(!gate.is_open());
        assert_eq!(Fence::always().deadline(), Ok(None));
    }
}
