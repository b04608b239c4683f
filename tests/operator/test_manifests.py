"""Validate the operator's manifests against the official Kubernetes schemas.

- the committed CRD and every rendered golden object, with kubernetes-validate in strict mode
  (unknown fields rejected) for the oldest and newest supported Kubernetes versions;
- the example WsgiApps against the CRD's openAPIV3Schema, converted to JSON Schema the way the
  API server reads a structural schema (nullable, int-or-string, unknown fields rejected as
  `kubectl apply` does with strict field validation).
"""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "deploy/crds/wsgiapps.wharf.dev.yaml"
GOLDEN = sorted((ROOT / "crates/wharf-operator/tests/golden").glob("*.yaml"))
EXAMPLES = sorted(
    p
    for p in [*(ROOT / "deploy/examples").glob("*.yaml"), *(ROOT / "deploy/examples/django").glob("*.yaml")]
    if any(d and d.get("kind") == "WsgiApp" for d in yaml.safe_load_all(p.read_text()))
)
DJANGO = sorted((ROOT / "deploy/examples/django").glob("*.yaml"))
# Kinds of other projects' CRDs (Gateway API, Prometheus Operator): no official schema in
# kubernetes-validate; checked against the objects they point at below.
FOREIGN_KINDS = {"HTTPRoute", "PodMonitor"}
# Oldest supported (Chart.yaml kubeVersion), the kubectl bundle's, and the newest.
K8S_VERSIONS = ["1.28.0", "1.33.0", "1.37.0"]


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_there_is_something_to_validate():
    assert GOLDEN, "no golden files found"
    assert {p.name for p in EXAMPLES} >= {"minimal.yaml", "full.yaml"}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_crd_is_a_valid_customresourcedefinition(version):
    (crd,) = docs(CRD)
    kubernetes_validate.validate(crd, version, strict=True)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_rendered_objects_are_valid(path, version):
    objects = docs(path)
    assert {o["kind"] for o in objects} >= {"Deployment", "Service"}
    for obj in objects:
        if obj["kind"] not in FOREIGN_KINDS:
            kubernetes_validate.validate(obj, version, strict=True)


