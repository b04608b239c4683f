//! The SERVER span of one request, as a fixed-shape record: the request path only takes ids,
//! clocks and copies of the few strings a span names; attributes are derived and encoded on the
//! export thread (`encode`). The strings are copied rather than shared with the request: a
//! shared handle would keep hyper's read buffer alive until the export, so every request would
//! need a fresh one.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, Version, header};
use opentelemetry::trace::{SpanId, TraceId, TraceState};
use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator};

use super::export::Queue;
use super::sampler::Sampler;
use crate::bridge::{Client, target};

/// The SERVER span of one request. Moves with the request from the I/O thread to a Python
/// thread and back; is queued for export when [`RequestSpan::finish`] is called (a span dropped
/// unfinished is not exported).
pub(crate) struct RequestSpan {
    record: Box<SpanRecord>,
    /// The export queue, when the span is sampled.
    queue: Option<Arc<Queue>>,
}

const _: () = {
    const fn send<T: Send>() {}
    send::<RequestSpan>();
};

/// Everything a span is made of, as the request path leaves it.
#[derive(Debug, Clone)]
pub(super) struct SpanRecord {
    pub(super) trace_id: TraceId,
    pub(super) span_id: SpanId,
    /// The incoming (remote) parent.
    pub(super) parent: Option<SpanId>,
    pub(super) sampled: bool,
    /// `tracestate` of the incoming trace, as the W3C header (empty when none).
    pub(super) trace_state: String,
    pub(super) start: u64,
    pub(super) end: u64,
    /// When a Python thread took the request (Unix nanoseconds) and how long it had waited.
    pub(super) queued: Option<(u64, Duration)>,
    pub(super) method: Method,
    pub(super) path: String,
    /// Only with `--trace-query`.
    pub(super) query: Option<String>,
    /// The absolute-form target's authority, else `Host`.
    pub(super) host: Option<String>,
    pub(super) user_agent: Option<String>,
    pub(super) version: Version,
    pub(super) client: Client,
    pub(super) status: u16,
    pub(super) bytes_sent: u64,
    pub(super) completed: bool,
}

/// Unix time in nanoseconds, as OTLP carries it.
pub(super) fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl RequestSpan {
    pub(super) fn start(
        queue: &Arc<Queue>,
        sampler: &Sampler,
        parts: &http::request::Parts,
        client: &Client,
        capture_query: bool,
    ) -> RequestSpan {
        let incoming = parts.headers.get(TRACEPARENT).and_then(|v| parse_traceparent(v.as_bytes()));
        let ids = RandomIdGenerator::default();
        let span_id = ids.new_span_id();
        let (trace_id, parent, trace_state) = match incoming {
            Some((trace_id, parent, sampled)) => {
                let state = parts
                    .headers
                    .get(TRACESTATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<TraceState>().ok())
                    .map(|s| s.header())
                    .unwrap_or_default();
                (trace_id, Some((parent, sampled)), state)
            }
            None => (ids.new_trace_id(), None, String::new()),
        };
        let sampled = sampler.sampled(trace_id, parent.map(|(_, sampled)| sampled));
        let record = Box::new(SpanRecord {
            trace_id,
            span_id,
            parent: parent.map(|(id, _)| id),
            sampled,
            trace_state,
            start: unix_nanos(SystemTime::now()),
            end: 0,
            queued: None,
            method: parts.method.clone(),
            // Raw bytes a client sent come back as text (`target`), as everywhere they are shown.
            path: target::display(parts.uri.path()).into_owned(),
            query: parts.uri.query().filter(|_| capture_query).map(|q| target::display(q).into_owned()),
            host: match parts.uri.authority() {
                Some(authority) => Some(authority.as_str().to_owned()),
                None => parts.headers.get(header::HOST).and_then(|v| v.to_str().ok()).map(str::to_owned),
            },
            user_agent: parts
                .headers
                .get(header::USER_AGENT)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            version: parts.version,
            client: client.clone(),
            status: 0,
            bytes_sent: 0,
            completed: false,
        });
        RequestSpan { record, queue: sampled.then(|| Arc::clone(queue)) }
    }

    /// W3C `traceparent` of this span: what the application must continue from.
    pub(crate) fn traceparent(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        let ids = self.record.trace_id.to_bytes().into_iter().chain(self.record.span_id.to_bytes());
        // Trace id digits at 3..35, span id digits at 36..52.
        let positions = (3..35).step_by(2).chain((36..52).step_by(2));
        for (at, byte) in positions.zip(ids) {
            out[at] = DIGITS[usize::from(byte >> 4)];
            out[at + 1] = DIGITS[usize::from(byte & 15)];
        }
        if self.record.sampled {
            out[54] = b'1';
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// W3C `tracestate` carried over from the incoming request, if it had one.
    #[cfg(test)]
    pub(crate) fn tracestate(&self) -> Option<String> {
        (!self.record.trace_state.is_empty()).then(|| self.record.trace_state.clone())
    }

    #[cfg(test)]
    pub(super) fn record(&self) -> &SpanRecord {
        &self.record
    }

    /// Records that a Python thread took the request after `wait` in the queue: an event
    /// `wharf.python_thread_acquired` with `wharf.queue.wait` in seconds, timed when the thread
    /// took it. An event rather than a child span keeps one span per request.
    pub(crate) fn queued(&mut self, wait: Duration) {
        let at = self.record.start.saturating_add(u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX));
        self.record.queued = Some((at, wait));
    }

    /// Ends the span once the response is done: `completed` is false when the body was cut
    /// short (client gone, application failed while streaming).
    pub(crate) fn finish(mut self, status: u16, bytes_sent: u64, completed: bool) {
        let Some(queue) = self.queue.take() else { return };
        let record = &mut self.record;
        record.end = unix_nanos(SystemTime::now()).max(record.start);
        if let Some((at, _)) = &mut record.queued {
            *at = (*at).min(record.end);
        }
        (record.status, record.bytes_sent, record.completed) = (status, bytes_sent, completed);
        queue.push(self.record);
    }
}

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// Trace id, parent span id and sampled flag of a W3C `traceparent`: `version-traceid-spanid-flags`
/// in lowercase hex with exact field lengths, ids not all zero. Anything else starts a new
/// trace rather than continuing a different one.
pub(super) fn parse_traceparent(value: &[u8]) -> Option<(TraceId, SpanId, bool)> {
    if !well_formed_traceparent(value) {
        return None;
    }
    let text = std::str::from_utf8(&value[..55]).ok()?;
    let trace_id = TraceId::from_hex(&text[3..35]).ok().filter(|id| *id != TraceId::INVALID)?;
    let span_id = SpanId::from_hex(&text[36..52]).ok().filter(|id| *id != SpanId::INVALID)?;
    let flags = u8::from_str_radix(&text[53..55], 16).ok()?;
    Some((trace_id, span_id, flags & 1 == 1))
}

/// The W3C shape of `traceparent`.
pub(super) fn well_formed_traceparent(value: &[u8]) -> bool {
    const LEN: usize = 55;
    if value.len() < LEN || &value[..2] == b"ff" {
        return false;
    }
    let fields_ok = value[..LEN].iter().enumerate().all(|(i, &b)| match i {
        2 | 35 | 52 => b == b'-',
        _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
    });
    // Version 00 has exactly these fields; later versions may append `-...` fields.
    fields_ok && (value.len() == LEN || (&value[..2] != b"00" && value[LEN] == b'-'))
}
