"""Everything a run needs outside the repo: wrk (Debian), a venv with the peers (PyPI) and wharf.

Each step is idempotent and bounded in time; a peer that fails to install is dropped with a
warning rather than failing the whole run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from servers import FLASK_REQUIREMENTS, SERVERS

REPO = Path(__file__).resolve().parent.parent
APT_TIMEOUT = 600
PIP_TIMEOUT = 900
BUILD_TIMEOUT = 3600


class SetupError(Exception):
    """A prerequisite the run cannot do without (wrk, the venv, wharf)."""


class WrkUnavailable(SetupError):
    pass


def _log(message: str) -> None:
    print(f"[setup] {message}", flush=True)


def _run(command: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, timeout=timeout, check=False, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)


def _apt_install(packages: list[str]) -> str | None:
    """Install Debian packages; None on success, else why not."""
    if shutil.which("apt-get") is None:
        return "no apt-get on this machine"
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if prefix and shutil.which("sudo") is None:
        return "not root and no sudo"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        for command in (["apt-get", "update", "-qq"],
                        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]):
            done = _run(prefix + command, APT_TIMEOUT, env=env)
            if done.returncode != 0:
                return f"{' '.join(command)} exited {done.returncode}: {done.stdout[-500:]}"
    except subprocess.TimeoutExpired:
        return f"apt-get took longer than {APT_TIMEOUT}s"
    return None


def _dpkg_installed(package: str) -> bool:
    if shutil.which("dpkg-query") is None:
        return False
    done = _run(["dpkg-query", "-W", "-f=${Status}", package], 30)
    return done.returncode == 0 and "install ok installed" in done.stdout


def ensure_wrk() -> str:
    if shutil.which("wrk") is None:
        _log("wrk not found: installing the Debian package")
        problem = _apt_install(["wrk"])
        if problem or shutil.which("wrk") is None:
            raise WrkUnavailable(f"wrk is not installed and could not be installed: {problem or 'not on PATH'}")
    if shutil.which("taskset") is None:
        raise WrkUnavailable("taskset (util-linux) is not installed")
    done = _run(["wrk", "-v"], 30)
    return done.stdout.splitlines()[0] if done.stdout else "wrk"


def ensure_venv(venv: Path, python: str) -> Path:
    """The venv's python, creating the venv first if needed."""
    interpreter = venv / "bin" / "python"
    if not interpreter.exists():
        _log(f"creating venv {venv}")
        done = _run([python, "-m", "venv", str(venv)], PIP_TIMEOUT)
        if done.returncode != 0:
            raise SetupError(f"could not create venv {venv}: {done.stdout[-1000:]}")
    return interpreter


def _pip_install(interpreter: Path, requirements: list[str]) -> str | None:
    try:
        done = _run([str(interpreter), "-m", "pip", "install", "-q", *requirements], PIP_TIMEOUT)
    except subprocess.TimeoutExpired:
        return f"pip install took longer than {PIP_TIMEOUT}s"
    return None if done.returncode == 0 else done.stdout[-1500:]


def install_peers(interpreter: Path, names: list[str]) -> dict[str, str]:
    """Install the apps' own requirements and each selected peer; returns {peer: why it failed}."""
    problem = _pip_install(interpreter, list(FLASK_REQUIREMENTS))
    if problem:
        raise SetupError(f"could not install the apps' requirements: {problem}")
    failed: dict[str, str] = {}
    for name in names:
        server = SERVERS[name]
        if not server.requirements:
            continue
        missing = [p for p in server.debian_packages if not _dpkg_installed(p)]
        if missing:
            _log(f"{name} needs Debian packages {missing}: installing")
            problem = _apt_install(missing)
            if problem:
                failed[name] = f"Debian packages {missing}: {problem}"
                continue
        _log(f"pip install {' '.join(server.requirements)}")
        problem = _pip_install(interpreter, list(server.requirements))
        if problem:
            failed[name] = f"pip install failed: {problem}"
    for name, why in failed.items():
        _log(f"WARNING: {name} dropped: {why}")
    return failed


def install_wharf(interpreter: Path, source: str, dist_dir: Path) -> str:
    """Make wharf runnable and return its executable.

    `source` is "build" (maturin release build of this repo, installed into the venv), a path to a
    wheel (installed into the venv), or a path to an existing `wharf` executable (used as is).
    """
    venv_wharf = interpreter.parent / "wharf"
    if source != "build" and not source.endswith(".whl"):
        executable = Path(source)
        if not (executable.is_file() and os.access(executable, os.X_OK)):
            raise SetupError(f"--wharf {source}: not an executable file")
        return str(executable.resolve())
    if source == "build":
        problem = _pip_install(interpreter, ["maturin>=1.9,<2"])
        if problem:
            raise SetupError(f"could not install maturin: {problem}")
        _log(f"building wharf (release) from {REPO}; this takes minutes on 2 cores")
        dist_dir.mkdir(parents=True, exist_ok=True)
        for old in dist_dir.glob("wharf_wsgi-*.whl"):
            old.unlink()
        env = {**os.environ, "PYO3_PYTHON": str(interpreter)}
        try:
            done = _run([str(interpreter.parent / "maturin"), "build", "--release", "-o", str(dist_dir)],
                        BUILD_TIMEOUT, cwd=REPO, env=env)
        except subprocess.TimeoutExpired as exc:
            raise SetupError(f"wharf build took longer than {BUILD_TIMEOUT}s") from exc
        wheels = sorted(dist_dir.glob("wharf_wsgi-*.whl"))
        if done.returncode != 0 or not wheels:
            raise SetupError(f"wharf build failed: {done.stdout[-2000:]}")
        wheel = wheels[-1]
    else:
        wheel = Path(source)
        if not wheel.is_file():
            raise SetupError(f"--wharf {source}: no such wheel")
    _log(f"installing {wheel.name}")
    problem = _pip_install(interpreter, ["--force-reinstall", "--no-deps", str(wheel)])
    if problem:
        raise SetupError(f"could not install {wheel}: {problem}")
    return str(venv_wharf)


def versions(interpreter: Path) -> dict[str, str]:
    done = _run([str(interpreter), "-m", "pip", "list", "--format=freeze"], 120)
    wanted = {"granian", "gunicorn", "uwsgi", "bjoern", "flask", "werkzeug", "wharf-wsgi"}
    found = {}
    for line in done.stdout.splitlines():
        name, _, version = line.partition("==")
        if name.lower() in wanted:
            found[name.lower()] = version
    python = _run([str(interpreter), "-c", "import platform; print(platform.python_version())"], 60)
    found["python"] = python.stdout.strip()
    return found
