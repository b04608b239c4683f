"""Plain manifests in deploy/operator/ are the chart's rendering, and valid Kubernetes objects."""

from __future__ import annotations

import os
import sys

import kubernetes_validate
import pytest
import yaml

from delivery_support import CHART, CRD_SOURCE, KUBERNETES_VERSIONS, REPO_ROOT, load_documents, run

PLAIN = REPO_ROOT / "deploy" / "operator" / "wharf-operator.yaml"


def test_plain_manifests_and_chart_crd_are_in_sync(k8s_bin):
    env = dict(os.environ, PYTHON=sys.executable)
    run([str(REPO_ROOT / "deploy" / "operator" / "generate.sh"), "--check"], env=env)


def test_chart_crd_copy_equals_deploy_crds():
    copy = CHART / "files" / "crds" / "wsgiapps.wharf.dev.yaml"
    assert copy.read_bytes() == CRD_SOURCE.read_bytes()


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_plain_manifests_validate(version):
    objects = load_documents(PLAIN.read_text())
    kinds = [o["kind"] for o in objects]
    assert kinds[0] == "Namespace"
    assert {"CustomResourceDefinition", "Deployment", "ClusterRole", "ServiceAccount"} <= set(kinds)
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)
    namespaced = [o for o in objects if o["kind"] not in
                  ("Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding")]
    assert {o["metadata"]["namespace"] for o in namespaced} == {"wharf-system"}


def test_plain_manifests_carry_no_helm_only_annotations():
    for obj in load_documents(PLAIN.read_text()):
        annotations = obj["metadata"].get("annotations") or {}
        assert "helm.sh/resource-policy" not in annotations, obj["metadata"]["name"]


def test_hello_example_manifests_match_the_crd_schema():
    jsonschema = pytest.importorskip("jsonschema")
    crd = yaml.safe_load(CRD_SOURCE.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["storage"]]
    schema = version["schema"]["openAPIV3Schema"]
    for name in ("wsgiapp-bundled.yaml", "wsgiapp-injected.yaml"):
        manifest = yaml.safe_load((REPO_ROOT / "deploy" / "examples" / "hello" / name).read_text())
        assert manifest["apiVersion"] == f"{crd['spec']['group']}/{version['name']}"
        assert manifest["kind"] == crd["spec"]["names"]["kind"]
        jsonschema.validate(manifest, schema)
