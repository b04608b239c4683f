//! `spec.monitoring` and `spec.networkPolicy`.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// A Prometheus Operator `PodMonitor` for the pods' admin `/metrics`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Scrape interval, a Prometheus duration such as `30s` or `1m`.
    #[serde(default = "default_interval")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m|h)$"))]
    pub interval: String,
    /// Labels of the PodMonitor, for the Prometheus' `podMonitorSelector`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn default_interval() -> String {
    "30s".to_owned()
}

/// A NetworkPolicy isolating the app's pods for ingress.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Who may reach the app's HTTP port (NetworkPolicy peers); empty: every source, in the
    /// cluster and outside it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<NetworkPolicyPeer>,
    /// Namespace of the monitoring system (Prometheus) that may scrape the admin port, besides
    /// the operator's own namespace.
    #[serde(default = "default_monitoring_namespace")]
    #[schemars(length(min = 1, max = 63))]
    pub monitoring_namespace: String,
}

fn default_monitoring_namespace() -> String {
    "monitoring".to_owned()
}

fn yes() -> bool {
    true
}
