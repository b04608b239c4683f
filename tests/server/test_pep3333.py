"""PEP 3333 conformance of the real wharf process: environ, wsgi.input, start_response,
response iteration, close(), write(), exc_info and wsgi.file_wrapper."""

import base64
import io
import json
import os
import random
import socket
import sys

import pytest
import requests

from conftest import APPS_DIR, read_response, recv_until_closed, wait_for

sys.path.insert(0, str(APPS_DIR))
import pep_apps  # noqa: E402  (the app module itself holds the operation runner)


def env_of(server, path="/", **kwargs):
    resp = requests.get(server.url + path, timeout=10, **kwargs)
    assert resp.status_code == 200, resp.text
    return resp.json()


# ---------------------------------------------------------------- wsgiref.validate


def test_wsgiref_validator_accepts_every_request_shape(wharf):
    server = wharf("pep_apps:validated_app")
    assert requests.get(server.url + "/", timeout=10).text == "method=GET len=0"
    assert requests.post(server.url + "/", data=b"x" * 1000, timeout=10).text == "method=POST len=1000"
    assert requests.post(server.url + "/", data=b"", timeout=10).text == "method=POST len=0"
    big = os.urandom(3 * 1024 * 1024)
    assert requests.post(server.url + "/", data=big, timeout=30).text == f"method=POST len={len(big)}"
    chunked = requests.post(server.url + "/", data=iter([b"ab", b"cd", b"ef"]), timeout=10)
    assert chunked.text == "method=POST len=6"
    head = requests.head(server.url + "/", timeout=10)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == str(len("method=HEAD len=0"))
    assert requests.get(server.url + "/empty", timeout=10).status_code == 204
    large = requests.get(server.url + "/large", timeout=30)
    assert large.content == b"0123456789abcdef" * 65536
    assert "AssertionError" not in server.log() and "WSGIWarning" not in server.log()


# ---------------------------------------------------------------- environ


def test_environ_required_keys_and_types(wharf):
    server = wharf("pep_apps:environ_app", "--threads", "3")
    env = env_of(server, "/some/path?a=1&b=%20x")
    assert env["REQUEST_METHOD"] == ["str", "GET"]
    assert env["SCRIPT_NAME"] == ["str", ""]
    assert env["PATH_INFO"] == ["str", "/some/path"]
    assert env["QUERY_STRING"] == ["str", "a=1&b=%20x"]
    assert env["SERVER_PROTOCOL"] == ["str", "HTTP/1.1"]
    assert env["SERVER_NAME"] == ["str", "127.0.0.1"]
    assert env["SERVER_PORT"] == ["str", str(server.port)]
    assert env["REMOTE_ADDR"] == ["str", "127.0.0.1"]
    assert env["REMOTE_PORT"][0] == "str" and int(env["REMOTE_PORT"][1]) > 0
    assert env["wsgi.version"] == ["tuple", [1, 0]]
    assert env["wsgi.url_scheme"] == ["str", "http"]
    assert env["wsgi.multithread"] == ["bool", True]
    assert env["wsgi.multiprocess"] == ["bool", False]
    assert [k for k, v in env.items() if isinstance(v, list) and v[0] == "NoneType"] == []
    assert env["wsgi.run_once"] == ["bool", False]
    assert env["wsgi.input_terminated"] == ["bool", True]
    assert env["__has_methods__"] == {"input": True, "errors": True}
    assert "CONTENT_TYPE" not in env and "CONTENT_LENGTH" not in env
    assert "wsgi.file_wrapper" in env
    assert "environ_app was here" in server.log()


def test_environ_single_thread_is_not_multithread(wharf):
    server = wharf("pep_apps:environ_app", "--threads", "1")
    assert env_of(server)["wsgi.multithread"] == ["bool", False]


def test_environ_content_headers_and_http_keys(wharf):
    server = wharf("pep_apps:environ_app")
    resp = requests.post(
        server.url + "/",
        data=b"hello",
        headers={"Content-Type": "text/x-test", "X-Custom-Thing": "v1", "Host": "example.org:8080"},
        timeout=10,
    )
    env = resp.json()
    assert env["CONTENT_TYPE"] == ["str", "text/x-test"]
    assert env["CONTENT_LENGTH"] == ["str", "5"]
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["HTTP_X_CUSTOM_THING"] == ["str", "v1"]
    assert env["HTTP_HOST"] == ["str", "example.org:8080"]
    assert env["SERVER_NAME"] == ["str", "example.org"]
    assert env["SERVER_PORT"] == ["str", "8080"]


