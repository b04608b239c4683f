//! `wsgi.errors`: text the app writes there goes to the server log.

use pyo3::prelude::*;

#[pyclass(frozen, module = "wharf")]
pub(crate) struct ErrorStream;

#[pymethods]
impl ErrorStream {
    fn write(&self, text: &Bound<'_, PyAny>) -> PyResult<usize> {
        let text: String = text.str()?.extract()?;
        let line = text.trim_end_matches(['\n', '\r']);
        if !line.is_empty() {
            tracing::error!(target: "wsgi.errors", "{line}");
        }
        Ok(text.chars().count())
    }

    fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            self.write(&line?)?;
        }
        Ok(())
    }

    fn flush(&self) {}
}
