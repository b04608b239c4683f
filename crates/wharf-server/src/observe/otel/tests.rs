//! Tests of request tracing: span attributes and parenting as the collector decodes them,
//! the encoding against the SDK's, settings, and the export queue.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::time::{Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use http::Version;
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceState};
use opentelemetry::{Key, KeyValue};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span as ProtoSpan;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use prost::Message as _;

use super::attributes::{protocol_version, server_address};
use super::export::Sink;
use super::settings::{BatchSettings, Protocol, Settings, resource};
use super::span::{parse_traceparent, well_formed_traceparent};
use super::transport::SendError;
use super::*;
use crate::bridge::{Client, Forwarded, Peer};

const INCOMING: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn batch(max_queue_size: usize, max_export_batch_size: usize, schedule_delay: Duration) -> BatchSettings {
    BatchSettings { max_queue_size, max_export_batch_size, schedule_delay }
}

fn test_resource() -> Resource {
    Resource::builder_empty().with_service_name("test").build()
}

fn always_on() -> Sampler {
    Sampler::read(&|_: &str| None).expect("default sampler")
}

/// A collector in the test: every request it gets, decoded.
struct Channel(Sender<ExportTraceServiceRequest>);

impl Sink for Channel {
    fn send(&mut self, message: Vec<u8>) -> Result<(), SendError> {
        let request = ExportTraceServiceRequest::decode(message.as_slice()).expect("a valid OTLP request");
        let _ = self.0.send(request);
        Ok(())
    }
}

struct Collected {
    tracing: Tracing,
    received: Receiver<ExportTraceServiceRequest>,
}

impl Collected {
    fn spans(&self) -> Vec<ProtoSpan> {
        assert!(self.tracing.queue.flush(Duration::from_secs(5)), "flush");
        let mut spans = Vec::new();
        for request in self.received.try_iter() {
            for resource_spans in request.resource_spans {
                for scope_spans in resource_spans.scope_spans {
                    assert_eq!(scope_spans.scope.as_ref().map(|s| s.name.as_str()), Some("wharf"));
                    spans.extend(scope_spans.spans);
                }
            }
        }
        spans
    }

    fn one_span(&self) -> ProtoSpan {
        let mut spans = self.spans();
        assert_eq!(spans.len(), 1, "{spans:#?}");
        spans.remove(0)
    }

    fn start(&self, parts: &http::request::Parts, client: &Client, capture_query: bool) -> RequestSpan {
        self.tracing.start(parts, client, capture_query)
    }
}

fn start<S: Sink + Send + 'static>(sink: S, settings: BatchSettings) -> Tracing {
    Tracing::start_exporting(&test_resource(), always_on(), settings, move || Ok(sink)).expect("tracing starts")
}

fn collected() -> Collected {
    let (tx, received) = crossbeam_channel::unbounded();
    Collected { tracing: start(Channel(tx), batch(64, 16, Duration::from_secs(60))), received }
}

fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut builder = http::Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).expect("valid request").into_parts().0
}

fn attr(span: &ProtoSpan, key: &str) -> Option<Any> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.clone()?.value)
}

fn text(value: &str) -> Option<Any> {
    Some(Any::StringValue(value.to_owned()))
}

