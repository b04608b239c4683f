"""Apps for the tracing tests.

`app` is instrumented with the real OpenTelemetry SDK and `opentelemetry-instrumentation-wsgi`,
exporting synchronously over OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT (the same receiver wharf
exports to), so a test can check that the app's spans continue wharf's trace. `plain` creates no
spans at all.
"""

import json
import time

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

SCOPE = "otel_app"
ENVIRON_KEYS = ("wharf.traceparent", "wharf.incoming_traceparent", "HTTP_TRACEPARENT", "HTTP_TRACESTATE")


def plain(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/environ":
        body = json.dumps({key: environ.get(key) for key in ENVIRON_KEYS}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/work":
        with trace.get_tracer(SCOPE).start_as_current_span("app-work"):
            time.sleep(0.001)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"worked"]
    if path == "/fail":
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
        return [b"failed on purpose"]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"x" * 1000 for _ in range(5))
    body = b"hello"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(_provider)

app = OpenTelemetryMiddleware(plain, tracer_provider=_provider)
