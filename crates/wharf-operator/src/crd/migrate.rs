//! `spec.migrate`: a Job run with the new pod template before the Deployment rolls to it.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MigrateSpec {
    /// The command, run in the application image with the app's env and volumes, e.g.
    /// `["python", "manage.py", "migrate", "--noinput"]`.
    #[schemars(length(min = 1))]
    pub command: Vec<String>,
    /// The Job fails when it has not finished within this time (`activeDeadlineSeconds`).
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 10, max = 86400))]
    pub timeout_seconds: i32,
    /// Retries of a failed migration pod before the Job fails (`backoffLimit`).
    #[serde(default)]
    #[schemars(range(min = 0, max = 10))]
    pub backoff_limit: i32,
    /// Finished migration Jobs of earlier templates kept for their logs; older ones are deleted.
    #[serde(default = "default_history")]
    #[schemars(range(min = 0, max = 20))]
    pub history_limit: i32,
}

fn default_timeout() -> i32 {
    600
}
fn default_history() -> i32 {
    2
}
