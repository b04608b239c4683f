"""WSGI apps exercising PEP 3333 details; each is served by the tests in test_pep3333.py."""

import base64
import io
import json
import os
import sys
import threading
import time
import urllib.parse
from wsgiref.validate import validator

# Shared state for close() accounting, inspected through /_state.
_lock = threading.Lock()
_closes: dict[str, int] = {}


def _note_close(tag: str) -> None:
    with _lock:
        _closes[tag] = _closes.get(tag, 0) + 1


def _json(start_response, payload, status="200 OK"):
    body = json.dumps(payload).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def environ_app(environ, start_response):
    """Returns every environ entry with its type; values of non-str objects as their type name."""
    out = {}
    for key, value in environ.items():
        if isinstance(value, str):
            out[key] = ["str", value]
        elif isinstance(value, bool):
            out[key] = ["bool", value]
        elif isinstance(value, tuple):
            out[key] = ["tuple", list(value)]
        else:
            out[key] = [type(value).__name__, None]
    out["__has_methods__"] = {
        "input": all(hasattr(environ["wsgi.input"], m) for m in ("read", "readline", "readlines", "__iter__")),
        "errors": all(hasattr(environ["wsgi.errors"], m) for m in ("write", "writelines", "flush")),
    }
    environ["wsgi.errors"].write("environ_app was here\n")
    environ["wsgi.errors"].flush()
    return _json(start_response, out)


def run_ops(stream, ops):
    """Applies read operations like `read:3` or `readline` to a stream; the results in order."""
    results = []
    for op in ops:
        name, _, arg = op.partition(":")
        n = int(arg) if arg else None
        if name == "read":
            results.append(stream.read() if n is None else stream.read(n))
        elif name == "readline":
            results.append(stream.readline() if n is None else stream.readline(n))
        elif name == "readlines":
            results.extend(stream.readlines() if n is None else stream.readlines(n))
        elif name == "iter":
            results.extend(list(stream))
        elif name == "next":
            results.append(next(iter(stream), b""))
        else:
            raise ValueError(f"unknown op {op}")
    return results


def input_app(environ, start_response):
    """Applies the read operations listed in the query string (e.g. ops=read:3,readline,read)
    to wsgi.input and to a BytesIO of the same data; answers both result lists."""
    query = environ.get("QUERY_STRING", "")
    ops = [o for o in dict(p.split("=", 1) for p in query.split("&") if "=" in p).get("ops", "read").split(",") if o]
    got = run_ops(environ["wsgi.input"], ops)
    data = b"".join(got)
    return _json(start_response, {"got": [base64.b64encode(x).decode() for x in got], "total": len(data)})


def echo_app(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))])
    return [body]


def _wait_for_gate(gate: str) -> None:
    """Blocks until the file `gate` exists (at most 20 s, so a failed test cannot hang a thread)."""
    deadline = time.monotonic() + 20
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)


def stream_gate_app(environ, start_response):
    """Yields a first chunk, then waits until the file named in the query exists."""
    gate = environ["QUERY_STRING"].split("=", 1)[1]

    def body():
        yield b"first chunk\n"
        _wait_for_gate(gate)
        yield b"second chunk\n"

    start_response("200 OK", [("Content-Type", "text/plain")])
    return body()


def sized_gate_app(environ, start_response):
    """Declares Content-Length, yields exactly that body, then waits for the gate file named in
    the query before yielding more bytes than it declared."""
    gate = environ["QUERY_STRING"].split("=", 1)[1]

    def body():
        yield b"whole body\n"
        _wait_for_gate(gate)
        yield b"excess bytes"

    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "11")])
    return body()


class _Tracked:
    """A response iterable that records close() calls under a tag."""

    def __init__(self, tag, chunks, fail_at=None, forever=False):
        self.tag = tag
        self.chunks = chunks
        self.fail_at = fail_at
        self.forever = forever

    def __iter__(self):
        i = 0
        while self.forever or i < len(self.chunks):
            if self.fail_at is not None and i == self.fail_at:
                raise RuntimeError("boom while iterating")
            yield self.chunks[i % len(self.chunks)] if self.chunks else b""
            i += 1
            if self.forever:
                time.sleep(0.001)
                if i > 200_000:
                    return

    def close(self):
        _note_close(self.tag)


