//! spec.autoscaling → HorizontalPodAutoscaler (autoscaling/v2).

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};

use super::{Target, object_meta};
use crate::crd::AutoscalingMetric;

/// `None` unless autoscaling on CPU, meaning an existing HPA must be deleted.
pub fn render(t: &Target) -> Option<HorizontalPodAutoscaler> {
    let autoscaling = t
        .app
        .spec
        .autoscaling
        .as_ref()
        .filter(|a| a.metric == AutoscalingMetric::Cpu)?;
    Some(HorizontalPodAutoscaler {
        metadata: object_meta(t),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_owned()),
                kind: "Deployment".to_owned(),
                name: t.name.to_owned(),
            },
            min_replicas: Some(autoscaling.min_replicas),
            max_replicas: autoscaling.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".to_owned(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".to_owned(),
                    target: MetricTarget {
                        type_: "Utilization".to_owned(),
                        average_utilization: Some(autoscaling.target_cpu_utilization_percentage),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            behavior: autoscaling.behavior.clone(),
        }),
        status: None,
    })
}
