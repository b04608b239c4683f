//! `spec.migrate`: the Deployment rolls to a new pod template only after the migration Job for
//! that template succeeded; until then it keeps its current template (and its pods serve).
//! Finished Jobs of earlier templates are deleted beyond `historyLimit`.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, LogParams};
use kube::{Api, ResourceExt};

use super::children::{ensure, remove};
use super::live::key;
use super::{Context, status_message_mentions};
use crate::crd::WsgiApp;
use crate::error::Error;
use crate::render::Children;
use crate::render::deployment::{CONTAINER, hash_of};
use crate::render::migrate::HASH_LABEL;
use crate::status::Migration;

/// Log lines of the failed migration pod quoted in `Degraded`.
const LOG_LINES: i64 = 10;

/// What the Deployment may do this reconcile.
pub(crate) struct Gate {
    /// `Some` while the Deployment must keep its current template.
    pub(crate) migration: Option<Migration>,
    pub(crate) errors: Vec<Error>,
}

impl Gate {
    pub(crate) fn holds(&self) -> bool {
        self.migration.is_some() || !self.errors.is_empty()
    }
}

pub(crate) async fn gate(ctx: &Context, app: &WsgiApp, children: &Children) -> Gate {
    let mut gate = Gate {
        migration: None,
        errors: Vec::new(),
    };
    let owned = owned_jobs(ctx, app);
    let keep = app.spec.migrate.as_ref().map_or(0, |m| m.history_limit);
    let Some(job) = &children.migration else {
        gate.errors
            .extend(prune(ctx, app, &owned, None, keep).await);
        return gate;
    };
    let name = job.name_any();
    let namespace = app.namespace().unwrap_or_default();
    let rendered = children
        .deployment
        .spec
        .as_ref()
        .and_then(|s| hash_of(&s.template));
    let live = ctx.live.deployments.get(&key(&app.name_any(), &namespace));
    let rolled = live
        .as_ref()
        .and_then(|d| d.spec.as_ref())
        .and_then(|s| hash_of(&s.template));
    // The Deployment already runs this template: migrated (or migrate was added since).
    if rendered.is_some() && rolled == rendered {
        gate.errors
            .extend(prune(ctx, app, &owned, Some(&name), keep).await);
        return gate;
    }
    let current = ctx.live.jobs.get(&key(&name, &namespace));
    gate.migration = match current.as_deref().map(state) {
        Some(State::Succeeded) => None,
        Some(State::Failed(why)) => Some(Migration::Failed {
            message: failure_message(ctx, app, &name, &why).await,
            job: name.clone(),
        }),
        Some(State::Active) => Some(Migration::Running {
            job: name.clone(),
            older: None,
        }),
        None => {
            // Two migrations never run at once: an older one still running is waited for.
            if let Some(older) = owned
                .iter()
                .find(|j| j.name_any() != name && state(j) == State::Active)
            {
                Some(Migration::Running {
                    job: name.clone(),
                    older: Some(older.name_any()),
                })
            } else {
                // Created once, never re-applied: a Job's template cannot change.
                if let Err(error) = ensure(ctx, app, &ctx.live.jobs, job).await {
                    gate.errors.push(error);
                }
                Some(Migration::Running {
                    job: name.clone(),
                    older: None,
                })
            }
        }
    };
    gate.errors
        .extend(prune(ctx, app, &owned, Some(&name), keep).await);
    gate
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Active,
    Succeeded,
    /// The Job's `Failed` condition: reason and message.
    Failed(String),
}

fn state(job: &Job) -> State {
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten();
    for condition in conditions.filter(|c| c.status == "True") {
        match condition.type_.as_str() {
            "Complete" => return State::Succeeded,
            "Failed" => {
                return State::Failed(format!(
                    "{}: {}",
                    condition.reason.as_deref().unwrap_or("Failed"),
                    condition.message.as_deref().unwrap_or("no message")
                ));
            }
            _ => {}
        }
    }
    State::Active
}

/// Migration Jobs this WsgiApp controls, newest first.
fn owned_jobs(ctx: &Context, app: &WsgiApp) -> Vec<std::sync::Arc<Job>> {
    let namespace = app.namespace().unwrap_or_default();
    let uid = app.uid().unwrap_or_default();
    let mut jobs: Vec<_> = ctx
        .live
        .jobs
        .state()
        .into_iter()
        .filter(|j| j.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|j| j.labels().contains_key(HASH_LABEL))
        .filter(|j| {
            j.owner_references()
                .iter()
                .any(|o| o.uid == uid && o.controller == Some(true))
        })
        .collect();
    jobs.sort_by_key(|j| std::cmp::Reverse(j.creation_timestamp()));
    jobs
}

/// Deletes finished Jobs other than `current`, beyond the newest `keep`.
async fn prune(
    ctx: &Context,
    app: &WsgiApp,
    owned: &[std::sync::Arc<Job>],
    current: Option<&str>,
    keep: i32,
) -> Vec<Error> {
    let finished = owned
        .iter()
        .filter(|j| Some(j.name_any().as_str()) != current && state(j) != State::Active);
    let mut errors = Vec::new();
    for job in finished.skip(usize::try_from(keep).unwrap_or(0)) {
        if let Err(error) = remove(ctx, app, &ctx.live.jobs, &job.name_any()).await {
            errors.push(error);
        }
    }
    errors
}

/// The Job's failure and its pod's last log lines. The logs are read once per failed Job: while
/// `Degraded` already names it, the stored message is kept.
async fn failure_message(ctx: &Context, app: &WsgiApp, job: &str, why: &str) -> String {
    let headline = format!("migration Job {job} failed ({why})");
    if let Some(stored) = status_message_mentions(app, job) {
        return stored;
    }
    match last_log_lines(ctx, app, job).await {
        Ok(Some(lines)) => format!("{headline}; last log lines:\n{lines}"),
        Ok(None) => headline,
        Err(error) => format!("{headline}; its logs could not be read: {error}"),
    }
}

async fn last_log_lines(ctx: &Context, app: &WsgiApp, job: &str) -> Result<Option<String>, Error> {
    let namespace = app.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let list = pods
        // The Job controller labels its pods with `job-name` (and, from 1.27, the prefixed form).
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
        .map_err(|source| Error::ListPods {
            app: crate::render::display_name(app),
            source: Box::new(source),
        })?;
    let Some(newest) = list
        .items
        .iter()
        .max_by(|a, b| a.creation_timestamp().cmp(&b.creation_timestamp()))
    else {
        return Ok(None);
    };
    let name = newest.name_any();
    let logs = pods
        .logs(
            &name,
            &LogParams {
                container: Some(CONTAINER.to_owned()),
                tail_lines: Some(LOG_LINES),
                ..LogParams::default()
            },
        )
        .await
        .map_err(|source| Error::Api {
            verb: "read the logs of",
            kind: "Pod".to_owned(),
            namespace,
            name,
            source: Box::new(source),
        })?;
    let trimmed = logs.trim_end();
    Ok((!trimmed.is_empty()).then(|| trimmed.to_owned()))
}
