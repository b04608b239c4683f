//! Importing the WSGI application named on the command line.

use pyo3::exceptions::PyModuleNotFoundError;
use pyo3::prelude::*;

use super::pyerr;
use crate::config::Config;
use crate::error::StartError;

/// Imports `module:attribute` (calling it when `--factory` is set) and checks it is callable.
pub(crate) fn load(py: Python<'_>, config: &Config) -> Result<Py<PyAny>, StartError> {
    let (module_name, attr_path) = config.app_target().map_err(StartError::InvalidConfig)?;
    if let Some(dir) = &config.chdir {
        std::env::set_current_dir(dir).map_err(|source| StartError::Chdir { path: dir.clone(), source })?;
    }
    add_cwd_to_path(py)
        .map_err(|err| StartError::Import { module: module_name.to_owned(), detail: pyerr::one_line(py, &err) })?;

    let module = py.import(module_name).map_err(|err| {
        // When the module itself is missing, one line says it all; an error raised while
        // executing the module's code needs its traceback to be fixable.
        if !is_missing_module(py, &err, module_name) {
            tracing::error!("traceback while importing {module_name}:\n{}", pyerr::traceback(py, &err));
        }
        StartError::Import { module: module_name.to_owned(), detail: pyerr::one_line(py, &err) }
    })?;

    let mut target = module.into_any();
    for part in attr_path.split('.') {
        target = target
            .getattr(part)
            .map_err(|_| StartError::MissingAttribute { module: module_name.to_owned(), attr: attr_path.to_owned() })?;
    }
    let target_name = format!("{module_name}:{attr_path}");
    if config.factory {
        target = target.call0().map_err(|err| {
            tracing::error!("traceback from {}():\n{}", target_name, pyerr::traceback(py, &err));
            StartError::Factory { target: target_name.clone(), detail: pyerr::one_line(py, &err) }
        })?;
    }
    if !target.is_callable() {
        let type_name = target.get_type().name().map(|n| n.to_string()).unwrap_or_default();
        return Err(StartError::NotCallable { target: target_name, type_name });
    }
    Ok(target.unbind())
}

fn is_missing_module(py: Python<'_>, err: &PyErr, module_name: &str) -> bool {
    if !err.is_instance_of::<PyModuleNotFoundError>(py) {
        return false;
    }
    let missing: Option<String> = err.value(py).getattr("name").ok().and_then(|n| n.extract().ok());
    missing.is_some_and(|m| module_name == m || module_name.starts_with(&format!("{m}.")))
}

/// Like `python -m`, the working directory is importable.
fn add_cwd_to_path(py: Python<'_>) -> PyResult<()> {
    let cwd = std::env::current_dir()?;
    let cwd = cwd.to_string_lossy();
    let sys_path = py.import("sys")?.getattr("path")?;
    let present =
        sys_path.try_iter()?.filter_map(|p| p.ok()?.extract::<String>().ok()).any(|p| p.is_empty() || p == cwd);
    if !present {
        sys_path.call_method1("insert", (0, cwd.as_ref()))?;
    }
    Ok(())
}
