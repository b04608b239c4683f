//! Process entry: parse the command line, then run as the supervisor (the process the user
//! started, see `process`) or as one of its workers (started by the supervisor with an
//! inherited handoff, see `worker`).

use clap::Parser;
use pyo3::prelude::*;

use crate::config::Config;
use crate::error::StartError;
use crate::observe::logging;
use crate::process::{self, Handoff};
use crate::worker;

/// `wharf ...`: parses `argv` and runs. Returns the process exit code.
pub(crate) fn main(py: Python<'_>, argv: Vec<String>) -> i32 {
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
    if let Err(message) = logging::init(&config) {
        eprintln!("wharf: error: {message}");
        return 2;
    }
    take_over_sigint(py, handoff.is_some());
    let result = match handoff {
        Some(handoff) => worker::serve_worker(py, &config, handoff),
        None => process::supervise(py, &config, argv.into_iter().skip(1).collect()),
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
