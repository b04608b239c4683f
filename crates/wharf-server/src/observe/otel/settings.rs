//! Whether and how spans are exported, from the standard `OTEL_*` environment variables.

use std::time::Duration;

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::resource::{EnvResourceDetector, ResourceDetector as _};

use super::OtelError;

/// `service.name`: `OTEL_SERVICE_NAME`, else `service.name` in `OTEL_RESOURCE_ATTRIBUTES`, else
/// the default given (the SDK's own default, `unknown_service`, says nothing useful).
pub(super) fn resource(service_name_default: &str, env: &dyn Fn(&str) -> Option<String>) -> Resource {
    let builder = Resource::builder();
    let named = env("OTEL_SERVICE_NAME").is_some_and(|v| !v.trim().is_empty())
        || EnvResourceDetector::new().detect().get(&opentelemetry::Key::from_static_str("service.name")).is_some();
    if named { builder.build() } else { builder.with_service_name(service_name_default.to_owned()).build() }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    HttpProtobuf,
    Grpc,
}

/// What decides whether and how spans are exported (the rest is read by the exporter and SDK).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Settings {
    pub(super) protocol: Protocol,
    pub(super) batch: BatchSettings,
}

/// The batch span processor variables (`OTEL_BSP_*`), with the specification's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BatchSettings {
    pub(super) max_queue_size: usize,
    pub(super) max_export_batch_size: usize,
    pub(super) schedule_delay: Duration,
}

impl Settings {
    /// `None` when tracing is off.
    pub(super) fn read(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Settings>, OtelError> {
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
