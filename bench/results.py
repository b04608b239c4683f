"""The results file (one TSV row per wrk run) and its per-cell medians."""

from __future__ import annotations

import csv
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

COLUMNS = ["app", "server", "conc", "rep", "rps", "p50_ms", "p99_ms", "socket_errors", "socket_errors_detail",
           "non2xx", "requests", "rss_kib", "worker_rss_kib", "server_cpu_pct", "wrk_cpu_pct", "other_on_server_cpu_pct",
           "other_on_client_cpu_pct"]
FILENAME = "results.tsv"


@dataclass
class Row:
    app: str
    server: str
    conc: int
    rep: int
    rps: float
    p50_ms: float
    p99_ms: float
    socket_errors: int
    socket_errors_detail: str
    non2xx: int
    requests: int
    rss_kib: int
    # The largest single worker process (the group minus a master/supervisor)
    worker_rss_kib: int
    server_cpu_pct: float
    wrk_cpu_pct: float
    # CPU time that other processes (compilers, ...) took on the pinned CPUs during the run: noise
    other_on_server_cpu_pct: float
    other_on_client_cpu_pct: float


def append(out_dir: Path, row: Row) -> None:
    path = out_dir / FILENAME
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS, delimiter="\t")
        if new:
            writer.writeheader()
        values = asdict(row)
        for key in ("rps", "p50_ms", "p99_ms", "server_cpu_pct", "wrk_cpu_pct", "other_on_server_cpu_pct",
                    "other_on_client_cpu_pct"):
            values[key] = f"{values[key]:.3f}"
        writer.writerow(values)


def load(out_dir: Path) -> list[Row]:
    path = out_dir / FILENAME
    if not path.exists():
        return []
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f, delimiter="\t"):
            rows.append(Row(
                app=r["app"], server=r["server"], conc=int(r["conc"]), rep=int(r["rep"]), rps=float(r["rps"]),
                p50_ms=float(r["p50_ms"]), p99_ms=float(r["p99_ms"]), socket_errors=int(r["socket_errors"]),
                socket_errors_detail=r["socket_errors_detail"], non2xx=int(r["non2xx"]),
                requests=int(r["requests"]), rss_kib=int(r["rss_kib"]),
                worker_rss_kib=int(r.get("worker_rss_kib") or 0),
                server_cpu_pct=float(r["server_cpu_pct"]), wrk_cpu_pct=float(r["wrk_cpu_pct"]),
                other_on_server_cpu_pct=float(r["other_on_server_cpu_pct"]),
                other_on_client_cpu_pct=float(r["other_on_client_cpu_pct"]),
            ))
    return rows


@dataclass
class Cell:
    """Medians over the reps of one (app, server, connections) combination."""
    rps: float
    p50_ms: float
    p99_ms: float
    rss_mib: float
    max_rss_mib: float
    worker_rss_mib: float
    max_worker_rss_mib: float
    errors: int
    requests: int
    spread: float  # (max - min) / median of rps over the reps
    server_cpu_pct: float
    wrk_cpu_pct: float
    other_on_server_cpu_pct: float
    other_on_client_cpu_pct: float
    reps: int


def cells(rows: list[Row]) -> dict[tuple[str, str, int], Cell]:
    grouped: dict[tuple[str, str, int], list[Row]] = {}
    for row in rows:
        grouped.setdefault((row.app, row.server, row.conc), []).append(row)
    summary = {}
    for key, runs in grouped.items():
        rps = [r.rps for r in runs]
        median = statistics.median(rps)
        summary[key] = Cell(
            rps=median,
            p50_ms=statistics.median(r.p50_ms for r in runs),
            p99_ms=statistics.median(r.p99_ms for r in runs),
            rss_mib=statistics.median(r.rss_kib for r in runs) / 1024,
            max_rss_mib=max(r.rss_kib for r in runs) / 1024,
            worker_rss_mib=statistics.median(r.worker_rss_kib for r in runs) / 1024,
            max_worker_rss_mib=max(r.worker_rss_kib for r in runs) / 1024,
            errors=sum(r.socket_errors + r.non2xx for r in runs),
            requests=sum(r.requests for r in runs),
            spread=(max(rps) - min(rps)) / median if median else 0.0,
            server_cpu_pct=statistics.median(r.server_cpu_pct for r in runs),
            wrk_cpu_pct=statistics.median(r.wrk_cpu_pct for r in runs),
            other_on_server_cpu_pct=statistics.median(r.other_on_server_cpu_pct for r in runs),
            other_on_client_cpu_pct=statistics.median(r.other_on_client_cpu_pct for r in runs),
            reps=len(runs),
        )
    return summary
