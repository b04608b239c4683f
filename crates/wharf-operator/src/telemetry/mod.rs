//! Logging and tracing setup, in one place. Spans go to an OTLP collector when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set and
//! `OTEL_SDK_DISABLED` is not `true`; sampler, resource and protocol come from the other standard
//! `OTEL_*` variables, TLS from `otlp`.

mod otlp;

use std::io::IsTerminal as _;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::cli::LogFormat;
use crate::error::Error;

/// Flushes pending spans when dropped at the end of `main`.
pub struct Guard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("flushing traces failed: {error}");
        }
    }
}

/// Spans lost because their export failed: `wharf_operator_otel_spans_failed_total`.
pub use otlp::spans_failed;

pub fn init(format: LogFormat, level: &str) -> Result<Guard, Error> {
    let filter = EnvFilter::try_new(level)
        .map_err(|e| Error::Telemetry(format!("invalid --log-level {level:?}: {e}")))?;
    let fmt = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stdout().is_terminal())
            .boxed(),
    };
    let (provider, tracing_off) = match otlp_provider() {
        Ok(provider) => (provider, None),
        Err(reason) => (None, Some(reason)),
    };
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("wharf-operator")));
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| Error::Telemetry(e.to_string()))?;
    if let Some(reason) = tracing_off {
        tracing::warn!("tracing is off: {reason}");
    }
    Ok(Guard { provider })
}

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
}

/// The tracer provider the environment asks for; `Err` says why there is none although one was
/// asked for (logged once logging is set up: the operator runs on without tracing).
fn otlp_provider() -> Result<Option<SdkTracerProvider>, String> {
    let disabled =
        std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let configured =
        env_set("OTEL_EXPORTER_OTLP_ENDPOINT") || env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    if disabled || !configured {
        return Ok(None);
    }
    let exporter = otlp::exporter(&|name| std::env::var(name).ok())?;
    let mut resource = Resource::builder();
    if !env_set("OTEL_SERVICE_NAME") {
        resource = resource.with_service_name("wharf-operator");
    }
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    ))
}
