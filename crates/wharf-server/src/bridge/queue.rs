//! The bounded queue between the I/O side and the Python threads.
//!
//! A mutex-protected deque rather than a channel: the I/O thread needs an exact, cheap answer
//! to "is the queue full" (to answer 503 at once), and the saturation metrics need exact
//! counts of waiting items and busy consumers.
//!
//! The capacity counts items *waiting for a consumer*: items that idle consumers are about
//! to take do not count, so a burst that arrives faster than threads wake up is never
//! refused while threads are free.
//!
//! Wake-ups: at most one idle consumer is woken at a time (the *searcher*). Waking one per
//! item makes dozens of threads queue for the GIL while one of them could serve the whole
//! burst: every item then costs a GIL hand-off and a context switch (measured: a third of
//! the throughput of a CPU-bound app). A consumer that takes an item and sees more waiting
//! wakes the next searcher, which waits for the GIL: it gets it as soon as the running
//! thread blocks (I/O, sleep), so blocking apps still fan out over all threads. The thread
//! woken is the one that went idle last: its stack and interpreter state are still in cache.
//!
//! Held items: work that left a consumer and will come back (a streamed response waiting for
//! its client, see `Pipe::park`). They return whatever the capacity and even after `close`,
//! and consumers stay until the last one came back and was done.

use super::sync::thread::{self, Thread};
use super::sync::{Arc, AtomicBool, Mutex, MutexGuard, Ordering};
use std::collections::VecDeque;

pub(crate) struct JobQueue<T> {
    state: Mutex<State<T>>,
    capacity: usize,
    consumers: usize,
}

/// An idle consumer, parked until `woken` is set.
struct Sleeper {
    thread: Thread,
    woken: AtomicBool,
}

