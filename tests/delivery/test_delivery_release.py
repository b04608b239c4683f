"""The release workflow publishes what the rest of the repository points at: the chart's default
images, the example manifests' images and the hello Dockerfile's base all name a tag that
.github/workflows/release.yml pushes, for the one version the repository carries."""

from __future__ import annotations

import re
import tomllib

import yaml

from delivery_support import CHART, REPO_ROOT

WORKFLOW_PATH = REPO_ROOT / ".github" / "workflows" / "release.yml"
WORKFLOW = yaml.safe_load(WORKFLOW_PATH.read_text())
REGISTRY = "ghcr.io/wharf-dev"


def version() -> str:
    return tomllib.loads((REPO_ROOT / "Cargo.toml").read_text())["workspace"]["package"]["version"]


def published() -> set[str]:
    """Every image:tag the workflow publishes, with its shell variables filled in."""
    env = WORKFLOW["env"]
    script = "\n".join(step.get("run", "") for step in WORKFLOW["jobs"]["manifests"]["steps"])
    tags = set()
    for line in script.splitlines():
        match = re.match(r'\s*join "([^"]+)"', line)
        if not match:
            continue
        template = match.group(1).replace("${registry}", REGISTRY).replace("${VERSION}", version())
        template = template.replace("${DEFAULT_PYTHON}", env["DEFAULT_PYTHON"])
        pythons = env["PYTHONS"].split() if "${python}" in template else [None]
        names = ["wharf-injector", "wharf-operator", "hello", "hello-plain"] if "${name}" in template else [None]
        for python in pythons:
            for name in names:
                tags.add(template.replace("${python}", python or "").replace("${name}", name or ""))
    assert not any("$" in tag for tag in tags), tags
    return tags


def test_one_version_everywhere():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["version"] == chart["appVersion"] == version()
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert pyproject["name"] == "wharf-wsgi" and "version" in pyproject["dynamic"]


def test_every_supported_python_gets_a_runtime_image():
    tags = published()
    for minor in range(9, 14):
        assert f"{REGISTRY}/wharf:{version()}-python3.{minor}" in tags
    assert f"{REGISTRY}/wharf:{version()}" in tags


def test_chart_defaults_are_published_images():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    tags = published()
    for image in (values["image"], values["injector"]["image"]):
        assert image["tag"] == "", "an empty tag means the chart's appVersion"
        assert f"{image['repository']}:{version()}" in tags


def test_examples_use_published_images():
    tags = published()
    examples = [REPO_ROOT / "deploy" / "examples" / "minimal.yaml",
                *sorted((REPO_ROOT / "deploy" / "examples" / "hello").glob("wsgiapp-*.yaml"))]
    for path in examples:
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["spec"]["image"] in tags, f"{path.name}: {doc['spec']['image']} is not published"
    dockerfile = (REPO_ROOT / "deploy" / "examples" / "hello" / "Dockerfile").read_text()
    base = re.search(r"^ARG WHARF_IMAGE=(\S+)$", dockerfile, re.M).group(1)
    assert base in tags


def test_wheels_for_every_platform_and_publishing_only_on_tags():
    jobs = WORKFLOW["jobs"]
    matrix = jobs["linux-wheels"]["strategy"]["matrix"]
    assert set(matrix["target"]) == {"x86_64", "aarch64"}
    assert set(matrix["libc"]) == {"2014", "musllinux_1_2"}
    assert {entry["target"] for entry in jobs["macos-wheels"]["strategy"]["matrix"]["include"]} == {"x86_64", "aarch64"}
    assert any(step.get("with", {}).get("command") == "sdist" for step in jobs["sdist"]["steps"])
    for name in ("pypi", "manifests"):
        assert jobs[name]["if"] == "startsWith(github.ref, 'refs/tags/v')"
    assert jobs["chart"]["needs"] == ["version", "manifests"]
    for name, job in jobs.items():
        needs = job.get("needs", [])
        assert set([needs] if isinstance(needs, str) else needs) <= set(jobs), name
