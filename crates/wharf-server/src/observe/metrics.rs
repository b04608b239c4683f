//! Request metrics kept by each worker (lock-free counters and histograms) and the snapshot
//! they send to the supervisor, which sums the workers and renders Prometheus text.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Resources;

/// Request methods get their own label value; anything else is `_OTHER` (bounded cardinality).
const METHODS: [&str; 10] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "_OTHER"];
/// Status codes 100..=599.
const STATUSES: usize = 500;

const SECONDS_BUCKETS: [f64; 16] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
const BYTES_BUCKETS: [f64; 11] =
    [64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 67108864.0];

/// Why a request was refused before (or instead of) reaching the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    BadRequest,
    RequestLineTooLong,
    HeadersTooLarge,
    BodyTooLarge,
    HeaderTimeout,
    BodyTimeout,
    QueueFull,
    ShuttingDown,
    Timeout,
}

const REJECTIONS: [(Rejection, &str); 9] = [
    (Rejection::BadRequest, "bad_request"),
    (Rejection::RequestLineTooLong, "request_line_too_long"),
    (Rejection::HeadersTooLarge, "headers_too_large"),
    (Rejection::BodyTooLarge, "body_too_large"),
    (Rejection::HeaderTimeout, "header_timeout"),
    (Rejection::BodyTimeout, "body_timeout"),
    (Rejection::QueueFull, "queue_full"),
    (Rejection::ShuttingDown, "shutting_down"),
    (Rejection::Timeout, "timeout"),
];

pub(crate) fn method_index(method: &http::Method) -> usize {
    METHODS.iter().position(|m| *m == method.as_str()).unwrap_or(METHODS.len() - 1)
}

struct Histogram {
    bounds: &'static [f64],
    /// Non-cumulative counts per bucket; the last one is +Inf.
    buckets: Vec<AtomicU64>,
    /// Sum in units of 1e-9 of the observed unit (ns for seconds, nano-bytes for bytes), so
    /// it stays an integer atomic.
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    fn observe(&self, value: f64) {
        let idx = self.bounds.iter().position(|b| value <= *b).unwrap_or(self.bounds.len());
        self.buckets[idx].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add((value * 1e9) as u64, Ordering::Relaxed);
    }

    fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect(),
            sum: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// Everything one worker measures.
pub(crate) struct WorkerMetrics {
    requests: Vec<AtomicU64>,
    duration: Histogram,
    queue: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
    in_flight: AtomicI64,
    connections: AtomicI64,
    threads_total: u64,
    rejected: [AtomicU64; REJECTIONS.len()],
}

impl WorkerMetrics {
    pub(crate) fn new(threads_total: u64) -> Self {
        WorkerMetrics {
            requests: (0..METHODS.len() * STATUSES).map(|_| AtomicU64::new(0)).collect(),
            duration: Histogram::new(&SECONDS_BUCKETS),
            queue: Histogram::new(&SECONDS_BUCKETS),
            request_bytes: Histogram::new(&BYTES_BUCKETS),
            response_bytes: Histogram::new(&BYTES_BUCKETS),
            in_flight: AtomicI64::new(0),
            connections: AtomicI64::new(0),
            threads_total,
            rejected: Default::default(),
        }
    }

    pub(crate) fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A response is done (or abandoned): counts it and ends its in-flight time.
    pub(crate) fn request_finished(&self, method: usize, status: u16, elapsed: Duration, bytes_sent: u64) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let status = usize::from(status.clamp(100, 599)) - 100;
        if let Some(counter) = self.requests.get(method.min(METHODS.len() - 1) * STATUSES + status) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        self.duration.observe(elapsed.as_secs_f64());
        self.response_bytes.observe(bytes_sent as f64);
    }

    pub(crate) fn request_body(&self, bytes: u64) {
        self.request_bytes.observe(bytes as f64);
    }

    pub(crate) fn queued_for(&self, wait: Duration) {
        self.queue.observe(wait.as_secs_f64());
    }

    pub(crate) fn connection(&self, open: bool) {
        self.connections.fetch_add(if open { 1 } else { -1 }, Ordering::Relaxed);
    }

