//! The channel between the supervisor and its zygote, both halves: a `SOCK_SEQPACKET` socket
//! pair carrying one JSON message per packet. The supervisor asks for a worker with a
//! [`ForkRequest`] and passes the worker's descriptors along with it (`SCM_RIGHTS`): its end of
//! the control channel first, then its listening sockets. The zygote answers with
//! [`ZygoteMessage`]s. Packets keep each request and its descriptors together, which a byte
//! stream does not promise.
//!
//! The standard library's ancillary-data API is unstable, so `sendmsg`/`recvmsg` are called
//! through `libc` here, in this one place.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use serde::{Deserialize, Serialize};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::http::SocketKind;

/// Descriptors one request may carry: the control channel plus every listening socket of a
/// slot. Far above what a bind list needs; a request with more is refused when sent.
const MAX_FDS: usize = 64;
/// Longest packet: requests and replies are a few dozen bytes, `Imported` lists thread names.
const MAX_PACKET: usize = 16 * 1024;

/// What the zygote tells the supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ZygoteMessage {
    /// The app is imported (in `seconds`). `threads` names the threads alive besides the main
    /// one: when there are any, forking is unsafe and the zygote exits after this message.
    Imported { seconds: f64, threads: Vec<String> },
    /// Worker `id` was forked as process `pid`.
    Forked { id: u32, pid: i32 },
    /// A forked worker exited; `status` is the raw `waitpid` status.
    Exited { id: u32, status: i32 },
}

/// The supervisor asks for worker `id`; `sockets` are the kinds of the listening sockets that
/// follow the control channel among the passed descriptors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ForkRequest {
    pub(crate) id: u32,
    pub(crate) sockets: Vec<Kind>,
}

/// [`SocketKind`] on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    Tcp,
    Unix,
}

impl From<SocketKind> for Kind {
    fn from(kind: SocketKind) -> Kind {
        match kind {
            SocketKind::Tcp => Kind::Tcp,
            SocketKind::Unix => Kind::Unix,
        }
    }
}

impl From<Kind> for SocketKind {
    fn from(kind: Kind) -> SocketKind {
        match kind {
            Kind::Tcp => SocketKind::Tcp,
            Kind::Unix => SocketKind::Unix,
        }
    }
}

/// A connected `SOCK_SEQPACKET` pair, both ends close-on-exec.
pub(crate) fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: socketpair writes two descriptors into the array it is given.
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0, fds.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    for fd in [&a, &b] {
        set_cloexec(fd.as_raw_fd())?;
    }
    Ok((a, b))
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own touches no Rust memory.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends one packet `data` with `fds` attached. `nonblocking`: fail with `WouldBlock` instead
/// of waiting when the peer's buffer is full (the supervisor must never stall on its zygote).
pub(crate) fn send_packet(socket: BorrowedFd<'_>, data: &[u8], fds: &[RawFd], nonblocking: bool) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::other(format!("{} descriptors for one worker; at most {MAX_FDS}", fds.len())));
    }
    let fd_bytes = std::mem::size_of_val(fds);
    // u64 elements keep the control buffer aligned for `cmsghdr`.
    let mut control = [0u64; (MAX_FDS * 4 + 64) / 8];
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        // SAFETY: CMSG_* only compute sizes and positions within `control`, which is large enough
        // for MAX_FDS descriptors; the copy writes `fd_bytes` bytes inside the first cmsghdr.
        unsafe {
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(fd_bytes as u32) as _;
            let header = libc::CMSG_FIRSTHDR(&msg);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
            std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(header), fd_bytes);
        }
    }
    let flags = if nonblocking { libc::MSG_DONTWAIT } else { 0 };
    loop {
        // SAFETY: `msg` points at `iov`, `data` and `control`, all alive for the call.
        let sent = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, flags) };
        if sent >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Receives one packet into `buf`; returns its length (0: the peer closed) and the descriptors
/// that came with it. `nonblocking`: fail with `WouldBlock` when none is waiting.
pub(crate) fn recv_packet(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    nonblocking: bool,
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut control = [0u64; (MAX_FDS * 4 + 64) / 8];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    let flags = if nonblocking { libc::MSG_DONTWAIT } else { 0 };
    let received = loop {
        // SAFETY: `msg` points at `iov` (over `buf`) and `control`, both alive for the call.
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, flags) };
        if n >= 0 {
            break n as usize;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `control` with `msg_controllen` bytes of cmsghdrs; CMSG_* walk
    // them, and each SCM_RIGHTS payload holds descriptors now owned by this process.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&msg);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let payload = (*header).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(header).cast::<RawFd>();
                for i in 0..payload / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            header = libc::CMSG_NXTHDR(&msg, header);
        }
    }
    if msg.msg_flags & (libc::MSG_CTRUNC | libc::MSG_TRUNC) != 0 {
        return Err(io::Error::other("a message from the supervisor was truncated"));
    }
    Ok((received, fds))
}

/// Sends one JSON message (no descriptors).
pub(crate) fn send_message(socket: BorrowedFd<'_>, msg: &impl Serialize) -> io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(io::Error::other)?;
    line.push(b'\n');
    send_packet(socket, &line, &[], false)
}

/// Parses a request packet (without its trailing newline).
pub(crate) fn parse_request(packet: &[u8]) -> io::Result<ForkRequest> {
    serde_json::from_slice(packet.trim_ascii_end()).map_err(|err| io::Error::other(format!("bad fork request: {err}")))
}

