//! spec.networkPolicy → NetworkPolicy (networking.k8s.io/v1): the HTTP port from the configured
//! peers, the admin port (probes aside, which come from the node) only from the operator's
//! namespace (the concurrency autoscaler scrapes it) and the monitoring namespace.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Target, labels, object_meta};

/// Label every namespace carries with its own name (Kubernetes ≥ 1.22).
const NAMESPACE_NAME: &str = "kubernetes.io/metadata.name";

/// `None` without enabled `spec.networkPolicy`, meaning an existing one must be deleted.
pub fn render(t: &Target) -> Option<NetworkPolicy> {
    let spec = t.app.spec.network_policy.as_ref().filter(|n| n.enabled)?;
    let port = |name: &str| NetworkPolicyPort {
        port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        end_port: None,
    };
    let mut admin_from: Vec<String> = vec![
        t.config.operator_namespace.clone(),
        spec.monitoring_namespace.clone(),
    ];
    admin_from.dedup();
    Some(NetworkPolicy {
        metadata: object_meta(t),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(labels::selector(t.name)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    // No `from`: every source.
                    from: (!spec.from.is_empty()).then(|| spec.from.clone()),
                    ports: Some(vec![port("http")]),
                },
                NetworkPolicyIngressRule {
                    from: Some(admin_from.into_iter().map(namespace).collect()),
                    ports: Some(vec![port("admin")]),
                },
            ]),
            egress: None,
        }),
    })
}

fn namespace(name: String) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(NAMESPACE_NAME.to_owned(), name)])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    }
}
