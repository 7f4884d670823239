//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's semantics and a fence:
//! only the leader writes, followers keep their caches warm and take over when the lease
//! expires. A leader that has not renewed within the renew deadline steps down at that instant
//! (its [`Fence`] closes by the clock, even while a renewal hangs), so its writes stop before
//! another replica can take the Lease. The rule itself is in `election`; this module only reads
//! and writes the Lease.

mod election;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use election::{Attempt, Election};
pub use election::{Timing, TimingError};

use crate::reconcile::Fence;

/// Whether this replica leads, the fence its writes check, and the task that keeps the lease.
pub struct Leadership {
    pub is_leader: watch::Receiver<bool>,
    pub fence: Fence,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

/// The outcome of one try to acquire or renew.
enum Tried {
    /// This replica holds the Lease, renewed by a write that started at the given instant.
    Holding(Instant),
    /// Another replica holds it.
    Other(String),
}

impl Leadership {
    /// Always the leader (`--leader-elect=false`).
    pub fn always() -> Self {
        let (sender, is_leader) = watch::channel(true);
        // Kept alive for the life of the process so the receiver never reports a closed channel.
        std::mem::forget(sender);
        Self {
            is_leader,
            fence: Fence::always(),
            stop: CancellationToken::new(),
            task: None,
        }
    }

    /// Competes for the Lease `name` in `namespace` as `identity`.
    pub fn elect(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: Timing,
    ) -> Self {
        let (sender, is_leader) = watch::channel(false);
        let fence = Fence::closed();
        let stop = CancellationToken::new();
        let keeper = Keeper {
            leases: Api::namespaced(client, namespace),
            name: name.to_string(),
            election: Election::new(identity, timing),
            fence: fence.clone(),
            sender,
            last_error: None,
        };
        let task = tokio::spawn(keeper.run(stop.clone()));
        Self {
            is_leader,
            fence,
            stop,
            task: Some(task),
        }
    }

    /// Stops writing and gives the lease up, so another replica takes over at once instead of
    /// after it expires.
    pub async fn release(self, timeout: Duration) {
        self.fence.close();
        self.stop.cancel();
        if let Some(task) = self.task {
            if tokio::time::timeout(timeout, task).await.is_err() {
                tracing::warn!("releasing the lease timed out; it will expire");
            }
        }
    }
}

/// The task that keeps (or waits for) the Lease.
struct Keeper {
    leases: Api<Lease>,
    name: String,
    election: Election,
    fence: Fence,
    sender: watch::Sender<bool>,
    /// The last failure said, so that a Lease API that stays away logs once.
    last_error: Option<String>,
}

impl Keeper {
    async fn run(mut self, stop: CancellationToken) {
        let timing = self.election.timing();
        // Until the first renewal, "leading" has no deadline to miss.
        let mut valid_until: Option<Instant> = None;
        loop {
            let tried = tokio::select! {
                () = stop.cancelled() => break,
                () = sleep_until(valid_until) => {
                    self.step_down("the lease was not renewed within the renew deadline");
                    valid_until = None;
                    continue;
                }
                tried = tokio::time::timeout(timing.renew_deadline, self.try_once()) => tried,
            };
            match tried {
                Ok(Ok(Tried::Holding(started))) => {
                    // Measured from the start of the write: the server may have stored it at
                    // any point after, and others count their lease duration from what they
                    // saw, later still.
                    let until = started + timing.renew_deadline;
                    self.fence.extend_until(until);
                    valid_until = Some(until);
                    self.last_error = None;
                    if !*self.sender.borrow() {
                        tracing::info!(lease = %self.name, "became the leader");
                        let _ = self.sender.send(true);
                    }
                }
                Ok(Ok(Tried::Other(holder))) => {
                    if valid_until.take().is_some() {
                        self.step_down(&format!("the Lease is held by {holder}"));
                    }
                    self.last_error = None;
                }
                Ok(Err(error)) => self.report(error.to_string()),
                Err(_) => self.report(format!("no answer within {:?}", timing.renew_deadline)),
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = sleep_until(valid_until) => {
                    self.step_down("the lease was not renewed within the renew deadline");
                    valid_until = None;
                }
                () = tokio::time::sleep(jittered(timing.retry_period)) => {}
            }
        }
        self.fence.close();
        let _ = self.sender.send(false);
        if valid_until.is_some() {
            self.release().await;
        }
    }

    fn step_down(&mut self, why: &str) {
        self.fence.close();
        if *self.sender.borrow() {
            tracing::warn!(lease = %self.name, reason = why, "stepping down: no more writes until the lease is held again");
            let _ = self.sender.send(false);
        }
    }

    fn report(&mut self, error: String) {
        if self.last_error.as_deref() != Some(error.as_str()) {
            tracing::warn!(lease = %self.name, %error, "cannot read or write the Lease; retrying");
            self.last_error = Some(error);
        }
    }

    async fn try_once(&mut self) -> Result<Tried, kube::Error> {
        let started = Instant::now();
        let current = self.leases.get_opt(&self.name).await?;
        let attempt = self.election.attempt(
            current.as_ref().and_then(|lease| lease.spec.as_ref()),
            started,
            Timestamp::now(),
        );
        match attempt {
            Attempt::Wait { holder } => Ok(Tried::Other(holder)),
            Attempt::Create(spec) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec),
                };
                self.leases.create(&PostParams::default(), &lease).await?;
                Ok(Tried::Holding(started))
            }
            Attempt::Write(spec) => {
                let mut lease = current.unwrap_or_default();
                lease.spec = Some(spec);
                lease.metadata.managed_fields = None;
                // The resourceVersion read makes this a compare-and-swap: a replica that
                // lost a race gets 409 and reads again.
                self.leases
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await?;
                Ok(Tried::Holding(started))
            }
        }
    }

    async fn release(&mut self) {
        let result = async {
            let Some(mut lease) = self.leases.get_opt(&self.name).await? else {
                return Ok(false);
            };
            let Some(spec) = lease
                .spec
                .as_ref()
                .and_then(|spec| self.election.release(spec, Timestamp::now()))
            else {
                return Ok(false);
            };
            lease.spec = Some(spec);
            lease.metadata.managed_fields = None;
            self.leases
                .replace(&self.name, &PostParams::default(), &lease)
                .await
                .map(|_| true)
        }
        .await;
        match result {
            Ok(true) => tracing::info!(lease = %self.name, "lease released"),
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(lease = %self.name, %error, "could not release the lease; it will expire")
            }
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// client-go adds up to 20% of jitter to the retry period, so replicas do not beat in step.
fn jittered(period: Duration) -> Duration {
    period.mul_f64(1.0 + rand::random::<f64>() * 0.2)
}
