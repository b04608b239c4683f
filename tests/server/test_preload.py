"""The zygote: workers forked from one import (memory shared, fork hooks run, random state
fresh per worker), its fallback to fresh processes, reloads through a new zygote, and a
crashed zygote replaced while its workers serve on. Every wait is a readiness poll."""

import os
import re
import signal

import requests

from conftest import APPS_DIR, free_port, wait_for


def smaps(pid: int) -> dict[str, int]:
    """kB figures of /proc/PID/smaps_rollup."""
    text = open(f"/proc/{pid}/smaps_rollup").read()
    return {name: int(kb) for name, kb in re.findall(r"^(\w+):\s+(\d+) kB", text, re.M)}


def fresh_get(url: str) -> requests.Response:
    """One request on a new connection (the kernel picks the worker by connection)."""
    with requests.Session() as session:
        return session.get(url, timeout=10)


def one_reply_per_worker(url: str, workers: int) -> dict[int, dict]:
    """The JSON answer of each of `workers` workers (new connections until all answered, bounded)."""
    replies: dict[int, dict] = {}
    for _ in range(400):
        reply = fresh_get(url).json()
        replies.setdefault(reply["pid"], reply)
        if len(replies) == workers:
            return replies
    raise AssertionError(f"only {len(replies)} of {workers} workers answered 400 connections")


def zygote_pids(log: str) -> list[int]:
    return [int(p) for p in re.findall(r"started zygote.* pid=(\d+)", log)]


def test_forked_workers_share_the_imported_heap(wharf):
    """The app's import-time heap (~30 MiB of objects) stays shared with the zygote: a forked
    worker's proportional share of anonymous memory is well below what it maps; a fresh
    process owns all of its own."""
    forked = wharf("fork_app:app", "--workers", "2", "--threads", "2")
    fresh = wharf("fork_app:app", "--workers", "2", "--threads", "2", "--no-preload")
    assert "mode=fork" in forked.log() and "mode=fresh" not in forked.log()
    assert "mode=fresh" in fresh.log() and "mode=fork" not in fresh.log()
    ratios = {}
    for name, server in (("forked", forked), ("fresh", fresh)):
        # Serve a little first: a worker's heap settles after its first requests.
        for pid in one_reply_per_worker(server.url, 2):
            mem = smaps(pid)
            ratios.setdefault(name, []).append(mem["Pss_Anon"] / mem["Anonymous"])
            assert mem["Pss"] < mem["Rss"]
    assert max(ratios["forked"]) < 0.75, ratios
    assert min(ratios["fresh"]) > 0.9, ratios


def test_fork_hooks_run_and_each_worker_has_its_own_random_state(wharf):
    server = wharf("fork_app:app", "--workers", "2")
    replies = one_reply_per_worker(server.url, 2)
    for pid, reply in replies.items():
        hooks = reply["hooks"]
        # before/after_in_parent ran in the zygote for each fork, so a later-forked worker's
        # copy counts the earlier forks too; after_in_child ran in this very process.
        assert hooks["after_in_child_pid"] == pid
        assert hooks["before"] >= 1 and hooks["after_in_parent"] == hooks["before"] - 1
    first, second = replies.values()
    assert first["random_state"] != second["random_state"], "random was reseeded in each worker"
    assert first["uuid4"] != second["uuid4"]


def test_fresh_workers_run_no_fork_hooks(wharf):
    """The control for the test above: without a zygote nothing forks."""
    server = wharf("fork_app:app", "--no-preload")
    hooks = fresh_get(server.url).json()["hooks"]
    assert hooks == {"before": 0, "after_in_parent": 0, "after_in_child_pid": None}


def test_an_app_that_starts_a_thread_at_import_gets_fresh_workers(wharf):
    server = wharf("thread_at_import:app", "--workers", "2")
    log = server.log()
    assert "the app started threads while it was imported" in log
    assert "metrics-poller" in log
    assert log.count("mode=fresh") >= 2 and "mode=fork" not in log
    pid, threads = fresh_get(server.url).text.split()
    # The fresh worker started the app's thread itself, next to wharf's own threads.
    assert int(pid) in [int(p) for p in re.findall(r"started worker worker=\d+ pid=(\d+)", log)]
    assert int(threads) >= 2


