"""The server's own log lines: every worker line says which worker and process wrote it (text
and JSON), and `--log-level debug` has one line per request."""

from __future__ import annotations

import json
import re

import requests

from conftest import wait_for


def pids_of(server, count: int) -> set[int]:
    """The worker pids, as the app reports them (bounded: new connections until both answered)."""
    pids: set[int] = set()
    for _ in range(400):
        pids.add(int(requests.get(server.url, headers={"Connection": "close"}, timeout=10).text.split()[1]))
        if len(pids) == count:
            break
    return pids


def test_every_worker_text_line_names_worker_and_pid(wharf):
    server = wharf("lifecycle_app:app", "--workers", "2")
    pids = pids_of(server, 2)
    assert len(pids) == 2
    worker_lines = [line for line in server.log().splitlines() if "worker serving" in line]
    assert len(worker_lines) == 2, server.log()
    tags = {re.match(r"worker=(\d+) pid=(\d+) ", line).groups() for line in worker_lines}
    assert {int(pid) for _, pid in tags} == pids
    assert len({worker for worker, _ in tags}) == 2
    # Supervisor lines are not tagged as a worker's.
    assert any("listening on" in line and not line.startswith("worker=") for line in server.log().splitlines())


def test_every_worker_json_line_has_worker_and_pid_fields(wharf):
    server = wharf("lifecycle_app:app", "--log-format", "json")
    (pid,) = pids_of(server, 1)
    records = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    serving = [r for r in records if r.get("message") == "worker serving"]
    assert len(serving) == 1, records
    assert serving[0]["pid"] == pid
    assert isinstance(serving[0]["worker"], int)
    assert serving[0]["level"] == "INFO" and "timestamp" in serving[0], "the usual fields stay"


def test_debug_logs_one_line_per_request(wharf):
    server = wharf("lifecycle_app:app", "--log-level", "debug")
    requests.get(f"{server.url}/hello?token=secret", timeout=10)
    requests.post(f"{server.url}/upload", data=b"x" * 10, timeout=10)

    def done() -> list[str]:
        return [line for line in server.log().splitlines() if "request done in" in line]

    wait_for(lambda: len(done()) >= 2)
    get, post = done()
    assert re.search(r"DEBUG .*request done in \d+\.\d{3} ms method=GET path=/hello status=200 bytes_sent=\d+ completed=true$", get), get
    assert "secret" not in get, "the query only with --log-query"
    assert "method=POST path=/upload status=200" in post


def test_info_logs_no_line_per_request(wharf):
    server = wharf("lifecycle_app:app")
    before = server.log()
    for _ in range(5):
        requests.get(server.url, timeout=10)
    assert "request done" not in server.log()
    assert server.log().count("\n") == before.count("\n")
