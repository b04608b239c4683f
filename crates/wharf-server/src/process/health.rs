//! Health state the supervisor keeps and the admin listener reports.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A ready worker silent for this long makes /livez fail (the supervisor replaces it later).
pub(crate) const STALE_HEARTBEAT: Duration = Duration::from_secs(15);
/// The supervisor's own loop must have run this recently for /livez to pass.
const SUPERVISOR_STALL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub(crate) struct HealthSnapshot {
    pub(crate) ready_workers: usize,
    pub(crate) stale_workers: usize,
    pub(crate) draining: bool,
    pub(crate) supervisor_tick: Instant,
}

impl HealthSnapshot {
    pub(crate) fn live(&self) -> bool {
        self.supervisor_tick.elapsed() < SUPERVISOR_STALL && self.stale_workers == 0
    }

    pub(crate) fn ready(&self) -> bool {
        self.ready_workers > 0 && !self.draining
    }
}

pub(crate) struct Health {
    inner: Mutex<HealthSnapshot>,
}

impl Health {
    pub(crate) fn new() -> Self {
        Health {
            inner: Mutex::new(HealthSnapshot {
                ready_workers: 0,
                stale_workers: 0,
                draining: false,
                supervisor_tick: Instant::now(),
            }),
        }
    }

    pub(crate) fn snapshot(&self) -> HealthSnapshot {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut HealthSnapshot)) {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}
