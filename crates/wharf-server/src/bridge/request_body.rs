//! A request body on its way to `wsgi.input`, with its first frame possibly read ahead.
//!
//! The body is read by a Python thread, but hyper only reads it from the socket once asked
//! to. Asked from a Python thread, that costs a round trip through the I/O thread (a
//! cross-thread wake-up each way) for every request with a body. Polling it once on the I/O
//! thread while the request is queued lets hyper read what the client already sent, so the
//! Python thread usually finds it waiting.

use std::pin::Pin;
use std::task::{Context, Poll};

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
