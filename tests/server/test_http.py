"""HTTP/1.x behaviour of the real server over raw sockets: connection management, framing,
`Expect: 100-continue`, bodiless responses, limits, timeouts, the request queue and binds."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from conftest import raw_request, read_response, recv_until_closed, wait_for

# Generous upper bound for anything the server should do "promptly" on a loaded 2-core box.
PROMPT = 8.0


def request(
    method: str = "GET",
    path: str = "/",
    *,
    version: str = "HTTP/1.1",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    host: str | None = "test",
) -> bytes:
    """One request as bytes; adds Host (unless None) and Content-Length for a body."""
    lines = [f"{method} {path} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    names = {name.lower() for name, _ in headers or []}
    for name, value in headers or []:
        lines.append(f"{name}: {value}")
    if body and "content-length" not in names and "transfer-encoding" not in names:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def echoed(body: bytes) -> dict:
    return json.loads(body)


def closed_by_peer(sock: socket.socket, timeout: float = PROMPT) -> bool:
    """True when the server closes the connection (EOF or reset) within `timeout` seconds,
    ignoring any bytes it sends first; False if it stays open that long."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return False


def chunked(*parts: bytes, trailer: bytes = b"") -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts if p)
    return out + b"0\r\n" + trailer + b"\r\n"


# --- connection management -------------------------------------------------------------


def test_keep_alive_serves_several_requests_on_one_socket(wharf):
    server = wharf("http_apps:echo")
    with server.connect() as sock:
        buf = bytearray()
        for i in range(5):
            sock.sendall(request("POST", f"/n{i}?i={i}", body=b"x" * i))
            status, headers, body, buf = read_response(sock, buf)
            assert status == 200
            seen = echoed(body)
            assert (seen["path"], seen["query"], seen["body"]) == (f"/n{i}", f"i={i}", "x" * i)
            assert "close" not in headers.get("connection", [""])[0].lower()
        assert buf == b""


def test_pipelined_requests_are_answered_in_order(wharf):
    server = wharf("http_apps:echo", "--threads", "4")
    pipeline = (
        request("GET", "/first")
        + request("POST", "/second", body=b"payload-2")
        + request("PUT", "/third", headers=[("Transfer-Encoding", "chunked")], body=chunked(b"pay", b"load-3"))
    )
    with server.connect() as sock:
        sock.sendall(pipeline)
        buf = bytearray()
        answers = []
        for _ in range(3):
            status, _, body, buf = read_response(sock, buf)
            assert status == 200
            answers.append(echoed(body))
    assert [(a["method"], a["path"], a["body"]) for a in answers] == [
        ("GET", "/first", ""),
        ("POST", "/second", "payload-2"),
        ("PUT", "/third", "payload-3"),
    ]


def test_http10_without_keep_alive_closes_after_close_delimited_body(wharf):
    server = wharf("http_apps:streamed")
    raw = raw_request(server, request(version="HTTP/1.0", host=None))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200")
    lowered = head.lower()
    assert b"transfer-encoding" not in lowered, "HTTP/1.0 clients cannot decode chunked"
    assert body == b"part0;part1;part2;part3;part4;"


def test_http10_without_keep_alive_closes_after_sized_body(wharf):
    server = wharf("http_apps:fixed")
    with server.connect() as sock:
        sock.sendall(request(version="HTTP/1.0", host=None))
        status, headers, body, buf = read_response(sock)
        assert status == 200
        assert headers["content-length"] == ["1000"] and len(body) == 1000
        assert buf == b""
        assert closed_by_peer(sock), "HTTP/1.0 without keep-alive must be closed after the response"


def test_http10_with_keep_alive_keeps_the_connection(wharf):
    server = wharf("http_apps:echo")
    with server.connect() as sock:
        buf = bytearray()
        for i in range(3):
            sock.sendall(request("GET", f"/ka{i}", version="HTTP/1.0", host=None, headers=[("Connection", "keep-alive")]))
            status, headers, body, buf = read_response(sock, buf)
            assert status == 200
            assert headers["connection"][0].lower() == "keep-alive"
            assert "content-length" in headers, "a kept-alive 1.0 response needs a length"
            seen = echoed(body)
            assert (seen["path"], seen["protocol"]) == (f"/ka{i}", "HTTP/1.0")