def close_app(environ, start_response):
    path = environ["PATH_INFO"]
    tag = environ["QUERY_STRING"].split("=", 1)[1] if "=" in environ["QUERY_STRING"] else "default"
    if path == "/_state":
        with _lock:
            return _json(start_response, dict(_closes))
    start_response("200 OK", [("Content-Type", "text/plain")])
    if path == "/ok":
        return _Tracked(tag, [b"a", b"b", b"c"])
    if path == "/fail":
        return _Tracked(tag, [b"a", b"b"], fail_at=1)
    if path == "/forever":
        return _Tracked(tag, [b"x" * 16384], forever=True)
    raise ValueError(path)


def lazy_app(environ, start_response):
    """start_response is called only on the first iteration of the generator."""

    def body():
        start_response("201 Created", [("Content-Type", "text/plain"), ("X-Lazy", "yes")])
        yield b""
        yield b"lazy "
        yield b"body"

    return body()


def write_app(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written ")
    write(b"directly ")
    return [b"then ", b"returned"]


def exc_info_app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/before":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("replace me")
        except ValueError:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain"), ("X-Replaced", "1")], sys.exc_info())
        return [b"replaced"]
    if path == "/after":
        def body():
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"partial"
            try:
                raise ValueError("too late")
            except ValueError:
                start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
            yield b"never"
        return body()
    if path == "/twice":
        start_response("200 OK", [])
        start_response("200 OK", [])
        return [b"unreachable"]
    raise ValueError(path)


def file_app(environ, start_response):
    path, query = environ["PATH_INFO"], environ["QUERY_STRING"]
    params = dict(urllib.parse.parse_qsl(query))
    if path == "/file":
        f = open(params["path"], "rb")
        if "seek" in params:
            f.seek(int(params["seek"]))
        headers = [("Content-Type", "application/octet-stream")]
        if "length" in params:
            headers.append(("Content-Length", params["length"]))
        start_response("200 OK", headers)
        return environ["wsgi.file_wrapper"](f, 32768)
    if path == "/bytesio":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"from a BytesIO " * 100), 7)
    raise ValueError(path)


def bad_app(environ, start_response):
    """Apps that break the rules; the server must answer 500 and keep serving."""
    path = environ["PATH_INFO"]
    if path == "/raise":
        raise RuntimeError("application exploded")
    if path == "/bad-status":
        start_response("OK", [])
        return [b""]
    if path == "/bad-header-latin1":
        start_response("200 OK", [("X-Euro", "\u20ac")])
        return [b""]
    if path == "/bad-header-crlf":
        start_response("200 OK", [("X-Inject", "a\r\nSet-Cookie: evil=1")])
        return [b""]
    if path == "/str-body":
        start_response("200 OK", [])
        return ["not bytes"]
    if path == "/no-start-response":
        return [b"body without headers"]
    if path == "/ok":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"still fine"]
    raise ValueError(path)


def _validated_inner(environ, start_response):
    method = environ["REQUEST_METHOD"]
    # The validator only allows read(size); a chunked body has no CONTENT_LENGTH, so read in
    # blocks until the stream says it is done (wsgi.input_terminated).
    body = b""
    if method == "POST":
        while True:
            block = environ["wsgi.input"].read(65536)
            if not block:
                break
            body += block
    if environ["PATH_INFO"] == "/empty":
        start_response("204 No Content", [])
        return []
    if environ["PATH_INFO"] == "/large":
        payload = b"0123456789abcdef" * 65536
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(payload)))])
        return [payload]
    reply = b"method=" + method.encode() + b" len=" + str(len(body)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(reply)))])
    return [reply]


validated_app = validator(_validated_inner)


def sleepy_app(environ, start_response):
    """Blocks until the gate file named in the query exists (bounded), then answers."""
    gate = environ["QUERY_STRING"].split("=", 1)[1]
    with open(gate + ".entered", "a") as entered:
        entered.write("x")
    _wait_for_gate(gate)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"woke"]


def create_app():
    """An app factory for --factory."""

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"from factory"]

    return app


not_callable = 42