fn int(value: i64) -> Option<Any> {
    Some(Any::IntValue(value))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn client_at(scheme: &'static str, remote: Option<SocketAddr>, local: Option<SocketAddr>) -> Client {
    let forwarded = Forwarded { scheme: (scheme == "https").then_some("https"), ..Forwarded::default() };
    Client { peer: Arc::new(Peer { remote, local }), forwarded }
}

fn client(scheme: &'static str, remote: Option<SocketAddr>) -> Client {
    client_at(scheme, remote, local())
}

fn peer() -> Option<SocketAddr> {
    Some("192.0.2.7:51234".parse().expect("address"))
}

fn local() -> Option<SocketAddr> {
    Some("10.0.0.1:8000".parse().expect("address"))
}

#[test]
fn server_span_follows_http_semantic_conventions() {
    let c = collected();
    let parts = request("POST", "/orders/7?page=2", &[("host", "shop.example:8443"), ("user-agent", "curl/8.5")]);
    c.start(&parts, &client("https", peer()), false).finish(201, 42, true);

    let span = c.one_span();
    assert_eq!(span.name, "POST");
    assert_eq!(span.kind, 2, "SPAN_KIND_SERVER");
    let keys: Vec<&str> = span.attributes.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "http.request.method",
            "url.path",
            "url.scheme",
            "server.address",
            "server.port",
            "client.address",
            "network.protocol.version",
            "user_agent.original",
            "http.response.status_code",
            "http.response.body.size"
        ],
        "the query is only recorded when asked for; no error.type without an error"
    );
    assert_eq!(attr(&span, "http.request.method"), text("POST"));
    assert_eq!(attr(&span, "url.path"), text("/orders/7"));
    assert_eq!(attr(&span, "url.scheme"), text("https"));
    assert_eq!(attr(&span, "server.address"), text("shop.example"));
    assert_eq!(attr(&span, "server.port"), int(8443));
    assert_eq!(attr(&span, "client.address"), text("192.0.2.7"));
    assert_eq!(attr(&span, "network.protocol.version"), text("1.1"));
    assert_eq!(attr(&span, "user_agent.original"), text("curl/8.5"));
    assert_eq!(attr(&span, "http.response.status_code"), int(201));
    assert_eq!(attr(&span, "http.response.body.size"), int(42));
    let status = span.status.expect("a status");
    assert_eq!((status.code, status.message.as_str()), (StatusCode::Unset as i32, ""));
    assert!(span.parent_span_id.is_empty(), "no incoming context: a root span");
    assert!(span.start_time_unix_nano > 0 && span.start_time_unix_nano <= span.end_time_unix_nano);
    assert_eq!(span.flags, 0x101, "sampled; the parent (none) is known not to be remote");
}

#[test]
fn query_is_recorded_when_asked_for() {
    let c = collected();
    c.start(&request("GET", "/search?q=boats&n=1", &[]), &client("http", None), true).finish(200, 0, true);
    let span = c.one_span();
    assert_eq!(attr(&span, "url.query"), text("q=boats&n=1"));
    assert_eq!(attr(&span, "client.address"), None);
}

#[test]
fn unknown_methods_are_other_and_the_span_is_named_http() {
    let c = collected();
    c.start(&request("PROPFIND", "/dav", &[]), &client("http", peer()), false).finish(207, 0, true);
    let span = c.one_span();
    assert_eq!(span.name, "HTTP");
    assert_eq!(attr(&span, "http.request.method"), text("_OTHER"));
    assert_eq!(attr(&span, "http.request.method_original"), text("PROPFIND"));
}

#[test]
fn server_address_comes_from_the_request_then_the_socket() {
    // What the span keeps of a request: the absolute-form authority, else `Host`.
    let address = |uri: &str, host: Option<&str>, client: &Client| {
        let uri: http::Uri = uri.parse().expect("uri");
        server_address(uri.authority().map(|a| a.as_str()).or(host), client)
    };
    assert_eq!(address("/", Some("example.org"), &client("https", None)), Some(("example.org".into(), 443)));
    assert_eq!(address("/", Some("example.org"), &client("http", None)), Some(("example.org".into(), 80)));
    assert_eq!(address("/", Some("[2001:db8::1]:9000"), &client("http", None)), Some(("2001:db8::1".into(), 9000)));
    assert_eq!(
        address("http://proxy.example:81/x", Some("ignored.example"), &client("http", None)),
        Some(("proxy.example".into(), 81))
    );
    assert_eq!(address("/", None, &client("http", None)), Some(("10.0.0.1".into(), 8000)));
    assert_eq!(address("/", Some("bad host"), &client("http", None)), Some(("10.0.0.1".into(), 8000)));
    assert_eq!(address("/", Some("bad host"), &client_at("http", None, None)), None);
}

#[test]
fn protocol_versions_use_the_convention_spelling() {
    let c = collected();
    let mut parts = request("GET", "/", &[]);
    parts.version = Version::HTTP_10;
    c.start(&parts, &client_at("http", None, None), false).finish(200, 0, true);
    assert_eq!(attr(&c.one_span(), "network.protocol.version"), text("1.0"));
    assert_eq!(protocol_version(Version::HTTP_2), Some("2"));
}

