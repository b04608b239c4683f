//! Building the PEP 3333 `environ` dict for one request.
//!
//! Constant entries live in a template dict that is copied per request; keys are interned
//! Python strings created once, and HTTP_* keys are cached per thread by header name.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;

use http::Version;
use http::header::{self, HeaderName};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

use crate::bridge::{Client, target};

/// Settings that are the same for every request served by this process.
pub(crate) struct EnvironSettings {
    pub(crate) root_path: String,
    pub(crate) multithread: bool,
    pub(crate) multiprocess: bool,
}

macro_rules! keys {
    ($($field:ident = $name:literal),* $(,)?) => {
        /// Interned environ keys.
        pub(crate) struct Keys { $(pub $field: Py<PyString>,)* }
        impl Keys {
            fn new(py: Python<'_>) -> Self {
                Keys { $($field: PyString::intern(py, $name).unbind(),)* }
            }
        }
    };
}

keys! {
    request_method = "REQUEST_METHOD",
    script_name = "SCRIPT_NAME",
    path_info = "PATH_INFO",
    query_string = "QUERY_STRING",
    raw_uri = "RAW_URI",
    request_uri = "REQUEST_URI",
    content_type = "CONTENT_TYPE",
    content_length = "CONTENT_LENGTH",
    server_name = "SERVER_NAME",
    server_port = "SERVER_PORT",
    server_protocol = "SERVER_PROTOCOL",
    server_software = "SERVER_SOFTWARE",
    remote_addr = "REMOTE_ADDR",
    remote_port = "REMOTE_PORT",
    wsgi_version = "wsgi.version",
    wsgi_url_scheme = "wsgi.url_scheme",
    wsgi_input = "wsgi.input",
    wsgi_errors = "wsgi.errors",
    wsgi_multithread = "wsgi.multithread",
    wsgi_multiprocess = "wsgi.multiprocess",
    wsgi_run_once = "wsgi.run_once",
    wsgi_input_terminated = "wsgi.input_terminated",
    wsgi_file_wrapper = "wsgi.file_wrapper",
    http_host = "HTTP_HOST",
}

/// Shared, immutable pieces of every environ.
pub(crate) struct EnvironTemplate {
    pub(crate) keys: Keys,
    template: Py<PyDict>,
    root_path: String,
}

/// Per-thread cache of HTTP_* keys, so header names are converted and interned once.
#[derive(Default)]
pub(crate) struct HeaderKeyCache {
    keys: HashMap<HeaderName, Option<Py<PyString>>>,
}

/// Arbitrary header names are attacker-chosen; past this many distinct names the cache stops
/// growing and the rest are converted per request.
const HEADER_KEY_CACHE_LIMIT: usize = 512;

impl EnvironTemplate {
    pub(crate) fn new(
        py: Python<'_>,
        settings: &EnvironSettings,
        errors: Bound<'_, PyAny>,
        file_wrapper: Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let keys = Keys::new(py);
        let template = PyDict::new(py);
        template.set_item(&keys.wsgi_version, PyTuple::new(py, [1, 0])?)?;
        template.set_item(&keys.wsgi_url_scheme, "http")?;
        template.set_item(&keys.wsgi_errors, errors)?;
        template.set_item(&keys.wsgi_multithread, settings.multithread)?;
        template.set_item(&keys.wsgi_multiprocess, settings.multiprocess)?;
        template.set_item(&keys.wsgi_run_once, false)?;
        template.set_item(&keys.wsgi_input_terminated, true)?;
        template.set_item(&keys.wsgi_file_wrapper, file_wrapper)?;
        template.set_item(&keys.script_name, &settings.root_path)?;
        template.set_item(&keys.server_software, concat!("wharf/", env!("CARGO_PKG_VERSION")))?;
        // Slots for what every request sets (Host is in nearly all), so the per-request copy
        // already has room for them and a few more headers: filling a copy of the bare
        // constants made CPython grow its hash table twice per request.
        for key in [
            &keys.request_method,
            &keys.path_info,
            &keys.query_string,
            &keys.raw_uri,
            &keys.request_uri,
            &keys.server_protocol,
            &keys.server_name,
            &keys.server_port,
            &keys.remote_addr,
            &keys.remote_port,
            &keys.wsgi_input,
            &keys.http_host,
        ] {
            template.set_item(key, py.None())?;
        }
        Ok(EnvironTemplate { keys, template: template.unbind(), root_path: settings.root_path.clone() })
    }

    /// The environ for one request; `input` becomes `wsgi.input`.
    pub(crate) fn build<'py>(
        &self,
        py: Python<'py>,
        cache: &mut HeaderKeyCache,
        parts: &http::request::Parts,
        client: &Client,
        input: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let k = &self.keys;
        let env = self.template.bind(py).copy()?;
        env.set_item(&k.request_method, parts.method.as_str())?;

