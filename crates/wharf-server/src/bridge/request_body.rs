//! A request body on its way to `wsgi.input`, with its first frame possibly read ahead.
//!
//! The body is read by a Python thread, but hyper only reads it from the socket once asked
//! to. Asked from a Python thread, that costs a round trip through the I/O thread (a
//! cross-thread wake-up each way) for every request with a body. Polling it once on the I/O
//! thread while the request is queued lets hyper read what the client already sent, so the
//! Python thread usually finds it waiting.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, Incoming};

type Polled = Option<Result<Frame<Bytes>, hyper::Error>>;

pub(crate) struct RequestBody {
    incoming: Incoming,
    /// What the read-ahead poll returned, if it returned.
    first: Option<Polled>,
}

impl RequestBody {
    pub(crate) fn new(incoming: Incoming) -> Self {
        RequestBody { incoming, first: None }
    }

    /// Polls once, on the I/O thread. Not for `Expect: 100-continue`: the client waits for
    /// the 100 until the app reads the body (and an app may answer without reading it).
    pub(crate) fn read_ahead(&mut self, headers: &HeaderMap, cx: &mut Context<'_>) {
        let expects_continue =
            headers.get(http::header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if expects_continue || self.first.is_some() {
            return;
        }
        if let Poll::Ready(polled) = Pin::new(&mut self.incoming).poll_frame(cx) {
            self.first = Some(polled);
        }
    }

    /// Reading ahead already failed (malformed chunked framing, or the client cut the body).
    fn failed_ahead(&self) -> bool {
        matches!(self.first, Some(Some(Err(_))))
    }

    /// Body bytes still to come, when the request declared its length.
    pub(crate) fn remaining(&self) -> Option<u64> {
        let first = match &self.first {
            Some(Some(Ok(frame))) => frame.data_ref().map_or(0, |d| d.len() as u64),
            _ => 0,
        };
        self.incoming.size_hint().exact().map(|rest| rest + first)
    }

    pub(crate) fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Polled> {
        match self.first.take() {
            Some(polled) => Poll::Ready(polled),
            None => Pin::new(&mut self.incoming).poll_frame(cx),
        }
    }
}

/// A body the app left unread is drained in the background, keeping the connection, when at
/// most this much of it is still to come; more, and the response closes the connection
/// instead. Reading 1 MiB costs the I/O thread well under a millisecond on loopback, far less
/// than a new connection; an upload an app refused (401, 413 by its own rule) is often larger,
/// and reading it whole would only spend the client's bandwidth.
const DRAIN_LIMIT: u64 = 1024 * 1024;

/// The request body as both sides hold it: `wsgi.input` reads it, and the connection takes
/// it back once the response is decided. An app (or a reference cycle in a framework, as in
/// Flask and Django) may keep `wsgi.input` alive long after its response: the connection must
/// not wait for the body to be read by Python, or the next request on it stalls.
pub(crate) struct SharedBody {
    slot: Mutex<Option<RequestBody>>,
    /// The client waits for `100 Continue` before sending: nothing to drain unless read.
    expects_continue: bool,
    /// The connection took the body back before it was read to its end.
    released: AtomicBool,
    /// How reading it failed (a `BodyFailure`), for the response to say so.
    failure: AtomicU8,
}

/// Why reading the body failed, so the response can say so (413, 408, 400) instead of a 500.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum BodyFailure {
    None = 0,
    TooLarge = 1,
    TimedOut = 2,
    /// Malformed framing (bad chunk) or a body cut short by the client.
    Broken = 3,
    /// Read after the response was decided: the connection had taken the body back.
    Released = 4,
}

impl BodyFailure {
    /// The response a failed body gets instead of the app's (whose own handling of the error,
    /// a framework's 500 page, would hide what went wrong from the client).
    pub(crate) fn response(self) -> Option<(http::StatusCode, &'static str)> {
        match self {
            BodyFailure::TooLarge => Some((http::StatusCode::PAYLOAD_TOO_LARGE, "Request body too large")),
            BodyFailure::TimedOut => Some((http::StatusCode::REQUEST_TIMEOUT, "Timed out reading the request body")),
            BodyFailure::Broken => Some((http::StatusCode::BAD_REQUEST, "Malformed or incomplete request body")),
            BodyFailure::None | BodyFailure::Released => None,
        }
    }
}

/// What became of the request body when the response was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Read to its end (or failed): the connection can take the next request.
    Done,
    /// Being read to its end in the background: the connection stays usable.
    Draining,
    /// Given up (too large, of unknown size, not sent yet, or still being read by the app):
    /// the response must close the connection.
    Close,
}

impl SharedBody {
    pub(crate) fn new(body: RequestBody, headers: &HeaderMap) -> Self {
        let expects_continue =
            headers.get(http::header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        // A body that is broken before the app runs gets its 400 whether or not the app reads it.
        let failure = if body.failed_ahead() { BodyFailure::Broken } else { BodyFailure::None };
        SharedBody {
            slot: Mutex::new(Some(body)),
            expects_continue,
            released: AtomicBool::new(false),
            failure: AtomicU8::new(failure as u8),
        }
    }

    pub(crate) fn failure(&self) -> BodyFailure {
        match self.failure.load(Ordering::Relaxed) {
            1 => BodyFailure::TooLarge,
            2 => BodyFailure::TimedOut,
            3 => BodyFailure::Broken,
            4 => BodyFailure::Released,
            _ => BodyFailure::None,
        }
    }

    pub(crate) fn set_failure(&self, failure: BodyFailure) {
        self.failure.store(failure as u8, Ordering::Relaxed);
    }

    pub(crate) fn released(&self) -> bool {
        self.released.load(Ordering::Relaxed)
    }

    /// The body, while `wsgi.input` reads it; `None` once it is read to its end or the
    /// connection has taken it back.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Option<RequestBody>> {
        // A panic while reading leaves at worst a body that fails to read further.
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the body back from `wsgi.input` and settles it: unread bytes of a known, small
    /// enough length are drained by a task on this (the I/O) thread within `timeout`.
    pub(crate) fn settle(&self, timeout: Duration) -> Settled {
        let Ok(mut slot) = self.slot.try_lock() else {
            // A Python thread is blocked reading it right now.
            return Settled::Close;
        };
        let Some(body) = slot.take() else { return Settled::Done };
        self.released.store(true, Ordering::Relaxed);
        drop(slot);
        match body.remaining() {
            Some(remaining) if remaining <= DRAIN_LIMIT && !self.expects_continue => {
                tokio::spawn(drain(body, timeout));
                Settled::Draining
            }
            _ => Settled::Close,
        }
    }
}

/// Reads a body to its end so hyper can parse the connection's next request; a client that
/// stops sending meanwhile has the body dropped, which makes hyper close the connection.
async fn drain(mut body: RequestBody, timeout: Duration) {
    let read_all = async { while let Some(Ok(_)) = std::future::poll_fn(|cx| body.poll_frame(cx)).await {} };
    if tokio::time::timeout(timeout, read_all).await.is_err() {
        tracing::debug!("client stopped sending an unread request body; closing the connection");
    }
}
