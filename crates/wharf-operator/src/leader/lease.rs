//! The Lease record and the three writes leader election makes to it. Every write that changes an
//! existing Lease is a `PUT` carrying the `metadata.resourceVersion` last read, so the API server
//! rejects it with 409 if anyone (another replica, or a late retry of our own) wrote in between:
//! a stale renewal or release can never overwrite a newer holder.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;

/// Why a Lease call did not go through.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LeaseError {
    /// The Lease changed since it was read (409): whatever we believed about it is stale.
    #[error("the Lease was changed by someone else (409 Conflict)")]
    Conflict,
    #[error("no answer from the API server within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Api(#[source] Box<kube::Error>),
}

impl From<kube::Error> for LeaseError {
    fn from(error: kube::Error) -> Self {
        match &error {
            kube::Error::Api(status) if status.code == 409 => LeaseError::Conflict,
            _ => LeaseError::Api(Box::new(error)),
        }
    }
}

/// One Lease, as this replica reads and writes it.
pub(crate) struct LeaseClient {
    api: Api<Lease>,
    name: String,
    identity: String,
    /// Validity written into the Lease for other replicas.
    duration: Duration,
    /// Bound on every call: an answer that comes later is treated as a failure.
    call_timeout: Duration,
}

impl LeaseClient {
    pub(crate) fn new(
        api: Api<Lease>,
        name: &str,
        identity: &str,
        duration: Duration,
        call_timeout: Duration,
    ) -> Self {
        LeaseClient {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
            call_timeout,
        }
    }

    pub(crate) fn identity(&self) -> &str {
        &self.identity
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) async fn get(&self) -> Result<Option<Lease>, LeaseError> {
        self.bounded(self.api.get_opt(&self.name)).await
    }

    /// Creates the Lease with us as holder; 409 means another replica created it first.
    pub(crate) async fn create(&self) -> Result<Lease, LeaseError> {
        let now = MicroTime(Timestamp::now());
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(self.duration_seconds()),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        self.bounded(self.api.create(&PostParams::default(), &lease))
            .await
    }

    /// Takes over `current` (free, expired, or already ours), conditional on its resourceVersion.
    pub(crate) async fn take(&self, current: &Lease) -> Result<Lease, LeaseError> {
        let now = MicroTime(Timestamp::now());
        let mut lease = current.clone();
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(&self.identity) {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.lease_duration_seconds = Some(self.duration_seconds());
        spec.renew_time = Some(now);
        self.replace(&lease).await
    }

    /// Renews `held` (the Lease as our last successful write left it).
    pub(crate) async fn renew(&self, held: &Lease) -> Result<Lease, LeaseError> {
        let mut lease = held.clone();
        lease.spec.get_or_insert_with(LeaseSpec::default).renew_time =
            Some(MicroTime(Timestamp::now()));
        self.replace(&lease).await
    }

    /// Clears the holder so a standby takes over at once instead of after expiry. Conditional on
    /// `held` being the current version: a Lease someone else has written since is left alone.
    pub(crate) async fn release(&self, held: &Lease) -> Result<(), LeaseError> {
        let mut lease = held.clone();
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.replace(&lease).await.map(drop)
    }

    async fn replace(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        debug_assert!(lease.metadata.resource_version.is_some());
        self.bounded(self.api.replace(&self.name, &PostParams::default(), lease))
            .await
    }

    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, LeaseError> {
        match tokio::time::timeout(self.call_timeout, call).await {
            Ok(result) => result.map_err(LeaseError::from),
            Err(_) => Err(LeaseError::Timeout(self.call_timeout)),
        }
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX)
    }
}

/// Holder named in a Lease; an empty string counts as none (released).
pub(crate) fn holder(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
}

/// Validity the holder announced, falling back to ours for a Lease that names none.
pub(crate) fn announced_duration(lease: &Lease, fallback: Duration) -> Duration {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_duration_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .map_or(fallback, Duration::from_secs)
}
