//! `start_response` and the response state it drives: what was declared, what was sent.
//!
//! The head is held back until the first non-empty body chunk (or the end of the response),
//! so an app may still replace it with `exc_info` until then, as PEP 3333 requires.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};
use tokio::sync::oneshot;

use super::response_head::{Head, HeadError};
use crate::bridge::park::block_on_until;
use crate::bridge::{End, Outbox, Pipe, PipeReader, Reply, ReplyBody, SharedBody};

/// The client went away (or stalled past the I/O timeout); stop producing the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientGone;

pub(crate) struct Responder {
    reply: Option<oneshot::Sender<Reply>>,
    outbox: Arc<Outbox>,
    stream: Option<Arc<Pipe>>,
    declared: Option<Head>,
    head_sent: bool,
    /// The head went out with the whole body; anything the app yields after that is excess.
    complete: bool,
    /// The body length the head announced, when the body must match it: not for HEAD requests
    /// or statuses without a body. Framing on a keep-alive connection rests on it.
    length: Option<u64>,
    /// Bytes pushed into the stream so far.
    streamed: u64,
    excess_warned: bool,
    /// The request was HEAD: no body goes out, whatever the app produces.
    head_request: bool,
    /// The request body, whose failure (too large, malformed) decides the response.
    body: Option<Arc<SharedBody>>,
    io_timeout: Duration,
}

impl Responder {
    pub(crate) fn new(
        reply: oneshot::Sender<Reply>,
        outbox: Arc<Outbox>,
        io_timeout: Duration,
        head_request: bool,
        body: Option<Arc<SharedBody>>,
    ) -> Self {
        Responder {
            reply: Some(reply),
            outbox,
            stream: None,
            declared: None,
            head_sent: false,
            complete: false,
            length: None,
            streamed: 0,
            excess_warned: false,
            head_request,
            body,
            io_timeout,
        }
    }

    pub(crate) fn head_sent(&self) -> bool {
        self.head_sent
    }

    pub(crate) fn has_head(&self) -> bool {
        self.declared.is_some()
    }

    pub(crate) fn declared_content_length(&self) -> Option<u64> {
        self.declared.as_ref().and_then(Head::content_length)
    }

    /// Adds a Content-Length the app did not declare (file responses know their size).
    pub(crate) fn declare_content_length(&mut self, len: u64) {
        if let Some(head) = self.declared.as_mut() {
            head.headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
        }
    }

    fn send_head(&mut self, mut head: Head, body: ReplyBody) -> Result<(), ClientGone> {
        let to = self.reply.take().ok_or(ClientGone)?;
        self.head_sent = true;
        let bodiless = matches!(head.status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
        if head.status == StatusCode::NO_CONTENT {
            // RFC 9110 §8.6: a 204 never carries Content-Length, whatever the app declared.
            head.headers.remove(http::header::CONTENT_LENGTH);
        }
        if to.is_closed() {
            return Err(ClientGone);
        }
        let (body, complete) = match body {
            ReplyBody::Full(bytes) => {
                if !bodiless && !head.headers.contains_key(http::header::CONTENT_LENGTH) {
                    head.headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(bytes.len()));
                }
                // A HEAD response carries no body; handing hyper one that disagrees with the
                // announced length would only trip its length bookkeeping.
                (ReplyBody::Full(if self.head_request { Bytes::new() } else { bytes }), true)
            }
            stream @ ReplyBody::Stream(_) => (stream, false),
        };
        if !bodiless && !self.head_request {
            self.length = head.content_length();
        }
        let reply = Reply { status: head.status, reason: head.reason, headers: head.headers, body };
        if complete {
            self.complete = true;
            self.outbox.send(to, reply);
            Ok(())
        } else {
            to.send(reply).map_err(|_| ClientGone)
        }
    }

