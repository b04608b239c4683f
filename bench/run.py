#!/usr/bin/env python3
"""Benchmark wharf against other WSGI servers, side by side under identical pinning and load.

Installs what it needs (wrk from Debian, the peers from PyPI into a venv, wharf from this repo),
then for each app starts every server on its own loopback port (server on one CPU, wrk on another),
measures them interleaved (rep → connections → server) and writes DIR/results.tsv, DIR/report.md,
DIR/meta.json, DIR/raw/ (wrk reports) and DIR/logs/ (server output). See bench/README.md.

Exit status: 0 all selected servers answered correctly; 1 a server failed to start, answered wrongly
or died (the report says which); 2 bad arguments; 3 wrk (or taskset) is unavailable.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import environment
import loadgen
import report
import results
from processes import ServerProcess, cpu_busy_seconds
from servers import PEERS, SERVERS
from workloads import APPS_DIR, HERE, WORKLOADS

DEFAULT_CONC = ["64", "hello=64,256"]
STARTUP_TIMEOUT = 30.0


def _names(value: str) -> list[str]:
    return [v for v in value.replace(",", " ").split() if v]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(SERVERS),
                        help=f"servers to run, comma-separated (default: all of {','.join(SERVERS)})")
    parser.add_argument("--apps", default=",".join(WORKLOADS),
                        help=f"apps to run, comma-separated (default: all of {','.join(WORKLOADS)})")
    parser.add_argument("--conc", action="append", metavar="[APP=]N,N",
                        help="wrk connection counts; APP=... sets them for one app only. Repeatable. "
                             f"Default: {' '.join(DEFAULT_CONC)} (smoke: 64)")
    parser.add_argument("--duration", type=float, help="seconds per wrk run (default 10, smoke 1)")
    parser.add_argument("--reps", type=int, help="repetitions; medians are reported (default 3, smoke 1)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per server and app at c=64 "
                                                     "(default 2, smoke 0)")
    parser.add_argument("--threads", type=int, default=64,
                        help="Python threads per server where it has a thread pool (default 64)")
    parser.add_argument("--smoke", action="store_true",
                        help="check the harness works: 1 s per server, 1 rep, no warm-up, c=64")
    parser.add_argument("--out", type=Path, help="results directory (default bench/results/<timestamp>)")
    parser.add_argument("--venv", type=Path, default=Path("/tmp/wharf-bench-venv"),
                        help="venv for the peers (and wharf unless --wharf names an executable)")
    parser.add_argument("--python", default=sys.executable, help="interpreter that creates the venv")
    parser.add_argument("--wharf", default="build",
                        help="'build' (release build of this repo, the default), a wheel path, "
                             "or an existing wharf executable")
    parser.add_argument("--skip-install", action="store_true",
                        help="use the venv as it is: install no peers (wrk must exist)")
    cpus = sorted(os.sched_getaffinity(0))
    parser.add_argument("--server-cpu", type=int, default=cpus[0])
    parser.add_argument("--client-cpu", type=int, default=cpus[1] if len(cpus) > 1 else cpus[0])
    args = parser.parse_args(argv)
    args.only = _names(args.only)
    args.apps = _names(args.apps)
    unknown = [s for s in args.only if s not in SERVERS] + [a for a in args.apps if a not in WORKLOADS]
    if unknown:
        parser.error(f"unknown server or app: {', '.join(unknown)}")
    if args.duration is None:
        args.duration = 1.0 if args.smoke else 10.0
    if args.reps is None:
        args.reps = 1 if args.smoke else 3
    if args.warmup is None:
        args.warmup = 0.0 if args.smoke else 2.0
    try:
        args.plan = connection_plan(args.conc or (["64"] if args.smoke else DEFAULT_CONC), args.apps)
    except ValueError as exc:
        parser.error(f"--conc: {exc}")
    return args


def connection_plan(specs: list[str], apps: list[str]) -> dict[str, list[int]]:
    """{app: connection counts} from specs like "64" (every app) and "hello=64,256" (one app)."""
    default: list[int] = []
    per_app: dict[str, list[int]] = {}
    for spec in specs:
        app, sep, counts = spec.rpartition("=")
        values = sorted({int(v) for v in _names(counts)})
        if not values or min(values) < 1:
            raise ValueError(f"no positive connection counts in {spec!r}")
        if sep:
            if app not in WORKLOADS:
                raise ValueError(f"unknown app {app!r}")
            per_app[app] = values
        else:
            default = values
    return {app: per_app.get(app, default) for app in apps if per_app.get(app, default)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env() -> dict[str, str]:
    """The caller's environment without settings that would make servers differ from their defaults."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("WHARF_", "OTEL_", "GRANIAN_", "GUNICORN_"))}