        // Raw high bytes in the target arrive escaped (see `bridge::target`): `target::raw`
        // gives back the bytes as sent.
        let raw_path = parts.uri.path();
        let raw_bytes = target::raw(raw_path);
        let decoded = percent_decode(&raw_bytes);
        let path_info = strip_root(&decoded, self.root_path.as_bytes());
        env.set_item(&k.path_info, latin1(py, path_info))?;
        // PEP 3333: every native string holds the bytes as sent, decoded as latin-1 (a UTF-8
        // `€` in a query is three characters, as the app's own unquoting expects).
        env.set_item(&k.query_string, latin1(py, &target::raw(parts.uri.query().unwrap_or(""))))?;
        // The target as sent: the whole URI for absolute-form, else path and query.
        let absolute = parts.uri.scheme().is_some().then(|| parts.uri.to_string());
        let target = match &absolute {
            Some(uri) => uri.as_str(),
            None => parts.uri.path_and_query().map(|pq| pq.as_str()).unwrap_or(raw_path),
        };
        let target = latin1(py, &target::raw(target));
        env.set_item(&k.raw_uri, &target)?;
        env.set_item(&k.request_uri, &target)?;
        env.set_item(&k.server_protocol, protocol(parts.version))?;

        let (peer, view) = (&client.peer, &client.forwarded);
        let scheme = client.scheme();
        if scheme != "http" {
            env.set_item(&k.wsgi_url_scheme, scheme)?;
        }
        // RFC 9112 §3.2.2: an absolute-form target's authority replaces the Host header.
        let authority = parts.uri.authority().map(|a| a.as_str());
        let host = view
            .host
            .as_deref()
            .or(authority)
            .or_else(|| parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()));
        let (server_name, server_port) = server_name_port(host, peer.local, scheme);
        env.set_item(&k.server_name, latin1(py, server_name.as_bytes()))?;
        env.set_item(&k.server_port, server_port)?;
        match (&view.remote_addr, peer.remote) {
            (Some(client), _) => env.set_item(&k.remote_addr, client)?,
            (None, Some(remote)) => {
                env.set_item(&k.remote_addr, display_str(py, remote.ip()))?;
                env.set_item(&k.remote_port, display_str(py, remote.port()))?;
            }
            (None, None) => env.del_item(&k.remote_addr)?,
        }
        if view.remote_addr.is_some() || peer.remote.is_none() {
            env.del_item(&k.remote_port)?;
        }
        env.set_item(&k.wsgi_input, input)?;

        for name in parts.headers.keys() {
            let Some(key) = cache.key(py, k, name) else { continue };
            let mut values = parts.headers.get_all(name).iter();
            let Some(first) = values.next() else { continue };
            let value = match values.next() {
                None => latin1(py, first.as_bytes()),
                Some(second) => {
                    let sep: &[u8] = if name == header::COOKIE { b"; " } else { b", " };
                    let mut joined = first.as_bytes().to_vec();
                    for v in std::iter::once(second).chain(values) {
                        joined.extend_from_slice(sep);
                        joined.extend_from_slice(v.as_bytes());
                    }
                    latin1(py, &joined)
                }
            };
            env.set_item(key.bind(py), value)?;
        }
        if let Some(host) = view.host.as_deref().or(authority) {
            env.set_item(&k.http_host, latin1(py, host.as_bytes()))?;
        } else if !parts.headers.contains_key(header::HOST) {
            env.del_item(&k.http_host)?;
        }
        Ok(env)
    }
}

impl HeaderKeyCache {
    /// The environ key for a header, or `None` for headers that must not reach the app.
    fn key(&mut self, py: Python<'_>, keys: &Keys, name: &HeaderName) -> Option<Py<PyString>> {
        if let Some(cached) = self.keys.get(name) {
            return cached.as_ref().map(|k| k.clone_ref(py));
        }
        let key = if name == header::CONTENT_TYPE {
            Some(keys.content_type.clone_ref(py))
        } else if name == header::CONTENT_LENGTH {
            Some(keys.content_length.clone_ref(py))
        } else {
            environ_key(name.as_str()).map(|k| PyString::intern(py, &k).unbind())
        };
        if self.keys.len() < HEADER_KEY_CACHE_LIMIT {
            self.keys.insert(name.clone(), key.as_ref().map(|k| k.clone_ref(py)));
        }
        key
    }
}

/// `HTTP_*` name of a header. Names with `_` are refused: `X-Forwarded_For` would otherwise
/// collide with `X-Forwarded-For` in environ and let a client spoof what a proxy set.
pub(crate) fn environ_key(header: &str) -> Option<String> {
    if header.contains('_') {
        return None;
    }
    let mut key = String::with_capacity(header.len() + 5);
    key.push_str("HTTP_");
    key.extend(header.chars().map(|c| if c == '-' { '_' } else { c.to_ascii_uppercase() }));
    Some(key)
}

/// `%XX` decoding of a URL path into raw bytes; malformed escapes are kept as they are.
/// `input` with `%XX` escapes decoded; borrowed when there are none (most paths).
pub(crate) fn percent_decode(input: &[u8]) -> Cow<'_, [u8]> {
    if !input.contains(&b'%') {
        return Cow::Borrowed(input);
    }
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%'
            && i + 2 < input.len()
            && let (Some(h), Some(l)) = (hex(input[i + 1]), hex(input[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(input[i]);
        i += 1;
    }
    Cow::Owned(out)
}

/// PATH_INFO is the path below SCRIPT_NAME when the request is inside the mount point.
pub(crate) fn strip_root<'a>(path: &'a [u8], root: &[u8]) -> &'a [u8] {
    if root.is_empty() {
        return path;
    }
    match path.strip_prefix(root) {
        Some(rest) if rest.is_empty() || rest.starts_with(b"/") => rest,
        _ => path,
    }
}

