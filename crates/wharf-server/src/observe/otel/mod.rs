//! Request tracing: one OpenTelemetry SERVER span per request, exported over OTLP, configured by
//! the standard `OTEL_*` environment variables.
//!
//! Finished spans leave the request path through a bounded queue drained by an export thread of
//! our own ([`QueueProcessor`]). When the collector is slow or gone the queue fills and further
//! spans are dropped and counted, so a request never waits for the collector and memory stays
//! bounded. The SDK's `BatchSpanProcessor` behaves the same way but keeps its drop count private,
//! and the count is what `wharf_otel_spans_dropped_total` reports.

use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};
use http::uri::Authority;
use http::{Method, Version, header};
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::resource::{EnvResourceDetector, ResourceDetector as _};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanData, SpanExporter, SpanProcessor};

/// How long [`Tracing::shutdown`] waits for the last spans to reach the collector.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    #[error("unsupported {var}={value:?}: use {expected}")]
    Unsupported { var: &'static str, value: String, expected: &'static str },
    #[error("invalid {var}={value:?}: expected a whole number of at least {min}")]
    InvalidNumber { var: &'static str, value: String, min: u64 },
    #[error("cannot build the OTLP span exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("cannot start the runtime of the gRPC span exporter: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot start the span export thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the span export thread exited while starting")]
    ThreadExited,
}

/// Request tracing for one worker process. Absent (`None` from [`Tracing::from_env`]) when off,
/// so a server without tracing pays one `Option` check per request.
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    counters: Arc<Counters>,
}

impl Tracing {
    /// Tracing as the standard environment configures it: on when `OTEL_SDK_DISABLED` is not
    /// `true` and an OTLP endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT`,
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) or `OTEL_TRACES_EXPORTER=otlp` asks for the default
    /// one. `OTEL_EXPORTER_OTLP(_TRACES)_PROTOCOL` picks `http/protobuf` (default) or `grpc`;
    /// `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` and `OTEL_BSP_SCHEDULE_DELAY`
    /// size the export queue. The exporter itself reads the endpoint, `..._HEADERS`, `..._TIMEOUT`
    /// and `..._COMPRESSION`; the SDK reads `OTEL_TRACES_SAMPLER(_ARG)`, `OTEL_SERVICE_NAME` and
    /// `OTEL_RESOURCE_ATTRIBUTES`. `service_name_default` names the service when neither does.
    ///
    /// Needs no tokio runtime: the export thread brings its own when gRPC needs one, so this
    /// may be called from anywhere, once per worker process.
    pub fn from_env(service_name_default: &str) -> Result<Option<Tracing>, OtelError> {
        let env = |name: &str| std::env::var(name).ok();
        let Some(settings) = Settings::read(&env)? else {
            return Ok(None);
        };
        let resource = resource(service_name_default, &env);
        let protocol = settings.protocol;
        Tracing::start_exporting(resource, settings.batch, move || otlp_exporter(protocol)).map(Some)
    }

    fn start_exporting<E, F>(resource: Resource, batch: BatchSettings, make_exporter: F) -> Result<Tracing, OtelError>
    where
        E: SpanExporter + 'static,
        F: FnOnce() -> Result<(E, Executor), OtelError> + Send + 'static,
    {
        let counters = Arc::new(Counters::default());
        let processor = QueueProcessor::start(resource.clone(), batch, Arc::clone(&counters), make_exporter)?;
        let provider = SdkTracerProvider::builder().with_span_processor(processor).with_resource(resource).build();
        let scope = InstrumentationScope::builder("wharf").with_version(env!("CARGO_PKG_VERSION")).build();
        let tracer = provider.tracer_with_scope(scope);
        Ok(Tracing { provider, tracer, counters })
    }

    /// Starts the SERVER span of a request, as the child of an incoming W3C `traceparent` (and
    /// `tracestate`) when it is valid. `peer` is the client as wharf trusts it (after proxy
    /// headers), `local` the listening address, used when the request names no host.
    pub fn start(
        &self,
        parts: &http::request::Parts,
        scheme: &str,
        peer: Option<SocketAddr>,
        local: Option<SocketAddr>,
        capture_query: bool,
    ) -> RequestSpan {
        let parent = if parts.headers.get(TRACEPARENT).is_some_and(|v| well_formed_traceparent(v.as_bytes())) {
            TraceContextPropagator::new().extract(&HeaderExtractor(&parts.headers))
        } else {
            Context::new()
        };
        let (name, attributes) = request_attributes(parts, scheme, peer, local, capture_query);
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        RequestSpan { span }
    }

    /// Spans lost because the export queue was full (or export had stopped): the value of
    /// `wharf_otel_spans_dropped_total`.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Spans that reached the exporter but that the collector did not accept (a failed export).
    pub fn export_failed(&self) -> u64 {
        self.counters.export_failed.load(Ordering::Relaxed)
    }

    /// Exports what is queued and stops the export thread. Blocks for at most 5 seconds (a
    /// hanging collector), so call it once requests are drained, off the I/O runtime.
    pub fn shutdown(&self) {
        match self.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
            Ok(()) | Err(OTelSdkError::AlreadyShutdown) => {}
            Err(error) => tracing::warn!("flushing spans at shutdown failed: {error}"),
        }
    }
}

