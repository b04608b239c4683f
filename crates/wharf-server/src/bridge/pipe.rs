//! The streaming response pipe between a Python thread (producer) and hyper (consumer).
//!
//! Chunks the app yields are appended to one buffer; the I/O side takes everything produced
//! so far in one piece. That coalesces small chunks without ever holding one back (whatever
//! is in the buffer is taken as soon as the socket can take it), costs one copy and no
//! allocation per chunk, and wakes the other side only when it is actually waiting. The
//! producer waits (the caller releases the GIL) once the buffer holds `LIMIT` bytes, so a
//! slow client bounds memory instead of growing it.
//!
//! Or, instead of waiting, the producer parks a [`Resume`] and gives its thread back: the
//! consumer runs it once the buffer has room again or the consumer is gone, whichever comes
//! first, exactly once. A response iterator uses that, so clients that stop reading cannot
//! hold Python threads.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};

use super::sync::{Mutex, MutexGuard};

/// Bytes buffered before the producer waits for the client.
pub(crate) const LIMIT: usize = 256 * 1024;
/// Chunks this large are queued as they are rather than copied into the shared buffer.
const COPY_BELOW: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The producer finished: the response is complete.
    Complete,
    /// The producer failed: the response must end without a clean terminator.
    Aborted,
}

#[derive(Default)]
struct State {
    /// Ready pieces in order; the small-chunk buffer `tail` comes after them.
    queued: VecDeque<Bytes>,
    tail: BytesMut,
    buffered: usize,
    end: Option<End>,
    consumer_gone: bool,
    consumer: Option<Waker>,
    producer: Option<Waker>,
    /// A parked producer: run when there is room or the consumer is gone.
    parked: Option<Resume>,
}

/// What continues a parked producer; it must not block (it runs on the consumer's thread).
pub(crate) type Resume = Box<dyn FnOnce() + Send>;

#[derive(Default)]
pub(crate) struct Pipe {
    state: Mutex<State>,
}

/// The consumer went away: nobody will read what the producer writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConsumerGone;

/// What the consumer gets from one poll.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Taken {
    Data(Bytes),
    End(End),
}

impl Pipe {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent, so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a chunk; never waits (see `wait_for_room`).
    pub(crate) fn push(&self, chunk: &[u8]) -> Result<(), ConsumerGone> {
        self.push_with(chunk.len(), |state| {
            if chunk.len() >= COPY_BELOW {
                let tail = state.tail.split().freeze();
                if !tail.is_empty() {
                    state.queued.push_back(tail);
                }
                state.queued.push_back(Bytes::copy_from_slice(chunk));
            } else {
                state.tail.extend_from_slice(chunk);
            }
        })
    }

    /// Appends an owned chunk without copying it.
    pub(crate) fn push_bytes(&self, chunk: Bytes) -> Result<(), ConsumerGone> {
        self.push_with(chunk.len(), |state| {
            let tail = state.tail.split().freeze();
            if !tail.is_empty() {
                state.queued.push_back(tail);
            }
            state.queued.push_back(chunk);
        })
    }

    fn push_with(&self, len: usize, append: impl FnOnce(&mut State)) -> Result<(), ConsumerGone> {
        if len == 0 {
            return Ok(());
        }
        let mut state = self.lock();
        if state.consumer_gone {
            return Err(ConsumerGone);
        }
        append(&mut state);
        state.buffered += len;
        let wake = state.consumer.take();
        drop(state);
        if let Some(waker) = wake {
            waker.wake();
        }
        Ok(())
    }

    /// Whether the producer should wait before pushing more.
    pub(crate) fn is_full(&self) -> bool {
        self.lock().buffered >= LIMIT
    }

