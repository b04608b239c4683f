//! The supervisor: owns the listening sockets, runs `--workers` worker processes, replaces
//! the ones that die or ask to be recycled, and drains everything on SIGTERM.
//!
//! It never imports the application. Workers are forked by a zygote that imported it once
//! (see `zygote`), or, with `--no-preload` or when forking is unsafe, started as fresh
//! processes. Its decisions are a reconcile loop: after every event (worker or zygote
//! message, process exit, signal, tick) it compares the workers (and zygote) it has with the
//! ones it wants and acts on the difference.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

use super::control::{RecycleReason, WorkerChannel, WorkerMessage};
use super::handoff::{HANDOFF_ENV, Handoff, ZYGOTE_ENV};
use super::health::{Health, STALE_HEARTBEAT};
use super::reload::SourceWatcher;
use super::scrape::Scraper;
use super::sockets::Sockets;
use super::zygote_link::{self, ZygoteLink, ZygoteMessage};
use crate::config::Config;
use crate::http::SocketKind;

/// A ready worker silent this long is considered hung and killed. A starting one is allowed
/// `--startup-timeout` instead: importing an app holds the GIL, and heartbeats with it.
const HUNG_WORKER: Duration = Duration::from_secs(30);
/// Consecutive start failures, before any worker was ever ready, that end the server.
const MAX_START_FAILURES: u32 = 5;
const TICK: Duration = Duration::from_millis(200);

/// How to start a worker process.
pub(crate) struct WorkerCommand {
    pub(crate) python: PathBuf,
    pub(crate) args: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Starting,
    Ready,
    Draining { deadline: Instant },
}

struct Worker {
    /// 0 for a forked worker until its zygote reports the pid (it is never signalled then).
    pid: i32,
    /// The zygote generation it was forked from; `None`: a fresh process, our child.
    zygote: Option<u32>,
    /// Its control channel closed: it exited, or is about to.
    closed: bool,
    /// Which set of listening sockets it accepts on (see `sockets`).
    slot: usize,
    state: State,
    /// Replace this worker once a successor is ready.
    retire: Option<&'static str>,
    last_heartbeat: Instant,
    started: Instant,
}

enum Event {
    Message(u32, WorkerMessage),
    Exited(u32, std::io::Result<ExitStatus>),
    /// Worker `id`'s control channel closed.
    Closed(u32),
    Zygote(u32, ZygoteMessage),
    ZygoteExited(u32, std::io::Result<ExitStatus>),
}

