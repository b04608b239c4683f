//! Getting finished spans to the collector without ever making a request wait: a bounded
//! queue drained by an export thread of our own, dropping and counting what does not fit. The
//! export thread encodes the batches and sends them; a failure is counted and logged once a
//! minute at most.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};

use super::OtelError;
use super::encode::Encoder;
use super::settings::{BatchSettings, ExporterSettings};
use super::span::SpanRecord;
use super::transport::{SendError, Transport};
use crate::bridge::sched;

/// Time between two warnings about failing exports (the failures in between are counted).
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Where encoded batches go: the collector, or a test's channel.
pub(super) trait Sink {
    fn send(&mut self, message: Vec<u8>) -> Result<(), SendError>;
}

/// The collector, reached on a runtime of the export thread's own. A transport that could not
/// be set up (bad endpoint, unreadable certificate) fails every send with that reason.
pub(super) struct Collector {
    runtime: tokio::runtime::Runtime,
    transport: Result<Transport, String>,
}

impl Collector {
    pub(super) fn new(settings: &ExporterSettings) -> Result<Collector, OtelError> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(OtelError::Runtime)?;
        let transport = {
            let _entered = runtime.enter();
            Transport::new(settings).map_err(|e| e.to_string())
        };
        Ok(Collector { runtime, transport })
    }
}

impl Sink for Collector {
    fn send(&mut self, message: Vec<u8>) -> Result<(), SendError> {
        match &self.transport {
            Ok(transport) => self.runtime.block_on(transport.send(message)),
            Err(error) => Err(SendError::Setup(error.clone())),
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    /// Spans that did not fit in the queue.
    pub(super) dropped: AtomicU64,
    /// Spans of batches that did not reach the collector.
    pub(super) failed: AtomicU64,
}

enum Control {
    /// The queue went from empty to one span, or holds a full batch.
    Wake,
    #[cfg(test)]
    Flush(Sender<()>),
    Shutdown(Sender<()>),
}

/// Hands finished spans to the export thread without ever waiting: a full queue drops the span
/// and counts it.
pub(crate) struct Queue {
    spans: Sender<Box<SpanRecord>>,
    control: Sender<Control>,
    pub(super) counters: Arc<Counters>,
    batch_size: usize,
    /// A `Wake` is on its way to the export thread and not yet handled.
    wake_sent: Arc<AtomicBool>,
}

impl Queue {
    /// Starts the export thread, which makes its sink (so a runtime lives and dies on that
    /// thread) and reports whether that worked before this returns.
    pub(super) fn start<S, F>(encoder: Encoder, batch: BatchSettings, make_sink: F) -> Result<Queue, OtelError>
    where
        S: Sink,
        F: FnOnce() -> Result<S, OtelError> + Send + 'static,
    {
        let (spans, queued) = crossbeam_channel::bounded(batch.max_queue_size);
        let (control, requests) = crossbeam_channel::unbounded();
        let (ready_tx, ready) = crossbeam_channel::bounded(1);
        let counters = Arc::new(Counters::default());
        let wake_sent = Arc::new(AtomicBool::new(false));
        let export = ExportLoop {
            encoder,
            queued,
            requests,
            batch,
            counters: Arc::clone(&counters),
            wake_sent: Arc::clone(&wake_sent),
            failing: None,
        };
        std::thread::Builder::new()
            .name("wharf-otel-export".into())
            .spawn(move || match make_sink() {
                Ok(sink) => {
                    let _ = ready_tx.send(Ok(()));
                    // Exporting must not preempt the I/O thread; it only has to keep up.
                    sched::batch_wakeups();
                    export.run(sink);
                }
                Err(error) => {
                    let _ = ready_tx.send(Err(error));
                }
            })
            .map_err(OtelError::Thread)?;
        ready.recv().map_err(|_| OtelError::ThreadExited)??;
        Ok(Queue { spans, control, counters, batch_size: batch.max_export_batch_size, wake_sent })
    }

    pub(super) fn push(&self, span: Box<SpanRecord>) {
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

    /// Exports what is queued; false if that did not finish within `timeout`.
    #[cfg(test)]
    pub(super) fn flush(&self, timeout: Duration) -> bool {
        self.request(Control::Flush, timeout)
    }

    /// Exports what is queued and stops the export thread.
    pub(super) fn shutdown(&self, timeout: Duration) -> bool {
        self.request(Control::Shutdown, timeout)
    }

    /// Whether the export thread did what was asked within `timeout` (or had stopped already).
    fn request(&self, make: fn(Sender<()>) -> Control, timeout: Duration) -> bool {
        let (ack, done) = crossbeam_channel::bounded(1);
        self.control.send(make(ack)).is_err() || done.recv_timeout(timeout).is_ok()
    }
}

/// The export thread: collects spans into batches and exports a batch when it is full or when
/// its oldest span has waited `schedule_delay`. Sleeps without a timer while nothing is queued.
struct ExportLoop {
    encoder: Encoder,
    queued: Receiver<Box<SpanRecord>>,
    requests: Receiver<Control>,
    batch: BatchSettings,
    counters: Arc<Counters>,
    wake_sent: Arc<AtomicBool>,
    /// While exports fail: when the last warning was logged, and spans failed since.
    failing: Option<(Instant, u64)>,
}

enum Event {
    Due,
    Control(Control),
    Closed,
}

impl ExportLoop {
    fn run(mut self, mut sink: impl Sink) {
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
                        self.export_queued(&mut sink);
                        due = None;
                    }
                }
                Event::Due => {
                    self.wake_sent.store(false, Ordering::Release);
                    self.export_queued(&mut sink);
                    due = None;
                }
                #[cfg(test)]
                Event::Control(Control::Flush(ack)) => {
                    self.export_queued(&mut sink);
                    let _ = ack.send(());
                    due = None;
                }
                Event::Control(Control::Shutdown(ack)) => {
                    self.export_queued(&mut sink);
                    let _ = ack.send(());
                    return;
                }
                Event::Closed => {
                    self.export_queued(&mut sink);
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
    fn export_queued(&mut self, sink: &mut impl Sink) {
        for _ in 0..self.queued.len() {
            let Ok(span) = self.queued.try_recv() else { break };
            self.encoder.push(&span);
            if self.encoder.len() >= self.batch.max_export_batch_size {
                self.export(sink);
            }
        }
        self.export(sink);
    }

    fn export(&mut self, sink: &mut impl Sink) {
        let count = self.encoder.len() as u64;
        if count == 0 {
            return;
        }
        match (sink.send(self.encoder.take()), self.failing) {
            (Ok(()), None) => {}
            (Ok(()), Some(_)) => {
                self.failing = None;
                tracing::info!("exporting spans works again");
            }
            (Err(error), failing) => {
                self.counters.failed.fetch_add(count, Ordering::Relaxed);
                match failing {
                    Some((warned, failed)) if warned.elapsed() < WARN_EVERY => {
                        self.failing = Some((warned, failed + count));
                    }
                    Some((_, failed)) => {
                        tracing::warn!(
                            "exporting spans still fails, {} spans lost in the last minute: {error}",
                            failed + count
                        );
                        self.failing = Some((Instant::now(), 0));
                    }
                    None => {
                        tracing::warn!(
                            "exporting spans failed (warned again at most once a minute while it fails; \
                             lost spans are counted in wharf_otel_spans_failed_total): {error}"
                        );
                        self.failing = Some((Instant::now(), 0));
                    }
                }
            }
        }
    }
}
