//! `wsgi.input`: the request body, streamed from the connection as the app reads it.
//!
//! Beyond the first frame hyper has already read (see `request_body`), nothing is read
//! before the app asks, so `Expect: 100-continue` is answered only on the first read, and a
//! large upload never sits in memory as a whole.

use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pyo3::exceptions::{PyOSError, PyStopIteration, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::bridge::park::{block_on_until, poll_now};
use crate::bridge::{BodyFailure, RequestBody, SharedBody};

#[pyclass(frozen, module = "wharf")]
pub(crate) struct WsgiInput {
    reader: Mutex<BodyReader>,
    /// The body and how reading it went; `None` for requests without one.
    shared: Option<Arc<SharedBody>>,
}

struct BodyReader {
    /// Until the body is read to its end (or fails, or the connection takes it back).
    body: Option<Arc<SharedBody>>,
    pending: Bytes,
    received: u64,
    limit: u64,
    io_timeout: Duration,
}

enum Fill {
    Data,
    Eof,
}

impl WsgiInput {
    /// `limit` is the largest body accepted (0: none).
    pub(crate) fn new(body: Option<Arc<SharedBody>>, limit: u64, io_timeout: Duration) -> Self {
        WsgiInput {
            shared: body.clone(),
            reader: Mutex::new(BodyReader { body, pending: Bytes::new(), received: 0, limit, io_timeout }),
        }
    }

    /// Body bytes received so far.
    pub(crate) fn received(&self) -> u64 {
        self.reader.lock().map(|r| r.received).unwrap_or(0)
    }

    pub(crate) fn failure(&self) -> BodyFailure {
        self.shared.as_ref().map_or(BodyFailure::None, |shared| shared.failure())
    }

    fn with_reader<R>(&self, f: impl FnOnce(&mut BodyReader) -> Result<R, BodyFailure>) -> PyResult<R> {
        let mut reader =
            self.reader.lock().map_err(|_| PyOSError::new_err("wsgi.input is unusable after an earlier failure"))?;
        f(&mut reader).map_err(|failure| {
            if let Some(shared) = &self.shared {
                shared.set_failure(failure);
            }
            match failure {
                BodyFailure::TooLarge => {
                    PyValueError::new_err(format!("request body exceeds the server limit of {} bytes", reader.limit))
                }
                BodyFailure::TimedOut => PyOSError::new_err("timed out waiting for the request body"),
                BodyFailure::Released => PyOSError::new_err(
                    "the request body is no longer available: it was discarded once the response was complete",
                ),
                _ => PyOSError::new_err("malformed or incomplete request body"),
            }
        })
    }
}

impl BodyReader {
    /// Gets the next piece of the body into `pending` (which must be empty).
    fn fill(&mut self, py: Python<'_>) -> Result<Fill, BodyFailure> {
        let Some(shared) = self.body.as_ref() else { return Ok(Fill::Eof) };
        let mut slot = shared.lock();
        let Some(body) = slot.as_mut() else {
            let released = shared.released();
            drop(slot);
            self.body = None;
            return if released { Err(BodyFailure::Released) } else { Ok(Fill::Eof) };
        };
        let deadline = Instant::now() + self.io_timeout;
        loop {
            // Data hyper already has is taken without releasing the GIL; only a real wait
            // for the client lets other Python threads run.
            let frame = match poll_now(|cx| body.poll_frame(cx)) {
                Poll::Ready(frame) => Ok(frame),
                Poll::Pending => py.detach(|| block_on_until(std::future::poll_fn(|cx| body.poll_frame(cx)), deadline)),
            };
            match frame {
                Err(_) => return Err(BodyFailure::TimedOut),
                Ok(None) => {
                    *slot = None;
                    drop(slot);
                    self.body = None;
                    return Ok(Fill::Eof);
                }
                Ok(Some(Err(_))) => {
                    *slot = None;
                    drop(slot);
                    self.body = None;
                    return Err(BodyFailure::Broken);
                }
                Ok(Some(Ok(frame))) => {
                    // Trailers carry no body bytes; keep reading.
                    let Ok(data) = frame.into_data() else { continue };
                    if data.is_empty() {
                        continue;
                    }
                    self.received += data.len() as u64;
                    if self.limit > 0 && self.received > self.limit {
                        *slot = None;
                        drop(slot);
                        self.body = None;
                        return Err(BodyFailure::TooLarge);
                    }
                    self.pending = data;
                    return Ok(Fill::Data);
                }
            }
        }
    }

    /// Up to `size` bytes (all remaining when `None`), stopping after the first `\n` when
    /// `line` is set.
    fn read_until(&mut self, py: Python<'_>, size: Option<usize>, line: bool) -> Result<Vec<u8>, BodyFailure> {
        // Sized for what can still come (up to a bound: the client only declared it), so a
        // large read does not grow and copy its buffer step by step.
        let still_to_come =
            self.body.as_ref().and_then(|shared| shared.lock().as_ref().and_then(RequestBody::remaining));
        let expected = self.pending.len() as u64 + still_to_come.unwrap_or(0);
        let capacity = if line { 0 } else { size.unwrap_or(usize::MAX).min(expected.min(1 << 20) as usize) };
        let mut out = Vec::with_capacity(capacity);
        loop {
            let want = size.map_or(usize::MAX, |s| s - out.len());
            if want == 0 {
                return Ok(out);
            }
            if self.pending.is_empty()
                && let Fill::Eof = self.fill(py)?
            {
                return Ok(out);
            }
            let window = want.min(self.pending.len());
            let newline = if line { self.pending[..window].iter().position(|&b| b == b'\n') } else { None };
            match newline {
                Some(pos) => {
                    out.extend_from_slice(&self.pending.split_to(pos + 1));
                    return Ok(out);
                }
                None => out.extend_from_slice(&self.pending.split_to(window)),
            }
        }
    }
}

/// Python's convention: a negative or missing size means "no limit".
fn size_arg(size: Option<isize>) -> Option<usize> {
    size.and_then(|s| usize::try_from(s).ok())
}

#[pymethods]
impl WsgiInput {
    #[pyo3(signature = (size = None))]
    fn read<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        self.with_reader(|r| {
            let size = size_arg(size);
            if size != Some(0)
                && r.pending.is_empty()
                && let Fill::Eof = r.fill(py)?
            {
                return Ok(PyBytes::new(py, b""));
            }
            // What was asked for is often in hand in one piece: copy it once, straight into
            // the bytes object.
            if let Some(n) = size.filter(|&n| n > 0 && n <= r.pending.len()) {
                return Ok(PyBytes::new(py, &r.pending.split_to(n)));
            }
            let data = r.read_until(py, size, false)?;
            Ok(PyBytes::new(py, &data))
        })
    }

    #[pyo3(signature = (size = None))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let data = self.with_reader(|r| r.read_until(py, size_arg(size), true))?;
        Ok(PyBytes::new(py, &data))
    }

    /// All remaining lines; stops once about `hint` bytes were read, if given.
    #[pyo3(signature = (hint = None))]
    fn readlines<'py>(&self, py: Python<'py>, hint: Option<isize>) -> PyResult<Bound<'py, PyList>> {
        let hint = size_arg(hint).filter(|&h| h > 0);
        let lines = PyList::empty(py);
        let mut total = 0;
        loop {
            let line = self.with_reader(|r| r.read_until(py, None, true))?;
            if line.is_empty() {
                return Ok(lines);
            }
            total += line.len();
            lines.append(PyBytes::new(py, &line))?;
            if hint.is_some_and(|h| total >= h) {
                return Ok(lines);
            }
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let line = self.with_reader(|r| r.read_until(py, None, true))?;
        if line.is_empty() {
            return Err(PyStopIteration::new_err(()));
        }
        Ok(PyBytes::new(py, &line))
    }

    fn readable(&self) -> bool {
        true
    }
}
