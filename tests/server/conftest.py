"""Fixtures that run the real `wharf` process on 127.0.0.1 and talk to it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

APPS_DIR = Path(__file__).parent / "apps"
STARTUP_TIMEOUT = 20.0


def wharf_command() -> list[str]:
    exe = shutil.which("wharf", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "wharf"]


class WharfProcess:
    """One running wharf server; `url` is ready to use once the constructor returns."""

    def __init__(self, app: str | None, *args: str, tmp_path: Path, env: dict | None = None, bind: str | None = None):
        self.log_path = tmp_path / f"wharf-{time.monotonic_ns()}.log"
        self.out_path = self.log_path.with_suffix(".out")
        self.bind = bind or "127.0.0.1:0"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("WHARF_")}
        full_env.update(env or {})
        chdir = [] if "--chdir" in args else ["--chdir", str(APPS_DIR)]
        self.cmd = [*wharf_command(), "--bind", self.bind, *chdir, *args, *([app] if app else [])]
        self.workers = int(args[args.index("--workers") + 1]) if "--workers" in args else 1
        self._log = open(self.log_path, "wb")
        self._out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(self.cmd, stdout=self._out, stderr=self._log, env=full_env)
        self.port = self._wait_listening()
        self.url = f"http://127.0.0.1:{self.port}" if self.port else None

    def _wait_listening(self) -> int | None:
        """Waits until the sockets are bound and every worker reported ready."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        pattern = re.compile(r"listening on (?:http://[^\s]*:(\d+)|unix:)")
        while time.monotonic() < deadline:
            log = self.log()
            match = pattern.search(log)
            if match and log.count("worker ready") >= self.workers:
                return int(match.group(1)) if match.group(1) else None
            if self.proc.poll() is not None:
                raise RuntimeError(f"wharf exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"wharf did not start listening within {STARTUP_TIMEOUT}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def connect(self, timeout: float = 10.0) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        return sock

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
        self._out.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def wharf(tmp_path):
    """Factory: `wharf("module:app", "--threads", "4")` starts a server; all are stopped at teardown."""
    started: list[WharfProcess] = []

    def start(app: str | None, *args: str, **kwargs) -> WharfProcess:
        server = WharfProcess(app, *args, tmp_path=tmp_path, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop(signal.SIGKILL if server.proc.poll() is None else signal.SIGTERM, timeout=10)


def recv_until_closed(sock: socket.socket, limit: int = 10 * 1024 * 1024) -> bytes:
    """Reads until the peer closes (or `limit` bytes); raises on timeout."""
    chunks = []
    total = 0
    while total < limit:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
        total += len(data)
    return b"".join(chunks)


def read_response(sock: socket.socket, buf: bytearray | None = None) -> tuple[int, dict, bytes, bytearray]:
    """Reads exactly one HTTP/1.x response (Content-Length, chunked, or close-delimited).

    Returns (status, headers with lowercased names → list of values, body, leftover bytes).
    """
    buf = buf if buf is not None else bytearray()

    def fill() -> bool:
        data = sock.recv(65536)
        if not data:
            return False
        buf.extend(data)
        return True

    while b"\r\n\r\n" not in buf:
        if not fill():
            raise ConnectionError(f"connection closed before a full response head: {bytes(buf)!r}")
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    buf[:] = rest
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    if status in (204, 304) or 100 <= status < 200:
        return status, headers, b"", buf
    if "content-length" in headers:
        length = int(headers["content-length"][0])
        while len(buf) < length:
            if not fill():
                raise ConnectionError("connection closed inside a Content-Length body")
        body = bytes(buf[:length])
        buf[:] = buf[length:]
        return status, headers, body, buf
    if "chunked" in headers.get("transfer-encoding", [""])[0]:
        body = bytearray()
        while True:
            while b"\r\n" not in buf:
                if not fill():
                    raise ConnectionError("connection closed inside a chunked body")
            size_line, _, rest = bytes(buf).partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            buf[:] = rest
            while len(buf) < size + 2:
                if not fill():
                    raise ConnectionError("connection closed inside a chunk")
            body.extend(buf[:size])
            buf[:] = buf[size + 2 :]
            if size == 0:
                return status, headers, bytes(body), buf
    while fill():
        pass
    body = bytes(buf)
    buf.clear()
    return status, headers, body, buf


def raw_request(server: WharfProcess, data: bytes, timeout: float = 10.0) -> bytes:
    """Sends raw bytes, returns everything the server sends until it closes."""
    with server.connect(timeout) as sock:
        sock.sendall(data)
        return recv_until_closed(sock)


def send_blocked_requests(server: WharfProcess, gate: Path, count: int) -> list[socket.socket]:
    """Opens `count` connections, each sending a request lifecycle_app holds until `gate` exists."""
    socks = []
    for _ in range(count):
        sock = server.connect(timeout=30)
        sock.sendall(f"GET /block?gate={gate} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
        socks.append(sock)
    return socks


def free_port() -> int:
    """A loopback port nothing listens on right now (for listeners a test names itself)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02):
    """Polls `predicate` until it returns a truthy value; fails the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(interval)


NGINX_CONF = """
user root;
worker_processes 1;
daemon off;
error_log {dir}/error.log info;
pid {dir}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_max_body_size 16m;
    upstream wharf {{
        server 127.0.0.1:{upstream};
        keepalive 4;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://wharf;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }}
    }}
}}
"""


@pytest.fixture
def nginx(tmp_path):
    """Factory: `nginx(server)` puts a real nginx in front of a WharfProcess, reusing upstream
    connections as production setups do (keepalive), and returns its base URL."""
    exe = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    assert exe, "nginx is not installed (scripts/test.sh installs the Debian package)"
    started: list[subprocess.Popen] = []

    def start(server: WharfProcess) -> str:
        conf_dir = tmp_path / f"nginx-{len(started)}"
        conf_dir.mkdir()
        port = free_port()
        conf = conf_dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=conf_dir, upstream=server.port, port=port))
        log = open(conf_dir / "stderr.log", "wb")
        proc = subprocess.Popen([exe, "-c", str(conf), "-p", str(conf_dir)], stderr=log)
        started.append(proc)

        def listening():
            if proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {(conf_dir / 'stderr.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_for(listening)
        return f"http://127.0.0.1:{port}"

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(10)
