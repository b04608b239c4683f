//! The pool of Python threads that run the application.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use pyo3::prelude::*;

use super::call::{self, AppContext};
use super::environ::HeaderKeyCache;
use crate::bridge::{Job, JobQueue, LoggedRequest, Watchdog, sched};
use crate::error::StartError;

pub(crate) struct Pool {
    queue: Arc<JobQueue<Job>>,
    exited: mpsc::Receiver<()>,
}

impl Pool {
    pub(crate) fn start(
        ctx: Arc<AppContext>,
        threads: u32,
        queue_size: u32,
        watchdog: Option<Arc<Watchdog>>,
    ) -> Result<Pool, StartError> {
        let queue = Arc::new(JobQueue::new(queue_size as usize, threads as usize));
        // Each thread holds a sender; when all are dropped, every thread has exited.
        let (exit_tx, exited) = mpsc::channel();
        for n in 0..threads {
            let ctx = Arc::clone(&ctx);
            let queue = Arc::clone(&queue);
            let exit_tx = exit_tx.clone();
            let watchdog = watchdog.clone();
            thread::Builder::new()
                .name(format!("wharf-py-{n}"))
                .spawn(move || {
                    run_thread(n as usize, &ctx, &queue, watchdog.as_deref());
                    drop(exit_tx);
                })
                .map_err(StartError::Thread)?;
        }
        Ok(Pool { queue, exited })
    }

    pub(crate) fn queue(&self) -> Arc<JobQueue<Job>> {
        Arc::clone(&self.queue)
    }

    /// Lets the threads finish what is queued and exit; `false` if some are still busy at
    /// `deadline` (their requests are abandoned with the process).
    pub(crate) fn shutdown(self, deadline: Instant) -> bool {
        self.queue.close();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.exited.recv_timeout(left) {
                Ok(()) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => return true,
                Err(mpsc::RecvTimeoutError::Timeout) => return false,
            }
        }
    }
}

/// Well below CPython's default switch interval (5 ms).
const GIL_REFRESH: std::time::Duration = std::time::Duration::from_millis(1);

fn run_thread(index: usize, ctx: &AppContext, queue: &JobQueue<Job>, watchdog: Option<&Watchdog>) {
    sched::batch_wakeups();
    // The thread stays attached to the interpreter for its whole life, so waiting for work
    // only releases the GIL instead of creating and destroying a thread state per request.
    Python::attach(|py| {
        let mut cache = HeaderKeyCache::default();
        let mut searcher = false;
        let mut gil_released = Instant::now();
        loop {
            // Items are taken only while holding the GIL: a thread waiting for the GIL never
            // sits on a request another thread could be serving.
            let mut job = match queue.try_pop(searcher) {
                Some(job) => job,
                None => {
                    if !py.detach(|| queue.wait()) {
                        return;
                    }
                    searcher = true;
                    gil_released = Instant::now();
                    continue;
                }
            };
            searcher = false;
            let started = Instant::now();
            ctx.metrics.queued_for(started.saturating_duration_since(job.enqueued));
            let watched = match (watchdog, job.expire.take()) {
                (Some(dog), Some(expire)) => {
                    dog.start(index, expire, LoggedRequest::of(&job.parts, ctx.log_query));
                    Some(dog)
                }
                _ => None,
            };
            // A panic in the handler is a bug in wharf, not the app; it must not take the
            // thread (and with it a share of the server's capacity) down.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                call::serve_job(py, ctx, &mut cache, job);
            }));
            if outcome.is_err() {
                tracing::error!("internal error while serving a request (see the panic message above)");
            }
            if let Some(dog) = watched {
                dog.finish(index);
            }
            queue.done();
            if started.saturating_duration_since(gil_released) >= GIL_REFRESH {
                // A searcher waiting for the GIL forces it away from this thread after the
                // switch interval (5 ms) unless the GIL changes hands meanwhile. Between
                // requests that would only interleave CPU-bound requests, so release and
                // retake it: the searcher sees the switch and keeps waiting for a real block.
                py.detach(|| ());
                gil_released = Instant::now();
            }
        }
    });
}