def test_a_killed_zygote_is_replaced_and_workers_serve_on(wharf):
    server = wharf("lifecycle_app:app", "--workers", "2")
    wait_for(lambda: zygote_pids(server.log()), timeout=10)
    before = {int(fresh_get(server.url).text.split()[1]) for _ in range(40)}
    os.kill(zygote_pids(server.log())[0], signal.SIGKILL)
    wait_for(lambda: "zygote exited (signal 9); the workers keep serving" in server.log(), timeout=10)
    wait_for(lambda: len(zygote_pids(server.log())) == 2 and "zygote ready zygote=2" in server.log(), timeout=20)
    assert {int(fresh_get(server.url).text.split()[1]) for _ in range(40)} <= before
    # A worker of the dead zygote that dies is noticed (its status went with the zygote) and
    # replaced by a fork of the new zygote.
    victim = sorted(before)[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: "exit status unknown: its zygote exited first" in server.log(), timeout=10)
    wait_for(lambda: re.search(r"started worker worker=3 pid=\d+ mode=fork zygote=2", server.log()), timeout=10)
    wait_for(lambda: server.log().count("worker ready") >= 3, timeout=10)
    assert fresh_get(server.url).status_code == 200
    assert server.stop() == 0


def test_sighup_with_broken_code_keeps_the_old_workers(wharf, tmp_path):
    """The new zygote fails to import: no worker is touched; once the code is fixed the
    retried zygote imports it and the workers roll over."""
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    source = (APPS_DIR / "lifecycle_app.py").read_text()
    (app_dir / "hot.py").write_text(source)
    server = wharf("hot:app", "--workers", "2", "--chdir", str(app_dir))
    (app_dir / "hot.py").write_text(source + "\nraise RuntimeError('half-deployed')\n")
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "zygote exited (exit code 3); the workers keep serving" in server.log(), timeout=20)
    assert "RuntimeError: half-deployed" in server.log()
    assert "draining worker" not in server.log()
    assert all(fresh_get(server.url).text.startswith("v1") for _ in range(10))
    (app_dir / "hot.py").write_text(source.replace('VERSION = "v1"', 'VERSION = "v2"'))
    wait_for(lambda: fresh_get(server.url).text.startswith("v2"), timeout=30)
    wait_for(lambda: server.log().count("worker exited after draining") >= 2, timeout=30)


def test_worker_start_seconds_by_mode_on_metrics(wharf):
    admin = free_port()
    server = wharf("lifecycle_app:app", "--workers", "2", "--admin-bind", f"127.0.0.1:{admin}")
    text = requests.get(f"http://127.0.0.1:{admin}/metrics", timeout=10).text
    assert re.search(r'^wharf_worker_start_seconds_count\{mode="fork"\} 2$', text, re.M), text
    assert 'mode="fresh"' not in text
    server.proc.send_signal(signal.SIGTTIN)
    wait_for(lambda: server.log().count("worker ready") >= 3, timeout=20)
    text = requests.get(f"http://127.0.0.1:{admin}/metrics", timeout=10).text
    assert re.search(r'^wharf_worker_start_seconds_count\{mode="fork"\} 3$', text, re.M), text


def test_the_zygote_holds_no_listening_socket(wharf):
    """Only the supervisor and workers accept: the zygote gets a worker's sockets just long
    enough to fork it."""
    server = wharf("lifecycle_app:app", "--workers", "2")
    zygote = zygote_pids(server.log())[0]
    inodes = set()
    for fd in os.listdir(f"/proc/{zygote}/fd"):
        target = os.readlink(f"/proc/{zygote}/fd/{fd}")
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    listening = set()
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == server.port:
                listening.add(fields[9])
    assert listening, "the server's listening sockets are visible"
    assert not inodes & listening


def test_no_preload_from_the_environment_and_a_config_file(wharf, tmp_path):
    by_env = wharf("lifecycle_app:app", env={"WHARF_NO_PRELOAD": "true"})
    config = tmp_path / "wharf.toml"
    config.write_text("no-preload = true\n")
    by_file = wharf("lifecycle_app:app", "--config", str(config))
    for server in (by_env, by_file):
        assert "mode=fresh" in server.log() and "started zygote" not in server.log()
