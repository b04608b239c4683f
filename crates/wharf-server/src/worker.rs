//! Process entry: parse the command line, then run as the supervisor (the process the user
//! started) or as one of its workers (started by the supervisor with an inherited handoff).
//!
//! A worker imports the app, adopts the inherited sockets, starts the Python threads and the
//! I/O runtime, reports ready, serves until told to stop, drains, and exits.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use pyo3::prelude::*;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::access_log::AccessLog;
use crate::admin;
use crate::app;
use crate::config::Config;
use crate::control::{ControlClient, WorkerMessage};
use crate::environ::{EnvironSettings, EnvironTemplate};
use crate::error::StartError;
use crate::errors_stream::ErrorStream;
use crate::file_wrapper::FileWrapper;
use crate::handler::AppContext;
use crate::handoff::{self, Handoff, SharedSocket};
use crate::input::WsgiInput;
use crate::health::Health;
use crate::limits::Limits;
use crate::listener::Listener;
use crate::metrics::WorkerMetrics;
use crate::otel::Tracing;
use crate::outbox::Outbox;
use crate::pool::Pool;
use crate::sched;
use crate::scrape::Scraper;
use crate::server::{Drained, Server, Timeouts};
use crate::service::Shared;
use crate::supervisor::{Supervisor, WorkerCommand};
use crate::telemetry;
use crate::watchdog::Watchdog;

