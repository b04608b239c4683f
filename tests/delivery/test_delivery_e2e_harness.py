"""The kind suite cannot run here; check what can be: its skip path and the workflow's shape."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import yaml

from delivery_support import CHART, REPO_ROOT

WORKFLOW = REPO_ROOT / ".github" / "workflows" / "e2e.yml"
RUN_SH = REPO_ROOT / "tests" / "e2e" / "run.sh"


def test_e2e_script_skips_cleanly_without_kind(tmp_path):
    path = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep)
                           if d and not (Path(d) / "kind").exists())
    proc = subprocess.run([str(RUN_SH)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PATH=path, E2E_ARTIFACTS=str(tmp_path)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^SKIP e2e: (docker|no Docker engine|kind)", proc.stdout, re.M), proc.stdout


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def test_workflow_pins_every_action_to_a_release():
    uses = [step["uses"] for job in workflow()["jobs"].values() for step in job["steps"] if "uses" in step]
    assert uses
    for ref in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+\.\d+\.\d+", ref), f"unpinned action {ref}"


def test_workflow_matrix_covers_supported_kubernetes_versions():
    kind_job = workflow()["jobs"]["kind"]
    nodes = kind_job["strategy"]["matrix"]["node"]
    versions = sorted(tuple(map(int, re.fullmatch(r"kindest/node:v(\d+)\.(\d+)\.\d+", n).groups())) for n in nodes)
    assert len(versions) >= 2
    minimum = re.search(r">=(\d+)\.(\d+)", yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"])
    assert versions[0] >= tuple(map(int, minimum.groups()))
    steps = kind_job["steps"]
    assert any(s.get("run", "").strip() == "tests/e2e/run.sh" for s in steps)
    upload = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact")]
    assert upload and upload[0]["if"] == "failure()"
