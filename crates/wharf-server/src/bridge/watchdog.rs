//! `--timeout`: notices application calls that run too long.
//!
//! A Python thread cannot be interrupted, so the watchdog only makes sure the client gets a
//! 504 and that the worker asks to be replaced; the stuck thread dies with the worker.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

struct Running {
    since: Instant,
    /// Completing it makes the waiting request answer 504 (if its head was not sent yet).
    expire: oneshot::Sender<()>,
}

/// One slot per Python thread: what it is running and since when.
pub(crate) struct Watchdog {
    pub(crate) timeout: Duration,
    slots: Vec<Mutex<Option<Running>>>,
}

impl Watchdog {
    pub(crate) fn new(timeout: Duration, threads: usize) -> Self {
        Watchdog { timeout, slots: (0..threads).map(|_| Mutex::new(None)).collect() }
    }

    pub(crate) fn start(&self, thread: usize, expire: oneshot::Sender<()>) {
        if let Some(slot) = self.slots.get(thread) {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(Running { since: Instant::now(), expire });
        }
    }

    pub(crate) fn finish(&self, thread: usize) {
        if let Some(slot) = self.slots.get(thread) {
            slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        }
    }

    /// Expires overdue calls; returns how many were still waiting for their response head
    /// (those are the ones that got a 504).
    pub(crate) fn expire_overdue(&self) -> usize {
        let mut expired = 0;
        for slot in &self.slots {
            let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
            if slot.as_ref().is_some_and(|r| r.since.elapsed() >= self.timeout)
                && let Some(running) = slot.take()
                && running.expire.send(()).is_ok()
            {
                expired += 1;
            }
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_overdue_waiting_calls_expire() {
        let dog = Watchdog::new(Duration::from_millis(20), 3);
        let (tx0, mut rx0) = oneshot::channel();
        let (tx1, rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        dog.start(0, tx0);
        dog.start(1, tx1);
        drop(rx1); // head already sent: nobody waits for the 504
        dog.start(2, tx2);
        dog.finish(2);
        assert_eq!(dog.expire_overdue(), 0);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(dog.expire_overdue(), 1);
        assert!(rx0.try_recv().is_ok());
        assert!(rx2.try_recv().is_err());
    }
}
