"""Closed-loop autoscaling bench: real wharf processes as pods, one bursty load trace, three autoscalers.

Each "pod" is a wharf process on its own 127.0.0.1 port; the load generator's clients pick a ready pod
round-robin per request (one connection per request, as kube-proxy balances connections), so a pod
takes load as soon as it is ready and none once it is stopped. A new pod counts as ready when its
`/readyz` answers 200 and `--startup-delay` has passed since it was started (scheduling, container
start and the readiness probe period of a real pod).

Autoscalers, played one after the other on the same trace:

- `concurrency`: the operator's own scrape and decision (`wharf-operator autoscale-sim`), reading
  each ready pod's admin `/metrics` once a second. Not a re-implementation.
- `kpa-inferred`: the same decision code fed with concurrency inferred from request counts, as a
  proxy-based autoscaler (Knative's KPA) must: per pod, requests completed in the last second times
  their mean latency (Little's law). Requests still queued or refused are invisible to it.
- `cpu-hpa`: a model of the HorizontalPodAutoscaler with its defaults: a sync every 15 s on the CPU
  the pods' processes used since the last sync, 50 % of `--cpu-request` as the target, 10 %
  tolerance, scale-up at most max(+4 pods, x2) per sync, 300 s scale-down stabilisation.

Per run: seconds from each burst to enough capacity (ready threads >= clients), and to the decision
that asked for it (the autoscaler's own share; the rest is pod start-up); requests refused
(503 from a full wharf queue, no ready pod, or a failed connection) or that waited over 100 ms for
a Python thread (each pod's own `wharf_request_queue_seconds`, read as it is stopped); p99 latency
as the clients saw it (it includes the load generator's own lag on a busy machine); pod-seconds
(started to stopped, start-up included).
Exit status: 0 when every model ran, 1 when one failed, 2 for bad arguments, 3 when the operator
binary is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from processes import group_cpu_seconds

REPO = Path(__file__).resolve().parents[1]
APPS = Path(__file__).resolve().parent / "apps"
REQUEST_TIMEOUT = 5.0
# After a refusal (no ready pod, or wharf's queue full) a client waits this long, as a real client's
# retry would, so a refused burst does not spin the load generator.
RETRY_PAUSE = 0.05
MODELS = ("concurrency", "kpa-inferred", "cpu-hpa")


@dataclass(frozen=True)
class Phase:
    start: float
    clients: int
    ramp: float = 0.0  # seconds over which clients move from the previous phase's count


def clients_at(trace: list[Phase], t: float) -> int:
    current = trace[0].clients
    for i, phase in enumerate(trace):
        if t < phase.start:
            break
        previous = trace[i - 1].clients if i else phase.clients
        if phase.ramp > 0 and t < phase.start + phase.ramp:
            current = round(previous + (phase.clients - previous) * (t - phase.start) / phase.ramp)
        else:
            current = phase.clients
    return current


def bursts(trace: list[Phase]) -> list[Phase]:
    return [p for i, p in enumerate(trace) if i and p.clients > trace[i - 1].clients]


def full_trace(low: int, high: int) -> list[Phase]:
    """Two bursts with a lull between them; 55 s."""
    return [Phase(0, low), Phase(10, high, 1.0), Phase(25, low), Phase(40, high, 1.0), Phase(48, low), Phase(55, 0)]


def long_trace(low: int, high: int) -> list[Phase]:
    """Three 15 s bursts 90 s apart; 330 s. Long enough for a 60 s stable window to act between
    bursts, and for the HPA's 300 s stabilisation to show what it costs."""
    phases = [Phase(0, low)]
    for start in (15, 120, 225):
        phases += [Phase(start, high, 1.0), Phase(start + 15, low)]
    return [*phases, Phase(330, 0)]