def test_there_are_foreign_kinds_to_check():
    kinds = {o["kind"] for path in GOLDEN for o in docs(path)}
    assert kinds >= FOREIGN_KINDS | {"Ingress", "NetworkPolicy", "Job"}


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_routes_and_monitors_point_at_the_app(path):
    """HTTPRoute and PodMonitor (gateway.networking.k8s.io/v1, monitoring.coreos.com/v1): only
    their documented fields, and they reach the Service's port and the pods' admin port."""
    objects = {o["kind"]: o for o in docs(path)}
    service, deployment = objects["Service"], objects["Deployment"]
    pod = deployment["spec"]["template"]
    if route := objects.get("HTTPRoute"):
        assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
        assert set(route["spec"]) <= {"parentRefs", "hostnames", "rules"}
        for ref in route["spec"]["parentRefs"]:
            assert set(ref) <= {"name", "namespace", "sectionName", "port"} and ref["name"]
        (rule,) = route["spec"]["rules"]
        assert all(m["path"]["type"] == "PathPrefix" and m["path"]["value"].startswith("/") for m in rule["matches"])
        (backend,) = rule["backendRefs"]
        assert backend["name"] == service["metadata"]["name"]
        assert backend["port"] in {p["port"] for p in service["spec"]["ports"] if p["name"] == "http"}
    if monitor := objects.get("PodMonitor"):
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert set(monitor["spec"]) == {"selector", "podMetricsEndpoints"}
        assert monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        ports = {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
        assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
        assert endpoint["interval"][-1] in "smh"


def to_json_schema(schema: dict) -> dict:
    """Structural OpenAPI v3 schema → JSON Schema (draft 2020-12)."""
    s = copy.deepcopy(schema)
    for key in ("x-kubernetes-validations", "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-map-type"):
        s.pop(key, None)
    if s.pop("x-kubernetes-int-or-string", False):
        s = {"anyOf": [{"type": "integer"}, {"type": "string"}], **{k: v for k, v in s.items() if k != "type"}}
    preserve = s.pop("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in s:
        s["properties"] = {k: to_json_schema(v) for k, v in s["properties"].items()}
        if not preserve and "additionalProperties" not in s:
            s["additionalProperties"] = False
    if isinstance(s.get("additionalProperties"), dict):
        s["additionalProperties"] = to_json_schema(s["additionalProperties"])
    if "items" in s:
        s["items"] = to_json_schema(s["items"])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in s:
            s[key] = [to_json_schema(x) for x in s[key]]
    if s.pop("nullable", False):
        if "type" in s:
            s["type"] = [s["type"], "null"]
        if "enum" in s and None not in s["enum"]:
            s["enum"] = [*s["enum"], None]
    return s


@pytest.fixture(scope="module")
def wsgiapp_schema():
    (crd,) = docs(CRD)
    (version,) = crd["spec"]["versions"]
    root = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    # The API server adds these to every custom resource's root schema.
    root["properties"].update({"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                               "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}})
    schema = to_json_schema(root)
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_match_the_crd_schema(path, wsgiapp_schema):
    namespaces = {o["metadata"]["name"] for o in docs(path) if o["kind"] == "Namespace"}
    for obj in docs(path):
        if obj["apiVersion"] != "wharf.dev/v1alpha1":
            kubernetes_validate.validate(obj, K8S_VERSIONS[0], strict=True)
            continue
        assert obj["apiVersion"] == "wharf.dev/v1alpha1"
        jsonschema.validate(obj, wsgiapp_schema, cls=jsonschema.Draft202012Validator)
        # `kubectl apply -f` of the example alone must work: a namespace other than default is
        # created by the same file, before it is used.
        namespace = obj["metadata"].get("namespace", "default")
        assert namespace == "default" or namespace in namespaces, f"{path.name}: namespace {namespace} is not created"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_django_example_objects_are_valid(version):
    assert {p.name for p in DJANGO} == {"postgres.yaml", "wsgiapp.yaml"}
    kinds = []
    for path in DJANGO:
        for obj in docs(path):
            kinds.append(obj["kind"])
            if obj["apiVersion"] != "wharf.dev/v1alpha1":
                kubernetes_validate.validate(obj, version, strict=True)
    assert kinds.count("WsgiApp") == 1


def test_schema_rejects_what_it_should(wsgiapp_schema):
    good = {"apiVersion": "wharf.dev/v1alpha1", "kind": "WsgiApp", "metadata": {"name": "x"},
            "spec": {"image": "i", "app": "a:b"}}
    jsonschema.validate(good, wsgiapp_schema)
    bad_specs = [
        {"app": "a:b"},                                   # image missing
        {"image": "i", "app": "a:b", "replica": 2},       # typo'd field
        {"image": "i", "app": "a:b", "replicas": -1},
        {"image": "i", "app": "a:b", "runtime": "Sidecar"},
        {"image": "i", "app": "a:b", "server": {"port": 70000}},
        {"image": "i", "app": "a:b", "tracing": {"samplingRatio": 0.5}},  # no floats
        {"image": "i", "app": "a:b", "ingress": {"paths": ["/"]}},          # hosts required
        {"image": "i", "app": "a:b", "route": {"hostnames": ["a.example"]}},  # parentRefs required
        {"image": "i", "app": "a:b", "migrate": {"command": []}},
        {"image": "i", "app": "a:b", "sidecars": [{"image": "x"}]},        # container without a name
        {"image": "i", "app": "a:b", "podOverrides": "spec"},
        {"image": "i", "app": "a:b", "strategy": {"maxSurge": 1.5}},
    ]
    for spec in bad_specs:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**good, "spec": spec}, wsgiapp_schema)
