//! wharf: a PEP 3333 WSGI server on hyper, tokio and pyo3.
//!
//! The rooms of the crate, by side:
//!
//! ```text
//! entry.rs      process main: parse the command line, run as supervisor or worker
//! config.rs     the command line (`wharf --help`)
//! config_file.rs  settings from a TOML file (--config, [tool.wharf]) between env and defaults
//! gunicorn.rs   why wharf lacks an option a gunicorn user types from habit
//! preflight.rs  --print-config and --check-config
//! app_name.rs   the `module:attribute` rule, shared with the operator's CRD
//! error.rs      errors that end the process, with their exit codes
//! worker.rs     a worker process: assemble, run, finish
//! zygote.rs     the zygote process: import the app once, fork workers from it
//! operator_flags.rs  (test) the operator's rendered command lines parse
//! process/      the supervisor side: supervisor, control channel (both halves), socket
//!               handoff, health, admin listener, metrics scrape, reload
//! http/         the I/O thread: listeners, accept loop and connection watcher (server),
//!               the hyper service, limits, proxy headers, response body, access log
//! bridge/       what crosses threads: jobs and replies, the job queue, the outbox, the
//!               streamed-body pipe, the request body and client view, park/unpark,
//!               scheduling hints, the watchdog
//! wsgi/         the Python side: thread pool, one request's call, environ, wsgi.input,
//!               start_response, response head, file_wrapper, wsgi.errors, app loading
//! observe/      metrics, OpenTelemetry tracing (settings, span, export), logging setup
//! ```
//!
//! A request flows one way: `http` accepts and parses it (hyper) and computes its client view
//! → the service checks it and queues a `bridge` job → a `wsgi` pool thread builds the environ
//! and calls the app → the reply travels back through the bridge (outbox or pipe) and hyper
//! writes it from an `http` response body.

mod app_name;
mod bridge;
mod config;
mod config_file;
mod entry;
mod error;
mod gunicorn;
mod http;
mod observe;
#[cfg(test)]
mod operator_flags;
mod preflight;
mod process;
mod worker;
mod wsgi;
mod zygote;

use pyo3::prelude::*;

/// Runs the server with a full command line (`sys.argv`); returns the exit code.
#[pyfunction]
fn run(py: Python<'_>, argv: Vec<String>) -> i32 {
    entry::main(py, argv)
}

#[pymodule(name = "_wharf")]
fn wharf_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_class::<wsgi::FileWrapper>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The map at the top of this file names every file and folder of `src/`, and only those.
    #[test]
    fn the_map_matches_the_tree() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
        let mut map: Vec<String> = lib
            .lines()
            .skip_while(|line| *line != "//! ```text")
            .skip(1)
            .take_while(|line| *line != "//! ```")
            .filter_map(|line| line.strip_prefix("//! ")?.split_whitespace().next())
            .filter(|name| name.ends_with(".rs") || name.ends_with('/'))
            .map(str::to_owned)
            .collect();
        let mut tree: Vec<String> = std::fs::read_dir(&src)
            .expect("src/")
            .filter_map(Result::ok)
            .map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                if entry.path().is_dir() { name + "/" } else { name }
            })
            .filter(|name| name != "lib.rs")
            .collect();
        map.sort();
        tree.sort();
        assert_eq!(map, tree);
    }
}
