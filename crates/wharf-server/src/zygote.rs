//! The zygote process: imports the app once, freezes what the import created, and forks
//! workers from it when the supervisor asks, so workers share the imported code and data
//! with it (copy-on-write) and start in milliseconds.
//!
//! It runs nothing else: no tokio runtime and no threads, because `fork` copies only the
//! calling thread and a thread stopped mid-work (holding a lock) would stay that way in every
//! worker. That is also why an app that starts threads while importing is not forked from:
//! the zygote reports them and exits, and the supervisor starts fresh processes instead.
//!
//! Forks follow CPython's protocol (`PyOS_BeforeFork`, `PyOS_AfterFork_Parent`,
//! `PyOS_AfterFork_Child`), so `os.register_at_fork` hooks run, `random` is reseeded and
//! locks are reset in the child exactly as after `os.fork()`. The child leaves the zygote's
//! loop and becomes an ordinary worker ([`worker::serve_app`]).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Instant;

use pyo3::prelude::*;

use crate::config::Config;
use crate::error::StartError;
use crate::observe::{Started, logging};
use crate::process::{Handoff, ZygoteMessage, parse_request, recv_packet, send_message};
use crate::{worker, wsgi};

/// Runs this process as the zygote on the channel `link`; returns the exit code (in a forked
/// child: the worker's exit code).
pub(crate) fn serve_zygote(py: Python<'_>, config: &Config, link: OwnedFd) -> Result<i32, StartError> {
    worker::limit_malloc_arenas();
    let started = Instant::now();
    let app = wsgi::load_app(py, config)?;
    let threads = other_threads(py);
    let unsafe_to_fork = !threads.is_empty();
    if !unsafe_to_fork {
        freeze(py);
    }
    let seconds = started.elapsed().as_secs_f64();
    send_message(link.as_fd(), &ZygoteMessage::Imported { seconds, threads }).map_err(StartError::Runtime)?;
    if unsafe_to_fork {
        // The app's threads may not be daemons: interpreter shutdown would wait for them.
        std::process::exit(0);
    }
    let reaper = Reaper::install().map_err(StartError::Runtime)?;
    match serve_forks(py, &link, &reaper) {
        Ok(Some(handoff)) => {
            let started = Started::now();
            logging::tag_worker(handoff.worker_id);
            reaper.uninstall();
            drop(link);
            worker::serve_app(py, config, handoff, app, started)
        }
        Ok(None) => Ok(0),
        Err(err) => {
            tracing::error!("zygote: {err}; exiting (the supervisor starts a new one)");
            Ok(1)
        }
    }
}

/// Names of the threads alive besides this one: Python's, plus a count of native threads
/// Python does not know about (Linux only, where `/proc` tells).
fn other_threads(py: Python<'_>) -> Vec<String> {
    let named: Vec<String> = py
        .import("threading")
        .and_then(|threading| {
            let main = threading.call_method0("main_thread")?;
            let mut names = Vec::new();
            for thread in threading.call_method0("enumerate")?.try_iter()? {
                let thread = thread?;
                if !thread.is(&main) {
                    names.push(thread.getattr("name")?.extract::<String>()?);
                }
            }
            Ok::<_, PyErr>(names)
        })
        .unwrap_or_else(|err| vec![format!("(threads could not be listed: {err})")]);
    let native = std::fs::read_dir("/proc/self/task").map(|tasks| tasks.count().saturating_sub(1)).unwrap_or(0);
    let unnamed = native.saturating_sub(named.len());
    let mut threads = named;
    if unnamed > 0 {
        threads.push(format!("{unnamed} native thread(s) not started by Python's threading"));
    }
    threads
}

/// Moves everything the import created into the GC's permanent generation: a collection in a
/// worker then never writes to those objects' headers, which would copy their pages.
fn freeze(py: Python<'_>) {
    let frozen = py.import("gc").and_then(|gc| {
        gc.call_method0("collect")?;
        gc.call_method0("freeze")
    });
    if let Err(err) = frozen {
        tracing::warn!("gc.freeze() failed ({err}); workers share less memory");
    }
}

