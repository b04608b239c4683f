//! Streamed responses that give their Python thread back while the client is not reading.
//!
//! The app's iterator is driven until the client's buffer (the response pipe, 256 KiB) is full;
//! then the response parks on the pipe and the thread serves other requests. Once the client
//! has room again (or is gone), the rest goes on on whichever Python thread is free. So no
//! number of stalled clients can take the pool from others: before, as many slow readers as
//! `--threads` held every thread for `--io-timeout` (60 s). `write()` and `wsgi.file_wrapper`
//! still wait on their thread: the app's own code is running then, and cannot be set aside.
//!
//! contextvars: a response keeps the `contextvars.Context` it started in, and each later turn
//! runs in it. Generators that set a variable and reset it at the end (Flask's
//! `stream_with_context` pushes its request context) need that: a token resets only in the
//! context object that made it. The thread goes on in a copy taken before the iterator's first
//! turn, so what the parked generator set stays out of the next requests (Flask would find
//! the parked request's app context there, and share it). State in `threading.local` stays
//! with the thread, as the README says; `--pin-streams` keeps each response on its thread.

use std::sync::Arc;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyIterator;

use super::call::{Exchange, Failure, Sent, as_bytes, close, require_head};
use super::errors_stream::Serving;
use super::start_response::Responder;
use crate::bridge::{JobQueue, Pipe, Work};

/// A response iterator with more to send once its client has room.
#[pyclass(module = "wharf")]
pub(crate) struct Streaming {
    /// `None` once the response ended.
    exchange: Option<Exchange>,
    /// What the app returned, for `close()`.
    result: Py<PyAny>,
    iterator: Py<PyIterator>,
    /// The thread's context as it was before the first turn, for the thread to go on in once
    /// this response parked (taken by the pool).
    thread_context: Option<Py<PyAny>>,
}

/// How a turn of sending ended.
enum Turn {
    Ended(Result<(), Failure>),
    /// The client's buffer is full; the iterator has not been asked for more.
    Full,
}

impl Streaming {
    /// Sends from `iterator` on this thread until the response ends or the client's buffer
    /// fills up.
    pub(super) fn start(py: Python<'_>, exchange: Exchange, result: Py<PyAny>, iterator: Py<PyIterator>) -> Sent {
        let thread_context = match exchange.ctx.release_slow_streams {
            true => match copy_context(py) {
                Ok(context) => Some(context.unbind()),
                Err(err) => return Sent::Done(exchange, Err(Failure::App(err))),
            },
            false => None,
        };
        let outcome = match (turn(py, &exchange, iterator.bind(py), thread_context.is_some()), thread_context) {
            (Turn::Full, Some(context)) => {
                let thread_context = Some(context);
                return Sent::Unfinished(Streaming { exchange: Some(exchange), result, iterator, thread_context });
            }
            // Not reached: a turn that may not park never reports a full buffer.
            (Turn::Full, None) => Ok(()),
            (Turn::Ended(outcome), _) => outcome,
        };
        let closed = close(result.bind(py));
        Sent::Done(exchange, outcome.and(closed.map_err(Failure::from)))
    }

    /// The context the thread that started this response goes on in.
    pub(super) fn take_thread_context(&mut self) -> Option<Py<PyAny>> {
        self.thread_context.take()
    }

    /// The pipe a full stream waits on.
    fn pipe(&self) -> Option<Arc<Pipe>> {
        let sr = self.exchange.as_ref()?.start_response.get();
        sr.with(|r| r.full_stream()).ok().flatten()
    }

    /// Ends the response with `outcome`: closes the iterable, answers or logs the failure.
    fn end(&mut self, py: Python<'_>, outcome: Result<(), Failure>) {
        let closed = close(self.result.bind(py));
        if let Some(exchange) = self.exchange.take() {
            exchange.end(py, outcome.and(closed.map_err(Failure::from)));
        }
    }
}

