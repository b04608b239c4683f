//! Turning Python exceptions into log text.

use pyo3::prelude::*;

/// `Type: message`, the one line a user needs to recognise an error.
pub(crate) fn one_line(py: Python<'_>, err: &PyErr) -> String {
    let type_name = err.get_type(py).qualname().map(|n| n.to_string()).unwrap_or_else(|_| "Exception".to_owned());
    let message = err.value(py).str().map(|s| s.to_string()).unwrap_or_default();
    if message.is_empty() { type_name } else { format!("{type_name}: {message}") }
}

/// The full traceback, as Python's `traceback` module prints it.
pub(crate) fn traceback(py: Python<'_>, err: &PyErr) -> String {
    let formatted = py
        .import("traceback")
        // Before Python 3.12 the traceback travels beside the exception, not on it.
        .and_then(|tb| tb.call_method1("format_exception", (err.get_type(py), err.value(py), err.traceback(py))))
        .and_then(|lines| lines.try_iter()?.map(|l| l?.extract::<String>()).collect::<PyResult<String>>());
    match formatted {
        Ok(text) => text.trim_end().to_owned(),
        Err(_) => one_line(py, err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    #[test]
    fn formats_one_line_and_traceback() {
        Python::initialize();
        Python::attach(|py| {
            let code = CString::new("def f():\n    raise ValueError('bad thing')\nf()\n").expect("no NUL");
            let err = py.run(&code, None, None).expect_err("raises");
            assert_eq!(one_line(py, &err), "ValueError: bad thing");
            let tb = traceback(py, &err);
            assert!(tb.starts_with("Traceback (most recent call last):"), "{tb}");
            assert!(tb.contains("in f") && tb.ends_with("ValueError: bad thing"), "{tb}");
        });
    }
}
