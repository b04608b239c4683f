//! Pure status computation: the owned Deployment (and, in `Injected` mode, its pods) in, the
//! WsgiApp's `status` out. Condition semantics follow the Kubernetes API conventions: `Ready` and
//! `Progressing` are positive-polarity, `Degraded` is True when something needs a human.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::crd::WsgiAppStatus;
use crate::render::deployment::CONTAINER;
use crate::render::runtime::UNSUPPORTED_PREFIX;

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// A failure of the last reconcile, to be shown as `Degraded`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// CamelCase reason, e.g. `InvalidSpec` or `ApplyFailed`.
    pub reason: String,
    pub message: String,
}

/// Where the migration of `spec.migrate` stands, while the Deployment waits for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Migration {
    /// The Job `job` runs, or waits for `older`, a migration Job of an earlier template.
    Running { job: String, older: Option<String> },
    /// The Job failed; `message` has its reason and the last log lines.
    Failed { job: String, message: String },
}

/// What status computation looks at.
pub struct Observed<'a> {
    pub generation: Option<i64>,
    pub deployment: Option<&'a Deployment>,
    pub pods: &'a [Pod],
    pub url: Option<String>,
    pub address: Option<String>,
    pub monitoring: Option<String>,
    pub migration: Option<Migration>,
    /// `spec.paused`: nothing was applied.
    pub paused: bool,
    pub failure: Option<Failure>,
    /// Conditions currently stored, so unchanged conditions keep their lastTransitionTime.
    pub previous: &'a [Condition],
    pub now: Timestamp,
}

pub fn compute(o: &Observed) -> WsgiAppStatus {
    let rollout = rollout(o.deployment);
    let degraded = o
        .failure
        .clone()
        .or_else(|| match &o.migration {
            Some(Migration::Failed { message, .. }) => Some(Failure {
                reason: "MigrationFailed".to_owned(),
                message: message.clone(),
            }),
            _ => None,
        })
        .or_else(|| runtime_unsupported(o.pods))
        .or_else(|| match &rollout {
            Rollout::Failed(message) => Some(Failure {
                reason: "RolloutFailed".to_owned(),
                message: message.clone(),
            }),
            _ => None,
        });

    let (ready, ready_reason, ready_message) = match &rollout {
        Rollout::Missing => (
            false,
            "DeploymentMissing",
            "the Deployment does not exist yet".to_owned(),
        ),
        // Serving at full strength counts as ready even while a new revision rolls out.
        Rollout::Complete { ready, desired } | Rollout::InProgress { ready, desired, .. }
            if ready >= desired =>
        {
            (
                true,
                "MinimumReplicasAvailable",
                format!("{ready}/{desired} replicas ready"),
            )
        }
        Rollout::Complete { ready, desired } | Rollout::InProgress { ready, desired, .. } => (
            false,
            "ReplicasNotReady",
            format!("{ready}/{desired} replicas ready"),
        ),
        Rollout::Failed(message) => (false, "RolloutFailed", message.clone()),
    };
    let (progressing, progressing_reason, progressing_message) = match (&rollout, &o.migration) {
        _ if o.paused => (
            false,
            "Paused",
            "spec.paused is true: the operator changes nothing until it is false".to_owned(),
        ),
        (_, Some(Migration::Running { job, older: None })) => (
            true,
            "Migrating",
            format!(
                "migration Job {job} runs before the pods roll to the new template; the current pods keep serving"
            ),
        ),
        (
            _,
            Some(Migration::Running {
                job,
                older: Some(older),
            }),
        ) => (
            true,
            "Migrating",
            format!(
                "migration Job {job} waits for {older}, the migration of an earlier template, to finish; the current pods keep serving"
            ),
        ),
        (_, Some(Migration::Failed { job, .. })) => (
            false,
            "MigrationFailed",
            format!(
                "the pods stay on their current template: migration Job {job} failed (see Degraded); change the spec or delete the Job to try again"
            ),
        ),
        (rollout, None) => match rollout {
            Rollout::Missing => (true, "Creating", "creating the Deployment".to_owned()),
            Rollout::InProgress { why, .. } => (true, why.reason(), why.message()),
            Rollout::Complete { .. } => (
                false,
                "RolloutComplete",
                "the current revision is rolled out".to_owned(),
            ),
            Rollout::Failed(message) => (false, "ProgressDeadlineExceeded", message.clone()),
        },
    };
    let (degraded_status, degraded_reason, degraded_message) = match &degraded {
        Some(f) => (true, f.reason.as_str(), f.message.clone()),
        None => (false, "AsExpected", "no problems detected".to_owned()),
    };

    let deployment_status = o.deployment.and_then(|d| d.status.as_ref());
    WsgiAppStatus {
        observed_generation: o.generation,
        replicas: deployment_status.and_then(|s| s.replicas),
        ready_replicas: deployment_status.map(|s| s.ready_replicas.unwrap_or(0)),
        url: o.url.clone(),
        address: o.address.clone(),
        monitoring: o.monitoring.clone(),
        conditions: vec![
            condition(o, READY, ready, ready_reason, ready_message),
            condition(
                o,
                PROGRESSING,
                progressing,
                progressing_reason,
                progressing_message,
            ),
            condition(
                o,
                DEGRADED,
                degraded_status,
                degraded_reason,
                degraded_message,
            ),
        ],
        ..WsgiAppStatus::default()
    }
}

