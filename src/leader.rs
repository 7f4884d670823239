//! Leader election on a `coordination.k8s.io/v1` Lease (through `kube-lease-manager`): only
//! the leader writes, followers keep their caches warm and take over when the lease expires.

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a lease lasts without renewal, in seconds.
pub const LEASE_DURATION_SECONDS: u64 = 15;
/// Renewed this many seconds before it expires: every 10 s.
pub const LEASE_GRACE_SECONDS: u64 = 5;

#[derive(Debug, thiserror::Error)]
#[error("cannot set up leader election on Lease {namespace}/{name}: {source}")]
pub struct LeaderError {
    namespace: String,
    name: String,
    source: kube_lease_manager::LeaseManagerError,
}

/// Whether this replica leads, and the task that keeps the lease.
pub struct Leadership {
    pub is_leader: watch::Receiver<bool>,
    task: Option<
        JoinHandle<Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError>>,
    >,
}

impl Leadership {
    /// Always the leader (`--leader-elect=false`).
    pub fn always() -> Self {
        let (sender, is_leader) = watch::channel(true);
        // Kept alive for the life of the process so the receiver never reports a closed channel.
        std::mem::forget(sender);
        Self {
            is_leader,
            task: None,
        }
    }

    /// Competes for the Lease `name` in `namespace` as `identity`.
    pub async fn elect(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
    ) -> Result<Self, LeaderError> {
        let manager = LeaseManagerBuilder::new(client, name)
            .with_namespace(namespace)
            .with_identity(identity)
            .with_duration(LEASE_DURATION_SECONDS)
            .with_grace(LEASE_GRACE_SECONDS)
            .with_field_manager("upstream-discovery")
            .build()
            .await
            .map_err(|source| LeaderError {
                namespace: namespace.into(),
                name: name.into(),
                source,
            })?;
        let (is_leader, task) = manager.watch().await;
        Ok(Self {
            is_leader,
            task: Some(task),
        })
    }

    /// Gives the lease up, so another replica takes over at once instead of after it expires.
    pub async fn release(self, timeout: std::time::Duration) {
        let Self { is_leader, task } = self;
        // Dropping the last receiver tells the lease task to release the lease and end.
        drop(is_leader);
        if let Some(task) = task {
            match tokio::time::timeout(timeout, task).await {
                Ok(Ok(Ok(_))) => tracing::info!("lease released"),
                Ok(Ok(Err(error))) => {
                    tracing::warn!(%error, "could not release the lease; it will expire")
                }
                Ok(Err(error)) => tracing::warn!(%error, "the lease task failed"),
                Err(_) => tracing::warn!("releasing the lease timed out; it will expire"),
            }
        }
    }
}
