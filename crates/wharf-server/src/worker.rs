//! One serving process: import the app, bind, start the Python threads and the I/O runtime,
//! serve until a stop signal, drain, exit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use pyo3::prelude::*;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::access_log::AccessLog;
use crate::app;
use crate::config::Config;
use crate::environ::{EnvironSettings, EnvironTemplate};
use crate::error::StartError;
use crate::errors_stream::ErrorStream;
use crate::file_wrapper::FileWrapper;
use crate::handler::AppContext;
use crate::limits::Limits;
use crate::listener::Listener;
use crate::pool::Pool;
use crate::server::{Drained, Server, Timeouts};
use crate::service::Shared;
use crate::telemetry;

/// How long a drain may take before remaining requests are abandoned.
const GRACEFUL_TIMEOUT: Duration = Duration::from_secs(30);

/// `wharf ...`: parses `argv` and serves. Returns the process exit code.
pub fn main(py: Python<'_>, argv: Vec<String>) -> i32 {
    let config = match Config::try_parse_from(argv) {
        Ok(config) => config,
        Err(err) => {
            let code = if err.use_stderr() { 2 } else { 0 };
            // clap formats usage errors and --help itself; a failed print has nowhere to go.
            err.print().ok();
            return code;
        }
    };
    if let Err(message) = telemetry::init(&config) {
        eprintln!("wharf: error: {message}");
        return 2;
    }
    match serve(py, &config) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("wharf: error: {err}");
            err.exit_code()
        }
    }
}

fn serve(py: Python<'_>, config: &Config) -> Result<i32, StartError> {
    restore_default_signals(py);
    let app = app::load(py, config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    let listeners = {
        let _entered = runtime.enter();
        config
            .binds
            .iter()
            .map(|spec| Listener::bind(spec, config.backlog))
            .collect::<Result<Vec<_>, _>>()?
    };

    let settings = EnvironSettings {
        root_path: config.root_path.clone(),
        multithread: config.threads > 1,
        multiprocess: false,
    };
    let template = (|| {
        let errors = Bound::new(py, ErrorStream)?.into_any();
        let file_wrapper = py.get_type::<FileWrapper>().into_any();
        EnvironTemplate::new(py, &settings, errors, file_wrapper)
    })()
    .map_err(|err| StartError::InvalidConfig(format!("cannot prepare environ: {err}")))?;
    let ctx = Arc::new(AppContext {
        app,
        environ: template,
        limit_request_body: config.limit_request_body,
        io_timeout: config.io_timeout,
    });
    let pool = Pool::start(ctx, config.threads, config.queue_size)?;
    let access_log = if config.access_log {
        Some(AccessLog::start(config.access_log_format).map_err(StartError::Thread)?)
    } else {
        None
    };
    let shared = Arc::new(Shared {
        queue: pool.queue(),
        limits: Limits { request_line: config.limit_request_line as usize, body: config.limit_request_body },
        access_log,
    });
    let timeouts = Timeouts { header: config.header_timeout, keep_alive: config.keep_alive_timeout, io: config.io_timeout };
    let server = Arc::new(Server::new(
        shared,
        timeouts,
        config.limit_request_headers as usize,
        config.limit_request_headers_size as usize,
    ));
    tracing::info!(app = %config.app, threads = config.threads, pid = std::process::id(), "wharf {} serving", env!("CARGO_PKG_VERSION"));

    py.detach(|| {
        let drained = runtime.block_on(async {
            let signals = stop_signals().map_err(StartError::Runtime)?;
            Ok::<_, StartError>(server.run(listeners, signals, GRACEFUL_TIMEOUT).await)
        })?;
        let left = GRACEFUL_TIMEOUT.saturating_sub(Duration::ZERO);
        let threads_done = pool.shutdown(Instant::now() + left.min(Duration::from_secs(5)));
        drop(runtime);
        Ok(match drained {
            Drained::Clean if threads_done => {
                tracing::info!("drained cleanly, exiting");
                0
            }
            Drained::Clean => {
                tracing::warn!("drained connections, but some Python threads were still busy; exiting");
                0
            }
            Drained::TimedOut { open } => {
                tracing::warn!(open, "graceful timeout reached with connections still open; exiting");
                0
            }
            Drained::Interrupted { open } => {
                tracing::warn!(open, "stopped by a second signal");
                1
            }
        })
    })
}

/// SIGTERM and SIGINT, as a stream of names; the first starts the drain, the second ends it.
fn stop_signals() -> std::io::Result<mpsc::Receiver<&'static str>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                Some(()) = term.recv() => "SIGTERM",
                Some(()) = int.recv() => "SIGINT",
                else => return,
            };
            if tx.send(name).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// Python turns SIGINT into KeyboardInterrupt in the main thread, which would surface as a
/// traceback after a clean drain; the server handles SIGINT itself.
fn restore_default_signals(py: Python<'_>) {
    let reset = py.import("signal").and_then(|signal| {
        let default = signal.getattr("SIG_DFL")?;
        signal.call_method1("signal", (signal.getattr("SIGINT")?, default))?;
        Ok(())
    });
    if let Err(err) = reset {
        tracing::debug!("could not reset SIGINT handling: {err}");
    }
}
