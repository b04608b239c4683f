"""The Helm chart: lint, schema validation of every rendered object, and its behaviour per values."""

from __future__ import annotations

import json
import re
import subprocess

import kubernetes_validate
import pytest
import yaml

from delivery_support import CHART, CRD_SOURCE, KUBERNETES_VERSIONS, REPO_ROOT, VALUES_DIR, find, only, run

VALUES_FILES = [None, "namespaced.yaml", "ha.yaml", "observability.yaml"]
# Kinds that belong to CRDs of other projects: no official schema, checked structurally below.
FOREIGN_KINDS = {"ServiceMonitor"}

# The operator's needs as documented in docs/operator.md ("RBAC"); anything more is a finding.
OPERATOR_RULES = {
    ("wharf.dev", "wsgiapps"): {"get", "list", "watch"},
    ("wharf.dev", "wsgiapps/status"): {"get", "patch"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "patch"},
    ("", "services"): {"get", "list", "watch", "create", "patch"},
    ("autoscaling", "horizontalpodautoscalers"): {"get", "list", "watch", "create", "patch", "delete"},
    ("policy", "poddisruptionbudgets"): {"get", "list", "watch", "create", "patch", "delete"},
    ("networking.k8s.io", "ingresses"): {"get", "list", "watch", "create", "patch", "delete"},
    ("networking.k8s.io", "networkpolicies"): {"get", "list", "watch", "create", "patch", "delete"},
    ("batch", "jobs"): {"get", "list", "watch", "create", "patch", "delete"},
    ("gateway.networking.k8s.io", "httproutes"): {"get", "list", "watch", "create", "patch", "delete"},
    ("monitoring.coreos.com", "podmonitors"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "configmaps"): {"get", "list", "watch"},
    ("", "secrets"): {"get", "list", "watch"},
    ("", "pods"): {"list", "watch"},
    ("", "pods/log"): {"get"},
    ("events.k8s.io", "events"): {"create", "patch"},
}
LEASE_RULES = {("coordination.k8s.io", "leases"): {"get", "create", "update"}}


def rules_of(role: dict) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def operator_container(objects: list[dict]) -> dict:
    deployment = only(objects, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


@pytest.mark.parametrize("values", VALUES_FILES)
def test_helm_lint_strict(helm, values):
    cmd = [helm, "lint", "--strict", str(CHART)]
    if values:
        cmd += ["--values", str(VALUES_DIR / values)]
    out = run(cmd).stdout
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("values", VALUES_FILES)
def test_every_rendered_object_matches_the_kubernetes_schema(render, values, version):
    objects = render(values)
    assert objects
    for obj in objects:
        if obj["kind"] in FOREIGN_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} invalid for {version}: {err}")


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["replicaCount=2", "leaderElection.enabled=false"], "leaderElection/enabled"),
        (["replicaCount=0"], "replicaCount"),
        (["replicaCout=2"], "replicaCout"),
        (["watchNamespace=Not_A_Namespace"], "watchNamespace"),
        (["log.format=xml"], "log/format"),
        (["serviceMonitor.enabled=true", "metrics.service.enabled=false"], "metrics.service.enabled"),
    ],
)
def test_invalid_values_are_rejected(helm, sets, message):
    cmd = [helm, "template", "wharf-operator", str(CHART)]
    for s in sets:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode != 0, proc.stdout
    assert message in proc.stderr


def test_defaults_watch_all_namespaces_with_a_cluster_role(render):
    objects = render()
    role = only(objects, "ClusterRole", "wharf-operator")
    assert rules_of(role) == OPERATOR_RULES
    binding = only(objects, "ClusterRoleBinding", "wharf-operator")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": "wharf-operator"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "wharf-operator",
                                    "namespace": "wharf-system"}]
    assert not any(a.startswith("--namespace") for a in operator_container(objects)["args"])


def test_namespaced_mode_grants_nothing_cluster_wide(render):
    objects = render("namespaced.yaml")
    assert find(objects, "ClusterRole") == [] and find(objects, "ClusterRoleBinding") == []
    role = only(objects, "Role", "wharf-operator")
    assert role["metadata"]["namespace"] == "shop"
    assert rules_of(role) == OPERATOR_RULES
    binding = only(objects, "RoleBinding", "wharf-operator")
    assert binding["metadata"]["namespace"] == "shop"
    assert binding["subjects"][0]["namespace"] == "wharf-system"
    assert "--namespace=shop" in operator_container(objects)["args"]
    lease_role = only(objects, "Role", "wharf-operator-leader-election")
    assert lease_role["metadata"]["namespace"] == "wharf-system"


@pytest.mark.parametrize("values", VALUES_FILES)
def test_leases_are_only_granted_in_the_release_namespace(render, values):
    objects = render(values)
    for role in find(objects, "ClusterRole") + find(objects, "Role"):
        grants = rules_of(role)
        if role["metadata"]["name"].endswith("-leader-election"):
            assert grants == LEASE_RULES
            assert role["metadata"]["namespace"] == "wharf-system"
        else:
            assert ("coordination.k8s.io", "leases") not in grants
            # Secrets are read for config rollouts (their data is hashed), never written.
            assert grants.get(("", "secrets"), set()) <= {"get", "list", "watch"}


