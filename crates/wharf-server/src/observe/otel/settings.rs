//! Whether and how spans are exported, from the standard `OTEL_*` environment variables (the
//! OpenTelemetry SDK environment specification; a `..._TRACES_...` variable wins over the general
//! one).

use std::path::PathBuf;
use std::time::Duration;

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::resource::{EnvResourceDetector, ResourceDetector as _};

use super::OtelError;
use super::sampler::Sampler;

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

/// What decides whether and how spans are exported (the resource is read by the SDK).
#[derive(Debug, PartialEq)]
pub(super) struct Settings {
    pub(super) sampler: Sampler,
    pub(super) batch: BatchSettings,
    pub(super) exporter: ExporterSettings,
}

/// The batch span processor variables (`OTEL_BSP_*`), with the specification's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BatchSettings {
    pub(super) max_queue_size: usize,
    pub(super) max_export_batch_size: usize,
    pub(super) schedule_delay: Duration,
}

/// Where and how batches are sent. The endpoint and the files are checked by the export
/// thread when it connects: a wrong one is a logged, counted export failure, never a refused
/// start (the app serves without its traces rather than not at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ExporterSettings {
    pub(super) protocol: Protocol,
    /// The URL requests go to: for `http/protobuf` with `/v1/traces` appended to a general
    /// endpoint's path, for `grpc` the collector's address (its path is not used).
    pub(super) endpoint: String,
    /// `OTEL_EXPORTER_OTLP_HEADERS` with `..._TRACES_HEADERS` taking precedence per key,
    /// percent-decoded.
    pub(super) headers: Vec<(String, String)>,
    pub(super) timeout: Duration,
    /// PEM file of the CA certificates that verify the collector instead of the system's roots.
    pub(super) certificate: Option<PathBuf>,
    /// PEM files of the client certificate chain and its private key (mutual TLS).
    pub(super) client_certificate: Option<PathBuf>,
    pub(super) client_key: Option<PathBuf>,
}

const TRACES_PATH: &str = "v1/traces";

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
        let max_queue_size = usize::try_from(number(&set, "OTEL_BSP_MAX_QUEUE_SIZE", 2048, 1)?).unwrap_or(usize::MAX);
        let max_export_batch_size = usize::try_from(number(&set, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, 1)?)
            .unwrap_or(usize::MAX)
            .min(max_queue_size);
        let schedule_delay = Duration::from_millis(number(&set, "OTEL_BSP_SCHEDULE_DELAY", 5000, 0)?);
        Ok(Some(Settings {
            sampler: Sampler::read(&set)?,
            batch: BatchSettings { max_queue_size, max_export_batch_size, schedule_delay },
            exporter: ExporterSettings::read(&set)?,
        }))
    }
}

impl ExporterSettings {
    fn read(set: &dyn Fn(&str) -> Option<String>) -> Result<ExporterSettings, OtelError> {
        let (var, value) = signal(set, PROTOCOL);
        let protocol = match value.as_deref().map(str::trim) {
            None | Some("http/protobuf") => Protocol::HttpProtobuf,
            Some("grpc") => Protocol::Grpc,
            Some(_) => {
                let value = value.unwrap_or_default();
                return Err(OtelError::Unsupported { var, value, expected: "http/protobuf or grpc" });
            }
        };
        if let (var, Some(value)) = signal(set, COMPRESSION)
            && value.trim() != "none"
        {
            return Err(OtelError::Unsupported { var, value, expected: "none (wharf sends uncompressed batches)" });
        }
        let endpoint = match (set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), set("OTEL_EXPORTER_OTLP_ENDPOINT"), protocol) {
            (Some(traces), _, _) => traces.trim().to_owned(),
            (None, Some(general), Protocol::HttpProtobuf) => {
                let general = general.trim();
                if general.ends_with('/') {
                    format!("{general}{TRACES_PATH}")
                } else {
                    format!("{general}/{TRACES_PATH}")
                }
            }
            (None, Some(general), Protocol::Grpc) => general.trim().to_owned(),
            (None, None, Protocol::HttpProtobuf) => format!("http://localhost:4318/{TRACES_PATH}"),
            (None, None, Protocol::Grpc) => "http://localhost:4317".to_owned(),
        };
        let mut headers = Vec::new();
        for var in ["OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"] {
            for (name, value) in parse_headers(var, set(var).as_deref().unwrap_or_default())? {
                headers.retain(|(n, _): &(String, String)| !n.eq_ignore_ascii_case(&name));
                headers.push((name, value));
            }
        }
        let timeout = match signal(set, TIMEOUT) {
            (_, None) => Duration::from_secs(10),
            (var, Some(value)) => match value.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => return Err(OtelError::InvalidNumber { var, value, min: 1 }),
            },
        };
        let path = |name: Var| signal(set, name).1.map(|v| PathBuf::from(v.trim()));
        let (client_certificate, client_key) = (path(CLIENT_CERTIFICATE), path(CLIENT_KEY));
        if client_certificate.is_some() != client_key.is_some() {
            return Err(OtelError::ClientPair);
        }
        Ok(ExporterSettings {
            protocol,
            endpoint,
            headers,
            timeout,
            certificate: path(CERTIFICATE),
            client_certificate,
            client_key,
        })
    }
}

/// `OTEL_EXPORTER_OTLP_TRACES_<NAME>` if set, else `OTEL_EXPORTER_OTLP_<NAME>`: the variable
/// that applies and its value.
fn signal(set: &dyn Fn(&str) -> Option<String>, name: Var) -> (&'static str, Option<String>) {
    let (traces, general) = name;
    match set(traces) {
        Some(value) => (traces, Some(value)),
        None => (general, set(general)),
    }
}

/// A setting's signal-specific and general variable.
type Var = (&'static str, &'static str);

const PROTOCOL: Var = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL");
const COMPRESSION: Var = ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION");
const TIMEOUT: Var = ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT");
const CERTIFICATE: Var = ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "OTEL_EXPORTER_OTLP_CERTIFICATE");
const CLIENT_CERTIFICATE: Var =
    ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE");
const CLIENT_KEY: Var = ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "OTEL_EXPORTER_OTLP_CLIENT_KEY");

/// `key1=value1,key2=value2` (W3C baggage form, values percent-encoded), as the specification
/// gives `OTEL_EXPORTER_OTLP_HEADERS`. A pair without `=` or a name that is not an HTTP header
/// name is refused: sending a request without its auth header would fail every export.
fn parse_headers(var: &'static str, value: &str) -> Result<Vec<(String, String)>, OtelError> {
    let mut headers = Vec::new();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let invalid = |why: &'static str| OtelError::InvalidHeaders { var, pair: pair.to_owned(), why };
        let (name, value) = pair.split_once('=').ok_or_else(|| invalid("expected key=value"))?;
        let name = percent_decode(name.trim()).ok_or_else(|| invalid("bad percent-encoding"))?;
        let value = percent_decode(value.trim()).ok_or_else(|| invalid("bad percent-encoding"))?;
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(invalid("not a valid header name"));
        }
        if http::HeaderValue::from_str(&value).is_err() {
            return Err(invalid("not a valid header value"));
        }
        headers.push((name, value));
    }
    Ok(headers)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

pub(super) fn number(
    set: &dyn Fn(&str) -> Option<String>,
    var: &'static str,
    default: u64,
    min: u64,
) -> Result<u64, OtelError> {
    let Some(value) = set(var) else {
        return Ok(default);
    };
    match value.trim().parse::<u64>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(OtelError::InvalidNumber { var, value, min }),
    }
}