    pub(crate) fn rejected(&self, why: Rejection) {
        if let Some(i) = REJECTIONS.iter().position(|(r, _)| *r == why) {
            self.rejected[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `queued`, `busy` and `parked` come from the request queue, read together so they are
    /// coherent; the span exporter's drop and failure counts and the access log's drop count.
    pub(crate) fn snapshot(
        &self,
        (queued, busy, parked): (usize, usize, usize),
        (spans_dropped, spans_failed): (u64, u64),
        access_log_dropped: u64,
        resources: Resources,
    ) -> Snapshot {
        let mut requests = BTreeMap::new();
        for (i, counter) in self.requests.iter().enumerate() {
            let n = counter.load(Ordering::Relaxed);
            if n > 0 {
                let key = format!("{} {}", METHODS[i / STATUSES], i % STATUSES + 100);
                requests.insert(key, n);
            }
        }
        Snapshot {
            requests,
            duration: self.duration.snapshot(),
            queue: self.queue.snapshot(),
            request_bytes: self.request_bytes.snapshot(),
            response_bytes: self.response_bytes.snapshot(),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            connections_open: self.connections.load(Ordering::Relaxed),
            threads_busy: busy as i64,
            threads_total: self.threads_total as i64,
            queued: queued as i64,
            streams_parked: parked as i64,
            rejected: REJECTIONS
                .iter()
                .zip(&self.rejected)
                .map(|((_, name), n)| ((*name).to_owned(), n.load(Ordering::Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            spans_dropped,
            spans_failed,
            access_log_dropped,
            resources: Some(resources),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct HistogramSnapshot {
    pub(crate) buckets: Vec<u64>,
    pub(crate) sum: f64,
}

impl HistogramSnapshot {
    fn add(&mut self, other: &HistogramSnapshot) {
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.sum += other.sum;
    }
}

/// One worker's numbers at one moment (or the sum over several workers).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Snapshot {
    /// `"METHOD status"` → count.
    pub(crate) requests: BTreeMap<String, u64>,
    pub(crate) duration: HistogramSnapshot,
    pub(crate) queue: HistogramSnapshot,
    pub(crate) request_bytes: HistogramSnapshot,
    pub(crate) response_bytes: HistogramSnapshot,
    pub(crate) in_flight: i64,
    pub(crate) connections_open: i64,
    pub(crate) threads_busy: i64,
    pub(crate) threads_total: i64,
    pub(crate) queued: i64,
    /// Streamed responses waiting for their client without a Python thread.
    pub(crate) streams_parked: i64,
    pub(crate) rejected: BTreeMap<String, u64>,
    pub(crate) spans_dropped: u64,
    pub(crate) spans_failed: u64,
    pub(crate) access_log_dropped: u64,
    /// The worker's own resource usage: per worker, never summed (`None` in sums).
    #[serde(default)]
    pub(crate) resources: Option<Resources>,
}

impl Snapshot {
    pub(crate) fn add(&mut self, other: &Snapshot) {
        for (k, v) in &other.requests {
            *self.requests.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.rejected {
            *self.rejected.entry(k.clone()).or_default() += v;
        }
        self.duration.add(&other.duration);
        self.queue.add(&other.queue);
        self.request_bytes.add(&other.request_bytes);
        self.response_bytes.add(&other.response_bytes);
        self.in_flight += other.in_flight;
        self.connections_open += other.connections_open;
        self.threads_busy += other.threads_busy;
        self.threads_total += other.threads_total;
        self.queued += other.queued;
        self.streams_parked += other.streams_parked;
        self.spans_dropped += other.spans_dropped;
        self.spans_failed += other.spans_failed;
        self.access_log_dropped += other.access_log_dropped;
    }

    /// What stays of an exited worker: its counters and histograms, not its gauges.
    pub(crate) fn without_gauges(mut self) -> Snapshot {
        self.in_flight = 0;
        self.connections_open = 0;
        self.threads_busy = 0;
        self.threads_total = 0;
        self.queued = 0;
        self.streams_parked = 0;
        self.resources = None;
        self
    }
}

/// Supervisor-level numbers that are not per request.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProcessStats {
    pub(crate) workers: usize,
    pub(crate) restarts: BTreeMap<&'static str, u64>,
    /// Each live worker's resource usage, by worker id.
    pub(crate) resources: Vec<(u32, Resources)>,
}

/// The `wharf_worker_*` families: one sample per live worker, labelled with its id.
fn worker_resources(out: &mut String, workers: &[(u32, Resources)]) {
    type Field = fn(&Resources) -> Option<f64>;
    let families: [(&str, &str, &str, Field); 4] = [
        ("wharf_worker_resident_memory_bytes", "gauge", "Resident memory of each worker process (Linux only).", |r| {
            r.resident_bytes.map(|b| b as f64)
        }),
        ("wharf_worker_cpu_seconds_total", "counter", "User and system CPU time of each worker process.", |r| {
            Some(r.cpu_seconds)
        }),
        ("wharf_worker_open_fds", "gauge", "Open file descriptors of each worker process.", |r| {
            r.open_fds.map(|n| n as f64)
        }),
        ("wharf_worker_start_time_seconds", "gauge", "Start time of each worker process, in Unix seconds.", |r| {
            Some(r.start_time_seconds)
        }),
    ];
    for (name, kind, help, field) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (id, resources) in workers {
            if let Some(value) = field(resources) {
                let _ = writeln!(out, "{name}{{worker=\"{id}\"}} {value}");
            }
        }
    }
}

fn histogram(out: &mut String, name: &str, help: &str, bounds: &[f64], h: &HistogramSnapshot) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let mut cumulative = 0;
    for (i, bound) in bounds.iter().enumerate() {
        cumulative += h.buckets.get(i).copied().unwrap_or(0);
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    let total: u64 = h.buckets.iter().sum();
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}\n{name}_sum {}\n{name}_count {total}", h.sum);
}

fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
}

/// Prometheus text exposition format (version 0.0.4).
pub(crate) fn render(s: &Snapshot, process: &ProcessStats) -> String {
    let mut out = String::with_capacity(8192);
    let _ = writeln!(out, "# HELP wharf_build_info Build information.\n# TYPE wharf_build_info gauge");
    let _ = writeln!(out, "wharf_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(out, "# HELP wharf_requests_total Requests answered, by method and status code.");
    let _ = writeln!(out, "# TYPE wharf_requests_total counter");
    for (key, n) in &s.requests {
        let (method, status) = key.split_once(' ').unwrap_or((key, "0"));
        let _ = writeln!(out, "wharf_requests_total{{method=\"{method}\",status=\"{status}\"}} {n}");
    }
    histogram(
        &mut out,
        "wharf_request_duration_seconds",
        "Time from request head to the end of the response.",
        &SECONDS_BUCKETS,
        &s.duration,
    );
    histogram(
        &mut out,
        "wharf_request_queue_seconds",
        "Time a request waited for a free Python thread.",
        &SECONDS_BUCKETS,
        &s.queue,
    );
    histogram(
        &mut out,
        "wharf_request_body_bytes",
        "Request body sizes read by the application.",
        &BYTES_BUCKETS,
        &s.request_bytes,
    );
    histogram(&mut out, "wharf_response_body_bytes", "Response body sizes sent.", &BYTES_BUCKETS, &s.response_bytes);
    gauge(&mut out, "wharf_requests_in_flight", "Requests received and not yet fully answered.", s.in_flight);
    gauge(&mut out, "wharf_requests_queued", "Requests waiting for a free Python thread.", s.queued);
    gauge(&mut out, "wharf_python_threads_busy", "Python threads currently running the application.", s.threads_busy);
    gauge(&mut out, "wharf_python_threads_total", "Python threads in all ready workers.", s.threads_total);
    gauge(
        &mut out,
        "wharf_streams_parked",
        "Streamed responses waiting for their client to read, holding no Python thread.",
        s.streams_parked,
    );
    gauge(&mut out, "wharf_connections_open", "Open client connections.", s.connections_open);
    gauge(&mut out, "wharf_workers", "Worker processes ready to serve.", process.workers);
    let _ = writeln!(
        out,
        "# HELP wharf_worker_restarts_total Workers replaced, by reason.\n# TYPE wharf_worker_restarts_total counter"
    );
    for (reason, n) in &process.restarts {
        let _ = writeln!(out, "wharf_worker_restarts_total{{reason=\"{reason}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP wharf_rejected_total Requests refused by the server itself, by reason.\n# TYPE wharf_rejected_total counter"
    );
    for (_, name) in REJECTIONS {
        let _ =
            writeln!(out, "wharf_rejected_total{{reason=\"{name}\"}} {}", s.rejected.get(name).copied().unwrap_or(0));
    }
    let _ = writeln!(
        out,
        "# HELP wharf_otel_spans_dropped_total Trace spans dropped because the export queue was full.\n# TYPE wharf_otel_spans_dropped_total counter"
    );
    let _ = writeln!(out, "wharf_otel_spans_dropped_total {}", s.spans_dropped);
    let _ = writeln!(
        out,
        "# HELP wharf_otel_spans_failed_total Trace spans whose export failed (collector unreachable or refusing, TLS or setup error).\n# TYPE wharf_otel_spans_failed_total counter"
    );
    let _ = writeln!(out, "wharf_otel_spans_failed_total {}", s.spans_failed);
    let _ = writeln!(
        out,
        "# HELP wharf_access_log_lines_dropped_total Access-log lines dropped because stdout did not keep up.\n# TYPE wharf_access_log_lines_dropped_total counter"
    );
    let _ = writeln!(out, "wharf_access_log_lines_dropped_total {}", s.access_log_dropped);
    worker_resources(&mut out, &process.resources);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_sums_across_workers() {
        let a = WorkerMetrics::new(4);
        let b = WorkerMetrics::new(4);
        a.request_started();
        a.request_finished(method_index(&http::Method::GET), 200, Duration::from_millis(3), 100);
        b.request_started();
        b.request_finished(
            method_index(&http::Method::from_bytes(b"BREW").expect("token")),
            404,
            Duration::from_secs(100),
            0,
        );
        b.rejected(Rejection::QueueFull);
        let mut total = a.snapshot((2, 0, 0), (0, 4), 1, Resources::default());
        total.add(&b.snapshot((1, 1, 2), (3, 1), 2, Resources::default()));
        assert_eq!(total.requests.get("GET 200"), Some(&1));
        assert_eq!(total.requests.get("_OTHER 404"), Some(&1));
        assert_eq!(total.threads_total, 8);
        assert_eq!(total.threads_busy, 1);
        assert_eq!(total.queued, 3);
        assert_eq!(total.streams_parked, 2);
        assert_eq!(total.in_flight, 0);
        let busy = Resources {
            resident_bytes: Some(50 << 20),
            cpu_seconds: 12.5,
            open_fds: Some(17),
            start_time_seconds: 1_700_000_000.25,
        };
        let unknown_rss = Resources { resident_bytes: None, ..Resources::default() };
        let text = render(
            &total,
            &ProcessStats {
                workers: 2,
                restarts: BTreeMap::from([("crash", 1)]),
                resources: vec![(1, busy), (3, unknown_rss)],
            },
        );
        assert!(text.contains("wharf_worker_resident_memory_bytes{worker=\"1\"} 52428800\n"), "{text}");
        assert!(!text.contains("wharf_worker_resident_memory_bytes{worker=\"3\"}"), "unknown is left out");
        assert!(text.contains("wharf_worker_cpu_seconds_total{worker=\"1\"} 12.5\n"));
        assert!(text.contains("wharf_worker_open_fds{worker=\"1\"} 17\n"));
        assert!(text.contains("wharf_worker_start_time_seconds{worker=\"1\"} 1700000000.25\n"));
        assert!(text.contains("# TYPE wharf_worker_cpu_seconds_total counter\n"));
        assert!(text.contains("wharf_requests_total{method=\"GET\",status=\"200\"} 1\n"));
        assert!(text.contains("wharf_request_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("wharf_request_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("wharf_request_duration_seconds_count 2\n"));
        assert!(text.contains("wharf_rejected_total{reason=\"queue_full\"} 1\n"));
        assert!(text.contains("wharf_worker_restarts_total{reason=\"crash\"} 1\n"));
        assert!(text.contains("wharf_otel_spans_dropped_total 3\n"));
        assert!(text.contains("wharf_otel_spans_failed_total 5\n"));
        assert!(text.contains("wharf_access_log_lines_dropped_total 3\n"));
        let retired = total.clone().without_gauges();
        assert_eq!((retired.threads_total, retired.requests.len()), (0, 2));
    }

    #[test]
    fn snapshots_travel_as_json() {
        let m = WorkerMetrics::new(1);
        m.request_body(5000);
        let snap = m.snapshot((0, 0, 0), (0, 0), 0, Resources::default());
        let back: Snapshot = serde_json::from_str(&serde_json::to_string(&snap).expect("json")).expect("parses");
        assert_eq!(back, snap);
    }
}
