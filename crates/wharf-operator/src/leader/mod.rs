//! Leader election on a coordination.k8s.io Lease, so several operator replicas can run while at
//! most one acts (reconciles, and later autoscales).
//!
//! The rules, after client-go's `leaderelection`:
//! - A candidate never trusts timestamps written by other replicas (their clocks may differ). It
//!   notes *when it saw* the Lease's resourceVersion change and treats the holder as gone only
//!   after a full `lease_duration` without a change.
//! - The leader counts its term from when it *sent* its last successful renewal. It stops acting
//!   `renew_deadline` after that instant (the [`Gate`] closes on its own clock, whether or not a
//!   renewal is still in flight). Since `renew_deadline < lease_duration` and a standby only starts
//!   counting once the write has happened, the old leader has stopped before anyone can take over.
//! - Every write to an existing Lease carries the resourceVersion last read (see [`lease`]), so a
//!   late renewal or release fails with 409 instead of overwriting a newer holder, and a leader that
//!   gets a 409 steps down at once.
//! - After losing the Lease the replica is a candidate again; it does not touch the Lease until
//!   it may take it over.

mod lease;
#[cfg(test)]
mod tests;

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use lease::{LeaseClient, LeaseError};

/// Timing of the election, client-go's defaults.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// How long a standby waits after the last change it saw before taking over.
    pub(crate) lease_duration: Duration,
    /// How long the leader keeps acting after the start of its last successful renewal.
    pub(crate) renew_deadline: Duration,
    /// Pause between renewals, and between a candidate's attempts.
    pub(crate) retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl Timing {
    /// Bound on one Lease call: two attempts fit in the renew deadline.
    fn call_timeout(&self) -> Duration {
        self.renew_deadline / 2
    }
}

/// Whether this replica may act now. Cheap to clone and to check; every API write of the
/// reconciler checks it first.
#[derive(Debug, Clone)]
pub struct Gate {
    /// `None`: no leader election, always open. Otherwise the instant our term ends, if we hold it.
    term: Option<watch::Receiver<Option<Instant>>>,
}

impl Gate {
    /// For a single replica running without leader election.
    pub fn always_open() -> Self {
        Gate { term: None }
    }

    /// A replica that does not hold the Lease.
    #[cfg(test)]
    pub(crate) fn never_open() -> Self {
        let (_, term) = watch::channel(None);
        Gate { term: Some(term) }
    }

    pub fn is_open(&self) -> bool {
        match &self.term {
            None => true,
            Some(term) => term.borrow().is_some_and(|end| Instant::now() < end),
        }
    }

    /// Resolves once this replica holds the Lease (at once without leader election).
    pub(crate) async fn opened(&mut self) {
        let Some(term) = &mut self.term else { return };
        // An error means the elector has ended: never open again.
        if term
            .wait_for(|end| end.is_some_and(|end| Instant::now() < end))
            .await
            .is_err()
        {
            std::future::pending::<()>().await;
        }
    }

    /// Resolves when the term ends: the renew deadline passed, or the elector stepped down.
    pub(crate) async fn closed(&mut self) {
        let Some(term) = &mut self.term else {
            return std::future::pending().await;
        };
        loop {
            let end = *term.borrow_and_update();
            let Some(end) = end.filter(|end| Instant::now() < *end) else {
                return;
            };
            tokio::select! {
                () = tokio::time::sleep_until(end) => return,
                changed = term.changed() => if changed.is_err() { return },
            }
        }
    }
}

/// The election task of this replica: candidate until it holds the Lease, then leader until it
/// loses it, then candidate again.
pub(crate) struct Elector {
    gate: Gate,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Elector {
    pub(crate) fn spawn(api: Api<Lease>, name: &str, identity: &str, timing: Timing) -> Self {
        let client = LeaseClient::new(
            api,
            name,
            identity,
            timing.lease_duration,
            timing.call_timeout(),
        );
        let (term, term_rx) = watch::channel(None);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(client, timing, term, stop_rx));
        Elector {
            gate: Gate {
                term: Some(term_rx),
            },
            stop,
            task,
        }
    }

    pub(crate) fn gate(&self) -> Gate {
        self.gate.clone()
    }

    /// Stops campaigning; a leader whose term has not ended releases the Lease (conditionally).
    pub(crate) async fn shutdown(self) {
        self.stop.send_replace(true);
        if let Err(error) = self.task.await {
            tracing::error!(%error, "the leader election task panicked");
        }
    }
}

/// A default identity for replicas started without `--identity`/`POD_NAME`: unique per process.
pub(crate) fn random_identity() -> String {
    let random = RandomState::new().hash_one(std::process::id());
    format!("wharf-operator-{random:016x}")
}

/// What a candidate remembers of the Lease: the version it saw and when it first saw it.
struct Sighting {
    resource_version: Option<String>,
    at: Instant,
}

