"""Requests read exactly as sent (issue 19): latin-1 native strings, request-target forms,
one-value header fields, proxy headers over unix sockets and their validation, and log lines
that keep queries out."""

from __future__ import annotations

import json
import socket

import pytest

from conftest import read_response, recv_until_closed, wait_for


def environ_of(server, raw: bytes) -> dict:
    with server.connect() as sock:
        sock.sendall(raw)
        status, _, body, _ = read_response(sock)
    assert status == 200, body
    return {key: value[1] for key, value in json.loads(body).items() if isinstance(value, list)}


def status_of(server, raw: bytes) -> int:
    with server.connect() as sock:
        sock.sendall(raw)
        status, _, _, _ = read_response(sock)
    return status


@pytest.fixture
def environ_server(wharf):
    return wharf("pep_apps:environ_app")


def test_query_string_is_latin1_decoded_bytes(environ_server):
    """PEP 3333: a raw UTF-8 `€` (as curl sends it) is three latin-1 characters, as
    urllib.parse.unquote_to_bytes and the frameworks built on it expect; %-escapes stay as sent."""
    env = environ_of(environ_server, b"GET /p?q=\xe2\x82\xac&e=%E2%82%AC HTTP/1.1\r\nHost: t\r\n\r\n")
    assert env["QUERY_STRING"] == "q=\u00e2\u0082\u00ac&e=%E2%82%AC"
    assert env["QUERY_STRING"].encode("latin-1") == b"q=\xe2\x82\xac&e=%E2%82%AC"
    assert env["RAW_URI"].encode("latin-1") == b"/p?q=\xe2\x82\xac&e=%E2%82%AC"


