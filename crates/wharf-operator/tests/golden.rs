//! Golden files of the rendered children, plus properties every rendering must have.
//! Regenerate with `UPDATE_GOLDEN=1 cargo test -p wharf-operator --test golden`.

// Helpers outside #[test] functions may panic too: a panic here is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::Serialize;
use wharf_operator::crd::{AutoscalingMetric, Runtime, WsgiApp};
use wharf_operator::render::{self, Children, RenderConfig, deployment, labels, runtime};

fn config() -> RenderConfig {
    RenderConfig {
        default_injector_image: Some("registry.example.com/wharf-injector:default".to_owned()),
        operator_namespace: "wharf-system".to_owned(),
    }
}

fn doc<K: Resource<DynamicType = ()> + Serialize>(object: &K) -> String {
    let mut value = serde_json::to_value(object).expect("serializes");
    let mut ordered = serde_json::Map::new();
    ordered.insert(
        "apiVersion".to_owned(),
        K::api_version(&()).into_owned().into(),
    );
    ordered.insert("kind".to_owned(), K::kind(&()).into_owned().into());
    if let Some(map) = value.as_object_mut() {
        ordered.append(map);
    }
    format!("---\n{}", serde_saphyr::to_string(&ordered).expect("yaml"))
}

/// Every rendered child, in apply order: kind, metadata and YAML document.
fn objects(children: &Children) -> Vec<(String, &ObjectMeta, String)> {
    fn add<'a, K: Resource<DynamicType = ()> + Serialize>(
        out: &mut Vec<(String, &'a ObjectMeta, String)>,
        object: Option<&'a K>,
    ) {
        if let Some(object) = object {
            out.push((K::kind(&()).into_owned(), object.meta(), doc(object)));
        }
    }
    let mut out = Vec::new();
    add(&mut out, Some(&children.deployment));
    add(&mut out, Some(&children.service));
    add(&mut out, children.hpa.as_ref());
    add(&mut out, children.pdb.as_ref());
    add(&mut out, children.ingress.as_ref());
    add(&mut out, children.route.as_ref());
    add(&mut out, children.pod_monitor.as_ref());
    add(&mut out, children.network_policy.as_ref());
    add(&mut out, children.migration.as_ref());
    out
}

fn documents(children: &Children) -> String {
    objects(children).into_iter().map(|(_, _, d)| d).collect()
}

