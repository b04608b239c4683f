//! The hyper service: checks a request, queues it for a Python thread, and turns the reply
//! into a response. Runs on the I/O thread and never touches Python.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tokio::sync::oneshot;

use super::access_log::{AccessLog, AccessRecord, RequestLine};
use super::forwarded::{self, TrustedProxies};
use super::limits::{self, Limits};
use super::response_body::{OnFinish, ResponseBody};
use crate::bridge::{
    Client, Job, JobQueue, JobTrace, LoggedRequest, Peer, PushError, Reply, ReplyBody, RequestBody, Settled,
    SharedBody, Stamp, Work, target,
};
use crate::observe::{self, Rejection, RequestSpan, Tracing, WorkerMetrics};
use crate::process::{ControlClient, RecycleReason, WorkerMessage};

/// What every connection of this process shares.
pub(crate) struct Shared {
    pub(crate) queue: Arc<JobQueue<Work>>,
    pub(crate) limits: Limits,
    pub(crate) access_log: Option<AccessLog>,
    /// Requests answer 504 when the app has not started the response within `--timeout`.
    pub(crate) timeout: bool,
    /// Set when the worker drains: every response then closes its connection.
    pub(crate) draining: AtomicBool,
    pub(crate) served: Arc<AtomicU64>,
    /// Ask to be replaced after this many requests (`--max-requests` plus jitter).
    pub(crate) recycle_after: Option<u64>,
    pub(crate) control: Option<ControlClient>,
    pub(crate) metrics: Arc<WorkerMetrics>,
    pub(crate) tracing: Option<Arc<Tracing>>,
    /// `--trace-query`: record `url.query` on spans.
    pub(crate) trace_query: bool,
    /// `--forwarded-allow-ips`: peers whose proxy headers set the client view.
    pub(crate) trusted_proxies: TrustedProxies,
    /// `--io-timeout`: how long draining a request body the app left unread may take.
    pub(crate) io_timeout: Duration,
    /// `--log-query`: log lines about a request quote its query.
    pub(crate) log_query: bool,
}

impl Shared {
    fn count_request(&self) {
        let served = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        if self.recycle_after == Some(served)
            && let Some(control) = &self.control
        {
            control.send(WorkerMessage::Recycle { reason: RecycleReason::MaxRequests });
        }
    }
}

/// Per-connection bookkeeping read by the connection's idle/stall watcher.
pub(crate) struct ConnState {
    pub(crate) peer: Arc<Peer>,
    shared: Arc<Shared>,
    in_flight: AtomicU32,
    /// Bumped on every read or write that moved bytes.
    activity: AtomicU64,
    /// Bumped on every read that moved bytes.
    reads: AtomicU64,
    /// Since when (after `epoch`) the connection waits for a request head; none while a
    /// request is being served.
    head_wait_since: Stamp,
    /// `reads` when that wait began: more reads since mean a head has started to arrive.
    reads_at_head_wait: AtomicU64,
    /// When (after `epoch`) a write started waiting for the client to read, if one is.
    write_blocked_since: Stamp,
    /// A response closed the connection with a request body still arriving: discard the rest
    /// before closing the socket (see `server::LINGER`).
    linger: AtomicBool,
    /// The connection opened with an HTTP/2 preface, answered with 505.
    h2_preface: AtomicBool,
    epoch: Instant,
}

impl ConnState {
    pub(crate) fn new(peer: Peer, shared: Arc<Shared>) -> Self {
        ConnState {
            peer: Arc::new(peer),
            shared,
            in_flight: AtomicU32::new(0),
            activity: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            head_wait_since: Stamp::new(Some(Duration::ZERO)),
            reads_at_head_wait: AtomicU64::new(0),
            write_blocked_since: Stamp::default(),
            linger: AtomicBool::new(false),
            h2_preface: AtomicBool::new(false),
            epoch: Instant::now(),
        }
    }

    fn shared_draining(&self) -> bool {
        self.shared.draining.load(Ordering::Relaxed)
    }

    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn activity(&self) -> u64 {
        self.activity.load(Ordering::Relaxed)
    }