async fn run(
    client: LeaseClient,
    timing: Timing,
    term: watch::Sender<Option<Instant>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut sighting: Option<Sighting> = None;
    tracing::info!(
        lease = client.name(),
        identity = client.identity(),
        "candidate for the leader Lease"
    );
    loop {
        let Some((held, sent)) = campaign(&client, &timing, &mut sighting, &mut stop).await else {
            return;
        };
        tracing::info!(lease = client.name(), "acquired the leader Lease; acting");
        term.send_replace(Some(sent + timing.renew_deadline));
        let ended = lead(&client, &timing, held, sent, &term, &mut stop).await;
        term.send_replace(None);
        match ended {
            Ended::Stopped { held, until } => {
                if Instant::now() < until {
                    match client.release(&held).await {
                        Ok(()) => {
                            tracing::info!(lease = client.name(), "released the leader Lease")
                        }
                        Err(error) => {
                            tracing::warn!(%error, lease = client.name(), "did not release the leader Lease; it expires on its own")
                        }
                    }
                }
                return;
            }
            Ended::Lost(why) => {
                tracing::warn!(lease = client.name(), reason = %why, "lost the leader Lease; stopped acting, candidate again");
                // Whatever we saw before is our own writes: start counting afresh.
                sighting = None;
            }
        }
    }
}

/// Polls until this replica holds the Lease; `None` when asked to stop first. Returns the Lease
/// as written and when the winning write was sent.
async fn campaign(
    client: &LeaseClient,
    timing: &Timing,
    sighting: &mut Option<Sighting>,
    stop: &mut watch::Receiver<bool>,
) -> Option<(Lease, Instant)> {
    let mut last_error: Option<String> = None;
    loop {
        if *stop.borrow() {
            return None;
        }
        match try_acquire(client, timing, sighting).await {
            Ok(Some(won)) => return Some(won),
            Ok(None) => last_error = None,
            Err(error) => {
                // Logged once per distinct error, so an unreachable API server does not flood the log.
                let text = error.to_string();
                if last_error.as_ref() != Some(&text) {
                    tracing::warn!(error = %text, lease = client.name(), "leader election: cannot read or take the Lease; retrying");
                    last_error = Some(text);
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(timing.retry_period) => {}
            changed = stop.changed() => if changed.is_err() { return None },
        }
    }
}

async fn try_acquire(
    client: &LeaseClient,
    timing: &Timing,
    sighting: &mut Option<Sighting>,
) -> Result<Option<(Lease, Instant)>, LeaseError> {
    let Some(current) = client.get().await? else {
        let sent = Instant::now();
        return match client.create().await {
            Ok(lease) => Ok(Some((lease, sent))),
            Err(LeaseError::Conflict) => Ok(None),
            Err(error) => Err(error),
        };
    };
    // Taken after the answer, so the change we see happened before it: counting from here never
    // ends the holder's term early.
    let now = Instant::now();
    let version = current.metadata.resource_version.clone();
    let seen_at = match sighting {
        Some(s) if s.resource_version == version => s.at,
        _ => {
            *sighting = Some(Sighting {
                resource_version: version,
                at: now,
            });
            now
        }
    };
    let expired = now >= seen_at + lease::announced_duration(&current, timing.lease_duration);
    match lease::holder(&current) {
        Some(other) if other != client.identity() && !expired => return Ok(None),
        _ => {}
    }
    let sent = Instant::now();
    match client.take(&current).await {
        Ok(lease) => Ok(Some((lease, sent))),
        Err(LeaseError::Conflict) => Ok(None),
        Err(error) => Err(error),
    }
}

enum Ended {
    /// Asked to stop while holding the Lease as `held`, valid for us until `until`.
    Stopped {
        held: Box<Lease>,
        until: Instant,
    },
    Lost(String),
}

async fn lead(
    client: &LeaseClient,
    timing: &Timing,
    mut held: Lease,
    mut sent: Instant,
    term: &watch::Sender<Option<Instant>>,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    let mut next = sent + timing.retry_period;
    loop {
        let until = sent + timing.renew_deadline;
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = tokio::time::sleep_until(until) => return Ended::Lost(deadline_passed(timing)),
            _ = stop.changed() => return Ended::Stopped { held: Box::new(held), until },
        }
        let attempt = Instant::now();
        // A renewal still in flight at the deadline is abandoned: we stop acting at the deadline
        // regardless, and if it lands later, its resourceVersion makes it harmless.
        let result = tokio::select! {
            result = client.renew(&held) => result,
            () = tokio::time::sleep_until(until) => return Ended::Lost(deadline_passed(timing)),
        };
        match result {
            Ok(lease) => {
                held = lease;
                sent = attempt;
                term.send_replace(Some(sent + timing.renew_deadline));
                next = sent + timing.retry_period;
            }
            Err(LeaseError::Conflict) => {
                return Ended::Lost("the Lease was changed by someone else".to_owned());
            }
            Err(error) => {
                tracing::warn!(%error, lease = client.name(), "renewing the leader Lease failed; retrying");
                // Retry soon, but never in a hot loop against a failing API server.
                next = Instant::now() + timing.retry_period / 2;
            }
        }
    }
}

fn deadline_passed(timing: &Timing) -> String {
    format!(
        "no renewal succeeded within the renew deadline ({}s)",
        timing.renew_deadline.as_secs()
    )
}
