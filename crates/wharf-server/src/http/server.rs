//! Accepting connections and serving HTTP/1 on them until told to drain.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, mpsc, watch};

use super::inbound::{Broken, Inbound};
use super::listener::{Connection, Listener};
use super::service::{self, ConnState, Shared};
use crate::bridge::Peer;
use crate::observe::{Rejection, WorkerMetrics};

/// After a response that closed its connection while the client was still sending a request
/// body, what it sends is read and discarded for up to this long before the socket closes.
/// Closing with unread bytes makes the kernel send a reset, and a client still writing its
/// upload (urllib3 writes all of it before reading) then loses the response it was sent.
/// nginx's `lingering_close` does the same, for up to 30 s.
const LINGER: Duration = Duration::from_secs(5);

/// What an HTTP/2 client with prior knowledge sends first. hyper's HTTP/1 parser drops such a
/// connection without a word; it gets an HTTP/1.1 answer instead (RFC 9110 §15.6.6).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";
const H2_REFUSED: &[u8] = b"HTTP/1.1 505 HTTP Version Not Supported\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Length: 59\r\nConnection: close\r\n\r\nwharf speaks HTTP/1.1; put an HTTP/2 proxy in front of it.\n";

/// A stop signal this soon after the first is the same stop delivered twice: `kill` to the
/// process group (systemd's default `KillMode=control-group`, init wrappers) reaches a worker
/// directly and again through its supervisor. Taken as a second stop, it dropped the requests
/// in flight; a person asking twice takes longer than this.
const SAME_STOP: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub(crate) struct Timeouts {
    pub(crate) header: Duration,
    pub(crate) keep_alive: Duration,
    pub(crate) io: Duration,
}

/// How the drain after a stop signal ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drained {
    /// Every connection finished its work and closed.
    Clean,
    /// The graceful timeout passed with connections still open.
    TimedOut { open: usize },
    /// A second stop signal cut the drain short.
    Interrupted { open: usize },
}

/// Open connections, so the drain knows when it is done.
#[derive(Default)]
struct OpenConnections {
    count: AtomicUsize,
    closed: Notify,
}

struct ConnectionToken(Arc<OpenConnections>);

impl ConnectionToken {
    fn new(open: &Arc<OpenConnections>) -> Self {
        open.count.fetch_add(1, Ordering::SeqCst);
        ConnectionToken(Arc::clone(open))
    }
}

impl Drop for ConnectionToken {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.closed.notify_waiters();
        }
    }
}

pub(crate) struct Server {
    pub(crate) shared: Arc<Shared>,
    pub(crate) http: http1::Builder,
    pub(crate) timeouts: Timeouts,
}

impl Server {
    pub(crate) fn new(shared: Arc<Shared>, timeouts: Timeouts, max_headers: usize, max_head_size: usize) -> Self {
        let mut http = http1::Builder::new();
        // The header timeout is enforced by the connection's watcher (`serve_connection`):
        // hyper's own arms and disarms a timer for every request.
        http.timer(TokioTimer::new())
            .header_read_timeout(None)
            .max_header_size(max_head_size)
            .keep_alive(true)
            // A client may shut down its sending side once the request is out (RFC 9112
            // §9.6); it still gets the response. This also stops hyper from polling the socket
            // for EOF while the app works, which made it allocate a new read buffer for every
            // request, as the request head in the old one was still in use.
            .half_close(true);
        // hyper parses up to 100 headers on the stack; asking for another limit moves that
        // array to the heap for every request, so only do it when the limit differs.
        if max_headers != 100 {
            http.max_headers(max_headers);
        }
        Server { shared, http, timeouts }
    }

