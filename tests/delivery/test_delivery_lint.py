"""Static checks of the delivery files: shell scripts (shellcheck) and Dockerfiles (hadolint)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from delivery_support import REPO_ROOT, run


def tracked_files(*patterns: str) -> list[Path]:
    """Files git knows about (committed or staged) plus untracked ones not ignored."""
    out = run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *patterns],
              cwd=REPO_ROOT).stdout
    return sorted({REPO_ROOT / line for line in out.splitlines() if (REPO_ROOT / line).is_file()})


def venv_tool(name: str) -> str:
    """A console script installed next to this interpreter (the test venv), else from PATH."""
    candidate = Path(sys.executable).with_name(name)
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; it comes from tests/requirements.txt")
    return found


SHELL_SCRIPTS = tracked_files("*.sh")
DOCKERFILES = tracked_files("Dockerfile", "**/Dockerfile", "**/Dockerfile.*")


def test_there_is_something_to_lint():
    names = {p.relative_to(REPO_ROOT).as_posix() for p in SHELL_SCRIPTS + DOCKERFILES}
    assert {"scripts/k8s-tools.sh", "scripts/base-image.sh", "Dockerfile"} <= names


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_shellcheck(script):
    proc = subprocess.run([venv_tool("shellcheck"), "--severity=style", "--external-sources", str(script)],
                          capture_output=True, text=True, cwd=script.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_hadolint(dockerfile):
    proc = subprocess.run([venv_tool("hadolint"), "--no-color", "--failure-threshold", "info", str(dockerfile)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


WORKFLOWS = tracked_files(".github/workflows/*.yml")


def test_workflows_match_the_github_workflow_schema():
    """actionlint cannot be installed here (its PyPI package downloads the binary at build time);
    check-jsonschema's vendored GitHub workflow schema catches misspelled keys and wrong shapes."""
    assert {p.name for p in WORKFLOWS} >= {"e2e.yml", "release.yml"}
    proc = subprocess.run([venv_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
                           *map(str, WORKFLOWS)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
