//! The supervisor process from start to exit: bind the sockets once, start the admin listener,
//! and run the [`Supervisor`] until every worker has stopped.

use std::sync::Arc;

use pyo3::prelude::*;

use super::admin;
use super::handoff;
use super::health::Health;
use super::scrape::Scraper;
use super::sockets::Sockets;
use super::supervisor::{Supervisor, WorkerCommand};
use crate::config::Config;
use crate::entry;
use crate::error::StartError;
use crate::http::Listener;

/// Runs the supervisor with the worker command line `args`; returns the process exit code.
pub(crate) fn supervise(py: Python<'_>, config: &Config, args: Vec<String>) -> Result<i32, StartError> {
    config.app_target().map_err(StartError::InvalidConfig)?;
    let python: String = py
        .import("sys")
        .and_then(|sys| sys.getattr("executable")?.extract())
        .map_err(|err| StartError::InvalidConfig(format!("cannot find the Python interpreter: {err}")))?;
    if python.is_empty() {
        return Err(StartError::InvalidConfig("cannot find the Python interpreter (sys.executable is empty)".into()));
    }
    let runtime = entry::runtime()?;
    let (sockets, admin_listener) = {
        let _entered = runtime.enter();
        let sockets = match handoff::systemd_sockets()? {
            Some(activated) => Sockets::activated(activated),
            None => Sockets::bind(&config.binds, config.backlog)?,
        };
        let admin = config.admin_bind.as_ref().map(|spec| Listener::bind(spec, 128)).transpose()?;
        (sockets, admin)
    };
    for address in sockets.describe() {
        tracing::info!("listening on {address}");
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
