//! Request tracing: one OpenTelemetry SERVER span per request, exported over OTLP, configured by
//! the standard `OTEL_*` environment variables.
//!
//! Finished spans leave the request path through a bounded queue drained by an export thread of
//! our own ([`QueueProcessor`]). When the collector is slow or gone the queue fills and further
//! spans are dropped and counted, so a request never waits for the collector and memory stays
//! bounded. The SDK's `BatchSpanProcessor` behaves the same way but keeps its drop count private,
//! and the count is what `wharf_otel_spans_dropped_total` reports.

mod export;
mod settings;
mod span;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkError;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanExporter};

use self::export::{Counters, Executor, QueueProcessor, otlp_exporter};
use self::settings::{BatchSettings, Settings, resource};
pub(crate) use self::span::RequestSpan;
use crate::bridge::Client;

/// How long [`Tracing::shutdown`] waits for the last spans to reach the collector.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub(crate) enum OtelError {
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
pub(crate) struct Tracing {
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
    pub(crate) fn from_env(service_name_default: &str) -> Result<Option<Tracing>, OtelError> {
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

    /// Starts the SERVER span of a request from `client`, its client view (after trusted
    /// proxy headers), as the child of an incoming W3C `traceparent` (and `tracestate`) when it
    /// is valid.
    pub(crate) fn start(&self, parts: &http::request::Parts, client: &Client, capture_query: bool) -> RequestSpan {
        RequestSpan::start(&self.tracer, parts, client, capture_query)
    }

    /// Spans lost because the export queue was full (or export had stopped): the value of
    /// `wharf_otel_spans_dropped_total`.
    pub(crate) fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Spans that reached the exporter but that the collector did not accept (a failed export).
    #[cfg(test)]
    pub(crate) fn export_failed(&self) -> u64 {
        self.counters.export_failed.load(Ordering::Relaxed)
    }

    /// Exports what is queued and stops the export thread. Blocks for at most 5 seconds (a
    /// hanging collector), so call it once requests are drained, off the I/O runtime.
    pub(crate) fn shutdown(&self) {
        match self.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
            Ok(()) | Err(OTelSdkError::AlreadyShutdown) => {}
            Err(error) => tracing::warn!("flushing spans at shutdown failed: {error}"),
        }
    }
}