/// The SERVER span of one request. Moves with the request from the I/O thread to a Python
/// thread and back; ends when [`RequestSpan::finish`] is called (or, without a status, when
/// dropped).
pub struct RequestSpan {
    span: opentelemetry_sdk::trace::Span,
}

const _: () = {
    const fn send<T: Send>() {}
    send::<RequestSpan>();
};

impl RequestSpan {
    /// W3C `traceparent` of this span: what the application must continue from.
    pub fn traceparent(&self) -> String {
        let context = self.span.span_context();
        format!("00-{:032x}-{:016x}-{:02x}", context.trace_id(), context.span_id(), context.trace_flags().to_u8())
    }

    /// W3C `tracestate` carried over from the incoming request, if it had one.
    pub fn tracestate(&self) -> Option<String> {
        let state = self.span.span_context().trace_state().header();
        (!state.is_empty()).then_some(state)
    }

    /// Records that a Python thread took the request after `wait` in the queue: an event
    /// `wharf.python_thread_acquired` with `wharf.queue.wait` in seconds, at the moment the
    /// thread took it. An event rather than a child span keeps one span per request.
    pub fn queued(&mut self, wait: Duration) {
        self.span
            .add_event("wharf.python_thread_acquired", vec![KeyValue::new("wharf.queue.wait", wait.as_secs_f64())]);
    }

    /// Ends the span once the response is done: `completed` is false when the body was cut
    /// short (client gone, application failed while streaming).
    pub fn finish(mut self, status: u16, bytes_sent: u64, completed: bool) {
        self.span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
        self.span
            .set_attribute(KeyValue::new("http.response.body.size", i64::try_from(bytes_sent).unwrap_or(i64::MAX)));
        if !completed {
            self.span.set_attribute(KeyValue::new("error.type", "wharf.response_incomplete"));
            self.span.set_status(Status::error("the response body was not sent completely"));
        } else if status >= 500 {
            // Semantic conventions: the status code is the error type, the description stays empty.
            self.span.set_attribute(KeyValue::new("error.type", status.to_string()));
            self.span.set_status(Status::error(""));
        }
        self.span.end();
    }
}

const TRACEPARENT: &str = "traceparent";

/// The W3C shape of `traceparent`: `version-traceid-spanid-flags` in lowercase hex with exact
/// field lengths. The SDK's propagator accepts short ids (it parses them as numbers), and a
/// header that does not parse must start a new trace, not continue a different one.
fn well_formed_traceparent(value: &[u8]) -> bool {
    const LEN: usize = 55;
    if value.len() < LEN || &value[..2] == b"ff" {
        return false;
    }
    let fields_ok = value[..LEN].iter().enumerate().all(|(i, &b)| match i {
        2 | 35 | 52 => b == b'-',
        _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
    });
    // Version 00 has exactly these fields; later versions may append `-...` fields.
    fields_ok && (value.len() == LEN || (&value[..2] != b"00" && value[LEN] == b'-'))
}

/// Span name and attributes of a request (HTTP server semantic conventions, stable since 1.23).
fn request_attributes(
    parts: &http::request::Parts,
    scheme: &str,
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
    capture_query: bool,
) -> (&'static str, Vec<KeyValue>) {
    let mut attributes = Vec::with_capacity(11);
    let name = match known_method(&parts.method) {
        Some(method) => {
            attributes.push(KeyValue::new("http.request.method", method));
            method
        }
        None => {
            attributes.push(KeyValue::new("http.request.method", "_OTHER"));
            attributes.push(KeyValue::new("http.request.method_original", parts.method.as_str().to_owned()));
            "HTTP"
        }
    };
    attributes.push(KeyValue::new("url.path", parts.uri.path().to_owned()));
    if capture_query && let Some(query) = parts.uri.query() {
        attributes.push(KeyValue::new("url.query", query.to_owned()));
    }
    attributes.push(KeyValue::new("url.scheme", scheme.to_owned()));
    if let Some((address, port)) = server_address(parts, scheme, local) {
        attributes.push(KeyValue::new("server.address", address));
        attributes.push(KeyValue::new("server.port", i64::from(port)));
    }
    if let Some(peer) = peer {
        attributes.push(KeyValue::new("client.address", peer.ip().to_string()));
    }
    if let Some(version) = protocol_version(parts.version) {
        attributes.push(KeyValue::new("network.protocol.version", version));
    }
    if let Some(agent) = parts.headers.get(header::USER_AGENT) {
        attributes.push(KeyValue::new("user_agent.original", String::from_utf8_lossy(agent.as_bytes()).into_owned()));
    }
    (name, attributes)
}

/// The methods the conventions know; any other is reported as `_OTHER` (bounded cardinality).
fn known_method(method: &Method) -> Option<&'static str> {
    Some(match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => return None,
    })
}

/// The host the client addressed (absolute URI, then `Host`), with the scheme's default port when
/// it names none; the listening socket when the request names no host.
fn server_address(parts: &http::request::Parts, scheme: &str, local: Option<SocketAddr>) -> Option<(String, u16)> {
    let named = parts.uri.authority().cloned().or_else(|| {
        let host = parts.headers.get(header::HOST)?.to_str().ok()?;
        Authority::from_str(host).ok()
    });
    match named {
        Some(authority) => {
            let port = authority.port_u16().or(match scheme {
                "https" => Some(443),
                "http" => Some(80),
                _ => local.map(|l| l.port()),
            })?;
            let host = authority.host();
            let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
            Some((host.to_owned(), port))
        }
        None => local.map(|l| (l.ip().to_string(), l.port())),
    }
}