/// Serves fork requests until the supervisor closes the channel (`None`) or, in a forked
/// child, returns that child's handoff.
fn serve_forks(py: Python<'_>, link: &OwnedFd, reaper: &Reaper) -> io::Result<Option<Handoff>> {
    let mut children: HashMap<i32, u32> = HashMap::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let mut polled = [
            libc::pollfd { fd: link.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: reaper.wake.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: poll reads and writes the two pollfd entries of the array it is given.
        if unsafe { libc::poll(polled.as_mut_ptr(), 2, -1) } < 0 {
            let err = io::Error::last_os_error();
            // The SIGCHLD handler may leave EAGAIN in errno after interrupting poll.
            if matches!(err.kind(), io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock) {
                continue;
            }
            return Err(err);
        }
        if polled[1].revents != 0 {
            reaper.drain();
            reap(link, &mut children)?;
        }
        if polled[0].revents == 0 {
            continue;
        }
        let (len, fds) = recv_packet(link.as_fd(), &mut buf, false)?;
        if len == 0 {
            return Ok(None);
        }
        let request = parse_request(&buf[..len])?;
        if fds.len() != request.sockets.len() + 1 {
            return Err(io::Error::other(format!(
                "fork request for worker {} carried {} descriptors, expected {}",
                request.id,
                fds.len(),
                request.sockets.len() + 1
            )));
        }
        match fork(py)? {
            Forked::Child => {
                let mut fds = fds.into_iter().map(IntoRawFd::into_raw_fd);
                let control = fds.next().unwrap_or(-1);
                let sockets = request.sockets.iter().map(|&kind| kind.into()).zip(fds).collect();
                return Ok(Some(Handoff { worker_id: request.id, control, sockets }));
            }
            Forked::Parent(pid) => {
                // `fds` close here: the child has its copies.
                children.insert(pid, request.id);
                send_message(link.as_fd(), &ZygoteMessage::Forked { id: request.id, pid })?;
            }
        }
    }
}

/// Reports every forked worker that exited.
fn reap(link: &OwnedFd, children: &mut HashMap<i32, u32>) -> io::Result<()> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into the integer it is given.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return Ok(());
        }
        // Other children (processes the app started while importing) are reaped silently.
        if let Some(id) = children.remove(&pid) {
            send_message(link.as_fd(), &ZygoteMessage::Exited { id, status })?;
        }
    }
}

enum Forked {
    Parent(i32),
    Child,
}

/// `fork()` wrapped in CPython's fork protocol; the GIL is held throughout.
fn fork(_py: Python<'_>) -> io::Result<Forked> {
    // SAFETY: called with the GIL held (the `Python` token) from the only thread of this
    // process; each PyOS_* call is the one CPython's os.fork() makes at the same point.
    unsafe {
        pyo3::ffi::PyOS_BeforeFork();
        let pid = libc::fork();
        if pid == 0 {
            pyo3::ffi::PyOS_AfterFork_Child();
            return Ok(Forked::Child);
        }
        let err = io::Error::last_os_error();
        pyo3::ffi::PyOS_AfterFork_Parent();
        if pid < 0 { Err(err) } else { Ok(Forked::Parent(pid)) }
    }
}

/// Where the SIGCHLD handler writes a byte; -1 when none is installed.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigchld(_: libc::c_int) {
    let fd = WAKE_FD.load(Ordering::Relaxed);
    // SAFETY: write(2) is async-signal-safe; a full pipe (EAGAIN) already means "wake up".
    unsafe {
        libc::write(fd, [1u8].as_ptr().cast(), 1);
    }
}

/// Wakes the fork loop when a child exits: a SIGCHLD handler writing to a pipe the loop polls
/// (no thread, and nothing the forked workers inherit: they get the previous disposition back).
struct Reaper {
    wake: OwnedFd,
    _write: OwnedFd,
    previous: libc::sigaction,
}

impl Reaper {
    fn install() -> io::Result<Reaper> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe writes two descriptors into the array it is given.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let (wake, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        for fd in [wake.as_raw_fd(), write.as_raw_fd()] {
            // SAFETY: fcntl on descriptors we own touches no Rust memory.
            let ok = unsafe {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) >= 0
                    && libc::fcntl(fd, libc::F_SETFL, libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK) >= 0
            };
            if !ok {
                return Err(io::Error::last_os_error());
            }
        }
        WAKE_FD.store(write.as_raw_fd(), Ordering::Relaxed);
        // SAFETY: the handler only calls write(2) on a descriptor that outlives its installation
        // (uninstall restores the previous action before the pipe closes); the structs are
        // plain C data.
        let previous = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigchld as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART | libc::SA_NOCLDSTOP;
            libc::sigemptyset(&mut action.sa_mask);
            let mut previous: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGCHLD, &action, &mut previous) < 0 {
                return Err(io::Error::last_os_error());
            }
            previous
        };
        Ok(Reaper { wake, _write: write, previous })
    }

    fn drain(&self) {
        let mut sink = [0u8; 64];
        // SAFETY: reads into a local buffer from a non-blocking pipe we own.
        while unsafe { libc::read(self.wake.as_raw_fd(), sink.as_mut_ptr().cast(), sink.len()) } > 0 {}
    }

    /// In a forked worker: SIGCHLD as the app left it, and the pipe closed.
    fn uninstall(self) {
        // SAFETY: restores the action saved by `install`.
        unsafe {
            libc::sigaction(libc::SIGCHLD, &self.previous, std::ptr::null_mut());
        }
        WAKE_FD.store(-1, Ordering::Relaxed);
    }
}
