//! Who owns the Deployment's `spec.replicas`, and how it changes hands without dropping pods.
//!
//! Server-side apply removes a field its manager stops applying when no other manager owns it, and
//! the Deployment then defaults to 1 replica: turning autoscaling on took an app from 4 pods to 1,
//! turning it off from 3 to 1. So the new owner always starts from the current count:
//! - fixed (no `autoscaling`): the operator applies `spec.replicas`, or the current count when the
//!   spec names none (1 for a new Deployment);
//! - `External`: the operator mirrors `spec.replicas` (written through the WsgiApp's scale
//!   subresource) and leaves the Deployment alone while it is unset;
//! - `CPU`, `Concurrency`, and `External` without replicas: before the operator stops applying the
//!   field, the `wharf-autoscaler` field manager applies the current count, so the field never has
//!   no owner. The HPA (CPU) then takes it over with its first update; the concurrency autoscaler
//!   writes under that manager anyway.

use k8s_openapi::api::apps::v1::Deployment;

use crate::crd::{AutoscalingMetric, WsgiAppSpec};
use crate::render::labels;

/// Field manager of the concurrency autoscaler's replica writes and of hand-overs.
pub const AUTOSCALER_MANAGER: &str = "wharf-autoscaler";

/// `spec.replicas` the operator applies on the Deployment; `None` leaves it to another owner.
pub fn deployment_replicas(spec: &WsgiAppSpec, current: Option<i32>) -> Option<i32> {
    match spec.autoscaling.as_ref().map(|a| a.metric) {
        None => Some(spec.replicas.or(current).unwrap_or(1)),
        Some(AutoscalingMetric::External) => spec.replicas,
        Some(AutoscalingMetric::Cpu | AutoscalingMetric::Concurrency) => None,
    }
}

/// The count to pin under [`AUTOSCALER_MANAGER`] before applying a Deployment without
/// `spec.replicas`: `Some` when the operator's manager owns the field today (it would be removed).
pub fn pin_before_release(existing: &Deployment, rendered: Option<i32>) -> Option<i32> {
    if rendered.is_some() {
        return None;
    }
    let current = existing.spec.as_ref()?.replicas?;
    let owned_by_operator = existing
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() == Some(labels::MANAGER))
        .filter_map(|m| m.fields_v1.as_ref())
        .any(|f| f.0.pointer("/f:spec/f:replicas").is_some());
    owned_by_operator.then_some(current)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::DeploymentSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
    use serde_json::json;

    use super::*;

    fn spec(autoscaling: serde_json::Value, replicas: Option<i32>) -> WsgiAppSpec {
        let mut s = json!({"image": "i", "app": "a:b"});
        if !autoscaling.is_null() {
            s["autoscaling"] = autoscaling;
        }
        if let Some(r) = replicas {
            s["replicas"] = json!(r);
        }
        serde_json::from_value(s).expect("spec")
    }

    fn deployment(replicas: i32, manager: &str) -> Deployment {
        Deployment {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                managed_fields: Some(vec![ManagedFieldsEntry {
                    manager: Some(manager.to_owned()),
                    operation: Some("Apply".to_owned()),
                    fields_v1: Some(FieldsV1(
                        json!({"f:spec": {"f:replicas": {}, "f:template": {}}}),
                    )),
                    ..ManagedFieldsEntry::default()
                }]),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                ..DeploymentSpec::default()
            }),
            status: None,
        }
    }

    #[test]
    fn fixed_mode_keeps_the_current_count_when_the_spec_names_none() {
        assert_eq!(deployment_replicas(&spec(json!(null), None), None), Some(1));
        assert_eq!(
            deployment_replicas(&spec(json!(null), None), Some(3)),
            Some(3)
        );
        assert_eq!(
            deployment_replicas(&spec(json!(null), Some(2)), Some(3)),
            Some(2)
        );
    }

    #[test]
    fn autoscaled_modes_leave_replicas_to_their_owner() {
        let cpu = spec(json!({"metric": "CPU", "maxReplicas": 4}), None);
        let conc = spec(json!({"maxReplicas": 4}), None);
        assert_eq!(deployment_replicas(&cpu, Some(4)), None);
        assert_eq!(deployment_replicas(&conc, Some(4)), None);
        let external = spec(json!({"metric": "External", "maxReplicas": 4}), Some(5));
        assert_eq!(deployment_replicas(&external, Some(4)), Some(5));
        let unset = spec(json!({"metric": "External", "maxReplicas": 4}), None);
        assert_eq!(deployment_replicas(&unset, Some(4)), None);
    }

    #[test]
    fn the_count_is_pinned_only_when_the_operator_lets_go_of_it() {
        assert_eq!(
            pin_before_release(&deployment(4, labels::MANAGER), None),
            Some(4)
        );
        assert_eq!(
            pin_before_release(&deployment(4, labels::MANAGER), Some(4)),
            None
        );
        assert_eq!(
            pin_before_release(&deployment(4, "kube-controller-manager"), None),
            None,
            "already owned by someone else (e.g. the HPA)"
        );
        assert_eq!(
            pin_before_release(&deployment(4, AUTOSCALER_MANAGER), None),
            None
        );
    }
}
