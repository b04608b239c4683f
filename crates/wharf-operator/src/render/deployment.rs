//! spec → Deployment running `wharf` with probes, graceful shutdown and a restricted security context.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};

use super::{RenderError, Target, labels, object_meta, overrides, runtime};
use crate::autoscale::handover;
use crate::crd::{Runtime, TracingSpec};

pub const CONTAINER: &str = "wharf";
/// Annotation on the pod template carrying a digest of everything else in it.
pub const TEMPLATE_HASH: &str = "wharf.dev/pod-template-hash";
/// Annotation on the pod template carrying a digest of the referenced ConfigMaps' and Secrets'
/// data, so a change of their content rolls the pods.
pub const CONFIG_HASH: &str = "wharf.dev/config-hash";
/// Margin on top of shutdown delay + graceful timeout before the kubelet sends SIGKILL.
const KILL_MARGIN_SECONDS: i64 = 5;
const TMP_VOLUME: &str = "tmp";

pub fn render(t: &Target) -> Result<Deployment, RenderError> {
    let spec = &t.app.spec;
    Ok(Deployment {
        metadata: object_meta(t),
        spec: Some(DeploymentSpec {
            // With autoscaling another owner has spec.replicas; setting it here would fight it.
            replicas: handover::deployment_replicas(spec, t.current_replicas),
            selector: LabelSelector {
                match_labels: Some(labels::selector(t.name)),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(spec.strategy.max_surge.clone()),
                    max_unavailable: Some(spec.strategy.max_unavailable.clone()),
                }),
            }),
            revision_history_limit: Some(spec.revision_history_limit),
            progress_deadline_seconds: Some(spec.progress_deadline_seconds),
            template: pod_template(t)?,
            ..DeploymentSpec::default()
        }),
        status: None,
    })
}

/// The pod template, with `podOverrides` applied last and both hash annotations set.
fn pod_template(t: &Target) -> Result<PodTemplateSpec, RenderError> {
    let spec = &t.app.spec;
    let mut pod_labels = spec.pod_labels.clone();
    pod_labels.extend(labels::common(t.name));

    let container = app_container(t);
    let mut volumes = vec![Volume {
        name: TMP_VOLUME.to_owned(),
        empty_dir: Some(Default::default()),
        ..Volume::default()
    }];
    let mut init_containers = Vec::new();
    if spec.runtime == Runtime::Injected
        && let Some(image) = spec.injector_image(t.config.default_injector_image.as_deref())
    {
        init_containers.push(runtime::init_container(t, image, &container));
        volumes.push(runtime::volume());
    }
    init_containers.extend(spec.init_containers.iter().cloned());
    volumes.extend(spec.volumes.iter().cloned());
    let mut containers = vec![container];
    containers.extend(spec.sidecars.iter().cloned());

    let pod_spec = PodSpec {
        containers,
        init_containers: non_empty(init_containers),
        volumes: Some(volumes),
        service_account_name: spec.service_account_name.clone(),
        image_pull_secrets: non_empty(spec.image_pull_secrets.clone()),
        node_selector: (!spec.node_selector.is_empty()).then(|| spec.node_selector.clone()),
        tolerations: non_empty(spec.tolerations.clone()),
        affinity: spec.affinity.clone(),
        topology_spread_constraints: non_empty(spec.topology_spread_constraints.clone()),
        security_context: Some(
            spec.pod_security_context
                .clone()
                .unwrap_or_else(restricted_pod_security),
        ),
        termination_grace_period_seconds: Some(
            i64::from(spec.server.graceful_timeout_seconds)
                + i64::from(spec.server.shutdown_delay_seconds)
                + KILL_MARGIN_SECONDS,
        ),
        ..PodSpec::default()
    };
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: (!spec.pod_annotations.is_empty()).then(|| spec.pod_annotations.clone()),
            ..ObjectMeta::default()
        }),
        spec: Some(pod_spec),
    };
    let mut template = match &spec.pod_overrides {
        Some(patch) => overrides::apply(template, patch)?,
        None => template,
    };
    let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    // The selector labels win over overrides too: pods without them would leave the Deployment.
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .extend(labels::common(t.name));
    if let Some(config_hash) = &t.config_hash {
        meta.annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(CONFIG_HASH.to_owned(), config_hash.clone());
    }
    let hash = template_hash(&template)?;
    if let Some(meta) = template.metadata.as_mut() {
        meta.annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(TEMPLATE_HASH.to_owned(), hash);
    }
    Ok(template)
}

/// The template hash the rendered template carries.
pub fn hash_of(template: &PodTemplateSpec) -> Option<&str> {
    template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(TEMPLATE_HASH)
        .map(String::as_str)
}

