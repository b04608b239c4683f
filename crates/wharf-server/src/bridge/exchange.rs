//! What the I/O side and the Python threads hand each other: a [`Job`] goes to a Python
//! thread, a [`Reply`] (status, headers and how the body will arrive) comes back.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use hyper::ext::ReasonPhrase;
use tokio::sync::oneshot;

use crate::listener::Peer;
use crate::pipe::Pipe;
use crate::request_body::RequestBody;

/// One request waiting for (or being served by) a Python thread.
pub struct Job {
    pub parts: http::request::Parts,
    /// `None` when the request cannot carry a body (no Content-Length, no Transfer-Encoding),
    /// so the app sees an empty `wsgi.input` without touching the connection.
    pub body: Option<RequestBody>,
    pub peer: Arc<Peer>,
    pub reply: oneshot::Sender<Reply>,
    /// With `--timeout`: handed to the watchdog while the app runs; firing it answers 504.
    pub expire: Option<oneshot::Sender<()>>,
    pub enqueued: Instant,
    /// With tracing on: the request span as the app must see it.
    pub trace: Option<JobTrace>,
}

pub struct JobTrace {
    /// W3C traceparent of wharf's span for this request.
    pub traceparent: String,
    /// The traceparent header the client sent, if any.
    pub incoming: Option<String>,
    /// Queue wait in ns + 1, set when a Python thread takes the job (0: not taken).
    pub acquired: Arc<AtomicU64>,
}

/// The response cannot be completed (the app failed after the head was sent); hyper aborts
/// the connection so the client sees the truncation.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the application failed while streaming the response")]
pub struct StreamAborted;

/// The response head and its body, as produced by the Python side.
pub struct Reply {
    pub status: StatusCode,
    pub reason: Option<ReasonPhrase>,
    pub headers: HeaderMap,
    pub body: ReplyBody,
}

pub enum ReplyBody {
    /// The whole body is known (a list response, an error page, or an empty body).
    Full(Bytes),
    /// Chunks arrive through the pipe until the producer closes it.
    Stream(Arc<Pipe>),
}
