//! The hyper response body: a full buffer or a stream fed by a Python thread through a pipe.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::bridge::{End, PipeReader, Taken};
use crate::bridge::{ReplyBody, StreamAborted};

/// Runs when the response body is finished or dropped (client gone), whichever comes first.
pub(crate) trait OnFinish: Send + 'static {
    fn finish(self: Box<Self>, bytes_sent: u64, completed: bool);
}

enum Source {
    Full(Bytes),
    Stream(PipeReader),
    /// The stream ended without completing; the error is reported on the next poll.
    Aborting,
    Done,
}

pub(crate) struct ResponseBody {
    source: Source,
    sent: u64,
    completed: bool,
    on_finish: Option<Box<dyn OnFinish>>,
}

impl ResponseBody {
    pub(crate) fn new(body: ReplyBody) -> Self {
        let source = match body {
            ReplyBody::Full(bytes) if bytes.is_empty() => Source::Done,
            ReplyBody::Full(bytes) => Source::Full(bytes),
            ReplyBody::Stream(pipe) => Source::Stream(pipe),
        };
        let completed = matches!(source, Source::Done);
        ResponseBody { source, sent: 0, completed, on_finish: None }
    }

    pub(crate) fn full(bytes: Bytes) -> Self {
        Self::new(ReplyBody::Full(bytes))
    }

    pub(crate) fn with_finish(mut self, on_finish: Box<dyn OnFinish>) -> Self {
        self.on_finish = Some(on_finish);
        self
    }

    fn data(&mut self, bytes: Bytes) -> Poll<Option<Result<Frame<Bytes>, StreamAborted>>> {
        self.sent += bytes.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = StreamAborted;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, StreamAborted>>> {
        let taken = match &mut self.source {
            Source::Done => return Poll::Ready(None),
            Source::Full(_) => {
                // Nothing follows a full body; hyper may not poll again once it has it.
                let Source::Full(bytes) = std::mem::replace(&mut self.source, Source::Done) else {
                    return Poll::Ready(None);
                };
                self.completed = true;
                return self.data(bytes);
            }
            Source::Stream(pipe) => match pipe.poll_take(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(taken) => taken,
            },
            Source::Aborting => {
                self.source = Source::Done;
                return Poll::Ready(Some(Err(StreamAborted)));
            }
        };
        match taken {
            Taken::Data(bytes) => self.data(bytes),
            Taken::End(end) => {
                self.source = Source::Done;
                if end == End::Complete {
                    self.completed = true;
                    Poll::Ready(None)
                } else {
                    // hyper drops what it has buffered when a body fails: give it one turn
                    // to flush first (it flushes when the body is pending), so the client
                    // gets the bytes produced before the connection is cut.
                    self.source = Source::Aborting;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.source, Source::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Full(bytes) => SizeHint::with_exact(bytes.len() as u64),
            Source::Done => SizeHint::with_exact(0),
            Source::Stream(_) | Source::Aborting => SizeHint::default(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(on_finish) = self.on_finish.take() {
            on_finish.finish(self.sent, self.completed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::Pipe;
    use http_body_util::BodyExt;
    use std::sync::Arc;

    #[tokio::test]
    async fn full_body_has_exact_size() {
        let body = ResponseBody::full(Bytes::from_static(b"hello"));
        assert_eq!(body.size_hint().exact(), Some(5));
        let collected = body.collect().await.expect("no error").to_bytes();
        assert_eq!(&collected[..], b"hello");
    }

    #[tokio::test]
    async fn produced_chunks_arrive_coalesced_in_order() {
        let pipe = Arc::new(Pipe::default());
        for part in [&b"a"[..], b"b", b"c"] {
            pipe.push(part).expect("open");
        }
        pipe.close(End::Complete);
        let mut body = ResponseBody::new(ReplyBody::Stream(PipeReader::new(Arc::clone(&pipe))));
        let merged = body.frame().await.expect("frame").expect("ok").into_data().expect("data");
        assert_eq!(&merged[..], b"abc");
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn abort_after_data_surfaces_as_error() {
        let pipe = Arc::new(Pipe::default());
        pipe.push(b"x").expect("open");
        pipe.close(End::Aborted);
        let mut body = ResponseBody::new(ReplyBody::Stream(PipeReader::new(Arc::clone(&pipe))));
        let data = body.frame().await.expect("frame").expect("ok").into_data().expect("data");
        assert_eq!(&data[..], b"x");
        assert!(body.frame().await.expect("frame").is_err());
    }

    #[tokio::test]
    async fn dropping_an_unfinished_body_releases_the_producer() {
        let pipe = Arc::new(Pipe::default());
        pipe.push(b"x").expect("open");
        let mut body = ResponseBody::new(ReplyBody::Stream(PipeReader::new(Arc::clone(&pipe))));
        body.frame().await.expect("frame").expect("ok");
        drop(body);
        assert!(pipe.push(b"y").is_err());
    }
}
