//! Logging setup, done once per process.

use std::fmt;
use std::io::IsTerminal;
use std::str::FromStr;

use tracing::{Event, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, JsonFields, Writer};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{Config, LogFormat};

/// Installs the global log subscriber (stderr). A second call (tests, embedding) is a no-op.
/// In a worker process (`worker` is its id) every line carries the worker id and the pid, so
/// lines from several workers can be told apart and matched to `/metrics` and `ps`.
pub(crate) fn init(config: &Config, worker: Option<u32>) -> Result<(), String> {
    let level = LevelFilter::from_str(config.log_level.trim())
        .map_err(|_| format!("invalid --log-level {:?}: use error, warn, info, debug or trace", config.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let tag = worker.map(|id| Tag { worker: id, pid: std::process::id() });
    let plain = format::Format::default().with_target(false);
    let installed = match config.log_format {
        LogFormat::Text => builder.event_format(Tagged { inner: plain, tag, json: false }).try_init(),
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(Tagged { inner: plain.json().flatten_event(true), tag, json: true })
            .try_init(),
    };
    // Already installed by an earlier call in this process: keep that one.
    drop(installed);
    Ok(())
}

#[derive(Debug, Clone, Copy)]
struct Tag {
    worker: u32,
    pid: u32,
}

/// A line format that adds the worker's tag: `worker=N pid=P ` in front of a text line, the
/// first two fields of a JSON object.
struct Tagged<F> {
    inner: F,
    tag: Option<Tag>,
    json: bool,
}

impl<S, N, F> FormatEvent<S, N> for Tagged<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let Some(Tag { worker, pid }) = self.tag else {
            return self.inner.format_event(ctx, writer, event);
        };
        if !self.json {
            write!(writer, "worker={worker} pid={pid} ")?;
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.inner.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{\"worker\":{worker},\"pid\":{pid},{rest}"),
            None => writer.write_str(&line),
        }
    }
}
