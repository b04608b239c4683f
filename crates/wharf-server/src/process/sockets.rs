//! The supervisor's listening sockets and which of them each worker gets.
//!
//! Workers that all accept from one shared socket are not given connections evenly: the one
//! whose I/O thread happens to be running wins the race for each, and 193 of 200 sequential
//! short connections landed on one of two workers. So on Linux each TCP address is bound once
//! per worker *slot* with `SO_REUSEPORT`, and the kernel spreads new connections over the
//! slots by hash. The supervisor keeps every slot's socket open: connections waiting in the
//! backlog of a worker that died stay there for its replacement, which gets the same slot, and a
//! retiring worker keeps accepting on its slot until its successor there is ready.
//!
//! Unix sockets (no `SO_REUSEPORT` for them) and sockets from socket activation are shared by
//! every worker as before.

use std::net::SocketAddr;
use std::os::fd::RawFd;

use tokio::net::TcpSocket;

use super::handoff::SharedSocket;
use crate::error::StartError;
use crate::http::{BindSpec, Listener, SocketKind};

pub(crate) struct Sockets {
    /// Given to every worker.
    shared: Vec<SharedSocket>,
    /// TCP addresses (ports resolved) bound once per slot.
    spread: Vec<SocketAddr>,
    backlog: u32,
    /// `slots[n]`: the sockets of slot `n`, one per address of `spread`.
    slots: Vec<Vec<SharedSocket>>,
}

impl Sockets {
    /// Binds `binds` (slot 0 of the TCP ones); more slots are bound as workers need them.
    pub(crate) fn bind(binds: &[BindSpec], backlog: u32) -> Result<Sockets, StartError> {
        let mut sockets = Sockets { shared: Vec::new(), spread: Vec::new(), backlog, slots: Vec::new() };
        for spec in binds {
            match spec {
                BindSpec::Tcp(_) if cfg!(target_os = "linux") => sockets.spread.push(probe(spec, backlog)?),
                _ => sockets.shared.push(SharedSocket::from_listener(Listener::bind(spec, backlog)?)?),
            }
        }
        if !sockets.spread.is_empty() {
            let first = sockets.bind_slot()?;
            sockets.slots.push(first);
        }
        Ok(sockets)
    }

    /// Sockets passed by a launcher (systemd): shared by every worker, as they came.
    pub(crate) fn activated(shared: Vec<SharedSocket>) -> Sockets {
        Sockets { shared, spread: Vec::new(), backlog: 0, slots: Vec::new() }
    }

    /// One line per address clients connect to, for the log.
    pub(crate) fn describe(&self) -> Vec<String> {
        let spread = self.slots.first().into_iter().flatten();
        self.shared.iter().chain(spread).map(|socket| socket.describe.clone()).collect()
    }

    /// The sockets a worker in `slot` inherits, binding the slot first if it is new.
    pub(crate) fn for_slot(&mut self, slot: usize) -> Result<Vec<(SocketKind, RawFd)>, StartError> {
        while self.slots.len() <= slot && !self.spread.is_empty() {
            let bound = self.bind_slot()?;
            self.slots.push(bound);
        }
        let own = self.slots.get(slot).into_iter().flatten();
        Ok(self.shared.iter().chain(own).map(SharedSocket::raw).collect())
    }

    pub(crate) fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Closes the last slot (fewer workers wanted). Connections still in its backlog are
    /// reset by the kernel: only done once no worker serves the slot.
    pub(crate) fn close_last_slot(&mut self) {
        if self.slots.len() > 1 {
            self.slots.pop();
        }
    }

    /// Closes the supervisor's copies: once the workers close theirs, connections are refused.
    pub(crate) fn close(&mut self) {
        self.shared.clear();
        self.slots.clear();
    }

    fn bind_slot(&self) -> Result<Vec<SharedSocket>, StartError> {
        self.spread.iter().map(|addr| SharedSocket::from_listener(bind_spread(*addr, self.backlog)?)).collect()
    }
}

/// Checks that the address is free (a socket with `SO_REUSEPORT` would silently join the
/// listeners of another server of the same user on that port, where a plain bind fails with
/// "address in use") and resolves port 0 to the port the slots then share.
fn probe(spec: &BindSpec, backlog: u32) -> Result<SocketAddr, StartError> {
    match Listener::bind(spec, backlog)? {
        Listener::Tcp(probe) => {
            probe.local_addr().map_err(|source| StartError::Bind { addr: spec.to_string(), source })
        }
        Listener::Unix(_) => Err(StartError::InvalidConfig(format!("{spec} is not a TCP address"))),
    }
}

fn bind_spread(addr: SocketAddr, backlog: u32) -> Result<Listener, StartError> {
    let err = |source| StartError::Bind { addr: addr.to_string(), source };
    let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.set_reuseport(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    Ok(Listener::Tcp(socket.listen(backlog).map_err(err)?))
}
