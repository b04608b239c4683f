//! A worker process: imports the app, adopts the inherited sockets, starts the Python threads
//! and the I/O runtime, reports ready, serves until told to stop, drains, and exits.
//!
//! [`serve_worker`] is three steps: [`Worker::assemble`] builds every part from the
//! configuration (nothing runs yet), [`Worker::run`] serves on the I/O thread until the drain
//! ends, and [`finish`] stops the Python threads and picks the exit code.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::bridge::{Outbox, Watchdog, sched};
use crate::config::Config;
use crate::entry;
use crate::error::StartError;
use crate::http::{AccessLog, Drained, Limits, Listener, Server, Shared, Timeouts};
use crate::observe::{Snapshot, Started, Tracing, WorkerMetrics};
use crate::process::{ControlClient, Handoff, WorkerMessage};
use crate::wsgi::{self, AppContext, EnvironSettings, EnvironTemplate, ErrorStream, FileWrapper, Pool, WsgiInput};

/// Runs this process as worker `handoff.worker_id`; returns the process exit code.
pub(crate) fn serve_worker(py: Python<'_>, config: &Config, handoff: Handoff) -> Result<i32, StartError> {
    let started = Started::now();
    limit_malloc_arenas();
    let worker = Worker::assemble(py, config, &handoff)?;
    let (drained, runtime, pool) = worker.run(py, config, started)?;
    finish(py, drained, runtime, pool, config.graceful_timeout)
}

/// Everything a worker serves with, built before anything starts.
struct Worker {
    runtime: tokio::runtime::Runtime,
    listeners: Vec<Listener>,
    control_fd: OwnedFd,
    pool: Pool,
    outbox: Arc<Outbox>,
    watchdog: Option<Arc<Watchdog>>,
    metrics: Arc<WorkerMetrics>,
    access_log: Option<AccessLog>,
    otel: Option<Arc<Tracing>>,
}

impl Worker {
    fn assemble(py: Python<'_>, config: &Config, handoff: &Handoff) -> Result<Worker, StartError> {
        let app = wsgi::load_app(py, config)?;
        let runtime = entry::runtime()?;
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
        };
        let (environ, errors) = (|| {
            let errors = Bound::new(py, ErrorStream::new(config.errors_log_level, config.log_query))?;
            let file_wrapper = py.get_type::<FileWrapper>().into_any();
            let template = EnvironTemplate::new(py, &settings, errors.clone().into_any(), file_wrapper)?;
            Ok::<_, PyErr>((template, errors.unbind()))
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
            environ,
            limit_request_body: config.limit_request_body,
            io_timeout: config.io_timeout,
            metrics: Arc::clone(&metrics),
            log_query: config.log_query,
            errors,
            release_slow_streams: !config.pin_streams,
        });
        let watchdog = config.request_timeout().map(|t| Arc::new(Watchdog::new(t, config.threads as usize)));
        let pool = Pool::start(ctx, config.threads, config.queue_size, watchdog.clone())?;
        let access_log = if config.access_log {
            Some(AccessLog::start(config.access_log_format).map_err(StartError::Thread)?)
        } else {
            None
        };
        let otel = Tracing::from_env("wharf")
            .map_err(|err| StartError::InvalidConfig(format!("OpenTelemetry configuration: {err}")))?
            .map(Arc::new);
        Ok(Worker { runtime, listeners, control_fd, pool, outbox, watchdog, metrics, access_log, otel })
    }

    /// Serves on this thread (the I/O thread) until the drain after a stop signal ends.
    fn run(
        self,
        py: Python<'_>,
        config: &Config,
        started: Started,
    ) -> Result<(Drained, tokio::runtime::Runtime, Pool), StartError> {
        let Worker { runtime, listeners, control_fd, pool, outbox, watchdog, metrics, access_log, otel } = self;
        let queue = pool.queue();
        let drained = py.detach(|| {
            sched::batch_wakeups();
            runtime.block_on(async {
                let (stop_tx, stop_rx) = mpsc::channel(4);
                forward_stop_signals(stop_tx.clone()).map_err(StartError::Runtime)?;
                let served = Arc::new(AtomicU64::new(0));
                let snapshot = {
                    let (metrics, queue, otel, log) =
                        (Arc::clone(&metrics), Arc::clone(&queue), otel.clone(), access_log.clone());
                    move || {
                        let spans = otel.as_ref().map_or((0, 0), |t| (t.dropped(), t.failed()));
                        let log_dropped = log.as_ref().map_or(0, AccessLog::dropped);
                        metrics.snapshot(queue.load(), spans, log_dropped, started.sample())
                    }
                };
                let control = start_control(control_fd, Arc::clone(&served), snapshot.clone(), stop_tx)?;
                let shared = Arc::new(Shared {
                    queue,
                    limits: Limits {
                        request_line: config.limit_request_line as usize,
                        body: config.limit_request_body,
                    },
                    access_log,
                    timeout: watchdog.is_some(),
                    draining: Default::default(),
                    served,
                    recycle_after: recycle_after(config),
                    control: Some(control),
                    metrics,
                    tracing: otel.clone(),
                    trace_query: config.trace_query,
                    trusted_proxies: config.forwarded_allow_ips.clone(),
                    io_timeout: config.io_timeout,
                    log_query: config.log_query,
                });
                tokio::spawn(async move { outbox.deliver().await });
                if let Some(dog) = watchdog {
                    tokio::spawn(watch_timeouts(dog));
                }
                let timeouts = Timeouts {
                    header: config.header_timeout,
                    keep_alive: config.keep_alive_timeout,
                    io: config.io_timeout,
                };
                let server = Arc::new(Server::new(
                    Arc::clone(&shared),
                    timeouts,
                    config.limit_request_headers as usize,
                    config.limit_request_headers_size as usize,
                ));
                if let Some(control) = &shared.control {
                    control.send(WorkerMessage::Ready);
                }
                tracing::info!(app = %config.app, "worker serving");
                let drained = server.run(listeners, stop_rx, config.graceful_timeout).await;
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
        Ok((drained, runtime, pool))
    }
}

/// Stops the Python threads and turns how the drain ended into the exit code.
fn finish(
    py: Python<'_>,
    drained: Drained,
    runtime: tokio::runtime::Runtime,
    pool: Pool,
    graceful: Duration,
) -> Result<i32, StartError> {
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

/// The worker's end of the control channel: heartbeats carry `served`, metrics requests are
/// answered from `snapshot`, and the supervisor going away starts the drain.
fn start_control(
    fd: OwnedFd,
    served: Arc<AtomicU64>,
    snapshot: impl Fn() -> Snapshot + Send + 'static,
    stop: mpsc::Sender<&'static str>,
) -> Result<ControlClient, StartError> {
    ControlClient::start(
        fd,
        move || served.load(Ordering::Relaxed),
        snapshot,
        move || {
            tracing::warn!("supervisor is gone; draining");
            stop.try_send("supervisor exit").ok();
        },
    )
    .map_err(StartError::Runtime)
}

/// `--timeout`: answers overdue requests with 504, checking ten times per timeout.
async fn watch_timeouts(dog: Arc<Watchdog>) {
    let period = (dog.timeout / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        for expired in dog.expire_overdue() {
            let (request, timeout) = (&expired.request, dog.timeout.as_secs_f64());
            tracing::error!(
                method = %request.method,
                path = %request.path,
                "request still running after {:.1} s, over --timeout {timeout} s: answered 504; the worker will be replaced",
                expired.ran.as_secs_f64(),
            );
        }
    }
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
