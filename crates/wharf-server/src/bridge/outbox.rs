//! Complete replies from the Python threads to the I/O thread, one wake-up per batch.
//!
//! Waking a tokio task from another thread makes the runtime write to its eventfd, a system
//! call per reply (measured: one `write` per request, about a tenth of the server's CPU on
//! the hello app). Replies that are complete are instead appended here; only the first one
//! after the I/O thread emptied the outbox wakes it, and it hands the whole batch to the
//! waiting connections with thread-local wake-ups.
//!
//! Streamed replies do not come through here: the Python thread needs to know at once when
//! the client is gone, and their chunks wake the I/O thread through the pipe anyway.

use std::future::poll_fn;
use std::task::{Context, Poll, Waker};

use tokio::sync::oneshot;

use super::sync::{Mutex, MutexGuard};

use super::exchange::Reply;

type Delivery = (oneshot::Sender<Reply>, Reply);

#[derive(Default)]
pub(crate) struct Outbox {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    pending: Vec<Delivery>,
    /// The I/O thread's waker, stored when it found the outbox empty.
    waker: Option<Waker>,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Critical sections only move values in and out; a poisoned lock holds valid data.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `reply` for the connection waiting on `to` (called on a Python thread).
    pub(crate) fn send(&self, to: oneshot::Sender<Reply>, reply: Reply) {
        let waker = {
            let mut inner = self.lock();
            inner.pending.push((to, reply));
            // Only the first reply of a batch wakes the I/O thread; while the outbox is not
            // empty, the I/O thread has been woken already or is about to look again.
            if inner.pending.len() == 1 { inner.waker.take() } else { None }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Delivers replies as they arrive; runs on the I/O thread for the worker's lifetime.
    pub(crate) async fn deliver(&self) {
        let mut batch = Vec::new();
        poll_fn(|cx| self.poll_deliver(cx, &mut batch)).await
    }

    /// Hands every queued reply to its connection; `Pending` once the outbox is empty and the
    /// waker is stored for the next batch. `batch` is reused from call to call.
    fn poll_deliver(&self, cx: &mut Context<'_>, batch: &mut Vec<Delivery>) -> Poll<()> {
        loop {
            {
                let mut inner = self.lock();
                if inner.pending.is_empty() {
                    if !inner.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        inner.waker = Some(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
                std::mem::swap(&mut inner.pending, batch);
            }
            for (to, reply) in batch.drain(..) {
                // The connection may be gone; its reply is dropped with it.
                let _ = to.send(reply);
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};
    use std::sync::Arc;
    use std::time::Duration;

    use crate::bridge::exchange::ReplyBody;

    fn reply(n: usize) -> Reply {
        Reply {
            status: StatusCode::OK,
            reason: None,
            headers: HeaderMap::new(),
            body: ReplyBody::Full(Bytes::from(vec![b'x'; n])),
        }
    }

    fn body_len(reply: Reply) -> usize {
        match reply.body {
            ReplyBody::Full(bytes) => bytes.len(),
            ReplyBody::Stream(_) => usize::MAX,
        }
    }

    /// An outbox with its delivery task running on the test's runtime.
    fn delivering() -> Arc<Outbox> {
        let outbox = Arc::new(Outbox::default());
        tokio::spawn({
            let outbox = Arc::clone(&outbox);
            async move { outbox.deliver().await }
        });
        outbox
    }

    #[tokio::test(flavor = "current_thread")]
    async fn replies_from_other_threads_reach_their_receivers() {
        let outbox = delivering();
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..200).map(|_| oneshot::channel::<Reply>()).unzip();
        let producer = std::thread::spawn({
            let outbox = Arc::clone(&outbox);
            move || {
                for (n, to) in senders.into_iter().enumerate() {
                    outbox.send(to, reply(n));
                    if n % 7 == 0 {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                }
            }
        });
        for (n, rx) in receivers.into_iter().enumerate() {
            let got = tokio::time::timeout(Duration::from_secs(10), rx).await;
            assert_eq!(got.ok().and_then(Result::ok).map(body_len), Some(n));
        }
        assert!(producer.join().is_ok());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_reply_for_a_gone_connection_is_dropped() {
        let outbox = delivering();
        let (gone, rx) = oneshot::channel::<Reply>();
        drop(rx);
        outbox.send(gone, reply(1));
        let (to, rx) = oneshot::channel::<Reply>();
        outbox.send(to, reply(2));
        let got = tokio::time::timeout(Duration::from_secs(10), rx).await;
        assert_eq!(got.ok().and_then(Result::ok).map(body_len), Some(2));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::bridge::ReplyBody;
    use crate::bridge::sync::{Arc, thread};
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};

    fn reply() -> Reply {
        Reply { status: StatusCode::OK, reason: None, headers: HeaderMap::new(), body: ReplyBody::Full(Bytes::new()) }
    }

    /// Replies sent from a Python thread while the I/O thread empties the outbox and goes to
    /// sleep: whatever the interleaving, the I/O thread is woken for every one (a lost wake-up
    /// would leave `block_on` waiting forever, which loom reports).
    #[test]
    fn no_reply_is_left_without_a_wake_up() {
        crate::bridge::sync::model(|| {
            let outbox = Arc::new(Outbox::default());
            let (first, mut first_rx) = oneshot::channel();
            let (second, mut second_rx) = oneshot::channel();
            let producer = {
                let outbox = Arc::clone(&outbox);
                thread::spawn(move || {
                    outbox.send(first, reply());
                    outbox.send(second, reply());
                })
            };
            let mut batch = Vec::new();
            let (mut got_first, mut got_second) = (false, false);
            loom::future::block_on(poll_fn(|cx| {
                let _ = outbox.poll_deliver(cx, &mut batch);
                got_first |= first_rx.try_recv().is_ok();
                got_second |= second_rx.try_recv().is_ok();
                if got_first && got_second { Poll::Ready(()) } else { Poll::Pending }
            }));
            producer.join().ok();
        });
    }
}