def test_http10_keep_alive_streamed_response_is_close_delimited(wharf):
    server = wharf("http_apps:streamed")
    with server.connect() as sock:
        sock.sendall(request(version="HTTP/1.0", host=None, headers=[("Connection", "keep-alive")]))
        data = recv_until_closed(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200")
    assert b"transfer-encoding" not in head.lower()
    # `ab -k` and other 1.0 clients wait for a kept-alive response that only the close ends.
    assert b"\r\nconnection: close" in head.lower() and b"keep-alive" not in head.lower()
    assert body == b"part0;part1;part2;part3;part4;"


def test_a_client_that_half_closes_still_gets_its_response(wharf, tmp_path):
    """RFC 9112 §9.6: shutting down the sending side after the request does not cancel it, even
    while the app is still working on it."""
    server = wharf("pep_apps:sleepy_app")
    gate = tmp_path / "gate"
    with server.connect() as sock:
        sock.sendall(f"GET /?gate={gate} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
        sock.shutdown(socket.SHUT_WR)
        wait_for(lambda: (tmp_path / "gate.entered").exists())
        gate.touch()
        status, _, body, _ = read_response(sock)
    assert (status, body) == (200, b"woke")


def test_connection_close_on_http11(wharf):
    server = wharf("http_apps:echo")
    with server.connect() as sock:
        sock.sendall(request(headers=[("Connection", "close")]))
        status, headers, _, buf = read_response(sock)
        assert status == 200
        assert headers["connection"][0].lower() == "close"
        assert buf == b""
        assert closed_by_peer(sock)


# --- request bodies ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "encoded, expected",
    [
        (chunked(b"hello"), b"hello"),
        (chunked(b"a", b"bc", b"def" * 1000, b"\x00\xff"), b"abc" + b"def" * 1000 + b"\x00\xff"),
        (b"5;ext=1\r\nhello\r\n6;name=\"v\"\r\n world\r\n0\r\n\r\n", b"hello world"),
        (b"A\r\n0123456789\r\n0\r\nX-Trailer: yes\r\n\r\n", b"0123456789"),
        (b"0\r\n\r\n", b""),
    ],
    ids=["single", "many-sizes", "extensions", "trailer-uppercase-hex", "empty"],
)
def test_chunked_request_body_is_decoded_for_the_app(wharf, encoded, expected):
    server = wharf("http_apps:echo")
    with server.connect() as sock:
        sock.sendall(request("POST", headers=[("Transfer-Encoding", "chunked")]) + encoded)
        status, _, body, _ = read_response(sock)
    assert status == 200
    seen = echoed(body)
    assert seen["body"].encode("latin-1") == expected
    assert seen["content_length"] is None, "a chunked body has no CONTENT_LENGTH"
    assert seen["input_terminated"] is True


def test_expect_100_continue_is_not_sent_when_the_app_ignores_the_body(wharf):
    server = wharf("http_apps:ignore_body")
    with server.connect() as sock:
        sock.sendall(request("POST", headers=[("Expect", "100-continue"), ("Content-Length", "5")]))
        status, _, body, buf = read_response(sock)
        assert status == 200, "the first response must be the final one, not 100 Continue"
        assert body == b"not reading your body\n"
        # Nothing else (a late 100) may follow the final response.
        sock.settimeout(0.5)
        try:
            extra = bytes(buf) + sock.recv(65536)
        except TimeoutError:
            extra = bytes(buf)
        assert b"100 Continue" not in extra


def test_expect_100_continue_is_sent_when_the_app_reads_the_body(wharf):
    server = wharf("http_apps:echo")
    with server.connect() as sock:
        sock.sendall(request("POST", headers=[("Expect", "100-continue"), ("Content-Length", "11")]))
        # Wait for the interim response before sending the body, as a real client would.
        status, _, _, buf = read_response(sock)
        assert status == 100
        sock.sendall(b"hello world")
        status, _, body, _ = read_response(sock, buf)
    assert status == 200
    assert echoed(body)["body"] == "hello world"


# --- bodiless responses ------------------------------------------------------------------


def test_head_has_the_headers_of_get_and_no_body(wharf):
    server = wharf("http_apps:fixed")
    with server.connect() as sock:
        buf = bytearray()
        sock.sendall(request("GET"))
        get_status, get_headers, get_body, buf = read_response(sock, buf)
        # HEAD followed by GET on the same connection: a leaked HEAD body would corrupt the GET.
        sock.sendall(request("HEAD") + request("GET", "/after"))
        sock.settimeout(PROMPT)
        data = bytearray(buf)
        while data.count(b"HTTP/1.1 ") < 2 or not data.endswith(b"0123456789"):
            chunk = sock.recv(65536)
            assert chunk, f"connection closed early: {bytes(data)!r}"
            data.extend(chunk)
    head_part, _, after = bytes(data).partition(b"\r\n\r\n")
    assert after.startswith(b"HTTP/1.1 200"), f"HEAD response carried a body: {after[:80]!r}"
    head_headers = {
        line.split(b":", 1)[0].strip().lower(): line.split(b":", 1)[1].strip()
        for line in head_part.split(b"\r\n")[1:]
    }
    assert get_status == 200 and len(get_body) == 1000
    for name in ("content-length", "content-type", "x-fixed"):
        assert head_headers[name.encode()].decode() == get_headers[name][0], name


@pytest.mark.parametrize("path", ["/204", "/304"])
def test_204_and_304_have_no_body(wharf, path):
    server = wharf("http_apps:no_content")
    with server.connect() as sock:
        sock.sendall(request("GET", path) + request("GET", path))
        status, headers, _, buf = read_response(sock)
        assert status == int(path[1:])
        assert headers["x-status-app"] == ["yes"]
        assert "transfer-encoding" not in headers
        if status == 204:
            # RFC 9110 §8.6: a server MUST NOT send Content-Length in a 204 response.
            assert "content-length" not in headers
        # The second answer must start right where the first head ended.
        status2, _, _, buf = read_response(sock, buf)
        assert status2 == status
        sock.settimeout(0.5)
        try:
            leftover = bytes(buf) + sock.recv(65536)
        except TimeoutError:
            leftover = bytes(buf)
        assert b"must never reach" not in leftover


# --- limits --------------------------------------------------------------------------------


def status_of(data: bytes) -> int | None:
    if not data.startswith(b"HTTP/1."):
        return None
    return int(data.split(b" ", 2)[1])


def test_limit_request_line_gives_414(wharf):
    server = wharf("http_apps:echo", "--limit-request-line", "64")
    ok = raw_request(server, request("GET", "/" + "a" * 40, headers=[("Connection", "close")]))
    assert status_of(ok) == 200
    too_long = raw_request(server, request("GET", "/" + "a" * 200, headers=[("Connection", "close")]))
    assert status_of(too_long) == 414


def test_limit_request_headers_count_gives_431(wharf):
    server = wharf("http_apps:echo", "--limit-request-headers", "10")
    few = [(f"X-H{i}", "v") for i in range(5)] + [("Connection", "close")]
    assert status_of(raw_request(server, request(headers=few))) == 200
    many = [(f"X-H{i}", "v") for i in range(30)]
    assert status_of(raw_request(server, request(headers=many))) == 431


def test_limit_request_headers_size_gives_431(wharf):
    server = wharf("http_apps:echo", "--limit-request-headers-size", "2048")
    assert status_of(raw_request(server, request(headers=[("X-Big", "v" * 500), ("Connection", "close")]))) == 200
    assert status_of(raw_request(server, request(headers=[("X-Big", "v" * 4000)]))) == 431


def test_limit_request_body_with_content_length_gives_413(wharf):
    server = wharf("http_apps:echo", "--limit-request-body", "100")
    small = raw_request(server, request("POST", body=b"x" * 100, headers=[("Connection", "close")]))
    assert status_of(small) == 200 and echoed(small.partition(b"\r\n\r\n")[2])["body_len"] == 100
    big = raw_request(server, request("POST", body=b"x" * 101))
    assert status_of(big) == 413


@pytest.mark.parametrize("length", ["18446744073709551615", "18446744073709551614", "99999999999999999999999"])
def test_a_content_length_beyond_any_body_is_a_bad_request(wharf, length):
    """hyper refuses a length it cannot represent as a head too large (431); it is a
    malformed request (400), and a length that fits still reaches the body limit check."""
    server = wharf("http_apps:echo")
    assert status_of(raw_request(server, f"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: {length}\r\n\r\n".encode())) == 400
    limited = wharf("http_apps:echo", "--limit-request-body", "100")
    fits = raw_request(limited, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 18446744073709551613\r\n\r\n")
    assert status_of(fits) == 413


def test_limit_request_body_with_chunked_body_gives_413(wharf):
    server = wharf("http_apps:echo", "--limit-request-body", "100")
    ok = raw_request(
        server,
        request("POST", headers=[("Transfer-Encoding", "chunked"), ("Connection", "close")]) + chunked(b"x" * 60, b"y" * 40),
    )
    assert status_of(ok) == 200
    big = raw_request(
        server, request("POST", headers=[("Transfer-Encoding", "chunked")]) + chunked(b"x" * 60, b"y" * 60)
    )
    assert status_of(big) == 413
    with server.connect() as sock:
        sock.sendall(request(headers=[("Connection", "close")]))
        assert read_response(sock)[0] == 200


# --- timeouts and stalled clients -------------------------------------------------------


def test_header_timeout_closes_a_partial_head(wharf):
    server = wharf("http_apps:echo", "--header-timeout", "1")
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\nX-Slow: ")
        started = time.monotonic()
        assert closed_by_peer(sock, timeout=PROMPT), "a stalled head must be closed after --header-timeout"
        elapsed = time.monotonic() - started
    assert elapsed >= 0.5, f"closed after {elapsed:.2f}s, before the header timeout could have passed"


def test_keep_alive_timeout_closes_idle_connections(wharf):
    server = wharf("http_apps:echo", "--keep-alive-timeout", "1")
    with server.connect() as sock:
        sock.sendall(request())
        assert read_response(sock)[0] == 200
        started = time.monotonic()
        assert closed_by_peer(sock, timeout=PROMPT), "an idle keep-alive connection must be closed"
        elapsed = time.monotonic() - started
    assert elapsed >= 0.5, f"closed after {elapsed:.2f}s, before the keep-alive timeout could have passed"


def test_stalled_clients_do_not_block_others(wharf):
    server = wharf("http_apps:echo", "--threads", "1", "--header-timeout", "30")
    stalled = []
    try:
        for i in range(20):
            sock = server.connect()
            sock.sendall(b"POST /stalled HTTP/1.1\r\nHost: test\r\nX-Part: " + str(i).encode())
            stalled.append(sock)
        for i in range(5):
            with server.connect(timeout=PROMPT) as sock:
                sock.sendall(request("GET", f"/live{i}", headers=[("Connection", "close")]))
                status, _, body, _ = read_response(sock)
                assert status == 200 and echoed(body)["path"] == f"/live{i}"
    finally:
        for sock in stalled:
            sock.close()


# --- the request queue ---------------------------------------------------------------------


def test_full_queue_answers_503_quickly(wharf, tmp_path):
    server = wharf("http_apps:blocking", "--threads", "1", "--queue-size", "1")
    release = tmp_path / "release"
    path = f"/block?started={tmp_path / 'started'}&release={release}"
    results: dict[str, int] = {}

    def call(name: str) -> None:
        with server.connect(timeout=40) as sock:
            sock.sendall(request("GET", path, headers=[("Connection", "close")]))
            results[name] = read_response(sock)[0]

    first = threading.Thread(target=call, args=("first",))
    others = [threading.Thread(target=call, args=(name,)) for name in ("second", "third")]
    first.start()
    try:
        # The only Python thread is now busy; the queue holds one more, the third is refused.
        wait_for(lambda: (tmp_path / "started").exists(), timeout=PROMPT)
        for t in others:
            t.start()
        wait_for(lambda: 503 in results.values(), timeout=PROMPT)
        assert "first" not in results, "the blocked request finished before it was released"
    finally:
        release.touch()
        for t in [first, *others]:
            if t.is_alive() or t.ident is not None:
                t.join(40)
    assert results["first"] == 200
    assert sorted([results["second"], results["third"]]) == [200, 503]
    # Once the pool is free again the server accepts work as before.
    assert status_of(raw_request(server, request("GET", path, headers=[("Connection", "close")]))) == 200


# --- header handling -----------------------------------------------------------------------


def test_header_names_with_underscores_are_hidden_from_the_app(wharf):
    server = wharf("http_apps:echo")
    with server.connect() as sock:
        sock.sendall(
            request(headers=[("X-Forwarded_For", "6.6.6.6"), ("X_Custom", "spoof"), ("X-Custom", "real")])
        )
        status, _, body, _ = read_response(sock)
    assert status == 200
    seen = echoed(body)["headers"]
    assert "HTTP_X_FORWARDED_FOR" not in seen
    assert seen["HTTP_X_CUSTOM"] == "real"


def test_repeated_headers_are_joined_with_comma_space(wharf):
    server = wharf("http_apps:echo")
    with server.connect() as sock:
        sock.sendall(request(headers=[("X-Multi", "one"), ("Accept", "text/html"), ("X-Multi", "two"), ("X-Multi", "three")]))
        status, _, body, _ = read_response(sock)
    assert status == 200
    seen = echoed(body)["headers"]
    assert seen["HTTP_X_MULTI"] == "one, two, three"
    assert seen["HTTP_ACCEPT"] == "text/html"


# --- binds ---------------------------------------------------------------------------------


def test_unix_socket_bind(wharf, tmp_path):
    path = tmp_path / "wharf.sock"
    assert len(str(path)) < 100, "AF_UNIX paths are limited to ~108 bytes"
    wharf("http_apps:echo", bind=f"unix:{path}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(PROMPT)
        sock.connect(str(path))
        buf = bytearray()
        for i in range(2):
            sock.sendall(request("POST", f"/unix{i}", body=b"over a unix socket"))
            status, _, body, buf = read_response(sock, buf)
            assert status == 200
            seen = echoed(body)
            assert (seen["path"], seen["body"]) == (f"/unix{i}", "over a unix socket")