/// A zygote process, by generation: a new one starts for each reload and after a crash.
struct Zygote {
    pid: i32,
    link: ZygoteLink,
    /// `Some(started)` while it imports the app.
    importing: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
enum Signal {
    Stop(&'static str),
    Reload,
    MoreWorkers,
    FewerWorkers,
}

pub(crate) struct Supervisor {
    command: WorkerCommand,
    sockets: Sockets,
    graceful_timeout: Duration,
    startup_timeout: Duration,
    shutdown_delay: Duration,
    /// A stop signal under `--shutdown-delay`: /readyz fails, and the drain begins at the instant.
    delayed_stop: Option<(&'static str, Instant)>,
    health: Arc<Health>,
    scraper: Arc<Scraper>,
    watcher: Option<SourceWatcher>,
    workers: BTreeMap<u32, Worker>,
    next_id: u32,
    target: u32,
    events: (mpsc::UnboundedSender<Event>, mpsc::UnboundedReceiver<Event>),
    stopping: Option<(&'static str, Instant)>,
    ever_ready: bool,
    start_failures: u32,
    next_spawn_at: Instant,
    exit_code: Option<i32>,
    /// Workers are forked from a zygote (until `--no-preload` or a fallback says otherwise).
    preload: bool,
    zygotes: BTreeMap<u32, Zygote>,
    next_zygote: u32,
    /// The zygote new workers are forked from: the newest one that imported cleanly.
    current_zygote: Option<u32>,
    /// A reload waits for a new zygote to import before it replaces the workers.
    reload_pending: bool,
    zygote_failures: u32,
    next_zygote_at: Instant,
}

/// Signals one worker; `false` when nothing was sent.
fn send_signal(pid: i32, sig: libc::c_int) -> bool {
    // kill(0) signals the whole process group and kill(-1) every process the user may signal.
    if pid <= 0 {
        tracing::error!(pid, sig, "refusing to send a signal to pid {pid}: not a single worker");
        return false;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; pid is a child we spawned.
    unsafe { libc::kill(pid, sig) == 0 }
}

fn clear_cloexec(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor number is async-signal-safe and touches no Rust memory.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn describe_exit(status: &std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(sig)) => format!("signal {sig}"),
            _ => "unknown status".into(),
        },
        Err(err) => err.to_string(),
    }
}

/// Reports `child`'s exit as the event `exited` makes of it.
fn watch_exit(
    mut child: tokio::process::Child,
    events: mpsc::UnboundedSender<Event>,
    exited: impl FnOnce(std::io::Result<ExitStatus>) -> Event + Send + 'static,
) {
    tokio::spawn(async move {
        let status = child.wait().await.map_err(|err| std::io::Error::other(format!("wait failed: {err}")));
        events.send(exited(status)).ok();
    });
}

impl Supervisor {
    pub(crate) fn new(
        config: &Config,
        command: WorkerCommand,
        sockets: Sockets,
        health: Arc<Health>,
        scraper: Arc<Scraper>,
    ) -> Self {
        let watcher = config.reload.then(|| {
            let dir = config.chdir.clone().unwrap_or_else(|| PathBuf::from("."));
            SourceWatcher::new(dir)
        });
        Supervisor {
            command,
            sockets,
            graceful_timeout: config.graceful_timeout,
            startup_timeout: config.startup_timeout,
            shutdown_delay: config.shutdown_delay,
            delayed_stop: None,
            health,
            scraper,
            watcher,
            workers: BTreeMap::new(),
            next_id: 1,
            target: config.workers,
            events: mpsc::unbounded_channel(),
            stopping: None,
            ever_ready: false,
            start_failures: 0,
            next_spawn_at: Instant::now(),
            exit_code: None,
            preload: !config.no_preload,
            zygotes: BTreeMap::new(),
            next_zygote: 1,
            current_zygote: None,
            reload_pending: false,
            zygote_failures: 0,
            next_zygote_at: Instant::now(),
        }
    }

    /// Runs until every worker has exited after a stop; returns the process exit code.
    pub(crate) async fn run(mut self) -> std::io::Result<i32> {
        let mut signals = supervisor_signals()?;
        let mut tick = tokio::time::interval(TICK);
        self.reconcile();
        loop {
            tokio::select! {
                Some(event) = self.events.1.recv() => self.on_event(event),
                Some(sig) = signals.recv() => self.on_signal(sig),
                _ = tick.tick() => self.on_tick(),
            }
            self.reconcile();
            if self.stopping.is_some() && self.workers.is_empty() {
                // Closing their channels tells the zygotes to exit.
                self.zygotes.clear();
                let code = self.exit_code.unwrap_or(0);
                tracing::info!(code, "all workers stopped; exiting");
                return Ok(code);
            }
        }
    }

    /// Starts worker `next_id` (forked by the current zygote, else a fresh process) and its
    /// control channel; a fresh one also gets a task reporting its exit.
    fn spawn(&mut self) -> std::io::Result<u32> {
        let id = self.next_id;
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        let theirs = OwnedFd::from(theirs);
        let slot = self.free_slot();
        let sockets = self.sockets.for_slot(slot).map_err(|err| std::io::Error::other(err.to_string()))?;
        let (pid, zygote) = match self.current_zygote.and_then(|z| Some((z, self.zygotes.get(&z)?))) {
            Some((generation, zygote)) => {
                zygote.link.fork(id, theirs.as_fd(), &sockets)?;
                // The zygote has its copy of `theirs`; ours closes now, so EOF means the worker exited.
                drop(theirs);
                (0, Some(generation))
            }
            None => {
                let child = self.start_process(id, theirs, sockets)?;
                // A child not yet waited for always has a pid; 0 (never signalled) only guards the type.
                let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
                watch_exit(child, self.events.0.clone(), move |status| Event::Exited(id, status));
                tracing::info!(worker = id, pid, mode = %"fresh", "started worker");
                (pid, None)
            }
        };
        self.next_id += 1;
        self.connect(id, ours)?;
        let now = Instant::now();
        let state = State::Starting;
        let worker =
            Worker { pid, zygote, closed: false, slot, state, retire: None, last_heartbeat: now, started: now };
        self.workers.insert(id, worker);
        Ok(id)
    }

