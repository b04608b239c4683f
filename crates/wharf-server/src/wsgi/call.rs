//! Serving one request on a Python thread: environ → app → response → close().

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, StatusCode};
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use super::environ::{EnvironTemplate, HeaderKeyCache};
use super::errors_stream::{ErrorStream, Serving};
use super::file_wrapper::{FileSource, FileWrapper};
use super::input::WsgiInput;
use super::pyerr;
use super::start_response::{ClientGone, Responder, StartResponse};
use super::stream::Streaming;
use crate::bridge::{BodyFailure, Job, JobTrace, Outbox};
use crate::observe::{Rejection, WorkerMetrics};

/// Everything a Python thread needs to serve requests.
pub(crate) struct AppContext {
    pub(crate) app: Py<PyAny>,
    /// `wsgi.input` of every request without a body: always at its end, so one is enough.
    pub(crate) empty_input: Py<WsgiInput>,
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) environ: EnvironTemplate,
    pub(crate) limit_request_body: u64,
    pub(crate) io_timeout: Duration,
    pub(crate) metrics: Arc<WorkerMetrics>,
    /// `--log-query`: log lines quote the whole target, not only its path.
    pub(crate) log_query: bool,
    /// `wsgi.errors`, which logs what is left of a line when the request ends.
    pub(crate) errors: Py<ErrorStream>,
    /// A streamed response whose client is not reading gives its thread back (see `stream`).
    pub(crate) release_slow_streams: bool,
}

/// How producing a response failed.
pub(super) enum Failure {
    App(PyErr),
    ClientGone,
}

impl From<PyErr> for Failure {
    fn from(err: PyErr) -> Self {
        Failure::App(err)
    }
}

impl From<ClientGone> for Failure {
    fn from(_: ClientGone) -> Self {
        Failure::ClientGone
    }
}

/// Serves `job` on this Python thread; every outcome is answered or logged here, except a
/// streamed response whose client is not reading fast enough: that comes back unfinished, to
/// be parked until the client has room (see `stream`).
pub(crate) fn serve_job(
    py: Python<'_>,
    ctx: &Arc<AppContext>,
    cache: &mut HeaderKeyCache,
    job: Job,
) -> Option<Streaming> {
    let Job { parts, body, client, reply, expire: _, enqueued, trace } = job;
    if let Some(trace) = &trace {
        trace.acquired.set(enqueued.elapsed());
    }
    let is_head = parts.method == Method::HEAD;
    let responder = Responder::new(reply, Arc::clone(&ctx.outbox), ctx.io_timeout, is_head, body.clone());
    let objects = Bound::new(py, StartResponse::new(responder)).and_then(|sr| {
        let input = match body {
            None => ctx.empty_input.bind(py).clone(),
            Some(body) => Bound::new(py, WsgiInput::new(Some(body), ctx.limit_request_body, ctx.io_timeout))?,
        };
        Ok((sr, input))
    });
    let (start_response, input) = match objects {
        Ok(objects) => objects,
        Err(err) => {
            tracing::error!("cannot set up the request: {}", pyerr::one_line(py, &err));
            return None;
        }
    };
    let method = parts.method.clone();
    let environ = match ctx.environ.build(py, cache, &parts, &client, input.clone().into_any()) {
        Ok(environ) => environ,
        Err(err) => {
            report_app_error(py, start_response.get(), &method, parts.uri.path(), &err, BodyFailure::None);
            return None;
        }
    };
    // The request head still points into hyper's read buffer, and while it does hyper has to
    // allocate a new buffer (8 KiB) for the connection's next request. The environ holds all
    // the app can see of it, so let it go before the response does.
    drop(parts);
    let serving = Serving::begin(&environ);
    let exchange = Exchange {
        ctx: Arc::clone(ctx),
        method,
        environ: environ.unbind(),
        start_response: start_response.unbind(),
        input: input.unbind(),
    };
    let sent = match call_app(py, &exchange, trace.as_ref()) {
        Ok(result) => send_result(py, exchange, result, is_head),
        Err(err) => Sent::Done(exchange, Err(err)),
    };
    match sent {
        Sent::Done(exchange, outcome) => {
            exchange.end(py, outcome);
            serving.end(py, ctx.errors.get());
            None
        }
        Sent::Unfinished(stream) => {
            serving.end(py, ctx.errors.get());
            Some(stream)
        }
    }
}