impl Sleeper {
    fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

struct State<T> {
    items: VecDeque<T>,
    /// Consumers blocked in `wait`, the one that went idle last on top.
    idle: Vec<Arc<Sleeper>>,
    /// Consumers holding an item they took and have not reported `done` for.
    busy: usize,
    /// A consumer was woken (or is on its way) to look for work and has not taken an item yet.
    searching: bool,
    /// Items held outside the queue that will be pushed back (`hold`/`resume`).
    held: usize,
    closed: bool,
}

impl<T> State<T> {
    /// The idle consumer to wake to look at the waiting items, if one must be.
    fn searcher(&mut self) -> Option<Arc<Sleeper>> {
        if self.searching || self.items.is_empty() {
            return None;
        }
        let sleeper = self.idle.pop()?;
        self.searching = true;
        Some(sleeper)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PushError<T> {
    Full(T),
    Closed(T),
}

impl<T> JobQueue<T> {
    /// `capacity` items may wait beyond what `consumers` free consumers will take.
    pub(crate) fn new(capacity: usize, consumers: usize) -> Self {
        JobQueue {
            state: Mutex::new(State {
                items: VecDeque::with_capacity(capacity.min(4096)),
                idle: Vec::with_capacity(consumers),
                busy: 0,
                searching: false,
                held: 0,
                closed: false,
            }),
            capacity,
            consumers,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding this lock cannot leave the state inconsistent (every critical
        // section is a few field updates), so a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn push(&self, item: T) -> Result<(), PushError<T>> {
        let mut state = self.lock();
        if state.closed {
            return Err(PushError::Closed(item));
        }
        let free = self.consumers.saturating_sub(state.busy);
        if state.items.len() >= self.capacity + free {
            return Err(PushError::Full(item));
        }
        state.items.push_back(item);
        let searcher = state.searcher();
        drop(state);
        if let Some(sleeper) = searcher {
            sleeper.wake();
        }
        Ok(())
    }

    /// Notes an item that left and will come back through `resume`: until then the queue's
    /// consumers do not leave.
    pub(crate) fn hold(&self) {
        self.lock().held += 1;
    }

    /// A held item comes back, ahead of nothing and refused never: it was accepted once.
    pub(crate) fn resume(&self, item: T) {
        let mut state = self.lock();
        state.held = state.held.saturating_sub(1);
        state.items.push_back(item);
        // After `close`, the last held item back means the consumers may leave once it is
        // taken: all of them must look.
        let sleepers = if state.closed && state.held == 0 {
            std::mem::take(&mut state.idle)
        } else {
            state.searcher().into_iter().collect()
        };
        drop(state);
        for sleeper in sleepers {
            sleeper.wake();
        }
    }

    /// Takes the next item without waiting; the caller is busy until it calls `done`.
    /// `searcher`: the caller was woken by [`JobQueue::wait`] to look for work.
    pub(crate) fn try_pop(&self, searcher: bool) -> Option<T> {
        let mut state = self.lock();
        if searcher {
            state.searching = false;
        }
        let item = state.items.pop_front();
        if item.is_some() {
            state.busy += 1;
        }
        let searcher = state.searcher();
        drop(state);
        if let Some(sleeper) = searcher {
            sleeper.wake();
        }
        item
    }

    /// Waits until this consumer is asked to look for work (then it must call
    /// `try_pop(true)`); `false` once the queue is closed and empty.
    pub(crate) fn wait(&self) -> bool {
        loop {
            let sleeper = {
                let mut state = self.lock();
                if !state.items.is_empty() && !state.searching {
                    // Items arrived while this consumer was on its way here and nobody looks at them.
                    state.searching = true;
                    return true;
                }
                if state.closed && (!state.items.is_empty() || state.held == 0) {
                    return !state.items.is_empty();
                }
                let sleeper = Arc::new(Sleeper { thread: thread::current(), woken: AtomicBool::new(false) });
                state.idle.push(Arc::clone(&sleeper));
                sleeper
            };
            // Unparks meant for other waits on this thread (a request body, a full pipe) may end a
            // park early; only `woken` counts.
            while !sleeper.woken.load(Ordering::Acquire) {
                thread::park();
            }
            let state = self.lock();
            if !(state.closed && state.items.is_empty()) {
                return true;
            }
            if state.held == 0 {
                return false;
            }
            // Closed, but held items will come back: wait for them.
        }
    }

    /// Refuses new items; consumers drain what is queued (and what is held) and then `wait`
    /// returns `false`.
    pub(crate) fn close(&self) {
        let sleepers = {
            let mut state = self.lock();
            state.closed = true;
            std::mem::take(&mut state.idle)
        };
        for sleeper in sleepers {
            sleeper.wake();
        }
    }

    /// The consumer finished the item it took.
    pub(crate) fn done(&self) {
        let mut state = self.lock();
        state.busy = state.busy.saturating_sub(1);
    }

    /// (items waiting, consumers busy, items held), read together.
    pub(crate) fn load(&self) -> (usize, usize, usize) {
        let state = self.lock();
        (state.items.len(), state.busy, state.held)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    /// A consumer's loop, as the pool runs it (without the GIL).
    fn next<T>(q: &JobQueue<T>, searcher: &mut bool) -> Option<T> {
        loop {
            if let Some(item) = q.try_pop(*searcher) {
                *searcher = false;
                return Some(item);
            }
            if !q.wait() {
                return None;
            }
            *searcher = true;
        }
    }

    #[test]
    fn full_and_closed_are_reported() {
        let q = JobQueue::new(2, 0);
        assert_eq!(q.push(1), Ok(()));
        assert_eq!(q.push(2), Ok(()));
        assert_eq!(q.push(3), Err(PushError::Full(3)));
        assert_eq!(q.load(), (2, 0, 0));
        q.close();
        assert_eq!(q.push(4), Err(PushError::Closed(4)));
        let mut searcher = false;
        assert_eq!(next(&q, &mut searcher), Some(1));
        assert_eq!(q.try_pop(false), Some(2));
        assert_eq!(q.load(), (0, 2, 0));
        assert_eq!(next(&q, &mut searcher), None);
    }

    #[test]
    fn free_consumers_extend_the_capacity() {
        let q = JobQueue::new(1, 2);
        // Two free consumers will take two items; one more may wait.
        assert_eq!(q.push(1), Ok(()));
        assert_eq!(q.push(2), Ok(()));
        assert_eq!(q.push(3), Ok(()));
        assert_eq!(q.push(4), Err(PushError::Full(4)));
        assert_eq!(q.try_pop(false), Some(1));
        assert_eq!(q.push(5), Err(PushError::Full(5)));
        q.done();
        assert_eq!(q.push(6), Ok(()));
    }

    fn idle_consumers(q: &JobQueue<i32>, n: usize) {
        while q.lock().idle.len() < n {
            thread::yield_now();
        }
    }

    #[test]
    fn a_burst_wakes_one_searcher_at_a_time() {
        let q = Arc::new(JobQueue::new(100, 4));
        let (took, taken) = mpsc::channel();
        let consumers: Vec<_> = (0..4)
            .map(|_| {
                let (q, took) = (Arc::clone(&q), took.clone());
                thread::spawn(move || {
                    let mut searcher = false;
                    while let Some(v) = next(&q, &mut searcher) {
                        took.send(v).ok();
                        q.done();
                    }
                })
            })
            .collect();
        idle_consumers(&q, 4);
        // While the first item is not taken, further items wake nobody else.
        let mut state = q.lock();
        state.items.extend([1, 2, 3]);
        let first = state.searcher();
        assert!(first.is_some());
        assert!(state.searcher().is_none());
        assert_eq!(state.idle.len(), 3);
        drop(state);
        first.into_iter().for_each(|s| s.wake());
        let mut got: Vec<i32> = (0..3).filter_map(|_| taken.recv_timeout(Duration::from_secs(10)).ok()).collect();
        got.sort_unstable();
        assert_eq!(got, vec![1, 2, 3]);
        q.close();
        for c in consumers {
            c.join().ok();
        }
    }

    #[test]
    fn the_consumer_that_went_idle_last_is_woken_first() {
        let q = Arc::new(JobQueue::new(100, 2));
        let (took, taken) = mpsc::channel();
        let spawn = |name: &'static str| {
            let (q, took) = (Arc::clone(&q), took.clone());
            thread::spawn(move || {
                let mut searcher = false;
                while let Some(v) = next(&q, &mut searcher) {
                    took.send((name, v)).ok();
                    q.done();
                }
            })
        };
        let first = spawn("first");
        idle_consumers(&q, 1);
        let second = spawn("second");
        idle_consumers(&q, 2);
        q.push(1).ok();
        assert_eq!(taken.recv_timeout(Duration::from_secs(10)), Ok(("second", 1)));
        q.close();
        first.join().ok();
        second.join().ok();
    }

    #[test]
    fn a_blocked_consumer_does_not_hold_up_the_others() {
        let q = Arc::new(JobQueue::new(100, 2));
        let (release, blocked) = mpsc::channel::<()>();
        let (took, taken) = mpsc::channel();
        let blocker = {
            let q = Arc::clone(&q);
            thread::spawn(move || {
                let mut searcher = false;
                let first = next(&q, &mut searcher);
                took.send(first).ok();
                // Holds its item, like a thread inside a slow app, until released.
                blocked.recv().ok();
                q.done();
            })
        };
        q.push(1).ok();
        assert_eq!(taken.recv_timeout(Duration::from_secs(10)), Ok(Some(1)));
        let other = {
            let q = Arc::clone(&q);
            thread::spawn(move || {
                let mut searcher = false;
                let mut got = Vec::new();
                while let Some(v) = next(&q, &mut searcher) {
                    got.push(v);
                    q.done();
                }
                got
            })
        };
        for i in 2..=5 {
            q.push(i).ok();
        }
        q.close();
        assert_eq!(other.join().unwrap_or_default(), vec![2, 3, 4, 5]);
        release.send(()).ok();
        blocker.join().ok();
    }

    #[test]
    fn waiting_consumers_get_every_item_once() {
        let q = Arc::new(JobQueue::new(1000, 4));
        let consumers: Vec<_> = (0..4)
            .map(|_| {
                let q = Arc::clone(&q);
                thread::spawn(move || {
                    let mut got = Vec::new();
                    let mut searcher = false;
                    while let Some(v) = next(&q, &mut searcher) {
                        got.push(v);
                        q.done();
                    }
                    got
                })
            })
            .collect();
        for i in 0..500 {
            while q.push(i).is_err() {
                thread::yield_now();
            }
        }
        q.close();
        let mut all: Vec<i32> = consumers.into_iter().flat_map(|c| c.join().unwrap_or_default()).collect();
        all.sort_unstable();
        assert_eq!(all, (0..500).collect::<Vec<_>>());
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;

    /// A consumer's loop, as the pool's threads run it: every item it took, once the queue
    /// tells it to leave; `took` hears of each item as it is taken.
    fn consume(q: &JobQueue<i32>, took: Option<loom::sync::mpsc::Sender<()>>) -> Vec<i32> {
        let (mut got, mut searcher) = (Vec::new(), false);
        loop {
            if let Some(item) = q.try_pop(searcher) {
                searcher = false;
                got.push(item);
                if let Some(took) = &took {
                    took.send(()).ok();
                }
                q.done();
            } else if q.wait() {
                searcher = true;
            } else {
                return got;
            }
        }
    }

    /// Two consumers looping as the pool's threads do and a producer pushing two items: in
    /// every interleaving each item is taken exactly once, before the queue is closed (so no
    /// close() wakes a consumer that a push failed to wake), and then both consumers leave.
    #[test]
    fn every_item_is_taken_once_without_waiting_for_close() {
        crate::bridge::sync::model(|| {
            let q = Arc::new(JobQueue::new(2, 2));
            let (took, taken) = loom::sync::mpsc::channel();
            let consumers: Vec<_> = (0..2)
                .map(|_| {
                    let (q, took) = (Arc::clone(&q), took.clone());
                    thread::spawn(move || consume(&q, Some(took)))
                })
                .collect();
            assert_eq!(q.push(1), Ok(()));
            assert_eq!(q.push(2), Ok(()));
            // A lost wake-up leaves every thread blocked here and in park, which loom reports.
            for _ in 0..2 {
                taken.recv().ok();
            }
            q.close();
            let mut all: Vec<i32> = consumers.into_iter().flat_map(|c| c.join().unwrap_or_default()).collect();
            all.sort_unstable();
            assert_eq!(all, vec![1, 2]);
        });
    }

    /// A held item that comes back after `close` is still served, and the consumers leave
    /// only after it: in every interleaving of the consumer, the closer and the resumer.
    #[test]
    fn a_held_item_comes_back_after_close_and_is_served() {
        crate::bridge::sync::model(|| {
            let q = Arc::new(JobQueue::new(0, 1));
            q.hold();
            let consumer = {
                let q = Arc::clone(&q);
                thread::spawn(move || consume(&q, None))
            };
            let resumer = {
                let q = Arc::clone(&q);
                thread::spawn(move || q.resume(7))
            };
            q.close();
            resumer.join().ok();
            assert_eq!(consumer.join().unwrap_or_default(), vec![7]);
        });
    }
}