    /// Starts a zygote (generation `next_zygote`) importing the app; workers are forked from it
    /// once it reports the import.
    fn spawn_zygote(&mut self) -> std::io::Result<()> {
        let generation = self.next_zygote;
        let (ours, theirs) = zygote_link::pair()?;
        let fd = theirs.as_raw_fd();
        let mut cmd = std::process::Command::new(&self.command.python);
        cmd.arg("-m").arg("wharf").args(&self.command.args).env(ZYGOTE_ENV, fd.to_string());
        // SAFETY: the closure only calls fcntl (async-signal-safe) on a descriptor number
        // captured before fork; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || clear_cloexec(fd));
        }
        let child = tokio::process::Command::from(cmd).spawn();
        drop(theirs);
        let child = child?;
        let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        let events = self.events.0.clone();
        let link = ZygoteLink::start(ours, move |msg| drop(events.send(Event::Zygote(generation, msg))))?;
        watch_exit(child, self.events.0.clone(), move |status| Event::ZygoteExited(generation, status));
        self.next_zygote += 1;
        tracing::info!(zygote = generation, pid, "started zygote: importing the app once, to fork workers from");
        self.zygotes.insert(generation, Zygote { pid, link, importing: Some(Instant::now()) });
        Ok(())
    }

    /// The slot a new worker takes: the first one no staying worker serves (a retiring or
    /// draining one is on its way out: its successor takes over its slot).
    fn free_slot(&self) -> usize {
        let taken = |slot: usize| {
            self.workers
                .values()
                .any(|w| w.slot == slot && w.retire.is_none() && !matches!(w.state, State::Draining { .. }))
        };
        (0..=self.workers.len()).find(|&slot| !taken(slot)).unwrap_or(self.workers.len())
    }

