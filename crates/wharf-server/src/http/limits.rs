//! Request checks made before a request may reach the app: size limits and the framing rules
//! that keep request smuggling out. (Header count and head size are enforced by hyper's
//! parser itself, configured in `server.rs`.)

use http::header::{self, HeaderMap};
use http::{StatusCode, Version};

use crate::bridge::target;

#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) request_line: usize,
    pub(crate) body: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub(crate) status: StatusCode,
    pub(crate) reason: &'static str,
}

fn reject(status: StatusCode, reason: &'static str) -> Result<(), Rejection> {
    Err(Rejection { status, reason })
}

/// Size of the request target as the client sent it (raw high bytes arrive escaped, see
/// `bridge::target`).
fn target_len(uri: &http::Uri) -> usize {
    uri.path_and_query().map_or(uri.path().len(), |pq| target::raw(pq.as_str()).len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.scheme_str().map_or(0, |s| s.len() + 3)
}

pub(crate) fn check(parts: &http::request::Parts, limits: &Limits) -> Result<(), Rejection> {
    let headers = &parts.headers;
    // Method, target and version, with their two separating spaces.
    let line = parts.method.as_str().len() + target_len(&parts.uri) + 10;
    if line > limits.request_line {
        return reject(StatusCode::URI_TOO_LONG, "request line too long");
    }
    if parts.method == http::Method::CONNECT {
        // A tunnel is a proxy's job; an app that answered 2xx would leave hyper expecting to
        // switch the connection to raw bytes, and the client with an empty reply. (400, not
        // 405: a 405 must list the methods the resource allows, which only the app knows.)
        return reject(StatusCode::BAD_REQUEST, "CONNECT is not supported: wharf is not a proxy");
    }
    check_target_form(parts)?;
    check_singletons(headers)?;
    let hosts = headers.get_all(header::HOST).iter().count();
    if hosts > 1 || (hosts == 0 && parts.version == Version::HTTP_11) {
        // RFC 9112 §3.2: exactly one Host in HTTP/1.1 requests.
        return reject(StatusCode::BAD_REQUEST, "missing or repeated Host header");
    }
    check_framing(headers)?;
    if limits.body > 0
        && let Some(len) = content_length(headers)
        && len > limits.body
    {
        return reject(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    }
    Ok(())
}

/// Ambiguous body framing is how requests are smuggled past proxies: refuse what reaches us.
/// (hyper itself already frames a request carrying both Transfer-Encoding and Content-Length
/// by Transfer-Encoding alone and closes the connection after it, per RFC 9112 §6.1, and
/// merges identical repeated Content-Length values, per RFC 9110 §8.6; conflicting ones it
/// rejects with 400.)
/// RFC 9112 §3.2: the asterisk-form (`*`) is for OPTIONS only and the authority-form
/// (`host:port`) for CONNECT only (refused above); anything else would reach the app with a
/// path it never asked to handle.
fn check_target_form(parts: &http::request::Parts) -> Result<(), Rejection> {
    let uri = &parts.uri;
    if *uri == "*" && parts.method != http::Method::OPTIONS {
        return reject(StatusCode::BAD_REQUEST, "the target * is only allowed with OPTIONS");
    }
    if uri.scheme().is_none() && uri.authority().is_some() {
        return reject(StatusCode::BAD_REQUEST, "a host:port target is only allowed with CONNECT");
    }
    Ok(())
}

/// Fields that hold one value (RFC 9110 defines them without list syntax): sent twice, joining
/// them with a comma would give the app a value neither sender meant, and a proxy in front may
/// have used the other one. Host and Content-Length have their own checks.
const SINGLETONS: [header::HeaderName; 13] = [
    header::CONTENT_TYPE,
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::RANGE,
    header::IF_RANGE,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
    header::MAX_FORWARDS,
    header::CONTENT_LOCATION,
    header::CONTENT_RANGE,
    header::FROM,
    header::REFERER,
    header::USER_AGENT,
];

fn check_singletons(headers: &HeaderMap) -> Result<(), Rejection> {
    // Most requests repeat no field at all: counting keys against entries answers that at once.
    if headers.keys_len() == headers.len() {
        return Ok(());
    }
    for name in &SINGLETONS {
        let mut values = headers.get_all(name).iter();
        if values.next().is_some() && values.next().is_some() {
            return reject(StatusCode::BAD_REQUEST, "a header field that takes one value was sent twice");
        }
    }
    Ok(())
}

fn check_framing(headers: &HeaderMap) -> Result<(), Rejection> {
    let lengths: Vec<_> = headers.get_all(header::CONTENT_LENGTH).iter().collect();
    let has_te = headers.contains_key(header::TRANSFER_ENCODING);
    if has_te && !lengths.is_empty() {
        return reject(StatusCode::BAD_REQUEST, "both Content-Length and Transfer-Encoding");
    }
    if lengths.len() > 1 {
        return reject(StatusCode::BAD_REQUEST, "repeated Content-Length");
    }
    if let Some(value) = lengths.first() {
        let valid = !value.is_empty() && value.as_bytes().iter().all(u8::is_ascii_digit);
        if !valid {
            return reject(StatusCode::BAD_REQUEST, "invalid Content-Length");
        }
    }
    if has_te {
        let codings: Vec<String> = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("\u{0}").split(','))
            .map(|c| c.trim().to_ascii_lowercase())
            .collect();
        if codings.as_slice() != ["chunked"] {
            return reject(StatusCode::BAD_REQUEST, "unsupported Transfer-Encoding");
        }
    }
    Ok(())
}

pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Whether the request carries a body at all (RFC 9112 §6.3).
pub(crate) fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING) || content_length(headers).is_some_and(|n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits { request_line: 100, body: 1000 }
    }

    fn req(version: Version, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut builder = http::Request::builder().version(version).uri(uri);
        for (n, v) in headers {
            builder = builder.header(*n, *v);
        }
        builder.body(()).expect("valid test request").into_parts().0
    }

    fn status(parts: &http::request::Parts) -> Option<u16> {
        check(parts, &limits()).err().map(|r| r.status.as_u16())
    }

    #[test]
    fn accepts_ordinary_requests() {
        assert_eq!(status(&req(Version::HTTP_11, "/x?y=1", &[("host", "a")])), None);
        assert_eq!(status(&req(Version::HTTP_10, "/", &[])), None);
        assert_eq!(status(&req(Version::HTTP_11, "/", &[("host", "a"), ("content-length", "10")])), None);
        assert_eq!(status(&req(Version::HTTP_11, "/", &[("host", "a"), ("transfer-encoding", "chunked")])), None);
    }

    #[test]
    fn size_limits() {
        let long = format!("/{}", "a".repeat(120));
        assert_eq!(status(&req(Version::HTTP_11, &long, &[("host", "a")])), Some(414));
        assert_eq!(status(&req(Version::HTTP_11, "/", &[("host", "a"), ("content-length", "1001")])), Some(413));
    }

    #[test]
    fn host_rules() {
        assert_eq!(status(&req(Version::HTTP_11, "/", &[])), Some(400));
        assert_eq!(status(&req(Version::HTTP_11, "/", &[("host", "a"), ("host", "b")])), Some(400));
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        let cases: &[&[(&str, &str)]] = &[
            &[("host", "a"), ("content-length", "5"), ("transfer-encoding", "chunked")],
            &[("host", "a"), ("content-length", "5"), ("content-length", "5")],
            &[("host", "a"), ("content-length", "+5")],
            &[("host", "a"), ("transfer-encoding", "gzip, chunked")],
            &[("host", "a"), ("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")],
            &[("host", "a"), ("transfer-encoding", "identity")],
        ];
        for headers in cases {
            assert_eq!(status(&req(Version::HTTP_11, "/", headers)), Some(400), "{headers:?}");
        }
    }

    #[test]
    fn body_presence() {
        let parts = req(Version::HTTP_11, "/", &[("content-length", "0")]);
        assert!(!has_body(&parts.headers));
        let parts = req(Version::HTTP_11, "/", &[("transfer-encoding", "chunked")]);
        assert!(has_body(&parts.headers));
    }
}