    /// Sends the declared head with the complete body, held to the declared Content-Length:
    /// hyper writes a full body whole after whatever length the head announced, so a longer
    /// body would become the start of the next response on a keep-alive connection.
    pub(crate) fn send_full(&mut self, mut body: Bytes) -> Result<(), ClientGone> {
        if self.replaced_for_failed_body()? {
            return Ok(());
        }
        let head = self.declared.take().ok_or(ClientGone)?;
        let bodiless = matches!(head.status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
        match head.content_length() {
            Some(declared) if !bodiless && !self.head_request && (body.len() as u64) < declared => {
                // Too short: send what there is, then end the connection, so the client sees
                // a truncated response rather than waiting for bytes that never come.
                tracing::error!(
                    declared,
                    sent = body.len(),
                    "the application sent less body than its Content-Length; closing the connection after it"
                );
                let pipe = Arc::new(Pipe::default());
                if !body.is_empty() {
                    pipe.push_bytes(body).map_err(|_| ClientGone)?;
                }
                pipe.close(End::Aborted);
                self.complete = true;
                self.send_head(head, ReplyBody::Stream(PipeReader::new(pipe)))
            }
            Some(declared) if (body.len() as u64) > declared => {
                self.discard_excess(body.len() - declared as usize);
                body.truncate(declared as usize);
                self.send_head(head, ReplyBody::Full(body))
            }
            _ => self.send_head(head, ReplyBody::Full(body)),
        }
    }

    /// When reading the request body failed, the client is told so (413, 400, 408, closing
    /// the connection) whatever the app answers: a framework that caught the error would
    /// otherwise turn it into its own 500 page. True when that response went out instead.
    fn replaced_for_failed_body(&mut self) -> Result<bool, ClientGone> {
        let Some((status, message)) = self.body.as_ref().and_then(|body| body.failure().response()) else {
            return Ok(false);
        };
        tracing::warn!(
            status = status.as_u16(),
            "{message}: answering {} instead of the application's response",
            status.as_u16()
        );
        self.send_error(status, message)?;
        // Whatever the app still yields belongs to the response it no longer sends.
        self.excess_warned = true;
        Ok(true)
    }

    /// Sends a server-generated response, replacing whatever the app declared.
    pub(crate) fn send_error(&mut self, status: StatusCode, message: &str) -> Result<(), ClientGone> {
        self.declared = None;
        let mut head = Head::server_error(status);
        if matches!(status, StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT | StatusCode::BAD_REQUEST) {
            // The rest of the request body was not read; the connection cannot be reused.
            head.headers.insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
        }
        self.send_head(head, ReplyBody::Full(Bytes::from(format!("{message}\n"))))
    }

    /// The stream to append body chunks to, sending the head first if needed.
    fn stream(&mut self) -> Result<Arc<Pipe>, ClientGone> {
        if let Some(pipe) = &self.stream {
            return Ok(Arc::clone(pipe));
        }
        if self.replaced_for_failed_body()? {
            // The app's body has nowhere to go: stop producing it.
            return Err(ClientGone);
        }
        let head = self.declared.take().ok_or(ClientGone)?;
        let pipe = Arc::new(Pipe::default());
        self.stream = Some(Arc::clone(&pipe));
        self.send_head(head, ReplyBody::Stream(PipeReader::new(Arc::clone(&pipe))))?;
        Ok(pipe)
    }

    /// Waits (without the GIL) while the client has a full buffer's worth still to read.
    fn wait_for_room(&self, py: Python<'_>, pipe: &Pipe) -> Result<(), ClientGone> {
        if !pipe.is_full() {
            return Ok(());
        }
        let deadline = Instant::now() + self.io_timeout;
        match py.detach(|| block_on_until(pipe.wait_for_room(), deadline)) {
            Ok(Ok(())) => Ok(()),
            _ => Err(ClientGone),
        }
    }

    /// Whether `len` bytes are the whole body the app declared and nothing went out yet:
    /// then head and body travel as one complete response (one hand-off to the I/O thread
    /// instead of a stream's three), and nothing is held back.
    fn completes_declared_body(&self, len: usize) -> bool {
        !self.head_sent && self.declared_content_length() == Some(len as u64)
    }

    /// Bytes beyond the declared Content-Length go nowhere: written, they would be read as
    /// the start of the next response on the connection. Warned once per response.
    fn discard_excess(&mut self, len: usize) {
        if !self.excess_warned {
            self.excess_warned = true;
            tracing::warn!(
                bytes = len,
                "the application sent more body than its Content-Length; discarding the excess"
            );
        }
    }

    /// Sends one body chunk (copied), sending the head first if needed and first waiting
    /// while the client has a full buffer to read. Empty chunks are skipped: the head waits
    /// for the first non-empty one.
    pub(crate) fn send_chunk(&mut self, py: Python<'_>, chunk: &[u8]) -> Result<(), ClientGone> {
        self.send(Some(py), Chunk::Borrowed(chunk))
    }

    /// Like `send_chunk` for a chunk the server owns already (no copy).
    pub(crate) fn send_owned(&mut self, py: Python<'_>, chunk: Bytes) -> Result<(), ClientGone> {
        self.send(Some(py), Chunk::Owned(chunk))
    }

    /// Like `send_chunk` without waiting: the caller checks [`Responder::full_stream`]
    /// before producing the next chunk (one chunk beyond the buffer's limit at most).
    pub(crate) fn push_chunk(&mut self, chunk: &[u8]) -> Result<(), ClientGone> {
        self.send(None, Chunk::Borrowed(chunk))
    }

    /// The response's stream while its client has a full buffer still to read.
    pub(crate) fn full_stream(&self) -> Option<Arc<Pipe>> {
        self.stream.as_ref().filter(|pipe| pipe.is_full()).cloned()
    }

    /// `py`: wait (releasing the GIL) while the client's buffer is full.
    fn send(&mut self, py: Option<Python<'_>>, chunk: Chunk<'_>) -> Result<(), ClientGone> {
        let len = chunk.len();
        if len == 0 {
            return Ok(());
        }
        if self.complete {
            self.discard_excess(len);
            return Ok(());
        }
        if self.completes_declared_body(len) {
            return self.send_full(chunk.into_bytes());
        }
        let pipe = self.stream()?;
        let chunk = match self.length.map(|declared| declared.saturating_sub(self.streamed)) {
            Some(room) if len as u64 > room => {
                self.discard_excess(len - room as usize);
                if room == 0 {
                    return Ok(());
                }
                chunk.prefix(room as usize)
            }
            _ => chunk,
        };
        self.streamed += chunk.len() as u64;
        if let Some(py) = py {
            self.wait_for_room(py, &pipe)?;
        }
        match chunk {
            Chunk::Borrowed(data) => pipe.push(data),
            Chunk::Owned(data) => pipe.push_bytes(data),
        }
        .map_err(|_| ClientGone)
    }

    /// Ends the response: sends the head with an empty body if nothing was sent yet.
    pub(crate) fn finish(&mut self) -> Result<(), ClientGone> {
        if !self.head_sent {
            return self.send_full(Bytes::new());
        }
        if let Some(pipe) = self.stream.take() {
            match self.length {
                Some(declared) if self.streamed < declared => {
                    tracing::error!(
                        declared,
                        sent = self.streamed,
                        "the application sent less body than its Content-Length; closing the connection after it"
                    );
                    pipe.close(End::Aborted);
                }
                _ => pipe.close(End::Complete),
            }
        }
        Ok(())
    }

    /// The response cannot be completed; make the connection end without a clean terminator.
    pub(crate) fn abort(&mut self) {
        if let Some(pipe) = self.stream.take() {
            pipe.close(End::Aborted);
        }
    }
}

/// A body chunk as the app produced it (borrowed from a Python object) or as the server read
/// it (owned): the pipe copies the first and keeps the second.
enum Chunk<'a> {
    Borrowed(&'a [u8]),
    Owned(Bytes),
}

impl Chunk<'_> {
    fn len(&self) -> usize {
        match self {
            Chunk::Borrowed(data) => data.len(),
            Chunk::Owned(data) => data.len(),
        }
    }

