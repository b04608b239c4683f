//! Listening sockets: parsing `--bind` values, binding them, and accepting connections.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::str::FromStr;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, UnixListener};

use crate::bridge::Peer;
use crate::error::StartError;

/// One `--bind` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BindSpec {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl FromStr for BindSpec {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let value = value.trim();
        if let Some(path) = value.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a socket path, e.g. unix:/run/wharf.sock".into());
            }
            return Ok(BindSpec::Unix(PathBuf::from(path)));
        }
        if let Ok(addr) = value.parse::<SocketAddr>() {
            return Ok(BindSpec::Tcp(addr));
        }
        let (host, port) = value.rsplit_once(':').ok_or_else(|| format!("{value:?} is not HOST:PORT or unix:/path"))?;
        let port: u16 = port.parse().map_err(|_| format!("{value:?}: {port:?} is not a port number"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        (host, 0)
            .to_socket_addrs()
            .map_err(|err| format!("{value:?}: cannot resolve {host:?}: {err}"))?
            .next()
            .map(|addr| BindSpec::Tcp(SocketAddr::new(addr.ip(), port)))
            .ok_or_else(|| format!("{value:?}: {host:?} resolves to no address"))
    }
}

impl fmt::Display for BindSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindSpec::Tcp(addr) => write!(f, "http://{addr}"),
            BindSpec::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A bound listening socket.
pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// The kind of a listening socket passed between processes as a bare descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SocketKind {
    Tcp,
    Unix,
}

pub(crate) trait Connection: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Connection for T {}

impl Listener {
    pub(crate) fn bind(spec: &BindSpec, backlog: u32) -> Result<Listener, StartError> {
        let err = |source| StartError::Bind { addr: spec.to_string(), source };
        match spec {
            BindSpec::Tcp(addr) => {
                let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(err)?;
                socket.set_reuseaddr(true).map_err(err)?;
                socket.bind(*addr).map_err(err)?;
                Ok(Listener::Tcp(socket.listen(backlog).map_err(err)?))
            }
            BindSpec::Unix(path) => {
                // A socket file left behind by a previous run would make bind fail; anything
                // that is not a socket is left alone so a typo never deletes a user's file.
                if let Ok(meta) = std::fs::symlink_metadata(path)
                    && meta.file_type().is_socket()
                {
                    std::fs::remove_file(path).map_err(err)?;
                }
                Ok(Listener::Unix(UnixListener::bind(path).map_err(err)?))
            }
        }
    }

    /// Takes over a listening socket inherited from the supervisor or a launcher.
    pub(crate) fn adopt(kind: SocketKind, fd: std::os::fd::OwnedFd) -> Result<Listener, StartError> {
        let err = |source| StartError::Bind { addr: "inherited socket".into(), source };
        match kind {
            SocketKind::Tcp => {
                let std = std::net::TcpListener::from(fd);
                std.local_addr().map_err(err)?;
                std.set_nonblocking(true).map_err(err)?;
                Ok(Listener::Tcp(TcpListener::from_std(std).map_err(err)?))
            }
            SocketKind::Unix => {
                let std = std::os::unix::net::UnixListener::from(fd);
                std.local_addr().map_err(err)?;
                std.set_nonblocking(true).map_err(err)?;
                Ok(Listener::Unix(UnixListener::from_std(std).map_err(err)?))
            }
        }
    }

    /// The address clients connect to, for logs.
    pub(crate) fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l.local_addr().map(|a| format!("http://{a}")).unwrap_or_else(|_| "tcp".into()),
            Listener::Unix(l) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| format!("unix:{}", p.display())))
                .unwrap_or_else(|| "unix".into()),
        }
    }

    pub(crate) async fn accept(&self) -> io::Result<(Box<dyn Connection>, Peer)> {
        match self {
            Listener::Tcp(l) => {
                let (stream, remote) = l.accept().await?;
                // Responses are written in whole frames; Nagle would only add latency.
                stream.set_nodelay(true)?;
                let local = stream.local_addr().ok();
                Ok((Box::new(stream), Peer { remote: Some(remote), local }))
            }
            Listener::Unix(l) => {
                let (stream, _) = l.accept().await?;
                Ok((Box::new(stream), Peer { remote: None, local: None }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bind_forms() {
        assert_eq!("127.0.0.1:80".parse(), Ok(BindSpec::Tcp("127.0.0.1:80".parse().expect("addr"))));
        assert_eq!("[::1]:81".parse(), Ok(BindSpec::Tcp("[::1]:81".parse().expect("addr"))));
        assert_eq!("unix:/tmp/a.sock".parse(), Ok(BindSpec::Unix("/tmp/a.sock".into())));
        assert!(matches!("localhost:8000".parse::<BindSpec>(), Ok(BindSpec::Tcp(a)) if a.port() == 8000));
        assert!("unix:".parse::<BindSpec>().is_err());
        assert!("127.0.0.1".parse::<BindSpec>().is_err());
        assert!("127.0.0.1:http".parse::<BindSpec>().is_err());
    }
}