def test_two_replicas_elect_a_leader_and_keep_one_up(render):
    objects = render("ha.yaml")
    deployment = only(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert "--leader-election=true" in operator_container(objects)["args"]
    assert "--lease-name=wharf-operator" in operator_container(objects)["args"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    pdb = only(objects, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert operator_container(objects)["image"] == (
        "ghcr.io/wharf-dev/wharf-operator@sha256:"
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
    assert deployment["spec"]["template"]["spec"]["topologySpreadConstraints"][0]["maxSkew"] == 1


def test_leader_election_can_be_turned_off_for_a_single_replica(render):
    objects = render(None, "leaderElection.enabled=false")
    assert "--leader-election=false" in operator_container(objects)["args"]
    assert find(objects, "Role", "wharf-operator-leader-election") == []


@pytest.mark.parametrize("values", VALUES_FILES)
def test_operator_pod_meets_the_restricted_pod_security_standard(render, values):
    pod = only(render(values), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert "memory" in container["resources"]["limits"]
        assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    assert "hostNetwork" not in pod and "volumes" not in pod


def test_probes_and_metrics_listener_share_one_port(render):
    container = operator_container(render())
    assert "--metrics-bind=0.0.0.0:8080" in container["args"]
    assert container["ports"] == [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["startupProbe"]["httpGet"]["path"] == "/livez"


def test_injector_image_defaults_to_the_chart_version(render, helm):
    container = operator_container(render())
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert f"--injector-image=ghcr.io/wharf-dev/wharf-injector:{app_version}" in container["args"]
    assert f"ghcr.io/wharf-dev/wharf-operator:{app_version}" == container["image"]


def test_service_monitor_scrapes_the_metrics_service(render):
    objects = render("observability.yaml")
    monitor = only(objects, "ServiceMonitor")
    service = only(objects, "Service")
    deployment = only(objects, "Deployment")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert find(render(), "ServiceMonitor") == []


def test_grafana_dashboard_is_a_configmap_for_the_sidecar(render):
    objects = render("observability.yaml")
    config_map = only(objects, "ConfigMap", "wharf-operator-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "wharf"}
    dashboard = json.loads(config_map["data"]["wharf-apps.json"])
    titles = [p["title"] for p in dashboard["panels"]]
    assert titles == ["Request rate by status", "Latency percentiles", "Saturation: Python threads",
                      "Queued requests and queue wait", "Rejected requests by reason",
                      "Worker restarts by reason"]
    queries = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    # Every series the dashboard reads is one wharf exports (README's metrics table).
    readme = (REPO_ROOT / "README.md").read_text()
    metrics = {re.sub(r"_(bucket|sum|count)$", "", m) for m in re.findall(r"wharf_[a-z_]+", queries)}
    assert len(metrics) >= 8, metrics
    for metric in metrics:
        assert f"| `{metric}" in readme, metric
    assert find(render(), "ConfigMap") == []


def test_tracing_becomes_standard_otel_variables(render):
    env = env_of(operator_container(render("observability.yaml")))
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4317"
    assert env["OTEL_TRACES_SAMPLER_ARG"] == "0.25"
    assert env["RUST_BACKTRACE"] == "1"
    assert "OTEL_SDK_DISABLED" not in env
    assert env_of(operator_container(render()))["OTEL_SDK_DISABLED"] == "true"


def test_crd_is_rendered_unless_disabled(render):
    assert len(find(render(), "CustomResourceDefinition")) == 1
    assert find(render("observability.yaml"), "CustomResourceDefinition") == []


def strictly_equal(a, b) -> bool:
    """Deep equality that also compares types, so 1 != 1.0 and "1" != 1."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(strictly_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(strictly_equal(x, y) for x, y in zip(a, b))
    return a == b


def test_rendered_crd_is_deploy_crds_plus_labels(render):
    source = yaml.safe_load(CRD_SOURCE.read_text())
    rendered = only(render(), "CustomResourceDefinition")
    metadata = rendered["metadata"]
    assert metadata["annotations"]["helm.sh/resource-policy"] == "keep"
    assert metadata["labels"]["app.kubernetes.io/name"] == "wharf-operator"
    stripped = dict(rendered, metadata={k: v for k, v in metadata.items()
                                        if k not in ("labels", "annotations")})
    source_meta = {k: v for k, v in source["metadata"].items() if k not in ("labels", "annotations")}
    assert strictly_equal(stripped, dict(source, metadata=source_meta))


def test_keep_annotation_is_optional(render):
    crd = only(render(None, "crds.keep=false"), "CustomResourceDefinition")
    assert "helm.sh/resource-policy" not in crd["metadata"].get("annotations", {})
