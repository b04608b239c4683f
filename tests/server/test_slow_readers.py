"""Slow readers hold no Python thread: a streamed response whose client stops reading parks on
its full buffer (256 KiB) and gives its thread back; it goes on, on whichever thread is free,
once the client reads again (issue: as many stalled clients as `--threads` used to hold every
thread for `--io-timeout`, and other requests failed)."""

import concurrent.futures
import signal
import socket
import struct
from pathlib import Path

import pytest
import requests

from conftest import free_port, read_response, wait_for
from test_metrics import scrape, value

CHUNK = 64 * 1024


def open_stream(server, n: int, ident: str, path: str = "/stream") -> socket.socket:
    """Requests a streamed response and reads nothing of it (a small receive buffer, so the
    server's side fills up early)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(f"GET {path}?n={n}&id={ident} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
    return sock


def expected_stream(n: int) -> bytes:
    return b"".join(bytes([i % 251]) * CHUNK for i in range(n))


def parked(admin: int) -> float:
    return value(scrape(admin), "wharf_streams_parked")


def worker_rss_kib(server) -> int:
    children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()
    status = Path(f"/proc/{children[0]}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


def test_stalled_clients_leave_the_python_threads_to_others(wharf):
    admin = free_port()
    server = wharf("stream_apps:app", "--threads", "2", "--admin-bind", f"127.0.0.1:{admin}")
    rss_before = worker_rss_kib(server)
    n = 400  # 25 MiB each: far beyond any socket and pipe buffer
    stalled = [open_stream(server, n, f"s{i}") for i in range(4)]
    try:
        # Twice as many stalled clients as threads, all parked, no thread busy.
        wait_for(lambda: parked(admin) == 4, timeout=20)
        assert value(scrape(admin), "wharf_python_threads_busy") == 0
        for _ in range(20):
            resp = requests.get(f"{server.url}/", timeout=5)
            assert (resp.status_code, resp.text) == (200, "hello")
        # Memory stays bounded per connection: a buffer's worth each, not the 25 MiB streams.
        assert worker_rss_kib(server) - rss_before < 16 * 1024
        # Reading again resumes each one where it stopped, whole and in order.
        for i, sock in enumerate(stalled):
            status, headers, body, _ = read_response(sock)
            assert status == 200
            assert len(body) == n * CHUNK
            assert body == expected_stream(n), f"stream s{i} differs"
    finally:
        for sock in stalled:
            sock.close()
    wait_for(lambda: server.log().count("closed after 400 chunks") == 4)
    log = server.log()
    assert "ERROR" not in log and "Traceback" not in log, log


def test_a_flask_stream_with_context_survives_moving_between_threads(wharf):
    """stream_with_context pushes the request context in the app call and pops it at the end:
    the generator must keep seeing it, and the pop must find its own context, whichever thread
    runs each turn."""
    admin = free_port()
    server = wharf("stream_apps:flask_app", "--threads", "2", "--admin-bind", f"127.0.0.1:{admin}")
    n = 200
    streams = [open_stream(server, n, f"f{i}") for i in range(3)]
    try:
        wait_for(lambda: parked(admin) == 3, timeout=20)
        # Keep both threads busy with other requests while the streams are read, so turns
        # land on different threads.
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            hellos = [pool.submit(requests.get, f"{server.url}/", timeout=10) for _ in range(40)]
            for i, sock in enumerate(streams):
                status, _, body, _ = read_response(sock)
                assert status == 200
                chunks = [body[k : k + CHUNK] for k in range(0, len(body), CHUNK)]
                assert len(chunks) == n
                for k, chunk in enumerate(chunks):
                    assert chunk == f"f{i}:{k:06d};".encode().ljust(CHUNK, b"."), (i, k)
            assert all(f.result().text == "hello" for f in hellos)
    finally:
        for sock in streams:
            sock.close()
    log = server.log()
    assert "ERROR" not in log and "Traceback" not in log, log


def test_a_client_that_leaves_while_parked_gets_its_iterator_closed(wharf):
    admin = free_port()
    server = wharf("stream_apps:app", "--threads", "1", "--admin-bind", f"127.0.0.1:{admin}")
    sock = open_stream(server, 1000, "gone")
    wait_for(lambda: parked(admin) == 1, timeout=20)
    # Reset, not a polite close: unread data is pending.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    wait_for(lambda: "stream gone closed after" in server.log(), timeout=20)
    samples = scrape(admin)
    assert value(samples, "wharf_streams_parked") == 0
    assert value(samples, "wharf_python_threads_busy") == 0
    assert requests.get(f"{server.url}/", timeout=5).text == "hello"


def test_sigterm_lets_parked_streams_finish(wharf):
    admin = free_port()
    server = wharf("stream_apps:app", "--threads", "1", "--admin-bind", f"127.0.0.1:{admin}")
    n = 100
    sock = open_stream(server, n, "drain")
    try:
        wait_for(lambda: parked(admin) == 1, timeout=20)
        server.proc.send_signal(signal.SIGTERM)
        status, _, body, _ = read_response(sock)
        assert status == 200
        assert body == expected_stream(n)
    finally:
        sock.close()
    assert server.proc.wait(timeout=30) == 0
    assert "stream drain closed after 100 chunks" in server.log()


def test_pin_streams_keeps_a_slow_clients_response_on_its_thread(wharf):
    server = wharf("stream_apps:app", "--threads", "1", "--pin-streams")
    sock = open_stream(server, 1000, "pinned")
    try:
        # Its one thread waits for the stalled client: nothing else is served meanwhile.
        with pytest.raises(requests.exceptions.ReadTimeout):
            requests.get(f"{server.url}/", timeout=1.5)
    finally:
        sock.close()
