//! `spec.strategy`: how the Deployment replaces pods.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Rolling-update bounds, integers or percentages of the replica count.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!(string(self.maxSurge) in ['0', '0%'] && string(self.maxUnavailable) in ['0', '0%'])")
    .message("maxSurge and maxUnavailable cannot both be 0: the rollout could never replace a pod"))]
#[serde(rename_all = "camelCase")]
pub struct StrategySpec {
    /// Pods created above the desired count during a rollout.
    #[serde(default = "default_max_surge")]
    pub max_surge: IntOrString,
    /// Pods that may be unavailable during a rollout; 0 keeps full capacity serving.
    #[serde(default = "default_max_unavailable")]
    pub max_unavailable: IntOrString,
}

fn default_max_surge() -> IntOrString {
    IntOrString::String("25%".to_owned())
}
fn default_max_unavailable() -> IntOrString {
    IntOrString::Int(0)
}

impl Default for StrategySpec {
    fn default() -> Self {
        StrategySpec {
            max_surge: default_max_surge(),
            max_unavailable: default_max_unavailable(),
        }
    }
}