/// The supervisor's end of one zygote's channel.
pub(super) struct ZygoteLink {
    socket: OwnedFd,
    reader: tokio::task::JoinHandle<()>,
}

impl ZygoteLink {
    /// Starts reading the zygote's messages; must run inside the tokio runtime. Each goes to
    /// `on_message` (its exit is seen by waiting for the process). Dropping the link closes
    /// the channel, which tells the zygote to exit.
    pub(super) fn start(
        socket: OwnedFd,
        mut on_message: impl FnMut(ZygoteMessage) + Send + 'static,
    ) -> io::Result<ZygoteLink> {
        // Not a tokio stream: it assumes a short read drained the socket, but a read takes one
        // packet of several waiting, and the rest would wait for the next wake-up.
        // SAFETY: an OwnedFd keeps its one descriptor open until the AsyncFd drops it.
        let reading = unsafe { AsyncFd::register_with_interest(socket.try_clone()?, Interest::READABLE) }
            .map_err(io::Error::from)?;
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_PACKET];
            loop {
                let Ok(mut ready) = reading.readable().await else { return };
                let received = ready.try_io(|fd| recv_packet(fd.get_ref().as_fd(), &mut buf, true));
                let Ok(received) = received else { continue };
                let len = match received {
                    Ok((0, _)) => return,
                    Ok((len, _)) => len,
                    Err(err) => {
                        tracing::warn!("zygote channel: {err}");
                        return;
                    }
                };
                match serde_json::from_slice(buf[..len].trim_ascii_end()) {
                    Ok(msg) => on_message(msg),
                    Err(err) => {
                        tracing::warn!(
                            "unreadable message from the zygote {:?}: {err}",
                            String::from_utf8_lossy(&buf[..len])
                        )
                    }
                }
            }
        });
        Ok(ZygoteLink { socket, reader })
    }

    /// Asks the zygote to fork worker `id` with these descriptors (they are duplicated into
    /// the zygote; the caller still owns and closes its copies).
    pub(super) fn fork(&self, id: u32, control: BorrowedFd<'_>, sockets: &[(SocketKind, RawFd)]) -> io::Result<()> {
        let request = ForkRequest { id, sockets: sockets.iter().map(|&(kind, _)| kind.into()).collect() };
        let mut packet = serde_json::to_vec(&request).map_err(io::Error::other)?;
        packet.push(b'\n');
        let fds: Vec<RawFd> = std::iter::once(control.as_raw_fd()).chain(sockets.iter().map(|&(_, fd)| fd)).collect();
        send_packet(self.socket.as_fd(), &packet, &fds, true)
    }
}

impl Drop for ZygoteLink {
    fn drop(&mut self) {
        // The reader holds a duplicate of the socket: it must go too for the zygote to see EOF.
        self.reader.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, Write};

    use super::*;

    #[test]
    fn a_request_carries_its_descriptors() {
        let (a, b) = pair().expect("socket pair");
        let tmp = std::env::temp_dir().join(format!("wharf-zygote-link-{}", std::process::id()));
        let mut passed =
            std::fs::File::options().create(true).truncate(true).read(true).write(true).open(&tmp).expect("tmp");
        std::fs::remove_file(&tmp).ok();
        passed.write_all(b"through the socket").expect("write");
        let request = ForkRequest { id: 7, sockets: vec![Kind::Tcp] };
        let mut packet = serde_json::to_vec(&request).expect("json");
        packet.push(b'\n');
        send_packet(a.as_fd(), &packet, &[passed.as_raw_fd()], true).expect("send");
        let mut buf = [0u8; MAX_PACKET];
        let (n, fds) = recv_packet(b.as_fd(), &mut buf, false).expect("receive");
        assert_eq!(parse_request(&buf[..n]).expect("parses"), request);
        let mut received = std::fs::File::from(fds.into_iter().next().expect("the descriptor"));
        received.rewind().expect("seek");
        let mut text = String::new();
        received.read_to_string(&mut text).expect("read");
        assert_eq!(text, "through the socket");
        assert!(recv_packet(b.as_fd(), &mut buf, true).is_err_and(|e| e.kind() == io::ErrorKind::WouldBlock));
        drop(a);
        assert_eq!(recv_packet(b.as_fd(), &mut buf, false).expect("eof").0, 0, "a closed peer reads as 0 bytes");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn messages_waiting_together_all_arrive() {
        let (ours, zygote) = pair().expect("socket pair");
        for id in 1..=3 {
            send_message(zygote.as_fd(), &ZygoteMessage::Forked { id, pid: 100 + id as i32 }).expect("send");
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let _link = ZygoteLink::start(ours, move |msg| drop(tx.send(msg))).expect("link");
        for id in 1..=3 {
            let msg = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await;
            assert_eq!(msg.ok().flatten(), Some(ZygoteMessage::Forked { id, pid: 100 + id as i32 }));
        }
    }

    #[test]
    fn messages_are_tagged_json() {
        let text = serde_json::to_string(&ZygoteMessage::Forked { id: 2, pid: 99 }).expect("json");
        assert_eq!(text, r#"{"type":"forked","id":2,"pid":99}"#);
        assert!(parse_request(b"{\"id\":1}\n").is_err(), "sockets are required");
    }
}
