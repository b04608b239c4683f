"""/metrics on the admin listener: real Prometheus text, parsed with prometheus_client's parser,
aggregated exactly over every worker (and over workers that have since exited)."""

import concurrent.futures
import os
import signal
import time

import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port, send_blocked_requests, read_response, wait_for



def scrape(admin: int) -> dict:
    resp = requests.get(f"http://127.0.0.1:{admin}/metrics", timeout=10)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_move_by_exactly_the_requests_sent_across_workers(wharf):
    admin = free_port()
    server = wharf("lifecycle_app:app", "--workers", "2", "--threads", "3", "--admin-bind", f"127.0.0.1:{admin}")
    before = scrape(admin)
    pids = set()
    sent = 0
    # New connections from concurrent clients, until both workers have answered (bounded): how
    # the kernel hands connections to the two accepting workers is up to it.
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        while len(pids) < 2 or sent < 60:
            assert sent < 4000, "one worker never got a connection"
            batch = list(pool.map(lambda _: requests.get(server.url, headers={"Connection": "close"}, timeout=10), range(20)))
            pids.update(resp.text.split()[1] for resp in batch)
            sent += len(batch)
    requests.post(server.url, data=b"x" * 5000, headers={"Connection": "close"}, timeout=10)
    after = scrape(admin)
    assert len(pids) == 2, "both workers served requests"
    get_200 = ("wharf_requests_total", {"method": "GET", "status": "200"})
    assert value(after, get_200[0], **get_200[1]) - value(before, get_200[0], **get_200[1]) == sent
    assert value(after, "wharf_requests_total", method="POST", status="200") - value(before, "wharf_requests_total", method="POST", status="200") == 1
    assert value(after, "wharf_request_duration_seconds_count") - value(before, "wharf_request_duration_seconds_count") == sent + 1
    assert value(after, "wharf_request_queue_seconds_count") - value(before, "wharf_request_queue_seconds_count") == sent + 1
    assert value(after, "wharf_request_body_bytes_sum") - value(before, "wharf_request_body_bytes_sum") == 5000
    assert value(after, "wharf_python_threads_total") == 6
    assert value(after, "wharf_python_threads_busy") == 0
    assert value(after, "wharf_workers") == 2
    build = [v for (name, labels), v in after.items() if name == "wharf_build_info" and dict(labels).get("version")]
    assert build == [1]


def test_saturation_gauges_are_exact_while_threads_are_blocked(wharf, tmp_path):
    admin = free_port()
    server = wharf("lifecycle_app:app", "--threads", "2", "--queue-size", "3", "--admin-bind", f"127.0.0.1:{admin}")
    gate = tmp_path / "gate"
    socks = send_blocked_requests(server, gate, 5)
    try:
        # Both threads take a request (a woken thread may need a moment), three wait.
        samples = wait_for(
            lambda: (m := scrape(admin))
            and value(m, "wharf_requests_in_flight") == 5
            and value(m, "wharf_python_threads_busy") == 2
            and m
        )
        assert value(samples, "wharf_requests_queued") == 3
        assert value(samples, "wharf_connections_open") >= 5
        refused = requests.get(server.url, timeout=10)
        assert refused.status_code == 503
        assert value(scrape(admin), "wharf_rejected_total", reason="queue_full") == 1
    finally:
        gate.touch()
        for s in socks:
            s.settimeout(20)
            read_response(s)
            s.close()
    # Threads report themselves idle just after the response is out: poll for both.
    wait_for(
        lambda: (m := scrape(admin))
        and value(m, "wharf_requests_in_flight") == 0
        and value(m, "wharf_python_threads_busy") == 0
        and value(m, "wharf_requests_queued") == 0
    )


def test_counters_survive_worker_exits_and_restarts_are_counted(wharf):
    admin = free_port()
    server = wharf("lifecycle_app:app", "--workers", "2", "--max-requests", "20", "--admin-bind", f"127.0.0.1:{admin}")
    session = requests.Session()
    sent = 0
    # Keep load on until two workers were recycled (bounded in count and time).
    while value(scrape(admin), "wharf_worker_restarts_total", reason="max_requests") < 2:
        assert sent < 3000, "no worker was recycled"
        for _ in range(20):
            assert session.get(server.url, timeout=10).status_code == 200
        sent += 20
    assert value(scrape(admin), "wharf_requests_total", method="GET", status="200") == sent
    victim = int(requests.get(server.url, timeout=10).text.split()[1])
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: value(scrape(admin), "wharf_worker_restarts_total", reason="crash") == 1, timeout=30)
    # A crashed worker keeps what it last reported; nothing goes backwards.
    assert value(scrape(admin), "wharf_requests_total", method="GET", status="200") >= sent


