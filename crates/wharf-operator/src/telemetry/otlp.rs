//! The OTLP span exporter, with TLS as the OpenTelemetry SDK environment specification sets it:
//! `https://` endpoints verified with the system's roots or `OTEL_EXPORTER_OTLP_CERTIFICATE`,
//! a client certificate from `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`/`_KEY` (each with a
//! `..._TRACES_...` variable that wins). The exporter itself reads the endpoint, headers and
//! timeout. Failed exports are counted and warned about at most once a minute.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use prometheus_client::metrics::counter::Counter;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Time between two warnings about failing exports.
const WARN_EVERY: Duration = Duration::from_secs(60);

static SPANS_FAILED: LazyLock<Counter> = LazyLock::new(Counter::default);

/// Spans whose export failed, for the operator's `/metrics`.
pub fn spans_failed() -> Counter {
    SPANS_FAILED.clone()
}

/// `OTEL_EXPORTER_OTLP_TRACES_<NAME>`, else `OTEL_EXPORTER_OTLP_<NAME>`, when set.
fn signal(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    env(&format!("OTEL_EXPORTER_OTLP_TRACES_{name}"))
        .or_else(|| env(&format!("OTEL_EXPORTER_OTLP_{name}")))
        .filter(|v| !v.trim().is_empty())
}

/// The TLS files named by the environment.
#[derive(Debug, Default, PartialEq, Eq)]
struct TlsFiles {
    certificate: Option<PathBuf>,
    client: Option<(PathBuf, PathBuf)>,
}

impl TlsFiles {
    fn read(env: &dyn Fn(&str) -> Option<String>) -> Result<TlsFiles, String> {
        let path = |name| signal(env, name).map(|v| PathBuf::from(v.trim()));
        let client = match (path("CLIENT_CERTIFICATE"), path("CLIENT_KEY")) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(
                    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY \
                            go together: set both (mutual TLS) or neither"
                        .to_owned(),
                );
            }
        };
        Ok(TlsFiles {
            certificate: path("CERTIFICATE"),
            client,
        })
    }
}

fn read(path: &PathBuf, var: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{var} {}: {e}", path.display()))
}

/// The rustls configuration of the HTTP exporter's client.
fn rustls_config(files: &TlsFiles) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match &files.certificate {
        Some(path) => {
            let pem = read(path, "OTEL_EXPORTER_OTLP_CERTIFICATE")?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| {
                    format!("OTEL_EXPORTER_OTLP_CERTIFICATE {}: {e}", path.display())
                })?;
                roots.add(cert).map_err(|e| {
                    format!("OTEL_EXPORTER_OTLP_CERTIFICATE {}: {e}", path.display())
                })?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "OTEL_EXPORTER_OTLP_CERTIFICATE {}: no PEM certificate in the file",
                    path.display()
                ));
            }
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS: {e}"))?
    .with_root_certificates(roots);
    match &files.client {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(&read(
                cert,
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            )?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                format!(
                    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE {}: {e}",
                    cert.display()
                )
            })?;
            let key =
                PrivateKeyDer::from_pem_slice(&read(key, "OTEL_EXPORTER_OTLP_CLIENT_KEY")?)
                    .map_err(|e| format!("OTEL_EXPORTER_OTLP_CLIENT_KEY {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate {}: {e}", cert.display()))
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

/// The gRPC exporter's TLS settings.
fn tonic_config(files: &TlsFiles) -> Result<tonic::transport::ClientTlsConfig, String> {
    let mut config = tonic::transport::ClientTlsConfig::new();
    config = match &files.certificate {
        Some(path) => config.ca_certificate(tonic::transport::Certificate::from_pem(read(
            path,
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
        )?)),
        None => config.with_native_roots(),
    };
    if let Some((cert, key)) = &files.client {
        let identity = tonic::transport::Identity::from_pem(
            read(cert, "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE")?,
            read(key, "OTEL_EXPORTER_OTLP_CLIENT_KEY")?,
        );
        config = config.identity(identity);
    }
    Ok(config)
}

/// The exporter the environment asks for; `Err` says why tracing stays off (the operator runs
/// on without it).
pub(super) fn exporter(env: &dyn Fn(&str) -> Option<String>) -> Result<CountingExporter, String> {
    let files = TlsFiles::read(env)?;
    let https = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .is_some_and(|e| e.trim().starts_with("https://"));
    let protocol = signal(env, "PROTOCOL").unwrap_or_else(|| "http/protobuf".to_owned());
    let exporter = match protocol.trim() {
        "grpc" => {
            let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
            if https {
                builder = builder.with_tls_config(tonic_config(&files)?);
            }
            builder.build()
        }
        "http/protobuf" => {
            let tls = rustls_config(&files)?;
            // The blocking client runs a runtime of its own, which must not be created (or
            // later dropped) on one of tokio's threads.
            let client = std::thread::spawn(move || {
                reqwest::blocking::Client::builder()
                    .tls_backend_preconfigured(tls)
                    .build()
            })
            .join()
            .map_err(|_| "the OTLP HTTP client could not be built".to_owned())?
            .map_err(|e| format!("the OTLP HTTP client: {e}"))?;
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(client)
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .build()
        }
        other => {
            return Err(format!(
                "unsupported OTEL_EXPORTER_OTLP_PROTOCOL {other:?}: use http/protobuf or grpc"
            ));
        }
    }
    .map_err(|e| e.to_string())?;
    Ok(CountingExporter {
        inner: exporter,
        failing: Mutex::new(None),
        failed: AtomicU64::new(0),
    })
}

