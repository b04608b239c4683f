//! OTLP protobuf encoding of span records, written directly (on the export thread) instead of
//! through the SDK's span objects and the generated message structs: those cost an allocation
//! per attribute key and value, twice, for every request. The bytes are those the
//! `opentelemetry-proto` messages encode to, field for field (`tests::encoding_matches_the_sdk`).

use opentelemetry::{Array, InstrumentationScope, Value};
use opentelemetry_sdk::Resource;

use super::attributes::{self, Val};
use super::span::SpanRecord;

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// `Span.kind`: `SPAN_KIND_SERVER`.
const KIND_SERVER: u64 = 2;
/// `Status.code`: `STATUS_CODE_ERROR`.
const STATUS_ERROR: u64 = 2;
/// `Span.flags`: whether the parent is remote is known (`SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK`),
/// and that it is (`SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK`).
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;

/// Builds one `ExportTraceServiceRequest` at a time: one resource, one scope, the spans pushed.
pub(super) struct Encoder {
    /// `ResourceSpans.resource`, tagged, the same for every request.
    resource: Vec<u8>,
    /// `ScopeSpans.scope`, tagged.
    scope: Vec<u8>,
    /// `ResourceSpans.schema_url`, tagged (empty without one).
    schema_url: Vec<u8>,
    /// The tagged `ScopeSpans.spans` pushed so far.
    spans: Vec<u8>,
    count: usize,
    scratch: Vec<u8>,
}

impl Encoder {
    pub(super) fn new(resource: &Resource, scope: &InstrumentationScope) -> Encoder {
        let mut body = Vec::new();
        for (key, value) in resource.iter() {
            key_value(&mut body, 1, key.as_str(), value);
        }
        let mut encoded = Vec::new();
        message(&mut encoded, 1, &body);
        let mut scope_body = Vec::new();
        string(&mut scope_body, 1, scope.name());
        string(&mut scope_body, 2, scope.version().unwrap_or_default());
        let mut scope_encoded = Vec::new();
        message(&mut scope_encoded, 1, &scope_body);
        let mut schema_url = Vec::new();
        string(&mut schema_url, 3, resource.schema_url().unwrap_or_default());
        Encoder {
            resource: encoded,
            scope: scope_encoded,
            schema_url,
            spans: Vec::new(),
            count: 0,
            scratch: Vec::new(),
        }
    }

    /// Spans pushed since the last [`Encoder::take`].
    pub(super) fn len(&self) -> usize {
        self.count
    }

    pub(super) fn push(&mut self, record: &SpanRecord) {
        self.scratch.clear();
        span(&mut self.scratch, record);
        message(&mut self.spans, 2, &self.scratch);
        self.count += 1;
    }

    /// The request holding every span pushed, and a fresh start.
    pub(super) fn take(&mut self) -> Vec<u8> {
        let scope_spans_len = self.scope.len() + self.spans.len();
        let resource_spans_len =
            self.resource.len() + tagged_len(2, scope_spans_len) + scope_spans_len + self.schema_url.len();
        let mut out = Vec::with_capacity(tagged_len(1, resource_spans_len) + resource_spans_len);
        tag(&mut out, 1, LEN);
        varint(resource_spans_len as u64, &mut out);
        out.extend_from_slice(&self.resource);
        tag(&mut out, 2, LEN);
        varint(scope_spans_len as u64, &mut out);
        out.extend_from_slice(&self.scope);
        out.extend_from_slice(&self.spans);
        out.extend_from_slice(&self.schema_url);
        self.spans.clear();
        self.count = 0;
        out
    }
}

fn span(buf: &mut Vec<u8>, record: &SpanRecord) {
    bytes(buf, 1, &record.trace_id.to_bytes());
    bytes(buf, 2, &record.span_id.to_bytes());
    string(buf, 3, &record.trace_state);
    if let Some(parent) = record.parent {
        bytes(buf, 4, &parent.to_bytes());
    }
    string(buf, 5, attributes::name(record));
    uint(buf, 6, KIND_SERVER);
    fixed64(buf, 7, record.start);
    fixed64(buf, 8, record.end);
    let error = attributes::error(record);
    attributes::for_each(record, error.as_ref().map(|(kind, _)| kind.as_str()), |key, value| {
        val_key_value(buf, 9, key, value);
    });
    if let Some((at, wait)) = record.queued {
        let attribute = key_value_len("wharf.queue.wait", Val::Double(wait.as_secs_f64()));
        let name = "wharf.python_thread_acquired";
        let len = fixed64_len(at) + string_len(2, name) + tagged_len(3, attribute) + attribute;
        tag(buf, 11, LEN);
        varint(len as u64, buf);
        fixed64(buf, 1, at);
        string(buf, 2, name);
        val_key_value(buf, 3, "wharf.queue.wait", Val::Double(wait.as_secs_f64()));
    }
    match &error {
        Some((_, description)) => {
            let len = string_len(2, description) + 2;
            tag(buf, 15, LEN);
            varint(len as u64, buf);
            string(buf, 2, description);
            uint(buf, 3, STATUS_ERROR);
        }
        None => message(buf, 15, &[]),
    }
    let remote = if record.parent.is_some() { FLAG_IS_REMOTE } else { 0 };
    fixed32(buf, 16, u32::from(record.sampled) | FLAG_HAS_IS_REMOTE | remote);
}