    /// Completes once the buffer has room again (or the consumer is gone).
    pub(crate) async fn wait_for_room(&self) -> Result<(), ConsumerGone> {
        poll_fn(|cx| {
            let mut state = self.lock();
            if state.consumer_gone {
                return Poll::Ready(Err(ConsumerGone));
            }
            if state.buffered < LIMIT {
                return Poll::Ready(Ok(()));
            }
            state.producer = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// The producer is done (or failed); the consumer sees the end after the data.
    pub(crate) fn close(&self, end: End) {
        let mut state = self.lock();
        state.end.get_or_insert(end);
        let wake = state.consumer.take();
        drop(state);
        if let Some(waker) = wake {
            waker.wake();
        }
    }

    /// Consumer side: everything produced so far, the end, or `Pending`.
    fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Taken> {
        let mut state = self.lock();
        let data = match state.queued.pop_front() {
            Some(piece) => Some(piece),
            None if !state.tail.is_empty() => Some(state.tail.split().freeze()),
            None => None,
        };
        if let Some(data) = data {
            state.buffered -= data.len();
            let (wake, resume) =
                if state.buffered < LIMIT { (state.producer.take(), state.parked.take()) } else { (None, None) };
            drop(state);
            if let Some(waker) = wake {
                waker.wake();
            }
            if let Some(resume) = resume {
                resume();
            }
            return Poll::Ready(Taken::Data(data));
        }
        if let Some(end) = state.end {
            return Poll::Ready(Taken::End(end));
        }
        state.consumer = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Parks the producer instead of waiting for room: `resume` runs once the buffer has room
    /// or the consumer is gone. Handed back when that is the case already.
    pub(crate) fn park(&self, resume: Resume) -> Result<(), Resume> {
        let mut state = self.lock();
        if state.consumer_gone || state.buffered < LIMIT {
            return Err(resume);
        }
        state.parked = Some(resume);
        Ok(())
    }

    /// Consumer side: stop; a waiting or parked producer learns it at once.
    fn consumer_gone(&self) {
        let mut state = self.lock();
        state.consumer_gone = true;
        state.queued.clear();
        state.tail.clear();
        // Not full any more: a producer that checks before its next chunk must go on to learn
        // that nobody reads (else a parked one would park again, for ever).
        state.buffered = 0;
        let wake = state.producer.take();
        let resume = state.parked.take();
        drop(state);
        if let Some(waker) = wake {
            waker.wake();
        }
        if let Some(resume) = resume {
            resume();
        }
    }
}

/// The consumer's end: however it is dropped (response done, connection closed, a reply
/// nobody took), the producer learns that nobody reads any more.
/// (std's `Arc` even under loom: the models drive `Pipe` itself.)
pub(crate) struct PipeReader(std::sync::Arc<Pipe>);

impl PipeReader {
    pub(crate) fn new(pipe: std::sync::Arc<Pipe>) -> Self {
        PipeReader(pipe)
    }

    pub(crate) fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Taken> {
        self.0.poll_take(cx)
    }
}

impl Drop for PipeReader {
    fn drop(&mut self) {
        self.0.consumer_gone();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }

    fn take(pipe: &Pipe) -> Poll<Taken> {
        let waker = Waker::from(Arc::new(Noop));
        pipe.poll_take(&mut Context::from_waker(&waker))
    }

    #[test]
    fn small_chunks_coalesce_in_order_and_big_ones_stay_whole() {
        let pipe = Pipe::default();
        pipe.push(b"ab").expect("open");
        pipe.push(b"").expect("open");
        pipe.push(b"cd").expect("open");
        let big = vec![7u8; COPY_BELOW];
        pipe.push(&big).expect("open");
        pipe.push(b"ef").expect("open");
        pipe.close(End::Complete);
        assert_eq!(take(&pipe), Poll::Ready(Taken::Data(Bytes::from_static(b"abcd"))));
        assert_eq!(take(&pipe), Poll::Ready(Taken::Data(Bytes::from(big))));
        assert_eq!(take(&pipe), Poll::Ready(Taken::Data(Bytes::from_static(b"ef"))));
        assert_eq!(take(&pipe), Poll::Ready(Taken::End(End::Complete)));
    }

    #[test]
    fn empty_pipe_is_pending_until_closed() {
        let pipe = Pipe::default();
        assert_eq!(take(&pipe), Poll::Pending);
        pipe.close(End::Aborted);
        assert_eq!(take(&pipe), Poll::Ready(Taken::End(End::Aborted)));
    }

    #[test]
    fn fullness_and_a_gone_consumer() {
        let pipe = Pipe::default();
        pipe.push(&vec![0u8; LIMIT]).expect("open");
        assert!(pipe.is_full());
        assert!(matches!(take(&pipe), Poll::Ready(Taken::Data(_))));
        assert!(!pipe.is_full());
        pipe.consumer_gone();
        assert_eq!(pipe.push(b"x"), Err(ConsumerGone));
    }

    #[test]
    fn a_waiting_producer_resumes_when_room_appears() {
        let pipe = Arc::new(Pipe::default());
        pipe.push(&vec![0u8; LIMIT + 1]).expect("open");
        let consumer = {
            let pipe = Arc::clone(&pipe);
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(20));
                take(&pipe)
            })
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let waited = crate::bridge::park::block_on_until(pipe.wait_for_room(), deadline);
        assert_eq!(waited, Ok(Ok(())));
        assert!(matches!(consumer.join().ok(), Some(Poll::Ready(Taken::Data(_)))));
    }

    #[test]
    fn a_parked_producer_resumes_once_when_room_appears() {
        let pipe = Pipe::default();
        let resumed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = || {
            let resumed = Arc::clone(&resumed);
            Box::new(move || {
                resumed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }) as Resume
        };
        // Room now: handed back, nothing runs.
        assert!(pipe.park(count()).is_err());
        pipe.push(&vec![0u8; LIMIT]).expect("open");
        assert!(pipe.park(count()).is_ok());
        assert_eq!(resumed.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert!(matches!(take(&pipe), Poll::Ready(Taken::Data(_))));
        assert_eq!(resumed.load(std::sync::atomic::Ordering::SeqCst), 1);
        pipe.push(&vec![0u8; LIMIT]).expect("open");
        assert!(pipe.park(count()).is_ok());
        // The reader goes away: the parked producer runs, to learn it.
        pipe.consumer_gone();
        assert_eq!(resumed.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert!(!pipe.is_full());
        assert!(pipe.park(count()).is_err());
    }

    #[test]
    fn dropping_the_reader_releases_the_producer() {
        let pipe = Arc::new(Pipe::default());
        let reader = PipeReader::new(Arc::clone(&pipe));
        pipe.push(b"x").expect("open");
        drop(reader);
        assert_eq!(pipe.push(b"y"), Err(ConsumerGone));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::bridge::sync::{Arc, thread};

    static FULL: [u8; LIMIT] = [0; LIMIT];

    /// The consumer side, as hyper drives it: everything until the end.
    fn drain(pipe: &Pipe) -> (usize, End) {
        let mut taken = 0;
        let end = loom::future::block_on(poll_fn(|cx| {
            loop {
                match pipe.poll_take(cx) {
                    Poll::Ready(Taken::Data(data)) => taken += data.len(),
                    Poll::Ready(Taken::End(end)) => return Poll::Ready(end),
                    Poll::Pending => return Poll::Pending,
                }
            }
        }));
        (taken, end)
    }

    /// A producer that fills the pipe waits for room and resumes; the consumer sees every
    /// byte and the end, in every interleaving.
    #[test]
    fn a_full_pipe_resumes_and_delivers_everything() {
        crate::bridge::sync::model(|| {
            let pipe = Arc::new(Pipe::default());
            let producer = {
                let pipe = Arc::clone(&pipe);
                thread::spawn(move || {
                    pipe.push_bytes(Bytes::from_static(&FULL)).ok();
                    // Full unless the consumer took it already; either way room comes.
                    assert_eq!(loom::future::block_on(pipe.wait_for_room()), Ok(()));
                    pipe.push(b"end").ok();
                    pipe.close(End::Complete);
                })
            };
            assert_eq!(drain(&pipe), (LIMIT + 3, End::Complete));
            producer.join().ok();
        });
    }

    /// A producer waiting for room learns at once that the consumer is gone.
    #[test]
    fn a_waiting_producer_learns_the_consumer_is_gone() {
        crate::bridge::sync::model(|| {
            let pipe = Arc::new(Pipe::default());
            let producer = {
                let pipe = Arc::clone(&pipe);
                thread::spawn(move || {
                    pipe.push_bytes(Bytes::from_static(&FULL)).ok();
                    loom::future::block_on(pipe.wait_for_room())
                })
            };
            pipe.consumer_gone();
            assert_eq!(producer.join().ok(), Some(Err(ConsumerGone)));
        });
    }

    /// A producer that parks while the consumer drains is continued exactly once: either
    /// `park` hands the continuation back (room came first) or the consumer runs it.
    #[test]
    fn a_parked_producer_is_continued_exactly_once() {
        crate::bridge::sync::model(|| {
            let pipe = Arc::new(Pipe::default());
            pipe.push_bytes(Bytes::from_static(&FULL)).ok();
            let consumer = {
                let pipe = Arc::clone(&pipe);
                thread::spawn(move || {
                    let waker = futures_noop_waker();
                    let _ = pipe.poll_take(&mut Context::from_waker(&waker));
                })
            };
            let (tx, rx) = loom::sync::mpsc::channel();
            let tx2 = tx.clone();
            let parked = pipe.park(Box::new(move || {
                tx2.send(()).ok();
            }));
            if let Err(resume) = parked {
                resume();
            }
            consumer.join().ok();
            drop(tx);
            assert!(rx.recv().is_ok());
            assert!(rx.try_recv().is_err());
        });
    }

    /// Parking races the consumer going away: the continuation still runs exactly once.
    #[test]
    fn a_parked_producer_learns_the_consumer_is_gone() {
        crate::bridge::sync::model(|| {
            let pipe = Arc::new(Pipe::default());
            pipe.push_bytes(Bytes::from_static(&FULL)).ok();
            let consumer = {
                let pipe = Arc::clone(&pipe);
                thread::spawn(move || pipe.consumer_gone())
            };
            let (tx, rx) = loom::sync::mpsc::channel();
            if let Err(resume) = pipe.park(Box::new(move || {
                tx.send(()).ok();
            })) {
                resume();
            }
            consumer.join().ok();
            assert!(rx.recv().is_ok());
            assert_eq!(pipe.push(b"x"), Err(ConsumerGone));
        });
    }

    fn futures_noop_waker() -> Waker {
        struct Noop;
        impl std::task::Wake for Noop {
            fn wake(self: std::sync::Arc<Self>) {}
        }
        Waker::from(std::sync::Arc::new(Noop))
    }
}
