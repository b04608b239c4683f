"""Keeps bench/autoscale.py working and checks the loop is closed: a 7-second smoke run of real wharf
pods under a 2 -> 40 client burst, scaled by the operator's own decision code (`autoscale-sim`).

Timings are not asserted beyond "the autoscaler reacted within the run" (the machine is shared);
the figures of a full run are in bench/README.md.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import autoscale  # noqa: E402

TIMEOUT = 120


@pytest.fixture(scope="module")
def operator_binary():
    cargo = shutil.which("cargo")
    if cargo:
        subprocess.run([cargo, "build", "-q", "-p", "wharf-operator"], cwd=REPO, check=True, timeout=900)
    # Where cargo put it: CARGO_TARGET_DIR (relative to the repository, where cargo ran) or target/.
    binary = REPO / os.environ.get("CARGO_TARGET_DIR", "target") / "debug" / "wharf-operator"
    assert binary.exists(), f"cargo build -p wharf-operator did not produce {binary}"
    return binary


@pytest.fixture(scope="module")
def smoke_run(operator_binary, tmp_path_factory):
    wharf = shutil.which("wharf", path=str(Path(sys.executable).parent))
    assert wharf, f"the wharf console script is not installed next to {sys.executable}"
    out = tmp_path_factory.mktemp("autoscale")
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "autoscale.py"), "--smoke", "--wharf", wharf,
         "--operator", str(operator_binary), "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )
    return done, out


def test_smoke_run_exits_zero_with_a_row_per_model(smoke_run):
    done, out = smoke_run
    assert done.returncode == 0, f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    results = json.loads((out / "results.json").read_text())["results"]
    assert [r["model"] for r in results] == ["concurrency", "cpu-hpa"]
    for r in results:
        assert r["requests"] > 0 and r["pod_seconds"] > 0, r
    assert "| concurrency vs |" in (out / "report.md").read_text()


def test_the_operator_decision_scaled_up_on_the_burst(smoke_run):
    _, out = smoke_run
    decisions = json.loads((out / "concurrency" / "decisions.json").read_text())
    # 40 clients on one pod of 8 threads: 32 busy-or-queued beyond what 70 % of 8 threads allows.
    burst = [d for d in decisions if d[0] >= 1.0]
    assert any(d[1] > 1 and d[2] == "Panic" for d in burst), decisions
    result = json.loads((out / "results.json").read_text())["results"][0]
    assert result["max_pods"] > 1, result
    # A burst is met by asking for enough pods first and having them ready after.
    [decided], [reached] = result["decision_s"], result["capacity_s"]
    if reached is not None:
        assert decided is not None and decided <= reached, result


def test_clients_follow_the_trace_with_ramps():
    trace = [autoscale.Phase(0, 10), autoscale.Phase(10, 200, 1.0), autoscale.Phase(20, 10)]
    assert autoscale.clients_at(trace, 5) == 10
    assert autoscale.clients_at(trace, 10.5) == 105
    assert autoscale.clients_at(trace, 11) == 200
    assert autoscale.clients_at(trace, 25) == 10
    assert autoscale.bursts(trace) == [trace[1]]


def test_the_hpa_model_holds_for_its_stabilisation_window_and_limits_scale_up():
    hpa = autoscale.HpaModel(cpu_request=0.1, min_replicas=1, max_replicas=20)
    # 4x the target on 1 pod: +4 pods at most per sync (max(+4, x2)).
    assert hpa.recommend(0, 1, 5.0) == 5
    # Within the 10 % tolerance: no change.
    assert hpa.recommend(15, 5, 0.52) == 5
    # Idle: the recommendation of 15 s ago (5) still holds for 300 s.
    assert hpa.recommend(30, 5, 0.01) == 5
    assert hpa.recommend(400, 5, 0.01) == 1
