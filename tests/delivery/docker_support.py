"""Finding a Docker engine and a BuildKit-capable client, and building the project's images."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Docker:
    """A docker client binary and how to make it build with BuildKit."""

    binary: str
    build_prefix: tuple[str, ...]
    build_env: dict[str, str]

    def build(self, context: Path, *, target: str, tag: str, build_args: dict[str, str],
              dockerfile: Path | None = None) -> subprocess.CompletedProcess:
        cmd = [*self.build_prefix, "--target", target, "--tag", tag]
        if dockerfile is not None:
            cmd += ["--file", str(dockerfile)]
        for key, value in build_args.items():
            cmd += ["--build-arg", f"{key}={value}"]
        cmd.append(str(context))
        return subprocess.run(cmd, capture_output=True, text=True, env=self.build_env, timeout=900)


def _client_major(binary: str) -> int | None:
    proc = subprocess.run([binary, "version", "--format", "{{.Client.Version}}"],
                          capture_output=True, text=True, timeout=30)
    head = proc.stdout.strip().split(".")[0]
    return int(head) if head.isdigit() else None


def find_docker() -> tuple[Docker | None, str]:
    """The first docker client on PATH that reaches an engine and can build with BuildKit.

    Returns (None, reason) when there is none. Docker clients before 23 have BuildKit built in
    (DOCKER_BUILDKIT=1); later ones need the buildx plugin. The Dockerfile relies on BuildKit to
    skip the compile-from-source stages when ARTIFACTS=prebuilt.
    """
    candidates: list[str] = []
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        path = Path(directory) / "docker"
        if path.is_file() and os.access(path, os.X_OK):
            real = str(path.resolve())
            if real not in {str(Path(c).resolve()) for c in candidates}:
                candidates.append(str(path))
    if not candidates:
        return None, "no docker client on PATH"
    reasons = []
    for binary in candidates:
        try:
            info = subprocess.run([binary, "info", "--format", "{{.ServerVersion}}"],
                                  capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            reasons.append(f"{binary}: engine did not answer within 30 s")
            continue
        if info.returncode != 0 or not info.stdout.strip():
            reasons.append(f"{binary}: no engine answers ({info.stderr.strip()[:200]})")
            continue
        env = dict(os.environ)
        buildx = subprocess.run([binary, "buildx", "version"], capture_output=True, text=True, timeout=30)
        if buildx.returncode == 0:
            return Docker(binary, (binary, "buildx", "build", "--load"), env), ""
        major = _client_major(binary)
        if major is not None and major < 23:
            env["DOCKER_BUILDKIT"] = "1"
            return Docker(binary, (binary, "build"), env), ""
        reasons.append(f"{binary}: engine answers but the client has no BuildKit (install docker buildx)")
    return None, "; ".join(reasons)


def engine_answers() -> bool:
    binary = shutil.which("docker")
    if binary is None:
        return False
    try:
        proc = subprocess.run([binary, "info", "--format", "{{.ServerVersion}}"],
                              capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0 and bool(proc.stdout.strip())
