//! The pool of Python threads that run the application.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use pyo3::intern;
use pyo3::prelude::*;

use super::call::{self, AppContext};
use super::environ::HeaderKeyCache;
use super::stream::{Parked, Streaming, copy_context};
use crate::bridge::{JobQueue, LoggedRequest, Watchdog, Work, sched};
use crate::error::StartError;

pub(crate) struct Pool {
    queue: Arc<JobQueue<Work>>,
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
            let serve = Serve {
                index: n as usize,
                ctx: Arc::clone(&ctx),
                queue: Arc::clone(&queue),
                watchdog: watchdog.clone(),
                cache: HeaderKeyCache::default(),
                searcher: false,
                gil_released: Instant::now(),
            };
            let exit_tx = exit_tx.clone();
            thread::Builder::new()
                .name(format!("wharf-py-{n}"))
                .spawn(move || {
                    run_thread(serve);
                    drop(exit_tx);
                })
                .map_err(StartError::Thread)?;
        }
        Ok(Pool { queue, exited })
    }

    pub(crate) fn queue(&self) -> Arc<JobQueue<Work>> {
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

/// The thread runs its loop in one `contextvars.Context`, as a plain thread would, until a
/// response parks: that takes the context along (see `stream`) and the thread goes on in a
/// copy made before the response's iterator ran.
fn run_thread(serve: Serve) {
    sched::batch_wakeups();
    // The thread stays attached to the interpreter for its whole life, so waiting for work
    // only releases the GIL instead of creating and destroying a thread state per request.
    Python::attach(|py| {
        let queue = Arc::clone(&serve.queue);
        let serve = match Bound::new(py, serve) {
            Ok(serve) => serve,
            Err(err) => {
                tracing::error!("cannot start a Python thread's loop: {err}");
                return;
            }
        };
        let mut context = match copy_context(py) {
            Ok(context) => context,
            Err(err) => {
                tracing::error!("cannot create the Python thread's context: {err}");
                return;
            }
        };
        loop {
            let parked = match context.call_method1(intern!(py, "run"), (&serve,)) {
                Ok(out) if out.is_none() => return,
                Ok(out) => out,
                Err(err) => {
                    // Only a bug in wharf gets here (the loop catches what the app raises);
                    // going on keeps the thread's share of the capacity.
                    tracing::error!("internal error in a Python thread's loop: {err}");
                    continue;
                }
            };
            let stream = match parked.cast_into::<Streaming>() {
                Ok(stream) => stream,
                Err(err) => {
                    tracing::error!("internal error: a Python thread's loop returned {err}");
                    continue;
                }
            };
            let own = match stream.borrow_mut().take_thread_context() {
                Some(own) => own.into_bound(py),
                // Not reached: a stream parks only with a thread context (see `start`).
                None => match context.call_method0(intern!(py, "copy")) {
                    Ok(own) => own,
                    Err(err) => {
                        tracing::error!("cannot copy the Python thread's context: {err}");
                        return;
                    }
                },
            };
            let taken = std::mem::replace(&mut context, own);
            Parked::new(stream.unbind(), taken.unbind(), Arc::clone(&queue)).park(py);
        }
    });
}

/// A Python thread's serving loop, called through `Context.run`.
#[pyclass(module = "wharf")]
struct Serve {
    index: usize,
    ctx: Arc<AppContext>,
    queue: Arc<JobQueue<Work>>,
    watchdog: Option<Arc<Watchdog>>,
    cache: HeaderKeyCache,
    searcher: bool,
    gil_released: Instant,
}

#[pymethods]
impl Serve {
    /// Serves until the queue closes (`None`) or a response parks (that response).
    fn __call__(&mut self, py: Python<'_>) -> Option<Streaming> {
        loop {
            // Items are taken only while holding the GIL: a thread waiting for the GIL never
            // sits on a request another thread could be serving.
            let work = match self.queue.try_pop(self.searcher) {
                Some(work) => work,
                None => {
                    let queue = &self.queue;
                    if !py.detach(|| queue.wait()) {
                        return None;
                    }
                    self.searcher = true;
                    self.gil_released = Instant::now();
                    continue;
                }
            };
            self.searcher = false;
            let started = Instant::now();
            let parked = match work {
                Work::Request(job) => self.serve(py, job, started),
                Work::Resume(resume) => {
                    guard(resume);
                    None
                }
            };
            self.queue.done();
            if started.saturating_duration_since(self.gil_released) >= GIL_REFRESH {
                // A searcher waiting for the GIL forces it away from this thread after the
                // switch interval (5 ms) unless the GIL changes hands meanwhile. Between
                // requests that would only interleave CPU-bound requests, so release and
                // retake it: the searcher sees the switch and keeps waiting for a real block.
                py.detach(|| ());
                self.gil_released = Instant::now();
            }
            if parked.is_some() {
                return parked;
            }
        }
    }
}

impl Serve {
    fn serve(&mut self, py: Python<'_>, mut job: crate::bridge::Job, started: Instant) -> Option<Streaming> {
        self.ctx.metrics.queued_for(started.saturating_duration_since(job.enqueued));
        let watched = match (&self.watchdog, job.expire.take()) {
            (Some(dog), Some(expire)) => {
                dog.start(self.index, expire, LoggedRequest::of(&job.parts, self.ctx.log_query));
                Some(dog)
            }
            _ => None,
        };
        let (ctx, cache) = (&self.ctx, &mut self.cache);
        let parked = guard(|| call::serve_job(py, ctx, cache, job)).flatten();
        if let Some(dog) = watched {
            dog.finish(self.index);
        }
        parked
    }
}

/// A panic while serving is a bug in wharf, not the app; it must not take the thread (and
/// with it a share of the server's capacity) down.
fn guard<R>(f: impl FnOnce() -> R) -> Option<R> {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    if outcome.is_err() {
        tracing::error!("internal error while serving a request (see the panic message above)");
    }
    outcome.ok()
}
