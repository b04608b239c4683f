//! spec.migrate → a Job (batch/v1) that runs the migration command with the new pod template's
//! image, env, volumes and init containers. Its name carries the template hash, so it runs once
//! per template; the Deployment rolls to that template only after the Job succeeded.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::deployment::{CONTAINER, TEMPLATE_HASH, hash_of};
use super::{Target, labels, object_meta};

/// Label on migration Jobs (and their pods) with the template hash they migrate to.
pub const HASH_LABEL: &str = "wharf.dev/template-hash";
pub const COMPONENT: &str = "migration";
/// Job names become a pod label value: at most 63 characters.
const MAX_NAME: usize = 63;

/// The Job name for a template hash: `<app>-migrate-<first 8 hex digits>`, the app name cut so
/// the whole fits.
pub fn job_name(app: &str, hash: &str) -> String {
    let short = hash.get(..8).unwrap_or(hash);
    let suffix = format!("-migrate-{short}");
    let keep = MAX_NAME.saturating_sub(suffix.len());
    let mut name: String = app.chars().take(keep).collect();
    name = name.trim_end_matches(['-', '.']).to_owned();
    name + &suffix
}

/// `None` without `spec.migrate`. `template` is the Deployment's rendered pod template.
pub fn render(t: &Target, template: &PodTemplateSpec) -> Option<Job> {
    let migrate = t.app.spec.migrate.as_ref()?;
    let hash = hash_of(template)?.to_owned();
    let mut meta = object_meta(t);
    meta.name = Some(job_name(t.name, &hash));
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.to_owned(), hash.clone());

    let mut pod = template.spec.clone().unwrap_or_default();
    // Only the app container, running the command: sidecars would keep the Job from completing.
    pod.containers.retain(|c| c.name == CONTAINER);
    for container in &mut pod.containers {
        container.command = Some(migrate.command.clone());
        container.args = None;
        container.ports = None;
        container.startup_probe = None;
        container.liveness_probe = None;
        container.readiness_probe = None;
        container.lifecycle = None;
    }
    let mut annotations = template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default();
    annotations.remove(TEMPLATE_HASH);
    Some(Job {
        metadata: meta,
        spec: Some(JobSpec {
            backoff_limit: Some(migrate.backoff_limit),
            active_deadline_seconds: Some(i64::from(migrate.timeout_seconds)),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels(t.name, &hash)),
                    annotations: (!annotations.is_empty()).then_some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_owned()),
                    ..pod
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    })
}

/// Labels of the migration pods: not the app's selector, so the Service, the PodDisruptionBudget
/// and the autoscaler never count them as app pods.
fn pod_labels(app: &str, hash: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::NAME.to_owned(), app.to_owned()),
        (labels::COMPONENT.to_owned(), COMPONENT.to_owned()),
        (labels::PART_OF.to_owned(), "wharf".to_owned()),
        (labels::MANAGED_BY.to_owned(), labels::MANAGER.to_owned()),
        (HASH_LABEL.to_owned(), hash.to_owned()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_fit_a_label_value() {
        assert_eq!(job_name("web", "0123456789abcdef"), "web-migrate-01234567");
        let long = "a".repeat(80);
        let name = job_name(&long, "0123456789abcdef");
        assert_eq!(name.len(), 63);
        assert!(name.ends_with("-migrate-01234567"));
        assert_eq!(
            job_name(&format!("{}-b", "a".repeat(45)), "0123456789abcdef"),
            format!("{}-migrate-01234567", "a".repeat(45))
        );
    }
}
