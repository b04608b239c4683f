//! Pure rendering: a `WsgiApp` in, the desired child objects out. No API calls happen here, so the
//! output can be golden-tested and property-checked without a cluster.

pub mod config;
pub mod deployment;
pub mod gateway;
pub mod hpa;
pub mod ingress;
pub mod labels;
pub mod migrate;
pub mod monitor;
pub mod network;
mod overrides;
pub mod pdb;
pub mod runtime;
pub mod service;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::{SpecError, WsgiApp};
use gateway::HTTPRoute;
use monitor::PodMonitor;

/// Operator-wide settings that influence rendering.
#[derive(Debug, Clone)]
pub struct RenderConfig {
    /// Injector image used when a WsgiApp in `Injected` mode names none (`--injector-image`).
    pub default_injector_image: Option<String>,
    /// The operator's own namespace, allowed to the admin port by `spec.networkPolicy`.
    pub operator_namespace: String,
}

impl Default for RenderConfig {
    fn default() -> Self {
        RenderConfig {
            default_injector_image: None,
            operator_namespace: "wharf-system".to_owned(),
        }
    }
}

/// What rendering takes from the cluster, read by the reconciler.
#[derive(Debug, Clone, Default)]
pub struct Current {
    /// `spec.replicas` of the existing Deployment, so a change of replica owner keeps the pods.
    pub replicas: Option<i32>,
    /// Digest of the referenced ConfigMaps' and Secrets' data ([`config::config_hash`]).
    pub config_hash: Option<String>,
}

/// Everything the operator wants to exist for one WsgiApp. `None` children must not exist.
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    pub deployment: Deployment,
    pub service: Service,
    pub hpa: Option<HorizontalPodAutoscaler>,
    pub pdb: Option<PodDisruptionBudget>,
    pub ingress: Option<Ingress>,
    pub route: Option<HTTPRoute>,
    pub pod_monitor: Option<PodMonitor>,
    pub network_policy: Option<NetworkPolicy>,
    /// The migration Job for the rendered pod template, with `spec.migrate`.
    pub migration: Option<Job>,
    /// The app's URL for `status.url`: the Ingress's, else the route's, else `address`.
    pub url: String,
    /// In-cluster URL of the Service, for `status.address`.
    pub address: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("WsgiApp has no {0} yet (not read from the API server?)")]
    MissingMetadata(&'static str),
    #[error("invalid spec: {0}")]
    Spec(#[from] SpecError),
    #[error("spec.podOverrides does not give a valid pod template: {0}")]
    Overrides(String),
    #[error("cannot serialize the {what}: {source}")]
    Serialize {
        what: &'static str,
        source: serde_json::Error,
    },
}

/// A WsgiApp with the metadata every child needs already checked.
pub struct Target<'a> {
    pub app: &'a WsgiApp,
    pub name: &'a str,
    pub namespace: &'a str,
    pub owner: OwnerReference,
    pub config: &'a RenderConfig,
    /// `spec.replicas` of the existing Deployment, so a change of replica owner keeps the pods.
    pub current_replicas: Option<i32>,
    /// Digest of the referenced ConfigMaps' and Secrets' data, for the pod template.
    pub config_hash: Option<String>,
}

impl<'a> Target<'a> {
    pub fn new(app: &'a WsgiApp, config: &'a RenderConfig) -> Result<Self, RenderError> {
        let name = app
            .metadata
            .name
            .as_deref()
            .ok_or(RenderError::MissingMetadata("name"))?;
        let namespace = app
            .metadata
            .namespace
            .as_deref()
            .ok_or(RenderError::MissingMetadata("namespace"))?;
        let owner = app
            .controller_owner_ref(&())
            .ok_or(RenderError::MissingMetadata("uid"))?;
        Ok(Target {
            app,
            name,
            namespace,
            owner,
            config,
            current_replicas: None,
            config_hash: None,
        })
    }
}

pub fn render(app: &WsgiApp, config: &RenderConfig) -> Result<Children, RenderError> {
    render_over(app, config, Current::default())
}

/// [`render`] with what the reconciler read from the cluster.
pub fn render_over(
    app: &WsgiApp,
    config: &RenderConfig,
    current: Current,
) -> Result<Children, RenderError> {
    app.spec.check(config.default_injector_image.as_deref())?;
    let mut target = Target::new(app, config)?;
    target.current_replicas = current.replicas;
    target.config_hash = current.config_hash;
    let deployment = deployment::render(&target)?;
    let migration = deployment
        .spec
        .as_ref()
        .and_then(|s| migrate::render(&target, &s.template));
    let address = service::url(&target);
    Ok(Children {
        service: service::render(&target),
        hpa: hpa::render(&target),
        pdb: pdb::render(&target),
        ingress: ingress::render(&target),
        route: gateway::render(&target),
        pod_monitor: monitor::render(&target),
        network_policy: network::render(&target),
        migration,
        url: ingress::url(&target)
            .or_else(|| gateway::url(&target))
            .unwrap_or_else(|| address.clone()),
        address,
        deployment,
    })
}

/// Name, namespace, labels and controller owner reference shared by every child; children share
/// the WsgiApp's name, so a WsgiApp `web` gets Deployment `web`, Service `web`, and so on.
fn object_meta(t: &Target) -> ObjectMeta {
    ObjectMeta {
        name: Some(t.name.to_owned()),
        namespace: Some(t.namespace.to_owned()),
        labels: Some(labels::common(t.name)),
        owner_references: Some(vec![t.owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// A digest shortened to its first 8 bytes as 16 hex digits, the form of every hash the operator
/// writes into annotations and names.
pub(crate) fn short_hex(digest: &[u8]) -> String {
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Name of the WsgiApp, for log fields; never fails.
pub fn display_name(app: &WsgiApp) -> String {
    format!("{}/{}", app.namespace().unwrap_or_default(), app.name_any())
}

/// `WsgiApp`'s API group/version/kind is needed when it is the SSA owner of a status patch.
pub fn api_version() -> String {
    WsgiApp::api_version(&()).into_owned()
}
