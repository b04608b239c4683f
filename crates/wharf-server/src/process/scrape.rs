//! Supervisor side of /metrics: asks every live worker for a fresh snapshot, adds what exited
//! workers last reported (so counters never go backwards), and keeps restart counts.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

use super::control::{SupervisorMessage, WorkerChannel};
use crate::observe::{Resources, Snapshot};

/// The latest snapshot a worker sent, with the request sequence number it answered.
pub(crate) type Latest = (u64, Option<Snapshot>);

struct Live {
    channel: WorkerChannel,
    latest: watch::Receiver<Latest>,
}

#[derive(Default)]
struct Inner {
    live: BTreeMap<u32, Live>,
    retired: Snapshot,
    restarts: BTreeMap<&'static str, u64>,
    next_seq: u64,
}

#[derive(Default)]
pub(crate) struct Scraper {
    inner: Mutex<Inner>,
}

impl Scraper {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new worker, reached through `channel`, whose snapshots arrive on `latest`.
    pub(crate) fn register(&self, id: u32, channel: WorkerChannel, latest: watch::Receiver<Latest>) {
        self.lock().live.insert(id, Live { channel, latest });
    }

    /// The worker's channel closed: keep its counters, forget its gauges.
    pub(crate) fn retire(&self, id: u32) {
        let mut inner = self.lock();
        if let Some(live) = inner.live.remove(&id)
            && let Some(last) = live.latest.borrow().1.clone()
        {
            inner.retired.add(&last.without_gauges());
        }
    }

    pub(crate) fn restarted(&self, reason: &'static str) {
        *self.lock().restarts.entry(reason).or_default() += 1;
    }

    pub(crate) fn restarts(&self) -> BTreeMap<&'static str, u64> {
        self.lock().restarts.clone()
    }

    /// The sum over all workers, asking live ones for fresh numbers (a worker that does not
    /// answer within `wait` contributes its previous snapshot), and each live worker's resource
    /// usage.
    pub(crate) async fn collect(&self, wait: Duration) -> (Snapshot, Vec<(u32, Resources)>) {
        let (seq, mut pending) = {
            let mut inner = self.lock();
            inner.next_seq += 1;
            let seq = inner.next_seq;
            let pending: Vec<watch::Receiver<Latest>> = inner
                .live
                .values()
                .filter(|live| live.channel.send(SupervisorMessage::Snapshot { seq }))
                .map(|live| live.latest.clone())
                .collect();
            (seq, pending)
        };
        let deadline = tokio::time::Instant::now() + wait;
        for latest in &mut pending {
            tokio::time::timeout_at(deadline, latest.wait_for(|(answered, _)| *answered >= seq)).await.ok();
        }
        let inner = self.lock();
        let mut total = inner.retired.clone();
        let mut resources = Vec::with_capacity(inner.live.len());
        for (id, live) in &inner.live {
            if let Some(snapshot) = &live.latest.borrow().1 {
                total.add(snapshot);
                resources.extend(snapshot.resources.clone().map(|r| (*id, r)));
            }
        }
        (total, resources)
    }
}
