//! Process entry: parse the command line, then run as the supervisor (the process the user
//! started, see `process`) or as one of its workers (started by the supervisor with an
//! inherited handoff, see `worker`).

use pyo3::prelude::*;

use crate::config_file;
use crate::error::StartError;
use crate::observe::logging;
use crate::preflight;
use crate::process::{self, Handoff};
use crate::worker;

/// `wharf ...`: parses `argv` and runs. Returns the process exit code.
pub(crate) fn main(py: Python<'_>, argv: Vec<String>) -> i32 {
    let loaded = match config_file::load(&argv) {
        Ok(loaded) => loaded,
        Err(err) => return err.report(),
    };
    if let Some(code) = preflight::print_config(&loaded) {
        return code;
    }
    let config = &loaded.config;
    let handoff = match Handoff::from_env() {
        Ok(handoff) => handoff,
        Err(message) => {
            eprintln!("wharf: error: {message}");
            return 2;
        }
    };
    if let Err(message) = logging::init(config, handoff.as_ref().map(|h| h.worker_id)) {
        eprintln!("wharf: error: {message}");
        return 2;
    }
    if config.check_config {
        return preflight::check_config(py, &loaded);
    }
    take_over_sigint(py, handoff.is_some());
    let result = match handoff {
        Some(handoff) => worker::serve_worker(py, config, handoff),
        None => process::supervise(py, config, loaded.args.clone()),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("wharf: error: {err}");
            err.exit_code()
        }
    }
}

/// The single-threaded tokio runtime each process runs its I/O on.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, StartError> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(StartError::Runtime)
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
