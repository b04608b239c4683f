"""Start a server pinned to one CPU in its own process group, watch its resources, and stop it."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Field 5 is the process group; the command name (field 2) may contain spaces, so split after it.
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def _stat_fields(pid: int) -> list[str]:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rfind(")") + 2:].split()


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time of every live process in a process group."""
    ticks = 0
    for pid in _group_members(pgid):
        try:
            fields = _stat_fields(pid)
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return ticks / _TICKS_PER_SECOND


def cpu_busy_seconds(cpu: int) -> float:
    """Non-idle time one CPU has spent since boot, for every process together (from /proc/stat)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            # user nice system idle iowait irq softirq steal ...: idle and iowait are not busy
            values = [int(v) for v in line.split()[1:9]]
            return (sum(values) - values[3] - values[4]) / _TICKS_PER_SECOND
    return 0.0


class ServerProcess:
    """One server command running under `taskset -c CPU` as leader of a new session."""

    def __init__(self, command: str, cwd: Path, cpu: int, log: Path, env: dict[str, str] | None = None):
        self.command = command
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(
            ["taskset", "-c", str(cpu), *shlex.split(command)],
            cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env,
        )
        self.pgid = self.proc.pid
        self.log_path = log

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_listening(self, port: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return False
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.1)
        return False

    def rss_kib(self) -> int:
        """Resident memory of every process in the server's group (workers and any master)."""
        total = 0
        for pid in _group_members(self.pgid):
            try:
                total += int(_stat_fields(pid)[21]) * _PAGE_KIB
            except (OSError, IndexError, ValueError):
                continue
        return total

    def worker_rss_kib(self) -> int:
        """Resident memory of the largest worker: a process of the group other than its leader
        (the master or supervisor, which serves no requests), or the leader if it serves alone."""
        sizes = {}
        for pid in _group_members(self.pgid):
            try:
                sizes[pid] = int(_stat_fields(pid)[21]) * _PAGE_KIB
            except (OSError, IndexError, ValueError):
                continue
        workers = [kib for pid, kib in sizes.items() if pid != self.pgid] or list(sizes.values())
        return max(workers, default=0)

    def cpu_seconds(self) -> float:
        return group_cpu_seconds(self.pgid)

    def cpu_affinity(self) -> dict[str, int]:
        """Allowed-CPU lists of all the group's threads, with how many threads have each."""
        seen: dict[str, int] = {}
        for pid in _group_members(self.pgid):
            try:
                threads = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in threads:
                try:
                    status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("Cpus_allowed_list:"):
                        cpus = line.split(":", 1)[1].strip()
                        seen[cpus] = seen.get(cpus, 0) + 1
        return seen

    def log_tail(self, limit: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-limit:]

    def stop(self, grace: float = 5.0) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not self.alive():
                break
            try:
                os.killpg(self.pgid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                continue
        # Workers of a master that died first may linger in the group.
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._log.close()
