//! spec.disruptionBudget → PodDisruptionBudget (policy/v1).

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Target, labels, object_meta};

/// `None` when the budget is disabled, meaning an existing PDB must be deleted.
///
/// Without an explicit budget the default is `maxUnavailable: 1`: it keeps voluntary evictions
/// (node drains) one pod at a time yet never blocks them, even with a single replica.
pub fn render(t: &Target) -> Option<PodDisruptionBudget> {
    let budget = t.app.spec.disruption_budget.as_ref();
    if budget.is_some_and(|b| !b.enabled) {
        return None;
    }
    let min_available = budget.and_then(|b| b.min_available.clone());
    let max_unavailable = match (
        &min_available,
        budget.and_then(|b| b.max_unavailable.clone()),
    ) {
        (_, Some(max)) => Some(max),
        (None, None) => Some(IntOrString::Int(1)),
        (Some(_), None) => None,
    };
    Some(PodDisruptionBudget {
        metadata: object_meta(t),
        spec: Some(PodDisruptionBudgetSpec {
            selector: Some(LabelSelector {
                match_labels: Some(labels::selector(t.name)),
                ..LabelSelector::default()
            }),
            min_available,
            max_unavailable,
            // Pods that never became ready must not hold up a node drain.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_owned()),
        }),
        status: None,
    })
}
