//! The hyper response body: a full buffer or a stream fed by a Python thread.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

use crate::exchange::{Chunk, ReplyBody, StreamAborted};

/// Chunks already produced by the app are merged into one write up to this size: per-chunk
/// writes and wake-ups dominate the cost of streamed responses.
const COALESCE_LIMIT: usize = 256 * 1024;

/// Runs when the response body is finished or dropped (client gone), whichever comes first.
pub trait OnFinish: Send + 'static {
    fn finish(self: Box<Self>, bytes_sent: u64, completed: bool);
}

pub struct ResponseBody {
    first: Option<Bytes>,
    rest: Option<mpsc::Receiver<Chunk>>,
    sent: u64,
    completed: bool,
    on_finish: Option<Box<dyn OnFinish>>,
}

impl ResponseBody {
    pub fn new(body: ReplyBody) -> Self {
        let (first, rest) = match body {
            ReplyBody::Full(bytes) => (Some(bytes), None),
            ReplyBody::Stream { first, rest } => (Some(first), Some(rest)),
        };
        let first = first.filter(|b| !b.is_empty());
        let completed = first.is_none() && rest.is_none();
        ResponseBody { first, rest, sent: 0, completed, on_finish: None }
    }

    pub fn full(bytes: Bytes) -> Self {
        Self::new(ReplyBody::Full(bytes))
    }

    pub fn with_finish(mut self, on_finish: Box<dyn OnFinish>) -> Self {
        self.on_finish = Some(on_finish);
        self
    }

    fn emit(&mut self, bytes: Bytes) -> Poll<Option<Result<Frame<Bytes>, StreamAborted>>> {
        self.sent += bytes.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = StreamAborted;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamAborted>>> {
        if let Some(first) = self.first.take() {
            return self.emit(first);
        }
        let Some(rest) = self.rest.as_mut() else {
            self.completed = true;
            return Poll::Ready(None);
        };
        match rest.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                self.rest = None;
                self.completed = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(aborted))) => {
                self.rest = None;
                Poll::Ready(Some(Err(aborted)))
            }
            Poll::Ready(Some(Ok(chunk))) => {
                let mut merged: Option<BytesMut> = None;
                let mut ended = false;
                let mut aborted = false;
                let mut size = chunk.len();
                while size < COALESCE_LIMIT {
                    match rest.try_recv() {
                        Ok(Ok(next)) => {
                            size += next.len();
                            merged
                                .get_or_insert_with(|| {
                                    let mut buf = BytesMut::with_capacity(size.max(8192));
                                    buf.extend_from_slice(&chunk);
                                    buf
                                })
                                .extend_from_slice(&next);
                        }
                        Ok(Err(_)) => {
                            aborted = true;
                            break;
                        }
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            ended = true;
                            break;
                        }
                    }
                }
                if aborted {
                    // What was produced before the failure still goes out; the abort follows
                    // on the next poll through a channel that yields only the error.
                    let (tx, rx) = mpsc::channel(1);
                    tx.try_send(Err(StreamAborted)).ok();
                    self.rest = Some(rx);
                } else if ended {
                    self.rest = None;
                }
                let out = merged.map(BytesMut::freeze).unwrap_or(chunk);
                self.emit(out)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.first, &self.rest) {
            (Some(first), None) => SizeHint::with_exact(first.len() as u64),
            (None, None) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(on_finish) = self.on_finish.take() {
            let completed = self.completed || (self.first.is_none() && self.rest.is_none());
            on_finish.finish(self.sent, completed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn full_body_has_exact_size() {
        let body = ResponseBody::full(Bytes::from_static(b"hello"));
        assert_eq!(body.size_hint().exact(), Some(5));
        let collected = body.collect().await.expect("no error").to_bytes();
        assert_eq!(&collected[..], b"hello");
    }

    #[tokio::test]
    async fn ready_chunks_are_coalesced_in_order() {
        let (tx, rx) = mpsc::channel(16);
        for part in [&b"b"[..], b"c", b"d"] {
            tx.try_send(Ok(Bytes::copy_from_slice(part))).expect("room");
        }
        drop(tx);
        let mut body = ResponseBody::new(ReplyBody::Stream { first: Bytes::from_static(b"a"), rest: rx });
        let first = body.frame().await.expect("frame").expect("ok").into_data().expect("data");
        assert_eq!(&first[..], b"a");
        let merged = body.frame().await.expect("frame").expect("ok").into_data().expect("data");
        assert_eq!(&merged[..], b"bcd");
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn abort_after_data_surfaces_as_error() {
        let (tx, rx) = mpsc::channel(16);
        tx.try_send(Ok(Bytes::from_static(b"x"))).expect("room");
        tx.try_send(Err(StreamAborted)).expect("room");
        let mut body = ResponseBody::new(ReplyBody::Stream { first: Bytes::new(), rest: rx });
        let data = body.frame().await.expect("frame").expect("ok").into_data().expect("data");
        assert_eq!(&data[..], b"x");
        assert!(body.frame().await.expect("frame").is_err());
    }
}
