//! Turning Python exceptions into log text.

use pyo3::prelude::*;

/// `Type: message`, the one line a user needs to recognise an error.
pub fn one_line(py: Python<'_>, err: &PyErr) -> String {
    let type_name = err
        .get_type(py)
        .qualname()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".to_owned());
    let message = err.value(py).str().map(|s| s.to_string()).unwrap_or_default();
    if message.is_empty() { type_name } else { format!("{type_name}: {message}") }
}

/// The full traceback, as Python's `traceback` module prints it.
pub fn traceback(py: Python<'_>, err: &PyErr) -> String {
    let formatted = py
        .import("traceback")
        .and_then(|tb| tb.call_method1("format_exception", (err.value(py),)))
        .and_then(|lines| lines.try_iter()?.map(|l| l?.extract::<String>()).collect::<PyResult<String>>());
    match formatted {
        Ok(text) => text.trim_end().to_owned(),
        Err(_) => one_line(py, err),
    }
}
