//! Logging setup, done once per process.

use std::io::IsTerminal;
use std::str::FromStr;

use tracing_subscriber::filter::LevelFilter;

use crate::config::{Config, LogFormat};

/// Installs the global log subscriber (stderr). A second call (tests, embedding) is a no-op.
pub(crate) fn init(config: &Config) -> Result<(), String> {
    let level = LevelFilter::from_str(config.log_level.trim())
        .map_err(|_| format!("invalid --log-level {:?}: use error, warn, info, debug or trace", config.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let installed = match config.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // Already installed by an earlier call in this process: keep that one.
    drop(installed);
    Ok(())
}
