//! Getting finished spans to the collector without ever making a request wait: a bounded
//! queue drained by an export thread of our own, dropping and counting what does not fit.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};
use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter, SpanProcessor};

use super::OtelError;
use super::settings::{BatchSettings, Protocol};
use crate::bridge::{park, sched};

const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) fn otlp_exporter(protocol: Protocol) -> Result<(opentelemetry_otlp::SpanExporter, Executor), OtelError> {
    use opentelemetry_otlp::WithExportConfig as _;
    match protocol {
        // The blocking HTTP client must not run inside a tokio runtime: drive it plainly.
        Protocol::HttpProtobuf => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .build()?;
            Ok((exporter, Executor::Plain))
        }
        // tonic spawns its connection tasks at build time, so it needs a runtime from the start.
        Protocol::Grpc => {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(OtelError::Runtime)?;
            let exporter = {
                let _entered = runtime.enter();
                opentelemetry_otlp::SpanExporter::builder().with_tonic().build()?
            };
            Ok((exporter, Executor::Tokio(runtime)))
        }
    }
}

/// What drives an export future on the export thread.
pub(super) enum Executor {
    Plain,
    Tokio(tokio::runtime::Runtime),
}

impl Executor {
    fn block_on<F: Future>(&self, future: F) -> F::Output {
        match self {
            Executor::Plain => park::block_on(future),
            Executor::Tokio(runtime) => runtime.block_on(future),
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) dropped: AtomicU64,
    pub(super) export_failed: AtomicU64,
}

enum Control {
    /// The queue went from empty to one span, or holds a full batch.
    Wake,
    Flush(Sender<OTelSdkResult>),
    Shutdown(Sender<OTelSdkResult>),
}

/// Hands finished spans to the export thread without ever waiting: a full queue drops the span
/// and counts it.
#[derive(Debug)]
pub(super) struct QueueProcessor {
    spans: Sender<SpanData>,
    control: Sender<Control>,
    counters: Arc<Counters>,
    batch_size: usize,
    /// A `Wake` is on its way to the export thread and not yet handled.
    wake_sent: Arc<AtomicBool>,
}

impl QueueProcessor {
    /// Starts the export thread, which builds the exporter (so a gRPC exporter's runtime lives
    /// and dies on that thread) and reports whether that worked before this returns.
    pub(super) fn start<E, F>(
        resource: Resource,
        batch: BatchSettings,
        counters: Arc<Counters>,
        make_exporter: F,
    ) -> Result<Self, OtelError>
    where
        E: SpanExporter + 'static,
        F: FnOnce() -> Result<(E, Executor), OtelError> + Send + 'static,
    {
        let (spans, queued) = crossbeam_channel::bounded(batch.max_queue_size);
        let (control, requests) = crossbeam_channel::unbounded();
        let (ready_tx, ready) = crossbeam_channel::bounded(1);
        let thread_counters = Arc::clone(&counters);
        let wake_sent = Arc::new(AtomicBool::new(false));
        let thread_wake_sent = Arc::clone(&wake_sent);
        let batch_size = batch.max_export_batch_size;
        std::thread::Builder::new()
            .name("wharf-otel-export".into())
            .spawn(move || match make_exporter() {
                Ok((mut exporter, executor)) => {
                    exporter.set_resource(&resource);
                    let _ = ready_tx.send(Ok(()));
                    // Exporting must not preempt the I/O thread; it only has to keep up.
                    sched::batch_wakeups();
                    ExportLoop {
                        exporter,
                        executor,
                        queued,
                        requests,
                        batch,
                        counters: thread_counters,
                        wake_sent: thread_wake_sent,
                        failing: false,
                    }
                    .run();
                }
                Err(error) => {
                    let _ = ready_tx.send(Err(error));
                }
            })
            .map_err(OtelError::Thread)?;
        ready.recv().map_err(|_| OtelError::ThreadExited)??;
        Ok(QueueProcessor { spans, control, counters, batch_size, wake_sent })
    }

