"""Response framing over raw keep-alive connections: whatever an app returns, the bytes on the
wire match the head wharf sent, so one response can never bleed into the next."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from conftest import read_response, recv_until_closed, wait_for

SHAPES = ["list", "generator", "write"]

# A body that, written past its declared length, would be read as a second response: what a
# proxy in front of wharf would then hand to the next client on that connection.
INJECTED = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\ninjected"


def framing_request(body: str, *declared: str, shape: str = "list", method: str = "GET") -> bytes:
    query = "&".join([f"shape={shape}", f"body={quote(body)}", *(f"declared={quote(d)}" for d in declared)])
    return f"{method} /?{query} HTTP/1.1\r\nHost: test\r\n\r\n".encode()


@pytest.fixture
def server(wharf):
    return wharf("http_apps:framing")


@pytest.mark.parametrize("shape", SHAPES)
def test_a_body_longer_than_its_content_length_is_cut_and_the_connection_stays_in_step(server, shape):
    with server.connect() as sock:
        sock.sendall(framing_request("hello|" + INJECTED, "5", shape=shape) + framing_request("second", "6"))
        status, headers, body, buf = read_response(sock)
        assert (status, headers["content-length"], body) == (200, ["5"], b"hello")
        status, headers, body, buf = read_response(sock, buf)
        assert (status, body) == (200, b"second"), "the excess was read as the next response"
        assert not buf
    wait_for(lambda: "more body than its Content-Length" in server.log())


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("body", ["short", ""])
def test_a_body_shorter_than_its_content_length_ends_the_connection_after_it(server, shape, body):
    with server.connect() as sock:
        sock.sendall(framing_request(body, "20", shape=shape) + framing_request("never answered", "14"))
        received = recv_until_closed(sock)
    head, _, rest = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"\r\ncontent-length: 20" in head.lower()
    assert rest == body.encode(), "nothing but the app's bytes follows the head before the close"
    wait_for(lambda: "less body than its Content-Length" in server.log())


@pytest.mark.parametrize("shape", SHAPES)
def test_a_head_request_may_declare_the_length_of_a_body_it_does_not_send(server, shape):
    with server.connect() as sock:
        sock.sendall(framing_request("", "20", shape=shape, method="HEAD") + framing_request("second", "6"))
        data = b""
        while not data.endswith(b"second"):
            chunk = sock.recv(65536)
            assert chunk, f"connection closed early: {data!r}"
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"\r\ncontent-length: 20" in head.lower()
    # HEAD has no body: the next response starts right after the head.
    assert rest.startswith(b"HTTP/1.1 200 ") and rest.endswith(b"\r\n\r\nsecond")
    assert "less body than its Content-Length" not in server.log()


@pytest.mark.parametrize("declared", [("abc",), ("-1",), ("1.5",), ("5, 5",), ("",), ("5", "6")])
@pytest.mark.parametrize("shape", SHAPES)
def test_an_invalid_content_length_is_a_500_with_a_logged_error(server, declared, shape):
    with server.connect() as sock:
        sock.sendall(framing_request("hello", *declared, shape=shape) + framing_request("second", "6"))
        status, _, body, buf = read_response(sock)
        assert status == 500 and body == b"Internal Server Error\n"
        status, _, body, buf = read_response(sock, buf)
        assert (status, body) == (200, b"second")
    wait_for(lambda: "Content-Length" in server.log() and "application error" in server.log())


def test_the_same_content_length_twice_is_sent_once(server):
    with server.connect() as sock:
        sock.sendall(framing_request("hello", "5", "5"))
        status, headers, body, _ = read_response(sock)
    assert (status, headers["content-length"], body) == (200, ["5"], b"hello")
