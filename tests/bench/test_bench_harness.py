"""The harness's pure parts: wrk report parsing, the --conc plan and the target verdicts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import loadgen  # noqa: E402
import run  # noqa: E402
import targets  # noqa: E402
from results import Cell  # noqa: E402

WRK_REPORT = """\
Running 10s test @ http://127.0.0.1:18000/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   812.33us  301.12us  12.01ms   91.20%
    Req/Sec    79.12k     2.01k   83.00k    70.00%
  Latency Distribution
     50%  750.00us
     75%  850.00us
     90%    1.01ms
     99%    1.52s
  787654 requests in 10.00s, 97.40MB read
  Socket errors: connect 0, read 12, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:  78765.40
Transfer/sec:      9.74MB
"""


def test_wrk_report_is_parsed_with_units():
    figures = loadgen.parse(WRK_REPORT)
    assert figures["rps"] == pytest.approx(78765.40)
    assert figures["p50_ms"] == pytest.approx(0.75)
    assert figures["p99_ms"] == pytest.approx(1520.0)
    assert figures["requests"] == 787654
    assert figures["socket_errors"] == 15
    assert figures["socket_errors_detail"] == "connect 0, read 12, write 0, timeout 3"
    assert figures["non2xx"] == 7


def test_an_empty_wrk_report_reads_as_nothing_served():
    figures = loadgen.parse("unable to connect to 127.0.0.1:18000 Connection refused\n")
    assert figures["rps"] == 0.0 and figures["requests"] == 0
    assert figures["p99_ms"] != figures["p99_ms"]  # NaN: no latency printed


def test_connection_plan_defaults_and_per_app_overrides():
    apps = ["hello", "flask", "stream"]
    assert run.connection_plan(run.DEFAULT_CONC, apps) == {"hello": [64, 256], "flask": [64], "stream": [64]}
    assert run.connection_plan(["16,64", "stream=8"], apps) == {
        "hello": [16, 64], "flask": [16, 64], "stream": [8]}
    assert run.connection_plan(["hello=256"], apps) == {"hello": [256]}
    with pytest.raises(ValueError):
        run.connection_plan(["nosuchapp=64"], apps)
    with pytest.raises(ValueError):
        run.connection_plan(["0"], apps)


def _cell(rps: float, p99_ms: float = 5.0, errors: int = 0, rss_mib: float = 20.0) -> Cell:
    return Cell(rps=rps, p50_ms=1.0, p99_ms=p99_ms, rss_mib=rss_mib + 13, max_rss_mib=rss_mib + 13,
                worker_rss_mib=rss_mib, max_worker_rss_mib=rss_mib, errors=errors,
                requests=1000, spread=0.0, server_cpu_pct=100.0, wrk_cpu_pct=50.0,
                other_on_server_cpu_pct=0.0, other_on_client_cpu_pct=0.0, reps=3)


def _verdicts(cells) -> dict[str, str]:
    return {v.target: v.status for v in targets.evaluate(cells, threads=64)}


def test_targets_compare_wharf_with_the_named_peer():
    cells = {
        ("hello", "wharf", 64): _cell(100_000, rss_mib=31.0),
        ("hello", "granian", 64): _cell(60_000),
        ("hello", "bjoern", 64): _cell(120_000),
        ("hello", "wharf", 256): _cell(90_000, p99_ms=4.0, errors=2),
        ("hello", "bjoern", 256): _cell(110_000, p99_ms=5.0),
        ("sleep", "wharf", 64): _cell(6_100),
    }
    verdicts = _verdicts(cells)
    assert verdicts["hello c=64 ≥ 1.5× granian"] == "met"  # 1.67×
    assert verdicts["hello c=64 ≥ 0.9× bjoern"] == "NOT met"  # 0.83×
    assert verdicts["hello c=256 p99 ≤ bjoern's"] == "met"
    assert verdicts["hello c=256 no errors"] == "NOT met"
    assert verdicts["sleep 10 ms, 64 threads, c=64 ≥ 95% of 6,400 req/s"] == "met"  # 95.3 %
    assert verdicts["wharf RSS per worker after hello ≤ 30 MiB"] == "NOT met"
    assert verdicts["flask c=64 ≥ 1.25× granian"].startswith("n/a")


def test_tracing_cost_compares_wharf_with_and_without_tracing():
    name = "tracing on (100% sampled, live receiver) costs ≤ 5% on hello c=64"
    assert _verdicts({("hello", "wharf", 64): _cell(100_000)})[name].startswith("n/a")
    cheap = {("hello", "wharf", 64): _cell(100_000), ("hello", "wharf-otel", 64): _cell(96_000)}
    assert _verdicts(cheap)[name] == "met"
    costly = {("hello", "wharf", 64): _cell(100_000), ("hello", "wharf-otel", 64): _cell(94_000)}
    assert _verdicts(costly)[name] == "NOT met"


def test_sleep_target_needs_the_64_thread_configuration():
    cells = {("sleep", "wharf", 64): _cell(6_300)}
    verdicts = {v.target: v.status for v in targets.evaluate(cells, threads=128)}
    assert verdicts["sleep 10 ms, 64 threads, c=64 ≥ 95% of 6,400 req/s"].startswith("n/a")
