"""Settings from a TOML file (--config, [tool.wharf] in pyproject.toml): precedence against the
environment and the command line, errors naming key and file, --print-config, --check-config."""

import signal
import tomllib

import requests

from conftest import wait_for
from test_cli import run_wharf


def write(path, text):
    path.write_text(text)
    return path


def test_command_line_beats_environment_beats_file_beats_default(wharf, tmp_path):
    config = write(tmp_path / "wharf.toml", 'threads = 4\nroot-path = "/file"\naccess-log = true\n')
    server = wharf("pep_apps:environ_app", "--config", str(config), "--threads", "1",
                   env={"WHARF_ROOT_PATH": "/env"})
    env = requests.get(server.url + "/env/x", timeout=10).json()
    assert env["wsgi.multithread"] == ["bool", False]  # --threads 1 beat the file's 4
    assert env["SCRIPT_NAME"] == ["str", "/env"]  # WHARF_ROOT_PATH beat the file
    wait_for(lambda: "GET /env/x" in server.stdout())  # the file's access-log beat the default


def test_print_config_reports_values_and_sources(tmp_path):
    config = write(tmp_path / "wharf.toml", 'app = "pep_apps:environ_app"\nthreads = 4\nbind = [":9000", "unix:/tmp/w.sock"]\n')
    result = run_wharf("--config", str(config), "--print-config", "--workers", "3",
                       env={"WHARF_TIMEOUT": "7.5"})
    assert result.returncode == 0, result.stderr
    settings = tomllib.loads(result.stdout)
    assert settings["app"] == "pep_apps:environ_app"
    assert settings["threads"] == 4 and settings["workers"] == 3 and settings["timeout"] == 7.5
    assert settings["bind"] == [":9000", "unix:/tmp/w.sock"]
    assert settings["backlog"] == 1024
    lines = {line.split(" = ")[0]: line for line in result.stdout.splitlines() if " = " in line}
    assert lines["threads"].endswith(f"# {config}")
    assert lines["workers"].endswith("# command line")
    assert lines["timeout"].endswith("# environment WHARF_TIMEOUT")
    assert lines["backlog"].endswith("# default")
    # The output is a config file: fed back, it gives the same settings.
    again = run_wharf("--config", str(write(tmp_path / "again.toml", result.stdout)), "--print-config")
    assert tomllib.loads(again.stdout) == settings


def test_pyproject_tool_wharf_in_the_chdir_directory(wharf, tmp_path):
    (tmp_path / "shop_site.py").write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [environ['SCRIPT_NAME'].encode()]\n")
    write(tmp_path / "pyproject.toml", '[project]\nname = "shop"\n\n[tool.wharf]\napp = "shop_site:app"\nroot-path = "/shop"\n')
    server = wharf(None, "--chdir", str(tmp_path))
    assert requests.get(server.url + "/shop/", timeout=10).text == "/shop"
    ignored = run_wharf("--chdir", str(tmp_path), "--no-config", "--print-config")
    assert 'root-path = ""' in ignored.stdout and "# app: not set" in ignored.stdout


def test_workers_keep_the_settings_the_supervisor_read(wharf, tmp_path):
    """The file is read once: a broken edit does not reach workers started later."""
    config = write(tmp_path / "wharf.toml", 'root-path = "/a"\n')
    server = wharf("pep_apps:environ_app", "--config", str(config))
    write(config, "threads = [\n")
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: server.log().count("worker ready") >= 2, timeout=20)
    env = requests.get(server.url + "/a/x", timeout=10).json()
    assert env["SCRIPT_NAME"] == ["str", "/a"]


def test_config_errors_name_the_key_and_the_file(tmp_path):
    cases = [
        ("theads = 4\n", "unknown key `theads`; known keys: access-log"),
        ("max_requests = 10\n", "unknown key `max_requests`; did you mean `max-requests`?"),
        ("preload = true\n", "unknown key `preload`: wharf already imports the app once and forks"),
        ("threads = 0\n", "`threads`: invalid value '0' for '--threads <THREADS>'"),
        ("threads = [1]\n", "`threads` must be a string or a number"),
        ("reload = 1\n", "`reload` must be true or false"),
        ('bind = ["nonsense"]\n', "`bind`: invalid value 'nonsense'"),
        ("threads = \n", "is not valid TOML"),
    ]
    for text, message in cases:
        config = write(tmp_path / "wharf.toml", text)
        result = run_wharf("--config", str(config), "pep_apps:environ_app")
        assert result.returncode == 2, (text, result.stderr)
        assert str(config) in result.stderr and message in result.stderr, (text, result.stderr)
        assert "panicked" not in result.stderr

    pyproject = write(tmp_path / "pyproject.toml", "[tool.wharf]\nworker-class = 'gevent'\n")
    result = run_wharf("--chdir", str(tmp_path), "pep_apps:environ_app")
    assert result.returncode == 2
    assert f"{pyproject} [tool.wharf]: unknown key `worker-class`: wharf has one worker model" in result.stderr

    gunicorn_conf = write(tmp_path / "gunicorn.conf.py", "workers = 4\nbind = '0.0.0.0:8000'\nimport os\n")
    result = run_wharf("-c", str(gunicorn_conf), "pep_apps:environ_app")
    assert result.returncode == 2 and "TOML, not Python" in result.stderr

    result = run_wharf("--config", str(tmp_path / "missing.toml"), "pep_apps:environ_app")
    assert result.returncode == 2 and "cannot read config file" in result.stderr


def test_check_config_imports_the_app_and_exits(tmp_path):
    ok = run_wharf("--check-config", "pep_apps:create_app", "--factory", "--bind", "127.0.0.1:1")
    assert ok.returncode == 0, ok.stderr
    assert "configuration OK" in ok.stderr and "listening on" not in ok.stderr
    assert run_wharf("--check-config", "no_such_module_xyz:app").returncode == 3
    assert run_wharf("--check-config", "pep_apps:not_callable").returncode == 3
    assert run_wharf("--check-config", "--chdir", "/nonexistent", "pep_apps:app").returncode == 2
    bad = write(tmp_path / "wharf.toml", "threads = -1\n")
    assert run_wharf("--check-config", "--config", str(bad), "pep_apps:environ_app").returncode == 2
    assert run_wharf("--check-config", "--log-level", "loud", "pep_apps:environ_app").returncode == 2
