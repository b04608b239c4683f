//! Leader election through a coordination.k8s.io Lease (kube-lease-manager), so several operator
//! replicas can run while only one reconciles.

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::Error;

/// Seconds a lease stays valid without renewal; the holder renews `GRACE` seconds before expiry.
const DURATION: u64 = 15;
const GRACE: u64 = 5;

pub struct Leadership {
    state: watch::Receiver<bool>,
    task: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

/// Waits until this replica holds the lease.
pub async fn acquire(
    client: Client,
    name: &str,
    namespace: &str,
    identity: Option<&str>,
) -> Result<Leadership, Error> {
    let mut builder = LeaseManagerBuilder::new(client, name)
        .with_namespace(namespace)
        .with_duration(DURATION)
        .with_grace(GRACE)
        .with_field_manager(format!(
            "wharf-operator-lease-{}",
            identity.unwrap_or("replica")
        ));
    if let Some(identity) = identity {
        builder = builder.with_identity(identity);
    }
    let manager = builder.build().await?;
    let (mut state, task) = manager.watch().await;
    tracing::info!(lease = name, namespace, "waiting for the leader lease");
    state
        .wait_for(|leader| *leader)
        .await
        .map_err(|_| Error::LostLease)?;
    tracing::info!(lease = name, namespace, "acquired the leader lease");
    Ok(Leadership { state, task })
}

impl Leadership {
    /// Resolves when the lease is lost (renewal failed or another replica took it over).
    pub async fn lost(&mut self) {
        // A closed channel means the lease task ended, which also means we no longer hold it.
        let _ = self.state.wait_for(|leader| !*leader).await;
    }

    /// Releases the lease so a standby replica takes over at once instead of after expiry.
    pub async fn release(self) {
        drop(self.state);
        match self.task.await {
            Ok(Ok(_)) => tracing::info!("released the leader lease"),
            Ok(Err(error)) => tracing::warn!(%error, "releasing the leader lease failed"),
            Err(error) => tracing::warn!(%error, "the lease task panicked"),
        }
    }
}
