//! The pool of Python threads that run the application.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use pyo3::prelude::*;

use crate::environ::HeaderKeyCache;
use crate::error::StartError;
use crate::exchange::Job;
use crate::handler::{self, AppContext};
use crate::queue::JobQueue;
use crate::watchdog::Watchdog;

pub struct Pool {
    queue: Arc<JobQueue<Job>>,
    exited: mpsc::Receiver<()>,
}

impl Pool {
    pub fn start(
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

    pub fn queue(&self) -> Arc<JobQueue<Job>> {
        Arc::clone(&self.queue)
    }

    /// Lets the threads finish what is queued and exit; `false` if some are still busy at
    /// `deadline` (their requests are abandoned with the process).
    pub fn shutdown(self, deadline: Instant) -> bool {
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

/// Marks the calling thread SCHED_BATCH: when the I/O thread hands it a request, it does not
/// preempt the I/O thread, which finishes its round of connections first. On a busy core this
/// turns a context switch per request into one per batch (measured here: +25% req/s and a
/// 7x lower p99 at 256 connections). Best effort: without it wharf works the same, slower.
fn deprioritize_wakeups() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler with pid 0 changes only the calling thread's policy and
    // reads nothing but the parameter struct passed by reference.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if rc != 0 {
        tracing::debug!("SCHED_BATCH unavailable: {}", std::io::Error::last_os_error());
    }
}

fn run_thread(index: usize, ctx: &AppContext, queue: &JobQueue<Job>, watchdog: Option<&Watchdog>) {
    deprioritize_wakeups();
    // The thread stays attached to the interpreter for its whole life, so waiting for work
    // only releases the GIL instead of creating and destroying a thread state per request.
    Python::attach(|py| {
        let mut cache = HeaderKeyCache::default();
        loop {
            // Take already-queued work while holding the GIL: no hand-off, no wake-up.
            let mut job = match queue.try_pop() {
                Some(job) => job,
                None => match py.detach(|| queue.pop()) {
                    Some(job) => job,
                    None => return,
                },
            };
            ctx.metrics.queued_for(job.enqueued.elapsed());
            let watched = match (watchdog, job.expire.take()) {
                (Some(dog), Some(expire)) => {
                    dog.start(index, expire);
                    Some(dog)
                }
                _ => None,
            };
            // A panic in the handler is a bug in wharf, not the app; it must not take the
            // thread (and with it a share of the server's capacity) down.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                handler::handle(py, ctx, &mut cache, job);
            }));
            if outcome.is_err() {
                tracing::error!("internal error while serving a request (see the panic message above)");
            }
            if let Some(dog) = watched {
                dog.finish(index);
            }
            queue.done();
        }
    });
}