#[pymethods]
impl Streaming {
    /// One turn, in the response's own context (`Context.run` calls this): true when the
    /// client's buffer is full again and the response must park.
    fn __call__(&mut self, py: Python<'_>) -> bool {
        let Some(exchange) = &self.exchange else {
            return false;
        };
        let ctx = Arc::clone(&exchange.ctx);
        let serving = Serving::begin(exchange.environ.bind(py));
        let full = match turn(py, exchange, self.iterator.bind(py), true) {
            Turn::Full => true,
            Turn::Ended(outcome) => {
                self.end(py, outcome);
                false
            }
        };
        serving.end(py, ctx.errors.get());
        full
    }
}

/// `contextvars.copy_context()`: a copy of the context this thread runs in now.
pub(super) fn copy_context(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    static COPY_CONTEXT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    COPY_CONTEXT
        .get_or_try_init(py, || Ok::<_, PyErr>(py.import("contextvars")?.getattr("copy_context")?.unbind()))?
        .bind(py)
        .call0()
}

/// Sends from `iterator` until the response ends or, when it may `park`, until the client's
/// buffer fills up (else it waits for room on this thread).
fn turn(py: Python<'_>, exchange: &Exchange, iterator: &Bound<'_, PyIterator>, park: bool) -> Turn {
    let sr = exchange.start_response.get();
    let mut iterator = iterator.clone();
    let sent = (|| {
        loop {
            if park && sr.with(|r| r.full_stream().is_some())? {
                return Ok(Turn::Full);
            }
            let Some(item) = iterator.next() else {
                break;
            };
            let item = item?;
            let bytes = as_bytes(&item)?;
            if bytes.as_bytes().is_empty() {
                continue;
            }
            require_head(sr)?;
            if park {
                sr.with(|r| r.push_chunk(bytes.as_bytes()))??;
            } else {
                sr.with(|r| r.send_chunk(py, bytes.as_bytes()))??;
            }
        }
        require_head(sr)?;
        sr.with(Responder::finish)??;
        Ok(Turn::Ended(Ok(())))
    })();
    sent.unwrap_or_else(|failure| Turn::Ended(Err(failure)))
}

/// A stream waiting for its client, with the context it runs in.
pub(super) struct Parked {
    stream: Py<Streaming>,
    context: Py<PyAny>,
    queue: Arc<JobQueue<Work>>,
}

impl Parked {
    pub(super) fn new(stream: Py<Streaming>, context: Py<PyAny>, queue: Arc<JobQueue<Work>>) -> Self {
        Parked { stream, context, queue }
    }

    /// Waits for room without a thread: when it comes (or the client goes), the queue hands
    /// the stream to the next free Python thread.
    pub(super) fn park(self, py: Python<'_>) {
        let Some(pipe) = self.stream.borrow(py).pipe() else {
            // Not full any more (nothing else ends a stream early): go on here.
            return self.go(py);
        };
        let queue = Arc::clone(&self.queue);
        queue.hold();
        let resume = Box::new(move || {
            let queue = Arc::clone(&self.queue);
            queue.resume(Work::Resume(Box::new(move || Python::attach(|py| self.go(py)))));
        });
        if let Err(resume) = pipe.park(resume) {
            // Room came (or the client left) in the meantime.
            resume();
        }
    }

    /// Sends the next turn in the stream's context; parks again if the client fills up.
    pub(super) fn go(self, py: Python<'_>) {
        let stream = self.stream.bind(py);
        match self.context.bind(py).call_method1(intern!(py, "run"), (stream,)) {
            Ok(full) if full.is_truthy().unwrap_or(false) => self.park(py),
            Ok(_) => {}
            Err(err) => {
                // Context.run itself failed (a bug, not the app: turns catch the app's errors);
                // end the response rather than leave its client waiting.
                tracing::error!("internal error while streaming a response: {err}");
                if let Ok(mut stream) = stream.try_borrow_mut() {
                    stream.end(py, Err(Failure::App(err)));
                }
            }
        }
    }
}