class Run:
    def __init__(self, args: argparse.Namespace, out: Path, bin_dir: Path, wharf: str, servers: list[str]):
        self.args = args
        self.out = out
        self.bin_dir = bin_dir
        self.wharf = wharf
        self.servers = servers
        self.problems: list[str] = []  # failures: the exit status is 1 if there are any
        self.notes: list[str] = []  # peers left out because they could not be installed
        self.affinity: list[dict] = []
        self.otlp_sink: tuple[ServerProcess, int] | None = None

    def otlp_port(self) -> int:
        """The port of the OTLP receiver, started on first use on the wrk CPU (off the server's)."""
        if self.otlp_sink is None:
            port = free_port()
            sink = ServerProcess(f"{shlex.quote(str(self.bin_dir / 'python'))} "
                                 f"{shlex.quote(str(HERE / 'runners' / 'otlp_sink.py'))} {port}",
                                 APPS_DIR, self.args.client_cpu, self.out / "logs" / "otlp_sink.log",
                                 env=server_env())
            if not sink.wait_listening(port, STARTUP_TIMEOUT):
                sink.stop()
                raise RuntimeError(f"the OTLP receiver did not start: {sink.log_tail(600)!r}")
            self.otlp_sink = (sink, port)
        return self.otlp_sink[1]

    def stop_otlp_sink(self) -> None:
        if self.otlp_sink is not None:
            self.otlp_sink[0].stop()
            self.otlp_sink = None

    def problem(self, message: str) -> None:
        print(f"PROBLEM: {message}", flush=True)
        self.problems.append(message)

    def start(self, name: str, app: str) -> tuple[ServerProcess, int] | None:
        workload = WORKLOADS[app]
        port = free_port()
        quote = shlex.quote
        command = SERVERS[name].command_for(app).format(
            port=port, app=workload.spec, apps=quote(str(APPS_DIR)), bin=quote(str(self.bin_dir)),
            wharf=quote(self.wharf), threads=self.args.threads, runners=quote(str(HERE / "runners")))
        (self.out / "logs" / f"{app}.{name}.cmd").write_text(command + "\n")
        env = server_env()
        for key, value in SERVERS[name].env.items():
            env[key] = value.format(otlp_port=self.otlp_port()) if "{otlp_port}" in value else value
        server = ServerProcess(command, APPS_DIR, self.args.server_cpu, self.out / "logs" / f"{app}.{name}.log",
                               env=env)
        if not server.wait_listening(port, STARTUP_TIMEOUT):
            server.stop()
            self.problem(f"{name} did not start for {app} within {STARTUP_TIMEOUT:.0f}s "
                         f"(exit code {server.proc.returncode}): {server.log_tail(600)!r}")
            return None
        wrong = workload.check(port)
        if wrong:
            tail = server.log_tail(600)
            server.stop()
            self.problem(f"{name} answered {app} wrongly: {wrong}; server log: {tail!r}")
            return None
        return server, port

    def measure_app(self, app: str) -> None:
        workload = WORKLOADS[app]
        running: dict[str, tuple[ServerProcess, int]] = {}
        try:
            for name in self.servers:
                if SERVERS[name].apps is not None and app not in SERVERS[name].apps:
                    continue
                started = self.start(name, app)
                if started:
                    running[name] = started
                    print(f"[{app}] {name} listening on port {started[1]}", flush=True)
            for name, (server, port) in running.items():
                if self.args.warmup > 0:
                    loadgen.run_wrk(port, 64, self.args.warmup, self.args.client_cpu,
                                    self.out / "raw" / f"{app}.{name}.warmup.txt", workload.wrk_script)
                # After the warm-up, so that threads started lazily under load are included.
                self.affinity.append({"app": app, "server": name, "cpus": sorted(server.cpu_affinity())})
            for rep in range(1, self.args.reps + 1):
                for conc in self.args.plan[app]:
                    for name, (server, port) in list(running.items()):
                        self.measure(app, name, server, port, conc, rep)
        finally:
            for server, _ in running.values():
                server.stop()

    def measure(self, app: str, name: str, server: ServerProcess, port: int, conc: int, rep: int) -> None:
        server_cpu, client_cpu = self.args.server_cpu, self.args.client_cpu
        busy_before = cpu_busy_seconds(server_cpu), cpu_busy_seconds(client_cpu)
        cpu_before, started = server.cpu_seconds(), time.monotonic()
        wrk = loadgen.run_wrk(port, conc, self.args.duration, client_cpu,
                              self.out / "raw" / f"{app}.{name}.c{conc}.r{rep}.txt", WORKLOADS[app].wrk_script)
        elapsed = max(time.monotonic() - started, 1e-9)
        server_pct = 100.0 * (server.cpu_seconds() - cpu_before) / elapsed
        busy_pct = [100.0 * (cpu_busy_seconds(cpu) - before) / elapsed
                     for cpu, before in zip((server_cpu, client_cpu), busy_before)]
        if server_cpu == client_cpu:
            other = max(0.0, busy_pct[0] - server_pct - wrk.wrk_cpu_pct)
            other_on_server, other_on_client = other, other
        else:
            other_on_server = max(0.0, busy_pct[0] - server_pct)
            other_on_client = max(0.0, busy_pct[1] - wrk.wrk_cpu_pct)
        row = results.Row(app=app, server=name, conc=conc, rep=rep, rps=wrk.rps, p50_ms=wrk.p50_ms,
                          p99_ms=wrk.p99_ms, socket_errors=wrk.socket_errors,
                          socket_errors_detail=wrk.socket_errors_detail, non2xx=wrk.non2xx,
                          requests=wrk.requests, rss_kib=server.rss_kib(),
                          worker_rss_kib=server.worker_rss_kib(), server_cpu_pct=server_pct,
                          wrk_cpu_pct=wrk.wrk_cpu_pct, other_on_server_cpu_pct=other_on_server,
                          other_on_client_cpu_pct=other_on_client)
        results.append(self.out, row)
        errors = f" errors={wrk.socket_errors}+{wrk.non2xx}non2xx" if wrk.socket_errors or wrk.non2xx else ""
        print(f"[{app}] rep={rep} c={conc} {name}: {wrk.rps:,.0f} req/s p50={wrk.p50_ms:.2f}ms "
              f"p99={wrk.p99_ms:.2f}ms rss={row.rss_kib / 1024:.1f}MiB (worker {row.worker_rss_kib / 1024:.1f}) cpu={server_pct:.0f}%/"
              f"{wrk.wrk_cpu_pct:.0f}% others={other_on_server:.0f}%/{other_on_client:.0f}%{errors}", flush=True)
        if not server.alive():
            self.problem(f"{name} died during {app} c={conc} rep {rep} (exit code {server.proc.returncode}): "
                         f"{server.log_tail(600)!r}")
        elif wrk.rps <= 0:
            self.problem(f"{name} served nothing in {app} c={conc} rep {rep}; wrk said: "
                         f"{(self.out / 'raw' / f'{app}.{name}.c{conc}.r{rep}.txt').read_text()[-600:]!r}")


