//! `spec.ingress` and `spec.route`: the ways in from outside the cluster.

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A DNS name, optionally with a leading `*.` wildcard label (the form both Ingress and HTTPRoute
/// accept).
pub const HOST_PATTERN: &str =
    r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A `networking.k8s.io/v1` Ingress to the Service's `http` port.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new(format!("self.hosts.all(h, h.matches('{}'))", HOST_PATTERN.replace('\\', "\\\\")))
        .message("ingress.hosts must be lowercase DNS names, optionally starting with *.")
        .field_path(".hosts"),
    validation = Rule::new("self.paths.all(p, p.startsWith('/'))")
        .message("ingress.paths must start with /")
        .field_path(".paths"),
)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// IngressClass (`spec.ingressClassName`); the cluster's default class when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub class_name: Option<String>,
    /// Host names routed to the app; the first one is the app's `status.url`.
    #[schemars(length(min = 1, max = 32))]
    pub hosts: Vec<String>,
    /// URL paths routed to the app, on every host.
    #[serde(default = "root_path")]
    #[schemars(length(min = 1, max = 32))]
    pub paths: Vec<String>,
    /// How paths match: `Prefix`, `Exact` or `ImplementationSpecific`.
    #[serde(default)]
    pub path_type: PathType,
    /// Secret of type `kubernetes.io/tls` for all `hosts`; with it the URL is `https://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub tls_secret_name: Option<String>,
    /// Annotations of the Ingress (e.g. for cert-manager or the ingress controller).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PathType {
    #[default]
    Prefix,
    Exact,
    ImplementationSpecific,
}

impl PathType {
    pub fn as_str(self) -> &'static str {
        match self {
            PathType::Prefix => "Prefix",
            PathType::Exact => "Exact",
            PathType::ImplementationSpecific => "ImplementationSpecific",
        }
    }
}

fn root_path() -> Vec<String> {
    vec!["/".to_owned()]
}

/// A Gateway API `HTTPRoute` (`gateway.networking.k8s.io/v1`) to the Service's `http` port.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new(format!("self.hostnames.all(h, h.matches('{}'))", HOST_PATTERN.replace('\\', "\\\\")))
        .message("route.hostnames must be lowercase DNS names, optionally starting with *.")
        .field_path(".hostnames"),
    validation = Rule::new("self.paths.all(p, p.startsWith('/'))")
        .message("route.paths must start with /")
        .field_path(".paths"),
)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec {
    /// The Gateways (listeners) the route attaches to.
    #[schemars(length(min = 1, max = 32))]
    pub parent_refs: Vec<ParentRef>,
    /// Host names the route matches; none: every host of the Gateway's listener. The first one is
    /// the app's `status.url` when there is no Ingress.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub hostnames: Vec<String>,
    /// URL path prefixes routed to the app.
    #[serde(default = "root_path")]
    #[schemars(length(min = 1, max = 16))]
    pub paths: Vec<String>,
    /// The Gateway's listener terminates TLS, so the app's external URL is `https://`.
    #[serde(default)]
    pub https: bool,
    /// Annotations of the HTTPRoute.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A Gateway (by default in the WsgiApp's namespace), optionally one listener of it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
    /// Listener name within the Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub section_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
}