/// False while the app still needs watching closely (rolling out, or its state is unknown).
pub fn is_settled(status: &WsgiAppStatus) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == PROGRESSING && c.status == "False")
}

enum Rollout {
    Missing,
    InProgress {
        ready: i32,
        desired: i32,
        why: Progress,
    },
    Complete {
        ready: i32,
        desired: i32,
    },
    Failed(String),
}

fn rollout(deployment: Option<&Deployment>) -> Rollout {
    let Some(deployment) = deployment else {
        return Rollout::Missing;
    };
    let desired = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let Some(status) = deployment.status.as_ref() else {
        return Rollout::InProgress {
            ready: 0,
            desired,
            why: Progress::Updating,
        };
    };
    let ready = status.ready_replicas.unwrap_or(0);
    if let Some(c) = status.conditions.iter().flatten().find(|c| {
        c.type_ == "Progressing"
            && c.status == "False"
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    }) {
        return Rollout::Failed(
            c.message
                .clone()
                .unwrap_or_else(|| "the rollout exceeded its progress deadline".to_owned()),
        );
    }
    // Until the Deployment controller has seen the latest spec, its replica counts describe the
    // previous revision.
    let seen = deployment.metadata.generation.is_some()
        && status.observed_generation >= deployment.metadata.generation;
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let why = if !seen {
        Progress::Updating
    } else if total > updated {
        Progress::RollingOut {
            updated,
            old: total - updated,
        }
    } else if updated < desired {
        Progress::ScalingUp { total, desired }
    } else if total > desired {
        Progress::ScalingDown { total, desired }
    } else if available < updated {
        Progress::PodsNotReady { available, desired }
    } else {
        return Rollout::Complete { ready, desired };
    };
    Rollout::InProgress {
        ready,
        desired,
        why,
    }
}

/// Why a Deployment is not settled, told apart so a crash loop does not read as a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// The Deployment controller has not acted on the latest spec yet.
    Updating,
    /// Pods of an older revision are still running.
    RollingOut {
        updated: i32,
        old: i32,
    },
    ScalingUp {
        total: i32,
        desired: i32,
    },
    ScalingDown {
        total: i32,
        desired: i32,
    },
    /// All pods run the current revision, but some are not available (starting, failing their
    /// readiness probe, or crash-looping).
    PodsNotReady {
        available: i32,
        desired: i32,
    },
}

impl Progress {
    fn reason(self) -> &'static str {
        match self {
            Progress::Updating => "Updating",
            Progress::RollingOut { .. } => "RollingOut",
            Progress::ScalingUp { .. } => "ScalingUp",
            Progress::ScalingDown { .. } => "ScalingDown",
            Progress::PodsNotReady { .. } => "PodsNotReady",
        }
    }

    fn message(self) -> String {
        match self {
            Progress::Updating => {
                "the Deployment controller has not acted on the latest spec yet".to_owned()
            }
            Progress::RollingOut { updated, old } => format!(
                "a new revision is rolling out: {updated} updated, {old} old pods still running"
            ),
            Progress::ScalingUp { total, desired } => {
                format!("scaling up: {total}/{desired} pods exist")
            }
            Progress::ScalingDown { total, desired } => {
                format!("scaling down: {total} pods, {desired} wanted")
            }
            Progress::PodsNotReady { available, desired } => format!(
                "{available}/{desired} pods available; the others are starting, failing their readiness probe or crash-looping (see the pods' events and logs)"
            ),
        }
    }
}

/// The launcher of `Injected` mode leaves a message starting with [`UNSUPPORTED_PREFIX`] in the
/// termination log when the image's Python cannot load the runtime.
fn runtime_unsupported(pods: &[Pod]) -> Option<Failure> {
    pods.iter()
        .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
        .flatten()
        .filter(|cs| cs.name == CONTAINER)
        .flat_map(|cs| [cs.last_state.as_ref(), cs.state.as_ref()])
        .flatten()
        .filter_map(|s| s.terminated.as_ref()?.message.as_deref())
        .find(|m| m.trim_start().starts_with(UNSUPPORTED_PREFIX))
        .map(|m| Failure {
            reason: "RuntimeUnsupported".to_owned(),
            message: m.trim_start()[UNSUPPORTED_PREFIX.len()..].trim().to_owned(),
        })
}

