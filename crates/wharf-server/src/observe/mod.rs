//! What the server tells about itself: metrics (`metrics`, with each worker's `resources`), request tracing over OpenTelemetry
//! (`otel`) and the server's own log lines (`logging`).

pub(crate) mod logging;
mod metrics;
mod otel;
mod resources;

pub(crate) use metrics::{ProcessStats, Rejection, Snapshot, WorkerMetrics, method_index, render as render_metrics};
pub(crate) use otel::{RequestSpan, Tracing};
pub(crate) use resources::{Resources, Started};
