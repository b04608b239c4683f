//! The committed CRD is current, and its CEL rules accept and reject what they should, evaluated
//! client-side with kube's CEL validator on the committed schema (defaults applied first, as the
//! API server does).

// Helpers outside #[test] functions may panic too: a panic here is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use kube::core::cel::Validator;
use serde_json::{Value, json};

const CRD_PATH: &str = "deploy/crds/wsgiapps.wharf.dev.yaml";

#[test]
fn committed_crd_is_current() {
    let committed = std::fs::read_to_string(common::repo_dir().join(CRD_PATH)).unwrap_or_default();
    let generated = wharf_operator::crd_yaml().expect("crd yaml");
    assert!(
        committed == generated,
        "{CRD_PATH} is stale; run `cargo run -p wharf-operator -- crd > {CRD_PATH}`"
    );
}

#[test]
fn the_scale_subresource_points_at_replicas_and_the_selector() {
    let text = std::fs::read_to_string(common::repo_dir().join(CRD_PATH)).expect("crd file");
    let crd: Value = serde_saphyr::from_str(&text).expect("crd yaml parses");
    let subresources = &crd["spec"]["versions"][0]["subresources"];
    assert_eq!(
        subresources["scale"],
        json!({
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        })
    );
    assert_eq!(subresources["status"], json!({}));
    let status = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"];
    assert_eq!(status["properties"]["selector"]["type"], "string");
}

