//! Trusting proxy headers (X-Forwarded-*, RFC 7239 Forwarded) only from configured peers.

use std::net::IpAddr;
use std::str::FromStr;

use http::HeaderMap;

use crate::bridge::Forwarded;

/// Peers whose proxy headers are believed: IP networks, and (`unix`) whatever connects over a
/// unix socket, which only a process on this machine can: the local proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TrustedProxies {
    any: bool,
    unix: bool,
    nets: Vec<(IpAddr, u8)>,
}

impl FromStr for TrustedProxies {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let mut trusted = TrustedProxies { any: false, unix: false, nets: Vec::new() };
        for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "*" {
                trusted.any = true;
                continue;
            }
            if item == "unix" {
                trusted.unix = true;
                continue;
            }
            let (addr, prefix) = match item.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (item, None),
            };
            let ip: IpAddr =
                addr.parse().map_err(|_| format!("{item:?} is not an IP address, a CIDR, `unix` or `*`"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => p
                    .parse::<u8>()
                    .ok()
                    .filter(|&p| p <= max)
                    .ok_or_else(|| format!("{item:?}: prefix length must be 0..={max}"))?,
            };
            trusted.nets.push((ip, prefix));
        }
        Ok(trusted)
    }
}

fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    let ip = match (ip, net) {
        (IpAddr::V6(v6), IpAddr::V4(_)) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        _ => ip,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) };
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix)) };
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

impl TrustedProxies {
    pub(crate) fn trusts(&self, ip: IpAddr) -> bool {
        self.any || self.nets.iter().any(|&(net, prefix)| in_net(ip, net, prefix))
    }

    /// Whether a peer (`None`: a unix socket) may speak for the client behind it.
    fn trusts_peer(&self, peer: Option<IpAddr>) -> bool {
        match peer {
            Some(ip) => self.trusts(ip),
            None => self.any || self.unix,
        }
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|s| !s.is_empty())
}

fn scheme(value: &str) -> Option<&'static str> {
    match value.trim().to_ascii_lowercase().as_str() {
        "https" => Some("https"),
        "http" => Some("http"),
        _ => None,
    }
}

/// The original client: walking the chain from the nearest hop back, the first address that
/// is not itself a trusted proxy (everything further left could be forged by that client).
/// A hop that is neither an IP nor an RFC 7239 `unknown` or obfuscated (`_name`) node makes
/// the chain worthless (`<script>` must never become REMOTE_ADDR): the socket peer stays.
fn client_from_chain(chain: &[String], trusted: &TrustedProxies) -> Option<String> {
    for hop in chain.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if trusted.trusts(ip) => continue,
            Ok(_) => return Some(hop.clone()),
            Err(_) if is_rfc7239_name(hop) => return Some(hop.clone()),
            Err(_) => {
                warn_bad_hop(hop);
                return None;
            }
        }
    }
    chain.first().cloned()
}

/// RFC 7239 §6: `unknown`, or an obfuscated identifier `_` followed by ALPHA / DIGIT / `.` /
/// `_` / `-`.
fn is_rfc7239_name(hop: &str) -> bool {
    hop == "unknown"
        || hop.strip_prefix('_').is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
}

/// Once per process: a misconfigured proxy would otherwise log on every request.
fn warn_bad_hop(hop: &str) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            hop = %hop.escape_default(),
            "a trusted proxy named a client that is not an IP address; using the socket peer (logged once)"
        );
    }
}

/// RFC 7239 node: `192.0.2.1`, `"[2001:db8::1]:4711"`, `unknown`, `_hidden`.
fn forwarded_node(value: &str) -> String {
    let v = value.trim().trim_matches('"');
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest).to_owned();
    }
    match v.rsplit_once(':') {
        Some((host, port)) if v.matches(':').count() == 1 && port.bytes().all(|b| b.is_ascii_digit()) => {
            host.to_owned()
        }
        _ => v.to_owned(),
    }
}