/// SERVER_NAME and SERVER_PORT: from the host the client addressed when known (Host header
/// or a trusted proxy's forwarded host), else from the local socket address.
pub(crate) fn server_name_port<'a>(
    host: Option<&'a str>,
    local: Option<SocketAddr>,
    scheme: &str,
) -> (Cow<'a, str>, Cow<'a, str>) {
    if let Some(host) = host.map(str::trim).filter(|h| !h.is_empty()) {
        let (name, port) = split_host(host);
        let default_port = if scheme == "https" { "443" } else { "80" };
        return (Cow::Borrowed(name), Cow::Borrowed(port.unwrap_or(default_port)));
    }
    match local {
        Some(addr) => (Cow::Owned(addr.ip().to_string()), Cow::Owned(addr.port().to_string())),
        None => (Cow::Borrowed("localhost"), Cow::Borrowed("80")),
    }
}

/// A Python string of `value`'s `Display` form, formatted on the stack: addresses and ports
/// are formatted for every request.
fn display_str<'py>(py: Python<'py>, value: impl std::fmt::Display) -> Bound<'py, PyString> {
    use std::io::Write;
    let mut buf = [0u8; 64];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    if write!(cursor, "{value}").is_ok() {
        let len = cursor.position() as usize;
        if let Ok(s) = std::str::from_utf8(&buf[..len]) {
            return PyString::new(py, s);
        }
    }
    PyString::new(py, &value.to_string())
}

/// Splits `host[:port]`, including bracketed IPv6 literals.
pub(crate) fn split_host(host: &str) -> (&str, Option<&str>) {
    if host.starts_with('[') {
        if let Some(end) = host.find(']') {
            let port = host[end + 1..].strip_prefix(':').filter(|p| !p.is_empty());
            return (&host[..=end], port);
        }
        return (host, None);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => (name, Some(port)),
        _ => (host, None),
    }
}

fn protocol(version: Version) -> &'static str {
    if version == Version::HTTP_10 { "HTTP/1.0" } else { "HTTP/1.1" }
}

/// Bytes as a Python str, one code point per byte (the PEP 3333 "native string" rule).
pub(crate) fn latin1<'py>(py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyString> {
    if bytes.is_ascii()
        && let Ok(s) = std::str::from_utf8(bytes)
    {
        return PyString::new(py, s);
    }
    let s: String = bytes.iter().map(|&b| char::from(b)).collect();
    PyString::new(py, &s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_keys() {
        assert_eq!(environ_key("user-agent").as_deref(), Some("HTTP_USER_AGENT"));
        assert_eq!(environ_key("x-a-b").as_deref(), Some("HTTP_X_A_B"));
        assert_eq!(environ_key("x_forwarded_for"), None);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode(b"/a%20b").as_ref(), &b"/a b"[..]);
        assert_eq!(percent_decode(b"/%E2%82%AC").as_ref(), &[b'/', 0xE2, 0x82, 0xAC][..]);
        assert_eq!(percent_decode(b"/%2Fx").as_ref(), &b"//x"[..]);
        assert_eq!(percent_decode(b"/%zz%4").as_ref(), &b"/%zz%4"[..]);
        assert_eq!(percent_decode(b"%41").as_ref(), &b"A"[..]);
        assert_eq!(percent_decode(b"%4").as_ref(), &b"%4"[..]);
        assert_eq!(percent_decode(b"%").as_ref(), &b"%"[..]);
        assert!(matches!(percent_decode(b"/plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn root_path_is_stripped_only_on_segment_boundaries() {
        assert_eq!(strip_root(b"/api/users", b"/api"), b"/users");
        assert_eq!(strip_root(b"/api", b"/api"), b"");
        assert_eq!(strip_root(b"/apix", b"/api"), b"/apix");
        assert_eq!(strip_root(b"/other", b"/api"), b"/other");
        assert_eq!(strip_root(b"/x", b""), b"/x");
    }

    #[test]
    fn server_name_from_host_or_socket() {
        let local: SocketAddr = "127.0.0.1:8000".parse().expect("addr");
        let pair = |a: &'static str, b: &'static str| (Cow::Borrowed(a), Cow::Borrowed(b));
        assert_eq!(server_name_port(None, Some(local), "http"), pair("127.0.0.1", "8000"));
        assert_eq!(server_name_port(Some("example.com:8080"), Some(local), "http"), pair("example.com", "8080"));
        assert_eq!(server_name_port(Some("example.com"), Some(local), "http"), pair("example.com", "80"));
        assert_eq!(server_name_port(Some("example.com"), Some(local), "https"), pair("example.com", "443"));
        assert_eq!(server_name_port(Some("[::1]:9"), Some(local), "http"), pair("[::1]", "9"));
    }
}
