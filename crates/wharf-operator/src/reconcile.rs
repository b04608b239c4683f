//! One reconciliation of one WsgiApp against the API server: apply the rendered children with
//! server-side apply, delete the ones no longer wanted, then write the status.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::crd::{Runtime, WsgiApp, WsgiAppStatus};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::render::{self, RenderConfig, labels};
use crate::status::{self, Failure, Observed};

/// Re-check interval once an app is settled: catches drift the watches missed.
const SETTLED_REQUEUE: Duration = Duration::from_secs(300);
/// Re-check interval while a rollout is under way, so status follows it closely.
const ROLLOUT_REQUEUE: Duration = Duration::from_secs(10);
/// Safety net for specs that cannot be reconciled until they change.
const INVALID_REQUEUE: Duration = Duration::from_secs(1800);
const BACKOFF_BASE: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

pub struct Context {
    pub client: Client,
    pub render: RenderConfig,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per WsgiApp, for exponential backoff.
    failures: Mutex<HashMap<ObjectRef<WsgiApp>, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        render: RenderConfig,
        recorder: Recorder,
        metrics: Arc<Metrics>,
    ) -> Self {
        Context {
            client,
            render,
            recorder,
            metrics,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<WsgiApp>, u32>> {
        // A panic while holding the lock cannot leave the counters inconsistent, so poison is ignored.
        self.failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a failure and returns how long to wait before the next attempt: 5 s, 10 s, 20 s …
    /// capped at 5 minutes.
    pub fn backoff(&self, app: &WsgiApp) -> Duration {
        let mut failures = self.failures();
        let count = failures.entry(ObjectRef::from(app)).or_insert(0);
        *count = count.saturating_add(1);
        let factor = 2u32.saturating_pow(count.saturating_sub(1).min(16));
        BACKOFF_BASE.saturating_mul(factor).min(BACKOFF_MAX)
    }

    fn succeeded(&self, app: &WsgiApp) {
        self.failures().remove(&ObjectRef::from(app));
    }
}

/// Entry point used by the controller: one span per reconcile, metrics, and failure reporting.
#[tracing::instrument(skip_all, fields(name = %app.name_any(), namespace = app.namespace().unwrap_or_default()))]
pub async fn reconcile(app: Arc<WsgiApp>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = apply_all(&app, &ctx).await;
    let outcome = match result {
        Ok(action) => {
            ctx.succeeded(&app);
            Ok(action)
        }
        Err(error) if error.is_permanent() => {
            tracing::warn!(%error, "spec cannot be applied; waiting for it to change");
            report_failure(&app, &ctx, &error).await;
            Ok(Action::requeue(INVALID_REQUEUE))
        }
        Err(error) => {
            tracing::warn!(%error, "reconcile failed");
            report_failure(&app, &ctx, &error).await;
            Err(error)
        }
    };
    let reason = match &outcome {
        Ok(_) => None,
        Err(e) => Some(e.reason()),
    };
    ctx.metrics.observe(started.elapsed(), reason);
    outcome
}

/// Backoff for failed reconciles (the controller's error policy).
pub fn error_policy(app: Arc<WsgiApp>, _error: &Error, ctx: Arc<Context>) -> Action {
    Action::requeue(ctx.backoff(&app))
}

async fn apply_all(app: &WsgiApp, ctx: &Context) -> Result<Action, Error> {
    let children = render::render(app, &ctx.render).map_err(|source| Error::Render {
        app: render::display_name(app),
        source,
    })?;
    let name = app.name_any();
    let namespace = children
        .deployment
        .metadata
        .namespace
        .clone()
        .unwrap_or_default();
    let uid = app.uid().unwrap_or_default();

    let deployment = apply(&ctx.client, &namespace, &children.deployment).await?;
    apply(&ctx.client, &namespace, &children.service).await?;
    match &children.hpa {
        Some(hpa) => drop(apply(&ctx.client, &namespace, hpa).await?),
        None => {
            delete_owned::<HorizontalPodAutoscaler>(&ctx.client, &namespace, &name, &uid).await?
        }
    }
    match &children.pdb {
        Some(pdb) => drop(apply(&ctx.client, &namespace, pdb).await?),
        None => delete_owned::<PodDisruptionBudget>(&ctx.client, &namespace, &name, &uid).await?,
    }

    // Only the injected runtime leaves a verdict in the termination log worth reading.
    let pods = if app.spec.runtime == Runtime::Injected {
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
        api.list(&ListParams::default().labels(&labels::selector_query(&name)))
            .await
            .map_err(|source| Error::ListPods {
                app: render::display_name(app),
                source: Box::new(source),
            })?
            .items
    } else {
        Vec::new()
    };

    let previous = app.status.clone().unwrap_or_default();
    let status = status::compute(&Observed {
        generation: app.metadata.generation,
        deployment: Some(&deployment),
        pods: &pods,
        url: Some(children.url.clone()),
        failure: None,
        previous: &previous.conditions,
        now: Timestamp::now(),
    });
    if let Some(degraded) = status
        .conditions
        .iter()
        .find(|c| c.type_ == status::DEGRADED && c.status == "True")
        && !previous.conditions.iter().any(|c| {
            c.type_ == status::DEGRADED && c.status == "True" && c.reason == degraded.reason
        })
    {
        publish(
            ctx,
            app,
            EventType::Warning,
            &degraded.reason,
            &degraded.message,
        )
        .await;
    }
    let settled = status::is_settled(&status);
    patch_status(&ctx.client, app, &status).await?;
    Ok(Action::requeue(if settled {
        SETTLED_REQUEUE
    } else {
        ROLLOUT_REQUEUE
    }))
}

/// Server-side apply, forcing ownership of the fields we set: the operator is the source of truth
/// for them, and drift introduced by other managers is corrected here.
async fn apply<K>(client: &Client, namespace: &str, object: &K) -> Result<K, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    // An empty body, force-applied, would release every field this manager owns.
    let mut body = serde_json::to_value(object).map_err(|source| Error::Serialize {
        kind: K::kind(&()).into_owned(),
        name: name.clone(),
        source,
    })?;
    body["apiVersion"] = json!(K::api_version(&()));
    body["kind"] = json!(K::kind(&()));
    api.patch(
        &name,
        &PatchParams::apply(labels::MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|source| Error::Api {
        verb: "apply",
        kind: K::kind(&()).into_owned(),
        namespace: namespace.to_owned(),
        name,
        source: Box::new(source),
    })
}

/// Deletes `name` if (and only if) it is controlled by the WsgiApp `owner_uid`: an object of the same
/// name created by someone else is left alone.
async fn delete_owned<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    owner_uid: &str,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let err = |verb, source| Error::Api {
        verb,
        kind: K::kind(&()).into_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        source: Box::new(source),
    };
    let Some(existing) = api.get_opt(name).await.map_err(|e| err("get", e))? else {
        return Ok(());
    };
    let owned = existing
        .owner_references()
        .iter()
        .any(|o| o.uid == owner_uid && o.controller == Some(true));
    if !owned {
        tracing::info!(kind = %K::kind(&()), name, "not deleting an object the WsgiApp does not control");
        return Ok(());
    }
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => {
            tracing::info!(kind = %K::kind(&()), name, "deleted child no longer wanted");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(err("delete", e)),
    }
}

async fn patch_status(client: &Client, app: &WsgiApp, status: &WsgiAppStatus) -> Result<(), Error> {
    let name = app.name_any();
    let namespace = app.namespace().unwrap_or_default();
    let api: Api<WsgiApp> = Api::namespaced(client.clone(), &namespace);
    let body = json!({
        "apiVersion": render::api_version(),
        "kind": "WsgiApp",
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(labels::MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map(drop)
    .map_err(|source| Error::Api {
        verb: "patch status of",
        kind: "WsgiApp".to_owned(),
        namespace,
        name,
        source: Box::new(source),
    })
}

/// Best effort: an Event and a `Degraded` condition. Failing to report is logged, not retried, since
/// the reconcile itself is retried anyway.
async fn report_failure(app: &WsgiApp, ctx: &Context, error: &Error) {
    let failure = Failure {
        reason: error.reason().to_owned(),
        message: error.to_string(),
    };
    publish(
        ctx,
        app,
        EventType::Warning,
        &failure.reason,
        &failure.message,
    )
    .await;
    let previous = app.status.clone().unwrap_or_default();
    let status = status::with_failure(
        &previous,
        app.metadata.generation,
        &failure,
        Timestamp::now(),
    );
    if let Err(report_error) = patch_status(&ctx.client, app, &status).await {
        tracing::warn!(error = %report_error, "could not record the failure in the status");
    }
}

async fn publish(ctx: &Context, app: &WsgiApp, type_: EventType, reason: &str, message: &str) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        // Events are capped at 1 kB of note.
        note: Some(message.chars().take(1000).collect()),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &app.object_ref(&())).await {
        tracing::warn!(%error, "could not publish an event");
    }
}