fn app_container(t: &Target) -> Container {
    let spec = &t.app.spec;
    let (command, args) = runtime::command(spec.runtime, wharf_args(t));
    let mut mounts = vec![VolumeMount {
        name: TMP_VOLUME.to_owned(),
        mount_path: "/tmp".to_owned(),
        ..VolumeMount::default()
    }];
    let mut env = merge_env(operator_env(t), spec.env.clone());
    if spec.runtime == Runtime::Injected {
        env = runtime::with_injected_pythonpath(env);
        mounts.push(runtime::app_mount());
    }
    mounts.extend(spec.volume_mounts.iter().cloned());
    Container {
        name: CONTAINER.to_owned(),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_owned()),
        command: Some(command),
        args: Some(args),
        ports: Some(vec![
            ContainerPort {
                name: Some("http".to_owned()),
                container_port: spec.server.port,
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("admin".to_owned()),
                container_port: spec.server.admin_port,
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
        ]),
        env: non_empty(env),
        env_from: non_empty(spec.env_from.clone()),
        resources: spec.resources.clone(),
        // Startup allows up to 2 minutes of imports before liveness takes over.
        startup_probe: Some(probe("/livez", 2, 60)),
        liveness_probe: Some(probe("/livez", 10, 3)),
        readiness_probe: Some(probe("/readyz", 5, 2)),
        security_context: Some(
            spec.security_context
                .clone()
                .unwrap_or_else(restricted_container_security),
        ),
        volume_mounts: Some(mounts),
        termination_message_path: Some("/dev/termination-log".to_owned()),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    }
}

/// wharf's command line: listeners, server settings, the user's extra flags, then APP.
pub fn wharf_args(t: &Target) -> Vec<String> {
    let server = &t.app.spec.server;
    let mut args = vec![
        "--bind".to_owned(),
        format!("0.0.0.0:{}", server.port),
        "--admin-bind".to_owned(),
        format!("0.0.0.0:{}", server.admin_port),
    ];
    let optional = [
        ("--workers", server.workers),
        ("--threads", server.threads),
        ("--timeout", server.timeout_seconds),
        ("--graceful-timeout", Some(server.graceful_timeout_seconds)),
        // In wharf itself rather than a kubelet `preStop` sleep, which Kubernetes < 1.30 drops.
        (
            "--shutdown-delay",
            (server.shutdown_delay_seconds > 0).then_some(server.shutdown_delay_seconds),
        ),
        ("--max-requests", server.max_requests),
    ];
    for (flag, value) in optional {
        if let Some(value) = value {
            args.push(flag.to_owned());
            args.push(value.to_string());
        }
    }
    args.extend(t.app.spec.args.iter().cloned());
    args.push(t.app.spec.app.clone());
    args
}

/// Variables the operator sets; tracing is explicitly disabled unless asked for, so a collector
/// address baked into the image does not start receiving spans by surprise.
fn operator_env(t: &Target) -> Vec<EnvVar> {
    match t.app.spec.tracing.as_ref().filter(|tr| tr.enabled) {
        Some(tracing) => tracing_env(t, tracing),
        None => vec![plain("OTEL_SDK_DISABLED", "true")],
    }
}

fn tracing_env(t: &Target, tracing: &TracingSpec) -> Vec<EnvVar> {
    let mut env = vec![
        EnvVar {
            name: "WHARF_POD_NAME".to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".to_owned(),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            }),
        },
        plain(
            "OTEL_SERVICE_NAME",
            tracing.service_name.as_deref().unwrap_or(t.name),
        ),
        plain(
            "OTEL_RESOURCE_ATTRIBUTES",
            &format!(
                "k8s.namespace.name={},k8s.deployment.name={},k8s.pod.name=$(WHARF_POD_NAME)",
                t.namespace, t.name
            ),
        ),
    ];
    if let Some(endpoint) = &tracing.endpoint {
        env.push(plain("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint));
    }
    if let Some(protocol) = tracing.protocol {
        env.push(plain("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.as_str()));
    }
    if let Some(ratio) = &tracing.sampling_ratio {
        env.push(plain("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"));
        env.push(plain("OTEL_TRACES_SAMPLER_ARG", ratio));
    }
    env
}

/// The user's variables win: an operator variable of the same name is dropped (env is a list map
/// keyed by name, so server-side apply rejects duplicates anyway).
fn merge_env(operator: Vec<EnvVar>, user: Vec<EnvVar>) -> Vec<EnvVar> {
    let mut env: Vec<EnvVar> = operator
        .into_iter()
        .filter(|o| !user.iter().any(|u| u.name == o.name))
        .collect();
    env.extend(user);
    env
}

fn plain(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    }
}

fn probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("admin".to_owned()),
            scheme: Some("HTTP".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

/// Pod-level part of the "restricted" Pod Security Standard.
fn restricted_pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..PodSecurityContext::default()
    }
}

/// Container-level part of the "restricted" Pod Security Standard, plus a read-only root filesystem
/// (wharf only writes to /tmp, which is an emptyDir).
fn restricted_container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}

/// Digest of the rendered template; shown on the pods, it tells at a glance which configuration a
/// pod runs and changes whenever anything in the template (flags, env, mounts) changes.
fn template_hash(template: &PodTemplateSpec) -> Result<String, RenderError> {
    // Hashing an empty document would give every template the same hash.
    let bytes = serde_json::to_vec(template).map_err(|e| RenderError::Serialize {
        what: "pod template",
        source: e,
    })?;
    Ok(super::short_hex(&Sha256::digest(&bytes)))
}

fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}
