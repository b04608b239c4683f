//! The SERVER span of one request: its attributes (HTTP server semantic conventions, from the
//! request's client view) and its end.

use std::str::FromStr;
use std::time::Duration;

use http::uri::Authority;
use http::{Method, Version, header};
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracer;

use crate::bridge::{Client, target};

/// The SERVER span of one request. Moves with the request from the I/O thread to a Python
/// thread and back; ends when [`RequestSpan::finish`] is called (or, without a status, when
/// dropped).
pub(crate) struct RequestSpan {
    pub(super) span: opentelemetry_sdk::trace::Span,
}

const _: () = {
    const fn send<T: Send>() {}
    send::<RequestSpan>();
};

impl RequestSpan {
    pub(super) fn start(
        tracer: &SdkTracer,
        parts: &http::request::Parts,
        client: &Client,
        capture_query: bool,
    ) -> RequestSpan {
        let parent = if parts.headers.get(TRACEPARENT).is_some_and(|v| well_formed_traceparent(v.as_bytes())) {
            TraceContextPropagator::new().extract(&HeaderExtractor(&parts.headers))
        } else {
            Context::new()
        };
        let (name, attributes) = request_attributes(parts, client, capture_query);
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(tracer, &parent);
        RequestSpan { span }
    }

    /// W3C `traceparent` of this span: what the application must continue from.
    pub(crate) fn traceparent(&self) -> String {
        let context = self.span.span_context();
        format!("00-{:032x}-{:016x}-{:02x}", context.trace_id(), context.span_id(), context.trace_flags().to_u8())
    }

    /// W3C `tracestate` carried over from the incoming request, if it had one.
    #[cfg(test)]
    pub(crate) fn tracestate(&self) -> Option<String> {
        let state = self.span.span_context().trace_state().header();
        (!state.is_empty()).then_some(state)
    }

    /// Records that a Python thread took the request after `wait` in the queue: an event
    /// `wharf.python_thread_acquired` with `wharf.queue.wait` in seconds, at the moment the
    /// thread took it. An event rather than a child span keeps one span per request.
    pub(crate) fn queued(&mut self, wait: Duration) {
        self.span
            .add_event("wharf.python_thread_acquired", vec![KeyValue::new("wharf.queue.wait", wait.as_secs_f64())]);
    }

    /// Ends the span once the response is done: `completed` is false when the body was cut
    /// short (client gone, application failed while streaming).
    pub(crate) fn finish(mut self, status: u16, bytes_sent: u64, completed: bool) {
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
pub(super) fn well_formed_traceparent(value: &[u8]) -> bool {
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
    client: &Client,
    capture_query: bool,
) -> (&'static str, Vec<KeyValue>) {
    let scheme = client.scheme();
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
    attributes.push(KeyValue::new("url.path", target::display(parts.uri.path()).into_owned()));
    if capture_query && let Some(query) = parts.uri.query() {
        attributes.push(KeyValue::new("url.query", target::display(query).into_owned()));
    }
    attributes.push(KeyValue::new("url.scheme", scheme));
    if let Some((address, port)) = server_address(parts, client) {
        attributes.push(KeyValue::new("server.address", address));
        attributes.push(KeyValue::new("server.port", i64::from(port)));
    }
    if let Some(address) = client.address() {
        attributes.push(KeyValue::new("client.address", address));
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

/// The host the client addressed (a trusted proxy's forwarded host, the absolute URI, then
/// `Host`), with the scheme's default port when it names none; the listening socket when the
/// request names no host.
pub(super) fn server_address(parts: &http::request::Parts, client: &Client) -> Option<(String, u16)> {
    let (scheme, local) = (client.scheme(), client.peer.local);
    let named = client.forwarded_host().and_then(|host| Authority::from_str(host).ok()).or_else(|| {
        parts.uri.authority().cloned().or_else(|| {
            let host = parts.headers.get(header::HOST)?.to_str().ok()?;
            Authority::from_str(host).ok()
        })
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

pub(super) fn protocol_version(version: Version) -> Option<&'static str> {
    match version {
        Version::HTTP_09 => Some("0.9"),
        Version::HTTP_10 => Some("1.0"),
        Version::HTTP_11 => Some("1.1"),
        Version::HTTP_2 => Some("2"),
        Version::HTTP_3 => Some("3"),
        _ => None,
    }
}
