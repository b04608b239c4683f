//! Process entry: parse the command line, then run as the supervisor (the process the user
//! started, see `process`), as one of its workers (started by the supervisor with an
//! inherited handoff, see `worker`) or as its zygote (see `zygote`).

use std::os::fd::OwnedFd;

use pyo3::prelude::*;

use crate::config_file;
use crate::error::StartError;
use crate::observe::logging;
use crate::preflight;
use crate::process::{self, Handoff};
use crate::{worker, zygote};

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
    let role = match Role::from_env() {
        Ok(role) => role,
        Err(message) => {
            eprintln!("wharf: error: {message}");
            return 2;
        }
    };
    let worker_id = match &role {
        Role::Worker(handoff) => Some(handoff.worker_id),
        Role::Supervisor | Role::Zygote(_) => None,
    };
    if let Err(message) = logging::init(config, worker_id) {
        eprintln!("wharf: error: {message}");
        return 2;
    }
    if config.check_config {
        return preflight::check_config(py, &loaded);
    }
    take_over_sigint(py, !matches!(role, Role::Supervisor));
    let result = match role {
        Role::Worker(handoff) => worker::serve_worker(py, config, handoff),
        Role::Zygote(link) => zygote::serve_zygote(py, config, link),
        Role::Supervisor => process::supervise(py, config, loaded.args.clone()),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("wharf: error: {err}");
            err.exit_code()
        }
    }
}

/// What this process is, from what the supervisor put in its environment.
enum Role {
    Supervisor,
    Worker(Handoff),
    Zygote(OwnedFd),
}

impl Role {
    fn from_env() -> Result<Role, String> {
        if let Some(handoff) = Handoff::from_env()? {
            return Ok(Role::Worker(handoff));
        }
        Ok(Handoff::zygote_from_env()?.map_or(Role::Supervisor, Role::Zygote))
    }
}

/// The single-threaded tokio runtime each process runs its I/O on.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, StartError> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(StartError::Runtime)
}

/// Python turns SIGINT into KeyboardInterrupt in the main thread, which would surface as a
/// traceback after a clean drain: the supervisor handles SIGINT itself (its handler replaces
/// the default one), and workers ignore it. A terminal's Ctrl-C reaches the whole process
/// group; only the supervisor acts on it, draining the workers in order with SIGTERM. (A
/// zygote ignores it too, and its forked workers inherit that.)
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
