"""The issue-7 performance targets, evaluated against one run's medians (wharf vs its peers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from results import Cell

SLEEP_THREADS = 64
SLEEP_SECONDS = 0.010
RSS_LIMIT_MIB = 30.0
TRACING_COST = 0.05

Cells = dict[tuple[str, str, int], Cell]


@dataclass
class Verdict:
    target: str
    measured: str
    status: str  # "met", "NOT met" or "n/a: why"


def _ratio(cells: Cells, app: str, conc: int, peer: str, at_least: float) -> tuple[str, str]:
    ours, theirs = cells.get((app, "wharf", conc)), cells.get((app, peer, conc))
    if not ours or not theirs:
        return "–", f"n/a: no {app} c={conc} data for {'wharf' if not ours else peer}"
    if theirs.rps <= 0:
        return f"wharf {ours.rps:,.0f} vs {peer} 0 req/s", f"n/a: {peer} served nothing"
    ratio = ours.rps / theirs.rps
    return (f"{ratio:.2f}× ({ours.rps:,.0f} vs {theirs.rps:,.0f} req/s)",
            "met" if ratio >= at_least else "NOT met")


def _p99(cells: Cells, app: str, conc: int, peer: str, at_most: float) -> tuple[str, str]:
    ours, theirs = cells.get((app, "wharf", conc)), cells.get((app, peer, conc))
    if not ours or not theirs:
        return "–", f"n/a: no {app} c={conc} data for {'wharf' if not ours else peer}"
    ratio = ours.p99_ms / theirs.p99_ms if theirs.p99_ms > 0 else float("inf")
    return (f"p99 {ours.p99_ms:.2f} vs {theirs.p99_ms:.2f} ms ({ratio:.2f}×)",
            "met" if ratio <= at_most else "NOT met")


def _no_errors(cells: Cells, app: str, conc: int) -> tuple[str, str]:
    ours = cells.get((app, "wharf", conc))
    if not ours:
        return "–", f"n/a: no {app} c={conc} data for wharf"
    return (f"{ours.errors} errors in {ours.requests:,} requests", "met" if ours.errors == 0 else "NOT met")


def _sleep(cells: Cells, threads: int) -> tuple[str, str]:
    ours = cells.get(("sleep", "wharf", 64))
    if not ours:
        return "–", "n/a: no sleep c=64 data for wharf"
    if threads != SLEEP_THREADS:
        return f"{ours.rps:,.0f} req/s", f"n/a: the run used {threads} threads, the target is for {SLEEP_THREADS}"
    ceiling = SLEEP_THREADS / SLEEP_SECONDS
    share = ours.rps / ceiling
    return f"{ours.rps:,.0f} req/s = {share:.1%} of {ceiling:,.0f}", "met" if share >= 0.95 else "NOT met"


def _tracing(cells: Cells) -> tuple[str, str]:
    plain, traced = cells.get(("hello", "wharf", 64)), cells.get(("hello", "wharf-otel", 64))
    if plain is None or traced is None or plain.rps <= 0:
        return "–", "n/a: needs hello c=64 for both wharf and wharf-otel"
    cost = 1 - traced.rps / plain.rps
    return (f"{cost:.1%} fewer req/s ({traced.rps:,.0f} traced vs {plain.rps:,.0f})",
            "met" if cost <= TRACING_COST else "NOT met")


def _rss(cells: Cells) -> tuple[str, str]:
    runs = [c for (app, server, _), c in cells.items() if app == "hello" and server == "wharf"]
    if not runs:
        return "–", "n/a: no hello data for wharf"
    peak = max(c.max_worker_rss_mib for c in runs)
    if peak == 0:
        return "–", "n/a: this run recorded no per-worker RSS"
    group = max(c.max_rss_mib for c in runs)
    return (f"{peak:.1f} MiB (largest worker after any hello run; with the supervisor {group:.1f} MiB)",
            "met" if peak <= RSS_LIMIT_MIB else "NOT met")


TARGETS: list[tuple[str, Callable[[Cells, int], tuple[str, str]]]] = [
    ("hello c=64 ≥ 1.5× granian", lambda c, _threads: _ratio(c, "hello", 64, "granian", 1.5)),
    ("hello c=64 ≥ 0.9× bjoern", lambda c, _threads: _ratio(c, "hello", 64, "bjoern", 0.9)),
    ("hello c=256 p99 ≤ bjoern's", lambda c, _threads: _p99(c, "hello", 256, "bjoern", 1.0)),
    ("hello c=256 no errors", lambda c, _threads: _no_errors(c, "hello", 256)),
    ("flask c=64 ≥ 1.0× bjoern", lambda c, _threads: _ratio(c, "flask", 64, "bjoern", 1.0)),
    ("flask c=64 ≥ 1.25× granian", lambda c, _threads: _ratio(c, "flask", 64, "granian", 1.25)),
    ("flask c=64 p99 ≤ 0.5× granian's", lambda c, _threads: _p99(c, "flask", 64, "granian", 0.5)),
    ("body (16 KiB POST) c=64 ≥ 1.3× granian", lambda c, _threads: _ratio(c, "body", 64, "granian", 1.3)),
    ("body (16 KiB POST) c=64 ≥ 0.9× bjoern", lambda c, _threads: _ratio(c, "body", 64, "bjoern", 0.9)),
    ("stream (100 × 1 KiB) c=64 ≥ 5× granian", lambda c, _threads: _ratio(c, "stream", 64, "granian", 5.0)),
    ("sleep 10 ms, 64 threads, c=64 ≥ 95% of 6,400 req/s", _sleep),
    (f"wharf RSS per worker after hello ≤ {RSS_LIMIT_MIB:.0f} MiB", lambda c, _threads: _rss(c)),
    (f"tracing on (100% sampled, live receiver) costs ≤ {TRACING_COST:.0%} on hello c=64",
     lambda c, _threads: _tracing(c)),
]


def evaluate(cells: Cells, threads: int) -> list[Verdict]:
    """`threads` is the --threads value of the run (the sleep target is defined for 64)."""
    verdicts = [Verdict(name, *check(cells, threads)) for name, check in TARGETS]
    return verdicts