    fn prefix(self, len: usize) -> Self {
        match self {
            Chunk::Borrowed(data) => Chunk::Borrowed(&data[..len]),
            Chunk::Owned(data) => Chunk::Owned(data.slice(..len)),
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Chunk::Borrowed(data) => Bytes::copy_from_slice(data),
            Chunk::Owned(data) => data,
        }
    }
}

#[pyclass(frozen, module = "wharf")]
pub(crate) struct StartResponse {
    pub(crate) responder: Mutex<Responder>,
}

impl StartResponse {
    pub(crate) fn new(responder: Responder) -> Self {
        StartResponse { responder: Mutex::new(responder) }
    }

    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Responder) -> R) -> PyResult<R> {
        let mut guard = self
            .responder
            .lock()
            .map_err(|_| PyRuntimeError::new_err("response state is unusable after an earlier failure"))?;
        Ok(f(&mut guard))
    }
}

/// Builds the head from what the app passed, borrowing the Python strings instead of copying
/// them (this runs once per request).
fn build_head(status: &Bound<'_, PyAny>, headers: &Bound<'_, PyAny>) -> PyResult<Head> {
    let status = status
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err(format!("status must be a str, not {}", status.get_type())))?;
    let invalid = |e: HeadError| pyo3::exceptions::PyValueError::new_err(e.to_string());
    let mut head = Head::start(&status.to_cow()?, headers.len().unwrap_or(0)).map_err(invalid)?;
    for item in
        headers.try_iter().map_err(|_| PyTypeError::new_err("headers must be a list of (name, value) tuples"))?
    {
        let item = item?;
        let pair = item
            .cast::<PyTuple>()
            .map_err(|_| PyTypeError::new_err(format!("header {item} is not a (name, value) tuple")))?;
        if pair.len() != 2 {
            return Err(PyTypeError::new_err(format!("header {pair} is not a (name, value) tuple")));
        }
        let name = pair.get_borrowed_item(0)?;
        let name =
            name.cast::<PyString>().map_err(|_| PyTypeError::new_err(format!("header name in {pair} is not a str")))?;
        let value = pair.get_borrowed_item(1)?;
        let value = value
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err(format!("header value in {pair} is not a str")))?;
        head.push(&name.to_cow()?, &value.to_cow()?).map_err(invalid)?;
    }
    Ok(head)
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info = None))]
    fn __call__<'py>(
        slf: &Bound<'py, Self>,
        status: &Bound<'py, PyAny>,
        headers: &Bound<'py, PyAny>,
        exc_info: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let exc_info = exc_info.filter(|e| !e.is_none());
        let this = slf.get();
        let (head_sent, has_head) = this.with(|r| (r.head_sent(), r.has_head()))?;
        if let Some(exc_info) = exc_info {
            if head_sent {
                // PEP 3333: once headers are out, the original error must propagate.
                let value = exc_info.get_item(1)?;
                return Err(PyErr::from_value(value));
            }
        } else if has_head || head_sent {
            return Err(PyRuntimeError::new_err("start_response() called a second time without exc_info"));
        }
        let head = build_head(status, headers)?;
        this.with(|r| r.declared = Some(head))?;
        slf.getattr("write")
    }

    /// The legacy `write()` callable returned by `start_response`.
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = data
            .cast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err(format!("write() needs bytes, not {}", data.get_type())))?;

        self.with(|r| {
            if !r.has_head() && !r.head_sent() {
                return Err(PyRuntimeError::new_err("write() called before start_response()"));
            }
            r.send_chunk(py, data.as_bytes())
                .map_err(|_| pyo3::exceptions::PyConnectionResetError::new_err("client disconnected"))
        })?
    }
}