    /// Serves until a stop signal arrives on `signals`, then drains: no new connections,
    /// in-flight requests finish, and every connection closes after its next response (which
    /// says `Connection: close`) or once idle for the keep-alive timeout. Closing idle
    /// connections any sooner races clients that send on them meanwhile: with a 500 ms limit,
    /// clients pausing 0-1 s between requests lost 5.5 % of them across `--max-requests`
    /// recycles. Returns how the drain ended.
    pub(crate) async fn run(
        self: Arc<Self>,
        listeners: Vec<Listener>,
        mut signals: mpsc::Receiver<&'static str>,
        graceful_timeout: Duration,
    ) -> Drained {
        let (drain_tx, drain_rx) = watch::channel(false);
        let open = Arc::new(OpenConnections::default());
        for listener in listeners {
            tracing::info!("listening on {}", listener.describe());
            tokio::spawn(Arc::clone(&self).accept_loop(listener, drain_rx.clone(), Arc::clone(&open)));
        }
        let Some(signal) = signals.recv().await else { return Drained::Clean };
        let first = tokio::time::Instant::now();
        tracing::info!(signal, "draining: no new connections, finishing in-flight requests");
        self.shared.draining.store(true, Ordering::Relaxed);
        drain_tx.send_replace(true);
        let deadline = tokio::time::Instant::now() + graceful_timeout;
        loop {
            let notified = open.closed.notified();
            let remaining = open.count.load(Ordering::SeqCst);
            if remaining == 0 {
                return Drained::Clean;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => return Drained::TimedOut { open: remaining },
                Some(signal) = signals.recv() => {
                    if first.elapsed() < SAME_STOP {
                        tracing::debug!(signal, "the stop signal again (to the process group and from the supervisor): still draining");
                        continue;
                    }
                    tracing::warn!(signal, "second stop signal: stopping now");
                    return Drained::Interrupted { open: remaining };
                }
            }
        }
    }

