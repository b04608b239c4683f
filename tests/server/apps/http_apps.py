"""Small WSGI apps for the HTTP protocol and malformed-request tests.

Each app reports what it saw as JSON so a test can assert on the server's behaviour, not on
the app's.
"""

from __future__ import annotations

import json
import os
import time
from urllib.parse import parse_qs

# How long the blocking app waits for its release file before giving up, so a failing test
# cannot leave a Python thread stuck forever.
BLOCK_LIMIT_SECONDS = 30.0


def _json(start_response, payload, status="200 OK", extra=()):
    body = json.dumps(payload, sort_keys=True).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *extra])
    return [body]


def echo(environ, start_response):
    """Reads the whole body and answers with the request as the app saw it."""
    body = environ["wsgi.input"].read()
    headers = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
    return _json(
        start_response,
        {
            "method": environ["REQUEST_METHOD"],
            "path": environ["PATH_INFO"],
            "query": environ["QUERY_STRING"],
            "protocol": environ["SERVER_PROTOCOL"],
            "content_length": environ.get("CONTENT_LENGTH"),
            "content_type": environ.get("CONTENT_TYPE"),
            "input_terminated": environ.get("wsgi.input_terminated"),
            "headers": headers,
            "body": body.decode("latin-1"),
            "body_len": len(body),
        },
    )


def ignore_body(environ, start_response):
    """Answers without ever touching wsgi.input."""
    body = b"not reading your body\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def fixed(environ, start_response):
    """The same headers and body for GET and HEAD (the server must drop the body for HEAD)."""
    body = b"0123456789" * 100
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body))), ("X-Fixed", "yes")],
    )
    return [body]


def streamed(environ, start_response):
    """A generator response with no Content-Length: chunked on 1.1, close-delimited on 1.0."""
    start_response("200 OK", [("Content-Type", "text/plain")])

    def chunks():
        for i in range(5):
            yield f"part{i};".encode()

    return chunks()


def no_content(environ, start_response):
    """`/204` and `/304` answer with that status and (wrongly) a body the server must not send."""
    status = {"/204": "204 No Content", "/304": "304 Not Modified"}[environ["PATH_INFO"]]
    start_response(status, [("X-Status-App", "yes"), ("ETag", '"v1"')])
    return [b"this body must never reach the client"]


def blocking(environ, start_response):
    """Signals it started by creating `<started>`, then waits until `<release>` exists.

    Both paths come from the query string (`?started=...&release=...`), so tests synchronise
    on files instead of sleeping.
    """
    query = parse_qs(environ["QUERY_STRING"])
    started, release = query["started"][0], query["release"][0]
    with open(started, "a"):
        pass
    deadline = time.monotonic() + BLOCK_LIMIT_SECONDS
    while not os.path.exists(release):
        if time.monotonic() > deadline:
            return _json(start_response, {"released": False}, status="500 Internal Server Error")
        time.sleep(0.01)
    return _json(start_response, {"released": True})


def framing(environ, start_response):
    """Declares the Content-Length values in `?declared=` (repeatable; none: no header) and
    produces the body in `?body=` as the `?shape=` says: `list`, `generator` (one chunk per
    `|`-separated piece) or `write` (every piece through write(), then an empty list)."""
    query = parse_qs(environ["QUERY_STRING"], keep_blank_values=True)
    pieces = [piece.encode("latin-1") for piece in query.get("body", [""])[0].split("|")]
    shape = query.get("shape", ["list"])[0]
    headers = [("Content-Type", "text/plain")]
    headers += [("Content-Length", value) for value in query.get("declared", [])]
    write = start_response("200 OK", headers)
    if shape == "write":
        for piece in pieces:
            write(piece)
        return []
    if shape == "generator":
        return iter(pieces)
    return [b"".join(pieces)]


# What refuse() keeps alive, as a framework's reference cycles would until the next GC pass.
KEPT_INPUTS: list = []


def refuse(environ, start_response):
    """Answers 403 without reading the body, keeping `wsgi.input` referenced afterwards."""
    KEPT_INPUTS.append(environ["wsgi.input"])
    del KEPT_INPUTS[:-16]
    if environ["PATH_INFO"] == "/read":
        environ["wsgi.input"].read()
    body = f"refused {environ['REQUEST_METHOD']} {environ['PATH_INFO']}".encode()
    start_response("403 Forbidden", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def swallow(environ, start_response):
    """Reads the body as a framework does, turning any error into its own 500 page."""
    try:
        body = environ["wsgi.input"].read()
    except Exception as exc:  # noqa: BLE001 - what frameworks do with a failed read
        page = f"framework error page: {type(exc).__name__}".encode()
        start_response("500 Internal Server Error", [("Content-Type", "text/plain"), ("Content-Length", str(len(page)))])
        return [page]
    reply = f"read {len(body)}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(reply)))])
    return [reply]
