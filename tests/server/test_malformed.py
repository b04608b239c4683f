"""Malformed and hostile requests over raw sockets.

Every case must end in a 4xx answer or a closed connection: never a 2xx (above all not for a
smuggled second request), never a 5xx, never a hang. One server takes the whole corpus, and
must still serve normal requests afterwards.
"""

from __future__ import annotations

import re
import socket
import time

import pytest

from conftest import WharfProcess, read_response, recv_until_closed, wait_for

# No case may keep the client waiting longer than this (the server's own timeouts are set
# well below it, so a timeout here means the server hung).
CASE_TIMEOUT = 12.0

H = b"Host: test\r\n"
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: test\r\n\r\n"
STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})")


def post(headers: bytes, body: bytes = b"", version: bytes = b"HTTP/1.1") -> bytes:
    return b"POST /target " + version + b"\r\n" + H + headers + b"\r\n" + body


# (id, bytes to send, half-close the write side after sending)
CORPUS: list[tuple[str, bytes, bool]] = [
    # request line
    ("request-line-only-method", b"GET\r\n\r\n", False),
    ("request-line-missing-version", b"GET /\r\n" + H + b"\r\n", False),
    ("request-line-trailing-space", b"GET / \r\n" + H + b"\r\n", False),
    ("request-line-space-in-target", b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", False),
    ("request-line-nul-in-target", b"GET /\x00 HTTP/1.1\r\n" + H + b"\r\n", False),
    ("request-line-bad-method-chars", b"GE(T / HTTP/1.1\r\n" + H + b"\r\n", False),
    ("request-line-huge-target", b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n" + H + b"\r\n", False),
    ("request-line-empty-target", b"GET  HTTP/1.1\r\n" + H + b"\r\n", False),
    ("request-line-huge-method", b"A" * 100_000 + b" / HTTP/1.1\r\n" + H + b"\r\n", False),
    ("version-http12", b"GET / HTTP/1.2\r\n" + H + b"\r\n", False),
    ("version-http2", b"GET / HTTP/2.0\r\n" + H + b"\r\n", False),
    ("version-lowercase", b"GET / http/1.1\r\n" + H + b"\r\n", False),
    ("version-garbage", b"GET / HTTX/1.1\r\n" + H + b"\r\n", False),
    ("version-http09", b"GET /\r\n", True),
    # header names and lines
    ("header-name-with-space", b"GET / HTTP/1.1\r\n" + H + b"Foo Bar: x\r\n\r\n", False),
    ("header-name-paren", b"GET / HTTP/1.1\r\n" + H + b"Foo(bar): x\r\n\r\n", False),
    ("header-name-at-sign", b"GET / HTTP/1.1\r\n" + H + b"Foo@: x\r\n\r\n", False),
    ("header-name-non-ascii", b"GET / HTTP/1.1\r\n" + H + b"X-\xdcber: x\r\n\r\n", False),
    ("header-name-empty", b"GET / HTTP/1.1\r\n" + H + b": x\r\n\r\n", False),
    ("header-without-colon", b"GET / HTTP/1.1\r\n" + H + b"NoColonHere\r\n\r\n", False),
    ("header-space-before-colon", b"GET / HTTP/1.1\r\n" + H + b"X-A : 1\r\n\r\n", False),
    ("header-obs-fold", b"GET / HTTP/1.1\r\n" + H + b"X-A: one\r\n two\r\n\r\n", False),
    ("header-obs-fold-tab", b"GET / HTTP/1.1\r\n" + H + b"X-A: one\r\n\ttwo\r\n\r\n", False),
    ("header-value-nul", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", False),
    ("header-value-bare-cr", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n", False),
    ("header-absurdly-long", b"GET / HTTP/1.1\r\n" + H + b"X-Long: " + b"a" * 2_000_000 + b"\r\n\r\n", False),
    ("header-too-many", b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-%d: v\r\n" % i for i in range(500)) + b"\r\n", False),
    # Host
    ("host-missing-http11", b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", False),
    ("host-twice", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", False),
    # Content-Length
    ("cl-non-numeric", post(b"Content-Length: abc\r\n", b"abc"), False),
    ("cl-negative", post(b"Content-Length: -1\r\n", b"x"), False),
    ("cl-plus-sign", post(b"Content-Length: +3\r\n", b"abc"), False),
    ("cl-hex", post(b"Content-Length: 0x3\r\n", b"abc"), False),
    ("cl-overflow", post(b"Content-Length: 99999999999999999999999999\r\n", b"abc"), False),
    ("cl-duplicate-same", post(b"Content-Length: 3\r\nContent-Length: 3\r\n", b"abc"), False),
    ("cl-duplicate-conflicting", post(b"Content-Length: 3\r\nContent-Length: 40\r\n", b"abc" + SMUGGLED), False),
    ("cl-list-conflicting", post(b"Content-Length: 3, 40\r\n", b"abc" + SMUGGLED), False),
    ("cl-truncated-body", post(b"Content-Length: 100\r\n", b"only a little"), True),
    # Transfer-Encoding and chunked framing
    ("te-and-cl", post(b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"), False),
    ("te-unknown-coding", post(b"Transfer-Encoding: gzip\r\n", b"abc"), False),
    ("te-chunked-not-last", post(b"Transfer-Encoding: chunked, identity\r\n", b"0\r\n\r\n"), False),
    ("te-chunked-twice", post(b"Transfer-Encoding: chunked, chunked\r\n", b"0\r\n\r\n"), False),
    ("te-two-headers", post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", b"0\r\n\r\n"), False),
    ("te-xchunked", post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"), False),
    ("te-space-before-colon", post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"), False),
    ("te-vertical-tab", post(b"Transfer-Encoding:\x0bchunked\r\n", b"0\r\n\r\n"), False),
    ("chunk-size-not-hex", post(b"Transfer-Encoding: chunked\r\n", b"zz\r\nhello\r\n0\r\n\r\n"), False),
    ("chunk-size-negative", post(b"Transfer-Encoding: chunked\r\n", b"-5\r\nhello\r\n0\r\n\r\n"), False),
    ("chunk-size-empty", post(b"Transfer-Encoding: chunked\r\n", b"\r\nhello\r\n0\r\n\r\n"), False),
    ("chunk-size-overflow", post(b"Transfer-Encoding: chunked\r\n", b"fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"), False),
    ("chunk-size-0x-prefix", post(b"Transfer-Encoding: chunked\r\n", b"0x5\r\nhello\r\n0\r\n\r\n"), False),
    ("chunk-data-longer-than-size", post(b"Transfer-Encoding: chunked\r\n", b"3\r\nhello\r\n0\r\n\r\n"), False),
    ("chunk-missing-crlf", post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhelloXX0\r\n\r\n"), False),
    ("chunked-truncated", post(b"Transfer-Encoding: chunked\r\n", b"10\r\nonly part"), True),
    ("chunked-no-last-chunk", post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n"), True),
    # request smuggling shapes: the second request must never be answered
    ("smuggle-cl-te", post(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED), False),
    ("smuggle-te-cl", post(b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", b"%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n"), False),
    ("smuggle-te-identity", post(b"Transfer-Encoding: chunked, identity\r\nContent-Length: 5\r\n", b"0\r\n\r\n" + SMUGGLED), False),
    ("smuggle-te-space-colon", post(b"Content-Length: 5\r\nTransfer-Encoding : chunked\r\n", b"0\r\n\r\n" + SMUGGLED), False),
    ("smuggle-te-obs-fold", post(b"Transfer-Encoding:\r\n chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n" + SMUGGLED), False),
    ("smuggle-te-http10", post(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n" + SMUGGLED, b"HTTP/1.0"), False),
    ("smuggle-bare-lf-chunk", post(b"Transfer-Encoding: chunked\r\n", b"5\nhello\n0\n\n" + SMUGGLED), False),
    # not HTTP/1 at all
    ("binary-garbage", bytes(range(256)) * 8 + b"\r\n\r\n", False),
    ("tls-client-hello", bytes.fromhex("16030100a5010000a10303") + bytes(range(64)) + b"\r\n\r\n", False),
    ("http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000"), False),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the whole corpus, with short timeouts so a wait is bounded."""
    proc = WharfProcess(
        "http_apps:echo",
        "--threads", "2",
        "--header-timeout", "2",
        "--io-timeout", "3",
        "--keep-alive-timeout", "3",
        tmp_path=tmp_path_factory.mktemp("malformed"),
    )
    yield proc
    proc.stop()


def exchange(server: WharfProcess, data: bytes, half_close: bool) -> tuple[bytes, bool]:
    """Sends `data` and collects everything the server answers.

    Returns (bytes received, whether the server closed the connection). A server that keeps
    the connection open without answering for CASE_TIMEOUT seconds fails the test.
    """
    received = bytearray()
    with server.connect(timeout=CASE_TIMEOUT) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            # The server may refuse before reading everything; what it said still counts.
            pass
        deadline = time.monotonic() + CASE_TIMEOUT
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return bytes(received), True
            except TimeoutError:
                break
            if not chunk:
                return bytes(received), True
            received.extend(chunk)
    pytest.fail(f"server neither answered nor closed within {CASE_TIMEOUT}s; got {bytes(received)[:200]!r}")


def assert_server_serves(server: WharfProcess) -> None:
    assert server.proc.poll() is None, f"wharf died:\n{server.log()[-4000:]}"
    with server.connect(timeout=CASE_TIMEOUT) as sock:
        sock.sendall(b"GET /still-alive HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        status, _, body, _ = read_response(sock)
    assert status == 200 and b"/still-alive" in body


# Framings RFC 9112 §6.1 / RFC 9110 §8.6 let a server resolve instead of refusing: both
# Transfer-Encoding and Content-Length (framed by Transfer-Encoding alone, connection closed
# after the one response) and a repeated identical Content-Length. One answer, then a close,
# is the whole of what may happen; nothing after the body is ever read as a request.
# Maps case → whether the connection must close after the one answer.
RESOLVED_BY_RFC = {"cl-duplicate-same": False, "te-and-cl": True, "smuggle-cl-te": True, "smuggle-te-cl": True}


@pytest.mark.parametrize(
    "name, data, half_close", CORPUS, ids=[name for name, _, _ in CORPUS]
)
def test_malformed_request_is_refused(server, name, data, half_close):
    received, closed = exchange(server, data, half_close)
    statuses = [int(m.group(1)) for m in STATUS_LINE.finditer(received)]
    # The echo app names the path it served; the smuggled request must never be one.
    assert b'"path": "/smuggled"' not in received, f"a smuggled request was served: {received[:400]!r}"
    if name in RESOLVED_BY_RFC and statuses and statuses[0] < 400:
        assert len(statuses) == 1, received[:400]
        if RESOLVED_BY_RFC[name]:
            assert b"connection: close" in received.lower() and closed, received[:400]
        assert_server_serves(server)
        return
        assert all(400 <= s < 500 for s in statuses), f"expected only 4xx answers, got {statuses}: {received[:400]!r}"
    assert len(statuses) <= 1, f"answered more than one request after a malformed one: {received[:400]!r}"
    assert closed, "the connection must be closed after a malformed request"
    assert_server_serves(server)


def test_server_survives_the_whole_corpus(server):
    # Runs after the parametrized cases (file order) on the same process; also fires the whole
    # corpus at once on parallel connections to check no combination wedges the server.
    socks = []
    try:
        for _, data, _ in CORPUS:
            sock = server.connect(timeout=CASE_TIMEOUT)
            socks.append(sock)
            try:
                sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass
        for _ in range(3):
            assert_server_serves(server)
    finally:
        for sock in socks:
            sock.close()
    assert_server_serves(server)


def test_requests_the_parser_refuses_leave_an_access_log_line(wharf):
    server = wharf("http_apps:echo", "--access-log")
    for data, status in [
        (b"GE(T / HTTP/1.1\r\nHost: t\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"x" * 70_000 + b"\r\n\r\n", b"431"),
    ]:
        with server.connect() as sock:
            sock.sendall(data)
            assert recv_until_closed(sock).startswith(b"HTTP/1.1 " + status)
    wait_for(lambda: '"-" 400 ' in server.stdout() and '"-" 431 ' in server.stdout())


def test_an_http2_preface_gets_an_http11_answer(wharf):
    server = wharf("http_apps:echo", "--access-log")
    with server.connect() as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        status, headers, body, _ = read_response(sock)
    assert status == 505 and headers["connection"] == ["close"]
    assert b"HTTP/1.1" in body
    wait_for(lambda: '"-" 505 ' in server.stdout())
    # The server goes on serving HTTP/1.1.
    with server.connect() as sock:
        sock.sendall(b"GET /after HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        status, _, _, _ = read_response(sock)
    assert status == 200
