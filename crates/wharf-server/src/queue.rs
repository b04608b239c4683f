//! The bounded queue between the I/O side and the Python threads.
//!
//! A mutex-protected deque rather than a channel: the I/O thread needs an exact, cheap answer
//! to "is the queue full" (to answer 503 at once), and the saturation metrics need exact
//! counts of waiting items and busy consumers.
//!
//! The capacity counts items *waiting for a consumer*: items that idle consumers are about
//! to take do not count, so a burst that arrives faster than threads wake up is never
//! refused while threads are free.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

pub struct JobQueue<T> {
    state: Mutex<State<T>>,
    available: Condvar,
    capacity: usize,
    consumers: usize,
}

struct State<T> {
    items: VecDeque<T>,
    /// Consumers blocked in `pop`.
    idle: usize,
    /// Consumers holding an item they took and have not reported `done` for.
    busy: usize,
    closed: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum PushError<T> {
    Full(T),
    Closed(T),
}

impl<T> JobQueue<T> {
    /// `capacity` items may wait beyond what `consumers` free consumers will take.
    pub fn new(capacity: usize, consumers: usize) -> Self {
        JobQueue {
            state: Mutex::new(State {
                items: VecDeque::with_capacity(capacity.min(4096)),
                idle: 0,
                busy: 0,
                closed: false,
            }),
            available: Condvar::new(),
            capacity,
            consumers,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding this lock cannot leave the deque inconsistent (every critical
        // section is a single push/pop), so a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn push(&self, item: T) -> Result<(), PushError<T>> {
        let mut state = self.lock();
        if state.closed {
            return Err(PushError::Closed(item));
        }
        let free = self.consumers.saturating_sub(state.busy);
        if state.items.len() >= self.capacity + free {
            return Err(PushError::Full(item));
        }
        state.items.push_back(item);
        let wake = state.idle > 0;
        drop(state);
        if wake {
            self.available.notify_one();
        }
        Ok(())
    }

    /// Takes the next item without waiting; the caller is busy until it calls `done`.
    pub fn try_pop(&self) -> Option<T> {
        let mut state = self.lock();
        let item = state.items.pop_front();
        if item.is_some() {
            state.busy += 1;
        }
        item
    }

    /// Waits for the next item (the caller is busy until `done`); `None` once the queue is
    /// closed and empty.
    pub fn pop(&self) -> Option<T> {
        let mut state = self.lock();
        loop {
            if let Some(item) = state.items.pop_front() {
                state.busy += 1;
                return Some(item);
            }
            if state.closed {
                return None;
            }
            state.idle += 1;
            state = self.available.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
            state.idle -= 1;
        }
    }

    /// Refuses new items; consumers drain what is queued and then get `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.available.notify_all();
    }

    /// The consumer finished the item it took.
    pub fn done(&self) {
        let mut state = self.lock();
        state.busy = state.busy.saturating_sub(1);
    }

    /// (items waiting, consumers busy), read together.
    pub fn load(&self) -> (usize, usize) {
        let state = self.lock();
        (state.items.len(), state.busy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;

    #[test]
    fn full_and_closed_are_reported() {
        let q = JobQueue::new(2, 0);
        assert_eq!(q.push(1), Ok(()));
        assert_eq!(q.push(2), Ok(()));
        assert_eq!(q.push(3), Err(PushError::Full(3)));
        assert_eq!(q.load(), (2, 0));
        q.close();
        assert_eq!(q.push(4), Err(PushError::Closed(4)));
        assert_eq!(q.pop(), Some(1));
        assert_eq!(q.try_pop(), Some(2));
        assert_eq!(q.load(), (0, 2));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn free_consumers_extend_the_capacity() {
        let q = JobQueue::new(1, 2);
        // Two free consumers will take two items; one more may wait.
        assert_eq!(q.push(1), Ok(()));
        assert_eq!(q.push(2), Ok(()));
        assert_eq!(q.push(3), Ok(()));
        assert_eq!(q.push(4), Err(PushError::Full(4)));
        assert_eq!(q.try_pop(), Some(1));
        assert_eq!(q.push(5), Err(PushError::Full(5)));
        q.done();
        assert_eq!(q.push(6), Ok(()));
    }

    #[test]
    fn waiting_consumers_get_every_item_once() {
        let q = Arc::new(JobQueue::new(1000, 4));
        let consumers: Vec<_> = (0..4)
            .map(|_| {
                let q = Arc::clone(&q);
                thread::spawn(move || {
                    let mut got = Vec::new();
                    while let Some(v) = q.pop() {
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
