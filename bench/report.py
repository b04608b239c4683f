#!/usr/bin/env python3
"""Render a results directory as markdown: per-app tables, wharf/peer ratios, targets, anomalies.

Usage: python3 bench/report.py RESULTS_DIR   (prints the report; run.py also writes it to report.md)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import results
import targets
from servers import SERVERS
from workloads import WORKLOADS

NOISY = 0.10
OTHER_LOAD = 10.0  # % of a pinned CPU used by other processes before a cell is flagged


def _ms(value: float) -> str:
    if value != value:  # NaN: wrk printed no latency
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.0f}"


def _order(names: set[str], preferred: list[str]) -> list[str]:
    return [n for n in preferred if n in names] + sorted(names - set(preferred))


def render(out_dir: Path) -> str:
    rows = results.load(out_dir)
    meta_path = out_dir / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    cells = results.cells(rows)
    apps = _order({k[0] for k in cells}, list(WORKLOADS))
    servers = _order({k[1] for k in cells}, list(SERVERS))
    concs = sorted({k[2] for k in cells})
    out: list[str] = []

    if meta:
        out.append(f"Run {meta.get('started', '?')} · {meta.get('mode', '')} · duration {meta.get('duration')} s · "
                   f"reps {meta.get('reps')} · warm-up {meta.get('warmup')} s · threads {meta.get('threads')} · "
                   f"server on CPU {meta.get('server_cpu')}, wrk on CPU {meta.get('client_cpu')} · "
                   f"{meta.get('wrk', 'wrk')} · {meta.get('nproc', '?')} CPUs\n")
        out.append(f"Load average (1/5/15 min) at start {meta.get('loadavg_at_start', '?')}, "
                   f"at end {meta.get('loadavg_at_end', '?')}\n")
        versions = meta.get("versions", {})
        if versions:
            out.append("Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
                       + f" · repo at {meta.get('repo_revision', '?')} when run (wharf: {meta.get('wharf') or '-'})")
        out.append("")
    out.append("Cells: req/s · p50 ms · p99 ms · RSS MiB after the run (server process group / largest worker) · CPU % server/wrk · "
               "CPU % taken by other processes on the server/wrk CPU; median over the reps. "
               "`E` = socket errors or non-2xx in some rep, `~` = req/s spread over reps "
               f"> {NOISY:.0%}.\n")
    for app in apps:
        app_concs = sorted({c for (a, _, c) in cells if a == app})
        out.append(f"#### {app}\n")
        out.append("| server | " + " | ".join(f"c={c}" for c in app_concs) + " |")
        out.append("|---|" + "---|" * len(app_concs))
        for server in servers:
            if not any((app, server, c) in cells for c in app_concs):
                continue
            columns = []
            for c in app_concs:
                cell = cells.get((app, server, c))
                if cell is None:
                    columns.append("–")
                    continue
                flags = ("E" if cell.errors else "") + ("~" if cell.spread > NOISY else "")
                columns.append(f"**{cell.rps:,.0f}**{' ' + flags if flags else ''} · {_ms(cell.p50_ms)} · "
                               f"{_ms(cell.p99_ms)} · {cell.rss_mib:.0f}/{cell.worker_rss_mib:.0f} · "
                               f"{cell.server_cpu_pct:.0f}/{cell.wrk_cpu_pct:.0f} · "
                               f"{cell.other_on_server_cpu_pct:.0f}/{cell.other_on_client_cpu_pct:.0f}")
            out.append(f"| {server} | " + " | ".join(columns) + " |")
        out.append("")
        for server in servers:
            note = SERVERS[server].notes.get(app) if server in SERVERS else None
            if note and any((app, server, c) in cells for c in concs):
                out.append(f"Note: {note}.\n")

    peers = [s for s in servers if not s.startswith("wharf")]
    if "wharf" in servers and peers:
        out.append("#### wharf / peer (req/s ratio of medians; > 1 means wharf is faster)\n")
        out.append("| app | c | " + " | ".join(peers) + " |")
        out.append("|---|---|" + "---|" * len(peers))
        for app in apps:
            for c in concs:
                ours = cells.get((app, "wharf", c))
                if ours is None:
                    continue
                ratios = []
                for peer in peers:
                    theirs = cells.get((app, peer, c))
                    ratios.append(f"{ours.rps / theirs.rps:.2f}" if theirs and theirs.rps > 0 else "–")
                out.append(f"| {app} | {c} | " + " | ".join(ratios) + " |")
        out.append("")

    out.append("#### Issue 7 targets\n")
    out.append("| target | measured | status |")
    out.append("|---|---|---|")
    for verdict in targets.evaluate(cells, int(meta.get("threads", targets.SLEEP_THREADS))):
        out.append(f"| {verdict.target} | {verdict.measured} | {verdict.status} |")
    out.append("")

    out.append("#### Anomalies\n")
    anomalies = list(meta.get("problems", []))
    for row in rows:
        if row.socket_errors or row.non2xx:
            anomalies.append(f"errors: {row.app} / {row.server} c={row.conc} rep {row.rep}: "
                             f"{row.socket_errors} socket errors ({row.socket_errors_detail or '-'}), "
                             f"{row.non2xx} non-2xx, of {row.requests} requests")
    for app in apps:
        for c in concs:
            noisy = [(server, cells[(app, server, c)]) for server in servers
                     if (app, server, c) in cells and cells[(app, server, c)].spread > NOISY]
            if noisy:
                anomalies.append(f"noisy, {app} c={c} (req/s of each rep): " + "; ".join(
                    f"{server} " + " / ".join(f"{r.rps:,.0f}" for r in rows
                                              if (r.app, r.server, r.conc) == (app, server, c))
                    for server, _ in noisy))
            shared = [(server, cells[(app, server, c)]) for server in servers
                      if (app, server, c) in cells and max(cells[(app, server, c)].other_on_server_cpu_pct,
                                                           cells[(app, server, c)].other_on_client_cpu_pct) > OTHER_LOAD]
            if shared:
                anomalies.append(f"shared CPU, {app} c={c} (% of the server CPU / wrk CPU used by other "
                                 "processes, median over reps): " + "; ".join(
                                     f"{server} {cell.other_on_server_cpu_pct:.0f}/{cell.other_on_client_cpu_pct:.0f}"
                                     for server, cell in shared))
    for item in meta.get("affinity", []):
        if set(item["cpus"]) != {str(meta.get("server_cpu"))}:
            anomalies.append(f"pinning: {item['app']} / {item['server']} threads allowed on {item['cpus']}")
    out.extend(f"- {a}" for a in anomalies or ["none"])
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(render(Path(sys.argv[1])), end="")