    /// The worker process, inheriting its sockets and its end of the control channel.
    fn start_process(
        &self,
        id: u32,
        control: OwnedFd,
        sockets: Vec<(SocketKind, RawFd)>,
    ) -> std::io::Result<tokio::process::Child> {
        let handoff = Handoff { worker_id: id, control: control.as_raw_fd(), sockets };
        let inherit: Vec<RawFd> = handoff.sockets.iter().map(|&(_, fd)| fd).chain([handoff.control]).collect();
        let mut cmd = std::process::Command::new(&self.command.python);
        cmd.arg("-m").arg("wharf").args(&self.command.args).env(HANDOFF_ENV, handoff.encode());
        // SAFETY: the closure only calls fcntl (async-signal-safe) on descriptor numbers
        // captured before fork; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                for fd in &inherit {
                    clear_cloexec(*fd)?;
                }
                Ok(())
            });
        }
        let child = tokio::process::Command::from(cmd).spawn();
        // The child has its copy (or failed to start); ours must close so EOF means it exited.
        drop(control);
        child
    }

    /// The supervisor's end of worker `id`'s control channel: metrics go to the scraper, every
    /// other message becomes an event.
    fn connect(&self, id: u32, stream: std::os::unix::net::UnixStream) -> std::io::Result<()> {
        let (latest_tx, latest) = watch::channel((0, None));
        let events = self.events.0.clone();
        let scraper = Arc::clone(&self.scraper);
        let closed = self.events.0.clone();
        let channel = WorkerChannel::start(
            id,
            stream,
            move |msg| match msg {
                WorkerMessage::Metrics { seq, snapshot } => {
                    latest_tx.send_replace((seq, Some(*snapshot)));
                    true
                }
                msg => events.send(Event::Message(id, msg)).is_ok(),
            },
            // The worker is gone (its last metrics, if any, arrived before the end of stream).
            move || {
                scraper.retire(id);
                closed.send(Event::Closed(id)).ok();
            },
        )?;
        self.scraper.register(id, channel, latest);
        Ok(())
    }

    fn drain(&mut self, id: u32, why: &str) {
        let graceful = self.graceful_timeout;
        if let Some(w) = self.workers.get_mut(&id)
            && !matches!(w.state, State::Draining { .. })
        {
            tracing::info!(worker = id, pid = w.pid, "draining worker ({why})");
            w.signal(libc::SIGTERM);
            w.state = State::Draining { deadline: Instant::now() + graceful };
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Message(id, msg) => {
                let Some(w) = self.workers.get_mut(&id) else { return };
                w.last_heartbeat = Instant::now();
                match msg {
                    WorkerMessage::Ready => {
                        if w.state == State::Starting {
                            w.state = State::Ready;
                            self.ever_ready = true;
                            self.start_failures = 0;
                            let (mode, took) = (w.mode(), w.started.elapsed());
                            self.scraper.worker_started(mode, took.as_secs_f64());
                            tracing::info!(worker = id, pid = w.pid, mode = %mode, took = ?took, "worker ready");
                        }
                    }
                    WorkerMessage::Heartbeat { .. } | WorkerMessage::Metrics { .. } => {}
                    WorkerMessage::Recycle { reason } => {
                        if w.retire.is_none() {
                            tracing::info!(worker = id, reason = reason.as_str(), "worker asks to be replaced");
                            w.retire = Some(reason.as_str());
                        }
                        if reason == RecycleReason::Timeout {
                            tracing::warn!(worker = id, "a request exceeded --timeout; replacing the worker");
                        }
                    }
                }
            }
            Event::Exited(id, status) => {
                let Some(w) = self.workers.remove(&id) else { return };
                let how = describe_exit(&status);
                match w.state {
                    State::Draining { .. } => {
                        tracing::info!(worker = id, pid = w.pid, "worker exited after draining ({how})")
                    }
                    State::Ready => {
                        tracing::error!(worker = id, pid = w.pid, "worker died ({how}); starting a replacement");
                        self.scraper.restarted("crash");
                    }
                    State::Starting => self.on_start_failure(id, &status, &how),
                }
            }
            Event::Closed(id) => {
                let Some(w) = self.workers.get_mut(&id) else { return };
                w.closed = true;
                if w.zygote.is_some_and(|z| !self.zygotes.contains_key(&z)) {
                    self.orphan_exited(id);
                }
            }
            Event::Zygote(generation, msg) => self.on_zygote_message(generation, msg),
            Event::ZygoteExited(generation, status) => self.on_zygote_exit(generation, &status),
        }
    }

    /// A forked worker whose zygote is gone (no one reports its exit status) closed its channel.
    fn orphan_exited(&mut self, id: u32) {
        let unknown = std::io::Error::other("exit status unknown: its zygote exited first");
        self.on_event(Event::Exited(id, Err(unknown)));
    }

    fn on_zygote_message(&mut self, generation: u32, msg: ZygoteMessage) {
        match msg {
            ZygoteMessage::Imported { seconds, threads } => {
                let Some(zygote) = self.zygotes.get_mut(&generation) else { return };
                zygote.importing = None;
                if !threads.is_empty() {
                    tracing::warn!(
                        threads = threads.join(", "),
                        "the app started threads while it was imported; forking would copy them stopped \
                         mid-work, so workers start as fresh processes instead (each imports the app; \
                         --no-preload says so up front)"
                    );
                    self.preload = false;
                    self.current_zygote = None;
                    self.zygotes.remove(&generation);
                    if std::mem::take(&mut self.reload_pending) {
                        self.retire_all("reload");
                    }
                    return;
                }
                let took = Duration::try_from_secs_f64(seconds).unwrap_or_default();
                tracing::info!(zygote = generation, pid = zygote.pid, took = ?took, "zygote ready");
                self.current_zygote = Some(generation);
                self.zygote_failures = 0;
                if std::mem::take(&mut self.reload_pending) {
                    self.retire_all("reload");
                }
            }
            ZygoteMessage::Forked { id, pid } => {
                let Some(w) = self.workers.get_mut(&id) else { return };
                w.pid = pid;
                tracing::info!(worker = id, pid, mode = %"fork", zygote = generation, "started worker");
                if matches!(w.state, State::Draining { .. }) {
                    w.signal(libc::SIGTERM);
                }
            }
            ZygoteMessage::Exited { id, status } => self.on_event(Event::Exited(id, Ok(ExitStatus::from_raw(status)))),
        }
    }

    fn on_zygote_exit(&mut self, generation: u32, status: &std::io::Result<ExitStatus>) {
        let Some(zygote) = self.zygotes.remove(&generation) else { return };
        let how = describe_exit(status);
        if self.current_zygote == Some(generation) {
            self.current_zygote = None;
        }
        // Its workers keep serving; their exits now show as their control channels closing.
        let orphans: Vec<u32> =
            self.workers.iter().filter(|(_, w)| w.zygote == Some(generation) && w.closed).map(|(id, _)| *id).collect();
        for id in orphans {
            self.orphan_exited(id);
        }
        if self.stopping.is_some() {
            return;
        }
        if zygote.importing.is_none() && self.current_zygote.is_some() {
            // An old zygote (before a reload) whose workers still drain: nothing forks from it.
            tracing::warn!(zygote = generation, pid = zygote.pid, "previous zygote exited ({how})");
            return;
        }
        let code = status.as_ref().ok().and_then(|s| s.code());
        self.zygote_failures += 1;
        if zygote.importing.is_some()
            && !self.ever_ready
            && (matches!(code, Some(2 | 3)) || self.zygote_failures >= MAX_START_FAILURES)
        {
            // As for a fresh worker: the app cannot start at all, restarting would only repeat it.
            tracing::error!(zygote = generation, "the app failed to import ({how}); stopping");
            self.exit_code = Some(code.filter(|c| *c != 0).unwrap_or(1));
            self.begin_stop("startup failure");
            return;
        }
        let backoff = Duration::from_millis(100 * (1 << self.zygote_failures.min(7))).min(Duration::from_secs(10));
        let serving = if self.workers.is_empty() { "" } else { "; the workers keep serving" };
        tracing::error!(
            zygote = generation,
            pid = zygote.pid,
            "zygote exited ({how}){serving}; starting a new one in {backoff:?}"
        );
        self.next_zygote_at = Instant::now() + backoff;
    }

    fn on_start_failure(&mut self, id: u32, status: &std::io::Result<ExitStatus>, how: &str) {
        if self.stopping.is_some() {
            return;
        }
        let code = status.as_ref().ok().and_then(|s| s.code());
        self.start_failures += 1;
        if !self.ever_ready && (matches!(code, Some(2 | 3)) || self.start_failures >= MAX_START_FAILURES) {
            // The application cannot start at all (import error, bad config): restarting it
            // would only repeat the same failure.
            tracing::error!(worker = id, "worker failed to start ({how}); stopping");
            self.exit_code = Some(code.filter(|c| *c != 0).unwrap_or(1));
            self.begin_stop("startup failure");
            return;
        }
        let backoff = Duration::from_millis(100 * (1 << self.start_failures.min(7))).min(Duration::from_secs(10));
        tracing::error!(worker = id, "worker failed to start ({how}); retrying in {backoff:?}");
        self.next_spawn_at = Instant::now() + backoff;
    }

    fn on_signal(&mut self, sig: Signal) {
        match sig {
            Signal::Stop(name) if self.stopping.is_some() => {
                tracing::warn!(signal = name, "second stop signal: killing workers now");
                for w in self.workers.values() {
                    w.signal(libc::SIGKILL);
                }
                self.exit_code.get_or_insert(1);
            }
            // SIGINT is someone at a terminal: no load balancer to wait for.
            Signal::Stop(name) if self.shutdown_delay.is_zero() || name == "SIGINT" || self.delayed_stop.is_some() => {
                self.begin_stop(name)
            }
            Signal::Stop(name) => {
                tracing::info!(
                    signal = name,
                    delay = ?self.shutdown_delay,
                    "stop signal: /readyz fails from now on; serving on until --shutdown-delay has passed, then draining"
                );
                self.health.update(|h| h.draining = true);
                self.delayed_stop = Some((name, Instant::now() + self.shutdown_delay));
            }
            Signal::Reload => self.reload(),
            Signal::MoreWorkers => {
                self.target += 1;
                tracing::info!(workers = self.target, "SIGTTIN: one more worker");
            }
            Signal::FewerWorkers => {
                if self.target > 1 {
                    self.target -= 1;
                    tracing::info!(workers = self.target, "SIGTTOU: one worker fewer");
                }
            }
        }
    }

    /// SIGHUP or a source change. With a zygote: a new one imports the new code, and only once
    /// it did are the workers replaced (broken code leaves the old ones serving).
    fn reload(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        if !self.preload {
            self.retire_all("reload");
            return;
        }
        tracing::info!("reload: a new zygote imports the code; the workers are replaced once it did");
        // One still importing has older code.
        self.kill_importing_zygotes();
        self.reload_pending = true;
        self.zygote_failures = 0;
        self.next_zygote_at = Instant::now();
    }

    fn retire_all(&mut self, why: &'static str) {
        if self.stopping.is_some() {
            return;
        }
        tracing::info!("{why}: replacing all workers with freshly started ones");
        for w in self.workers.values_mut() {
            if !matches!(w.state, State::Draining { .. }) {
                w.retire = Some(why);
            }
        }
        self.start_failures = 0;
        self.next_spawn_at = Instant::now();
    }

    fn begin_stop(&mut self, why: &'static str) {
        if self.stopping.is_some() {
            return;
        }
        tracing::info!(reason = why, "stopping: draining all workers");
        self.stopping = Some((why, Instant::now()));
        // Once the workers stop accepting too, the sockets close and new connections are
        // refused at once instead of waiting in a backlog nobody will serve.
        self.sockets.close();
        self.health.update(|h| h.draining = true);
        let ids: Vec<u32> = self.workers.keys().copied().collect();
        for id in ids {
            self.drain(id, why);
        }
        // A zygote that has not imported yet would only import for nothing.
        self.kill_importing_zygotes();
    }

    /// Kills and forgets zygotes still importing (their exit is no failure then).
    fn kill_importing_zygotes(&mut self) {
        self.zygotes.retain(|_, zygote| {
            if zygote.importing.is_some() {
                send_signal(zygote.pid, libc::SIGKILL);
            }
            zygote.importing.is_none()
        });
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        for (id, w) in &self.workers {
            match w.state {
                State::Draining { deadline } if now >= deadline => {
                    tracing::warn!(worker = id, pid = w.pid, "graceful timeout passed; killing worker");
                    w.signal(libc::SIGKILL);
                }
                State::Ready if now.duration_since(w.last_heartbeat) >= HUNG_WORKER => {
                    tracing::error!(worker = id, pid = w.pid, "worker stopped heartbeating; killing it");
                    w.signal(libc::SIGKILL);
                }
                State::Starting if now.duration_since(w.started) >= self.startup_timeout => {
                    tracing::error!(
                        worker = id,
                        pid = w.pid,
                        "worker not ready within --startup-timeout ({:?}); killing it (raise --startup-timeout for apps that import slowly)",
                        self.startup_timeout
                    );
                    w.signal(libc::SIGKILL);
                }
                _ => {}
            }
        }
        for (generation, zygote) in &self.zygotes {
            if zygote.importing.is_some_and(|started| now.duration_since(started) >= self.startup_timeout) {
                tracing::error!(
                    zygote = generation,
                    pid = zygote.pid,
                    "zygote not ready within --startup-timeout ({:?}); killing it (raise --startup-timeout for apps that import slowly)",
                    self.startup_timeout
                );
                send_signal(zygote.pid, libc::SIGKILL);
            }
        }
        if let Some((name, _)) = self.delayed_stop.filter(|(_, at)| now >= *at) {
            self.delayed_stop = None;
            self.begin_stop(name);
        }
        if self.watcher.as_mut().is_some_and(SourceWatcher::changed) {
            tracing::info!("source change detected");
            self.reload();
        }
    }

    fn reconcile(&mut self) {
        let now = Instant::now();
        let ready = self.workers.values().filter(|w| w.state == State::Ready).count();
        let stale = self
            .workers
            .values()
            .filter(|w| w.state == State::Ready && now.duration_since(w.last_heartbeat) >= STALE_HEARTBEAT)
            .count();
        self.health.update(|h| {
            h.ready_workers = ready;
            h.stale_workers = stale;
            h.supervisor_tick = now;
        });
        if self.stopping.is_some() {
            return;
        }
        self.reconcile_zygotes(now);
        let target = self.target as usize;
        let keep = |w: &Worker| w.retire.is_none() && !matches!(w.state, State::Draining { .. });
        let kept = self.workers.values().filter(|w| keep(w)).count();
        // With a zygote, workers wait for it to import.
        let can_spawn = !self.preload || self.current_zygote.is_some();
        if kept < target && now >= self.next_spawn_at && can_spawn {
            for _ in kept..target {
                if let Err(err) = self.spawn() {
                    tracing::error!("cannot start a worker: {err}");
                    self.next_spawn_at = now + Duration::from_secs(1);
                    break;
                }
            }
        }
        // Retire or scale down only while enough ready workers remain to carry the traffic.
        let kept_ready = self.workers.values().filter(|w| keep(w) && w.state == State::Ready).count();
        let mut surplus = (ready).saturating_sub(target.min(kept_ready.max(target)));
        let retiring: Vec<u32> = self
            .workers
            .iter()
            .filter(|(_, w)| w.retire.is_some() && w.state == State::Ready)
            .map(|(id, _)| *id)
            .collect();
        for id in retiring {
            if kept_ready >= target || surplus > 0 {
                let why = self.workers.get(&id).and_then(|w| w.retire).unwrap_or("retired");
                self.scraper.restarted(why);
                self.drain(id, why);
                surplus = surplus.saturating_sub(1);
            }
        }
        if kept > target {
            // The highest slots go, so the slots left are 0..target and the last ones close.
            let mut staying: Vec<(usize, u32)> =
                self.workers.iter().filter(|(_, w)| keep(w)).map(|(id, w)| (w.slot, *id)).collect();
            staying.sort_unstable_by(|a, b| b.cmp(a));
            for (_, id) in staying.into_iter().take(kept - target) {
                self.drain(id, "scale down");
            }
        }
        while self.sockets.slots() > target.max(1) && !self.workers.values().any(|w| w.slot + 1 == self.sockets.slots())
        {
            self.sockets.close_last_slot();
        }
    }
}

