"""The command line: errors are one clear line with the documented exit code; every way of
starting the server works."""

import os
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import APPS_DIR, wharf_command


def run_wharf(*args, env=None, timeout=30):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("WHARF_")}
    full_env.update(env or {})
    return subprocess.run(
        [*wharf_command(), *args], capture_output=True, text=True, timeout=timeout, env=full_env, cwd=APPS_DIR
    )


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["no_such_module_xyz:app"], 3, "cannot import module \"no_such_module_xyz\": ModuleNotFoundError"),
        (["pep_apps:missing_attr"], 3, "module \"pep_apps\" has no attribute \"missing_attr\""),
        (["pep_apps:not_callable"], 3, "pep_apps:not_callable is not callable (it is int)"),
        (["broken_import:app"], 3, "cannot import module \"broken_import\": ZeroDivisionError: division by zero"),
        (["bad shape!"], 2, "invalid APP"),
        (["--threads", "0", "pep_apps:environ_app"], 2, "--threads"),
        (["--bind", "nonsense", "pep_apps:environ_app"], 2, "nonsense"),
        (["--no-such-flag", "pep_apps:environ_app"], 2, "--no-such-flag"),
        (["--log-level", "loud", "pep_apps:environ_app"], 2, "invalid --log-level"),
        (["--chdir", "/nonexistent/dir", "pep_apps:environ_app"], 2, "cannot change directory"),
        ([], 2, "APP"),
    ],
)
def test_startup_errors_are_one_clear_line(args, code, message):
    result = run_wharf(*args)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "panicked" not in result.stderr and "RUST_BACKTRACE" not in result.stderr


def test_error_inside_imported_module_shows_its_traceback():
    result = run_wharf("broken_import:app")
    assert "Traceback (most recent call last)" in result.stderr
    assert "broken_import.py" in result.stderr


def test_bind_conflict_is_reported(wharf, tmp_path):
    server = wharf("pep_apps:environ_app")
    result = run_wharf("--bind", f"127.0.0.1:{server.port}", "pep_apps:environ_app")
    assert result.returncode == 1
    assert f"cannot listen on http://127.0.0.1:{server.port}" in result.stderr


def test_help_and_version_exit_zero():
    assert run_wharf("--help").returncode == 0
    version = run_wharf("--version")
    assert version.returncode == 0 and version.stdout.startswith("wharf ")


def test_module_without_attribute_means_application(wharf):
    server = wharf("default_app")
    assert requests.get(server.url, timeout=10).text == "default application"


def test_factory_flag_calls_the_attribute(wharf):
    server = wharf("pep_apps:create_app", "--factory")
    assert requests.get(server.url, timeout=10).text == "from factory"


def test_settings_from_environment(wharf):
    server = wharf("pep_apps:environ_app", env={"WHARF_THREADS": "1", "WHARF_ROOT_PATH": "/mnt"})
    env = requests.get(server.url + "/mnt/x", timeout=10).json()
    assert env["wsgi.multithread"] == ["bool", False]
    assert env["SCRIPT_NAME"] == ["str", "/mnt"]


def test_python_dash_m_and_sigint_exit_cleanly(tmp_path):
    log = tmp_path / "log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wharf", "--bind", "127.0.0.1:0", "--chdir", str(APPS_DIR), "pep_apps:environ_app"],
            stderr=err,
        )
        try:
            import time

            deadline = time.monotonic() + 20
            while "worker ready" not in log.read_text():
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.02)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    assert "KeyboardInterrupt" not in text
    assert "worker drained, exiting" in text and "all workers stopped; exiting" in text


def test_access_log_combined_and_json(wharf):
    import json

    server = wharf("pep_apps:environ_app", "--access-log")
    requests.get(server.url + "/logged?x=1", headers={"User-Agent": "ua/1", "Referer": "http://r/"}, timeout=10)
    json_server = wharf("pep_apps:environ_app", "--access-log", "--access-log-format", "json")
    requests.get(json_server.url + "/j", timeout=10)
    from conftest import wait_for

    line = wait_for(lambda: server.stdout().strip())
    assert '"GET /logged?x=1 HTTP/1.1" 200 ' in line
    assert line.startswith("127.0.0.1 - - [") and '"http://r/" "ua/1"' in line
    record = json.loads(wait_for(lambda: json_server.stdout().strip()))
    assert record["method"] == "GET" and record["target"] == "/j" and record["status"] == 200
    assert record["bytes"] > 0 and record["completed"] is True


@pytest.mark.parametrize("spec", [":{port}", "{port}", "tcp://:{port}"])
def test_port_only_binds_every_ipv4_interface(wharf, spec):
    from conftest import free_port

    port = free_port()
    server = wharf("pep_apps:environ_app", bind=spec.format(port=port))
    assert f"listening on http://0.0.0.0:{port}" in server.log()
    assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200


def gunicorn_only_flags():
    """Every option spelling gunicorn has that `wharf --help` does not list."""
    from gunicorn.config import KNOWN_SETTINGS

    help_text = run_wharf("--help").stdout
    ours = set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", help_text))
    return sorted({flag for s in KNOWN_SETTINGS for flag in (s.cli or []) if flag not in ours})


def test_gunicorn_habits_get_a_targeted_message():
    flags = gunicorn_only_flags()
    assert {"--preload", "--certfile", "--pid", "-k", "--daemon", "-t"} <= set(flags)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = dict(zip(flags, pool.map(lambda flag: run_wharf(flag, "x", "pep_apps:environ_app"), flags)))
    for flag, result in results.items():
        assert result.returncode == 2, (flag, result.stderr)
        assert result.stderr.startswith(f"wharf: error: wharf has no {flag}: "), (flag, result.stderr)
        assert "docs/migrating-from-gunicorn.md" in result.stderr
        assert "similar argument" not in result.stderr
    assert "TLS" in results["--certfile"].stderr
    assert "systemd" in results["--daemon"].stderr
    assert "--no-preload" in results["--preload"].stderr
    assert "use --timeout" in results["-t"].stderr


def test_unknown_flags_still_get_clap_suggestions():
    result = run_wharf("--thread", "2", "pep_apps:environ_app")
    assert result.returncode == 2 and "--threads" in result.stderr
