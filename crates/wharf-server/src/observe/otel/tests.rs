//! Tests of request tracing: span attributes and parenting, settings, and the export queue.

use std::sync::atomic::AtomicUsize;

use http::Version;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{SpanId, TraceContextExt as _, TraceId};
use opentelemetry::{Key, KeyValue, Value};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::InMemorySpanExporter;

use std::net::SocketAddr;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

use super::export::{Executor, otlp_exporter};
use super::settings::{BatchSettings, Protocol, Settings, resource};
use super::span::{protocol_version, server_address, well_formed_traceparent};
use super::*;
use crate::bridge::{Client, Forwarded, Peer};

const INCOMING: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn batch(max_queue_size: usize, max_export_batch_size: usize, schedule_delay: Duration) -> BatchSettings {
    BatchSettings { max_queue_size, max_export_batch_size, schedule_delay }
}

fn start<E: SpanExporter + 'static>(exporter: E, settings: BatchSettings) -> Tracing {
    let resource = Resource::builder_empty().with_service_name("test").build();
    Tracing::start_exporting(resource, settings, move || Ok((exporter, Executor::Plain))).expect("tracing starts")
}

fn in_memory() -> (Tracing, InMemorySpanExporter) {
    let exporter = InMemorySpanExporter::default();
    (start(exporter.clone(), batch(64, 16, Duration::from_secs(60))), exporter)
}

fn exported(tracing: &Tracing, exporter: &InMemorySpanExporter) -> Vec<SpanData> {
    tracing.provider.force_flush().expect("flush");
    exporter.get_finished_spans().expect("finished spans")
}

fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut builder = http::Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).expect("valid request").into_parts().0
}

fn attr(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes.iter().find(|kv| kv.key == Key::new(key.to_owned())).map(|kv| kv.value.clone())
}

fn one_span(tracing: &Tracing, exporter: &InMemorySpanExporter) -> SpanData {
    let mut spans = exported(tracing, exporter);
    assert_eq!(spans.len(), 1, "{spans:#?}");
    spans.remove(0)
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
    let (tracing, exporter) = in_memory();
    let parts = request("POST", "/orders/7?page=2", &[("host", "shop.example:8443"), ("user-agent", "curl/8.5")]);
    tracing.start(&parts, &client("https", peer()), false).finish(201, 42, true);

    let span = one_span(&tracing, &exporter);
    assert_eq!(span.name, "POST");
    assert_eq!(span.span_kind, SpanKind::Server);
    assert_eq!(span.instrumentation_scope.name(), "wharf");
    assert_eq!(attr(&span, "http.request.method"), Some("POST".into()));
    assert_eq!(attr(&span, "url.path"), Some("/orders/7".into()));
    assert_eq!(attr(&span, "url.query"), None, "the query is only recorded when asked for");
    assert_eq!(attr(&span, "url.scheme"), Some("https".into()));
    assert_eq!(attr(&span, "server.address"), Some("shop.example".into()));
    assert_eq!(attr(&span, "server.port"), Some(8443.into()));
    assert_eq!(attr(&span, "client.address"), Some("192.0.2.7".into()));
    assert_eq!(attr(&span, "network.protocol.version"), Some("1.1".into()));
    assert_eq!(attr(&span, "user_agent.original"), Some("curl/8.5".into()));
    assert_eq!(attr(&span, "http.response.status_code"), Some(201.into()));
    assert_eq!(attr(&span, "http.response.body.size"), Some(42.into()));
    assert_eq!(attr(&span, "error.type"), None);
    assert_eq!(span.status, Status::Unset);
    assert_eq!(span.parent_span_id, SpanId::INVALID, "no incoming context: a root span");
}

#[test]
fn query_is_recorded_when_asked_for() {
    let (tracing, exporter) = in_memory();
    tracing.start(&request("GET", "/search?q=boats&n=1", &[]), &client("http", None), true).finish(200, 0, true);
    let span = one_span(&tracing, &exporter);
    assert_eq!(attr(&span, "url.query"), Some("q=boats&n=1".into()));
    assert_eq!(attr(&span, "client.address"), None);
}

