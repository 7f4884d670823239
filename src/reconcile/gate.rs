//! The leader gate: only the leader writes; followers keep their caches warm. Both loops read
//! leadership through it, so a lost election task closes the gate the same way for both.

use tokio::sync::watch;

pub struct LeaderGate {
    receiver: watch::Receiver<bool>,
    /// The election task is gone: without a lease, never write again.
    closed: bool,
}

impl LeaderGate {
    pub fn new(receiver: watch::Receiver<bool>) -> Self {
        Self {
            receiver,
            closed: false,
        }
    }

    /// Whether this replica may write now.
    pub fn is_open(&self) -> bool {
        !self.closed && *self.receiver.borrow()
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
        let mut gate = LeaderGate::new(receiver);
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
}