/// What the proxy headers of a request that arrived from `peer` say; empty unless `peer` is
/// trusted.
pub(crate) fn client_view(headers: &HeaderMap, peer: Option<IpAddr>, trusted: &TrustedProxies) -> Forwarded {
    if !trusted.trusts_peer(peer) {
        return Forwarded::default();
    }
    let forwarded: Vec<&str> =
        headers.get_all("forwarded").iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).collect();
    if !forwarded.is_empty() {
        let mut chain = Vec::new();
        let mut view = Forwarded::default();
        for element in &forwarded {
            for pair in element.split(';') {
                let Some((key, value)) = pair.split_once('=') else { continue };
                match key.trim().to_ascii_lowercase().as_str() {
                    "for" => chain.push(forwarded_node(value)),
                    "proto" => view.scheme = scheme(value.trim_matches('"')).or(view.scheme),
                    "host" => view.host = Some(value.trim().trim_matches('"').to_owned()),
                    _ => {}
                }
            }
        }
        view.remote_addr = client_from_chain(&chain, trusted);
        return view;
    }
    let chain: Vec<String> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(forwarded_node)
        .filter(|s| !s.is_empty())
        .collect();
    Forwarded {
        remote_addr: client_from_chain(&chain, trusted),
        scheme: header_str(headers, "x-forwarded-proto").and_then(|v| scheme(v.split(',').next().unwrap_or(v))),
        host: header_str(headers, "x-forwarded-host").map(|v| v.split(',').next().unwrap_or(v).trim().to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::header::HeaderName::from_bytes(k.as_bytes()).expect("name"), v.parse().expect("value"));
        }
        h
    }

    fn local() -> TrustedProxies {
        "127.0.0.1,::1,10.0.0.0/8".parse().expect("valid")
    }

    #[test]
    fn parses_and_matches_networks() {
        let t = local();
        assert!(t.trusts("10.1.2.3".parse().expect("ip")));
        assert!(t.trusts("::ffff:127.0.0.1".parse().expect("ip")));
        assert!(!t.trusts("11.0.0.1".parse().expect("ip")));
        assert!("*".parse::<TrustedProxies>().expect("valid").trusts("8.8.8.8".parse().expect("ip")));
        assert!("1.2.3.4/40".parse::<TrustedProxies>().is_err());
        assert!("nope".parse::<TrustedProxies>().is_err());
    }

    #[test]
    fn untrusted_peers_change_nothing() {
        let h =
            headers(&[("x-forwarded-for", "1.2.3.4"), ("x-forwarded-proto", "https"), ("forwarded", "for=5.6.7.8")]);
        assert_eq!(client_view(&h, Some("192.168.1.1".parse().expect("ip")), &local()), Forwarded::default());
    }

    #[test]
    fn x_forwarded_headers_from_trusted_peer() {
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.5"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "example.com:8443"),
        ]);
        let view = client_view(&h, Some("127.0.0.1".parse().expect("ip")), &local());
        assert_eq!(view.remote_addr.as_deref(), Some("1.2.3.4"));
        assert_eq!(view.scheme, Some("https"));
        assert_eq!(view.host.as_deref(), Some("example.com:8443"));
    }

    #[test]
    fn rfc7239_forwarded_wins() {
        let h = headers(&[
            ("forwarded", "for=\"[2001:db8::1]:4711\";proto=https;host=app.example, for=10.0.0.7"),
            ("x-forwarded-for", "9.9.9.9"),
        ]);
        let view = client_view(&h, Some("127.0.0.1".parse().expect("ip")), &local());
        assert_eq!(view.remote_addr.as_deref(), Some("2001:db8::1"));
        assert_eq!(view.scheme, Some("https"));
        assert_eq!(view.host.as_deref(), Some("app.example"));
    }

    #[test]
    fn bogus_proto_is_ignored() {
        let h = headers(&[("x-forwarded-proto", "javascript")]);
        assert_eq!(client_view(&h, Some("127.0.0.1".parse().expect("ip")), &local()).scheme, None);
    }
}