    async fn accept_loop(
        self: Arc<Self>,
        listener: Listener,
        mut drain: watch::Receiver<bool>,
        open: Arc<OpenConnections>,
    ) {
        let mut backoff = Duration::from_millis(5);
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = drain.wait_for(|draining| *draining) => return,
            };
            match accepted {
                Ok((io, peer)) => {
                    backoff = Duration::from_millis(5);
                    let token = ConnectionToken::new(&open);
                    tokio::spawn(Arc::clone(&self).serve_connection(io, peer, token));
                }
                Err(err) => {
                    // Typically EMFILE: keep serving existing connections and retry later
                    // rather than spinning on a listener that cannot accept.
                    tracing::error!("accept failed on {}: {err}", listener.describe());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    async fn serve_connection(self: Arc<Self>, io: Box<dyn Connection>, peer: Peer, _token: ConnectionToken) {
        let state = Arc::new(ConnState::new(peer, Arc::clone(&self.shared)));
        let metrics = &self.shared.metrics;
        metrics.connection(true);
        let _closed = CountClose(Arc::clone(metrics));
        let svc = {
            let state = Arc::clone(&state);
            service_fn(move |req| service::handle(req, Arc::clone(&state)))
        };
        let io = TokioIo::new(Tracked {
            inner: io,
            state: Arc::clone(&state),
            linger: None,
            inbound: Inbound::default(),
            pending: Vec::new(),
            pending_at: 0,
            broken: None,
        });
        let conn = self.http.serve_connection(io, svc);
        tokio::pin!(conn);

        let t = &self.timeouts;
        let tick = (t.keep_alive.min(t.io).min(t.header) / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut seen = state.activity();
        let mut quiet_since = Instant::now();
        loop {
            tokio::select! {
                // The connection first: it is what wakes this task on nearly every poll.
                biased;
                result = conn.as_mut() => {
                    if let Err(err) = result {
                        self.refused_by_parser(&state, &err);
                    }
                    if state.refused_h2_preface() {
                        tracing::info!(peer = ?state.peer.remote, status = 505, "refused an HTTP/2 connection preface");
                        metrics.rejected(Rejection::BadRequest);
                        if let Some(log) = &self.shared.access_log {
                            log.unparsed(&state.peer, 505);
                        }
                    }
                    return;
                }
                _ = tokio::time::sleep(tick) => {
                    let now = state.activity();
                    if now != seen {
                        seen = now;
                        quiet_since = Instant::now();
                    } else if state.in_flight() == 0 && quiet_since.elapsed() >= t.keep_alive {
                        tracing::trace!(peer = ?state.peer.remote, "closing idle keep-alive connection");
                        return;
                    }
                    if state.partial_head_for().is_some_and(|d| d >= t.header) {
                        tracing::debug!(peer = ?state.peer.remote, "closing connection: request head incomplete after --header-timeout");
                        metrics.rejected(Rejection::HeaderTimeout);
                        return;
                    }
                    if state.write_blocked_for().is_some_and(|d| d >= t.io) {
                        tracing::info!(peer = ?state.peer.remote, "dropping connection: client stopped reading the response");
                        return;
                    }
                }
            }
        }
    }
}

impl Server {
    /// Requests hyper refused itself never reached the service: hyper answered 400, 414 or
    /// 431 on its own; they are counted, logged and written to the access log here.
    fn refused_by_parser(&self, state: &ConnState, err: &hyper::Error) {
        tracing::debug!(peer = ?state.peer.remote, "connection ended: {err}");
        let (status, rejection) = if err.is_parse_too_large() {
            // hyper's own limit on the target (64 KiB) is reported as too large, too.
            if err.to_string().contains("URI too long") {
                (414, Rejection::RequestLineTooLong)
            } else {
                (431, Rejection::HeadersTooLarge)
            }
        } else if err.is_parse() {
            (400, Rejection::BadRequest)
        } else {
            return;
        };
        self.shared.metrics.rejected(rejection);
        tracing::info!(peer = ?state.peer.remote, status, "rejected request: {err}");
        if let Some(log) = &self.shared.access_log {
            log.unparsed(&state.peer, status);
        }
    }
}

/// Counts the connection as closed however its task ends.
struct CountClose(Arc<WorkerMetrics>);

impl Drop for CountClose {
    fn drop(&mut self) {
        self.0.connection(false);
    }
}

/// The connection's socket, noting progress for the idle and stall checks.
struct Tracked {
    inner: Box<dyn Connection>,
    state: Arc<ConnState>,
    /// While lingering (see [`LINGER`]): when to stop.
    linger: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Follows the requests' framing, escaping request lines and checking chunked bodies.
    inbound: Inbound,
    /// Escaped bytes that did not fit hyper's read buffer yet, from `pending_at` on.
    pending: Vec<u8>,
    pending_at: usize,
    /// Broken chunked framing, reported once hyper has read what came before it.
    broken: Option<io::Error>,
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.pending_at < self.pending.len() {
            self.hand_on_pending(buf);
            return Poll::Ready(Ok(()));
        }
        if let Some(err) = self.broken.take() {
            return Poll::Ready(Err(err));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            if self.state.first_read() && buf.filled()[before..].starts_with(H2_PREFACE) {
                // Best effort (an empty socket buffer takes it whole); hyper then sees a
                // connection that closed before sending anything.
                let _ = Pin::new(&mut self.inner).poll_write(cx, H2_REFUSED);
                self.state.refuse_h2_preface();
                buf.set_filled(before);
                return Poll::Ready(Ok(()));
            }
            self.state.bump_read();
            match self.inbound.feed(&buf.filled()[before..]) {
                Ok(None) => {}
                Ok(Some(escaped)) => {
                    buf.set_filled(before);
                    self.pending = escaped;
                    self.pending_at = 0;
                    self.hand_on_pending(buf);
                }
                Err(Broken { valid, error }) => {
                    buf.set_filled(before);
                    if valid.is_empty() {
                        return Poll::Ready(Err(error));
                    }
                    self.pending = valid;
                    self.pending_at = 0;
                    self.hand_on_pending(buf);
                    self.broken = Some(error);
                }
            }
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        self.note_write(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note_write(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// hyper's last act on a connection. When the service closed it with a request body
    /// still arriving, the sending side is shut down and the rest discarded (see [`LINGER`]).
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.state.wants_linger() {
            return Pin::new(&mut self.inner).poll_shutdown(cx);
        }
        if self.linger.is_none() {
            std::task::ready!(Pin::new(&mut self.inner).poll_shutdown(cx))?;
            self.linger = Some(Box::pin(tokio::time::sleep(LINGER)));
        }
        let mut discard = [0u8; 16 * 1024];
        loop {
            if self.linger.as_mut().is_some_and(|until| until.as_mut().poll(cx).is_ready()) {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut discard);
            match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => self.state.bump_read(),
                // End of the client's data, or an error: either way the socket can close.
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Tracked {
    fn hand_on_pending(&mut self, buf: &mut ReadBuf<'_>) {
        let n = buf.remaining().min(self.pending.len() - self.pending_at);
        buf.put_slice(&self.pending[self.pending_at..self.pending_at + n]);
        self.pending_at += n;
        if self.pending_at == self.pending.len() {
            self.pending.clear();
            self.pending_at = 0;
        }
    }

    fn note_write(&self, polled: &Poll<io::Result<usize>>) {
        match polled {
            Poll::Ready(Ok(n)) if *n > 0 => self.state.bump(),
            Poll::Pending => self.state.write_blocked(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_h2_refusal_is_a_well_framed_response() {
        let text = std::str::from_utf8(H2_REFUSED).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
        let declared: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("Content-Length: "))
            .and_then(|len| len.parse().ok())
            .expect("a Content-Length");
        assert_eq!(declared, body.len());
    }
}
