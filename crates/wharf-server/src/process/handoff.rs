//! How listening sockets and the control channel pass from the supervisor to its workers
//! (inherited file descriptors named in an environment variable), and systemd socket
//! activation (`LISTEN_FDS`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::error::StartError;
use crate::http::{Listener, SocketKind};

/// Set by the supervisor in each worker's environment; its presence makes a process a worker.
pub(crate) const HANDOFF_ENV: &str = "WHARF_WORKER_HANDOFF";

/// Set by the supervisor in its zygote's environment: the descriptor of the zygote's channel.
pub(crate) const ZYGOTE_ENV: &str = "WHARF_ZYGOTE";

/// A listening socket owned by the supervisor and shared with every worker.
pub(crate) struct SharedSocket {
    pub(crate) kind: SocketKind,
    pub(crate) fd: OwnedFd,
    pub(crate) describe: String,
}

/// What a worker receives from its supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Handoff {
    pub(crate) worker_id: u32,
    pub(crate) control: RawFd,
    pub(crate) sockets: Vec<(SocketKind, RawFd)>,
}

impl Handoff {
    pub(crate) fn encode(&self) -> String {
        let sockets: Vec<String> = self
            .sockets
            .iter()
            .map(|(kind, fd)| format!("{}:{fd}", if *kind == SocketKind::Tcp { "tcp" } else { "unix" }))
            .collect();
        format!("id={};control={};sockets={}", self.worker_id, self.control, sockets.join(","))
    }

    pub(crate) fn decode(value: &str) -> Result<Handoff, String> {
        let bad = || format!("malformed {HANDOFF_ENV}={value:?} (internal: set only by the wharf supervisor)");
        let mut worker_id = None;
        let mut control = None;
        let mut sockets = Vec::new();
        for part in value.split(';') {
            let (key, val) = part.split_once('=').ok_or_else(bad)?;
            match key {
                "id" => worker_id = Some(val.parse().map_err(|_| bad())?),
                "control" => control = Some(val.parse().map_err(|_| bad())?),
                "sockets" => {
                    for item in val.split(',').filter(|s| !s.is_empty()) {
                        let (kind, fd) = item.split_once(':').ok_or_else(bad)?;
                        let kind = match kind {
                            "tcp" => SocketKind::Tcp,
                            "unix" => SocketKind::Unix,
                            _ => return Err(bad()),
                        };
                        sockets.push((kind, fd.parse().map_err(|_| bad())?));
                    }
                }
                _ => return Err(bad()),
            }
        }
        Ok(Handoff { worker_id: worker_id.ok_or_else(bad)?, control: control.ok_or_else(bad)?, sockets })
    }

    pub(crate) fn from_env() -> Result<Option<Handoff>, String> {
        match std::env::var(HANDOFF_ENV) {
            Ok(value) => Handoff::decode(&value).map(Some),
            Err(_) => Ok(None),
        }
    }

    /// The zygote's channel when this process was started as the zygote. The variable is
    /// removed, so the workers forked from here (and what the app starts) do not see it.
    pub(crate) fn zygote_from_env() -> Result<Option<OwnedFd>, String> {
        let Ok(value) = std::env::var(ZYGOTE_ENV) else { return Ok(None) };
        let fd: RawFd = value
            .parse()
            .map_err(|_| format!("malformed {ZYGOTE_ENV}={value:?} (internal: set only by the wharf supervisor)"))?;
        // SAFETY: called at startup, before this process starts any other thread.
        unsafe { std::env::remove_var(ZYGOTE_ENV) };
        // SAFETY: the supervisor passed this descriptor to this process for the zygote's channel.
        Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Adopts the inherited listening sockets; must run inside the tokio runtime.
    pub(crate) fn listeners(&self) -> Result<Vec<Listener>, StartError> {
        self.sockets
            .iter()
            .map(|&(kind, fd)| {
                // SAFETY: the supervisor passed these descriptors to this process for exactly
                // this purpose, and nothing else in the worker uses them.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                Listener::adopt(kind, owned)
            })
            .collect()
    }
}

impl SharedSocket {
    pub(crate) fn from_listener(listener: Listener) -> Result<SharedSocket, StartError> {
        let describe = listener.describe();
        let err = |source| StartError::Bind { addr: describe.clone(), source };
        let (kind, fd) = match listener {
            Listener::Tcp(l) => (SocketKind::Tcp, OwnedFd::from(l.into_std().map_err(err)?)),
            Listener::Unix(l) => (SocketKind::Unix, OwnedFd::from(l.into_std().map_err(err)?)),
        };
        Ok(SharedSocket { kind, fd, describe })
    }

    pub(crate) fn raw(&self) -> (SocketKind, RawFd) {
        (self.kind, self.fd.as_raw_fd())
    }
}

/// Sockets passed by systemd (or any launcher following its protocol) for this process.
pub(crate) fn systemd_sockets() -> Result<Option<Vec<SharedSocket>>, StartError> {
    let for_us = std::env::var("LISTEN_PID").ok().and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS").ok().and_then(|n| n.parse::<i32>().ok());
    let (true, Some(count)) = (for_us, count) else { return Ok(None) };
    let mut sockets = Vec::new();
    for fd in 3..3 + count {
        // SAFETY: LISTEN_FDS/LISTEN_PID say these descriptors were passed to this process.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let tcp = std::net::TcpListener::from(owned);
        let (kind, owned, describe) = match tcp.local_addr() {
            Ok(addr) => (SocketKind::Tcp, OwnedFd::from(tcp), format!("http://{addr} (socket activation)")),
            Err(_) => (SocketKind::Unix, OwnedFd::from(tcp), format!("fd {fd} (socket activation)")),
        };
        sockets.push(SharedSocket { kind, fd: owned, describe });
    }
    // Children must not take these variables as addressed to them.
    // SAFETY: called at startup, before any other thread of this process reads the environment.
    unsafe {
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    Ok(Some(sockets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handoff_round_trips() {
        let h = Handoff { worker_id: 7, control: 9, sockets: vec![(SocketKind::Tcp, 3), (SocketKind::Unix, 4)] };
        assert_eq!(Handoff::decode(&h.encode()), Ok(h));
        assert!(Handoff::decode("id=1").is_err());
        assert!(Handoff::decode("id=1;control=x;sockets=").is_err());
        assert!(Handoff::decode("id=1;control=3;sockets=udp:4").is_err());
    }
}
