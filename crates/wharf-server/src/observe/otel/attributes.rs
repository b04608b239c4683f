//! A request span's name, attributes and status (HTTP server semantic conventions, stable since
//! 1.23), derived from its record on the export thread.

use std::str::FromStr;

use http::uri::Authority;
use http::{Method, Version};

use super::span::SpanRecord;
use crate::bridge::Client;

/// An attribute value, borrowed where it can be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Val<'a> {
    Str(&'a str),
    Int(i64),
    Double(f64),
}

/// `error.type` and the status description of a span that failed; `None` for the others.
pub(super) fn error(record: &SpanRecord) -> Option<(String, &'static str)> {
    if !record.completed {
        Some(("wharf.response_incomplete".to_owned(), "the response body was not sent completely"))
    } else if record.status >= 500 {
        // Semantic conventions: the status code is the error type, the description stays empty.
        Some((record.status.to_string(), ""))
    } else {
        None
    }
}

/// The span name: the method, or `HTTP` for one the conventions do not know.
pub(super) fn name(record: &SpanRecord) -> &'static str {
    known_method(&record.method).unwrap_or("HTTP")
}

/// Calls `emit` with each attribute, in the order the spans have always had them.
pub(super) fn for_each(record: &SpanRecord, error_type: Option<&str>, mut emit: impl FnMut(&str, Val<'_>)) {
    match known_method(&record.method) {
        Some(method) => emit("http.request.method", Val::Str(method)),
        None => {
            emit("http.request.method", Val::Str("_OTHER"));
            emit("http.request.method_original", Val::Str(record.method.as_str()));
        }
    }
    emit("url.path", Val::Str(&record.path));
    if let Some(query) = &record.query {
        emit("url.query", Val::Str(query));
    }
    emit("url.scheme", Val::Str(record.client.scheme()));
    if let Some((address, port)) = server_address(record.host.as_deref(), &record.client) {
        emit("server.address", Val::Str(&address));
        emit("server.port", Val::Int(i64::from(port)));
    }
    if let Some(address) = record.client.address() {
        emit("client.address", Val::Str(&address));
    }
    if let Some(version) = protocol_version(record.version) {
        emit("network.protocol.version", Val::Str(version));
    }
    if let Some(agent) = &record.user_agent {
        emit("user_agent.original", Val::Str(agent));
    }
    emit("http.response.status_code", Val::Int(i64::from(record.status)));
    emit("http.response.body.size", Val::Int(i64::try_from(record.bytes_sent).unwrap_or(i64::MAX)));
    if let Some(error_type) = error_type {
        emit("error.type", Val::Str(error_type));
    }
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

/// The host the client addressed (a trusted proxy's forwarded host, else `host`: the absolute
/// URI's authority or `Host`), with the scheme's default port when it names none; the listening
/// socket when the request names no host.
pub(super) fn server_address(host: Option<&str>, client: &Client) -> Option<(String, u16)> {
    let (scheme, local) = (client.scheme(), client.peer.local);
    let parse = |host: &str| Authority::from_str(host).ok();
    let named = client.forwarded_host().and_then(parse).or_else(|| host.and_then(parse));
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