def test_environ_repeated_headers_joined_and_underscore_headers_dropped(wharf):
    server = wharf("pep_apps:environ_app")
    with server.connect() as sock:
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: h\r\nX-Multi: a\r\nX-Multi: b\r\nX_Multi: spoof\r\n"
            b"Cookie: a=1\r\nCookie: b=2\r\nConnection: close\r\n\r\n"
        )
        status, _, body, _ = read_response(sock)
    env = json.loads(body)
    assert status == 200
    assert env["HTTP_X_MULTI"] == ["str", "a, b"]
    assert env["HTTP_COOKIE"] == ["str", "a=1; b=2"]


def test_environ_path_is_percent_decoded_as_latin1_and_query_is_raw(wharf):
    server = wharf("pep_apps:environ_app")
    with server.connect() as sock:
        sock.sendall(b"GET /caf%C3%A9/a%2Fb?q=caf%C3%A9&x=%zz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        _, _, body, _ = read_response(sock)
    env = json.loads(body)
    assert env["PATH_INFO"] == ["str", "/caf\u00c3\u00a9/a/b"]
    assert env["PATH_INFO"][1].encode("latin-1").decode("utf-8") == "/café/a/b"
    assert env["QUERY_STRING"] == ["str", "q=caf%C3%A9&x=%zz"]
    assert env["RAW_URI"] == ["str", "/caf%C3%A9/a%2Fb?q=caf%C3%A9&x=%zz"]


def test_environ_header_values_are_latin1_strings(wharf):
    server = wharf("pep_apps:environ_app")
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nX-Bytes: caf\xc3\xa9 \xff\r\nConnection: close\r\n\r\n")
        _, _, body, _ = read_response(sock)
    value = json.loads(body)["HTTP_X_BYTES"][1]
    assert value.encode("latin-1") == b"caf\xc3\xa9 \xff"


def test_environ_http10_protocol(wharf):
    server = wharf("pep_apps:environ_app")
    with server.connect() as sock:
        sock.sendall(b"GET /x HTTP/1.0\r\n\r\n")
        status, _, body, _ = read_response(sock)
    env = json.loads(body)
    assert status == 200
    assert env["SERVER_PROTOCOL"] == ["str", "HTTP/1.0"]
    assert env["SERVER_NAME"] == ["str", "127.0.0.1"]
    assert "HTTP_HOST" not in env
    assert [k for k, v in env.items() if isinstance(v, list) and v[0] == "NoneType"] == []


def test_environ_over_a_unix_socket_has_no_remote_address(wharf, tmp_path):
    path = tmp_path / "wharf.sock"
    wharf("pep_apps:environ_app", bind=f"unix:{path}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(b"GET /u HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n")
        status, _, body, _ = read_response(sock)
    env = json.loads(body)
    assert status == 200
    assert "REMOTE_ADDR" not in env and "REMOTE_PORT" not in env
    assert env["HTTP_HOST"] == ["str", "example.test"]
    assert [k for k, v in env.items() if isinstance(v, list) and v[0] == "NoneType"] == []


def test_environ_root_path_sets_script_name(wharf):
    server = wharf("pep_apps:environ_app", "--root-path", "/api/")
    env = env_of(server, "/api/users/1")
    assert env["SCRIPT_NAME"] == ["str", "/api"]
    assert env["PATH_INFO"] == ["str", "/users/1"]
    env = env_of(server, "/elsewhere")
    assert env["PATH_INFO"] == ["str", "/elsewhere"]


def test_environ_does_not_leak_os_environment(wharf):
    server = wharf("pep_apps:environ_app", env={"WHARF_TEST_SECRET": "s3cret", "PATH": os.environ["PATH"]})
    env = env_of(server)
    assert "WHARF_TEST_SECRET" not in env and "PATH" not in env and "HOME" not in env
    assert "s3cret" not in json.dumps(env)


# ---------------------------------------------------------------- wsgi.input


def reference_ops(data: bytes, ops: list[str]) -> list[bytes]:
    """What the same operations give on an io.BytesIO: the behaviour wsgi.input must match."""
    return pep_apps.run_ops(io.BytesIO(data), ops)


def run_ops(server, data: bytes, ops: list[str], chunked: bool):
    body = iter([data[i : i + 7] for i in range(0, len(data), 7)] or [b""]) if chunked else data
    resp = requests.post(server.url + "/?ops=" + ",".join(ops), data=body, timeout=20)
    assert resp.status_code == 200, resp.text
    return [base64.b64decode(x) for x in resp.json()["got"]]


INPUT_CASES = [
    ["read"],
    ["read:0", "read:3", "read:100000", "read"],
    ["readline", "readline", "read"],
    ["readline:4", "readline:4", "readline", "read:2", "readlines"],
    ["readlines"],
    ["readlines:10", "read"],
    ["iter"],
    ["next", "read:5", "iter"],
    ["read", "read", "read:10", "readline"],
    ["read:-1", "readline:-1"],
]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("ops", INPUT_CASES, ids=lambda ops: "+".join(ops))
def test_wsgi_input_methods_match_bytesio(wharf, ops, chunked):
    server = wharf("pep_apps:input_app")
    data = b"line one\nline two is longer\n\nlast line without newline"
    assert run_ops(server, data, ops, chunked) == reference_ops(data, ops)


def test_wsgi_input_random_mixtures_never_lose_or_duplicate_bytes(wharf):
    server = wharf("pep_apps:input_app")
    rng = random.Random(3333)
    choices = ["read", "readline", "next"]
    for _ in range(40):
        data = bytes(rng.choice(b"ab\n") for _ in range(rng.randint(0, 3000)))
        ops = []
        for _ in range(rng.randint(1, 12)):
            name = rng.choice(choices)
            if name != "next" and rng.random() < 0.7:
                name += f":{rng.randint(0, 300)}"
            ops.append(name)
        ops.append("read")
        chunked = rng.random() < 0.5
        got = run_ops(server, data, ops, chunked)
        assert got == reference_ops(data, ops), (ops, chunked)
        assert b"".join(got) == data


def test_wsgi_input_large_body_is_streamed_intact(wharf):
    server = wharf("pep_apps:echo_app")
    data = os.urandom(8 * 1024 * 1024)
    resp = requests.post(server.url + "/", data=data, timeout=60)
    assert resp.content == data
    chunked = requests.post(server.url + "/", data=iter([data[i : i + 65536] for i in range(0, len(data), 65536)]), timeout=60)
    assert chunked.content == data


# ---------------------------------------------------------------- responses


def test_first_chunk_arrives_before_generator_finishes(wharf, tmp_path):
    server = wharf("pep_apps:stream_gate_app")
    gate = tmp_path / "gate"
    with server.connect(timeout=15) as sock:
        sock.sendall(f"GET /?gate={gate} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".encode())
        received = b""
        # The generator is parked until the gate exists, so the first chunk can only be here
        # if the server streamed it.
        while b"first chunk" not in received:
            data = sock.recv(4096)
            assert data, "connection closed before the first chunk"
            received += data
        assert b"second chunk" not in received
        gate.touch()
        received += recv_until_closed(sock)
    assert b"transfer-encoding: chunked" in received.lower()
    assert b"second chunk" in received


def test_a_complete_body_is_answered_before_the_iterable_ends(wharf, tmp_path):
    """The first chunk carries the whole declared body: the client has the complete response
    while the generator is still parked, and bytes beyond Content-Length never reach it."""
    server = wharf("pep_apps:sized_gate_app")
    gate = tmp_path / "gate"
    with server.connect(timeout=15) as sock:
        sock.sendall(f"GET /?gate={gate} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
        status, headers, body, buf = read_response(sock)
        assert (status, headers["content-length"], body) == (200, ["11"], b"whole body\n")
        assert "transfer-encoding" not in headers
        gate.touch()
        wait_for(lambda: "more body than its Content-Length" in server.log())
        # The connection stays in step: the excess was not written into it.
        sock.sendall(f"GET /?gate={gate} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".encode())
        status, _, body, buf = read_response(sock, buf)
        assert (status, body) == (200, b"whole body\n")
        assert not buf


def state(server):
    return requests.get(server.url + "/_state", timeout=10).json()


def test_close_called_once_after_success_and_after_error(wharf):
    server = wharf("pep_apps:close_app")
    assert requests.get(server.url + "/ok?tag=ok", timeout=10).content == b"abc"
    with pytest.raises(requests.exceptions.RequestException):
        # The iterable fails after the head was sent: the response must end abnormally.
        _ = requests.get(server.url + "/fail?tag=fail", timeout=10).content
    closes = wait_for(lambda: (s := state(server)).get("fail") and s)
    assert closes == {"ok": 1, "fail": 1}
    assert "boom while iterating" in server.log()


def test_close_called_when_client_disconnects_mid_response(wharf):
    server = wharf("pep_apps:close_app")
    with server.connect() as sock:
        sock.sendall(b"GET /forever?tag=gone HTTP/1.1\r\nHost: h\r\n\r\n")
        got = 0
        while got < 200_000:
            data = sock.recv(65536)
            assert data
            got += len(data)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    assert wait_for(lambda: state(server).get("gone"), timeout=15) == 1
    assert requests.get(server.url + "/ok?tag=after", timeout=10).content == b"abc"


def test_lazy_start_response_in_generator(wharf):
    server = wharf("pep_apps:lazy_app")
    resp = requests.get(server.url + "/", timeout=10)
    assert resp.status_code == 201
    assert resp.headers["X-Lazy"] == "yes"
    assert resp.content == b"lazy body"


def test_write_callable_output_precedes_iterable(wharf):
    server = wharf("pep_apps:write_app")
    resp = requests.get(server.url + "/", timeout=10)
    assert resp.status_code == 200
    assert resp.content == b"written directly then returned"


def test_exc_info_replaces_headers_not_yet_sent(wharf):
    server = wharf("pep_apps:exc_info_app")
    resp = requests.get(server.url + "/before", timeout=10)
    assert resp.status_code == 503
    assert resp.headers["X-Replaced"] == "1"
    assert resp.content == b"replaced"


def test_exc_info_after_headers_sent_reraises_and_truncates(wharf):
    server = wharf("pep_apps:exc_info_app")
    with server.connect() as sock:
        sock.sendall(b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n")
        raw = recv_until_closed(sock)
    assert raw.startswith(b"HTTP/1.1 200")
    assert b"partial" in raw and b"never" not in raw
    assert not raw.endswith(b"0\r\n\r\n"), "a failed stream must not end with a clean terminator"
    assert "too late" in server.log()


def test_start_response_twice_without_exc_info_is_an_error(wharf):
    server = wharf("pep_apps:exc_info_app")
    resp = requests.get(server.url + "/twice", timeout=10)
    assert resp.status_code == 500
    assert "second time without exc_info" in server.log()


@pytest.mark.parametrize(
    "path, logged",
    [
        ("/raise", "application exploded"),
        ("/bad-status", "is not of the form"),
        ("/bad-header-latin1", "latin-1"),
        ("/bad-header-crlf", "not allowed"),
        ("/str-body", "must yield bytes"),
        ("/no-start-response", "before calling start_response"),
    ],
)
def test_broken_apps_get_500_and_server_keeps_serving(wharf, path, logged):
    server = wharf("pep_apps:bad_app")
    resp = requests.get(server.url + path, timeout=10)
    assert resp.status_code == 500
    assert "Set-Cookie" not in resp.headers
    assert logged in server.log()
    assert requests.get(server.url + "/ok", timeout=10).content == b"still fine"


def test_file_wrapper_sends_file_from_current_position(wharf, tmp_path):
    server = wharf("pep_apps:file_app")
    blob = os.urandom(3 * 1024 * 1024 + 17)
    path = tmp_path / "blob.bin"
    path.write_bytes(blob)
    resp = requests.get(server.url + "/file", params={"path": str(path)}, timeout=30)
    assert resp.content == blob
    assert resp.headers["Content-Length"] == str(len(blob))
    resp = requests.get(server.url + "/file", params={"path": str(path), "seek": "1000"}, timeout=30)
    assert resp.content == blob[1000:]
    resp = requests.get(server.url + "/file", params={"path": str(path), "length": "10"}, timeout=30)
    assert resp.content == blob[:10]
    head = requests.head(server.url + "/file", params={"path": str(path)}, timeout=30)
    assert head.headers["Content-Length"] == str(len(blob)) and head.content == b""


def test_file_wrapper_without_fileno_iterates(wharf):
    server = wharf("pep_apps:file_app")
    resp = requests.get(server.url + "/bytesio", timeout=10)
    assert resp.content == b"from a BytesIO " * 100


def test_queue_full_answers_503_quickly(wharf, tmp_path):
    server = wharf("pep_apps:sleepy_app", "--threads", "1", "--queue-size", "1")
    gate = tmp_path / "gate"
    entered = tmp_path / "gate.entered"
    request = f"GET /?gate={gate} HTTP/1.1\r\nHost: h\r\n\r\n".encode()
    first = server.connect(timeout=20)
    others = []
    try:
        first.sendall(request)
        wait_for(entered.exists)
        for _ in range(5):
            sock = server.connect(timeout=20)
            sock.sendall(request)
            others.append(sock)
        # The only thread is busy and the queue holds one request: exactly one of the five
        # waits, the other four are refused at once, while the app is still blocked.
        refused = {}

        def four_refused():
            for sock in others:
                if sock in refused:
                    continue
                sock.settimeout(0.05)
                try:
                    refused[sock] = read_response(sock)[:3]
                except (TimeoutError, socket.timeout):
                    pass
            return len(refused) >= 4

        wait_for(four_refused, timeout=15)
        assert [r[0] for r in refused.values()] == [503] * 4
        assert not gate.exists()
        gate.touch()
        waiting = [s for s in others if s not in refused]
        assert len(waiting) == 1
        for sock in (first, waiting[0]):
            sock.settimeout(20)
            status, _, body = read_response(sock)[:3]
            assert (status, body) == (200, b"woke")
    finally:
        for sock in [first, *others]:
            sock.close()