    pub(crate) fn bump(&self) {
        self.activity.fetch_add(1, Ordering::Relaxed);
        self.write_blocked_since.clear();
    }

    pub(crate) fn bump_read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.bump();
    }

    /// How long a head that has started to arrive has been awaited: `None` while a request is
    /// served or while the client sent nothing since the last response (the keep-alive timeout
    /// covers that).
    pub(crate) fn partial_head_for(&self) -> Option<Duration> {
        let since = self.head_wait_since.get()?;
        if self.reads.load(Ordering::Relaxed) == self.reads_at_head_wait.load(Ordering::Relaxed) {
            return None;
        }
        Some(self.epoch.elapsed().saturating_sub(since))
    }

    fn start_head_wait(&self) {
        self.reads_at_head_wait.store(self.reads.load(Ordering::Relaxed), Ordering::Relaxed);
        self.head_wait_since.set(self.epoch.elapsed());
    }

    /// No byte was read on this connection yet.
    pub(crate) fn first_read(&self) -> bool {
        self.reads.load(Ordering::Relaxed) == 0
    }

    pub(crate) fn refuse_h2_preface(&self) {
        self.h2_preface.store(true, Ordering::Relaxed);
    }

    pub(crate) fn refused_h2_preface(&self) -> bool {
        self.h2_preface.load(Ordering::Relaxed)
    }

    pub(crate) fn wants_linger(&self) -> bool {
        self.linger.load(Ordering::Relaxed)
    }

    pub(crate) fn write_blocked(&self) {
        self.write_blocked_since.set_if_none(self.epoch.elapsed());
    }

    /// How long writes have been waiting for the client, if they are.
    pub(crate) fn write_blocked_for(&self) -> Option<Duration> {
        Some(self.epoch.elapsed().saturating_sub(self.write_blocked_since.get()?))
    }

    /// The client of a request on this connection: the socket peer, or what a trusted proxy
    /// in front of it says.
    fn client(&self, parts: &http::request::Parts) -> Client {
        let forwarded =
            forwarded::client_view(&parts.headers, self.peer.remote.map(|a| a.ip()), &self.shared.trusted_proxies);
        Client { peer: Arc::clone(&self.peer), forwarded }
    }
}

/// Counts a request as in flight on its connection until its response body is done.
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn enter(conn: &Arc<ConnState>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::Relaxed);
        conn.head_wait_since.clear();
        conn.shared.metrics.request_started();
        InFlight(Arc::clone(conn))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.start_head_wait();
        }
    }
}

/// What happens when a response body is done: the request stops counting as in flight, is
/// counted in the metrics, and the access-log line is written.
struct Finish {
    in_flight: InFlight,
    method: usize,
    status: u16,
    started: Instant,
    record: Option<AccessRecord>,
    /// The request's trace span and the queue wait the Python thread reports for it.
    span: Option<(RequestSpan, Arc<Stamp>)>,
    /// A streamed response's request body, settled once the app is done with both.
    body: Option<Arc<SharedBody>>,
    version: http::Version,
    /// With `--log-level debug`: method and path for the line logged per request.
    debug: Option<LoggedRequest>,
}