fn protocol_version(version: Version) -> Option<&'static str> {
    match version {
        Version::HTTP_09 => Some("0.9"),
        Version::HTTP_10 => Some("1.0"),
        Version::HTTP_11 => Some("1.1"),
        Version::HTTP_2 => Some("2"),
        Version::HTTP_3 => Some("3"),
        _ => None,
    }
}

/// `service.name`: `OTEL_SERVICE_NAME`, else `service.name` in `OTEL_RESOURCE_ATTRIBUTES`, else
/// the default given (the SDK's own default, `unknown_service`, says nothing useful).
fn resource(service_name_default: &str, env: &dyn Fn(&str) -> Option<String>) -> Resource {
    let builder = Resource::builder();
    let named = env("OTEL_SERVICE_NAME").is_some_and(|v| !v.trim().is_empty())
        || EnvResourceDetector::new().detect().get(&opentelemetry::Key::from_static_str("service.name")).is_some();
    if named { builder.build() } else { builder.with_service_name(service_name_default.to_owned()).build() }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    HttpProtobuf,
    Grpc,
}

/// What decides whether and how spans are exported (the rest is read by the exporter and SDK).
#[derive(Debug, PartialEq, Eq)]
struct Settings {
    protocol: Protocol,
    batch: BatchSettings,
}

/// The batch span processor variables (`OTEL_BSP_*`), with the specification's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchSettings {
    max_queue_size: usize,
    max_export_batch_size: usize,
    schedule_delay: Duration,
}

impl Settings {
    /// `None` when tracing is off.
    fn read(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Settings>, OtelError> {
        let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let endpoint =
            set("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some();
        let enabled = match set("OTEL_TRACES_EXPORTER") {
            None => endpoint,
            Some(value) => match value.trim().to_ascii_lowercase().as_str() {
                "otlp" => true,
                "none" => false,
                _ => {
                    return Err(OtelError::Unsupported {
                        var: "OTEL_TRACES_EXPORTER",
                        value,
                        expected: "otlp or none",
                    });
                }
            },
        };
        if !enabled {
            return Ok(None);
        }
        let (var, value) = match set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") {
            Some(value) => ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", value),
            None => ("OTEL_EXPORTER_OTLP_PROTOCOL", set("OTEL_EXPORTER_OTLP_PROTOCOL").unwrap_or_default()),
        };
        let protocol = match value.trim() {
            "" | "http/protobuf" => Protocol::HttpProtobuf,
            "grpc" => Protocol::Grpc,
            _ => return Err(OtelError::Unsupported { var, value, expected: "http/protobuf or grpc" }),
        };
        let max_queue_size = usize::try_from(number(&set, "OTEL_BSP_MAX_QUEUE_SIZE", 2048, 1)?).unwrap_or(usize::MAX);
        let max_export_batch_size = usize::try_from(number(&set, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, 1)?)
            .unwrap_or(usize::MAX)
            .min(max_queue_size);
        let schedule_delay = Duration::from_millis(number(&set, "OTEL_BSP_SCHEDULE_DELAY", 5000, 0)?);
        Ok(Some(Settings { protocol, batch: BatchSettings { max_queue_size, max_export_batch_size, schedule_delay } }))
    }
}

fn number(set: &dyn Fn(&str) -> Option<String>, var: &'static str, default: u64, min: u64) -> Result<u64, OtelError> {
    let Some(value) = set(var) else {
        return Ok(default);
    };
    match value.trim().parse::<u64>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(OtelError::InvalidNumber { var, value, min }),
    }
}

fn otlp_exporter(protocol: Protocol) -> Result<(opentelemetry_otlp::SpanExporter, Executor), OtelError> {
    use opentelemetry_otlp::WithExportConfig as _;
    match protocol {
        // The blocking HTTP client must not run inside a tokio runtime: drive it plainly.
        Protocol::HttpProtobuf => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .build()?;
            Ok((exporter, Executor::Plain))
        }
        // tonic spawns its connection tasks at build time, so it needs a runtime from the start.
        Protocol::Grpc => {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(OtelError::Runtime)?;
            let exporter = {
                let _entered = runtime.enter();
                opentelemetry_otlp::SpanExporter::builder().with_tonic().build()?
            };
            Ok((exporter, Executor::Tokio(runtime)))
        }
    }
}

/// What drives an export future on the export thread.
enum Executor {
    Plain,
    Tokio(tokio::runtime::Runtime),
}