/// The OTLP exporter, counting the spans of failed exports and warning about them once a
/// minute at most (the SDK would only log them through its own internal logs).
#[derive(Debug)]
pub(super) struct CountingExporter {
    inner: opentelemetry_otlp::SpanExporter,
    /// While exports fail: when the last warning was logged.
    failing: Mutex<Option<Instant>>,
    /// Spans lost since the last warning.
    failed: AtomicU64,
}

impl CountingExporter {
    fn failed(&self, count: u64, error: &dyn std::fmt::Display) {
        SPANS_FAILED.inc_by(count);
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        match *failing {
            Some(warned) if warned.elapsed() < WARN_EVERY => {
                self.failed.fetch_add(count, Ordering::Relaxed);
            }
            Some(_) => {
                let lost = self.failed.swap(0, Ordering::Relaxed) + count;
                tracing::warn!(
                    "exporting spans still fails, {lost} spans lost in the last minute: {error}"
                );
                *failing = Some(Instant::now());
            }
            None => {
                tracing::warn!(
                    "exporting spans failed (warned again at most once a minute while it fails; lost spans are \
                     counted in wharf_operator_otel_spans_failed_total): {error}"
                );
                *failing = Some(Instant::now());
            }
        }
    }
}

impl SpanExporter for CountingExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let count = batch.len() as u64;
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => {
                let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
                if failing.take().is_some() {
                    self.failed.store(0, Ordering::Relaxed);
                    tracing::info!("exporting spans works again");
                }
            }
            Err(error) => self.failed(count, error),
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use opentelemetry::trace::{SpanContext, SpanKind, Status, TraceFlags, TraceState};
    use opentelemetry::{InstrumentationScope, trace::SpanId, trace::TraceId};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};

    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn tls_files_follow_the_sdk_environment_spec() {
        let files = TlsFiles::read(&env(&[
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/general.pem"),
            ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/traces.pem"),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/c.pem"),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/c.key"),
        ]))
        .expect("valid");
        assert_eq!(files.certificate, Some(PathBuf::from("/traces.pem")));
        assert_eq!(
            files.client,
            Some((PathBuf::from("/c.pem"), PathBuf::from("/c.key")))
        );
        let half = TlsFiles::read(&env(&[("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/c.key")]));
        assert!(
            half.expect_err("incomplete")
                .contains("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE")
        );
    }

    #[test]
    fn unreadable_files_and_unknown_protocols_say_why_tracing_is_off() {
        for (vars, expected) in [
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318"),
                    ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent.pem"),
                ],
                "OTEL_EXPORTER_OTLP_CERTIFICATE /nonexistent.pem",
            ),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                    ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent.pem"),
                ],
                "OTEL_EXPORTER_OTLP_CERTIFICATE /nonexistent.pem",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
                "http/json",
            ),
        ] {
            let error = exporter(&env(&vars)).expect_err("no exporter");
            assert!(error.contains(expected), "{error}");
        }
    }

    fn span() -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(7),
                SpanId::from(9),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: "reconcile".into(),
            start_time: std::time::SystemTime::now(),
            end_time: std::time::SystemTime::now(),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("test").build(),
        }
    }

    /// A collector that is not TLS at all: the handshake fails, on both protocols, and the spans
    /// are counted instead of an error ending the operator.
    #[tokio::test]
    async fn a_failed_tls_handshake_is_counted() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(16) {
                drop(stream);
            }
        });
        for protocol in ["http/protobuf", "grpc"] {
            let endpoint = format!("https://127.0.0.1:{port}");
            let vars = [
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "3000"),
            ];
            let exporter = exporter(&env(&vars)).expect("an exporter");
            let before = SPANS_FAILED.get();
            let batch = vec![span(), span()];
            let result = if protocol == "grpc" {
                exporter.export(batch).await
            } else {
                // The blocking HTTP client must not run on tokio's thread.
                tokio::task::spawn_blocking(move || {
                    futures::executor::block_on(exporter.export(batch))
                })
                .await
                .expect("export thread")
            };
            assert!(result.is_err(), "{protocol}: no TLS collector there");
            assert!(SPANS_FAILED.get() >= before + 2, "{protocol}");
        }
    }
}
