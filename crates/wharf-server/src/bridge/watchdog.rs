//! `--timeout`: notices application calls that run too long.
//!
//! A Python thread cannot be interrupted, so the watchdog only makes sure the client gets a
//! 504 and that the worker asks to be replaced; the stuck thread dies with the worker.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

struct Running {
    since: Instant,
    request: Request,
    /// Completing it makes the waiting request answer 504 (if its head was not sent yet).
    expire: oneshot::Sender<()>,
}

/// What a log line about an overdue request names: method and path (with the query only under
/// `--log-query`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) method: http::Method,
    pub(crate) path: String,
}

impl Request {
    pub(crate) fn of(parts: &http::request::Parts, log_query: bool) -> Request {
        let path = match parts.uri.path_and_query() {
            Some(target) if log_query => super::target::display(target.as_str()).into_owned(),
            _ => super::target::display(parts.uri.path()).into_owned(),
        };
        Request { method: parts.method.clone(), path }
    }
}

/// A request answered 504, and how long the app had been running it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Expired {
    pub(crate) request: Request,
    pub(crate) ran: Duration,
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

    pub(crate) fn start(&self, thread: usize, expire: oneshot::Sender<()>, request: Request) {
        if let Some(slot) = self.slots.get(thread) {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(Running { since: Instant::now(), request, expire });
        }
    }

    pub(crate) fn finish(&self, thread: usize) {
        if let Some(slot) = self.slots.get(thread) {
            slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        }
    }

    /// Expires overdue calls; returns those that were still waiting for their response head
    /// (the ones that got a 504).
    pub(crate) fn expire_overdue(&self) -> Vec<Expired> {
        let mut expired = Vec::new();
        for slot in &self.slots {
            let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
            if slot.as_ref().is_some_and(|r| r.since.elapsed() >= self.timeout)
                && let Some(running) = slot.take()
                && running.expire.send(()).is_ok()
            {
                expired.push(Expired { request: running.request, ran: running.since.elapsed() });
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
        let request = |path: &str| Request { method: http::Method::POST, path: path.to_owned() };
        dog.start(0, tx0, request("/slow"));
        dog.start(1, tx1, request("/streaming"));
        drop(rx1); // head already sent: nobody waits for the 504
        dog.start(2, tx2, request("/done"));
        dog.finish(2);
        assert_eq!(dog.expire_overdue(), []);
        std::thread::sleep(Duration::from_millis(30));
        let expired = dog.expire_overdue();
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].request, request("/slow"));
        assert!(expired[0].ran >= Duration::from_millis(30), "{expired:?}");
        assert!(rx0.try_recv().is_ok());
        assert!(rx2.try_recv().is_err());
    }
}
