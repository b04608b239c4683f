"""Container smoke test: build the images from host-built artifacts and run them like Kubernetes would.

Needs a Docker engine (skipped, with the reason, when none answers) but no registry: the base image
is made locally by scripts/base-image.sh and the wheel and operator binary are compiled on the host.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

from delivery_support import CRD_SOURCE, REPO_ROOT, run
from docker_support import Docker, engine_answers, find_docker

HELLO = REPO_ROOT / "deploy" / "examples" / "hello"
DJANGO = REPO_ROOT / "deploy" / "examples" / "django"
SMOKE_APP = Path(__file__).resolve().parent / "smoke"
PREBUILT = REPO_ROOT / ".cache" / "docker-prebuilt"
RUNTIME_UID = "10001"
READY_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def docker() -> Docker:
    found, reason = find_docker()
    if found is None:
        if engine_answers():
            pytest.fail(f"a Docker engine answers but no client can build with BuildKit: {reason}")
        print(f"SKIP container smoke test: {reason}")
        pytest.skip(f"no Docker engine answers: {reason}")
    return found


def docker_cmd(docker: Docker, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([docker.binary, *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"docker {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def base_image(docker: Docker) -> str:
    proc = run([str(REPO_ROOT / "scripts" / "base-image.sh")], timeout=1200)
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def base_python_tag(docker: Docker, base_image: str) -> str:
    out = docker_cmd(docker, "run", "--rm", base_image, "python", "-c",
                     "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')").stdout
    return out.strip()


def wheel_fits(wheel: Path, python_tag: str) -> bool:
    """Whether a wheel file name says it installs on this CPython (on Linux x86_64)."""
    _name, _version, py_tags, abi, platform = wheel.stem.split("-")[-5:]
    if "linux" not in platform or "x86_64" not in platform:
        return False
    if abi == "abi3":
        return any(t.startswith("cp") and int(t[2:]) <= int(python_tag[2:]) for t in py_tags.split("."))
    return python_tag in py_tags.split(".") and abi == python_tag


def find_or_build_wheel(python_tag: str) -> Path:
    dist = REPO_ROOT / "dist"
    fitting = sorted((w for w in dist.glob("wharf_wsgi-*.whl") if wheel_fits(w, python_tag)),
                     key=lambda w: w.stat().st_mtime)
    if not fitting:
        maturin = Path(sys.executable).with_name("maturin")
        run([str(maturin if maturin.exists() else "maturin"), "build", "--release", "-o", str(dist)],
            cwd=REPO_ROOT, timeout=3600)
        fitting = [w for w in dist.glob("wharf_wsgi-*.whl") if wheel_fits(w, python_tag)]
    if not fitting:
        pytest.fail(f"no wharf wheel for {python_tag} in {dist}")
    return fitting[-1]


def build_operator_binary() -> Path:
    """A debug build is enough for a smoke test and reuses what `cargo test` already compiled."""
    metadata = json.loads(run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                              cwd=REPO_ROOT).stdout)
    run(["cargo", "build", "-p", "wharf-operator"], cwd=REPO_ROOT, timeout=3600)
    return Path(metadata["target_directory"]) / "debug" / "wharf-operator"


@pytest.fixture(scope="module")
def images(docker: Docker, base_image: str, base_python_tag: str) -> dict[str, str]:
    wheel = find_or_build_wheel(base_python_tag)
    operator = build_operator_binary()
    shutil.rmtree(PREBUILT, ignore_errors=True)
    PREBUILT.mkdir(parents=True)
    shutil.copy2(wheel, PREBUILT / wheel.name)
    shutil.copy2(operator, PREBUILT / "wharf-operator")
    args = {
        "BASE_IMAGE": base_image,
        "OPERATOR_BASE_IMAGE": base_image,
        "INJECTOR_BASE_IMAGE": base_image,
        "ARTIFACTS": "prebuilt",
        "PREBUILT_DIR": PREBUILT.relative_to(REPO_ROOT).as_posix(),
        "REVISION": "smoke-test",
    }
    tags = {}
    for target in ("runtime", "injector", "operator"):
        tag = f"wharf-smoke/{target}:test"
        proc = docker.build(REPO_ROOT, target=target, tag=tag, build_args=args)
        if proc.returncode != 0:
            pytest.fail(f"building target {target} failed\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        tags[target] = tag
    return tags


def install_requirements(requirements: Path, target: Path) -> Path:
    """An example's requirements, installed on the host for the container's CPython (same 3.11)."""
    run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--target", str(target), "-r", str(requirements)], timeout=600)
    # pytest's temporary directories are private to the host user; the container runs as another.
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


@pytest.fixture(scope="module")
def hello_deps(docker: Docker, tmp_path_factory) -> Path:
    return install_requirements(HELLO / "requirements.txt", tmp_path_factory.mktemp("hello-deps"))


@pytest.fixture(scope="module")
def django_deps(docker: Docker, tmp_path_factory) -> Path:
    return install_requirements(DJANGO / "requirements.txt", tmp_path_factory.mktemp("django-deps"))


def inspect(docker: Docker, image: str) -> dict:
    return json.loads(docker_cmd(docker, "image", "inspect", image).stdout)[0]


class Container:
    """A detached container with published ports on 127.0.0.1, removed on exit."""

    def __init__(self, docker: Docker, args: list[str]):
        self.docker = docker
        self.name = f"wharf-smoke-{uuid.uuid4().hex[:10]}"
        self._ports: dict[int, int] = {}
        docker_cmd(docker, "run", "--detach", "--name", self.name,
                   "--publish", "127.0.0.1::8000", "--publish", "127.0.0.1::9000", *args)

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc) -> None:
        docker_cmd(self.docker, "rm", "--force", self.name, check=False)

    def port(self, container_port: int) -> int:
        """Host port published for a container port (cached: `docker port` fails once stopped)."""
        if container_port not in self._ports:
            out = docker_cmd(self.docker, "port", self.name, str(container_port)).stdout
            self._ports[container_port] = int(out.strip().splitlines()[0].rsplit(":", 1)[1])
        return self._ports[container_port]

    def running(self) -> bool:
        out = docker_cmd(self.docker, "inspect", "--format", "{{.State.Running}}", self.name).stdout
        return out.strip() == "true"

    def logs(self) -> str:
        proc = docker_cmd(self.docker, "logs", self.name, check=False)
        return proc.stdout + proc.stderr

    def exec(self, *args: str) -> subprocess.CompletedProcess:
        return docker_cmd(self.docker, "exec", self.name, *args, check=False)

    def get(self, port: int, path: str, timeout: float = 10) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port(port), timeout=timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        admin = self.port(9000)
        while time.monotonic() < deadline:
            if not self.running():
                pytest.fail(f"container exited before becoming ready:\n{self.logs()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=2)
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            finally:
                conn.close()
            time.sleep(0.1)  # poll interval, not synchronisation: the loop waits on /readyz
        pytest.fail(f"/readyz not 200 within {READY_TIMEOUT}s:\n{self.logs()}")

    def wait_for_file(self, path: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exec("test", "-e", path).returncode == 0:
                return
            time.sleep(0.05)
        pytest.fail(f"{path} did not appear in the container:\n{self.logs()}")

    def terminate_and_wait(self, timeout: float = 40) -> int:
        docker_cmd(self.docker, "kill", "--signal", "TERM", self.name)
        out = docker_cmd(self.docker, "wait", self.name, timeout=timeout).stdout
        return int(out.strip())


def assert_graceful_drain(container: Container) -> None:
    """An in-flight request survives SIGTERM and the server then exits 0."""
    result: dict[str, object] = {}

    def slow_request() -> None:
        try:
            result["response"] = container.get(8000, "/slow?2", timeout=30)
        except OSError as err:
            result["error"] = err

    container.port(8000)  # resolve the published port while the container still runs
    worker = threading.Thread(target=slow_request)
    worker.start()
    container.wait_for_file("/tmp/slow-request-started")
    exit_code = container.terminate_and_wait()
    worker.join(timeout=30)
    assert "error" not in result, f"in-flight request failed during drain: {result['error']}\n{container.logs()}"
    assert result["response"] == (200, "slow request finished\n"), container.logs()
    assert exit_code == 0, container.logs()


def test_runtime_image_metadata(docker, images):
    config = inspect(docker, images["runtime"])["Config"]
    assert config["User"] == f"{RUNTIME_UID}:{RUNTIME_UID}"
    assert config["Entrypoint"] == ["wharf"]
    assert config["WorkingDir"] == "/app"
    assert {"8000/tcp", "9000/tcp"} <= set(config["ExposedPorts"])
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["WHARF_ADMIN_BIND"] == "0.0.0.0:9000"
    labels = config["Labels"]
    for key in ("title", "source", "licenses", "version", "revision"):
        assert labels[f"org.opencontainers.image.{key}"], key
    assert labels["org.opencontainers.image.revision"] == "smoke-test"


def test_runtime_serves_the_mounted_example_read_only_as_non_root(docker, images, hello_deps):
    args = [
        "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--volume", f"{HELLO}:/app:ro", "--volume", f"{SMOKE_APP}:/smoke:ro",
        "--volume", f"{hello_deps}:/deps:ro", "--env", "PYTHONPATH=/smoke:/deps",
        "--env", "HELLO_VERSION=smoke",
        images["runtime"], "smoke_app:app",
    ]
    with Container(docker, args) as container:
        container.wait_ready()
        assert container.get(8000, "/") == (200, "Hello from wharf! version=smoke\n")
        status, body = container.get(8000, "/info")
        assert status == 200 and json.loads(body)["version"] == "smoke"
        assert container.get(9000, "/livez")[0] == 200
        assert container.exec("id", "-u").stdout.strip() == RUNTIME_UID
        write = container.exec("touch", "/opt/wharf/written")
        assert write.returncode != 0 and "Read-only file system" in write.stderr
        assert_graceful_drain(container)


def test_injected_payload_runs_the_app_from_a_plain_python_image(docker, images, base_image, hello_deps, tmp_path):
    plain = docker_cmd(docker, "run", "--rm", base_image, "python", "-c", "import wharf", check=False)
    assert plain.returncode != 0, "the plain base image must not already contain wharf"
    # Stands in for the pod's emptyDir, which is world-writable like this directory.
    shared = tmp_path / "opt-wharf"
    shared.mkdir()
    shared.chmod(0o777)
    copy = docker_cmd(docker, "run", "--rm", "--read-only", "--user", "54321:54321",
                      "--volume", f"{shared}:/opt/wharf", images["injector"])
    assert (shared / "wharf" / "__main__.py").is_file(), copy.stdout + copy.stderr
    args = [
        "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--user", f"{RUNTIME_UID}:{RUNTIME_UID}",
        "--workdir", "/app", "--volume", f"{shared}:/opt/wharf:ro", "--volume", f"{HELLO}:/app:ro",
        "--volume", f"{SMOKE_APP}:/smoke:ro", "--volume", f"{hello_deps}:/deps:ro",
        "--env", "PYTHONPATH=/opt/wharf:/smoke:/deps", "--env", "HELLO_VERSION=injected",
        base_image, "python", "-m", "wharf", "smoke_app:app",
        "--bind", "0.0.0.0:8000", "--admin-bind", "0.0.0.0:9000",
    ]
    with Container(docker, args) as container:
        container.wait_ready()
        assert container.get(8000, "/") == (200, "Hello from wharf! version=injected\n")
        assert_graceful_drain(container)


def test_django_example_migrates_and_serves_the_admin_with_its_css(docker, images, django_deps):
    # What the example's image and migration Job do, on the runtime image with the project mounted:
    # migrate (SQLite in /tmp here), collect the static files, serve with wharf.
    script = ("python manage.py migrate --noinput && python manage.py collectstatic --noinput"
              " && exec wharf mysite.wsgi:application")
    args = [
        "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--volume", f"{DJANGO}:/app:ro", "--volume", f"{django_deps}:/deps:ro",
        "--env", "PYTHONPATH=/deps", "--env", "DJANGO_SECRET_KEY=smoke-test",
        "--env", "DATABASE_URL=sqlite:////tmp/db.sqlite3", "--env", "DJANGO_STATIC_ROOT=/tmp/static",
        "--env", "DJANGO_ALLOWED_HOSTS=127.0.0.1",
        "--entrypoint", "sh", images["runtime"], "-c", script,
    ]
    with Container(docker, args) as container:
        container.wait_ready()
        assert "Applying admin.0001_initial... OK" in container.logs()
        assert container.get(8000, "/") == (200, "Hello from Django on wharf!\n")
        status, page = container.get(8000, "/admin/login/")
        assert status == 200, page
        assert 'name="csrfmiddlewaretoken"' in page
        stylesheets = re.findall(r'href="(/static/admin/css/[^"]+\.css)"', page)
        assert stylesheets, page
        for href in stylesheets:
            # CompressedManifestStaticFilesStorage: content-hashed names, served by WhiteNoise.
            assert re.search(r"\.[0-9a-f]{12}\.css$", href), href
            status, css = container.get(8000, href)
            assert status == 200 and "{" in css, (href, css[:200])
        assert container.get(8000, "/static/admin/css/missing.css")[0] == 404
        assert container.terminate_and_wait() == 0, container.logs()


def test_injector_image_only_copies_its_payload(docker, images):
    config = inspect(docker, images["injector"])["Config"]
    assert config["User"] == "65532:65532"
    assert config["Cmd"] == ["cp", "-R", "/wharf/.", "/opt/wharf/"]
    listing = docker_cmd(docker, "run", "--rm", "--entrypoint", "ls", images["injector"], "/wharf").stdout.split()
    assert "wharf" in listing
    assert not any(name.endswith(".whl") for name in listing)


def test_operator_image_runs_non_root_and_prints_the_committed_crd(docker, images):
    config = inspect(docker, images["operator"])["Config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["/usr/local/bin/wharf-operator"]
    out = docker_cmd(docker, "run", "--rm", "--read-only", images["operator"], "crd").stdout
    assert yaml.safe_load(out) == yaml.safe_load(CRD_SOURCE.read_text())
    version = docker_cmd(docker, "run", "--rm", images["operator"], "--version").stdout
    assert version.startswith("wharf-operator ")


def test_operator_binary_needs_only_what_distroless_cc_has(docker, images):
    """The default operator base (distroless/cc) has glibc and libgcc, but no OpenSSL or others."""
    out = docker_cmd(docker, "run", "--rm", "--entrypoint", "ldd", images["operator"],
                     "/usr/local/bin/wharf-operator").stdout
    libraries = {line.split()[0].split(".so")[0].rsplit("/", 1)[-1] for line in out.splitlines() if line.strip()}
    allowed = {"linux-vdso", "libgcc_s", "libm", "libc", "ld-linux-x86-64", "libpthread", "libdl", "librt"}
    assert libraries <= allowed, f"unexpected shared libraries: {libraries - allowed}"