/// `wharf ...`: parses `argv` and runs. Returns the process exit code.
pub fn main(py: Python<'_>, argv: Vec<String>) -> i32 {
    let config = match Config::try_parse_from(&argv) {
        Ok(config) => config,
        Err(err) => {
            let code = if err.use_stderr() { 2 } else { 0 };
            // clap formats usage errors and --help itself; a failed print has nowhere to go.
            err.print().ok();
            return code;
        }
    };
    let handoff = match Handoff::from_env() {
        Ok(handoff) => handoff,
        Err(message) => {
            eprintln!("wharf: error: {message}");
            return 2;
        }
    };
    if let Err(message) = telemetry::init(&config) {
        eprintln!("wharf: error: {message}");
        return 2;
    }
    take_over_sigint(py, handoff.is_some());
    let result = match handoff {
        Some(handoff) => serve_worker(py, &config, handoff),
        None => supervise(py, &config, argv.into_iter().skip(1).collect()),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("wharf: error: {err}");
            err.exit_code()
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, StartError> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(StartError::Runtime)
}

/// The supervisor: binds the sockets once and keeps `--workers` workers running.
fn supervise(py: Python<'_>, config: &Config, args: Vec<String>) -> Result<i32, StartError> {
    config.app_target().map_err(StartError::InvalidConfig)?;
    let python: String = py
        .import("sys")
        .and_then(|sys| sys.getattr("executable")?.extract())
        .map_err(|err| StartError::InvalidConfig(format!("cannot find the Python interpreter: {err}")))?;
    if python.is_empty() {
        return Err(StartError::InvalidConfig("cannot find the Python interpreter (sys.executable is empty)".into()));
    }
    let runtime = runtime()?;
    let (sockets, admin_listener) = {
        let _entered = runtime.enter();
        let sockets = match handoff::systemd_sockets()? {
            Some(sockets) => sockets,
            None => config
                .binds
                .iter()
                .map(|spec| SharedSocket::from_listener(Listener::bind(spec, config.backlog)?))
                .collect::<Result<Vec<_>, _>>()?,
        };
        let admin = config.admin_bind.as_ref().map(|spec| Listener::bind(spec, 128)).transpose()?;
        (sockets, admin)
    };
    for socket in &sockets {
        tracing::info!("listening on {}", socket.describe);
    }
    let health = Arc::new(Health::new());
    let scraper = Arc::new(Scraper::default());
    let supervisor = Supervisor::new(
        config,
        WorkerCommand { python: python.into(), args },
        sockets,
        Arc::clone(&health),
        Arc::clone(&scraper),
    );
    tracing::info!(app = %config.app, workers = config.workers, threads = config.threads, pid = std::process::id(), "wharf {} starting", env!("CARGO_PKG_VERSION"));
    py.detach(|| {
        runtime.block_on(async {
            if let Some(listener) = admin_listener {
                tokio::spawn(admin::serve(listener, health, scraper));
            }
            supervisor.run().await.map_err(StartError::Runtime)
        })
    })
}

/// `--max-requests` plus a random share of `--max-requests-jitter`.
fn recycle_after(config: &Config) -> Option<u64> {
    if config.max_requests == 0 {
        return None;
    }
    let jitter = match config.max_requests_jitter {
        0 => 0,
        j => RandomState::new().hash_one(std::process::id()) % (j + 1),
    };
    Some(config.max_requests.saturating_add(jitter))
}

/// glibc gives each thread that allocates its own arena (up to 8 per core) and keeps freed
/// memory in them: with dozens of Python threads building responses, a worker's RSS settles
/// several times higher than what it holds (measured: 118 MiB vs 23 MiB serving 100 KiB
/// streamed responses with 64 threads, same throughput). Two arenas are plenty when the GIL
/// serialises most allocation anyway. `MALLOC_ARENA_MAX` in the environment still wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only adjusts allocator tuning; it is called before the Python
        // threads of this worker start.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

fn serve_worker(py: Python<'_>, config: &Config, handoff: Handoff) -> Result<i32, StartError> {
    limit_malloc_arenas();
    let app = app::load(py, config)?;
    let runtime = runtime()?;
    let listeners = {
        let _entered = runtime.enter();
        handoff.listeners()?
    };
    // SAFETY: the supervisor passed this descriptor to this worker for the control channel.
    let control_fd = unsafe { OwnedFd::from_raw_fd(handoff.control) };

    let settings = EnvironSettings {
        root_path: config.root_path.clone(),
        multithread: config.threads > 1,
        multiprocess: config.workers > 1,
        trusted_proxies: config.forwarded_allow_ips.clone(),
    };
    let template = (|| {
        let errors = Bound::new(py, ErrorStream)?.into_any();
        let file_wrapper = py.get_type::<FileWrapper>().into_any();
        EnvironTemplate::new(py, &settings, errors, file_wrapper)
    })()
    .map_err(|err| StartError::InvalidConfig(format!("cannot prepare environ: {err}")))?;
    let metrics = Arc::new(WorkerMetrics::new(u64::from(config.threads)));
    let outbox = Arc::new(Outbox::default());
    let empty_input = Py::new(py, WsgiInput::new(None, 0, config.io_timeout))
        .map_err(|err| StartError::InvalidConfig(format!("cannot prepare wsgi.input: {err}")))?;
    let ctx = Arc::new(AppContext {
        app,
        empty_input,
        outbox: Arc::clone(&outbox),
        environ: template,
        limit_request_body: config.limit_request_body,
        io_timeout: config.io_timeout,
        metrics: Arc::clone(&metrics),
    });
    let watchdog = config.request_timeout().map(|t| Arc::new(Watchdog::new(t, config.threads as usize)));
    let pool = Pool::start(ctx, config.threads, config.queue_size, watchdog.clone())?;
    let access_log = if config.access_log {
        Some(AccessLog::start(config.access_log_format).map_err(StartError::Thread)?)
    } else {
        None
    };
    let graceful = config.graceful_timeout;
    let queue = pool.queue();
    let otel = Tracing::from_env("wharf")
        .map_err(|err| StartError::InvalidConfig(format!("OpenTelemetry configuration: {err}")))?
        .map(Arc::new);

    let drained = py.detach(|| {
        sched::batch_wakeups();
        runtime.block_on(async {
            let (stop_tx, stop_rx) = mpsc::channel(4);
            forward_stop_signals(stop_tx.clone()).map_err(StartError::Runtime)?;
            let served = Arc::new(AtomicU64::new(0));
            let snapshot = {
                let (metrics, queue, otel) = (Arc::clone(&metrics), Arc::clone(&queue), otel.clone());
                move || metrics.snapshot(queue.load(), otel.as_ref().map_or(0, |t| t.dropped()))
            };
            let control = {
                let served = Arc::clone(&served);
                let snapshot = snapshot.clone();
                ControlClient::start(
                    control_fd,
                    move || served.load(Ordering::Relaxed),
                    snapshot,
                    move || {
                        tracing::warn!("supervisor is gone; draining");
                        stop_tx.try_send("supervisor exit").ok();
                    },
                )
                .map_err(StartError::Runtime)?
            };
            let shared = Arc::new(Shared {
                queue,
                limits: Limits { request_line: config.limit_request_line as usize, body: config.limit_request_body },
                access_log,
                timeout: watchdog.is_some(),
                draining: Default::default(),
                served: Arc::clone(&served),
                recycle_after: recycle_after(config),
                control: Some(control),
                metrics: Arc::clone(&metrics),
                tracing: otel.clone(),
                trace_query: config.trace_query,
                io_timeout: config.io_timeout,
            });
            tokio::spawn(async move { outbox.deliver().await });
            if let Some(dog) = watchdog {
                let period = (dog.timeout / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(period);
                    loop {
                        tick.tick().await;
                        let expired = dog.expire_overdue();
                        if expired > 0 {
                            tracing::error!(expired, timeout = ?dog.timeout, "request exceeded --timeout: answered 504");
                        }
                    }
                });
            }
            let timeouts =
                Timeouts { header: config.header_timeout, keep_alive: config.keep_alive_timeout, io: config.io_timeout };
            let server = Arc::new(Server::new(
                Arc::clone(&shared),
                timeouts,
                config.limit_request_headers as usize,
                config.limit_request_headers_size as usize,
            ));
            if let Some(control) = &shared.control {
                control.send(WorkerMessage::Ready);
            }
            tracing::info!(worker = handoff.worker_id, pid = std::process::id(), app = %config.app, "worker serving");
            let drained = server.run(listeners, stop_rx, graceful).await;
            if let Some(otel) = &otel {
                // Bounded (a few seconds) even when the collector hangs.
                otel.shutdown();
            }
            if let Some(control) = &shared.control {
                control.final_report(snapshot()).await;
            }
            Ok::<_, StartError>(drained)
        })
    })?;
    let threads_done = py.detach(|| pool.shutdown(Instant::now() + Duration::from_secs(5).min(graceful)));
    let code = match drained {
        Drained::Clean => 0,
        Drained::TimedOut { open } => {
            tracing::warn!(open, "graceful timeout reached with connections still open");
            0
        }
        Drained::Interrupted { open } => {
            tracing::warn!(open, "stopped by a second signal");
            1
        }
    };
    drop(runtime);
    if !threads_done {
        // A Python thread is still inside the app (e.g. after --timeout); finalizing the
        // interpreter would wait on it, so leave without it.
        tracing::warn!("Python threads still busy; exiting without interpreter finalization");
        std::process::exit(code);
    }
    tracing::info!("worker drained, exiting");
    Ok(code)
}

/// SIGTERM (from the supervisor) starts the drain; a second one ends it.
fn forward_stop_signals(tx: mpsc::Sender<&'static str>) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        while term.recv().await.is_some() {
            if tx.send("SIGTERM").await.is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// Python turns SIGINT into KeyboardInterrupt in the main thread, which would surface as a
/// traceback after a clean drain: the supervisor handles SIGINT itself (its handler replaces
/// the default one), and workers ignore it. A terminal's Ctrl-C reaches the whole process
/// group; only the supervisor acts on it, draining the workers in order with SIGTERM.
fn take_over_sigint(py: Python<'_>, worker: bool) {
    let reset = py.import("signal").and_then(|signal| {
        let action = signal.getattr(if worker { "SIG_IGN" } else { "SIG_DFL" })?;
        signal.call_method1("signal", (signal.getattr("SIGINT")?, action))?;
        Ok(())
    });
    if let Err(err) = reset {
        tracing::debug!("could not reset SIGINT handling: {err}");
    }
}
