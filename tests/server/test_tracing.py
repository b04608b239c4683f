"""OpenTelemetry tracing: wharf's SERVER spans arrive at a real OTLP/HTTP receiver with the HTTP
semantic-convention attributes, continue an incoming W3C trace, and are the parent of the spans a
Python app creates with the real OpenTelemetry SDK and WSGI instrumentation."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port, wait_for, wharf_command
from otlp_receiver import OtlpReceiver

INCOMING_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING_SPAN = "00f067aa0ba902b7"
INCOMING = f"00-{INCOMING_TRACE}-{INCOMING_SPAN}-01"
WSGI_SCOPE = "opentelemetry.instrumentation.wsgi"


def _server_has_tracing() -> bool:
    result = subprocess.run([*wharf_command(), "--help"], capture_output=True, text=True, timeout=60)
    return "--trace-query" in result.stdout


pytestmark = pytest.mark.skipif(
    not _server_has_tracing(), reason="this wharf build has no tracing integration yet (no --trace-query flag)"
)


@pytest.fixture
def receiver():
    with OtlpReceiver() as r:
        yield r


def tracing_env(receiver: OtlpReceiver, **extra: str) -> dict:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_SERVICE_NAME": "wharf-test",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
    env.update(extra)
    return env


def wharf_span(receiver: OtlpReceiver, path: str, **attributes) -> object:
    """The one span wharf exported for a request to `path` (matching `attributes`)."""

    def matches(span) -> bool:
        return (
            span.scope == "wharf"
            and span.attributes.get("url.path") == path
            and all(span.attributes.get(k) == v for k, v in attributes.items())
        )

    spans = receiver.wait_for(matches)
    assert len(spans) == 1, spans
    return spans[0]



def test_server_span_has_the_http_semantic_convention_attributes(wharf, receiver):
    server = wharf("otel_app:plain", env=tracing_env(receiver))
    resp = requests.get(f"{server.url}/hello?secret=1", headers={"User-Agent": "tracing-test/1"}, timeout=10)
    assert resp.status_code == 200

    span = wharf_span(receiver, "/hello")
    assert span.name == "GET"
    assert span.kind == "SPAN_KIND_SERVER"
    assert span.parent_span_id == "", "no incoming context: a root span"
    assert span.service_name == "wharf-test"
    assert span.status_code == "STATUS_CODE_UNSET"
    assert span.attributes == {
        "http.request.method": "GET",
        "url.path": "/hello",
        "url.scheme": "http",
        "server.address": "127.0.0.1",
        "server.port": server.port,
        "client.address": "127.0.0.1",
        "network.protocol.version": "1.1",
        "user_agent.original": "tracing-test/1",
        "http.response.status_code": 200,
        "http.response.body.size": len(resp.content),
    }, "url.query is left out unless --trace-query"
    acquired = [e for e in span.events if e.name == "wharf.python_thread_acquired"]
    assert len(acquired) == 1
    wait = acquired[0].attributes["wharf.queue.wait"]
    assert 0 <= wait < 5
    assert span.start_time_unix_nano <= acquired[0].time_unix_nano <= span.end_time_unix_nano


def test_trace_query_records_the_query_string(wharf, receiver):
    server = wharf("otel_app:plain", "--trace-query", env=tracing_env(receiver))
    requests.get(f"{server.url}/hello?a=1&b=two", timeout=10)
    assert wharf_span(receiver, "/hello").attributes["url.query"] == "a=1&b=two"


def test_incoming_traceparent_is_the_parent_and_the_app_sees_wharf_span(wharf, receiver):
    server = wharf("otel_app:plain", env=tracing_env(receiver))
    resp = requests.get(
        f"{server.url}/environ", headers={"traceparent": INCOMING, "tracestate": "vendor=abc,other=1"}, timeout=10
    )
    seen = resp.json()

    span = wharf_span(receiver, "/environ")
    assert span.trace_id == INCOMING_TRACE
    assert span.parent_span_id == INCOMING_SPAN
    assert span.trace_state == "vendor=abc,other=1"
    ours = f"00-{INCOMING_TRACE}-{span.span_id}-01"
    assert seen == {
        "wharf.traceparent": ours,
        "wharf.incoming_traceparent": INCOMING,
        "HTTP_TRACEPARENT": ours,
        "HTTP_TRACESTATE": "vendor=abc,other=1",
    }


def test_app_spans_made_with_the_python_sdk_have_wharf_span_as_parent(wharf, receiver):
    server = wharf("otel_app:app", env=tracing_env(receiver))
    assert requests.get(f"{server.url}/work", headers={"traceparent": INCOMING}, timeout=10).text == "worked"

    ours = wharf_span(receiver, "/work")
    middleware = receiver.wait_for(lambda s: s.scope == WSGI_SCOPE and s.trace_id == INCOMING_TRACE)
    work = receiver.wait_for(lambda s: s.scope == "otel_app" and s.name == "app-work")
    assert len(middleware) == 1 and len(work) == 1, (middleware, work)
    assert ours.trace_id == middleware[0].trace_id == work[0].trace_id == INCOMING_TRACE
    assert ours.parent_span_id == INCOMING_SPAN
    assert middleware[0].parent_span_id == ours.span_id, "the WSGI instrumentation continues from wharf's span"
    assert work[0].parent_span_id == middleware[0].span_id


def test_without_incoming_context_the_app_still_continues_wharf_trace(wharf, receiver):
    server = wharf("otel_app:app", env=tracing_env(receiver))
    requests.get(f"{server.url}/work", timeout=10)
    ours = wharf_span(receiver, "/work")
    middleware = receiver.wait_for(lambda s: s.scope == WSGI_SCOPE and s.trace_id == ours.trace_id)
    assert ours.parent_span_id == ""
    assert middleware[0].parent_span_id == ours.span_id


def test_unsampled_incoming_trace_is_not_exported_and_stays_unsampled_for_the_app(wharf, receiver):
    server = wharf("otel_app:plain", env=tracing_env(receiver))
    unsampled = f"00-{INCOMING_TRACE}-{INCOMING_SPAN}-00"
    seen = requests.get(f"{server.url}/environ", headers={"traceparent": unsampled}, timeout=10).json()
    assert seen["HTTP_TRACEPARENT"].startswith(f"00-{INCOMING_TRACE}-")
    assert seen["HTTP_TRACEPARENT"].endswith("-00")
    assert seen["wharf.incoming_traceparent"] == unsampled
    # Spans leave one worker in order: once a later span arrived, the unsampled one never will.
    requests.get(f"{server.url}/after", timeout=10)
    wharf_span(receiver, "/after")
    assert not [s for s in receiver.spans if s.trace_id == INCOMING_TRACE]


def test_invalid_traceparent_starts_a_new_trace(wharf, receiver):
    server = wharf("otel_app:plain", env=tracing_env(receiver))
    bad = f"00-{INCOMING_TRACE[:-1]}-{INCOMING_SPAN}-01"
    seen = requests.get(f"{server.url}/environ", headers={"traceparent": bad}, timeout=10).json()
    span = wharf_span(receiver, "/environ")
    assert span.parent_span_id == ""
    assert span.trace_id != INCOMING_TRACE
    assert seen["HTTP_TRACEPARENT"] == f"00-{span.trace_id}-{span.span_id}-01"


def test_server_errors_mark_the_span_as_error(wharf, receiver):
    server = wharf("otel_app:plain", env=tracing_env(receiver))
    assert requests.get(f"{server.url}/fail", timeout=10).status_code == 500
    requests.get(f"{server.url}/missing-is-fine", timeout=10)
    failed = wharf_span(receiver, "/fail")
    assert failed.status_code == "STATUS_CODE_ERROR"
    assert failed.attributes["http.response.status_code"] == 500
    assert failed.attributes["error.type"] == "500"
    ok = wharf_span(receiver, "/missing-is-fine")
    assert ok.status_code == "STATUS_CODE_UNSET"
    assert "error.type" not in ok.attributes


def test_unknown_methods_and_streamed_bodies(wharf, receiver):
    server = wharf("otel_app:plain", env=tracing_env(receiver))
    requests.request("PURGE", f"{server.url}/cache", timeout=10)
    streamed = requests.get(f"{server.url}/stream", timeout=10)
    assert len(streamed.content) == 5000

    purge = wharf_span(receiver, "/cache")
    assert purge.name == "HTTP"
    assert purge.attributes["http.request.method"] == "_OTHER"
    assert purge.attributes["http.request.method_original"] == "PURGE"
    stream = wharf_span(receiver, "/stream")
    assert stream.attributes["http.response.body.size"] == 5000
    assert stream.status_code == "STATUS_CODE_UNSET"


def test_every_request_of_every_worker_gets_one_span(wharf, receiver):
    server = wharf("otel_app:plain", "--workers", "2", env=tracing_env(receiver))
    for i in range(20):
        requests.get(f"{server.url}/count/{i}", headers={"Connection": "close"}, timeout=10)
    spans = receiver.wait_count(lambda s: s.scope == "wharf" and s.attributes["url.path"].startswith("/count/"), 20)
    assert sorted(s.attributes["url.path"] for s in spans) == sorted(f"/count/{i}" for i in range(20))
    assert len({s.span_id for s in spans}) == 20
    assert len({s.trace_id for s in spans}) == 20


def test_otel_sdk_disabled_turns_tracing_off(wharf, receiver):
    server = wharf("otel_app:plain", env=tracing_env(receiver, OTEL_SDK_DISABLED="true"))
    seen = requests.get(f"{server.url}/environ", headers={"traceparent": INCOMING}, timeout=10).json()
    assert seen["wharf.traceparent"] is None
    assert seen["HTTP_TRACEPARENT"] == INCOMING, "the incoming header reaches the app untouched"
    time.sleep(0.5)
    assert receiver.spans == []
    assert receiver.requests == []


def dropped_spans(admin: int) -> float | None:
    text = requests.get(f"http://127.0.0.1:{admin}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "wharf_otel_spans_dropped_total":
                return sample.value
    return None


def test_hanging_collector_never_slows_requests_and_drops_are_counted(wharf):
    # A collector that accepts connections and never answers: every export hangs.
    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(64)
        endpoint = f"http://127.0.0.1:{blackhole.getsockname()[1]}"
        admin = free_port()
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_TIMEOUT": "120000",
            "OTEL_BSP_MAX_QUEUE_SIZE": "4",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "1",
            "OTEL_BSP_SCHEDULE_DELAY": "0",
        }
        server = wharf("otel_app:plain", "--admin-bind", f"127.0.0.1:{admin}", env=env)
        slowest = 0.0
        for i in range(40):
            started = time.monotonic()
            assert requests.get(f"{server.url}/r{i}", timeout=10).status_code == 200
            slowest = max(slowest, time.monotonic() - started)
        assert slowest < 1.0, f"a request took {slowest:.3f}s while the collector hangs"
        # One span is stuck in the hanging export, four wait in the queue, the rest are dropped.
        wait_for(lambda: dropped_spans(admin) == 35, timeout=15)
        assert dropped_spans(admin) == 35


FORWARDED = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "shop.example"}


@pytest.mark.parametrize(
    ("trusted", "client", "scheme", "host", "port"),
    [("127.0.0.1", "203.0.113.9", "https", "shop.example", 443), ("10.9.9.9", "127.0.0.1", "http", "127.0.0.1", None)],
)
def test_span_and_access_log_show_the_client_view(wharf, receiver, trusted, client, scheme, host, port):
    """The span and the access log see the client as the environ does: through trusted proxies
    only (one client view per request, computed from --forwarded-allow-ips)."""
    server = wharf(
        "otel_app:plain",
        "--forwarded-allow-ips",
        trusted,
        "--access-log",
        "--access-log-format",
        "json",
        env=tracing_env(receiver),
    )
    assert requests.get(f"{server.url}/proxied", headers=FORWARDED, timeout=10).status_code == 200

    span = wharf_span(receiver, "/proxied")
    assert span.attributes["client.address"] == client
    assert span.attributes["url.scheme"] == scheme
    assert span.attributes["server.address"] == host
    assert span.attributes["server.port"] == (port or server.port)
    record = json.loads(wait_for(lambda: server.stdout().strip()))
    assert record["remote_addr"] == client
    assert (record["remote_port"] is None) == (trusted == "127.0.0.1")