/// A base-128 varint, written in one `extend` (prost's `encode_varint` writes byte by byte through
/// `BufMut`, which measured slower here than all the rest of the encoding).
fn varint(value: u64, buf: &mut Vec<u8>) {
    let mut bytes = [0u8; 10];
    let mut value = value;
    let mut n = 0;
    while value >= 0x80 {
        bytes[n] = (value as u8) | 0x80;
        value >>= 7;
        n += 1;
    }
    bytes[n] = value as u8;
    buf.extend_from_slice(&bytes[..=n]);
}

fn varint_len(value: u64) -> usize {
    // 1 byte per 7 bits, at least one.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

fn tag(buf: &mut Vec<u8>, field: u32, wire: u8) {
    varint(u64::from(field << 3 | u32::from(wire)), buf);
}

/// Bytes of a length-delimited field's tag and length prefix.
fn tagged_len(field: u32, len: usize) -> usize {
    varint_len(u64::from(field << 3)) + varint_len(len as u64)
}

fn message(buf: &mut Vec<u8>, field: u32, body: &[u8]) {
    tag(buf, field, LEN);
    varint(body.len() as u64, buf);
    buf.extend_from_slice(body);
}

/// A proto3 `bytes` field: left out when empty.
fn bytes(buf: &mut Vec<u8>, field: u32, value: &[u8]) {
    if !value.is_empty() {
        message(buf, field, value);
    }
}

fn string(buf: &mut Vec<u8>, field: u32, value: &str) {
    bytes(buf, field, value.as_bytes());
}

fn string_len(field: u32, value: &str) -> usize {
    if value.is_empty() { 0 } else { tagged_len(field, value.len()) + value.len() }
}

fn uint(buf: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        tag(buf, field, VARINT);
        varint(value, buf);
    }
}

fn fixed64(buf: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        tag(buf, field, FIXED64);
        buf.extend_from_slice(&value.to_le_bytes());
    }
}

fn fixed64_len(value: u64) -> usize {
    if value == 0 { 0 } else { 9 }
}

fn fixed32(buf: &mut Vec<u8>, field: u32, value: u32) {
    if value != 0 {
        tag(buf, field, FIXED32);
        buf.extend_from_slice(&value.to_le_bytes());
    }
}

/// An `AnyValue`: a oneof, so its field is written even when it holds the default.
fn any_value_len(value: Val<'_>) -> usize {
    match value {
        Val::Str(s) => tagged_len(1, s.len()) + s.len(),
        // int64: a negative value is its two's complement, ten bytes.
        Val::Int(i) => 1 + varint_len(i as u64),
        Val::Double(_) => 9,
    }
}

fn any_value(buf: &mut Vec<u8>, value: Val<'_>) {
    match value {
        Val::Str(s) => message(buf, 1, s.as_bytes()),
        Val::Int(i) => {
            tag(buf, 3, VARINT);
            varint(i as u64, buf);
        }
        Val::Double(d) => {
            tag(buf, 4, FIXED64);
            buf.extend_from_slice(&d.to_bits().to_le_bytes());
        }
    }
}

fn key_value_len(key: &str, value: Val<'_>) -> usize {
    let value_len = any_value_len(value);
    string_len(1, key) + tagged_len(2, value_len) + value_len
}

/// A `KeyValue` as field `field` of the enclosing message.
fn val_key_value(buf: &mut Vec<u8>, field: u32, key: &str, value: Val<'_>) {
    tag(buf, field, LEN);
    varint(key_value_len(key, value) as u64, buf);
    string(buf, 1, key);
    tag(buf, 2, LEN);
    varint(any_value_len(value) as u64, buf);
    any_value(buf, value);
}

/// A `KeyValue` of any SDK value (the resource's attributes), built once at start.
fn key_value(buf: &mut Vec<u8>, field: u32, key: &str, value: &Value) {
    let mut body = Vec::new();
    string(&mut body, 1, key);
    let mut any = Vec::new();
    sdk_any_value(&mut any, value);
    message(&mut body, 2, &any);
    message(buf, field, &body);
}

fn sdk_any_value(buf: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Bool(b) => {
            tag(buf, 2, VARINT);
            varint(u64::from(*b), buf);
        }
        Value::I64(i) => any_value(buf, Val::Int(*i)),
        Value::F64(f) => any_value(buf, Val::Double(*f)),
        Value::String(s) => any_value(buf, Val::Str(s.as_str())),
        Value::Array(array) => {
            let mut values = Vec::new();
            let elements: Vec<Value> = match array {
                Array::Bool(v) => v.iter().copied().map(Value::Bool).collect(),
                Array::I64(v) => v.iter().copied().map(Value::I64).collect(),
                Array::F64(v) => v.iter().copied().map(Value::F64).collect(),
                Array::String(v) => v.iter().cloned().map(Value::String).collect(),
                other => vec![Value::from(other.to_string())],
            };
            for element in &elements {
                let mut any = Vec::new();
                sdk_any_value(&mut any, element);
                message(&mut values, 1, &any);
            }
            message(buf, 5, &values);
        }
        other => any_value(buf, Val::Str(&other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_prosts() {
        for value in [0, 1, 127, 128, 300, 16_383, 16_384, u64::from(u32::MAX), (-1i64) as u64, u64::MAX] {
            let mut ours = Vec::new();
            varint(value, &mut ours);
            let mut theirs = Vec::new();
            prost::encoding::encode_varint(value, &mut theirs);
            assert_eq!(ours, theirs, "{value}");
            assert_eq!(varint_len(value), prost::encoding::encoded_len_varint(value), "{value}");
        }
    }
}
