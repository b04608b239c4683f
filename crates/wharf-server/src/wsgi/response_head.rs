//! Validating what the app passes to `start_response` and turning it into an HTTP head.

use std::borrow::Cow;

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use hyper::ext::ReasonPhrase;

/// A validated status line and header list, not yet sent.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    pub(crate) reason: Option<ReasonPhrase>,
    pub(crate) headers: HeaderMap,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HeadError {
    #[error("status {0:?} is not of the form '200 OK' (three digits, a space, a reason phrase)")]
    Status(String),
    #[error("status code {0} cannot be a final response")]
    Informational(u16),
    #[error("header name {0:?} is not a valid HTTP field name")]
    Name(String),
    #[error("value of header {name:?} contains a character not allowed in HTTP field values: {value:?}")]
    Value { name: String, value: String },
    #[error("{0} is not representable in latin-1, as PEP 3333 requires")]
    NotLatin1(String),
    #[error("Content-Length {0:?} is not a decimal number of bytes")]
    ContentLength(String),
    #[error("Content-Length given twice with different values ({first} and {second})")]
    ContentLengthConflict { first: u64, second: u64 },
}

/// Hop-by-hop headers describe one connection and are the server's business, not the app's
/// (PEP 3333 forbids apps from sending them). They are dropped rather than forwarded.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::TE
        || name == header::TRAILER
        || name == header::PROXY_AUTHENTICATE
        || name == header::PROXY_AUTHORIZATION
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// The latin-1 bytes of `s`; ASCII (nearly every header) is borrowed as it is.
pub(crate) fn to_latin1<'a>(what: &str, s: &'a str) -> Result<Cow<'a, [u8]>, HeadError> {
    if s.is_ascii() {
        return Ok(Cow::Borrowed(s.as_bytes()));
    }
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).map_err(|_| HeadError::NotLatin1(format!("{what} {s:?}"))))
        .collect::<Result<Vec<u8>, _>>()
        .map(Cow::Owned)
}

pub(crate) fn parse_status(status: &str) -> Result<(StatusCode, Option<ReasonPhrase>), HeadError> {
    let bytes = to_latin1("status", status)?;
    let bad = || HeadError::Status(status.to_owned());
    if bytes.len() < 4 || bytes[3] != b' ' || !bytes[..3].iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let code = StatusCode::from_bytes(&bytes[..3]).map_err(|_| bad())?;
    if code.is_informational() {
        return Err(HeadError::Informational(code.as_u16()));
    }
    let phrase = &bytes[4..];
    let reason = if phrase.is_empty() || code.canonical_reason().map(str::as_bytes) == Some(phrase) {
        None
    } else {
        Some(ReasonPhrase::try_from(phrase.to_vec()).map_err(|_| bad())?)
    };
    Ok((code, reason))
}

impl Head {
    /// A head with `status` and no headers yet; `push` adds them.
    pub(crate) fn start(status: &str, headers: usize) -> Result<Head, HeadError> {
        let (status, reason) = parse_status(status)?;
        Ok(Head { status, reason, headers: HeaderMap::with_capacity(headers) })
    }

