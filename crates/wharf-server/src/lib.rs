//! wharf: a PEP 3333 WSGI server on hyper, tokio and pyo3.
//!
//! The process the user starts is the `supervisor`: it binds the sockets and runs worker
//! processes (`worker`), talking to them over `control` and answering probes on `admin`.
//! In a worker a request flows one way: `server` accepts and parses (hyper) → `service`
//! checks and queues it → a `pool` thread builds the `environ` and calls the app (`handler`)
//! → the reply travels back through `exchange` and is written by hyper from a `response_body`.

pub mod access_log;
pub mod admin;
pub mod app;
pub mod blocking;
pub mod config;
pub mod control;
pub mod environ;
pub mod error;
pub mod errors_stream;
pub mod exchange;
pub mod file_wrapper;
pub mod forwarded;
pub mod handoff;
pub mod handler;
pub mod health;
pub mod input;
pub mod limits;
pub mod listener;
pub mod pipe;
pub mod metrics;
pub mod otel;
pub mod outbox;
pub mod pool;
pub mod pyerr;
pub mod queue;
pub mod reload;
pub mod request_body;
pub mod sched;
pub mod scrape;
pub mod response_body;
pub mod response_head;
pub mod server;
pub mod service;
pub mod start_response;
pub mod supervisor;
pub mod telemetry;
pub mod watchdog;
pub mod worker;

use pyo3::prelude::*;

/// Runs the server with a full command line (`sys.argv`); returns the exit code.
#[pyfunction]
fn run(py: Python<'_>, argv: Vec<String>) -> i32 {
    worker::main(py, argv)
}

#[pymodule(name = "_wharf")]
fn wharf_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_class::<file_wrapper::FileWrapper>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
