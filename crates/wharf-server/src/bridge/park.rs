//! Waiting on async primitives from a Python thread.
//!
//! Python threads are plain OS threads, not tokio tasks. They read request bodies and push
//! response chunks through hyper's and tokio's channels, which are runtime-agnostic futures, so
//! a thread can simply poll them with a waker that unparks it. The caller releases the GIL
//! around these waits.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::Instant;

struct Unparker(Thread);

impl Wake for Unparker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

thread_local! {
    static WAKER: Waker = Waker::from(Arc::new(Unparker(thread::current())));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimedOut;

/// Polls once, now, on this thread: lets a caller skip releasing the GIL when the result is
/// already there.
pub(crate) fn poll_now<T>(poll: impl FnOnce(&mut Context<'_>) -> Poll<T>) -> Poll<T> {
    WAKER.with(|waker| poll(&mut Context::from_waker(waker)))
}

/// Drives `fut` to completion on this thread, giving up at `deadline`.
pub(crate) fn block_on_until<F: Future>(fut: F, deadline: Instant) -> Result<F::Output, TimedOut> {
    let mut fut = pin!(fut);
    WAKER.with(|waker| {
        let mut cx = Context::from_waker(waker);
        loop {
            if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                return Ok(out);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(TimedOut);
            }
            thread::park_timeout(deadline - now);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn completes_when_woken_from_another_thread() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sender = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            tx.send(7).ok();
        });
        let got = block_on_until(rx, Instant::now() + Duration::from_secs(5));
        assert_eq!(got, Ok(Ok(7)));
        sender.join().ok();
    }

    #[test]
    fn gives_up_at_the_deadline() {
        let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
        let start = Instant::now();
        let got = block_on_until(rx, start + Duration::from_millis(30));
        assert_eq!(got, Err(TimedOut));
        assert!(start.elapsed() >= Duration::from_millis(30));
    }
}