impl Supervisor {
    /// Starts a zygote when one is wanted (none to fork from yet, or a reload waits for one)
    /// and lets go of old ones no worker came from anymore.
    fn reconcile_zygotes(&mut self, now: Instant) {
        let importing = self.zygotes.values().any(|z| z.importing.is_some());
        let wanted = self.preload && (self.current_zygote.is_none() || self.reload_pending);
        if wanted
            && !importing
            && now >= self.next_zygote_at
            && let Err(err) = self.spawn_zygote()
        {
            tracing::warn!("cannot start a zygote ({err}); workers start as fresh processes instead");
            self.preload = false;
            if std::mem::take(&mut self.reload_pending) {
                self.retire_all("reload");
            }
        }
        let workers = &self.workers;
        let current = self.current_zygote;
        // Dropping a zygote closes its channel: it exits. One with workers still reports their exits.
        self.zygotes.retain(|generation, zygote| {
            zygote.importing.is_some()
                || current == Some(*generation)
                || workers.values().any(|w| w.zygote == Some(*generation))
        });
    }
}

impl Worker {
    /// Signals the worker, once its pid is known (a forked one's arrives with `Forked`).
    fn signal(&self, sig: libc::c_int) {
        if self.pid != 0 {
            send_signal(self.pid, sig);
        }
    }

    /// How it was started, for logs and `wharf_worker_start_seconds`.
    fn mode(&self) -> &'static str {
        if self.zygote.is_some() { "fork" } else { "fresh" }
    }
}

fn supervisor_signals() -> std::io::Result<mpsc::Receiver<Signal>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut ttin = signal(SignalKind::from_raw(libc::SIGTTIN))?;
    let mut ttou = signal(SignalKind::from_raw(libc::SIGTTOU))?;
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let sig = tokio::select! {
                Some(()) = term.recv() => Signal::Stop("SIGTERM"),
                Some(()) = int.recv() => Signal::Stop("SIGINT"),
                Some(()) = hup.recv() => Signal::Reload,
                Some(()) = ttin.recv() => Signal::MoreWorkers,
                Some(()) = ttou.recv() => Signal::FewerWorkers,
                else => return,
            };
            if tx.send(sig).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_go_to_one_process_only() {
        // Signal 0 only checks that the target exists: nothing is disturbed if this fails.
        assert!(!send_signal(0, 0), "0 is the whole process group");
        assert!(!send_signal(-1, 0), "-1 is every process we may signal");
        assert!(send_signal(i32::try_from(std::process::id()).expect("pid fits"), 0));
    }
}
