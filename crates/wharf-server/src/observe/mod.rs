//! What the server tells about itself: metrics (`metrics`), request tracing over OpenTelemetry
//! (`otel`) and the server's own log lines (`logging`).

pub(crate) mod logging;
mod metrics;
mod otel;

pub(crate) use metrics::{
    HistogramSnapshot, ProcessStats, Rejection, Snapshot, WorkerMetrics, method_index, render as render_metrics,
};
pub(crate) use otel::{RequestSpan, Tracing};
