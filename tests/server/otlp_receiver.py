"""Real OTLP trace receivers for tests.

`OtlpReceiver` listens on 127.0.0.1 (a free port), accepts `POST /v1/traces` with a protobuf
`ExportTraceServiceRequest` (decoded with the official `opentelemetry-proto` package, gzip
accepted) and keeps every span it received as a `ReceivedSpan`; given an `ssl.SSLContext` it
serves HTTPS. `GrpcOtlpReceiver` is the same over OTLP/gRPC (grpcio's server, the
`TraceService/Export` method), with TLS when given server credentials.
"""

from __future__ import annotations

import gzip
import ssl
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

TRACES_PATH = "/v1/traces"


def any_value(value: AnyValue):
    """An OTLP AnyValue as the plain Python value it carries."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


def attributes(key_values) -> dict:
    return {kv.key: any_value(kv.value) for kv in key_values}


@dataclass
class ReceivedEvent:
    name: str
    time_unix_nano: int
    attributes: dict


@dataclass
class ReceivedSpan:
    """One span as received, ids as lowercase hex ("" for no parent)."""

    service_name: str
    resource: dict
    scope: str
    name: str
    kind: str  # SPAN_KIND_SERVER, SPAN_KIND_INTERNAL, ...
    trace_id: str
    span_id: str
    parent_span_id: str
    trace_state: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    attributes: dict
    events: list[ReceivedEvent]
    status_code: str  # STATUS_CODE_UNSET, STATUS_CODE_OK, STATUS_CODE_ERROR
    status_message: str

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-01"


def decode(body: bytes) -> list[ReceivedSpan]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        service_name=resource.get("service.name", ""),
                        resource=resource,
                        scope=scope_spans.scope.name,
                        name=span.name,
                        kind=Span.SpanKind.Name(span.kind),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        trace_state=span.trace_state,
                        start_time_unix_nano=span.start_time_unix_nano,
                        end_time_unix_nano=span.end_time_unix_nano,
                        attributes=attributes(span.attributes),
                        events=[
                            ReceivedEvent(e.name, e.time_unix_nano, attributes(e.attributes)) for e in span.events
                        ],
                        status_code=Status.StatusCode.Name(span.status.code),
                        status_message=span.status.message,
                    )
                )
    return spans


class _Spans:
    """The spans a receiver got, and waiting for them."""

    def __init__(self):
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._spans: list[ReceivedSpan] = []
        self.requests: list[dict] = []  # path, content type, headers of each export request
        self.errors: list[str] = []

    def _record(self, request: dict) -> None:
        with self._lock:
            self.requests.append(request)

    def _record_error(self, message: str) -> None:
        with self._lock:
            self.errors.append(message)

    def _add(self, spans: list[ReceivedSpan]) -> None:
        with self._changed:
            self._spans.extend(spans)
            self._changed.notify_all()

    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def wait_for(self, predicate, timeout: float = 15.0) -> list[ReceivedSpan]:
        """Waits until `predicate(span)` holds for at least one span; returns those spans."""
        return self.wait_count(predicate, 1, timeout)

    def wait_count(self, predicate, count: int, timeout: float = 15.0) -> list[ReceivedSpan]:
        """Waits until at least `count` spans satisfy `predicate`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [s for s in self._spans if predicate(s)]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(s.scope, s.name, s.attributes.get("url.path")) for s in self._spans]
                    raise AssertionError(
                        f"{len(found)} of {count} matching spans within {timeout}s; received: {seen}; errors: {self.errors}"
                    )
                self._changed.wait(remaining)


class OtlpReceiver(_Spans):
    """`with OtlpReceiver() as receiver:` → `receiver.endpoint` for OTEL_EXPORTER_OTLP_ENDPOINT
    (`https://` with `tls`)."""

    def __init__(self, tls: ssl.SSLContext | None = None):
        super().__init__()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (http.server naming)
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if self.headers.get("Content-Encoding", "").lower() == "gzip":
                    body = gzip.decompress(body)
                receiver._record_request(self)
                if self.path != TRACES_PATH:
                    self._reply(404, b"", "text/plain")
                    return
                try:
                    spans = decode(body)
                except Exception as error:  # a broken export must fail the test, not the thread
                    receiver._record_error(f"cannot decode export: {error!r}")
                    self._reply(400, b"", "text/plain")
                    return
                receiver._add(spans)
                payload = ExportTraceServiceResponse().SerializeToString()
                self._reply(200, payload, "application/x-protobuf")

            def _reply(self, status: int, payload: bytes, content_type: str):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format, *args):  # noqa: A002 (http.server signature)
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        if tls is not None:
            # Handshakes happen in the handler threads (on first read), not in the accept loop.
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True, do_handshake_on_connect=False)
        self.port = self._server.server_address[1]
        self.endpoint = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _record_request(self, handler: BaseHTTPRequestHandler) -> None:
        self._record(
            {
                "path": handler.path,
                "content_type": handler.headers.get("Content-Type", ""),
                "headers": {k.lower(): v for k, v in handler.headers.items()},
            }
        )


class GrpcOtlpReceiver(_Spans):
    """`with GrpcOtlpReceiver() as receiver:` → `receiver.endpoint` for OTLP/gRPC; `credentials`
    (`grpc.ssl_server_credentials(...)`) makes it TLS. Requests record the call's metadata."""

    def __init__(self, credentials=None):
        import grpc  # only the gRPC tests need it

        super().__init__()
        receiver = self

        def export(request: ExportTraceServiceRequest, context) -> ExportTraceServiceResponse:
            receiver._record({"path": EXPORT_METHOD, "headers": dict(context.invocation_metadata())})
            receiver._add(decode(request.SerializeToString()))
            return ExportTraceServiceResponse()

        handler = grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService",
            {
                "Export": grpc.unary_unary_rpc_method_handler(
                    export,
                    request_deserializer=ExportTraceServiceRequest.FromString,
                    response_serializer=ExportTraceServiceResponse.SerializeToString,
                )
            },
        )
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self._server.add_generic_rpc_handlers((handler,))
        if credentials is None:
            self.port = self._server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = self._server.add_secure_port("127.0.0.1:0", credentials)
        self.endpoint = f"{'https' if credentials else 'http'}://127.0.0.1:{self.port}"

    def __enter__(self) -> GrpcOtlpReceiver:
        self._server.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.stop(grace=None)


EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
