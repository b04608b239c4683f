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

use super::listener::{Connection, Listener};
use super::service::{self, ConnState, Shared};
use crate::bridge::Peer;
use crate::observe::{Rejection, WorkerMetrics};

/// While draining, a keep-alive connection this quiet is closed. A client busy on it sends
/// its next request well within this and gets `Connection: close` with the answer instead,
/// so no request meets a connection closing under it.
const DRAIN_IDLE: Duration = Duration::from_millis(500);

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
    /// in-flight requests finish, idle connections close. Returns how the drain ended.
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
                    tokio::spawn(Arc::clone(&self).serve_connection(io, peer, drain.clone(), token));
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

    async fn serve_connection(
        self: Arc<Self>,
        io: Box<dyn Connection>,
        peer: Peer,
        mut drain: watch::Receiver<bool>,
        _token: ConnectionToken,
    ) {
        let state = Arc::new(ConnState::new(peer, Arc::clone(&self.shared)));
        let metrics = &self.shared.metrics;
        metrics.connection(true);
        let _closed = CountClose(Arc::clone(metrics));
        let svc = {
            let state = Arc::clone(&state);
            service_fn(move |req| service::handle(req, Arc::clone(&state)))
        };
        let io = TokioIo::new(Tracked { inner: io, state: Arc::clone(&state) });
        let conn = self.http.serve_connection(io, svc);
        tokio::pin!(conn);

        let t = &self.timeouts;
        let tick_for = |draining: bool| {
            let shortest = if draining { t.keep_alive.min(DRAIN_IDLE) } else { t.keep_alive.min(t.io).min(t.header) };
            (shortest / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
        };
        let mut draining = false;
        let mut seen = state.activity();
        let mut quiet_since = Instant::now();
        loop {
            tokio::select! {
                // The connection first: it is what wakes this task on nearly every poll.
                biased;
                result = conn.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(peer = ?state.peer.remote, "connection ended: {err}");
                        // Requests hyper refused itself never reached the service.
                        if err.is_parse_too_large() {
                            metrics.rejected(Rejection::HeadersTooLarge);
                        } else if err.is_parse() {
                            metrics.rejected(Rejection::BadRequest);
                        }
                    }
                    return;
                }
                _ = drain.wait_for(|d| *d), if !draining => {
                    // In-flight requests finish and answer with `Connection: close`; idle
                    // connections close once quiet for a moment (see DRAIN_IDLE).
                    draining = true;
                }
                _ = tokio::time::sleep(tick_for(draining)) => {
                    let now = state.activity();
                    let idle_limit = if draining { t.keep_alive.min(DRAIN_IDLE) } else { t.keep_alive };
                    if now != seen {
                        seen = now;
                        quiet_since = Instant::now();
                    } else if state.in_flight() == 0 && quiet_since.elapsed() >= idle_limit {
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
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.bump_read();
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

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Tracked {
    fn note_write(&self, polled: &Poll<io::Result<usize>>) {
        match polled {
            Poll::Ready(Ok(n)) if *n > 0 => self.state.bump(),
            Poll::Pending => self.state.write_blocked(),
            _ => {}
        }
    }
}