impl Finish {
    /// Starts what a request's end completes: its trace span (with what the Python thread
    /// must know of it) and its access-log record, both from the request's client view.
    fn start(
        conn: &Arc<ConnState>,
        parts: &http::request::Parts,
        client: &Client,
        arrived: Instant,
    ) -> (Finish, Option<JobTrace>) {
        let shared = &conn.shared;
        let span = shared.tracing.as_ref().map(|t| t.start(parts, client, shared.trace_query));
        let trace = span.as_ref().map(|span| JobTrace {
            traceparent: span.traceparent(),
            incoming: parts.headers.get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_owned),
            acquired: Arc::new(Stamp::default()),
        });
        let record = shared.access_log.as_ref().map(|log| AccessRecord {
            log: log.clone(),
            client: client.clone(),
            request: Some(RequestLine {
                method: parts.method.clone(),
                target: target::display(&parts.uri.to_string()).into_owned(),
                version: parts.version,
            }),
            status: 0,
            referer: header_string(parts, header::REFERER),
            user_agent: header_string(parts, header::USER_AGENT),
            started: arrived,
            started_wall: SystemTime::now(),
            trace_id: trace.as_ref().and_then(|t| t.traceparent.split('-').nth(1)).map(str::to_owned),
        });
        let finish = Finish {
            in_flight: InFlight::enter(conn),
            method: observe::method_index(&parts.method),
            status: 0,
            started: arrived,
            record,
            span: span.zip(trace.as_ref().map(|t| Arc::clone(&t.acquired))),
            body: None,
            version: parts.version,
            debug: tracing::enabled!(tracing::Level::DEBUG).then(|| LoggedRequest::of(parts, shared.log_query)),
        };
        (finish, trace)
    }
}

impl OnFinish for Finish {
    fn finish(self: Box<Self>, bytes_sent: u64, completed: bool) {
        if let Some(body) = &self.body {
            // The head is out: an unread body that cannot be drained makes hyper close the
            // connection after this response.
            let conn = &self.in_flight.0;
            if body.settle(conn.shared.io_timeout) == Settled::Close {
                conn.linger.store(true, Ordering::Relaxed);
            }
        }
        if let Some((mut span, acquired)) = self.span {
            if let Some(waited) = acquired.get() {
                span.queued(waited);
            }
            span.finish(self.status, bytes_sent, completed);
        }
        let metrics = &self.in_flight.0.shared.metrics;
        let took = self.started.elapsed();
        metrics.request_finished(self.method, self.status, took, bytes_sent);
        if let Some(LoggedRequest { method, path }) = &self.debug {
            tracing::debug!(
                %method, %path, status = self.status, bytes_sent, completed,
                "request done in {:.3} ms", took.as_secs_f64() * 1e3,
            );
        }
        if let Some(record) = self.record {
            Box::new(record).finish(bytes_sent, completed);
        }
    }
}

