//! Sends encoded batches to the collector: OTLP/HTTP (`POST` of `application/x-protobuf`) or
//! OTLP/gRPC (the unary `TraceService/Export` call), over plain TCP for `http://` endpoints and
//! TLS (rustls) for `https://` ones, verifying the collector with the system's roots or
//! `OTEL_EXPORTER_OTLP_CERTIFICATE`, with an optional client certificate.
//!
//! gRPC is written out here rather than through tonic: one unary call whose message is already
//! encoded is a 5-byte frame and a `grpc-status` check, and hyper's HTTP/2 client is already in
//! use for it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut as _, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::settings::{ExporterSettings, Protocol};

const GRPC_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Why a batch did not reach the collector, as the one warning line says it.
#[derive(Debug, thiserror::Error)]
pub(super) enum SendError {
    #[error("cannot set up the OTLP exporter: {0}")]
    Setup(String),
    #[error("cannot reach the collector at {endpoint}: {error}")]
    Connect { endpoint: String, error: String },
    #[error("the collector at {endpoint} did not answer within {timeout:?} (OTEL_EXPORTER_OTLP_TIMEOUT)")]
    Timeout { endpoint: String, timeout: Duration },
    #[error("the collector at {endpoint} refused the spans: HTTP {status}")]
    Status { endpoint: String, status: StatusCode },
    #[error("the collector at {endpoint} refused the spans: gRPC status {code} {message}")]
    Grpc { endpoint: String, code: String, message: String },
}

pub(super) struct Transport {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    protocol: Protocol,
    uri: Uri,
    endpoint: String,
    headers: HeaderMap,
    timeout: Duration,
}

impl Transport {
    /// Reads the certificate files and checks the endpoint. Must run inside a tokio runtime.
    pub(super) fn new(settings: &ExporterSettings) -> Result<Transport, SendError> {
        let setup = |what: String| SendError::Setup(what);
        let endpoint = settings.endpoint.clone();
        let mut uri: Uri = endpoint.parse().map_err(|e| setup(format!("invalid endpoint {endpoint:?}: {e}")))?;
        match uri.scheme_str() {
            Some("http" | "https") if uri.host().is_some() => {}
            _ => {
                return Err(setup(format!(
                    "invalid endpoint {endpoint:?}: expected http://HOST:PORT or https://HOST:PORT"
                )));
            }
        }
        if settings.protocol == Protocol::Grpc {
            let mut parts = uri.into_parts();
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static(GRPC_PATH));
            uri = Uri::from_parts(parts).map_err(|e| setup(format!("invalid endpoint {endpoint:?}: {e}")))?;
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &settings.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| setup(format!("header {name:?}: {e}")))?;
            let value = HeaderValue::from_str(value).map_err(|e| setup(format!("header {name}: {e}")))?;
            headers.append(name, value);
        }
        let tls = tls_config(settings)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http();
        let connector = match settings.protocol {
            Protocol::HttpProtobuf => connector.enable_http1().build(),
            Protocol::Grpc => connector.enable_http2().build(),
        };
        let client =
            Client::builder(TokioExecutor::new()).http2_only(settings.protocol == Protocol::Grpc).build(connector);
        Ok(Transport { client, protocol: settings.protocol, uri, endpoint, headers, timeout: settings.timeout })
    }

    /// Sends one encoded `ExportTraceServiceRequest`.
    pub(super) async fn send(&self, message: Vec<u8>) -> Result<(), SendError> {
        match tokio::time::timeout(self.timeout, self.exchange(message)).await {
            Ok(result) => result,
            Err(_) => Err(SendError::Timeout { endpoint: self.endpoint.clone(), timeout: self.timeout }),
        }
    }

    async fn exchange(&self, message: Vec<u8>) -> Result<(), SendError> {
        let mut request = Request::builder().method(Method::POST).uri(self.uri.clone());
        if let Some(headers) = request.headers_mut() {
            headers.extend(self.headers.clone());
        }
        let body = match self.protocol {
            Protocol::HttpProtobuf => {
                request = request.header(header::CONTENT_TYPE, "application/x-protobuf");
                Bytes::from(message)
            }
            Protocol::Grpc => {
                request = request.header(header::CONTENT_TYPE, "application/grpc").header(header::TE, "trailers");
                // Length-prefixed message: not compressed, then the length (big endian).
                let mut framed = BytesMut::with_capacity(5 + message.len());
                framed.put_u8(0);
                framed.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
                framed.put_slice(&message);
                framed.freeze()
            }
        };
        let connect = |error: String| SendError::Connect { endpoint: self.endpoint.clone(), error };
        let request = request.body(Full::new(body)).map_err(|e| connect(e.to_string()))?;
        let response = self.client.request(request).await.map_err(|e| connect(error_chain(&e)))?;
        let status = response.status();
        let (parts, body) = response.into_parts();
        // Read to the end, so the connection is reused (and gRPC's trailers arrive).
        let collected = body.collect().await.map_err(|e| connect(error_chain(&e)))?;
        if !status.is_success() {
            return Err(SendError::Status { endpoint: self.endpoint.clone(), status });
        }
        if self.protocol == Protocol::Grpc {
            let trailers = collected.trailers().cloned().unwrap_or_default();
            // A trailers-only response carries the status in its headers.
            let field =
                |name: &str| trailers.get(name).or_else(|| parts.headers.get(name)).and_then(|v| v.to_str().ok());
            match field("grpc-status") {
                Some("0") => {}
                code => {
                    return Err(SendError::Grpc {
                        endpoint: self.endpoint.clone(),
                        code: code.unwrap_or("missing").to_owned(),
                        message: field("grpc-message").unwrap_or_default().to_owned(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// An error with its causes: hyper's own message alone ("client error (Connect)") does not
/// say that the certificate was the problem.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn tls_config(settings: &ExporterSettings) -> Result<rustls::ClientConfig, SendError> {
    let mut roots = rustls::RootCertStore::empty();
    match &settings.certificate {
        Some(path) => {
            for cert in pem_certificates(path, "OTEL_EXPORTER_OTLP_CERTIFICATE")? {
                roots
                    .add(cert)
                    .map_err(|e| SendError::Setup(format!("OTEL_EXPORTER_OTLP_CERTIFICATE {}: {e}", path.display())))?;
            }
        }
        None => {
            // Unreadable entries in the system store are skipped, as every TLS client does.
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SendError::Setup(format!("TLS: {e}")))?
        .with_root_certificates(roots);
    // ALPN is left to the connector, which sets what it enables.
    match (&settings.client_certificate, &settings.client_key) {
        (Some(cert), Some(key)) => {
            let chain = pem_certificates(cert, "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE")?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| SendError::Setup(format!("OTEL_EXPORTER_OTLP_CLIENT_KEY {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| SendError::Setup(format!("client certificate {}: {e}", cert.display())))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

fn pem_certificates(path: &Path, var: &str) -> Result<Vec<CertificateDer<'static>>, SendError> {
    let error = |e: &dyn std::fmt::Display| SendError::Setup(format!("{var} {}: {e}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(&e))?;
    if certs.is_empty() {
        return Err(error(&"no PEM certificate in the file"));
    }
    Ok(certs)
}
