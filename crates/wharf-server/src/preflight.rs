//! `--print-config` and `--check-config`: report on the settings and the app, serve nothing.

use pyo3::prelude::*;

use crate::config_file::Loaded;
use crate::wsgi;

/// Prints the effective settings when asked; returns the exit code if wharf should stop here.
pub(crate) fn print_config(loaded: &Loaded) -> Option<i32> {
    if !loaded.config.print_config {
        return None;
    }
    print!("{}", loaded.describe());
    (!loaded.config.check_config).then_some(0)
}

/// Imports the app as a worker would (after --chdir, calling a --factory) and returns the exit
/// code: 0 when it loads, 2 for bad configuration, 3 when it cannot be imported.
pub(crate) fn check_config(py: Python<'_>, loaded: &Loaded) -> i32 {
    match wsgi::load_app(py, &loaded.config) {
        Ok(_) => {
            eprintln!("wharf: configuration OK; {} loads", loaded.config.app);
            0
        }
        Err(err) => {
            eprintln!("wharf: error: {err}");
            err.exit_code()
        }
    }
}
