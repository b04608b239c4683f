"""Streamed responses for the slow-reader tests (tests/server/test_slow_readers.py).

`/stream?n=N&id=X` sends N chunks of 64 KiB, chunk i made of the byte i % 251, from a generator
that checks a context variable the app set before returning it and resets it at the end, as
Flask's `stream_with_context` does: a reset only works in the context object that made the token.
When the generator ends (or is closed) it writes one line to `wsgi.errors`.
"""

import contextvars
import threading
from urllib.parse import parse_qs

from flask import Flask, Response, request, stream_with_context

CHUNK = 64 * 1024
request_id = contextvars.ContextVar("request_id")


def app(environ, start_response):
    query = parse_qs(environ["QUERY_STRING"])
    if environ["PATH_INFO"] != "/stream":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"hello"]
    n, ident = int(query["n"][0]), query["id"][0]
    token = request_id.set(ident)
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(n * CHUNK))])

    def body():
        threads = set()
        sent = 0
        try:
            for i in range(n):
                threads.add(threading.get_ident())
                if request_id.get() != ident:
                    raise RuntimeError(f"request_id is {request_id.get()!r} in the generator of {ident}")
                yield bytes([i % 251]) * CHUNK
                sent += 1
        finally:
            request_id.reset(token)
            environ["wsgi.errors"].write(f"stream {ident} closed after {sent} chunks on {len(threads)} threads\n")

    return body()


flask_app = Flask(__name__)


@flask_app.get("/stream")
def flask_stream():
    n = request.args.get("n", type=int)

    @stream_with_context
    def body():
        for i in range(n):
            # `request` is only reachable while the request context pushed before the first
            # chunk is still the current one.
            yield f"{request.args['id']}:{i:06d};".encode().ljust(CHUNK, b".")

    return Response(body(), mimetype="application/octet-stream")


@flask_app.get("/")
def hello():
    return "hello"
