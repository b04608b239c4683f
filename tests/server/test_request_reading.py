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