    fn request(&self, make: fn(Sender<OTelSdkResult>) -> Control, timeout: Duration) -> OTelSdkResult {
        let (ack, done) = crossbeam_channel::bounded(1);
        self.control.send(make(ack)).map_err(|_| OTelSdkError::AlreadyShutdown)?;
        done.recv_timeout(timeout).map_err(|_| OTelSdkError::Timeout(timeout))?
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.spans.try_send(span).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Waking the export thread for every span would cost a context switch per request;
        // it needs to know only when a batch starts (to time it) and when one is full.
        let queued = self.spans.len();
        if (queued == 1 || queued >= self.batch_size) && !self.wake_sent.swap(true, Ordering::AcqRel) {
            let _ = self.control.send(Control::Wake);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.request(Control::Flush, FLUSH_TIMEOUT)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.request(Control::Shutdown, timeout)
    }
}

/// The export thread: collects spans into batches and exports a batch when it is full or when
/// its oldest span has waited `schedule_delay`. Sleeps without a timer while nothing is queued.
struct ExportLoop<E> {
    exporter: E,
    executor: Executor,
    queued: Receiver<SpanData>,
    requests: Receiver<Control>,
    batch: BatchSettings,
    counters: Arc<Counters>,
    wake_sent: Arc<AtomicBool>,
    /// Whether the last export failed, so a dead collector is logged once, not per batch.
    failing: bool,
}

enum Event {
    Due,
    Control(Control),
    Closed,
}

impl<E: SpanExporter> ExportLoop<E> {
    fn run(mut self) {
        let mut pending = Vec::with_capacity(self.batch.max_export_batch_size);
        let mut due: Option<Instant> = None;
        loop {
            let event = match due {
                None => select! {
                    recv(self.requests) -> request => request.map_or(Event::Closed, Event::Control),
                },
                Some(due) => select! {
                    recv(self.requests) -> request => request.map_or(Event::Closed, Event::Control),
                    default(due.saturating_duration_since(Instant::now())) => Event::Due,
                },
            };
            match event {
                Event::Control(Control::Wake) => {
                    // Reset before looking at the queue: a span queued after this look sends
                    // a new wake-up if it starts a batch or fills one.
                    self.wake_sent.store(false, Ordering::Release);
                    if self.queued.len() >= self.batch.max_export_batch_size {
                        let _ = self.export_queued(&mut pending);
                        due = None;
                    }
                }
                Event::Due => {
                    self.wake_sent.store(false, Ordering::Release);
                    let _ = self.export_queued(&mut pending);
                    due = None;
                }
                Event::Control(Control::Flush(ack)) => {
                    let _ = ack.send(self.export_queued(&mut pending));
                    due = None;
                }
                Event::Control(Control::Shutdown(ack)) => {
                    let result = self.export_queued(&mut pending).and(self.exporter.shutdown());
                    let _ = ack.send(result);
                    return;
                }
                Event::Closed => {
                    let _ = self.export_queued(&mut pending).and(self.exporter.shutdown());
                    return;
                }
            }
            // Spans that arrived while exporting (or a batch just started) go out within
            // `schedule_delay`.
            if due.is_none() && !self.queued.is_empty() {
                due = Some(Instant::now() + self.batch.schedule_delay);
            }
        }
    }

    /// Exports everything queued so far, in batches; spans still arriving wait for the next round.
    fn export_queued(&mut self, pending: &mut Vec<SpanData>) -> OTelSdkResult {
        let mut result = Ok(());
        for _ in 0..self.queued.len() {
            let Ok(span) = self.queued.try_recv() else { break };
            pending.push(span);
            if pending.len() >= self.batch.max_export_batch_size {
                result = result.and(self.export(pending));
            }
        }
        result.and(self.export(pending))
    }

    fn export(&mut self, pending: &mut Vec<SpanData>) -> OTelSdkResult {
        if pending.is_empty() {
            return Ok(());
        }
        let spans = std::mem::replace(pending, Vec::with_capacity(self.batch.max_export_batch_size));
        let count = spans.len() as u64;
        let result = self.executor.block_on(self.exporter.export(spans));
        match &result {
            Ok(()) if self.failing => {
                self.failing = false;
                tracing::info!("exporting spans works again");
            }
            Ok(()) => {}
            Err(error) => {
                self.counters.export_failed.fetch_add(count, Ordering::Relaxed);
                if !self.failing {
                    self.failing = true;
                    tracing::warn!("exporting spans failed (logged once until it works again): {error}");
                }
            }
        }
        result
    }
}
