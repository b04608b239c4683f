//! `spec.autoscaling`: who owns the replica count and on what signal.

use std::time::Duration;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::autoscale::decide::Params;

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("self.minReplicas <= self.maxReplicas")
        .message("minReplicas must not exceed maxReplicas")
        .field_path(".minReplicas"),
    validation = Rule::new("!has(self.behavior) || self.metric == 'CPU'")
        .message("behavior is passed to the HorizontalPodAutoscaler and applies to metric CPU only")
        .field_path(".behavior"),
    validation = Rule::new("self.panicWindowSeconds <= self.scaleDownDelaySeconds || self.metric != 'Concurrency'")
        .message("panicWindowSeconds must not exceed scaleDownDelaySeconds (the stable window)")
        .field_path(".panicWindowSeconds"),
)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    /// What sizes the Deployment: `Concurrency` (the operator, on wharf's busy and queued Python
    /// threads), `CPU` (a HorizontalPodAutoscaler on CPU utilization) or `External` (whoever writes
    /// the WsgiApp's `/scale` subresource, e.g. your own HPA or KEDA; the operator decides nothing).
    #[serde(default)]
    pub metric: AutoscalingMetric,
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Concurrency: share of the Python threads that should be busy or queued, in percent.
    #[serde(default = "default_target_utilization")]
    #[schemars(range(min = 1, max = 100))]
    pub target_utilization_percent: i32,
    /// Concurrency: the stable window; the count follows the mean load over it, and goes down
    /// only once a whole window is observed and no rise happened within it.
    #[serde(default = "default_scale_down_delay")]
    #[schemars(range(min = 1, max = 3600))]
    pub scale_down_delay_seconds: i32,
    /// Concurrency: the window whose mean (or newest sample, when higher) decides a panic.
    #[serde(default = "default_panic_window")]
    #[schemars(range(min = 1, max = 600))]
    pub panic_window_seconds: i32,
    /// Concurrency: panic (scale up at once, never down) when the newest load needs this share of
    /// the ready pods, in percent.
    #[serde(default = "default_panic_threshold")]
    #[schemars(range(min = 110, max = 1000))]
    pub panic_threshold_percent: i32,
    /// Concurrency: one decision grows the count to at most this many times the ready pods.
    #[serde(default = "default_max_scale_up_rate")]
    #[schemars(range(min = 2, max = 10000))]
    pub max_scale_up_rate: i32,
    /// Concurrency: one decision shrinks the count to no less than the current one divided by this.
    #[serde(default = "default_max_scale_down_rate")]
    #[schemars(range(min = 2, max = 10000))]
    pub max_scale_down_rate: i32,
    /// CPU: average CPU utilization target; needs `resources.requests.cpu`.
    #[serde(
        rename = "targetCPUUtilizationPercentage",
        default = "default_cpu_target"
    )]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: i32,
    /// CPU: passed through to the HorizontalPodAutoscaler's `spec.behavior`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AutoscalingMetric {
    #[default]
    Concurrency,
    #[serde(rename = "CPU")]
    Cpu,
    External,
}

/// What the concurrency autoscaler saw and decided last (`status.autoscaling`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingStatus {
    /// Busy + queued Python threads over the ready pods, a decimal string (e.g. "37.5").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_load: Option<String>,
    /// Python threads over the ready pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_replicas: Option<i32>,
    /// `Stable` or `Panic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// CamelCase reason of the last change of the replica count, e.g. `PanicBurst` or `LoadFell`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_reason: Option<String>,
    /// The last decision in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn default_min_replicas() -> i32 {
    1
}
fn default_cpu_target() -> i32 {
    80
}
fn default_target_utilization() -> i32 {
    70
}
fn default_scale_down_delay() -> i32 {
    60
}
fn default_panic_window() -> i32 {
    6
}
fn default_panic_threshold() -> i32 {
    200
}
fn default_max_scale_up_rate() -> i32 {
    1000
}
fn default_max_scale_down_rate() -> i32 {
    2
}

fn positive(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0).max(1)
}

impl AutoscalingSpec {
    /// The decision's parameters; out-of-range values stored under an older CRD are clamped to the
    /// nearest valid one rather than trusted.
    pub fn params(&self) -> Params {
        let min = positive(self.min_replicas);
        Params {
            min_replicas: min,
            max_replicas: positive(self.max_replicas).max(min),
            target_utilization_percent: positive(self.target_utilization_percent).min(100),
            scale_down_delay: Duration::from_secs(u64::from(positive(
                self.scale_down_delay_seconds,
            ))),
            panic_window: Duration::from_secs(u64::from(positive(self.panic_window_seconds))),
            panic_threshold_percent: positive(self.panic_threshold_percent).max(110),
            max_scale_up_rate: positive(self.max_scale_up_rate).max(2),
            max_scale_down_rate: positive(self.max_scale_down_rate).max(2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones_and_params_follow_them() {
        let spec: AutoscalingSpec =
            serde_json::from_value(serde_json::json!({"maxReplicas": 8})).expect("parses");
        assert_eq!(spec.metric, AutoscalingMetric::Concurrency);
        assert_eq!(
            spec.params(),
            Params {
                max_replicas: 8,
                ..Params::default()
            }
        );
        let cpu: AutoscalingSpec =
            serde_json::from_value(serde_json::json!({"metric": "CPU", "maxReplicas": 2}))
                .expect("parses");
        assert_eq!(cpu.metric, AutoscalingMetric::Cpu);
    }

    #[test]
    fn out_of_range_values_are_clamped() {
        let spec: AutoscalingSpec = serde_json::from_value(serde_json::json!({
            "minReplicas": 5, "maxReplicas": 2, "targetUtilizationPercent": 400,
            "maxScaleDownRate": 0, "panicThresholdPercent": -3,
        }))
        .expect("parses");
        let p = spec.params();
        assert_eq!((p.min_replicas, p.max_replicas), (5, 5));
        assert_eq!(p.target_utilization_percent, 100);
        assert_eq!(p.max_scale_down_rate, 2);
        assert_eq!(p.panic_threshold_percent, 110);
    }
}
