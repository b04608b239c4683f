"""Through a real nginx that reuses its upstream connections (keepalive), as wharf runs in
production: an app's framing bug or an unread upload must not reach the next client.

nginx itself drops an upstream connection that sent more than its Content-Length, so there the
harm of the old behaviour was the stall: the next request on the upstream connection waited
for wharf's keep-alive timeout. wharf runs with a long one here, and every call must be
answered well within it."""

from __future__ import annotations

from urllib.parse import quote

import requests

INJECTED = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\ninjected"


# Far beyond the client timeout below: a connection left waiting for it fails the test.
SLOW_KEEP_ALIVE = ("--keep-alive-timeout", "30")
PROMPT = 5


def test_excess_body_bytes_never_become_another_clients_response(wharf, nginx):
    front = nginx(wharf("http_apps:framing", *SLOW_KEEP_ALIVE))
    for _ in range(5):
        bad = requests.get(f"{front}/?body={quote('hello|' + INJECTED)}&declared=5&shape=list", timeout=PROMPT)
        assert (bad.status_code, bad.text) == (200, "hello")
        other = requests.get(f"{front}/?body=second&declared=6", timeout=PROMPT)
        assert (other.status_code, other.text) == (200, "second")


def test_a_short_body_is_not_completed_by_the_next_response(wharf, nginx):
    front = nginx(wharf("http_apps:framing", *SLOW_KEEP_ALIVE))
    for _ in range(3):
        try:
            short = requests.get(f"{front}/?body=short&declared=20", timeout=PROMPT)
            assert short.status_code >= 500 or len(short.content) < 20
        except requests.exceptions.ChunkedEncodingError:
            pass  # nginx passes the truncation on: the client sees it
        other = requests.get(f"{front}/?body=second&declared=6", timeout=PROMPT)
        assert (other.status_code, other.text) == (200, "second")


def test_an_unread_upload_does_not_fail_the_next_request(wharf, nginx):
    """The report: behind nginx, the request after a refused upload got a 502."""
    front = nginx(wharf("http_apps:refuse", *SLOW_KEEP_ALIVE))
    with requests.Session() as session:
        for size in (70 * 1024, 100 * 1024, 300 * 1024, 3 * 1024 * 1024, 300 * 1024):
            refused = session.post(front + "/upload", data=b"x" * size, timeout=PROMPT)
            assert refused.status_code == 403
            after = session.get(front + "/after", timeout=PROMPT)
            assert (after.status_code, after.text) == (403, "refused GET /after")
