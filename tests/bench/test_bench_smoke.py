"""Keeps bench/run.py working: a 1-second-per-server run of every app against wharf and gunicorn.

Timings are never asserted (they are noise on a shared 2-core machine); only that the harness runs,
every server answers every app correctly and the results file is complete and parseable.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "bench" / "run.py"
APPS = ["hello", "json", "flask", "body", "stream", "sleep"]
SERVERS = ["wharf", "gunicorn"]
# wharf with tracing on runs the hello app only, exporting to the harness's OTLP receiver.
TRACED = "wharf-otel"
# Installing gunicorn and Flask into a fresh venv dominates; the measuring itself takes ~30 s.
TIMEOUT = 900
WRK_UNAVAILABLE = 3


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    wharf = shutil.which("wharf", path=str(Path(sys.executable).parent))
    assert wharf, f"the wharf console script is not installed next to {sys.executable}"
    out = tmp_path_factory.mktemp("bench") / "results"
    done = subprocess.run(
        [sys.executable, str(RUN), "--smoke", "--only", ",".join([*SERVERS, TRACED]), "--wharf", wharf, "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )
    if done.returncode == WRK_UNAVAILABLE:
        pytest.skip(f"bench smoke not run: {done.stderr.strip()}")
    return done, out


def test_smoke_run_exits_zero(smoke_run):
    done, _ = smoke_run
    assert done.returncode == 0, f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"


def test_every_server_served_every_app(smoke_run):
    _, out = smoke_run
    with open(out / "results.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    measured = {(r["app"], r["server"]): r for r in rows}
    assert set(measured) == {(a, s) for a in APPS for s in SERVERS} | {("hello", TRACED)}
    for (app, server), row in measured.items():
        assert float(row["rps"]) > 0, f"{server} served no {app} requests: {row}"
        assert int(row["requests"]) > 0
        assert int(row["non2xx"]) == 0, f"{server} answered {app} with non-2xx: {row}"
        assert int(row["conc"]) == 64 and int(row["rep"]) == 1
        assert 0 < int(row["worker_rss_kib"]) <= int(row["rss_kib"])


def test_report_renders_tables_and_targets(smoke_run):
    _, out = smoke_run
    text = (out / "report.md").read_text()
    for app in APPS:
        assert f"#### {app}\n" in text
    assert "| wharf | **" in text and "| gunicorn | **" in text
    assert "#### Issue 7 targets" in text
    # Targets against peers that were not run are reported as such, never as met.
    assert "| hello c=64 ≥ 1.5× granian | – | n/a: no hello c=64 data for granian |" in text
    # The traced wharf ran and the receiver took its spans.
    assert "| wharf-otel | **" in text
    assert "costs ≤ 5% on hello c=64 | " in text and "fewer req/s" in text
    sink_log = (out / "logs" / "otlp_sink.log").read_text()
    exports = int(sink_log.rsplit("otlp sink: ", 1)[1].split()[0])
    assert exports > 0, sink_log


def test_servers_were_pinned(smoke_run):
    _, out = smoke_run
    meta = json.loads((out / "meta.json").read_text())
    assert meta["problems"] == []
    pinned = {(a["app"], a["server"]): a["cpus"] for a in meta["affinity"]}
    assert set(pinned) == {(a, s) for a in APPS for s in SERVERS} | {("hello", TRACED)}
    assert all(cpus == [str(meta["server_cpu"])] for cpus in pinned.values()), pinned
