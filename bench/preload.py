"""Memory and worker replacement with and without the zygote, on a `django-admin startproject` site.

Starts each server with 4 workers x 8 threads on 127.0.0.1 (wharf forking from its zygote,
wharf --no-preload, gunicorn --preload, gunicorn), spreads requests over every worker, then
reports the proportional set size (PSS) summed over the server's whole process group, and the
time from `kill -9` of a worker until a new worker process answers (median of --kills).
Every wait is bounded. Figures from a shared machine are noisy: compare ratios within one run.

    python3 bench/preload.py [--python PATH] [--kills 3] [--out FILE]

--python is an interpreter whose environment has wharf, gunicorn and Django (default: this one).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.request import urlopen

WORKERS = 4
THREADS = 8
START_TIMEOUT = 120.0
# The default project plus one view that names the process answering.
PID_VIEW = """
import os
from django.http import HttpResponse
from django.urls import path as _path
urlpatterns.append(_path("pid", lambda request: HttpResponse(str(os.getpid()))))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_site(python: str, root: Path) -> Path:
    root.mkdir()
    subprocess.run([python, "-m", "django", "startproject", "mysite", str(root)], check=True, timeout=120)
    with open(root / "mysite" / "urls.py", "a") as urls:
        urls.write(PID_VIEW)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "mysite.settings"}
    subprocess.run([python, "manage.py", "migrate", "-v", "0"], cwd=root, check=True, timeout=300, env=env)
    return root


def commands(python: str, port: int) -> dict[str, list[str]]:
    bind = f"127.0.0.1:{port}"
    wharf = [python, "-m", "wharf", "--bind", bind, "--workers", str(WORKERS), "--threads", str(THREADS)]
    gunicorn = [python, "-m", "gunicorn", "--bind", bind, "--workers", str(WORKERS), "--threads", str(THREADS)]
    gunicorn += ["--worker-class", "gthread", "--log-level", "warning"]
    return {
        "wharf (fork)": [*wharf, "mysite.wsgi:application"],
        "wharf --no-preload": [*wharf, "--no-preload", "mysite.wsgi:application"],
        "gunicorn --preload": [*gunicorn, "--preload", "mysite.wsgi:application"],
        "gunicorn": [*gunicorn, "mysite.wsgi:application"],
    }


def get(url: str, timeout: float = 30.0) -> str:
    with urlopen(url, timeout=timeout) as resp:
        return resp.read().decode()


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    pids.append(int(entry))
            except ProcessLookupError:
                continue
    return pids


def pss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/smaps_rollup"):
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def answering_pids(url: str, want: int, tries: int = 400) -> set[int]:
    """Pids seen over fresh connections until `want` distinct ones answered (bounded)."""
    seen: set[int] = set()
    for _ in range(tries):
        seen.add(int(get(url + "/pid")))
        get(url + "/admin/login/")
        if len(seen) >= want:
            break
    return seen


def replacement_seconds(url: str, victim: int, known: set[int], deadline_s: float = 60.0) -> float:
    """Kills `victim` and times until a process not in `known` answers."""
    started = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    while time.monotonic() - started < deadline_s:
        try:
            pid = int(get(url + "/pid", timeout=deadline_s))
        except OSError:
            continue
        if pid not in known:
            return time.monotonic() - started
    raise RuntimeError(f"no replacement answered within {deadline_s}s")


def measure(name: str, cmd: list[str], site: Path, port: int, kills: int, logs: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WHARF_", "GUNICORN_"))}
    log = open(logs / f"{name.replace(' ', '_')}.log", "wb")
    proc = subprocess.Popen(cmd, cwd=site, stdout=log, stderr=log, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                get(url + "/pid", timeout=5)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start; see {log.name}") from None
                time.sleep(0.1)
        pids = answering_pids(url, WORKERS)
        # Let workers that started late finish their imports before memory is read.
        time.sleep(2)
        answering_pids(url, WORKERS)
        pss = pss_kib(group_pids(proc.pid))
        times = []
        for _ in range(kills):
            known = answering_pids(url, WORKERS)
            victim = sorted(known)[0]
            times.append(replacement_seconds(url, victim, known | pids))
            pids |= known
        return {"server": name, "pss_mib": round(pss / 1024, 1), "replacement_s": round(statistics.median(times), 4), "all_s": times}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    # Servers run in the project directory: a relative interpreter path would not resolve there.
    args.python = os.path.abspath(args.python)
    with tempfile.TemporaryDirectory(prefix="wharf-preload-bench-") as tmp:
        site = make_site(args.python, Path(tmp) / "project")
        logs = Path(tmp)
        rows = []
        for name, cmd in commands(args.python, 0).items():
            port = free_port()
            cmd = [part.replace("127.0.0.1:0", f"127.0.0.1:{port}") for part in cmd]
            rows.append(measure(name, cmd, site, port, args.kills, logs))
            print(json.dumps(rows[-1]), flush=True)
    base = next(r for r in rows if r["server"] == "gunicorn --preload")
    fresh = next(r for r in rows if r["server"] == "wharf --no-preload")
    print(f"\n| server ({WORKERS} workers x {THREADS} threads) | PSS MiB | vs gunicorn --preload | replacement s (median) | vs wharf --no-preload |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['server']} | {r['pss_mib']} | {r['pss_mib'] / base['pss_mib']:.2f} | {r['replacement_s']} "
            f"| {fresh['replacement_s'] / r['replacement_s']:.1f}x faster |"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
