//! spec.monitoring → Prometheus Operator PodMonitor (monitoring.coreos.com/v1) for the pods' admin
//! `/metrics`. The types are the few fields the operator writes.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

use super::{Target, labels, object_meta};

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "monitoring.coreos.com",
    version = "v1",
    kind = "PodMonitor",
    plural = "podmonitors",
    namespaced,
    derive = "PartialEq",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct PodMonitorSpec {
    pub selector: LabelSelector,
    pub pod_metrics_endpoints: Vec<PodMetricsEndpoint>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct PodMetricsEndpoint {
    pub port: String,
    pub path: String,
    pub interval: String,
}

/// `None` without enabled `spec.monitoring`, meaning an existing PodMonitor must be deleted.
pub fn render(t: &Target) -> Option<PodMonitor> {
    let spec = t.app.spec.monitoring.as_ref().filter(|m| m.enabled)?;
    let mut meta = object_meta(t);
    let mut all: BTreeMap<String, String> = spec.labels.clone();
    all.extend(meta.labels.take().unwrap_or_default());
    meta.labels = Some(all);
    Some(PodMonitor {
        metadata: meta,
        spec: PodMonitorSpec {
            selector: LabelSelector {
                match_labels: Some(labels::selector(t.name)),
                ..LabelSelector::default()
            },
            pod_metrics_endpoints: vec![PodMetricsEndpoint {
                port: "admin".to_owned(),
                path: "/metrics".to_owned(),
                interval: spec.interval.clone(),
            }],
        },
    })
}
