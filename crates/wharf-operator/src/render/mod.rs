//! Pure rendering: a `WsgiApp` in, the desired child objects out. No API calls happen here, so the
//! output can be golden-tested and property-checked without a cluster.

pub mod deployment;
pub mod hpa;
pub mod labels;
pub mod pdb;
pub mod runtime;
pub mod service;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::{SpecError, WsgiApp};

/// Operator-wide settings that influence rendering.
#[derive(Debug, Clone, Default)]
pub struct RenderConfig {
    /// Injector image used when a WsgiApp in `Injected` mode names none (`--injector-image`).
    pub default_injector_image: Option<String>,
}

/// Everything the operator wants to exist for one WsgiApp. `None` children must not exist.
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    pub deployment: Deployment,
    pub service: Service,
    pub hpa: Option<HorizontalPodAutoscaler>,
    pub pdb: Option<PodDisruptionBudget>,
    /// In-cluster URL of the Service, for `status.url`.
    pub url: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("WsgiApp has no {0} yet (not read from the API server?)")]
    MissingMetadata(&'static str),
    #[error("invalid spec: {0}")]
    Spec(#[from] SpecError),
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
        })
    }
}

pub fn render(app: &WsgiApp, config: &RenderConfig) -> Result<Children, RenderError> {
    render_over(app, config, None)
}

/// [`render`] for an app whose Deployment exists with `current_replicas`.
pub fn render_over(
    app: &WsgiApp,
    config: &RenderConfig,
    current_replicas: Option<i32>,
) -> Result<Children, RenderError> {
    app.spec.check(config.default_injector_image.as_deref())?;
    let mut target = Target::new(app, config)?;
    target.current_replicas = current_replicas;
    Ok(Children {
        deployment: deployment::render(&target)?,
        service: service::render(&target),
        hpa: hpa::render(&target),
        pdb: pdb::render(&target),
        url: service::url(&target),
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

/// Name of the WsgiApp, for log fields; never fails.
pub fn display_name(app: &WsgiApp) -> String {
    format!("{}/{}", app.namespace().unwrap_or_default(), app.name_any())
}

/// `WsgiApp`'s API group/version/kind is needed when it is the SSA owner of a status patch.
pub fn api_version() -> String {
    WsgiApp::api_version(&()).into_owned()
}
