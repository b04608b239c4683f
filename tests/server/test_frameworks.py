"""A real Flask app (apps/flask_app.py) and a real Django project (apps/djangoproject/)
served by wharf, driven with `requests` like any HTTP client would."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import pytest
import requests

from conftest import WharfProcess, wait_for

TIMEOUT = 15


@dataclass(frozen=True)
class Framework:
    name: str
    app: str
    search: str
    form: str
    upload: str
    json: str
    stream: str
    login: str
    me: str
    boom: str


FLASK = Framework(
    name="flask",
    app="flask_app:app",
    search="/search",
    form="/form",
    upload="/upload",
    json="/json",
    stream="/stream",
    login="/login",
    me="/me",
    boom="/boom",
)
DJANGO = Framework(
    name="django",
    app="djangoproject.wsgi:application",
    search="/search/",
    form="/form/",
    upload="/upload/",
    json="/api/json/",
    stream="/stream/",
    login="/login/",
    me="/whoami/",
    boom="/boom/",
)


@pytest.fixture(params=[FLASK, DJANGO], ids=lambda f: f.name)
def served(request, wharf) -> tuple[WharfProcess, Framework]:
    framework: Framework = request.param
    return wharf(framework.app, "--threads", "4"), framework


def form_session(server: WharfProcess, fw: Framework) -> tuple[requests.Session, dict]:
    """A session ready to POST forms: for Django that means holding the CSRF cookie and token."""
    session = requests.Session()
    if fw is DJANGO:
        response = session.get(server.url + fw.form, timeout=TIMEOUT)
        assert response.status_code == 200
        assert "csrftoken" in session.cookies
        return session, {"csrfmiddlewaretoken": response.json()["csrf"]}
    return session, {}


def test_get_with_query_params(served):
    server, fw = served
    response = requests.get(
        server.url + fw.search,
        params=[("q", "hello wörld & more=1"), ("tag", "a"), ("tag", "b/c")],
        timeout=TIMEOUT,
    )
    assert response.status_code == 200
    body = response.json()
    assert body["q"] == "hello wörld & more=1"
    assert body["tags"] == ["a", "b/c"]


def test_form_post_urlencoded(served):
    server, fw = served
    session, extra = form_session(server, fw)
    response = session.post(
        server.url + fw.form,
        data=[("name", "Zoë"), ("colour", "red"), ("colour", "green"), ("empty", ""), *extra.items()],
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["content_type"] == "application/x-www-form-urlencoded"
    assert body["fields"] == {"name": ["Zoë"], "colour": ["red", "green"], "empty": [""]}


def test_multipart_upload(served):
    server, fw = served
    session, extra = form_session(server, fw)
    payload = random.Random(3333).randbytes(3 * 1024 * 1024 + 17)
    response = session.post(
        server.url + fw.upload,
        data={"note": "a binary blob", **extra},
        files={"upload": ("blob.bin", payload, "application/octet-stream")},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["size"] == len(payload)
    assert body["sha256"] == hashlib.sha256(payload).hexdigest()
    assert body["note"] == "a binary blob"
    name_key = "filename" if fw is FLASK else "name"
    assert body[name_key] == "blob.bin"


def test_json_request_and_response(served):
    server, fw = served
    sent = {"numbers": [1, 2, 39], "name": "grüße", "nested": {"ok": True, "none": None}}
    response = requests.post(server.url + fw.json, json=sent, timeout=TIMEOUT)
    assert response.status_code == 201, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert response.json() == {"total": 42, "name": "GRÜSSE", "echo": sent}


def test_streamed_response_arrives_incrementally(served, tmp_path):
    server, fw = served
    release = tmp_path / "release-stream"
    with requests.get(
        server.url + fw.stream,
        params={"who": fw.name, "release": str(release)},
        stream=True,
        timeout=TIMEOUT,
    ) as response:
        assert response.status_code == 200
        assert "Content-Length" not in response.headers
        assert response.headers["Transfer-Encoding"] == "chunked"
        pieces = response.iter_content(chunk_size=None)
        # The view waits for `release` after its first chunk, so receiving that chunk now
        # proves the server sent it before the generator finished.
        first = next(pieces)
        assert first == f"first chunk for {fw.name}\n".encode()
        release.touch()
        rest = b"".join(pieces)
    assert rest == b"chunk 0\nchunk 1\nchunk 2\n"


def test_flask_reads_a_chunked_upload(wharf):
    server = wharf(FLASK.app)
    rng = random.Random(42)
    pieces = [rng.randbytes(size) for size in (1, 100, 8192, 65536, 3, 200_000, 0, 77)]

    def body():
        yield from pieces

    response = requests.post(server.url + "/raw", data=body(), timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    seen = response.json()
    assert seen["transfer_encoding"] == "chunked" and seen["content_length"] is None
    whole = b"".join(pieces)
    assert seen["size"] == len(whole)
    assert seen["sha256"] == hashlib.sha256(whole).hexdigest()


def test_cookies_and_redirects(served):
    server, fw = served
    session = requests.Session()
    response = session.get(server.url + fw.login, params={"user": "alice"}, timeout=TIMEOUT)
    assert [r.status_code for r in response.history] == [302]
    assert response.history[0].headers["Location"].endswith(fw.me)
    assert "user=alice" in response.history[0].headers["Set-Cookie"]
    assert response.url == server.url + fw.me
    assert response.json() == {"user": "alice"}
    assert session.cookies["user"] == "alice"
    # Without the cookie the same page sees nobody.
    assert requests.get(server.url + fw.me, timeout=TIMEOUT).json() == {"user": None}


def test_django_append_slash_redirect(wharf):
    server = wharf(DJANGO.app)
    response = requests.get(server.url + "/search?q=x", allow_redirects=False, timeout=TIMEOUT)
    assert response.status_code == 301
    assert response.headers["Location"] == "/search/?q=x"
    followed = requests.get(server.url + "/search?q=x", timeout=TIMEOUT)
    assert followed.json()["q"] == "x"


def test_django_csrf_rejects_a_form_without_token(wharf):
    server = wharf(DJANGO.app)
    response = requests.post(server.url + DJANGO.form, data={"name": "mallory"}, timeout=TIMEOUT)
    assert response.status_code == 403
    assert "CSRF" in response.text


def test_404_from_the_framework(served):
    server, fw = served
    response = requests.get(server.url + "/no/such/page/", timeout=TIMEOUT)
    assert response.status_code == 404
    assert response.headers["Content-Type"].startswith("text/html")
    assert "Not Found" in response.text


def test_view_exception_gives_500_and_server_keeps_serving(served):
    server, fw = served
    response = requests.get(server.url + fw.boom, timeout=TIMEOUT)
    assert response.status_code == 500
    assert "Server Error" in response.text
    # The framework logs the traceback through wsgi.errors / stderr into wharf's log.
    wait_for(lambda: f"boom from {fw.name}" in server.log(), timeout=TIMEOUT)
    for i in range(5):
        again = requests.get(server.url + fw.search, params={"q": str(i)}, timeout=TIMEOUT)
        assert again.status_code == 200 and again.json()["q"] == str(i)
    assert server.proc.poll() is None