    /// Adds one header as the app gave it, validated; hop-by-hop headers are dropped.
    pub(crate) fn push(&mut self, name: &str, value: &str) -> Result<(), HeadError> {
        let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| HeadError::Name(name.to_owned()))?;
        let raw = to_latin1("header value", value)?;
        let header_value = HeaderValue::from_bytes(&raw)
            .map_err(|_| HeadError::Value { name: name.to_owned(), value: value.to_owned() })?;
        if header_name == header::CONTENT_LENGTH {
            return self.push_content_length(value, header_value);
        }
        if is_hop_by_hop(&header_name) {
            if header_name == header::CONNECTION && value.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")) {
                self.headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return Ok(());
        }
        self.headers.append(header_name, header_value);
        Ok(())
    }

    /// The response's framing rests on this one header, so it must be exactly one number: a
    /// value hyper cannot parse would turn the response into an empty reply, and two different
    /// values leave a proxy to pick one (RFC 9110 §8.6). A repeat of the same value is dropped.
    fn push_content_length(&mut self, value: &str, header_value: HeaderValue) -> Result<(), HeadError> {
        let digits = value.trim_matches([' ', '\t']);
        let len = (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse::<u64>().ok())
            .flatten()
            .ok_or_else(|| HeadError::ContentLength(value.to_owned()))?;
        match self.content_length() {
            None => {
                self.headers.insert(header::CONTENT_LENGTH, header_value);
                Ok(())
            }
            Some(first) if first == len => Ok(()),
            Some(first) => Err(HeadError::ContentLengthConflict { first, second: len }),
        }
    }

    #[cfg(test)]
    fn new<'a>(status: &str, headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Head, HeadError> {
        let mut head = Head::start(status, 0)?;
        for (name, value) in headers {
            head.push(name, value)?;
        }
        Ok(head)
    }

    /// A plain-text response generated by the server itself.
    pub(crate) fn server_error(status: StatusCode) -> Head {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        Head { status, reason: None, headers }
    }

    pub(crate) fn content_length(&self) -> Option<u64> {
        self.headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<'a>(name: &'a str, value: &'a str) -> (&'a str, &'a str) {
        (name, value)
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status("200 OK").map(|s| s.0), Ok(StatusCode::OK));
        assert!(parse_status("200 OK").expect("ok").1.is_none());
        let (code, reason) = parse_status("299 Custom Thing").expect("ok");
        assert_eq!(code.as_u16(), 299);
        assert_eq!(reason.expect("custom reason").as_bytes(), b"Custom Thing");
        for bad in ["200", "OK 200", "2000 OK", "20 OK", "abc OK", "200\tOK", "", "600x"] {
            assert!(parse_status(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_status("101 Switching"), Err(HeadError::Informational(101)));
        assert!(parse_status("200 \u{20ac}").is_err());
        assert!(parse_status("200 Bad\r\nX: y").is_err());
    }

    #[test]
    fn headers_are_validated() {
        assert!(Head::new("200 OK", [h("X-Ok", "fine \u{e9}")]).is_ok());
        assert!(matches!(Head::new("200 OK", [h("Bad Name", "v")]), Err(HeadError::Name(_))));
        assert!(matches!(Head::new("200 OK", [h("X", "a\r\nSet-Cookie: x")]), Err(HeadError::Value { .. })));
        assert!(matches!(Head::new("200 OK", [h("X", "\u{20ac}")]), Err(HeadError::NotLatin1(_))));
        let head = Head::new("200 OK", [h("X-Latin", "caf\u{e9}")]).expect("latin-1 is valid");
        assert_eq!(head.headers.get("x-latin").map(|v| v.as_bytes()), Some(&b"caf\xe9"[..]));
    }

    #[test]
    fn hop_by_hop_headers_are_dropped_but_close_is_honoured() {
        let head = Head::new("200 OK", [h("Transfer-Encoding", "chunked"), h("Connection", "close"), h("X-A", "1")])
            .expect("valid");
        assert!(head.headers.get(header::TRANSFER_ENCODING).is_none());
        assert_eq!(head.headers.get(header::CONNECTION).map(|v| v.as_bytes()), Some(&b"close"[..]));
        assert_eq!(head.headers.len(), 2);
    }

    #[test]
    fn repeated_headers_are_kept() {
        let head = Head::new("200 OK", [h("Set-Cookie", "a=1"), h("Set-Cookie", "b=2")]).expect("valid");
        assert_eq!(head.headers.get_all(header::SET_COOKIE).iter().count(), 2);
        let head = Head::new("200 OK", [h("Content-Length", "12")]).expect("valid");
        assert_eq!(head.content_length(), Some(12));
    }

    #[test]
    fn content_length_is_one_number() {
        let head = Head::new("200 OK", [h("Content-Length", " 12 "), h("Content-Length", "12")]).expect("same value");
        assert_eq!(head.headers.get_all(header::CONTENT_LENGTH).iter().count(), 1);
        assert_eq!(head.content_length(), Some(12));
        for bad in ["", "abc", "-1", "+5", "1.5", "12, 12", "0x10", "99999999999999999999999"] {
            assert!(
                matches!(Head::new("200 OK", [h("Content-Length", bad)]), Err(HeadError::ContentLength(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            Head::new("200 OK", [h("Content-Length", "5"), h("Content-Length", "6")]).map(|_| ()),
            Err(HeadError::ContentLengthConflict { first: 5, second: 6 })
        );
    }
}