def test_every_high_byte_in_a_target_reaches_the_app_as_sent(environ_server):
    """RFC 9112 leaves raw bytes 0x80-0xFF to the server; curl sends them as typed and nginx
    forwards them as they came. Each one reaches PATH_INFO, QUERY_STRING and RAW_URI as its
    latin-1 character, on one keep-alive connection whose requests carry bodies in between (a
    request line is only ever recognised where one starts)."""
    with environ_server.connect() as sock:
        buf = bytearray()
        for byte in range(0x80, 0x100):
            raw = bytes([byte])
            body = b"\xff\r\nGET /\xfe HTTP/1.1\r\n"
            sock.sendall(b"POST /p" + raw + b"?q=" + raw + b" HTTP/1.1\r\nHost: t\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
            status, _, response, buf = read_response(sock, buf)
            assert status == 200, (hex(byte), response)
            env = {key: value[1] for key, value in json.loads(response).items() if isinstance(value, list)}
            assert env["PATH_INFO"].encode("latin-1") == b"/p" + raw, hex(byte)
            assert env["QUERY_STRING"].encode("latin-1") == b"q=" + raw, hex(byte)
            assert env["RAW_URI"].encode("latin-1") == b"/p" + raw + b"?q=" + raw, hex(byte)
        # Percent-decoding applies to the raw bytes too, and mixes with them.
        sock.sendall(b"GET /caf\xc3\xa9/%C3%A9\xff HTTP/1.1\r\nHost: t\r\n\r\n")
        status, _, response, buf = read_response(sock, buf)
        env = {key: value[1] for key, value in json.loads(response).items() if isinstance(value, list)}
        assert env["PATH_INFO"].encode("latin-1") == b"/caf\xc3\xa9/\xc3\xa9\xff"


@pytest.mark.parametrize("size_line", [b"5;a\x00b", b"5 ", b"5;", b"5;a=", b"5;a=\"x\x01\"", b"5\x00"])
def test_chunk_size_lines_outside_rfc_9112_are_refused(environ_server, size_line):
    """RFC 9112 §7.1: `1*HEXDIG [ BWS ";" name [ "=" value ] ]...`: no control characters in
    extensions, no space that no `;` follows. hyper's decoder lets these through."""
    with environ_server.connect() as sock:
        sock.sendall(b"POST /p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + size_line + b"\r\nhello\r\n0\r\n\r\n")
        response = recv_until_closed(sock)
    assert response.startswith(b"HTTP/1.1 400 "), response[:200]


@pytest.mark.parametrize("size_line", [b"5", b"5;a", b"5 ;a=b", b"5;a=\"x y\";b=c", b"0005"])
def test_valid_chunk_extensions_are_accepted(environ_server, size_line):
    with environ_server.connect() as sock:
        sock.sendall(b"POST /p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + size_line + b"\r\nhello\r\n0\r\n\r\n")
        status, _, _, _ = read_response(sock)
    assert status == 200


def test_asterisk_form_is_for_options_only(environ_server):
    assert status_of(environ_server, b"GET * HTTP/1.1\r\nHost: t\r\n\r\n") == 400
    assert status_of(environ_server, b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n") == 200


def test_authority_form_is_refused_outside_connect(environ_server):
    with environ_server.connect() as sock:
        sock.sendall(b"GET example.com:80 HTTP/1.1\r\nHost: example.com\r\n\r\n")
        assert recv_until_closed(sock).startswith(b"HTTP/1.1 400 ")


def test_absolute_form_authority_replaces_host(environ_server):
    """RFC 9112 §3.2.2: the target's authority wins over the Host header."""
    env = environ_of(environ_server, b"GET http://example.org:8080/p?q=1 HTTP/1.1\r\nHost: other.test\r\n\r\n")
    assert (env["HTTP_HOST"], env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.org:8080", "example.org", "8080")
    assert env["RAW_URI"] == "http://example.org:8080/p?q=1"
    assert (env["PATH_INFO"], env["QUERY_STRING"]) == ("/p", "q=1")


@pytest.mark.parametrize("name", ["Content-Type", "Authorization", "Range", "User-Agent"])
def test_a_one_value_field_sent_twice_is_refused(environ_server, name):
    raw = f"GET / HTTP/1.1\r\nHost: t\r\n{name}: a\r\n{name}: b\r\n\r\n".encode()
    with environ_server.connect() as sock:
        sock.sendall(raw)
        assert recv_until_closed(sock).startswith(b"HTTP/1.1 400 ")


def test_list_fields_sent_twice_are_joined(environ_server):
    env = environ_of(environ_server, b"GET / HTTP/1.1\r\nHost: t\r\nAccept: a/b\r\nAccept: c/d\r\n\r\n")
    assert env["HTTP_ACCEPT"] == "a/b, c/d"


def test_http11_without_host_is_400(environ_server):
    with environ_server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert recv_until_closed(sock).startswith(b"HTTP/1.1 400 ")


def unix_get(path, headers: str) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(f"GET /remote HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n{headers}\r\n".encode())
        status, _, body, _ = read_response(sock)
    assert status == 200
    return body


def test_a_unix_socket_peer_is_the_trusted_local_proxy_by_default(wharf, tmp_path):
    """The report: Django behind nginx over a unix socket saw http and no client address."""
    sock_path = tmp_path / "wharf.sock"
    wharf("lifecycle_app:app", bind=f"unix:{sock_path}")
    body = unix_get(sock_path, "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n")
    assert body == b"203.0.113.7|https|site.test|site.test"


def test_unix_socket_peers_can_be_distrusted(wharf, tmp_path):
    sock_path = tmp_path / "wharf.sock"
    wharf("lifecycle_app:app", "--forwarded-allow-ips", "127.0.0.1", bind=f"unix:{sock_path}")
    body = unix_get(sock_path, "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n")
    assert body.split(b"|")[:2] == [b"", b"http"]


@pytest.mark.parametrize(
    ("forwarded_for", "remote_addr"),
    [
        ("<script>", "127.0.0.1"),
        ("not-an-ip", "127.0.0.1"),
        ("203.0.113.7:5555", "203.0.113.7"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("unknown", "unknown"),
        ("_hidden-proxy", "_hidden-proxy"),
    ],
)
def test_only_ip_addresses_or_rfc7239_names_become_remote_addr(wharf, forwarded_for, remote_addr):
    server = wharf("lifecycle_app:app")
    with server.connect() as sock:
        sock.sendall(f"GET /remote HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: {forwarded_for}\r\n\r\n".encode())
        status, _, body, _ = read_response(sock)
    assert status == 200 and body.split(b"|")[0] == remote_addr.encode()
    if remote_addr == "127.0.0.1":
        wait_for(lambda: "not an IP address" in server.log())


@pytest.mark.parametrize("log_query", [False, True])
def test_error_lines_show_the_path_and_the_query_only_when_asked(wharf, log_query):
    server = wharf("pep_apps:bad_app", *(["--log-query"] if log_query else []))
    with server.connect() as sock:
        sock.sendall(b"GET /raise?token=s3cret HTTP/1.1\r\nHost: t\r\n\r\n")
        status, _, _, _ = read_response(sock)
    assert status == 500
    wait_for(lambda: "application error" in server.log())
    assert "/raise" in server.log()
    assert ("s3cret" in server.log()) == log_query