#[test]
fn incoming_traceparent_makes_the_span_a_child_and_keeps_tracestate() {
    let c = collected();
    let parts = request("GET", "/", &[("traceparent", INCOMING), ("tracestate", "vendor=abc,other=1")]);
    let span = c.start(&parts, &client_at("http", None, None), false);
    let traceparent = span.traceparent();
    assert_eq!(span.tracestate().as_deref(), Some("vendor=abc,other=1"));
    span.finish(200, 0, true);

    let data = c.one_span();
    assert_eq!(hex(&data.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hex(&data.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(data.trace_state, "vendor=abc,other=1");
    assert_eq!(data.flags, 0x301, "sampled, with a remote parent");
    assert_eq!(traceparent, format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", hex(&data.span_id)));
}

#[test]
fn traceparent_is_what_a_w3c_propagator_reads_back() {
    let c = collected();
    let span = c.start(&request("GET", "/", &[]), &client_at("http", None, None), false);
    let traceparent = span.traceparent();
    let (trace_id, span_id, sampled) = parse_traceparent(traceparent.as_bytes()).expect("valid");
    assert_eq!((trace_id, span_id, sampled), (span.record().trace_id, span.record().span_id, true));
    assert_eq!(span.tracestate(), None);
}

#[test]
fn invalid_traceparent_starts_a_new_trace() {
    for bad in [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "garbage",
    ] {
        let c = collected();
        c.start(&request("GET", "/", &[("traceparent", bad)]), &client_at("http", None, None), false)
            .finish(200, 0, true);
        let span = c.one_span();
        assert!(span.parent_span_id.is_empty(), "{bad} must not become a parent");
        assert_ne!(hex(&span.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    }
}

#[test]
fn unsampled_parent_is_followed_and_nothing_is_exported() {
    let c = collected();
    let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    let span = c.start(&request("GET", "/", &[("traceparent", unsampled)]), &client_at("http", None, None), false);
    let traceparent = span.traceparent();
    assert!(traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    assert!(traceparent.ends_with("-00"), "the app must not sample either: {traceparent}");
    assert!(!traceparent.contains("00f067aa0ba902b7"), "a span id of its own: {traceparent}");
    span.finish(200, 0, true);
    assert!(c.spans().is_empty());
    assert_eq!(c.tracing.dropped(), 0, "unsampled spans are not drops");
}

#[test]
fn server_errors_and_incomplete_responses_are_errors() {
    let c = collected();
    c.start(&request("GET", "/a", &[]), &client_at("http", None, None), false).finish(503, 10, true);
    c.start(&request("GET", "/b", &[]), &client_at("http", None, None), false).finish(404, 10, true);
    c.start(&request("GET", "/c", &[]), &client_at("http", None, None), false).finish(200, 5, false);
    let spans = c.spans();
    let by_path = |path: &str| spans.iter().find(|s| attr(s, "url.path") == text(path)).expect("span");

    let failed = by_path("/a");
    let status = failed.status.clone().expect("status");
    assert_eq!((status.code, status.message.as_str()), (StatusCode::Error as i32, ""));
    assert_eq!(attr(failed, "error.type"), text("503"));
    let not_found = by_path("/b");
    assert_eq!(not_found.status.clone().expect("status").code, StatusCode::Unset as i32, "4xx is the client's error");
    let cut = by_path("/c");
    let status = cut.status.clone().expect("status");
    assert_eq!(status.code, StatusCode::Error as i32);
    assert!(!status.message.is_empty());
    assert_eq!(attr(cut, "error.type"), text("wharf.response_incomplete"));
    assert_eq!(attr(cut, "http.response.body.size"), int(5));
}

#[test]
fn queue_wait_is_an_event() {
    let c = collected();
    let mut span = c.start(&request("GET", "/", &[]), &client_at("http", None, None), false);
    span.queued(Duration::from_micros(1500));
    span.finish(200, 0, true);
    let data = c.one_span();
    assert_eq!(data.events.len(), 1);
    let event = &data.events[0];
    assert_eq!(event.name, "wharf.python_thread_acquired");
    assert_eq!(event.attributes.len(), 1);
    assert_eq!(event.attributes[0].key, "wharf.queue.wait");
    assert_eq!(event.attributes[0].value.clone().and_then(|v| v.value), Some(Any::DoubleValue(0.0015)));
    assert!(data.start_time_unix_nano <= event.time_unix_nano && event.time_unix_nano <= data.end_time_unix_nano);
}

/// The SDK's view of a record: the span the OpenTelemetry SDK made for requests before.
fn sdk_span(record: &super::span::SpanRecord) -> SpanData {
    let mut attributes = Vec::new();
    let error = super::attributes::error(record);
    super::attributes::for_each(record, error.as_ref().map(|(t, _)| t.as_str()), |key, value| {
        let key = Key::new(key.to_owned());
        attributes.push(match value {
            super::attributes::Val::Str(s) => KeyValue::new(key, s.to_owned()),
            super::attributes::Val::Int(i) => KeyValue::new(key, i),
            super::attributes::Val::Double(d) => KeyValue::new(key, d),
        });
    });
    let time = |nanos: u64| SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos);
    let events = record
        .queued
        .map(|(at, wait)| {
            opentelemetry::trace::Event::new(
                "wharf.python_thread_acquired",
                time(at),
                vec![KeyValue::new("wharf.queue.wait", wait.as_secs_f64())],
                0,
            )
        })
        .into_iter()
        .collect();
    let state: TraceState = record.trace_state.parse().expect("trace state");
    SpanData {
        span_context: SpanContext::new(record.trace_id, record.span_id, TraceFlags::SAMPLED, false, state),
        parent_span_id: record.parent.unwrap_or(SpanId::INVALID),
        parent_span_is_remote: record.parent.is_some(),
        span_kind: SpanKind::Server,
        name: super::attributes::name(record).into(),
        start_time: time(record.start),
        end_time: time(record.end),
        attributes,
        dropped_attributes_count: 0,
        events: {
            let mut all = SpanEvents::default();
            all.events = events;
            all
        },
        links: SpanLinks::default(),
        status: match error {
            Some((_, description)) => Status::error(description),
            None => Status::Unset,
        },
        instrumentation_scope: InstrumentationScope::builder("wharf").with_version(env!("CARGO_PKG_VERSION")).build(),
    }
}

#[test]
fn encoding_matches_the_sdk() {
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;

    let resource = Resource::builder()
        .with_service_name("shop")
        .with_attributes([KeyValue::new("deployment.environment", "prod"), KeyValue::new("replica", 3)])
        .build();
    let scope = InstrumentationScope::builder("wharf").with_version(env!("CARGO_PKG_VERSION")).build();
    let c = collected();
    let mut records = Vec::new();
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], u16, bool);
    let cases: [Case<'_>; 4] = [
        ("GET", "/", &[("host", "a.example"), ("user-agent", "ua/1")], 200, true),
        ("PROPFIND", "/dav?x=1", &[("traceparent", INCOMING), ("tracestate", "v=1")], 503, true),
        ("POST", "/up", &[], 200, false),
        ("DELETE", "/big", &[("user-agent", "Mozilla/5.0 (X11)")], 204, true),
    ];
    for (i, (method, uri, headers, status, completed)) in cases.into_iter().enumerate() {
        let mut span = c.start(&request(method, uri, headers), &client("http", peer()), i == 1);
        if i != 2 {
            span.queued(Duration::from_nanos(1234 * i as u64));
        }
        let mut record = span.record().clone();
        record.end = record.start + 99_000;
        (record.status, record.bytes_sent, record.completed) = (status, 7 * i as u64, completed);
        records.push(record);
    }

    let mut encoder = Encoder::new(&resource, &scope);
    for record in &records {
        encoder.push(record);
    }
    let ours = encoder.take();
    let sdk = ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(
            records.iter().map(sdk_span).collect(),
            &ResourceAttributesWithSchema::from(&resource),
        ),
    }
    .encode_to_vec();
    assert_eq!(ours, sdk, "the bytes the SDK's exporter sent for the same spans");
    assert_eq!(encoder.len(), 0);
    assert!(!encoder.take().is_empty(), "an empty request still names resource and scope");
}

/// Counts the spans of each request it gets.
struct Counting(Arc<AtomicUsize>);

impl Sink for Counting {
    fn send(&mut self, message: Vec<u8>) -> Result<(), SendError> {
        let request = ExportTraceServiceRequest::decode(message.as_slice()).expect("valid");
        let n: usize = request.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
        self.0.fetch_add(n, Ordering::SeqCst);
        Ok(())
    }
}

fn finish_one(tracing: &Tracing) {
    tracing.start(&request("GET", "/", &[]), &client_at("http", None, None), false).finish(200, 0, true);
}

#[test]
fn shutdown_exports_what_is_queued() {
    let exported = Arc::new(AtomicUsize::new(0));
    let tracing = start(Counting(Arc::clone(&exported)), batch(64, 2, Duration::from_secs(3600)));
    for _ in 0..5 {
        finish_one(&tracing);
    }
    tracing.shutdown();
    assert_eq!(exported.load(Ordering::SeqCst), 5);
    tracing.shutdown();
}

#[test]
fn traceparent_shape_is_checked() {
    assert!(well_formed_traceparent(INCOMING.as_bytes()));
    assert!(well_formed_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future"));
    assert!(!well_formed_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"));
    assert!(!well_formed_traceparent(b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"));
    assert!(!well_formed_traceparent(b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
    assert!(!well_formed_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"));
    assert!(!well_formed_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e473--00f067aa0ba902b7-01"));
    let (_, _, sampled) = parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09").expect("valid");
    assert!(sampled, "flags other than sampled are ignored");
}

#[test]
fn a_full_batch_is_exported_without_waiting_for_the_delay() {
    let exported = Arc::new(AtomicUsize::new(0));
    let tracing = start(Counting(Arc::clone(&exported)), batch(64, 4, Duration::from_secs(3600)));
    for _ in 0..4 {
        finish_one(&tracing);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while exported.load(Ordering::SeqCst) < 4 {
        assert!(Instant::now() < deadline, "a full batch must be exported at once");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn partial_batches_go_out_after_the_schedule_delay() {
    let exported = Arc::new(AtomicUsize::new(0));
    let tracing = start(Counting(Arc::clone(&exported)), batch(64, 4, Duration::from_millis(50)));
    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while exported.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "spans were not exported after the delay");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    // A lone span starts a batch, and is exported once the delay passed.
    finish_one(&tracing);
    wait_for(1);
    // A full batch plus a rest: the rest must not wait for a batch that never fills.
    for _ in 0..6 {
        finish_one(&tracing);
    }
    wait_for(7);
    tracing.shutdown();
}

/// Holds every export until the test lets it through, like a collector that hangs.
struct Hanging {
    entered: Sender<usize>,
    release: Receiver<()>,
    exported: Arc<AtomicUsize>,
}

impl Sink for Hanging {
    fn send(&mut self, message: Vec<u8>) -> Result<(), SendError> {
        let request = ExportTraceServiceRequest::decode(message.as_slice()).expect("valid");
        let n: usize = request.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
        let _ = self.entered.send(n);
        let _ = self.release.recv();
        self.exported.fetch_add(n, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn a_hanging_collector_drops_and_counts_instead_of_blocking() {
    let (entered_tx, entered) = crossbeam_channel::unbounded();
    let (release, release_rx) = crossbeam_channel::unbounded();
    let exported = Arc::new(AtomicUsize::new(0));
    let sink = Hanging { entered: entered_tx, release: release_rx, exported: Arc::clone(&exported) };
    let tracing = start(sink, batch(2, 1, Duration::ZERO));

    finish_one(&tracing);
    assert_eq!(entered.recv_timeout(Duration::from_secs(5)), Ok(1), "the first span is being exported");
    let started = Instant::now();
    for _ in 0..10 {
        finish_one(&tracing);
    }
    assert!(started.elapsed() < Duration::from_millis(500), "ending spans never waits for the exporter");
    assert_eq!(tracing.dropped(), 8, "two fit in the queue, the other eight are dropped");

    for _ in 0..3 {
        release.send(()).expect("release");
    }
    tracing.shutdown();
    assert_eq!(exported.load(Ordering::SeqCst), 3);
    assert_eq!(tracing.dropped(), 8);
}

struct Refusing;

impl Sink for Refusing {
    fn send(&mut self, _message: Vec<u8>) -> Result<(), SendError> {
        Err(SendError::Connect { endpoint: "http://127.0.0.1:9".into(), error: "connection refused".into() })
    }
}

#[test]
fn spans_of_failed_exports_are_counted() {
    let tracing = start(Refusing, batch(64, 2, Duration::from_secs(3600)));
    for _ in 0..3 {
        finish_one(&tracing);
    }
    assert!(tracing.queue.flush(Duration::from_secs(5)));
    assert_eq!(tracing.failed(), 3);
    assert_eq!(tracing.dropped(), 0);
}

#[test]
fn resource_names_the_service() {
    let no_env = |_: &str| None;
    let resource = resource("myapp", &no_env);
    assert_eq!(resource.get(&Key::from_static_str("service.name")), Some("myapp".into()));
}

fn settings(vars: &[(&str, &str)]) -> Result<Option<Settings>, OtelError> {
    let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Settings::read(&move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
}

#[test]
fn tracing_is_on_only_when_an_exporter_is_configured() {
    let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
    assert_eq!(settings(&[]).expect("valid"), None);
    assert_eq!(settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]).expect("valid"), None);
    assert_eq!(settings(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")]).expect("valid"), None);
    assert_eq!(settings(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]).expect("valid"), None);
    let on = settings(&[endpoint, ("OTEL_SDK_DISABLED", "false")]).expect("valid").expect("on");
    assert_eq!(on.exporter.protocol, Protocol::HttpProtobuf);
    assert_eq!(on.batch, batch(2048, 512, Duration::from_secs(5)));
    let traces_only = settings(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/v1/traces")]).expect("valid");
    assert!(traces_only.is_some());
    assert!(settings(&[("OTEL_TRACES_EXPORTER", "otlp")]).expect("valid").is_some());
    assert!(matches!(settings(&[endpoint, ("OTEL_TRACES_EXPORTER", "zipkin")]), Err(OtelError::Unsupported { .. })));
}

#[test]
fn protocol_and_batch_settings_are_read() {
    let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317");
    let grpc = settings(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).expect("valid").expect("on");
    assert_eq!(grpc.exporter.protocol, Protocol::Grpc);
    let overridden = settings(&[
        endpoint,
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
    ]);
    assert_eq!(overridden.expect("valid").expect("on").exporter.protocol, Protocol::HttpProtobuf);
    let json = settings(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]);
    assert!(matches!(json, Err(OtelError::Unsupported { var: "OTEL_EXPORTER_OTLP_PROTOCOL", .. })));

    let tuned = settings(&[
        endpoint,
        ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "500"),
        ("OTEL_BSP_SCHEDULE_DELAY", "0"),
    ]);
    assert_eq!(tuned.expect("valid").expect("on").batch, batch(100, 100, Duration::ZERO));
    for (var, value) in [
        ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
        ("OTEL_BSP_SCHEDULE_DELAY", "soon"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "-1"),
    ] {
        let error = settings(&[endpoint, (var, value)]).expect_err("invalid");
        assert!(error.to_string().contains(var), "{error}");
    }
}

#[test]
fn exporter_settings_follow_the_sdk_environment_spec() {
    let on = |vars: &[(&str, &str)]| settings(vars).expect("valid").expect("on").exporter;
    let http = on(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector.example:4318")]);
    assert_eq!(http.endpoint, "https://collector.example:4318/v1/traces");
    assert_eq!(http.timeout, Duration::from_secs(10));
    assert_eq!((http.certificate, http.client_certificate), (None, None));
    assert_eq!(on(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/base/")]).endpoint, "http://c:4318/base/v1/traces");
    let specific = on(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://general:4318"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4318/custom"),
    ]);
    assert_eq!(specific.endpoint, "http://traces:4318/custom", "the signal endpoint is used as it is");
    assert_eq!(on(&[("OTEL_TRACES_EXPORTER", "otlp")]).endpoint, "http://localhost:4318/v1/traces");
    let grpc = on(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]);
    assert_eq!((grpc.protocol, grpc.endpoint.as_str()), (Protocol::Grpc, "https://c:4317"));

    let tls = on(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318"),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca.pem"),
        ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/etc/traces-ca.pem"),
        ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/etc/client.pem"),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/etc/client.key"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
    ]);
    assert_eq!(tls.certificate.as_deref(), Some(std::path::Path::new("/etc/traces-ca.pem")));
    assert_eq!(tls.client_certificate.as_deref(), Some(std::path::Path::new("/etc/client.pem")));
    assert_eq!(tls.client_key.as_deref(), Some(std::path::Path::new("/etc/client.key")));
    assert_eq!(tls.timeout, Duration::from_millis(2500));

    let headers = on(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Basic%20abc, x-tenant=general"),
        ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "X-Tenant=traces"),
    ])
    .headers;
    assert_eq!(
        headers,
        [("Authorization".to_owned(), "Basic abc".to_owned()), ("X-Tenant".to_owned(), "traces".to_owned())],
        "percent-decoded; the traces variable wins per header"
    );
}

#[test]
fn bad_exporter_settings_name_the_variable() {
    let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318");
    for (vars, named) in [
        (vec![endpoint, ("OTEL_EXPORTER_OTLP_HEADERS", "novalue")], "OTEL_EXPORTER_OTLP_HEADERS"),
        (vec![endpoint, ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "a=%zz")], "OTEL_EXPORTER_OTLP_TRACES_HEADERS"),
        (vec![endpoint, ("OTEL_EXPORTER_OTLP_HEADERS", "bad name=1")], "OTEL_EXPORTER_OTLP_HEADERS"),
        (vec![endpoint, ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")], "OTEL_EXPORTER_OTLP_TIMEOUT"),
        (vec![endpoint, ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")], "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION"),
        (vec![endpoint, ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/k.pem")], "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"),
        (vec![endpoint, ("OTEL_TRACES_SAMPLER", "xray")], "OTEL_TRACES_SAMPLER"),
    ] {
        let error = settings(&vars).expect_err("invalid").to_string();
        assert!(error.contains(named), "{error}");
    }
    let fine = settings(&[endpoint, ("OTEL_EXPORTER_OTLP_COMPRESSION", "none")]);
    assert!(fine.expect("valid").is_some());
}

#[test]
fn a_transport_that_cannot_be_set_up_fails_every_export_and_is_counted() {
    let exporter = |endpoint: &str, certificate: Option<&str>| super::settings::ExporterSettings {
        protocol: Protocol::HttpProtobuf,
        endpoint: endpoint.to_owned(),
        headers: Vec::new(),
        timeout: Duration::from_secs(1),
        certificate: certificate.map(Into::into),
        client_certificate: None,
        client_key: None,
    };
    for (settings, reason) in [
        (exporter("collector:4318", None), "invalid endpoint"),
        (exporter("https://c:4318/v1/traces", Some("/nonexistent/ca.pem")), "OTEL_EXPORTER_OTLP_CERTIFICATE"),
    ] {
        let mut collector = super::export::Collector::new(&settings).expect("the runtime starts");
        let error = collector.send(Vec::new()).expect_err("cannot be sent").to_string();
        assert!(error.contains(reason), "{error}");
    }
}

/// CPU time of this thread (wall time is meaningless on a shared machine).
fn thread_cpu() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the struct it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// `cargo test --release -p wharf-server otel::tests::span_overhead -- --ignored --nocapture`
#[test]
#[ignore = "benchmark: prints the CPU cost of one request span, on the request path and on the export thread"]
fn span_overhead() {
    struct Discard;
    impl Sink for Discard {
        fn send(&mut self, message: Vec<u8>) -> Result<(), SendError> {
            std::hint::black_box(message);
            Ok(())
        }
    }
    let tracing = start(Discard, batch(1 << 20, 512, Duration::from_secs(3600)));
    let parts = request(
        "GET",
        "/items/42?x=1",
        &[("host", "bench.example:8000"), ("user-agent", "bench/1.0"), ("traceparent", INCOMING)],
    );
    let rounds: u32 = 200_000;
    let client = client("http", peer());
    let started = thread_cpu();
    for _ in 0..rounds {
        let mut span = tracing.start(&parts, &client, false);
        span.queued(Duration::from_micros(3));
        std::hint::black_box(span.traceparent());
        span.finish(200, 128, true);
    }
    let request_path = (thread_cpu() - started) / rounds;
    assert!(tracing.queue.flush(Duration::from_secs(60)));

    let span = tracing.start(&parts, &client, false);
    let record = span.record().clone();
    let mut encoder = Encoder::new(&test_resource(), &InstrumentationScope::builder("wharf").build());
    let started = thread_cpu();
    for i in 0..rounds {
        encoder.push(&record);
        if i % 512 == 511 {
            std::hint::black_box(encoder.take());
        }
    }
    let export = (thread_cpu() - started) / rounds;
    println!("request path (start + queued + traceparent + finish): {} ns CPU/span", request_path.as_nanos());
    println!("export thread (attributes + encoding): {} ns CPU/span", export.as_nanos());
    assert_eq!(tracing.dropped(), 0);
}
