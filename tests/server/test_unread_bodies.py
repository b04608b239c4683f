"""Request bodies an app never reads: the connection is settled when the response is decided
(drained and kept, or closed with `Connection: close`), whatever Python objects still hold
`wsgi.input`, so the next request on it is never stalled."""

from __future__ import annotations

import time

import pytest
import requests

from conftest import read_response, recv_until_closed

# Well beyond the socket buffers (~64 KiB on loopback), so a body nobody reads blocks the client.
DRAINED = 300 * 1024
# Beyond what wharf drains (1 MiB): the response must close the connection instead.
TOO_LARGE = 3 * 1024 * 1024
PROMPT = 5.0


@pytest.fixture
def server(wharf):
    return wharf("http_apps:refuse")


def post(size: int, path: str = "/", extra: str = "") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\n{extra}\r\n".encode() + b"x" * size


def test_an_unread_body_of_moderate_size_is_drained_and_the_connection_kept(server):
    with server.connect(timeout=PROMPT) as sock:
        sock.sendall(post(DRAINED) + b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, body, buf = read_response(sock)
        assert (status, body) == (403, b"refused POST /")
        assert headers.get("connection") != ["close"]
        status, _, body, _ = read_response(sock, buf)
        assert (status, body) == (403, b"refused GET /next")


def test_an_unread_body_too_large_to_drain_closes_the_connection(server):
    with server.connect(timeout=PROMPT) as sock:
        sock.sendall(post(TOO_LARGE)[: 256 * 1024])
        status, headers, body, _ = read_response(sock)
        assert (status, body) == (403, b"refused POST /")
        assert headers["connection"] == ["close"]
        sock.settimeout(PROMPT)
        recv_until_closed(sock)


def test_an_unread_chunked_body_closes_the_connection(server):
    with server.connect(timeout=PROMPT) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        status, headers, _, _ = read_response(sock)
        assert status == 403 and headers["connection"] == ["close"]
        recv_until_closed(sock)


def test_an_unread_body_awaiting_100_continue_closes_the_connection(server):
    with server.connect(timeout=PROMPT) as sock:
        sock.sendall(post(DRAINED, extra="Expect: 100-continue\r\n")[: -DRAINED])
        status, headers, _, _ = read_response(sock)
        assert status == 403 and headers["connection"] == ["close"], "no 100 Continue, no body to read"
        recv_until_closed(sock)


def test_a_body_the_app_read_leaves_the_connection_as_it_was(server):
    with server.connect(timeout=PROMPT) as sock:
        sock.sendall(post(TOO_LARGE, "/read") + b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, _, buf = read_response(sock)
        assert status == 403 and "connection" not in headers
        status, _, body, _ = read_response(sock, buf)
        assert (status, body) == (403, b"refused GET /next")


@pytest.mark.parametrize("size", [DRAINED, TOO_LARGE])
def test_a_requests_session_goes_on_after_a_refused_upload(server, size):
    """The report: with `requests`, the call after a refused upload failed after 6 s."""
    with requests.Session() as session:
        for attempt in range(3):
            started = time.monotonic()
            refused = session.post(server.url + "/upload", data=b"x" * size, timeout=PROMPT)
            assert refused.status_code == 403
            after = session.get(server.url + f"/after{attempt}", timeout=PROMPT)
            assert (after.status_code, after.text) == (403, f"refused GET /after{attempt}")
            assert time.monotonic() - started < PROMPT


# --- bodies that fail to read ------------------------------------------------------------


def chunked_post(*chunks: bytes) -> bytes:
    return b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + b"".join(chunks)


def test_a_chunked_body_over_the_limit_is_413_even_when_the_app_catches_the_error(wharf):
    server = wharf("http_apps:swallow", "--limit-request-body", "1000")
    with server.connect(timeout=PROMPT) as sock:
        sock.sendall(chunked_post(b"800\r\n" + b"x" * 0x800 + b"\r\n", b"0\r\n\r\n"))
        status, headers, body, _ = read_response(sock)
        assert (status, body) == (413, b"Request body too large\n")
        assert headers["connection"] == ["close"]
        recv_until_closed(sock)
    assert "framework error page" not in server.log()


@pytest.mark.parametrize(
    "malformed",
    [b"zz\r\nhello\r\n0\r\n\r\n", b"5\r\nhelloXX0\r\n\r\n"],
    ids=["bad-size", "missing-crlf"],
)
def test_a_malformed_chunked_body_is_400_and_closes(wharf, malformed):
    server = wharf("http_apps:swallow")
    with server.connect(timeout=PROMPT) as sock:
        sock.sendall(chunked_post(malformed))
        data = recv_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 400 "), data[:200]
    assert b"framework error page" not in data


def test_a_body_within_the_limit_reaches_the_app(wharf):
    server = wharf("http_apps:swallow", "--limit-request-body", "1000")
    with server.connect(timeout=PROMPT) as sock:
        sock.sendall(chunked_post(b"3e8\r\n" + b"x" * 1000 + b"\r\n", b"0\r\n\r\n"))
        status, _, body, _ = read_response(sock)
    assert (status, body) == (200, b"read 1000")


def test_connect_is_refused_before_the_app(wharf):
    server = wharf("http_apps:echo")
    with server.connect(timeout=PROMPT) as sock:
        sock.sendall(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        data = recv_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 400 "), data[:200]
    assert b"CONNECT is not supported" in data