fn schema() -> Value {
    let text = std::fs::read_to_string(common::repo_dir().join(CRD_PATH)).expect("crd file");
    let crd: Value = serde_saphyr::from_str(&text).expect("crd yaml parses");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn app(spec: Value) -> Value {
    json!({"apiVersion": "wharf.dev/v1alpha1", "kind": "WsgiApp", "metadata": {"name": "t"}, "spec": spec})
}

fn violations(spec: Value) -> Vec<String> {
    match Validator::new().validate_with_defaults(&schema(), &app(spec), None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .into_vec()
            .into_iter()
            .map(|e| e.to_string())
            .collect(),
    }
}

fn base() -> Value {
    json!({"image": "img:1", "app": "pkg.wsgi:application"})
}

fn with(mut spec: Value, key: &str, value: Value) -> Value {
    spec[key] = value;
    spec
}

#[test]
fn valid_specs_pass_every_rule() {
    assert_eq!(violations(base()), Vec::<String>::new());
    let autoscaled = with(
        with(
            base(),
            "autoscaling",
            json!({"metric": "CPU", "minReplicas": 2, "maxReplicas": 5}),
        ),
        "resources",
        json!({"requests": {"cpu": "100m"}}),
    );
    assert_eq!(violations(autoscaled), Vec::<String>::new());
    // Concurrency (the default) needs no CPU request; External takes replicas from the scale
    // subresource.
    assert_eq!(
        violations(with(
            base(),
            "autoscaling",
            json!({"maxReplicas": 5, "scaleDownDelaySeconds": 30, "panicWindowSeconds": 3}),
        )),
        Vec::<String>::new()
    );
    assert_eq!(
        violations(with(
            with(base(), "replicas", json!(4)),
            "autoscaling",
            json!({"metric": "External", "maxReplicas": 5}),
        )),
        Vec::<String>::new()
    );
    let tracing = with(
        base(),
        "tracing",
        json!({"enabled": true, "endpoint": "http://c:4317", "samplingRatio": "0.125"}),
    );
    assert_eq!(violations(tracing), Vec::<String>::new());
    assert_eq!(
        violations(with(
            base(),
            "disruptionBudget",
            json!({"maxUnavailable": "50%"})
        )),
        Vec::<String>::new()
    );
    let exposed = with(
        with(
            base(),
            "ingress",
            json!({"hosts": ["shop.example.com", "*.shop.example.com"], "paths": ["/", "/api"]}),
        ),
        "route",
        json!({"parentRefs": [{"name": "gw", "namespace": "infra"}], "hostnames": ["shop.example.org"]}),
    );
    assert_eq!(violations(exposed), Vec::<String>::new());
    assert_eq!(
        violations(with(
            base(),
            "strategy",
            json!({"maxSurge": 0, "maxUnavailable": 1})
        )),
        Vec::<String>::new()
    );
}

#[test]
fn each_rule_rejects_its_case() {
    let cases = [
        (with(base(), "app", json!("no-colon")), "module:attribute"),
        (with(base(), "app", json!("pkg:app()")), "module:attribute"),
        (
            with(
                with(
                    with(base(), "replicas", json!(2)),
                    "autoscaling",
                    json!({"maxReplicas": 3}),
                ),
                "resources",
                json!({"requests": {"cpu": "1"}}),
            ),
            "either replicas or autoscaling",
        ),
        (
            with(
                with(
                    base(),
                    "autoscaling",
                    json!({"minReplicas": 4, "maxReplicas": 3}),
                ),
                "resources",
                json!({"requests": {"cpu": "1"}}),
            ),
            "minReplicas must not exceed maxReplicas",
        ),
        (
            with(
                base(),
                "autoscaling",
                json!({"metric": "CPU", "maxReplicas": 3}),
            ),
            "resources.requests.cpu",
        ),
        (
            with(
                with(base(), "replicas", json!(2)),
                "autoscaling",
                json!({"maxReplicas": 3}),
            ),
            "either replicas or autoscaling",
        ),
        (
            with(
                base(),
                "autoscaling",
                json!({"maxReplicas": 3, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}),
            ),
            "applies to metric CPU only",
        ),
        (
            with(
                base(),
                "autoscaling",
                json!({"maxReplicas": 3, "panicWindowSeconds": 30, "scaleDownDelaySeconds": 20}),
            ),
            "panicWindowSeconds must not exceed",
        ),
        (
            with(base(), "server", json!({"port": 9000})),
            "port and adminPort must differ",
        ),
        (
            with(
                base(),
                "tracing",
                json!({"enabled": true, "samplingRatio": "1.5"}),
            ),
            "samplingRatio",
        ),
        (
            with(
                base(),
                "tracing",
                json!({"enabled": true, "samplingRatio": "0.5e1"}),
            ),
            "samplingRatio",
        ),
        (
            with(
                base(),
                "tracing",
                json!({"enabled": true, "endpoint": "collector:4317"}),
            ),
            "http://",
        ),
        (
            with(
                base(),
                "disruptionBudget",
                json!({"minAvailable": 1, "maxUnavailable": 1}),
            ),
            "at most one",
        ),
        (
            with(base(), "ingress", json!({"hosts": ["Shop.Example.com"]})),
            "ingress.hosts must be lowercase DNS names",
        ),
        (
            with(
                base(),
                "ingress",
                json!({"hosts": ["shop.example.com"], "paths": ["api"]}),
            ),
            "ingress.paths must start with /",
        ),
        (
            with(
                base(),
                "route",
                json!({"parentRefs": [{"name": "gw"}], "hostnames": ["a..b"]}),
            ),
            "route.hostnames must be lowercase DNS names",
        ),
        (
            with(
                base(),
                "route",
                json!({"parentRefs": [{"name": "gw"}], "paths": ["x"]}),
            ),
            "route.paths must start with /",
        ),
        (
            with(
                base(),
                "strategy",
                json!({"maxSurge": 0, "maxUnavailable": "0%"}),
            ),
            "cannot both be 0",
        ),
        (
            with(base(), "strategy", json!({"maxSurge": "0%"})),
            "cannot both be 0",
        ),
    ];
    for (spec, expected) in cases {
        let found = violations(spec.clone());
        assert!(
            found.iter().any(|v| v.contains(expected)),
            "{spec}: expected a violation mentioning {expected:?}, got {found:?}"
        );
    }
}

#[test]
fn example_manifests_pass_the_cel_rules() {
    for (name, path) in common::cases() {
        let object: Value = serde_saphyr::from_str(&common::wsgiapp_document(&path)).expect("yaml");
        let result = Validator::new().validate_with_defaults(&schema(), &object, None);
        assert!(result.is_ok(), "{name}: {result:?}");
    }
}