def smoke_trace(low: int, high: int) -> list[Phase]:
    return [Phase(0, low), Phase(1, high, 0.5), Phase(5, low), Phase(7, 0)]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def http_get(port: int, path: str, timeout: float) -> tuple[int, bytes]:
    """One GET over a fresh connection; (status, body). Raises OSError/TimeoutError on failure."""
    async def go():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
            data = await reader.read(-1)
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        parts = head.split(b" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise OSError(f"malformed response from port {port}: {head[:80]!r}")
        return int(parts[1]), body

    async with asyncio.timeout(timeout):
        return await go()


async def keepalive_get(connections: dict, port: int) -> int:
    """GET / on the client's connection to `port` (opened on first use); the status code."""
    if port not in connections:
        connections[port] = await asyncio.open_connection("127.0.0.1", port)
    reader, writer = connections[port]
    writer.write(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
    head = (await reader.readuntil(b"\r\n\r\n")).lower()
    length = 0
    for line in head.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    if b"connection: close" in head:
        connections.pop(port)[1].close()
    return int(head.split(b" ", 2)[1])


@dataclass
class Pod:
    port: int
    admin: int
    proc: subprocess.Popen
    started: float
    ready_at: float | None = None
    stopped: float | None = None
    completions: list[tuple[float, float]] = field(default_factory=list)  # (end, latency) for kpa-inferred
    cpu_mark: float = 0.0
    queued_over_100ms: int | None = None  # from the pod's own /metrics, read as it is stopped


async def queued_over_100ms(admin: int) -> int | None:
    """Requests that waited over 100 ms for a Python thread, from wharf's queue-time histogram."""
    try:
        status, body = await http_get(admin, "/metrics", 2.0)
    except (OSError, asyncio.TimeoutError):
        return None
    count = within = None
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("wharf_request_queue_seconds_count "):
            count = float(line.split()[1])
        elif line.startswith('wharf_request_queue_seconds_bucket{le="0.1"} '):
            within = float(line.split()[1])
    return int(count - within) if status == 200 and count is not None and within is not None else None


# Every pod process group started, so an interrupted run leaves none behind.
STARTED: list[subprocess.Popen] = []


def kill_leftovers() -> None:
    for proc in STARTED:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


class Cluster:
    """The pods of one run, their start-up and stopping, and the round-robin over the ready ones."""

    def __init__(self, wharf: str, threads: int, queue: int, startup_delay: float, log_dir: Path, clock):
        self.wharf, self.threads, self.queue = wharf, threads, queue
        self.startup_delay, self.log_dir, self.clock = startup_delay, log_dir, clock
        self.pods: list[Pod] = []
        self._next = 0

    def live(self) -> list[Pod]:
        return [p for p in self.pods if p.stopped is None]

    def live_ports(self) -> set[int]:
        return {p.port for p in self.live()}

    def ready(self) -> list[Pod]:
        return [p for p in self.live() if p.ready_at is not None]

    def pick(self) -> Pod | None:
        ready = self.ready()
        if not ready:
            return None
        self._next = (self._next + 1) % len(ready)
        return ready[self._next]

    def start_pod(self) -> None:
        port, admin = free_port(), free_port()
        with open(self.log_dir / f"pod-{port}.log", "wb") as log:
            proc = subprocess.Popen(
                [self.wharf, "io_app:app", "--bind", f"127.0.0.1:{port}", "--admin-bind", f"127.0.0.1:{admin}",
                 "--workers", "1", "--threads", str(self.threads), "--queue-size", str(self.queue)],
                cwd=APPS, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        STARTED.append(proc)
        self.pods.append(Pod(port, admin, proc, self.clock()))

    async def stop_pod(self, pod: Pod) -> None:
        # Out of the balancer first, then SIGTERM: wharf drains what it has.
        pod.stopped = self.clock()
        if pod.ready_at is not None:
            pod.queued_over_100ms = await queued_over_100ms(pod.admin)
        if pod.proc.poll() is None:
            # To the supervisor only, as the kubelet signals a container's PID 1: signalling the
            # whole group would reach the workers twice (directly and from the supervisor), and
            # wharf takes a second signal as "stop now", dropping the requests in flight.
            os.kill(pod.proc.pid, signal.SIGTERM)

    async def scale_to(self, desired: int) -> None:
        live = self.live()
        for _ in range(desired - len(live)):
            self.start_pod()
        # Starting pods go first (nothing to drain), then the newest ready ones.
        surplus = sorted(live, key=lambda p: (p.ready_at is not None, -p.started))[: max(0, len(live) - desired)]
        for pod in surplus:
            await self.stop_pod(pod)

    async def watch_readiness(self) -> None:
        while True:
            for pod in self.live():
                if pod.ready_at is not None or self.clock() - pod.started < self.startup_delay:
                    continue
                if pod.proc.poll() is not None:
                    raise RuntimeError(f"pod on port {pod.port} exited with {pod.proc.returncode}; "
                                       f"see {self.log_dir}/pod-{pod.port}.log")
                try:
                    status, _ = await http_get(pod.admin, "/readyz", 0.5)
                except (OSError, asyncio.TimeoutError):
                    continue
                if status == 200:
                    pod.ready_at = self.clock()
            await asyncio.sleep(0.05)

    async def shutdown(self, end: float) -> None:
        for pod in self.live():
            await self.stop_pod(pod)
            pod.stopped = end
        for pod in self.pods:
            try:
                pod.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(pod.proc.pid, signal.SIGKILL)
                pod.proc.wait(timeout=5)

    def pod_seconds(self, end: float) -> float:
        return sum((p.stopped if p.stopped is not None else end) - p.started for p in self.pods)


class LoadGen:
    """Closed-loop clients following the trace; one record per request: (start, latency, status)."""

    def __init__(self, cluster: Cluster, trace: list[Phase], clock):
        self.cluster, self.trace, self.clock = cluster, trace, clock
        self.records: list[tuple[float, float, int]] = []
        self.clients: list[tuple[asyncio.Task, list[bool]]] = []

    async def client(self, stop: list[bool]) -> None:
        # One keep-alive connection per pod, the pod picked per request: balancing per request
        # without paying a connect each time (the load generator is the scarce CPU here).
        connections: dict[int, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
        try:
            # A flag as well as cancellation: a cancel that lands as a request completes can be lost.
            while not stop[0]:
                await self.one_request(connections)
        finally:
            for _, writer in connections.values():
                writer.close()

    async def one_request(self, connections: dict) -> None:
        for port in [port for port in connections if port not in self.cluster.live_ports()]:
            connections.pop(port)[1].close()
        pod = self.cluster.pick()
        started = self.clock()
        if pod is None:
            self.records.append((started, 0.0, 503))
            await asyncio.sleep(RETRY_PAUSE)
            return
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                status = await keepalive_get(connections, pod.port)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError):
            if pod.port in connections:
                connections.pop(pod.port)[1].close()
            status = 599
        latency = self.clock() - started
        self.records.append((started, latency, status))
        if status == 200:
            pod.completions.append((started + latency, latency))
        else:
            await asyncio.sleep(RETRY_PAUSE)

    async def run(self, duration: float) -> None:
        try:
            while (now := self.clock()) < duration:
                want = clients_at(self.trace, now)
                while len(self.clients) < want:
                    stop = [False]
                    self.clients.append((asyncio.create_task(self.client(stop)), stop))
                while len(self.clients) > want:
                    self.stop(*self.clients.pop())
                await asyncio.sleep(0.05)
        finally:
            for client in self.clients:
                self.stop(*client)
            await asyncio.gather(*(task for task, _ in self.clients), return_exceptions=True)

    @staticmethod
    def stop(task: asyncio.Task, flag: list[bool]) -> None:
        flag[0] = True
        task.cancel()


class OperatorSim:
    """`wharf-operator autoscale-sim`: the operator's scrape and decision over stdin/stdout."""

    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc

    @classmethod
    async def start(cls, operator: str, args: list[str]) -> OperatorSim:
        proc = await asyncio.create_subprocess_exec(
            operator, "autoscale-sim", *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        return cls(proc)

    async def tick(self, tick: dict) -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write((json.dumps(tick) + "\n").encode())
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), 10)
        if not line:
            raise RuntimeError("autoscale-sim exited")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"autoscale-sim: {answer['error']}")
        return answer

    async def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        await asyncio.wait_for(self.proc.wait(), 10)


async def concurrency_loop(cluster: Cluster, sim: OperatorSim, duration: float, decisions: list) -> None:
    while (now := cluster.clock()) < duration:
        ready = cluster.ready()
        answer = await sim.tick({"now": now, "current": len(cluster.live()), "ready": len(ready),
                                 "admin": [f"127.0.0.1:{p.admin}" for p in ready]})
        decisions.append((now, answer["desired"], answer["mode"], answer["reason"], answer["load"]))
        await cluster.scale_to(answer["desired"])
        await asyncio.sleep(max(0.0, now + 1.0 - cluster.clock()))


async def kpa_inferred_loop(cluster: Cluster, sim: OperatorSim, duration: float, decisions: list) -> None:
    while (now := cluster.clock()) < duration:
        ready = cluster.ready()
        samples = []
        for pod in ready:
            recent = [lat for end, lat in pod.completions if now - 1.0 <= end < now]
            # Little's law over the last second: concurrency = completions per second x mean latency.
            inferred = sum(recent)
            samples.append({"busy": math.ceil(inferred), "threads": cluster.threads})
        answer = await sim.tick({"now": now, "current": len(cluster.live()), "ready": len(ready),
                                 "samples": samples})
        decisions.append((now, answer["desired"], answer["mode"], answer["reason"], answer["load"]))
        await cluster.scale_to(answer["desired"])
        await asyncio.sleep(max(0.0, now + 1.0 - cluster.clock()))


@dataclass
class HpaModel:
    cpu_request: float
    min_replicas: int
    max_replicas: int
    target: float = 0.5
    sync: float = 15.0
    stabilisation: float = 300.0
    tolerance: float = 0.1
    recommendations: list[tuple[float, int]] = field(default_factory=list)

    def recommend(self, now: float, current: int, utilisation: float | None) -> int:
        if utilisation is None or abs(utilisation / self.target - 1.0) <= self.tolerance:
            raw = current
        else:
            raw = math.ceil(current * utilisation / self.target)
        raw = max(self.min_replicas, min(self.max_replicas, raw))
        self.recommendations.append((now, raw))
        # As the HPA's stabilizeRecommendationWithBehaviors: up at once (window 0), down no lower
        # than the highest recommendation of the stabilisation window; then the scale-up rate limit.
        floor = max(r for t, r in self.recommendations if now - t <= self.stabilisation)
        desired = min(max(current, raw), floor)
        return min(desired, max(current + 4, 2 * current))


async def hpa_loop(cluster: Cluster, model: HpaModel, duration: float, decisions: list) -> None:
    last = cluster.clock()
    for pod in cluster.live():
        pod.cpu_mark = group_cpu_seconds(pod.proc.pid)
    while True:
        await asyncio.sleep(max(0.0, last + model.sync - cluster.clock()))
        now = cluster.clock()
        if now >= duration:
            return
        ready = cluster.ready()
        used = 0.0
        for pod in ready:
            cpu = group_cpu_seconds(pod.proc.pid)
            used += cpu - pod.cpu_mark
        # Pods that became ready during the interval count for the part they were there.
        exposure = sum(min(now - last, now - (now if pod.ready_at is None else pod.ready_at)) for pod in ready)
        utilisation = used / (exposure * model.cpu_request) if exposure > 0 else None
        for pod in cluster.live():
            pod.cpu_mark = group_cpu_seconds(pod.proc.pid)
        current = len(cluster.live())
        desired = model.recommend(now, current, utilisation)
        reason = f"cpu {utilisation:.0%} of request" if utilisation is not None else "no ready pods"
        decisions.append((now, desired, "Stable", reason, utilisation))
        await cluster.scale_to(desired)
        last = now


@dataclass
class Result:
    model: str
    requests: int
    bad: int
    refused: int
    slow: int
    p99_ms: float
    pod_seconds: float
    capacity_s: list[float | None]
    decision_s: list[float | None]
    max_pods: int
    decisions: int
    scale_changes: int


def summarise(model: str, trace: list[Phase], loadgen: LoadGen, cluster: Cluster, threads: int,
              timeline: list[tuple[float, int]], decisions: list, end: float) -> Result:
    records = loadgen.records
    refused = sum(1 for _, _, status in records if status != 200)
    slow = sum(p.queued_over_100ms or 0 for p in cluster.pods)
    latencies = sorted(lat for _, lat, status in records if status == 200)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000 if latencies else float("nan")
    capacity = []
    for burst in bursts(trace):
        reached = next((t - burst.start for t, ready in timeline
                        if t >= burst.start and ready * threads >= burst.clients), None)
        capacity.append(reached)
    # The autoscaler's own part of that: until a decision asked for enough pods (the rest is pod start-up).
    decided = [next((t - burst.start for t, desired, *_ in decisions
                     if t >= burst.start and desired * threads >= burst.clients), None) for burst in bursts(trace)]
    changes = sum(1 for a, b in zip(decisions, decisions[1:]) if a[1] != b[1])
    return Result(model, len(records), refused + slow, refused, slow, p99, cluster.pod_seconds(end), capacity, decided,
                  max((r for _, r in timeline), default=0), len(decisions), changes)


async def run_model(model: str, args, trace: list[Phase], out: Path) -> Result:
    duration = trace[-1].start
    origin = time.monotonic()

    def clock() -> float:
        return time.monotonic() - origin

    log_dir = out / model
    log_dir.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(args.wharf, args.threads, args.queue_size, args.startup_delay, log_dir, clock)
    # Every model starts from what the low load needs, already ready.
    initial = max(1, math.ceil(trace[0].clients / (args.threads * args.target_utilization / 100)))
    for _ in range(initial):
        cluster.start_pod()
    watcher = asyncio.create_task(cluster.watch_readiness())
    deadline = clock() + 30
    while len(cluster.ready()) < initial:
        if clock() > deadline or watcher.done():
            watcher.cancel()
            await cluster.shutdown(clock())
            raise RuntimeError(f"{model}: initial pods not ready in 30 s (logs in {log_dir})")
        await asyncio.sleep(0.05)
    origin = time.monotonic()
    for pod in cluster.pods:
        pod.started = pod.ready_at = 0.0

    decisions: list = []
    timeline: list[tuple[float, int]] = []
    sim = None
    if model in ("concurrency", "kpa-inferred"):
        sim = await OperatorSim.start(args.operator, [
            "--min-replicas", "1", "--max-replicas", str(args.max_replicas),
            "--target-utilization-percent", str(args.target_utilization),
            "--scale-down-delay-seconds", str(args.scale_down_delay),
        ])
        loop = (concurrency_loop if model == "concurrency" else kpa_inferred_loop)(cluster, sim, duration, decisions)
    else:
        loop = hpa_loop(cluster, HpaModel(args.cpu_request, 1, args.max_replicas), duration, decisions)

    async def sample_timeline() -> None:
        while True:
            timeline.append((clock(), len(cluster.ready())))
            await asyncio.sleep(0.1)

    loadgen = LoadGen(cluster, trace, clock)
    sampler = asyncio.create_task(sample_timeline())
    scaler = asyncio.create_task(loop)
    try:
        await loadgen.run(duration)
        if scaler.done():
            scaler.result()  # a failed autoscaler fails the run
    finally:
        end = clock()
        for task in (scaler, sampler, watcher):
            task.cancel()
        await asyncio.gather(scaler, sampler, watcher, return_exceptions=True)
        if sim:
            await sim.close()
        await cluster.shutdown(end)
    (log_dir / "decisions.json").write_text(json.dumps(decisions))
    (log_dir / "timeline.json").write_text(json.dumps(timeline))
    return summarise(model, trace, loadgen, cluster, args.threads, timeline, decisions, end)


def fmt_capacity(values: list[float | None]) -> str:
    return " / ".join("never" if v is None else f"{v:.1f}" for v in values)


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else ("=" if a == b else "inf")


def table(results: list[Result]) -> str:
    lines = ["| model | s to capacity (per burst) | s to decision | requests | 503 or queued >100 ms | p99 ms | pod-seconds "
             "| max pods | scale changes |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.model} | {fmt_capacity(r.capacity_s)} | {fmt_capacity(r.decision_s)} | {r.requests} | {r.bad} ({r.refused} refused) | "
                     f"{r.p99_ms:.0f} | {r.pod_seconds:.0f} | {r.max_pods} | {r.scale_changes} |")
    base = next((r for r in results if r.model == "concurrency"), None)
    others = [r for r in results if r is not base]
    if base and others:
        lines += ["", "| concurrency vs | bad requests | p99 | pod-seconds |", "|---|---|---|---|"]
        for r in others:
            lines.append(f"| {r.model} | {ratio(base.bad, r.bad)} | {ratio(base.p99_ms, r.p99_ms)} | "
                         f"{ratio(base.pod_seconds, r.pod_seconds)} |")
    return "\n".join(lines)


def find_operator() -> str | None:
    for profile in ("release", "debug"):
        candidate = REPO / os.environ.get("CARGO_TARGET_DIR", "target") / profile / "wharf-operator"
        if candidate.exists():
            return str(candidate)
    return shutil.which("wharf-operator")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="a 7 s trace of 2 -> 40 clients, concurrency and cpu-hpa only")
    p.add_argument("--trace", choices=["bursts", "long"], default="bursts",
                   help="bursts: two bursts in 55 s (default); long: three bursts 90 s apart in 330 s")
    p.add_argument("--models", default=None, help=f"comma-separated subset of {','.join(MODELS)}")
    p.add_argument("--wharf", default=shutil.which("wharf", path=str(Path(sys.executable).parent)) or "wharf")
    p.add_argument("--operator", default=None, help="wharf-operator binary (default: $CARGO_TARGET_DIR or target/, release then debug)")
    p.add_argument("--low", type=int, default=None, help="clients outside bursts (default 10, smoke 2)")
    p.add_argument("--high", type=int, default=None, help="clients during bursts (default 200, smoke 40)")
    p.add_argument("--threads", type=int, default=None, help="Python threads per pod (default 32, smoke 8)")
    p.add_argument("--queue-size", type=int, default=1024,
                   help="wharf --queue-size per pod (default: wharf's own, as the operator deploys it); beyond it: 503")
    p.add_argument("--startup-delay", type=float, default=1.0, help="seconds before a started pod may be ready")
    p.add_argument("--target-utilization", type=int, default=70)
    p.add_argument("--scale-down-delay", type=int, default=10,
                   help="the concurrency models' stable window (default 10 s so the 55 s trace shows scale-downs)")
    p.add_argument("--max-replicas", type=int, default=12)
    p.add_argument("--cpu-request", type=float, default=0.1, help="cores per pod the CPU-HPA model divides by")
    p.add_argument("--out", type=Path, default=None, help="results directory (default bench/results/autoscale-<time>)")
    args = p.parse_args(argv)
    args.low = args.low or (2 if args.smoke else 10)
    args.high = args.high or (40 if args.smoke else 200)
    args.threads = args.threads or (8 if args.smoke else 32)
    models = args.models.split(",") if args.models else (["concurrency", "cpu-hpa"] if args.smoke else list(MODELS))
    unknown = set(models) - set(MODELS)
    if unknown or args.low < 1 or args.high <= args.low:
        p.error(f"unknown models {sorted(unknown)}" if unknown else "need 1 <= --low < --high")
    args.models = models
    args.out = args.out or REPO / "bench" / "results" / time.strftime("autoscale-%Y%m%d-%H%M%S")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.operator = args.operator or find_operator()
    if not args.operator or not Path(args.operator).exists():
        print("wharf-operator binary not found: run `cargo build -p wharf-operator` or pass --operator",
              file=sys.stderr)
        return 3
    trace = (smoke_trace if args.smoke else long_trace if args.trace == "long" else full_trace)(args.low, args.high)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    status = 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        for model in args.models:
            try:
                results.append(asyncio.run(run_model(model, args, trace, args.out)))
            except Exception as error:  # noqa: BLE001 - one failed model must not hide the others' figures
                print(f"{model}: {error}", file=sys.stderr)
                status = 1
    finally:
        kill_leftovers()
    (args.out / "results.json").write_text(json.dumps({
        "trace": [asdict(p) for p in trace], "threads": args.threads, "queue_size": args.queue_size,
        "startup_delay": args.startup_delay, "scale_down_delay": args.scale_down_delay,
        "cpu_request": args.cpu_request, "results": [asdict(r) for r in results]}, indent=1))
    report = table(results)
    (args.out / "report.md").write_text(report + "\n")
    print(report)
    print(f"\nresults in {args.out}")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