def _source_revision() -> str:
    """The repo commit wharf was built from, marked dirty when the working tree had changes."""
    try:
        done = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=HERE.parent, capture_output=True,
                              text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() or "unknown"


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    started = datetime.datetime.now().astimezone()
    out = (args.out or HERE / "results" / started.strftime("%Y%m%d-%H%M%S")).resolve()
    (out / "raw").mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    try:
        wrk_version = environment.ensure_wrk()
    except environment.WrkUnavailable as exc:
        print(f"wrk unavailable: {exc}", file=sys.stderr)
        return 3
    try:
        interpreter = environment.ensure_venv(args.venv, args.python)
        dropped = {} if args.skip_install else environment.install_peers(
            interpreter, [s for s in args.only if s in PEERS])
        wharf = environment.install_wharf(interpreter, args.wharf, Path("/tmp/wharf-bench-dist")) \
            if any(s.startswith("wharf") for s in args.only) else ""
    except environment.SetupError as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        return 1
    servers = [s for s in args.only if s not in dropped]
    run = Run(args, out, interpreter.parent, wharf, servers)
    run.notes = [f"{name} not run: {why}" for name, why in dropped.items()]
    meta = {
        "started": started.isoformat(timespec="seconds"), "mode": "smoke" if args.smoke else "full",
        "duration": args.duration, "reps": args.reps, "warmup": args.warmup, "threads": args.threads,
        "server_cpu": args.server_cpu, "client_cpu": args.client_cpu, "nproc": os.cpu_count(),
        "wrk": wrk_version, "servers": servers, "plan": args.plan, "wharf": wharf or None, "repo_revision": _source_revision(),
        "versions": environment.versions(interpreter), "loadavg_at_start": _loadavg(),
    }
    print(f"results: {out}", flush=True)
    try:
        for app in args.plan:
            run.measure_app(app)
    except KeyboardInterrupt:
        run.problem("interrupted")
    except RuntimeError as exc:
        run.problem(str(exc))
    finally:
        run.stop_otlp_sink()
        meta.update(finished=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                    loadavg_at_end=_loadavg(),
                    problems=run.notes + run.problems, affinity=run.affinity)
        (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        text = report.render(out)
        (out / "report.md").write_text(text)
        print("\n" + text, flush=True)
    return 1 if run.problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