#[test]
fn unknown_methods_are_other_and_the_span_is_named_http() {
    let (tracing, exporter) = in_memory();
    tracing.start(&request("PROPFIND", "/dav", &[]), &client("http", peer()), false).finish(207, 0, true);
    let span = one_span(&tracing, &exporter);
    assert_eq!(span.name, "HTTP");
    assert_eq!(attr(&span, "http.request.method"), Some("_OTHER".into()));
    assert_eq!(attr(&span, "http.request.method_original"), Some("PROPFIND".into()));
}

#[test]
fn server_address_comes_from_the_request_then_the_socket() {
    let parts = request("GET", "/", &[("host", "example.org")]);
    assert_eq!(server_address(&parts, &client("https", None)), Some(("example.org".into(), 443)));
    assert_eq!(server_address(&parts, &client("http", None)), Some(("example.org".into(), 80)));
    let parts = request("GET", "/", &[("host", "[2001:db8::1]:9000")]);
    assert_eq!(server_address(&parts, &client("http", None)), Some(("2001:db8::1".into(), 9000)));
    let parts = request("GET", "http://proxy.example:81/x", &[("host", "ignored.example")]);
    assert_eq!(server_address(&parts, &client("http", None)), Some(("proxy.example".into(), 81)));
    let parts = request("GET", "/", &[]);
    assert_eq!(server_address(&parts, &client("http", None)), Some(("10.0.0.1".into(), 8000)));
    let parts = request("GET", "/", &[("host", "bad host")]);
    assert_eq!(server_address(&parts, &client("http", None)), Some(("10.0.0.1".into(), 8000)));
    assert_eq!(server_address(&parts, &client_at("http", None, None)), None);
}

#[test]
fn protocol_versions_use_the_convention_spelling() {
    let (tracing, exporter) = in_memory();
    let mut parts = request("GET", "/", &[]);
    parts.version = Version::HTTP_10;
    tracing.start(&parts, &client_at("http", None, None), false).finish(200, 0, true);
    assert_eq!(attr(&one_span(&tracing, &exporter), "network.protocol.version"), Some("1.0".into()));
    assert_eq!(protocol_version(Version::HTTP_2), Some("2"));
}