impl Executor {
    fn block_on<F: Future>(&self, future: F) -> F::Output {
        match self {
            Executor::Plain => crate::blocking::block_on(future),
            Executor::Tokio(runtime) => runtime.block_on(future),
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    dropped: AtomicU64,
    export_failed: AtomicU64,
}

enum Control {
    /// The queue went from empty to one span, or holds a full batch.
    Wake,
    Flush(Sender<OTelSdkResult>),
    Shutdown(Sender<OTelSdkResult>),
}

/// Hands finished spans to the export thread without ever waiting: a full queue drops the span
/// and counts it.
#[derive(Debug)]
struct QueueProcessor {
    spans: Sender<SpanData>,
    control: Sender<Control>,
    counters: Arc<Counters>,
    batch_size: usize,
    /// A `Wake` is on its way to the export thread and not yet handled.
    wake_sent: Arc<AtomicBool>,
}

impl QueueProcessor {
    /// Starts the export thread, which builds the exporter (so a gRPC exporter's runtime lives
    /// and dies on that thread) and reports whether that worked before this returns.
    fn start<E, F>(
        resource: Resource,
        batch: BatchSettings,
        counters: Arc<Counters>,
        make_exporter: F,
    ) -> Result<Self, OtelError>
    where
        E: SpanExporter + 'static,
        F: FnOnce() -> Result<(E, Executor), OtelError> + Send + 'static,
    {
        let (spans, queued) = crossbeam_channel::bounded(batch.max_queue_size);
        let (control, requests) = crossbeam_channel::unbounded();
        let (ready_tx, ready) = crossbeam_channel::bounded(1);
        let thread_counters = Arc::clone(&counters);
        let wake_sent = Arc::new(AtomicBool::new(false));
        let thread_wake_sent = Arc::clone(&wake_sent);
        let batch_size = batch.max_export_batch_size;
        std::thread::Builder::new()
            .name("wharf-otel-export".into())
            .spawn(move || match make_exporter() {
                Ok((mut exporter, executor)) => {
                    exporter.set_resource(&resource);
                    let _ = ready_tx.send(Ok(()));
                    // Exporting must not preempt the I/O thread; it only has to keep up.
                    crate::sched::batch_wakeups();
                    ExportLoop {
                        exporter,
                        executor,
                        queued,
                        requests,
                        batch,
                        counters: thread_counters,
                        wake_sent: thread_wake_sent,
                        failing: false,
                    }
                    .run();
                }
                Err(error) => {
                    let _ = ready_tx.send(Err(error));
                }
            })
            .map_err(OtelError::Thread)?;
        ready.recv().map_err(|_| OtelError::ThreadExited)??;
        Ok(QueueProcessor { spans, control, counters, batch_size, wake_sent })
    }

    fn request(&self, make: fn(Sender<OTelSdkResult>) -> Control, timeout: Duration) -> OTelSdkResult {
        let (ack, done) = crossbeam_channel::bounded(1);
        self.control.send(make(ack)).map_err(|_| OTelSdkError::AlreadyShutdown)?;
        done.recv_timeout(timeout).map_err(|_| OTelSdkError::Timeout(timeout))?
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.spans.try_send(span).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Waking the export thread for every span would cost a context switch per request;
        // it needs to know only when a batch starts (to time it) and when one is full.
        let queued = self.spans.len();
        if (queued == 1 || queued >= self.batch_size) && !self.wake_sent.swap(true, Ordering::AcqRel) {
            let _ = self.control.send(Control::Wake);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.request(Control::Flush, FLUSH_TIMEOUT)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.request(Control::Shutdown, timeout)
    }
}

/// The export thread: collects spans into batches and exports a batch when it is full or when
/// its oldest span has waited `schedule_delay`. Sleeps without a timer while nothing is queued.
struct ExportLoop<E> {
    exporter: E,
    executor: Executor,
    queued: Receiver<SpanData>,
    requests: Receiver<Control>,
    batch: BatchSettings,
    counters: Arc<Counters>,
    wake_sent: Arc<AtomicBool>,
    /// Whether the last export failed, so a dead collector is logged once, not per batch.
    failing: bool,
}

enum Event {
    Due,
    Control(Control),
    Closed,
}

impl<E: SpanExporter> ExportLoop<E> {
    fn run(mut self) {
        let mut pending = Vec::with_capacity(self.batch.max_export_batch_size);
        let mut due: Option<Instant> = None;
        loop {
            let event = match due {
                None => select! {
                    recv(self.requests) -> request => request.map_or(Event::Closed, Event::Control),
                },
                Some(due) => select! {
                    recv(self.requests) -> request => request.map_or(Event::Closed, Event::Control),
                    default(due.saturating_duration_since(Instant::now())) => Event::Due,
                },
            };
            match event {
                Event::Control(Control::Wake) => {
                    // Reset before looking at the queue: a span queued after this look sends
                    // a new wake-up if it starts a batch or fills one.
                    self.wake_sent.store(false, Ordering::Release);
                    if self.queued.len() >= self.batch.max_export_batch_size {
                        let _ = self.export_queued(&mut pending);
                        due = None;
                    }
                }
                Event::Due => {
                    self.wake_sent.store(false, Ordering::Release);
                    let _ = self.export_queued(&mut pending);
                    due = None;
                }
                Event::Control(Control::Flush(ack)) => {
                    let _ = ack.send(self.export_queued(&mut pending));
                    due = None;
                }
                Event::Control(Control::Shutdown(ack)) => {
                    let result = self.export_queued(&mut pending).and(self.exporter.shutdown());
                    let _ = ack.send(result);
                    return;
                }
                Event::Closed => {
                    let _ = self.export_queued(&mut pending).and(self.exporter.shutdown());
                    return;
                }
            }
            // Spans that arrived while exporting (or a batch just started) go out within
            // `schedule_delay`.
            if due.is_none() && !self.queued.is_empty() {
                due = Some(Instant::now() + self.batch.schedule_delay);
            }
        }
    }

    /// Exports everything queued so far, in batches; spans still arriving wait for the next round.
    fn export_queued(&mut self, pending: &mut Vec<SpanData>) -> OTelSdkResult {
        let mut result = Ok(());
        for _ in 0..self.queued.len() {
            let Ok(span) = self.queued.try_recv() else { break };
            pending.push(span);
            if pending.len() >= self.batch.max_export_batch_size {
                result = result.and(self.export(pending));
            }
        }
        result.and(self.export(pending))
    }

    fn export(&mut self, pending: &mut Vec<SpanData>) -> OTelSdkResult {
        if pending.is_empty() {
            return Ok(());
        }
        let spans = std::mem::replace(pending, Vec::with_capacity(self.batch.max_export_batch_size));
        let count = spans.len() as u64;
        let result = self.executor.block_on(self.exporter.export(spans));
        match &result {
            Ok(()) if self.failing => {
                self.failing = false;
                tracing::info!("exporting spans works again");
            }
            Ok(()) => {}
            Err(error) => {
                self.counters.export_failed.fetch_add(count, Ordering::Relaxed);
                if !self.failing {
                    self.failing = true;
                    tracing::warn!("exporting spans failed (logged once until it works again): {error}");
                }
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use opentelemetry::trace::{SpanId, TraceContextExt as _, TraceId};
    use opentelemetry::{Key, Value};
    use opentelemetry_sdk::trace::InMemorySpanExporter;

    use super::*;

    const INCOMING: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn batch(max_queue_size: usize, max_export_batch_size: usize, schedule_delay: Duration) -> BatchSettings {
        BatchSettings { max_queue_size, max_export_batch_size, schedule_delay }
    }

    fn start<E: SpanExporter + 'static>(exporter: E, settings: BatchSettings) -> Tracing {
        let resource = Resource::builder_empty().with_service_name("test").build();
        Tracing::start_exporting(resource, settings, move || Ok((exporter, Executor::Plain))).expect("tracing starts")
    }

    fn in_memory() -> (Tracing, InMemorySpanExporter) {
        let exporter = InMemorySpanExporter::default();
        (start(exporter.clone(), batch(64, 16, Duration::from_secs(60))), exporter)
    }

    fn exported(tracing: &Tracing, exporter: &InMemorySpanExporter) -> Vec<SpanData> {
        tracing.provider.force_flush().expect("flush");
        exporter.get_finished_spans().expect("finished spans")
    }

    fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut builder = http::Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("valid request").into_parts().0
    }

    fn attr(span: &SpanData, key: &str) -> Option<Value> {
        span.attributes.iter().find(|kv| kv.key == Key::new(key.to_owned())).map(|kv| kv.value.clone())
    }

    fn one_span(tracing: &Tracing, exporter: &InMemorySpanExporter) -> SpanData {
        let mut spans = exported(tracing, exporter);
        assert_eq!(spans.len(), 1, "{spans:#?}");
        spans.remove(0)
    }

    fn peer() -> Option<SocketAddr> {
        Some("192.0.2.7:51234".parse().expect("address"))
    }

    fn local() -> Option<SocketAddr> {
        Some("10.0.0.1:8000".parse().expect("address"))
    }

    #[test]
    fn server_span_follows_http_semantic_conventions() {
        let (tracing, exporter) = in_memory();
        let parts = request("POST", "/orders/7?page=2", &[("host", "shop.example:8443"), ("user-agent", "curl/8.5")]);
        tracing.start(&parts, "https", peer(), local(), false).finish(201, 42, true);

        let span = one_span(&tracing, &exporter);
        assert_eq!(span.name, "POST");
        assert_eq!(span.span_kind, SpanKind::Server);
        assert_eq!(span.instrumentation_scope.name(), "wharf");
        assert_eq!(attr(&span, "http.request.method"), Some("POST".into()));
        assert_eq!(attr(&span, "url.path"), Some("/orders/7".into()));
        assert_eq!(attr(&span, "url.query"), None, "the query is only recorded when asked for");
        assert_eq!(attr(&span, "url.scheme"), Some("https".into()));
        assert_eq!(attr(&span, "server.address"), Some("shop.example".into()));
        assert_eq!(attr(&span, "server.port"), Some(8443.into()));
        assert_eq!(attr(&span, "client.address"), Some("192.0.2.7".into()));
        assert_eq!(attr(&span, "network.protocol.version"), Some("1.1".into()));
        assert_eq!(attr(&span, "user_agent.original"), Some("curl/8.5".into()));
        assert_eq!(attr(&span, "http.response.status_code"), Some(201.into()));
        assert_eq!(attr(&span, "http.response.body.size"), Some(42.into()));
        assert_eq!(attr(&span, "error.type"), None);
        assert_eq!(span.status, Status::Unset);
        assert_eq!(span.parent_span_id, SpanId::INVALID, "no incoming context: a root span");
    }

    #[test]
    fn query_is_recorded_when_asked_for() {
        let (tracing, exporter) = in_memory();
        tracing.start(&request("GET", "/search?q=boats&n=1", &[]), "http", None, local(), true).finish(200, 0, true);
        let span = one_span(&tracing, &exporter);
        assert_eq!(attr(&span, "url.query"), Some("q=boats&n=1".into()));
        assert_eq!(attr(&span, "client.address"), None);
    }

    #[test]
    fn unknown_methods_are_other_and_the_span_is_named_http() {
        let (tracing, exporter) = in_memory();
        tracing.start(&request("PROPFIND", "/dav", &[]), "http", peer(), local(), false).finish(207, 0, true);
        let span = one_span(&tracing, &exporter);
        assert_eq!(span.name, "HTTP");
        assert_eq!(attr(&span, "http.request.method"), Some("_OTHER".into()));
        assert_eq!(attr(&span, "http.request.method_original"), Some("PROPFIND".into()));
    }

    #[test]
    fn server_address_comes_from_the_request_then_the_socket() {
        let parts = request("GET", "/", &[("host", "example.org")]);
        assert_eq!(server_address(&parts, "https", local()), Some(("example.org".into(), 443)));
        assert_eq!(server_address(&parts, "http", local()), Some(("example.org".into(), 80)));
        let parts = request("GET", "/", &[("host", "[2001:db8::1]:9000")]);
        assert_eq!(server_address(&parts, "http", local()), Some(("2001:db8::1".into(), 9000)));
        let parts = request("GET", "http://proxy.example:81/x", &[("host", "ignored.example")]);
        assert_eq!(server_address(&parts, "http", local()), Some(("proxy.example".into(), 81)));
        let parts = request("GET", "/", &[]);
        assert_eq!(server_address(&parts, "http", local()), Some(("10.0.0.1".into(), 8000)));
        let parts = request("GET", "/", &[("host", "bad host")]);
        assert_eq!(server_address(&parts, "http", local()), Some(("10.0.0.1".into(), 8000)));
        assert_eq!(server_address(&parts, "http", None), None);
    }

    #[test]
    fn protocol_versions_use_the_convention_spelling() {
        let (tracing, exporter) = in_memory();
        let mut parts = request("GET", "/", &[]);
        parts.version = Version::HTTP_10;
        tracing.start(&parts, "http", None, None, false).finish(200, 0, true);
        assert_eq!(attr(&one_span(&tracing, &exporter), "network.protocol.version"), Some("1.0".into()));
        assert_eq!(protocol_version(Version::HTTP_2), Some("2"));
    }

    #[test]
    fn incoming_traceparent_makes_the_span_a_child_and_keeps_tracestate() {
        let (tracing, exporter) = in_memory();
        let parts = request("GET", "/", &[("traceparent", INCOMING), ("tracestate", "vendor=abc,other=1")]);
        let span = tracing.start(&parts, "http", None, None, false);
        let traceparent = span.traceparent();
        assert_eq!(span.tracestate().as_deref(), Some("vendor=abc,other=1"));
        span.finish(200, 0, true);

        let data = one_span(&tracing, &exporter);
        assert_eq!(data.span_context.trace_id(), TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex"));
        assert_eq!(data.parent_span_id, SpanId::from_hex("00f067aa0ba902b7").expect("hex"));
        assert!(data.parent_span_is_remote);
        assert_eq!(traceparent, format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{:016x}-01", data.span_context.span_id()));
    }

    #[test]
    fn traceparent_is_what_a_w3c_propagator_reads_back() {
        let (tracing, _exporter) = in_memory();
        let span = tracing.start(&request("GET", "/", &[]), "http", None, None, false);
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", span.traceparent().parse().expect("header value"));
        let extracted = TraceContextPropagator::new().extract(&HeaderExtractor(&headers));
        let read = extracted.span().span_context().clone();
        assert!(read.is_valid());
        assert_eq!(read.trace_id(), span.span.span_context().trace_id());
        assert_eq!(read.span_id(), span.span.span_context().span_id());
        assert!(read.is_sampled());
        assert_eq!(span.tracestate(), None);
    }

    #[test]
    fn invalid_traceparent_starts_a_new_trace() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
        ] {
            let (tracing, exporter) = in_memory();
            tracing
                .start(&request("GET", "/", &[("traceparent", bad)]), "http", None, None, false)
                .finish(200, 0, true);
            let span = one_span(&tracing, &exporter);
            assert_eq!(span.parent_span_id, SpanId::INVALID, "{bad} must not become a parent");
            assert_ne!(
                span.span_context.trace_id(),
                TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex")
            );
        }
    }

    #[test]
    fn unsampled_parent_is_followed_and_nothing_is_exported() {
        let (tracing, exporter) = in_memory();
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let span = tracing.start(&request("GET", "/", &[("traceparent", unsampled)]), "http", None, None, false);
        let traceparent = span.traceparent();
        assert!(traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(traceparent.ends_with("-00"), "the app must not sample either: {traceparent}");
        assert!(!traceparent.contains("00f067aa0ba902b7"), "a span id of its own: {traceparent}");
        span.finish(200, 0, true);
        assert!(exported(&tracing, &exporter).is_empty());
        assert_eq!(tracing.dropped(), 0, "unsampled spans are not drops");
    }

    #[test]
    fn server_errors_and_incomplete_responses_are_errors() {
        let (tracing, exporter) = in_memory();
        tracing.start(&request("GET", "/a", &[]), "http", None, None, false).finish(503, 10, true);
        tracing.start(&request("GET", "/b", &[]), "http", None, None, false).finish(404, 10, true);
        tracing.start(&request("GET", "/c", &[]), "http", None, None, false).finish(200, 5, false);
        let spans = exported(&tracing, &exporter);
        let by_path =
            |path: &str| spans.iter().find(|s| attr(s, "url.path") == Some(path.to_owned().into())).expect("span");

        let failed = by_path("/a");
        assert_eq!(failed.status, Status::error(""));
        assert_eq!(attr(failed, "error.type"), Some("503".into()));
        let not_found = by_path("/b");
        assert_eq!(not_found.status, Status::Unset, "4xx is the client's error, not the server's");
        let cut = by_path("/c");
        assert!(matches!(&cut.status, Status::Error { description } if !description.is_empty()));
        assert_eq!(attr(cut, "error.type"), Some("wharf.response_incomplete".into()));
        assert_eq!(attr(cut, "http.response.body.size"), Some(5.into()));
    }

    #[test]
    fn queue_wait_is_an_event() {
        let (tracing, exporter) = in_memory();
        let mut span = tracing.start(&request("GET", "/", &[]), "http", None, None, false);
        span.queued(Duration::from_millis(1500));
        span.finish(200, 0, true);
        let data = one_span(&tracing, &exporter);
        let event = data.events.iter().find(|e| e.name == "wharf.python_thread_acquired").expect("event");
        assert_eq!(event.attributes, vec![KeyValue::new("wharf.queue.wait", 1.5)]);
    }

    #[derive(Debug)]
    struct CountingExporter(Arc<AtomicUsize>);

    impl SpanExporter for CountingExporter {
        fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
            self.0.fetch_add(batch.len(), Ordering::SeqCst);
            std::future::ready(Ok(()))
        }
    }

    #[test]
    fn shutdown_exports_what_is_queued() {
        let exported = Arc::new(AtomicUsize::new(0));
        let tracing = start(CountingExporter(Arc::clone(&exported)), batch(64, 2, Duration::from_secs(3600)));
        for _ in 0..5 {
            tracing.start(&request("GET", "/", &[]), "http", None, None, false).finish(200, 0, true);
        }
        tracing.shutdown();
        assert_eq!(exported.load(Ordering::SeqCst), 5);
        tracing.shutdown();
    }

    #[test]
    fn traceparent_shape_is_checked() {
        assert!(well_formed_traceparent(INCOMING.as_bytes()));
        assert!(well_formed_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future"));
        assert!(!well_formed_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"));
        assert!(!well_formed_traceparent(b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"));
        assert!(!well_formed_traceparent(b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        assert!(!well_formed_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"));
        assert!(!well_formed_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e473--00f067aa0ba902b7-01"));
    }

    #[test]
    fn a_full_batch_is_exported_without_waiting_for_the_delay() {
        let exporter = InMemorySpanExporter::default();
        let tracing = start(exporter.clone(), batch(64, 4, Duration::from_secs(3600)));
        for _ in 0..4 {
            tracing.start(&request("GET", "/", &[]), "http", None, None, false).finish(200, 0, true);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while exporter.get_finished_spans().expect("spans").len() < 4 {
            assert!(Instant::now() < deadline, "a full batch must be exported at once");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn partial_batches_go_out_after_the_schedule_delay() {
        let exporter = InMemorySpanExporter::default();
        let tracing = start(exporter.clone(), batch(64, 4, Duration::from_millis(50)));
        let wait_for = |n: usize| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while exporter.get_finished_spans().expect("spans").len() < n {
                assert!(Instant::now() < deadline, "spans were not exported after the delay");
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        // A lone span starts a batch, and is exported once the delay passed.
        tracing.start(&request("GET", "/", &[]), "http", None, None, false).finish(200, 0, true);
        wait_for(1);
        // A full batch plus a rest: the rest must not wait for a batch that never fills.
        for _ in 0..6 {
            tracing.start(&request("GET", "/", &[]), "http", None, None, false).finish(200, 0, true);
        }
        wait_for(7);
        tracing.shutdown();
    }

    /// Holds every export until the test lets it through, like a collector that hangs.
    #[derive(Debug)]
    struct HangingExporter {
        entered: Sender<usize>,
        release: Receiver<()>,
        exported: Arc<AtomicUsize>,
    }

    impl SpanExporter for HangingExporter {
        fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
            let _ = self.entered.send(batch.len());
            let _ = self.release.recv();
            self.exported.fetch_add(batch.len(), Ordering::SeqCst);
            std::future::ready(Ok(()))
        }
    }

    #[test]
    fn a_hanging_collector_drops_and_counts_instead_of_blocking() {
        let (entered_tx, entered) = crossbeam_channel::unbounded();
        let (release, release_rx) = crossbeam_channel::unbounded();
        let exported = Arc::new(AtomicUsize::new(0));
        let exporter = HangingExporter { entered: entered_tx, release: release_rx, exported: Arc::clone(&exported) };
        let tracing = start(exporter, batch(2, 1, Duration::ZERO));
        let end = || tracing.tracer.start("span").end();

        end();
        assert_eq!(entered.recv_timeout(Duration::from_secs(5)), Ok(1), "the first span is being exported");
        let started = Instant::now();
        for _ in 0..10 {
            end();
        }
        assert!(started.elapsed() < Duration::from_millis(500), "ending spans never waits for the exporter");
        assert_eq!(tracing.dropped(), 8, "two fit in the queue, the other eight are dropped");

        for _ in 0..3 {
            release.send(()).expect("release");
        }
        tracing.shutdown();
        assert_eq!(exported.load(Ordering::SeqCst), 3);
        assert_eq!(tracing.dropped(), 8);
    }

    #[derive(Debug)]
    struct RefusingExporter;

    impl SpanExporter for RefusingExporter {
        fn export(&self, _batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
            std::future::ready(Err(OTelSdkError::InternalFailure("connection refused".into())))
        }
    }

    #[test]
    fn spans_of_failed_exports_are_counted() {
        let tracing = start(RefusingExporter, batch(64, 16, Duration::from_secs(3600)));
        for _ in 0..3 {
            tracing.tracer.start("span").end();
        }
        assert!(tracing.provider.force_flush().is_err());
        assert_eq!(tracing.export_failed(), 3);
        assert_eq!(tracing.dropped(), 0);
    }

    #[test]
    fn resource_names_the_service() {
        let no_env = |_: &str| None;
        let resource = resource("myapp", &no_env);
        assert_eq!(resource.get(&Key::from_static_str("service.name")), Some("myapp".into()));
    }

    fn settings(vars: &[(&str, &str)]) -> Result<Option<Settings>, OtelError> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::read(&move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn tracing_is_on_only_when_an_exporter_is_configured() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        assert_eq!(settings(&[]).expect("valid"), None);
        assert_eq!(settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]).expect("valid"), None);
        assert_eq!(settings(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")]).expect("valid"), None);
        assert_eq!(settings(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]).expect("valid"), None);
        let on = settings(&[endpoint, ("OTEL_SDK_DISABLED", "false")]).expect("valid").expect("on");
        assert_eq!(on.protocol, Protocol::HttpProtobuf);
        assert_eq!(on.batch, batch(2048, 512, Duration::from_secs(5)));
        let traces_only =
            settings(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/v1/traces")]).expect("valid");
        assert!(traces_only.is_some());
        assert!(settings(&[("OTEL_TRACES_EXPORTER", "otlp")]).expect("valid").is_some());
        assert!(matches!(
            settings(&[endpoint, ("OTEL_TRACES_EXPORTER", "zipkin")]),
            Err(OtelError::Unsupported { .. })
        ));
    }

    #[test]
    fn protocol_and_batch_settings_are_read() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317");
        let grpc = settings(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).expect("valid").expect("on");
        assert_eq!(grpc.protocol, Protocol::Grpc);
        let overridden = settings(&[
            endpoint,
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
        ]);
        assert_eq!(overridden.expect("valid").expect("on").protocol, Protocol::HttpProtobuf);
        let json = settings(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]);
        assert!(matches!(json, Err(OtelError::Unsupported { var: "OTEL_EXPORTER_OTLP_PROTOCOL", .. })));

        let tuned = settings(&[
            endpoint,
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "500"),
            ("OTEL_BSP_SCHEDULE_DELAY", "0"),
        ]);
        assert_eq!(tuned.expect("valid").expect("on").batch, batch(100, 100, Duration::ZERO));
        for (var, value) in [
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
            ("OTEL_BSP_SCHEDULE_DELAY", "soon"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "-1"),
        ] {
            let error = settings(&[endpoint, (var, value)]).expect_err("invalid");
            assert!(error.to_string().contains(var), "{error}");
        }
    }

    #[test]
    fn grpc_exporter_builds_outside_any_runtime() {
        let (exporter, executor) = otlp_exporter(Protocol::Grpc).expect("gRPC exporter");
        assert!(matches!(executor, Executor::Tokio(_)));
        drop(exporter);
        drop(executor);
        let (_exporter, executor) = otlp_exporter(Protocol::HttpProtobuf).expect("HTTP exporter");
        assert!(matches!(executor, Executor::Plain));
    }

    /// `cargo test --release -p wharf-server otel::tests::span_overhead -- --ignored --nocapture`
    #[test]
    #[ignore = "benchmark: prints the cost of one request span"]
    fn span_overhead() {
        let exporter = InMemorySpanExporter::default();
        let tracing = start(exporter.clone(), batch(1 << 20, 512, Duration::from_millis(100)));
        let parts = request(
            "GET",
            "/items/42?x=1",
            &[("host", "bench.example:8000"), ("user-agent", "bench/1.0"), ("traceparent", INCOMING)],
        );
        let rounds = 200_000;
        let started = Instant::now();
        for _ in 0..rounds {
            let mut span = tracing.start(&parts, "http", peer(), local(), false);
            span.queued(Duration::from_micros(3));
            std::hint::black_box(span.traceparent());
            span.finish(200, 128, true);
        }
        let per_span = started.elapsed() / rounds;
        println!("request span start + queued + traceparent + finish: {} ns/op", per_span.as_nanos());
        println!("dropped: {}", tracing.dropped());
        exporter.reset();
    }
}
