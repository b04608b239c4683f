//! Errors that end the server before or outside request handling.

use std::io;
use std::path::PathBuf;

/// Why `wharf` could not start or keep running. Request-level failures never become one of
/// these: they are answered with an HTTP status and logged.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    #[error("{0}")]
    InvalidConfig(String),
    #[error("cannot change directory to {path}: {source}")]
    Chdir { path: PathBuf, source: io::Error },
    #[error("cannot import module {module:?}: {detail}")]
    Import { module: String, detail: String },
    #[error("module {module:?} has no attribute {attr:?}")]
    MissingAttribute { module: String, attr: String },
    #[error("application factory {target} failed: {detail}")]
    Factory { target: String, detail: String },
    #[error("{target} is not callable (it is {type_name})")]
    NotCallable { target: String, type_name: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: io::Error },
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(io::Error),
    #[error("cannot start Python thread: {0}")]
    Thread(io::Error),
}

impl StartError {
    /// Process exit code: 3 for application import problems, 2 for configuration, 1 otherwise.
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            StartError::Import { .. }
            | StartError::MissingAttribute { .. }
            | StartError::Factory { .. }
            | StartError::NotCallable { .. } => 3,
            StartError::InvalidConfig(_) | StartError::Chdir { .. } => 2,
            StartError::Bind { .. } | StartError::Runtime(_) | StartError::Thread(_) => 1,
        }
    }
}