#[test]
fn incoming_traceparent_makes_the_span_a_child_and_keeps_tracestate() {
    let (tracing, exporter) = in_memory();
    let parts = request("GET", "/", &[("traceparent", INCOMING), ("tracestate", "vendor=abc,other=1")]);
    let span = tracing.start(&parts, &client_at("http", None, None), false);
    let traceparent = span.traceparent();
    assert_eq!(span.tracestate().as_deref(), Some("vendor=abc,other=1"));
    span.finish(200, 0, true);

    let data = one_span(&tracing, &exporter);
    assert_eq!(data.span_context.trace_id(), TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex"));
    assert_eq!(data.parent_span_id, SpanId::from_hex("00f067aa0ba902b7").expect("hex"));
    assert!(data.parent_span_is_remote);
    assert_eq!(traceparent, format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{:016x}-01", data.span_context.span_id()));
}

#[test]
fn traceparent_is_what_a_w3c_propagator_reads_back() {
    let (tracing, _exporter) = in_memory();
    let span = tracing.start(&request("GET", "/", &[]), &client_at("http", None, None), false);
    let mut headers = http::HeaderMap::new();
    headers.insert("traceparent", span.traceparent().parse().expect("header value"));
    let extracted = TraceContextPropagator::new().extract(&HeaderExtractor(&headers));
    let read = extracted.span().span_context().clone();
    assert!(read.is_valid());
    assert_eq!(read.trace_id(), span.span.span_context().trace_id());
    assert_eq!(read.span_id(), span.span.span_context().span_id());
    assert!(read.is_sampled());
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
        let (tracing, exporter) = in_memory();
        tracing
            .start(&request("GET", "/", &[("traceparent", bad)]), &client_at("http", None, None), false)
            .finish(200, 0, true);
        let span = one_span(&tracing, &exporter);
        assert_eq!(span.parent_span_id, SpanId::INVALID, "{bad} must not become a parent");
        assert_ne!(span.span_context.trace_id(), TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex"));
    }
}

#[test]
fn unsampled_parent_is_followed_and_nothing_is_exported() {
    let (tracing, exporter) = in_memory();
    let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    let span =
        tracing.start(&request("GET", "/", &[("traceparent", unsampled)]), &client_at("http", None, None), false);
    let traceparent = span.traceparent();
    assert!(traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    assert!(traceparent.ends_with("-00"), "the app must not sample either: {traceparent}");
    assert!(!traceparent.contains("00f067aa0ba902b7"), "a span id of its own: {traceparent}");
    span.finish(200, 0, true);
    assert!(exported(&tracing, &exporter).is_empty());
    assert_eq!(tracing.dropped(), 0, "unsampled spans are not drops");
}

#[test]
fn server_errors_and_incomplete_responses_are_errors() {
    let (tracing, exporter) = in_memory();
    tracing.start(&request("GET", "/a", &[]), &client_at("http", None, None), false).finish(503, 10, true);
    tracing.start(&request("GET", "/b", &[]), &client_at("http", None, None), false).finish(404, 10, true);
    tracing.start(&request("GET", "/c", &[]), &client_at("http", None, None), false).finish(200, 5, false);
    let spans = exported(&tracing, &exporter);
    let by_path =
        |path: &str| spans.iter().find(|s| attr(s, "url.path") == Some(path.to_owned().into())).expect("span");

    let failed = by_path("/a");
    assert_eq!(failed.status, Status::error(""));
    assert_eq!(attr(failed, "error.type"), Some("503".into()));
    let not_found = by_path("/b");
    assert_eq!(not_found.status, Status::Unset, "4xx is the client's error, not the server's");
    let cut = by_path("/c");
    assert!(matches!(&cut.status, Status::Error { description } if !description.is_empty()));
    assert_eq!(attr(cut, "error.type"), Some("wharf.response_incomplete".into()));
    assert_eq!(attr(cut, "http.response.body.size"), Some(5.into()));
}

#[test]
fn queue_wait_is_an_event() {
    let (tracing, exporter) = in_memory();
    let mut span = tracing.start(&request("GET", "/", &[]), &client_at("http", None, None), false);
    span.queued(Duration::from_millis(1500));
    span.finish(200, 0, true);
    let data = one_span(&tracing, &exporter);
    let event = data.events.iter().find(|e| e.name == "wharf.python_thread_acquired").expect("event");
    assert_eq!(event.attributes, vec![KeyValue::new("wharf.queue.wait", 1.5)]);
}

#[derive(Debug)]
struct CountingExporter(Arc<AtomicUsize>);

impl SpanExporter for CountingExporter {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        self.0.fetch_add(batch.len(), Ordering::SeqCst);
        std::future::ready(Ok(()))
    }
}

#[test]
fn shutdown_exports_what_is_queued() {
    let exported = Arc::new(AtomicUsize::new(0));
    let tracing = start(CountingExporter(Arc::clone(&exported)), batch(64, 2, Duration::from_secs(3600)));
    for _ in 0..5 {
        tracing.start(&request("GET", "/", &[]), &client_at("http", None, None), false).finish(200, 0, true);
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
}

#[test]
fn a_full_batch_is_exported_without_waiting_for_the_delay() {
    let exporter = InMemorySpanExporter::default();
    let tracing = start(exporter.clone(), batch(64, 4, Duration::from_secs(3600)));
    for _ in 0..4 {
        tracing.start(&request("GET", "/", &[]), &client_at("http", None, None), false).finish(200, 0, true);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while exporter.get_finished_spans().expect("spans").len() < 4 {
        assert!(Instant::now() < deadline, "a full batch must be exported at once");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn partial_batches_go_out_after_the_schedule_delay() {
    let exporter = InMemorySpanExporter::default();
    let tracing = start(exporter.clone(), batch(64, 4, Duration::from_millis(50)));
    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while exporter.get_finished_spans().expect("spans").len() < n {
            assert!(Instant::now() < deadline, "spans were not exported after the delay");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    // A lone span starts a batch, and is exported once the delay passed.
    tracing.start(&request("GET", "/", &[]), &client_at("http", None, None), false).finish(200, 0, true);
    wait_for(1);
    // A full batch plus a rest: the rest must not wait for a batch that never fills.
    for _ in 0..6 {
        tracing.start(&request("GET", "/", &[]), &client_at("http", None, None), false).finish(200, 0, true);
    }
    wait_for(7);
    tracing.shutdown();
}

/// Holds every export until the test lets it through, like a collector that hangs.
#[derive(Debug)]
struct HangingExporter {
    entered: Sender<usize>,
    release: Receiver<()>,
    exported: Arc<AtomicUsize>,
}

impl SpanExporter for HangingExporter {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let _ = self.entered.send(batch.len());
        let _ = self.release.recv();
        self.exported.fetch_add(batch.len(), Ordering::SeqCst);
        std::future::ready(Ok(()))
    }
}

#[test]
fn a_hanging_collector_drops_and_counts_instead_of_blocking() {
    let (entered_tx, entered) = crossbeam_channel::unbounded();
    let (release, release_rx) = crossbeam_channel::unbounded();
    let exported = Arc::new(AtomicUsize::new(0));
    let exporter = HangingExporter { entered: entered_tx, release: release_rx, exported: Arc::clone(&exported) };
    let tracing = start(exporter, batch(2, 1, Duration::ZERO));
    let end = || tracing.tracer.start("span").end();

    end();
    assert_eq!(entered.recv_timeout(Duration::from_secs(5)), Ok(1), "the first span is being exported");
    let started = Instant::now();
    for _ in 0..10 {
        end();
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

#[derive(Debug)]
struct RefusingExporter;

impl SpanExporter for RefusingExporter {
    fn export(&self, _batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        std::future::ready(Err(OTelSdkError::InternalFailure("connection refused".into())))
    }
}

#[test]
fn spans_of_failed_exports_are_counted() {
    let tracing = start(RefusingExporter, batch(64, 16, Duration::from_secs(3600)));
    for _ in 0..3 {
        tracing.tracer.start("span").end();
    }
    assert!(tracing.provider.force_flush().is_err());
    assert_eq!(tracing.export_failed(), 3);
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
    assert_eq!(on.protocol, Protocol::HttpProtobuf);
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
    assert_eq!(grpc.protocol, Protocol::Grpc);
    let overridden = settings(&[
        endpoint,
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
    ]);
    assert_eq!(overridden.expect("valid").expect("on").protocol, Protocol::HttpProtobuf);
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
fn grpc_exporter_builds_outside_any_runtime() {
    let (exporter, executor) = otlp_exporter(Protocol::Grpc).expect("gRPC exporter");
    assert!(matches!(executor, Executor::Tokio(_)));
    drop(exporter);
    drop(executor);
    let (_exporter, executor) = otlp_exporter(Protocol::HttpProtobuf).expect("HTTP exporter");
    assert!(matches!(executor, Executor::Plain));
}

/// `cargo test --release -p wharf-server otel::tests::span_overhead -- --ignored --nocapture`
#[test]
#[ignore = "benchmark: prints the cost of one request span"]
fn span_overhead() {
    let exporter = InMemorySpanExporter::default();
    let tracing = start(exporter.clone(), batch(1 << 20, 512, Duration::from_millis(100)));
    let parts = request(
        "GET",
        "/items/42?x=1",
        &[("host", "bench.example:8000"), ("user-agent", "bench/1.0"), ("traceparent", INCOMING)],
    );
    let rounds = 200_000;
    let started = Instant::now();
    for _ in 0..rounds {
        let mut span = tracing.start(&parts, &client("http", peer()), false);
        span.queued(Duration::from_micros(3));
        std::hint::black_box(span.traceparent());
        span.finish(200, 128, true);
    }
    let per_span = started.elapsed() / rounds;
    println!("request span start + queued + traceparent + finish: {} ns/op", per_span.as_nanos());
    println!("dropped: {}", tracing.dropped());
    exporter.reset();
}