def test_rejections_by_reason(wharf):
    admin = free_port()
    server = wharf("lifecycle_app:app", "--limit-request-line", "64", "--limit-request-body", "10", "--admin-bind", f"127.0.0.1:{admin}")
    assert requests.get(server.url + "/" + "a" * 100, timeout=10).status_code == 414
    assert requests.post(server.url, data=b"x" * 100, timeout=10).status_code == 413
    with server.connect() as s:
        s.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert read_response(s)[0] == 400
    m = scrape(admin)
    assert value(m, "wharf_rejected_total", reason="request_line_too_long") == 1
    assert value(m, "wharf_rejected_total", reason="body_too_large") == 1
    assert value(m, "wharf_rejected_total", reason="bad_request") == 1


def test_a_stalled_head_is_a_header_timeout_and_an_idle_connection_is_not(wharf):
    admin = free_port()
    server = wharf("lifecycle_app:app", "--header-timeout", "1", "--keep-alive-timeout", "30",
                   "--admin-bind", f"127.0.0.1:{admin}")
    with server.connect() as idle, server.connect() as stalled:
        # After a full exchange, a keep-alive connection that sends nothing is only idle.
        idle.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert read_response(idle)[0] == 200
        stalled.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: ")
        wait_for(lambda: value(scrape(admin), "wharf_rejected_total", reason="header_timeout") == 1, timeout=15)
        assert stalled.recv(1) == b"", "the stalled connection must be closed"
        # Past the header timeout, the idle one is still served.
        idle.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert read_response(idle)[0] == 200
    assert value(scrape(admin), "wharf_rejected_total", reason="header_timeout") == 1


def worker_samples(samples: dict, name: str) -> dict:
    """`{worker id: value}` of a `wharf_worker_*` family."""
    return {dict(labels)["worker"]: v for (n, labels), v in samples.items() if n == name}


def test_each_worker_reports_its_own_process_resources(wharf):
    admin = free_port()
    before_start = time.time()
    wharf("resources_app:app", "--workers", "2", "--admin-bind", f"127.0.0.1:{admin}")
    samples = scrape(admin)
    rss = worker_samples(samples, "wharf_worker_resident_memory_bytes")
    cpu = worker_samples(samples, "wharf_worker_cpu_seconds_total")
    fds = worker_samples(samples, "wharf_worker_open_fds")
    started = worker_samples(samples, "wharf_worker_start_time_seconds")
    assert len(cpu) == 2 and rss.keys() == cpu.keys() == fds.keys() == started.keys(), samples
    for worker in cpu:
        assert 5 << 20 < rss[worker] < 2 << 30, "a Python process holds some MiB"
        assert 0 < cpu[worker] < 60
        assert 3 <= fds[worker] < 1000, "stdio, sockets, the control channel"
        assert before_start - 1 <= started[worker] <= time.time()


def test_a_hot_or_leaking_worker_stands_out(wharf):
    admin = free_port()
    server = wharf("resources_app:app", "--admin-bind", f"127.0.0.1:{admin}")
    before = scrape(admin)
    (worker,) = worker_samples(before, "wharf_worker_cpu_seconds_total")
    assert requests.get(f"{server.url}/burn?s=0.5", timeout=30).status_code == 200
    assert requests.get(f"{server.url}/hold?mb=64", timeout=30).status_code == 200
    connections = [server.connect() for _ in range(5)]
    try:
        # The worker has accepted them once it answers on one of them.
        connections[-1].sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(connections[-1])[0] == 200
        after = scrape(admin)
    finally:
        for sock in connections:
            sock.close()

    def grew(name: str) -> float:
        return worker_samples(after, name)[worker] - worker_samples(before, name)[worker]

    assert grew("wharf_worker_cpu_seconds_total") >= 0.45
    assert grew("wharf_worker_resident_memory_bytes") >= 60 << 20
    assert grew("wharf_worker_open_fds") >= 5
    assert worker_samples(after, "wharf_worker_start_time_seconds") == worker_samples(before, "wharf_worker_start_time_seconds")