/// A request between the app's call and its end, on whichever thread serves it.
pub(super) struct Exchange {
    pub(super) ctx: Arc<AppContext>,
    method: Method,
    pub(super) environ: Py<PyDict>,
    pub(super) start_response: Py<StartResponse>,
    input: Py<WsgiInput>,
}

impl Exchange {
    /// The request is over: its failure is answered or logged, what it read is counted.
    pub(super) fn end(self, py: Python<'_>, outcome: Result<(), Failure>) {
        let (ctx, environ, input) = (&self.ctx, self.environ.bind(py), self.input.get());
        match outcome {
            Ok(()) => {}
            Err(Failure::ClientGone) => {
                tracing::debug!(method = %self.method, path = request_target(ctx, environ), "client went away before the response was complete");
            }
            Err(Failure::App(err)) => {
                let failure = input.failure();
                match failure {
                    BodyFailure::TooLarge => ctx.metrics.rejected(Rejection::BodyTooLarge),
                    BodyFailure::TimedOut => ctx.metrics.rejected(Rejection::BodyTimeout),
                    BodyFailure::Broken => ctx.metrics.rejected(Rejection::BadRequest),
                    BodyFailure::None | BodyFailure::Released => {}
                }
                let target = request_target(ctx, environ);
                report_app_error(py, self.start_response.get(), &self.method, &target, &err, failure);
            }
        }
        ctx.metrics.request_body(input.received());
    }
}

/// The request target as the app saw it (`RAW_URI`), for log lines: without its query unless
/// `--log-query` (queries carry tokens, and logs travel further than requests).
fn request_target(ctx: &AppContext, environ: &Bound<'_, PyDict>) -> String {
    let target = environ
        .get_item(&ctx.environ.keys.raw_uri)
        .ok()
        .flatten()
        .and_then(|target| target.extract::<String>().ok())
        .unwrap_or_default();
    match target.split_once('?') {
        Some((path, _)) if !ctx.log_query => path.to_owned(),
        _ => target,
    }
}

fn call_app<'py>(py: Python<'py>, exchange: &Exchange, trace: Option<&JobTrace>) -> Result<Bound<'py, PyAny>, Failure> {
    let environ = exchange.environ.bind(py);
    if let Some(trace) = trace {
        // The app's own instrumentation (e.g. opentelemetry-instrumentation-wsgi) reads the
        // incoming context from HTTP_TRACEPARENT: pointing it at wharf's span makes the app's
        // spans children of it.
        environ.set_item(intern!(py, "wharf.traceparent"), &trace.traceparent)?;
        environ.set_item(intern!(py, "HTTP_TRACEPARENT"), &trace.traceparent)?;
        if let Some(incoming) = &trace.incoming {
            environ.set_item(intern!(py, "wharf.incoming_traceparent"), incoming)?;
        }
    }
    Ok(exchange.ctx.app.bind(py).call1((environ, exchange.start_response.bind(py)))?)
}

/// How far sending the app's result got.
pub(super) enum Sent {
    /// The response is complete or failed; the iterable is closed.
    Done(Exchange, Result<(), Failure>),
    /// The client's buffer is full and the iterator has more.
    Unfinished(Streaming),
}

/// Sends what the app returned; PEP 3333: close() is called exactly once, whatever happened
/// while iterating (for an unfinished stream, when it ends).
fn send_result(py: Python<'_>, exchange: Exchange, result: Bound<'_, PyAny>, is_head: bool) -> Sent {
    let sr = exchange.start_response.get();
    // A list or tuple is complete already: one message carries head and body, with an exact
    // Content-Length, and no per-chunk hand-off is needed.
    let sent = if let Ok(list) = result.cast::<PyList>() {
        send_sequence(py, sr, list.iter())
    } else if let Ok(tuple) = result.cast::<PyTuple>() {
        send_sequence(py, sr, tuple.iter())
    } else if let Ok(wrapper) = result.cast::<FileWrapper>()
        && let Some(source) = wrapper.get().file_source(py)
    {
        send_file(py, sr, source, is_head)
    } else {
        return match result.try_iter() {
            Ok(iterator) => Streaming::start(py, exchange, result.unbind(), iterator.unbind()),
            Err(err) => {
                let closed = close(&result);
                Sent::Done(exchange, Err(closed.err().unwrap_or(err).into()))
            }
        };
    };
    let closed = close(&result);
    Sent::Done(exchange, sent.and(closed.map_err(Failure::from)))
}