fn header_string(parts: &http::request::Parts, name: header::HeaderName) -> Option<String> {
    parts.headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

fn respond(status: StatusCode, reason: &str, close: bool, finish: Finish) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(Bytes::from(format!("{reason}\n"))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    if close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    with_finish(response, status, finish)
}

fn with_finish(mut response: Response<ResponseBody>, status: StatusCode, mut finish: Finish) -> Response<ResponseBody> {
    finish.status = status.as_u16();
    if let Some(record) = finish.record.as_mut() {
        record.status = status.as_u16();
    }
    if finish.in_flight.0.shared_draining() {
        // Telling the client to reconnect (to another worker) on this response, rather than
        // closing idle connections under its feet, is what makes draining lose nothing.
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let closes =
        response.headers().get(header::CONNECTION).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    if closes && finish.version == http::Version::HTTP_10 {
        // hyper answers an HTTP/1.0 keep-alive request with `keep-alive` appended to the
        // Connection header of a 1.1-versioned response, even after `close`; a 1.0 response
        // is how it learns that this connection ends.
        *response.version_mut() = http::Version::HTTP_10;
    }
    let (parts, body) = response.into_parts();
    let body = body.with_finish(Box::new(finish));
    Response::from_parts(parts, body)
}

/// One request, from hyper's parsed head to the response hyper writes.
pub(crate) async fn handle(req: Request<Incoming>, conn: Arc<ConnState>) -> Result<Response<ResponseBody>, Infallible> {
    let shared = &conn.shared;
    shared.count_request();
    let (parts, body) = req.into_parts();
    let client = conn.client(&parts);
    let arrived = Instant::now();
    let (mut finish, trace) = Finish::start(&conn, &parts, &client, arrived);

    if let Err(rejection) = limits::check(&parts, &shared.limits) {
        shared.metrics.rejected(match rejection.status {
            StatusCode::URI_TOO_LONG => Rejection::RequestLineTooLong,
            StatusCode::PAYLOAD_TOO_LARGE => Rejection::BodyTooLarge,
            _ => Rejection::BadRequest,
        });
        tracing::info!(status = rejection.status.as_u16(), peer = ?conn.peer.remote, "rejected request: {}", rejection.reason);
        if limits::has_body(&parts.headers) {
            conn.linger.store(true, Ordering::Relaxed);
        }
        return Ok(respond(rejection.status, rejection.reason, true, finish));
    }
    let body = read_ahead(&parts, body).await;
    let (reply_tx, reply_rx) = oneshot::channel::<Reply>();
    let (expire, expired) = if shared.timeout {
        let (tx, rx) = oneshot::channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let version = parts.version;
    let job = Job { parts, body: body.clone(), client, reply: reply_tx, expire, enqueued: arrived, trace };
    match shared.queue.push(Work::Request(job)) {
        Ok(()) => {}
        Err(PushError::Full(job)) => {
            drop(job);
            shared.metrics.rejected(Rejection::QueueFull);
            tracing::warn!("request queue full: answering 503");
            let close = settle(body.as_deref(), &conn);
            return Ok(respond(StatusCode::SERVICE_UNAVAILABLE, "Server busy, try again", close, finish));
        }
        Err(PushError::Closed(_)) => {
            shared.metrics.rejected(Rejection::ShuttingDown);
            return Ok(respond(StatusCode::SERVICE_UNAVAILABLE, "Server shutting down", true, finish));
        }
    }
    let reply = match expired {
        None => reply_rx.await,
        Some(expired) => tokio::select! {
            reply = reply_rx => reply,
            Ok(()) = expired => {
                shared.metrics.rejected(Rejection::Timeout);
                if let Some(control) = &shared.control {
                    control.send(WorkerMessage::Recycle { reason: RecycleReason::Timeout });
                }
                return Ok(respond(StatusCode::GATEWAY_TIMEOUT, "The application did not respond in time", true, finish));
            }
        },
    };
    let Ok(reply) = reply else {
        return Ok(respond(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error", true, finish));
    };
    // Decided now, whatever Python objects still hold `wsgi.input`: a complete reply means the
    // app is done with the body. A stream's app may still read it, so that waits for its end.
    let close = match &reply.body {
        ReplyBody::Full(_) => settle(body.as_deref(), &conn),
        ReplyBody::Stream(_) => {
            finish.body = body;
            // HTTP/1.0 has no chunked coding: a body of unknown length ends with the
            // connection, and the head must say so rather than promise keep-alive.
            version == http::Version::HTTP_10 && !reply.headers.contains_key(header::CONTENT_LENGTH)
        }
    };
    Ok(from_reply(reply, close, finish))
}

/// The body handle for the Python thread, with what the client already sent read ahead; `None`
/// when the request carries no body.
async fn read_ahead(parts: &http::request::Parts, body: Incoming) -> Option<Arc<SharedBody>> {
    if !limits::has_body(&parts.headers) {
        return None;
    }
    let mut body = RequestBody::new(body);
    std::future::poll_fn(|cx| {
        body.read_ahead(&parts.headers, cx);
        Poll::Ready(())
    })
    .await;
    Some(Arc::new(SharedBody::new(body, &parts.headers)))
}

/// The response for the app's reply; `close` ends the connection after it.
fn from_reply(reply: Reply, close: bool, finish: Finish) -> Response<ResponseBody> {
    let status = reply.status;
    let mut response = Response::new(ResponseBody::new(reply.body));
    *response.status_mut() = reply.status;
    *response.headers_mut() = reply.headers;
    if close {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(reason) = reply.reason {
        response.extensions_mut().insert(reason);
    }
    with_finish(response, status, finish)
}

/// Settles the request body of a response about to go out; true when the response must close
/// the connection (the socket then lingers to take the rest of the body).
fn settle(body: Option<&SharedBody>, conn: &ConnState) -> bool {
    let close = body.is_some_and(|body| body.settle(conn.shared.io_timeout) == Settled::Close);
    if close {
        conn.linger.store(true, Ordering::Relaxed);
    }
    close
}
