"""Public behaviour is documented: every CLI flag and every metric appears in README.md."""

import re
from pathlib import Path

import requests

from conftest import free_port, wharf_command

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_flag_is_documented():
    import subprocess

    help_text = subprocess.run([*wharf_command(), "--help"], capture_output=True, text=True, check=True).stdout
    flags = set(re.findall(r"--[a-z][a-z-]+", help_text)) - {"--help", "--version"}
    assert len(flags) > 20
    missing = sorted(f for f in flags if f"`{f}" not in README)
    assert not missing, f"flags missing from README.md: {missing}"


def test_every_metric_is_documented(wharf):
    admin = free_port()
    wharf("lifecycle_app:app", "--admin-bind", f"127.0.0.1:{admin}")
    text = requests.get(f"http://127.0.0.1:{admin}/metrics", timeout=10).text
    families = set(re.findall(r"^# TYPE (\w+) ", text, re.M))
    assert "wharf_requests_total" in families
    missing = sorted(f for f in families if f"`{f}" not in README)
    assert not missing, f"metrics missing from README.md: {missing}"


def test_migration_guide_covers_every_gunicorn_setting():
    from gunicorn.config import KNOWN_SETTINGS

    guide = (Path(__file__).resolve().parents[2] / "docs" / "migrating-from-gunicorn.md").read_text()
    missing = sorted(s.name for s in KNOWN_SETTINGS if f"`{s.name}`" not in guide)
    assert not missing, f"gunicorn settings missing from docs/migrating-from-gunicorn.md: {missing}"
    flags = sorted(f for s in KNOWN_SETTINGS for f in (s.cli or []) if f"`{f}`" not in guide)
    assert not flags, f"gunicorn flags missing from docs/migrating-from-gunicorn.md: {flags}"
