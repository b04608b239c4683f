//! The `WsgiApp` custom resource (`wharf.dev/v1alpha1`).
//!
//! Validation lives in the schema (OpenAPI constraints plus CEL `x-kubernetes-validations`) so the
//! apiserver rejects bad specs at admission time; [`WsgiAppSpec::check`] repeats the few rules the
//! reconciler depends on, for objects stored before a rule existed.

mod autoscaling;
mod migrate;
mod network;
mod rollout;
mod routes;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Container, EnvFromSource, EnvVar, LocalObjectReference, PodSecurityContext,
    ResourceRequirements, SecurityContext, Toleration, TopologySpreadConstraint, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use autoscaling::{AutoscalingMetric, AutoscalingSpec, AutoscalingStatus};
pub use migrate::MigrateSpec;
pub use network::{MonitoringSpec, NetworkPolicySpec};
pub use rollout::StrategySpec;
pub use routes::{IngressSpec, ParentRef, PathType, RouteSpec};

/// The server's app-name rule (`module:attribute`, dotted Python names), compiled in from the
/// server crate so the CRD and `wharf APP` accept the same names (formatted by the server crate's
/// rustfmt settings, not these).
#[rustfmt::skip]
#[path = "../../wharf-server/src/app_name.rs"]
mod app_name;

/// Python `module:attribute` (dotted names on both sides), the shape `wharf APP` accepts.
pub const APP_PATTERN: &str = app_name::PATTERN;

/// A decimal ratio between 0 and 1 written as a string, because the API conventions forbid floats.
pub const RATIO_PATTERN: &str = r"^(0(\.[0-9]{1,6})?|1(\.0{1,6})?)$";

