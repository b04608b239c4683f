//! What the I/O side and the Python threads hand each other: a [`Job`] goes to a Python
//! thread, a [`Reply`] (status, headers and how the body will arrive) comes back.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use hyper::ext::ReasonPhrase;
use tokio::sync::oneshot;

use super::client::Client;
use super::pipe::{PipeReader, Resume};
use super::request_body::SharedBody;
use super::stamp::Stamp;

/// What a Python thread takes from the queue.
// A request travels by value as it did before resumptions existed: boxing it would cost an
// allocation per request for the sake of a rare variant.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Work {
    /// A request to serve.
    Request(Job),
    /// A streamed response that gave its thread back while its client was not reading, to
    /// go on now that the client has room (or is gone).
    Resume(Resume),
}

/// One request waiting for (or being served by) a Python thread.
pub(crate) struct Job {
    pub(crate) parts: http::request::Parts,
    /// `None` when the request cannot carry a body (no Content-Length, no Transfer-Encoding),
    /// so the app sees an empty `wsgi.input` without touching the connection.
    pub(crate) body: Option<Arc<SharedBody>>,
    /// Who sent it, as computed once on the I/O side.
    pub(crate) client: Client,
    pub(crate) reply: oneshot::Sender<Reply>,
    /// With `--timeout`: handed to the watchdog while the app runs; firing it answers 504.
    pub(crate) expire: Option<oneshot::Sender<()>>,
    pub(crate) enqueued: Instant,
    /// With tracing on: the request span as the app must see it.
    pub(crate) trace: Option<JobTrace>,
}

pub(crate) struct JobTrace {
    /// W3C traceparent of wharf's span for this request.
    pub(crate) traceparent: String,
    /// The traceparent header the client sent, if any.
    pub(crate) incoming: Option<String>,
    /// How long the job waited in the queue, set when a Python thread takes it.
    pub(crate) acquired: Arc<Stamp>,
}

/// The response cannot be completed (the app failed after the head was sent); hyper aborts
/// the connection so the client sees the truncation.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the application failed while streaming the response")]
pub(crate) struct StreamAborted;

/// The response head and its body, as produced by the Python side.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) reason: Option<ReasonPhrase>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: ReplyBody,
}

pub(crate) enum ReplyBody {
    /// The whole body is known (a list response, an error page, or an empty body).
    Full(Bytes),
    /// Chunks arrive through the pipe until the producer closes it.
    Stream(PipeReader),
}
