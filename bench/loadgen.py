"""Drive one wrk run (pinned to the client CPU, bounded in time) and parse its --latency output."""

from __future__ import annotations

import re
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}
# wrk gives up on a run it cannot finish; this is only a backstop against a wedged wrk.
_GRACE_SECONDS = 30


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    socket_errors: int
    socket_errors_detail: str
    non2xx: int
    requests: int
    wrk_cpu_pct: float


def _ms(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    return float(match.group(1)) * _UNIT_MS[match.group(2)] if match else float("nan")


def parse(text: str) -> dict:
    """The figures of one wrk --latency report (zeros/NaN where wrk printed none)."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    requests = re.search(r"(\d+) requests in", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50_ms": _ms(p50.group(1)) if p50 else float("nan"),
        "p99_ms": _ms(p99.group(1)) if p99 else float("nan"),
        "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
        "socket_errors_detail": "connect {}, read {}, write {}, timeout {}".format(*errors.groups()) if errors else "",
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "requests": int(requests.group(1)) if requests else 0,
    }


def run_wrk(port: int, connections: int, duration: float, client_cpu: int, output: Path,
            script: Path | None = None) -> WrkResult:
    """Run wrk against 127.0.0.1:port, save its report to `output` and return the parsed figures."""
    seconds = max(1, round(duration))
    command = ["taskset", "-c", str(client_cpu), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
               "--latency", "--timeout", "5s"]
    if script is not None:
        command += ["-s", str(script)]
    command.append(f"http://127.0.0.1:{port}/")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    with open(output, "w") as out:
        try:
            subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, timeout=seconds + _GRACE_SECONDS,
                           check=False)
        except subprocess.TimeoutExpired:
            out.write(f"\nwrk did not finish within {seconds + _GRACE_SECONDS}s and was killed\n")
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    figures = parse(output.read_text(errors="replace"))
    return WrkResult(wrk_cpu_pct=100.0 * cpu / elapsed if elapsed > 0 else 0.0, **figures)