#[test]
fn rendered_children_match_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut stale = Vec::new();
    for (name, input) in common::cases() {
        let app = common::load(&input);
        let children = render::render(&app, &config()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let rendered = documents(&children);
        let path = common::crate_dir().join(format!("tests/golden/{name}.yaml"));
        if update {
            std::fs::write(&path, &rendered).expect("write golden file");
            continue;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        if expected != rendered {
            stale.push(format!(
                "{name}: rendered output differs from {}\n{rendered}",
                path.display()
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "{}\n(run with UPDATE_GOLDEN=1 after checking the diff)",
        stale.join("\n")
    );
}

#[test]
fn every_child_is_owned_labelled_and_colocated() {
    for (name, input) in common::cases() {
        let app = common::load(&input);
        let children = render::render(&app, &config()).expect("renders");
        for (kind, meta, _) in objects(&children) {
            let owners = meta.owner_references.as_deref().unwrap_or_default();
            assert_eq!(owners.len(), 1, "{name} {kind}");
            let owner = &owners[0];
            assert_eq!(Some(&owner.uid), app.metadata.uid.as_ref(), "{name} {kind}");
            assert_eq!(
                (owner.kind.as_str(), owner.api_version.as_str()),
                ("WsgiApp", "wharf.dev/v1alpha1")
            );
            assert_eq!(owner.controller, Some(true), "{name} {kind}");
            assert_eq!(meta.namespace, app.metadata.namespace, "{name} {kind}");
            let got = meta.labels.clone().unwrap_or_default();
            for (k, v) in labels::common(app.metadata.name.as_deref().unwrap_or_default()) {
                assert_eq!(got.get(&k), Some(&v), "{name} {kind} label {k}");
            }
        }
    }
}

#[test]
fn replicas_belong_to_exactly_one_owner_per_mode() {
    for (name, input) in common::cases() {
        let app = common::load(&input);
        let children = render::render(&app, &config()).expect("renders");
        let replicas = children.deployment.spec.as_ref().and_then(|s| s.replicas);
        match app.spec.autoscaling.as_ref().map(|a| (a, a.metric)) {
            Some((a, AutoscalingMetric::Cpu)) => {
                assert_eq!(
                    replicas, None,
                    "{name}: Deployment must not set replicas under an HPA"
                );
                let hpa = children
                    .hpa
                    .as_ref()
                    .and_then(|h| h.spec.as_ref())
                    .expect("HPA rendered");
                assert_eq!(
                    (hpa.min_replicas, hpa.max_replicas),
                    (Some(a.min_replicas), a.max_replicas)
                );
            }
            Some((_, AutoscalingMetric::Concurrency)) => {
                assert_eq!(replicas, None, "{name}: the autoscaler owns replicas");
                assert!(children.hpa.is_none(), "{name}: no HPA in Concurrency mode");
            }
            Some((_, AutoscalingMetric::External)) => {
                assert_eq!(replicas, app.spec.replicas, "{name}: mirrored from /scale");
                assert!(children.hpa.is_none(), "{name}: no HPA in External mode");
            }
            None => {
                assert_eq!(replicas, Some(app.spec.replicas.unwrap_or(1)), "{name}");
                assert!(children.hpa.is_none(), "{name}: no HPA without autoscaling");
            }
        }
    }
}

#[test]
fn pod_template_selects_itself_and_drains_gracefully() {
    for (name, input) in common::cases() {
        let app = common::load(&input);
        let children = render::render(&app, &config()).expect("renders");
        let spec = children.deployment.spec.as_ref().expect("spec");
        let selector = spec.selector.match_labels.clone().unwrap_or_default();
        let pod_labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        assert!(
            selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
            "{name}: selector must match pods"
        );
        let service_selector = children
            .service
            .spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default();
        assert_eq!(service_selector, selector, "{name}");

        let pod = spec.template.spec.as_ref().expect("pod spec");
        let server = &app.spec.server;
        let grace = pod.termination_grace_period_seconds.expect("grace period");
        // SIGTERM, then the shutdown delay, then the drain, then a margin before SIGKILL.
        assert_eq!(
            grace,
            i64::from(server.shutdown_delay_seconds + server.graceful_timeout_seconds) + 5,
            "{name}"
        );
        let container = &pod.containers[0];
        assert!(
            container.lifecycle.is_none(),
            "{name}: no preStop hook (sleep needs Kubernetes 1.30)"
        );
        let args = container.args.clone().unwrap_or_default();
        let delay = args
            .iter()
            .position(|a| a == "--shutdown-delay")
            .map(|i| args[i + 1].clone());
        assert_eq!(
            delay,
            (server.shutdown_delay_seconds > 0).then(|| server.shutdown_delay_seconds.to_string()),
            "{name}: {args:?}"
        );
        let container = &pod.containers[0];
        assert_eq!(container.name, deployment::CONTAINER);
        for probe in [
            &container.liveness_probe,
            &container.readiness_probe,
            &container.startup_probe,
        ] {
            let path = probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .and_then(|h| h.path.clone());
            assert!(
                matches!(path.as_deref(), Some("/livez" | "/readyz")),
                "{name}: {path:?}"
            );
        }
        let annotations = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default();
        assert_eq!(
            annotations.get(deployment::TEMPLATE_HASH).map(String::len),
            Some(16),
            "{name}"
        );

        let env: BTreeMap<_, _> = container
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect();
        assert_eq!(
            env.len(),
            container.env.as_ref().map_or(0, Vec::len),
            "{name}: duplicate env names break SSA"
        );
        let command = container.command.clone().unwrap_or_default();
        match app.spec.runtime {
            Runtime::Bundled => {
                assert_eq!(command, vec!["wharf"], "{name}");
                assert!(
                    !pod.init_containers
                        .iter()
                        .flatten()
                        .any(|c| c.name == runtime::INJECT_VOLUME),
                    "{name}"
                );
            }
            Runtime::Injected => {
                assert!(
                    command
                        .iter()
                        .any(|c| c.contains("exec python -m wharf \"$@\"")),
                    "{name}"
                );
                let python_path = env.get("PYTHONPATH").cloned().flatten().unwrap_or_default();
                assert!(
                    python_path.starts_with(runtime::INJECT_DIR),
                    "{name}: {python_path}"
                );
                let init = pod.init_containers.as_ref().expect("init container");
                assert_eq!(
                    init[0].command.as_ref().map(|c| c.join(" ")).as_deref(),
                    Some("cp -a /wharf/. /opt/wharf/")
                );
            }
        }
        let args = container.args.clone().unwrap_or_default();
        assert_eq!(args.last(), Some(&app.spec.app), "{name}: APP comes last");
        assert_eq!(
            &args[..4],
            &[
                "--bind".to_owned(),
                format!("0.0.0.0:{}", server.port),
                "--admin-bind".to_owned(),
                format!("0.0.0.0:{}", server.admin_port)
            ]
        );
    }
}

#[test]
fn template_hash_follows_configuration_changes() {
    let (_, input) = &common::cases()[0];
    let app = common::load(input);
    let hash = |app: &WsgiApp| {
        let children = render::render(app, &config()).expect("renders");
        let template = children.deployment.spec.expect("spec").template;
        template
            .metadata
            .and_then(|m| m.annotations)
            .and_then(|a| a.get(deployment::TEMPLATE_HASH).cloned())
    };
    let mut changed = app.clone();
    changed.spec.env.push(k8s_openapi::api::core::v1::EnvVar {
        name: "FEATURE".into(),
        value: Some("on".into()),
        value_from: None,
    });
    assert_ne!(hash(&app), hash(&changed));
    assert_eq!(hash(&app), hash(&app.clone()));
}

#[test]
fn user_pythonpath_from_a_secret_is_kept_behind_the_runtime() {
    let (_, input) = common::cases()
        .into_iter()
        .find(|(n, _)| n == "injected")
        .expect("case");
    let mut app = common::load(&input);
    app.spec.env = vec![k8s_openapi::api::core::v1::EnvVar {
        name: "PYTHONPATH".into(),
        value: None,
        value_from: Some(k8s_openapi::api::core::v1::EnvVarSource {
            config_map_key_ref: Some(k8s_openapi::api::core::v1::ConfigMapKeySelector {
                name: "paths".into(),
                key: "pythonpath".into(),
                optional: None,
            }),
            ..Default::default()
        }),
    }];
    let children = render::render(&app, &config()).expect("renders");
    let pod = children
        .deployment
        .spec
        .and_then(|s| s.template.spec)
        .expect("pod");
    let env = pod.containers[0].env.clone().unwrap_or_default();
    let names: Vec<_> = env.iter().map(|e| e.name.as_str()).collect();
    let user = names
        .iter()
        .position(|n| *n == runtime::USER_PYTHONPATH)
        .expect("renamed user var");
    let merged = names
        .iter()
        .position(|n| *n == "PYTHONPATH")
        .expect("PYTHONPATH");
    assert!(
        user < merged,
        "dependent variable must come after the one it references: {names:?}"
    );
    assert_eq!(
        env[merged].value.as_deref(),
        Some("/opt/wharf:$(WHARF_USER_PYTHONPATH)")
    );
}

#[test]
fn injected_mode_without_any_injector_image_is_a_spec_error() {
    let (_, input) = common::cases()
        .into_iter()
        .find(|(n, _)| n == "injected")
        .expect("case");
    let mut app = common::load(&input);
    app.spec.injector_image = None;
    assert!(matches!(
        render::render(&app, &RenderConfig::default()),
        Err(render::RenderError::Spec(_))
    ));
    let children = render::render(&app, &config()).expect("operator default applies");
    let pod = children
        .deployment
        .spec
        .and_then(|s| s.template.spec)
        .expect("pod");
    assert_eq!(
        pod.init_containers.expect("init")[0].image.as_deref(),
        Some("registry.example.com/wharf-injector:default")
    );
}

fn realapp() -> WsgiApp {
    let (_, input) = common::cases()
        .into_iter()
        .find(|(n, _)| n == "realapp")
        .expect("case");
    common::load(&input)
}

#[test]
fn the_migration_job_runs_the_new_template_without_serving() {
    let app = realapp();
    let children = render::render(&app, &config()).expect("renders");
    let template = children.deployment.spec.expect("spec").template;
    let pod = template.spec.clone().expect("pod");
    let job = children.migration.expect("a Job with spec.migrate");
    let job_template = job.spec.expect("job spec").template;
    let job_pod = job_template.spec.expect("job pod");
    let hash = deployment::hash_of(&template).expect("hash");
    assert_eq!(
        job.metadata.name.as_deref(),
        Some(format!("shop-migrate-{}", &hash[..8]).as_str())
    );
    assert_eq!(
        job_pod.containers.len(),
        1,
        "sidecars would keep the Job running"
    );
    let (serving, migrating) = (&pod.containers[0], &job_pod.containers[0]);
    assert_eq!(
        migrating.command.as_ref(),
        app.spec.migrate.as_ref().map(|m| &m.command)
    );
    assert_eq!(migrating.args, None);
    assert_eq!(
        (
            &migrating.image,
            &migrating.env,
            &migrating.env_from,
            &migrating.volume_mounts
        ),
        (
            &serving.image,
            &serving.env,
            &serving.env_from,
            &serving.volume_mounts
        )
    );
    assert!(migrating.readiness_probe.is_none() && migrating.ports.is_none());
    assert_eq!(job_pod.volumes, pod.volumes);
    assert_eq!(job_pod.init_containers, pod.init_containers);
    assert_eq!(job_pod.restart_policy.as_deref(), Some("Never"));
    // Not an app pod: the Service and the PDB do not select it.
    let job_labels = job_template
        .metadata
        .and_then(|m| m.labels)
        .unwrap_or_default();
    let selector = labels::selector("shop");
    assert!(
        !selector.iter().all(|(k, v)| job_labels.get(k) == Some(v)),
        "{job_labels:?}"
    );
    // Without migrate, no Job.
    let mut plain = app.clone();
    plain.spec.migrate = None;
    assert!(
        render::render(&plain, &config())
            .expect("renders")
            .migration
            .is_none()
    );
}

#[test]
fn pod_parts_and_overrides_land_in_the_template() {
    let app = realapp();
    let children = render::render(&app, &config()).expect("renders");
    let pod = children
        .deployment
        .spec
        .and_then(|s| s.template.spec)
        .expect("pod");
    let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["wharf", "log-shipper"]);
    let init: Vec<&str> = pod
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(init, ["wait-for-db"]);
    let volumes: Vec<&str> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(volumes, ["tmp", "uploads", "settings"]);
    let wharf = &pod.containers[0];
    let mounts: Vec<&str> = wharf
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(mounts, ["/tmp", "/app/media", "/app/conf"]);
    // podOverrides: the env entry is appended to the operator's, hostAliases added.
    let env: Vec<&str> = wharf
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(env, ["OTEL_SDK_DISABLED", "DATABASE_URL", "EXTRA"]);
    assert_eq!(
        pod.host_aliases.as_ref().map(|h| h[0].ip.as_str()),
        Some("10.0.0.10")
    );
}

#[test]
fn pod_overrides_cannot_take_the_pods_out_of_the_selector() {
    let mut app = realapp();
    app.spec.pod_overrides = Some(serde_json::json!({
        "metadata": {"labels": {"app.kubernetes.io/name": "other", "team": "a"}}
    }));
    let children = render::render(&app, &config()).expect("renders");
    let labels_of_pods = children
        .deployment
        .spec
        .and_then(|s| s.template.metadata)
        .and_then(|m| m.labels)
        .unwrap_or_default();
    assert_eq!(
        labels_of_pods.get(labels::NAME).map(String::as_str),
        Some("shop")
    );
    assert_eq!(labels_of_pods.get("team").map(String::as_str), Some("a"));
}

#[test]
fn reserved_or_dangling_pod_parts_are_spec_errors() {
    let spec_error = |app: &WsgiApp| match render::render(app, &config()) {
        Err(render::RenderError::Spec(e)) => e.to_string(),
        other => panic!("expected a spec error, got {other:?}"),
    };
    let mut app = realapp();
    app.spec.sidecars[0].name = "wharf".into();
    assert!(spec_error(&app).contains("\"wharf\" is reserved"));
    let mut app = realapp();
    app.spec.volumes[0].name = "tmp".into();
    assert!(spec_error(&app).contains("\"tmp\" is reserved"));
    let mut app = realapp();
    app.spec.volume_mounts[1].name = "nope".into();
    assert!(spec_error(&app).contains("volumeMounts[1] names volume \"nope\""));
    let mut app = realapp();
    app.spec.init_containers[0].name = "log-shipper".into();
    assert!(spec_error(&app).contains("used twice"));
}