/// Desired state of a Python WSGI application served by wharf.
// Each printcolumn(...) repeats `name`/`type_` keys, which the lint mistakes for duplicate attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "wharf.dev",
    version = "v1alpha1",
    kind = "WsgiApp",
    plural = "wsgiapps",
    singular = "wsgiapp",
    shortname = "wsgi",
    namespaced,
    cel,
    status = "WsgiAppStatus",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    derive = "PartialEq",
    doc = "A Python WSGI application served by wharf",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".status.readyReplicas"
    ),
    printcolumn(name = "Image", type_ = "string", json_path = ".spec.image"),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("!(has(self.replicas) && has(self.autoscaling)) || self.autoscaling.metric == 'External'")
        .message("set either replicas or autoscaling, not both (only autoscaling.metric External takes replicas, through the scale subresource)")
        .reason(kube::core::Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.autoscaling) || self.autoscaling.metric != 'CPU' || (has(self.resources) && has(self.resources.requests) && 'cpu' in self.resources.requests)")
        .message("autoscaling on CPU utilization needs resources.requests.cpu")
        .field_path(".resources"),
)]
#[serde(rename_all = "camelCase")]
pub struct WsgiAppSpec {
    /// Container image holding the application (and, with `runtime: Bundled`, wharf itself).
    #[schemars(length(min = 1))]
    pub image: String,
    /// Image pull policy of the application container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// Secrets used to pull the application (and injector) image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// The WSGI application as `module:attribute`, e.g. `myproject.wsgi:application`.
    #[x_kube(validation = Rule::new(format!("self.matches('{}')", APP_PATTERN.replace('\\', "\\\\")))
        .message("app must look like module:attribute (dotted Python names)"))]
    pub app: String,
    /// Extra command-line flags passed to wharf after the operator's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Where the wharf server comes from: `Bundled` in the image, or `Injected` by an init container.
    #[serde(default)]
    pub runtime: Runtime,
    /// Image carrying the wharf runtime under /wharf (only used with `runtime: Injected`); defaults to
    /// the operator's `--injector-image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub injector_image: Option<String>,
    /// wharf server settings.
    #[serde(default)]
    pub server: ServerSpec,
    /// Fixed number of pods; with `autoscaling.metric: External` the count the external autoscaler
    /// wrote through the scale subresource. Unset: the Deployment's current count (1 for a new one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// Horizontal autoscaling; see `metric` for who then owns the replica count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// Compute resources of the application container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Environment variables of the application container; they win over the ones the operator sets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Sources of environment variables of the application container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFromSource>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = terse)]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = terse)]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Extra annotations on the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,
    /// Extra labels on the pods (the operator's `app.kubernetes.io/*` labels cannot be overridden).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,
    /// Replaces the default restricted pod security context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = terse)]
    pub pod_security_context: Option<PodSecurityContext>,
    /// Replaces the default restricted container security context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = terse)]
    pub security_context: Option<SecurityContext>,
    /// The Service in front of the pods.
    #[serde(default)]
    pub service: ServiceSpec,
    /// OpenTelemetry tracing of requests, configured through the standard `OTEL_*` variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingSpec>,
    /// The PodDisruptionBudget; by default one with `maxUnavailable: 1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disruption_budget: Option<DisruptionBudgetSpec>,
    /// Extra pod volumes (PVCs for uploads, ConfigMap or Secret files); `tmp` and `wharf-runtime`
    /// are the operator's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[schemars(transform = terse)]
    pub volumes: Vec<Volume>,
    /// Mounts of `volumes` in the application container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[schemars(transform = terse)]
    pub volume_mounts: Vec<VolumeMount>,
    /// Init containers run before the application (after the runtime injector, if any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(transform = terse)]
    pub init_containers: Vec<Container>,
    /// Extra containers next to the application container in each pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(transform = terse)]
    pub sidecars: Vec<Container>,
    /// A patch of the pod template (`metadata`, `spec`), merged last over everything the operator
    /// renders: objects merge key by key, lists of named items (containers, volumes, env, ...) merge
    /// by `name`, other lists are replaced, `null` removes a field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub pod_overrides: Option<serde_json::Value>,
    /// A `networking.k8s.io/v1` Ingress to the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
    /// A Gateway API HTTPRoute to the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteSpec>,
    /// A command run as a Job with the new pod template before the pods roll to it (database
    /// migrations); the old pods keep serving until it succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrate: Option<MigrateSpec>,
    /// A Prometheus Operator PodMonitor for the pods' admin `/metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<MonitoringSpec>,
    /// A NetworkPolicy: the HTTP port from `from`, the admin port only from the operator's and
    /// the monitoring namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySpec>,
    /// Rolling-update bounds of the Deployment.
    #[serde(default)]
    pub strategy: StrategySpec,
    /// Old ReplicaSets kept for `kubectl rollout undo`.
    #[serde(default = "default_revision_history")]
    #[schemars(range(min = 0, max = 100))]
    pub revision_history_limit: i32,
    /// A rollout making no progress for this long is reported as failed (`Degraded`, `RolloutFailed`).
    #[serde(default = "default_progress_deadline")]
    #[schemars(range(min = 30, max = 86400))]
    pub progress_deadline_seconds: i32,
    /// Keep every child as it is and reconcile nothing until this is false again.
    #[serde(default)]
    pub paused: bool,
}

fn default_revision_history() -> i32 {
    5
}
fn default_progress_deadline() -> i32 {
    600
}

/// Drops the API documentation of embedded Kubernetes types (containers, volumes, affinity) from
/// the schema, keeping the field's own: with it the CRD grew from 140 to 450 KiB, beyond the
/// 256 KiB annotation that client-side `kubectl apply` stores. Only string `description`s go, so a
/// property named `description` would stay.
fn terse(schema: &mut schemars::Schema) {
    if let Some(object) = schema.as_object_mut() {
        for (key, value) in object.iter_mut() {
            if key != "description" {
                strip_descriptions(value);
            }
        }
    }
}

fn strip_descriptions(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if map
                .get("description")
                .is_some_and(serde_json::Value::is_string)
            {
                map.remove("description");
            }
            map.values_mut().for_each(strip_descriptions);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_descriptions),
        _ => {}
    }
}

