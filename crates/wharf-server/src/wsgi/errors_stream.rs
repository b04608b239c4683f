//! `wsgi.errors`: the app's log stream. What the app writes there is collected per Python
//! thread and logged one line per record (at `--errors-log-level`, WARN by default), with the
//! method and path of the request the thread is serving and its trace id.
//!
//! It used to be one ERROR record per `write()` call: Flask's `app.logger.info("x")` came out
//! as an ERROR, and `print("a", "b", 42, file=errors)` as five of them, so alerts on error
//! counts fired on harmless logging. One stream object serves every request (it sits in the
//! environ template); what is per request is the thread's [`Serving`] mark.

use std::cell::RefCell;

use clap::ValueEnum;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The level of records made from `wsgi.errors` lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ErrorsLevel {
    Error,
    Warn,
    Info,
    Debug,
}

#[pyclass(frozen, module = "wharf")]
pub(crate) struct ErrorStream {
    level: ErrorsLevel,
    /// `--log-query`: records quote the whole target.
    log_query: bool,
}

#[derive(Default)]
struct ThreadState {
    /// The environ of the request this thread serves, for the method, path and trace id.
    environ: Option<Py<PyDict>>,
    /// Text written since the last newline.
    partial: String,
}

thread_local! {
    static STATE: RefCell<ThreadState> = RefCell::new(ThreadState::default());
}

/// While alive, `wsgi.errors` lines written on this thread are attributed to `environ`'s
/// request; [`Serving::end`] logs what is left of an unfinished line.
pub(crate) struct Serving(());

impl Serving {
    pub(crate) fn begin(environ: &Bound<'_, PyDict>) -> Serving {
        STATE.with(|state| state.borrow_mut().environ = Some(environ.clone().unbind()));
        Serving(())
    }

    /// The request is done: an unfinished line becomes a record of its own.
    pub(crate) fn end(self, py: Python<'_>, stream: &ErrorStream) {
        let (environ, rest) = STATE.with(|state| {
            let mut state = state.borrow_mut();
            (state.environ.take(), std::mem::take(&mut state.partial))
        });
        if !rest.is_empty() {
            stream.emit(py, environ.as_ref(), &rest);
        }
    }
}

impl ErrorStream {
    pub(crate) fn new(level: ErrorsLevel, log_query: bool) -> Self {
        ErrorStream { level, log_query }
    }

    fn emit(&self, py: Python<'_>, environ: Option<&Py<PyDict>>, line: &str) {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            return;
        }
        let request = environ.map(|env| RequestFields::read(py, env.bind(py), self.log_query)).unwrap_or_default();
        let (method, path, trace_id) = (request.method.as_str(), request.path.as_str(), request.trace_id.as_str());
        match self.level {
            ErrorsLevel::Error => tracing::error!(target: "wsgi.errors", method, path, trace_id, "{line}"),
            ErrorsLevel::Warn => tracing::warn!(target: "wsgi.errors", method, path, trace_id, "{line}"),
            ErrorsLevel::Info => tracing::info!(target: "wsgi.errors", method, path, trace_id, "{line}"),
            ErrorsLevel::Debug => tracing::debug!(target: "wsgi.errors", method, path, trace_id, "{line}"),
        }
    }

    /// Every complete line of the thread's buffer plus `flush_rest`: the unfinished one too.
    fn take_lines(py: Python<'_>, text: &str, flush_rest: bool) -> (Option<Py<PyDict>>, Vec<String>) {
        STATE.with(|state| {
            let mut state = state.borrow_mut();
            state.partial.push_str(text);
            let mut lines: Vec<String> = Vec::new();
            while let Some(end) = state.partial.find('\n') {
                lines.push(state.partial[..end].to_owned());
                state.partial.drain(..=end);
            }
            if flush_rest && !state.partial.is_empty() {
                lines.push(std::mem::take(&mut state.partial));
            }
            let environ = if lines.is_empty() { None } else { state.environ.as_ref().map(|e| e.clone_ref(py)) };
            (environ, lines)
        })
    }

    fn log_lines(&self, py: Python<'_>, text: &str, flush_rest: bool) {
        // Logged outside the thread state's borrow: reading the environ runs no app code, but
        // a log record must never hold a borrow a nested write would need.
        let (environ, lines) = Self::take_lines(py, text, flush_rest);
        for line in &lines {
            self.emit(py, environ.as_ref(), line);
        }
    }
}

/// What a record says about the request a line belongs to.
#[derive(Default)]
struct RequestFields {
    method: String,
    path: String,
    trace_id: String,
}

impl RequestFields {
    fn read(py: Python<'_>, environ: &Bound<'_, PyDict>, log_query: bool) -> Self {
        let text = |key: &Bound<'_, pyo3::types::PyString>| {
            environ.get_item(key).ok().flatten().and_then(|v| v.extract::<String>().ok()).unwrap_or_default()
        };
        let mut path = text(intern!(py, "RAW_URI"));
        if !log_query && let Some(query) = path.find('?') {
            path.truncate(query);
        }
        // traceparent: version-traceid-spanid-flags
        let trace_id = text(intern!(py, "wharf.traceparent")).split('-').nth(1).unwrap_or_default().to_owned();
        RequestFields { method: text(intern!(py, "REQUEST_METHOD")), path, trace_id }
    }
}

#[pymethods]
impl ErrorStream {
    fn write(&self, py: Python<'_>, text: &Bound<'_, PyAny>) -> PyResult<usize> {
        let text: String = text.str()?.extract()?;
        self.log_lines(py, &text, false);
        Ok(text.chars().count())
    }

    fn writelines(&self, py: Python<'_>, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            self.write(py, &line?)?;
        }
        Ok(())
    }

    fn flush(&self, py: Python<'_>) {
        self.log_lines(py, "", true);
    }
}
