//! Request tracing: one OpenTelemetry SERVER span per request, exported over OTLP, configured by
//! the standard `OTEL_*` environment variables.
//!
//! The request path fills a fixed-shape record (`span`); a bounded queue takes it to an export
//! thread of our own (`export`), which derives the attributes (`attributes`), encodes OTLP
//! protobuf directly (`encode`) and sends batches over HTTP or gRPC, with TLS when the endpoint
//! is `https://` (`transport`). When the collector is slow or gone the queue fills and further
//! spans are dropped and counted, so a request never waits for the collector and memory stays
//! bounded. With the OpenTelemetry SDK's span objects on the request path and its exporter,
//! tracing every request cost about 30 % of hello's throughput.

mod attributes;
mod encode;
mod export;
mod sampler;
mod settings;
mod span;
#[cfg(test)]
mod tests;
mod transport;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::Resource;

use self::encode::Encoder;
use self::export::{Collector, Queue, Sink};
use self::sampler::Sampler;
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
    #[error("invalid OTEL_TRACES_SAMPLER_ARG={value:?}: expected a ratio from 0 to 1")]
    InvalidRatio { value: String },
    #[error("invalid {var}: {pair:?}: {why} (the form is key1=value1,key2=value2, values percent-encoded)")]
    InvalidHeaders { var: &'static str, pair: String, why: &'static str },
    #[error(
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY go together: set both (mutual TLS) or neither"
    )]
    ClientPair,
    #[error("cannot start the runtime of the span exporter: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot start the span export thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the span export thread exited while starting")]
    ThreadExited,
}

/// Request tracing for one worker process. Absent (`None` from [`Tracing::from_env`]) when off,
/// so a server without tracing pays one `Option` check per request.
pub(crate) struct Tracing {
    queue: Arc<Queue>,
    sampler: Sampler,
}

impl Tracing {
    /// Tracing as the standard environment configures it: on when `OTEL_SDK_DISABLED` is not
    /// `true` and an OTLP endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT`,
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) or `OTEL_TRACES_EXPORTER=otlp` asks for the default
    /// one (see `settings` for the rest). `service_name_default` names the service when
    /// neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` does.
    ///
    /// Needs no tokio runtime: the export thread brings its own, so this may be called from
    /// anywhere, once per worker process.
    pub(crate) fn from_env(service_name_default: &str) -> Result<Option<Tracing>, OtelError> {
        let env = |name: &str| std::env::var(name).ok();
        let Some(settings) = Settings::read(&env)? else {
            return Ok(None);
        };
        let resource = resource(service_name_default, &env);
        let Settings { sampler, batch, exporter } = settings;
        Tracing::start_exporting(&resource, sampler, batch, move || Collector::new(&exporter)).map(Some)
    }

    fn start_exporting<S, F>(
        resource: &Resource,
        sampler: Sampler,
        batch: BatchSettings,
        make_sink: F,
    ) -> Result<Tracing, OtelError>
    where
        S: Sink,
        F: FnOnce() -> Result<S, OtelError> + Send + 'static,
    {
        let scope = InstrumentationScope::builder("wharf").with_version(env!("CARGO_PKG_VERSION")).build();
        let queue = Queue::start(Encoder::new(resource, &scope), batch, make_sink)?;
        Ok(Tracing { queue: Arc::new(queue), sampler })
    }

    /// Starts the SERVER span of a request from `client`, its client view (after trusted
    /// proxy headers), as the child of an incoming W3C `traceparent` (and `tracestate`) when it
    /// is valid.
    pub(crate) fn start(&self, parts: &http::request::Parts, client: &Client, capture_query: bool) -> RequestSpan {
        RequestSpan::start(&self.queue, &self.sampler, parts, client, capture_query)
    }

    /// Spans lost because the export queue was full (or export had stopped): the value of
    /// `wharf_otel_spans_dropped_total`.
    pub(crate) fn dropped(&self) -> u64 {
        self.queue.counters.dropped.load(Ordering::Relaxed)
    }

    /// Spans whose export failed (collector unreachable, refused, TLS or setup error): the
    /// value of `wharf_otel_spans_failed_total`.
    pub(crate) fn failed(&self) -> u64 {
        self.queue.counters.failed.load(Ordering::Relaxed)
    }

    /// Exports what is queued and stops the export thread. Blocks for at most 5 seconds (a
    /// hanging collector), so call it once requests are drained, off the I/O runtime.
    pub(crate) fn shutdown(&self) {
        if !self.queue.shutdown(SHUTDOWN_TIMEOUT) {
            tracing::warn!("the last spans were not exported within {SHUTDOWN_TIMEOUT:?} of shutdown");
        }
    }
}