/// `podOverrides` is checked by the API server when the Deployment is applied, not by this schema:
/// a full PodTemplateSpec schema would more than double the CRD.
fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Where the wharf server binary and Python package come from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Runtime {
    /// The application image has wharf installed (`pip install wharf-wsgi`); the container runs `wharf`.
    #[default]
    Bundled,
    /// An init container copies wharf from `injectorImage` into a shared volume on `PYTHONPATH`;
    /// the container runs `python -m wharf`.
    Injected,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.port != self.adminPort").message("port and adminPort must differ"))]
#[serde(rename_all = "camelCase")]
pub struct ServerSpec {
    /// Worker processes (`--workers`); wharf's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub workers: Option<i32>,
    /// Threads per worker (`--threads`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub threads: Option<i32>,
    /// Request timeout (`--timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: Option<i32>,
    /// Time wharf gets to drain in-flight requests on shutdown (`--graceful-timeout`).
    #[serde(default = "default_graceful_timeout")]
    #[schemars(range(min = 0, max = 3600))]
    pub graceful_timeout_seconds: i32,
    /// Recycle a worker after this many requests (`--max-requests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_requests: Option<i32>,
    /// Seconds wharf keeps serving after SIGTERM with `/readyz` failing, so endpoints and load
    /// balancers stop sending traffic before it drains (`--shutdown-delay`; 0 disables).
    #[serde(default = "default_shutdown_delay")]
    #[schemars(range(min = 0, max = 300))]
    pub shutdown_delay_seconds: i32,
    /// Port of the HTTP listener.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Port of wharf's admin listener (`/livez`, `/readyz`, `/metrics`).
    #[serde(default = "default_admin_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub admin_port: i32,
}

fn default_graceful_timeout() -> i32 {
    30
}
fn default_shutdown_delay() -> i32 {
    5
}
fn default_port() -> i32 {
    8000
}
fn default_admin_port() -> i32 {
    9000
}

impl Default for ServerSpec {
    fn default() -> Self {
        ServerSpec {
            workers: None,
            threads: None,
            timeout_seconds: None,
            graceful_timeout_seconds: default_graceful_timeout(),
            max_requests: None,
            shutdown_delay_seconds: default_shutdown_delay(),
            port: default_port(),
            admin_port: default_admin_port(),
        }
    }
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(rename = "type", default)]
    pub type_: ServiceType,
    /// Port the Service listens on; forwards to the pods' HTTP port.
    #[serde(default = "default_service_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

fn default_service_port() -> i32 {
    80
}

impl Default for ServiceSpec {
    fn default() -> Self {
        ServiceSpec {
            type_: ServiceType::default(),
            port: default_service_port(),
            annotations: BTreeMap::new(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TracingSpec {
    #[serde(default)]
    pub enabled: bool,
    /// OTLP collector endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`), e.g. `http://otel-collector.observability:4317`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')")
        .message("endpoint must be an http:// or https:// URL"))]
    pub endpoint: Option<String>,
    /// OTLP transport (`OTEL_EXPORTER_OTLP_PROTOCOL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<OtlpProtocol>,
    /// Fraction of traces sampled, a decimal string between "0" and "1" (e.g. "0.25").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(format!("self.matches('{}')", RATIO_PATTERN.replace('\\', "\\\\")))
        .message("samplingRatio must be a decimal between 0 and 1, e.g. \"0.25\""))]
    pub sampling_ratio: Option<String>,
    /// `OTEL_SERVICE_NAME`; defaults to the WsgiApp's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum OtlpProtocol {
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

impl OtlpProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!(has(self.minAvailable) && has(self.maxUnavailable))")
    .message("set at most one of minAvailable and maxUnavailable"))]
#[serde(rename_all = "camelCase")]
pub struct DisruptionBudgetSpec {
    /// Create a PodDisruptionBudget at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
}

fn default_true() -> bool {
    true
}

/// Observed state, written by the operator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WsgiAppStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods of the current Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Label selector of the pods, for the scale subresource (HPA, KEDA, `kubectl scale`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The concurrency autoscaler's last observation and decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingStatus>,
    /// Pods passing their readiness probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// The app's URL: the external one (Ingress, else HTTPRoute) when there is one, else `address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// In-cluster URL of the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// What `spec.monitoring` produced: the PodMonitor, or why there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<String>,
    /// `Ready`, `Progressing` and `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Volume names of the operator's own (`/tmp`, the injected runtime).
pub const RESERVED_VOLUMES: &[&str] = &["tmp", "wharf-runtime"];
/// Container names of the operator's own (the app, the runtime injector, the migration).
pub const RESERVED_CONTAINERS: &[&str] = &["wharf", "wharf-runtime"];