pub(super) fn close(result: &Bound<'_, PyAny>) -> PyResult<()> {
    // Lists and tuples (the common response) have no close(); asking would build and discard
    // an AttributeError on every request.
    if result.is_exact_instance_of::<PyList>() || result.is_exact_instance_of::<PyTuple>() {
        return Ok(());
    }
    if result.hasattr(intern!(result.py(), "close"))? {
        result.call_method0(intern!(result.py(), "close"))?;
    }
    Ok(())
}

pub(super) fn require_head(sr: &StartResponse) -> Result<(), Failure> {
    if sr.with(|r| r.has_head() || r.head_sent())? {
        Ok(())
    } else {
        Err(Failure::App(PyRuntimeError::new_err(
            "the application produced a response body before calling start_response()",
        )))
    }
}

pub(super) fn as_bytes<'a, 'py>(item: &'a Bound<'py, PyAny>) -> Result<&'a Bound<'py, PyBytes>, Failure> {
    item.cast::<PyBytes>().map_err(|_| {
        Failure::App(PyTypeError::new_err(format!("the response iterable must yield bytes, not {}", item.get_type())))
    })
}

fn send_sequence<'py>(
    py: Python<'py>,
    sr: &StartResponse,
    items: impl ExactSizeIterator<Item = Bound<'py, PyAny>>,
) -> Result<(), Failure> {
    require_head(sr)?;
    let mut body: Option<Bytes> = None;
    let mut merged: Option<BytesMut> = None;
    let streaming = sr.with(|r| r.head_sent())?;
    for item in items {
        let bytes = as_bytes(&item)?.as_bytes();
        if streaming {
            sr.with(|r| r.send_chunk(py, bytes))??;
            continue;
        }
        match (&mut merged, &body) {
            (Some(buf), _) => buf.extend_from_slice(bytes),
            (None, None) => body = Some(Bytes::copy_from_slice(bytes)),
            (None, Some(first)) => {
                let mut buf = BytesMut::with_capacity(first.len() + bytes.len());
                buf.extend_from_slice(first);
                buf.extend_from_slice(bytes);
                merged = Some(buf);
            }
        }
    }
    if streaming {
        sr.with(Responder::finish)??;
        return Ok(());
    }
    let body = merged.map(BytesMut::freeze).or(body).unwrap_or_default();
    sr.with(|r| r.send_full(body))??;
    Ok(())
}

fn send_file(py: Python<'_>, sr: &StartResponse, mut source: FileSource, is_head: bool) -> Result<(), Failure> {
    require_head(sr)?;
    let mut remaining = match sr.with(|r| r.declared_content_length())? {
        Some(declared) => declared.min(source.len),
        None => {
            sr.with(|r| r.declare_content_length(source.len))?;
            source.len
        }
    };
    if is_head {
        remaining = 0;
    }
    while remaining > 0 {
        let block = py.detach(|| source.read_block(remaining)).map_err(PyErr::from)?;
        if block.is_empty() {
            break;
        }
        remaining -= block.len() as u64;
        sr.with(|r| r.send_owned(py, Bytes::from(block)))??;
    }
    sr.with(Responder::finish)??;
    Ok(())
}

fn report_app_error(
    py: Python<'_>,
    sr: &StartResponse,
    method: &Method,
    path: &str,
    err: &PyErr,
    input_failure: BodyFailure,
) {
    let failed_body = input_failure.response();
    let (status, message) = failed_body.unwrap_or((StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"));
    if failed_body.is_none() {
        tracing::error!(method = %method, path, "application error: {}", pyerr::traceback(py, err));
    } else {
        tracing::warn!(method = %method, path, status = status.as_u16(), "{message}");
    }
    let sent = sr.with(|r| {
        if r.head_sent() {
            r.abort();
            Ok(())
        } else {
            r.send_error(status, message)
        }
    });
    if !matches!(sent, Ok(Ok(()))) {
        tracing::debug!("client went away before the error response");
    }
}