fn condition(o: &Observed, type_: &str, status: bool, reason: &str, message: String) -> Condition {
    let status = if status { "True" } else { "False" }.to_owned();
    let last_transition_time = o
        .previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(o.now));
    Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message,
        observed_generation: o.generation,
        last_transition_time,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentSpec, DeploymentStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn deployment(replicas: i32, status: DeploymentStatus) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                generation: Some(2),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                ..DeploymentSpec::default()
            }),
            status: Some(status),
        }
    }

    fn observe(deployment: Option<&Deployment>, previous: &[Condition]) -> WsgiAppStatus {
        compute(&Observed {
            generation: Some(7),
            deployment,
            pods: &[],
            url: None,
            address: None,
            monitoring: None,
            migration: None,
            paused: false,
            failure: None,
            previous,
            now: Timestamp::from_second(1_000).expect("timestamp"),
        })
    }

    fn get<'a>(status: &'a WsgiAppStatus, type_: &str) -> &'a Condition {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect("condition present")
    }

    #[test]
    fn old_pods_still_running_mean_progressing() {
        let d = deployment(
            2,
            DeploymentStatus {
                observed_generation: Some(2),
                replicas: Some(3),
                updated_replicas: Some(2),
                ready_replicas: Some(3),
                available_replicas: Some(2),
                ..DeploymentStatus::default()
            },
        );
        let status = observe(Some(&d), &[]);
        assert_eq!(get(&status, PROGRESSING).status, "True");
        assert_eq!(
            get(&status, READY).status,
            "True",
            "3 ready pods serve while the old one drains"
        );
    }

    #[test]
    fn deadline_exceeded_is_degraded() {
        let d = deployment(
            2,
            DeploymentStatus {
                observed_generation: Some(2),
                conditions: Some(vec![DeploymentCondition {
                    type_: "Progressing".into(),
                    status: "False".into(),
                    reason: Some("ProgressDeadlineExceeded".into()),
                    message: Some("ReplicaSet \"web-1\" has timed out progressing.".into()),
                    ..DeploymentCondition::default()
                }]),
                ..DeploymentStatus::default()
            },
        );
        let status = observe(Some(&d), &[]);
        assert_eq!(
            (
                get(&status, DEGRADED).status.as_str(),
                get(&status, DEGRADED).reason.as_str()
            ),
            ("True", "RolloutFailed")
        );
        assert_eq!(get(&status, PROGRESSING).reason, "ProgressDeadlineExceeded");
        assert_eq!(get(&status, READY).status, "False");
    }

    #[test]
    fn unchanged_conditions_keep_their_transition_time() {
        let earlier = Time(Timestamp::from_second(10).expect("timestamp"));
        let previous = vec![Condition {
            type_: READY.into(),
            status: "False".into(),
            reason: "DeploymentMissing".into(),
            message: String::new(),
            observed_generation: Some(6),
            last_transition_time: earlier.clone(),
        }];
        let status = observe(None, &previous);
        assert_eq!(get(&status, READY).last_transition_time, earlier);
        assert_eq!(
            get(&status, DEGRADED).last_transition_time.0.as_second(),
            1_000
        );
        assert_eq!(get(&status, READY).observed_generation, Some(7));
    }

    fn rolled(desired: i32, total: i32, updated: i32, available: i32) -> WsgiAppStatus {
        let d = deployment(
            desired,
            DeploymentStatus {
                observed_generation: Some(2),
                replicas: Some(total),
                updated_replicas: Some(updated),
                ready_replicas: Some(available),
                available_replicas: Some(available),
                ..DeploymentStatus::default()
            },
        );
        observe(Some(&d), &[])
    }

    #[test]
    fn progressing_tells_rollouts_scaling_and_unready_pods_apart() {
        let reason = |s: &WsgiAppStatus| get(s, PROGRESSING).reason.clone();
        assert_eq!(reason(&rolled(2, 3, 1, 2)), "RollingOut");
        assert_eq!(reason(&rolled(4, 2, 2, 2)), "ScalingUp");
        assert_eq!(reason(&rolled(2, 4, 4, 4)), "ScalingDown");
        let crash_loop = rolled(2, 2, 2, 1);
        assert_eq!(reason(&crash_loop), "PodsNotReady");
        assert!(
            get(&crash_loop, PROGRESSING)
                .message
                .starts_with("1/2 pods available")
        );
        assert_eq!(get(&crash_loop, READY).status, "False");
        assert_eq!(reason(&rolled(2, 2, 2, 2)), "RolloutComplete");
        let mut unseen = deployment(2, DeploymentStatus::default());
        unseen.metadata.generation = Some(3);
        assert_eq!(reason(&observe(Some(&unseen), &[])), "Updating");
    }
}