fn unique<'a>(
    what: &'static str,
    names: impl Iterator<Item = &'a str>,
    reserved: &[&str],
) -> Result<(), SpecError> {
    let mut seen = std::collections::BTreeSet::new();
    for name in names {
        if reserved.contains(&name) {
            return Err(SpecError::ReservedName {
                what,
                name: name.to_owned(),
            });
        }
        if !seen.insert(name) {
            return Err(SpecError::DuplicateName {
                what,
                name: name.to_owned(),
            });
        }
    }
    Ok(())
}

/// Why a stored spec cannot be rendered even though the schema admitted it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("set either replicas or autoscaling, not both")]
    ReplicasAndAutoscaling,
    #[error("autoscaling.minReplicas ({min}) exceeds autoscaling.maxReplicas ({max})")]
    MinAboveMax { min: i32, max: i32 },
    #[error("app {0:?} is not of the form module:attribute")]
    AppShape(String),
    #[error("runtime Injected needs spec.injectorImage or the operator's --injector-image")]
    NoInjectorImage,
    #[error("server.port and server.adminPort are both {0}")]
    PortClash(i32),
    #[error("{what} name {name:?} is reserved by the operator; rename it")]
    ReservedName { what: &'static str, name: String },
    #[error("{what} name {name:?} is used twice")]
    DuplicateName { what: &'static str, name: String },
    #[error("volumeMounts[{index}] names volume {name:?}, which is not in spec.volumes")]
    UnknownVolume { index: usize, name: String },
    #[error("podOverrides must be an object with metadata and/or spec")]
    OverridesShape,
}

impl WsgiAppSpec {
    /// Rules the renderer relies on; the CRD enforces them too, but objects stored under an older CRD
    /// may not satisfy them.
    pub fn check(&self, default_injector_image: Option<&str>) -> Result<(), SpecError> {
        if self.replicas.is_some()
            && self
                .autoscaling
                .as_ref()
                .is_some_and(|a| a.metric != AutoscalingMetric::External)
        {
            return Err(SpecError::ReplicasAndAutoscaling);
        }
        if let Some(a) = &self.autoscaling
            && a.min_replicas > a.max_replicas
        {
            return Err(SpecError::MinAboveMax {
                min: a.min_replicas,
                max: a.max_replicas,
            });
        }
        if app_name::split(&self.app).is_none() {
            return Err(SpecError::AppShape(self.app.clone()));
        }
        if self.runtime == Runtime::Injected
            && self.injector_image(default_injector_image).is_none()
        {
            return Err(SpecError::NoInjectorImage);
        }
        if self.server.port == self.server.admin_port {
            return Err(SpecError::PortClash(self.server.port));
        }
        self.check_pod_parts()
    }

    /// Names the pod must not have twice, and the ones the operator uses itself. Checked here
    /// rather than in CEL: rules over lists of containers would exceed the API server's CEL cost
    /// budget.
    fn check_pod_parts(&self) -> Result<(), SpecError> {
        unique(
            "volume",
            self.volumes.iter().map(|v| v.name.as_str()),
            RESERVED_VOLUMES,
        )?;
        unique(
            "container",
            self.sidecars
                .iter()
                .chain(&self.init_containers)
                .map(|c| c.name.as_str()),
            RESERVED_CONTAINERS,
        )?;
        for (index, mount) in self.volume_mounts.iter().enumerate() {
            if !self.volumes.iter().any(|v| v.name == mount.name) {
                return Err(SpecError::UnknownVolume {
                    index,
                    name: mount.name.clone(),
                });
            }
        }
        if self.pod_overrides.as_ref().is_some_and(|o| !o.is_object()) {
            return Err(SpecError::OverridesShape);
        }
        Ok(())
    }

    /// The injector image in effect: the spec's, else the operator default.
    pub fn injector_image<'a>(&'a self, default: Option<&'a str>) -> Option<&'a str> {
        self.injector_image
            .as_deref()
            .or(default)
            .filter(|i| !i.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_shape_accepts_dotted_names_only() {
        for ok in [
            "app:app",
            "my_pkg.wsgi:application",
            "a.b.c:factory.attr",
            "_m:_a",
        ] {
            assert!(app_name::split(ok).is_some(), "{ok}");
        }
        for bad in [
            "app",
            ":app",
            "app:",
            "1mod:app",
            "mod:app()",
            "mod::app",
            "mod:a-b",
            "mod.:app",
            "",
        ] {
            assert!(app_name::split(bad).is_none(), "{bad}");
        }
    }
}
