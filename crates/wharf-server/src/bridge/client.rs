//! Who sent a request: the socket peer, and what a trusted proxy says about the client behind
//! it. Computed once on the I/O thread; the environ, the trace span and the access log all read
//! the same [`Client`].

use std::net::SocketAddr;
use std::sync::Arc;

/// Where a connection came from, as the socket says.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub(crate) remote: Option<SocketAddr>,
    pub(crate) local: Option<SocketAddr>,
}

/// What a trusted proxy says about the original request (all `None` when the peer is not a
/// trusted proxy or sent no proxy headers).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Forwarded {
    pub(crate) remote_addr: Option<String>,
    pub(crate) scheme: Option<&'static str>,
    pub(crate) host: Option<String>,
}

/// The client of one request as wharf trusts it.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    pub(crate) peer: Arc<Peer>,
    pub(crate) forwarded: Forwarded,
}

impl Client {
    /// `http` or `https`: what the client used to reach the first trusted proxy, else `http`.
    pub(crate) fn scheme(&self) -> &'static str {
        self.forwarded.scheme.unwrap_or("http")
    }

    /// The client's address (an IP, or whatever a trusted proxy named), if known.
    pub(crate) fn address(&self) -> Option<String> {
        match &self.forwarded.remote_addr {
            Some(addr) => Some(addr.clone()),
            None => self.peer.remote.map(|a| a.ip().to_string()),
        }
    }

    /// The client's port: only known for a direct connection, not through a proxy.
    pub(crate) fn port(&self) -> Option<u16> {
        match self.forwarded.remote_addr {
            Some(_) => None,
            None => self.peer.remote.map(|a| a.port()),
        }
    }

    /// The host the client addressed, as a trusted proxy reports it (else the request's own).
    pub(crate) fn forwarded_host(&self) -> Option<&str> {
        self.forwarded.host.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(forwarded: Forwarded) -> Client {
        let peer = Peer { remote: Some(([10, 0, 0, 1], 4711).into()), local: Some(([127, 0, 0, 1], 8000).into()) };
        Client { peer: Arc::new(peer), forwarded }
    }

    #[test]
    fn the_socket_peer_unless_a_proxy_says_otherwise() {
        let direct = client(Forwarded::default());
        assert_eq!(
            (direct.address().as_deref(), direct.port(), direct.scheme()),
            (Some("10.0.0.1"), Some(4711), "http")
        );
        let proxied = client(Forwarded { remote_addr: Some("192.0.2.9".into()), scheme: Some("https"), host: None });
        assert_eq!(
            (proxied.address().as_deref(), proxied.port(), proxied.scheme()),
            (Some("192.0.2.9"), None, "https")
        );
    }
}
