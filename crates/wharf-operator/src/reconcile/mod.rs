//! One reconciliation of one WsgiApp: render the children (pure), apply them as a set
//! ([`children`]), then write the status if it changed. Writes that would change nothing are
//! skipped ([`unchanged`]), so a settled app costs no API request.

mod children;
mod config;
pub mod live;
mod migration;
mod unchanged;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::autoscale::task::Autoscalers;
use crate::crd::{Runtime, WsgiApp, WsgiAppStatus};
use crate::error::Error;
use crate::leader::Gate;
use crate::metrics::Metrics;
use crate::render::{self, Current, RenderConfig, labels};
use crate::status::{self, Failure, Migration, Observed};
use live::Live;

/// Re-check interval once an app is settled: catches drift the watches missed.
const SETTLED_REQUEUE: Duration = Duration::from_secs(300);
/// First re-check of an unsettled app (rolling out, scaling, pods not ready). Watch events on the
/// Deployment keep the status current in between; this is only the safety net, and it doubles
/// for each re-check that finds the app still unsettled, up to [`SETTLED_REQUEUE`].
const UNSETTLED_REQUEUE: Duration = Duration::from_secs(10);
/// Safety net for specs that cannot be reconciled until they change.
const INVALID_REQUEUE: Duration = Duration::from_secs(1800);
const BACKOFF_BASE: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// How long a reconcile waits for the child watches' first listing before giving up (and being
/// retried with backoff).
const SYNC_WAIT: Duration = Duration::from_secs(10);

pub struct Context {
    pub client: Client,
    pub render: RenderConfig,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Closed when this replica is not (or no longer) the leader: no write may start then.
    gate: Gate,
    live: Live,
    /// The concurrency autoscalers; `None` where no autoscaling runs (tests of the reconciler).
    autoscalers: Option<Autoscalers>,
    /// Consecutive failures per WsgiApp, for exponential backoff.
    failures: Mutex<HashMap<ObjectRef<WsgiApp>, u32>>,
    /// Consecutive unsettled re-checks per WsgiApp, of its current generation.
    unsettled: Mutex<HashMap<ObjectRef<WsgiApp>, Unsettled>>,
    /// Digests of the referenced ConfigMaps and Secrets, by resourceVersion.
    digests: config::Digests,
}

impl Context {
    pub fn new(
        client: Client,
        render: RenderConfig,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        gate: Gate,
        live: Live,
    ) -> Self {
        Context {
            client,
            render,
            recorder,
            metrics,
            gate,
            live,
            autoscalers: None,
            failures: Mutex::new(HashMap::new()),
            unsettled: Mutex::new(HashMap::new()),
            digests: config::Digests::default(),
        }
    }

    /// Runs a concurrency autoscaler for each WsgiApp in `Concurrency` mode; dropping the context
    /// stops them all.
    pub fn with_autoscalers(mut self, autoscalers: Autoscalers) -> Self {
        self.autoscalers = Some(autoscalers);
        self
    }

    /// Records a failure and returns how long to wait before the next attempt: 5 s, 10 s, 20 s …
    /// capped at 5 minutes.
    pub fn backoff(&self, app: &WsgiApp) -> Duration {
        let mut failures = lock(&self.failures);
        let count = failures.entry(ObjectRef::from(app)).or_insert(0);
        *count = count.saturating_add(1);
        doubled(BACKOFF_BASE, *count, BACKOFF_MAX)
    }

    fn succeeded(&self, app: &WsgiApp) {
        lock(&self.failures).remove(&ObjectRef::from(app));
    }

    /// Next re-check: 5 minutes once settled; 10 s, 20 s, 40 s … while the same generation stays
    /// unsettled (a crash-looping app is not re-read every 10 s forever).
    fn requeue(&self, app: &WsgiApp, settled: bool) -> Duration {
        let mut unsettled = lock(&self.unsettled);
        let key = ObjectRef::from(app);
        if settled {
            unsettled.remove(&key);
            return SETTLED_REQUEUE;
        }
        let generation = app.metadata.generation;
        let entry = unsettled.entry(key).or_insert(Unsettled {
            generation,
            count: 0,
        });
        if entry.generation != generation {
            *entry = Unsettled {
                generation,
                count: 0,
            };
        }
        entry.count = entry.count.saturating_add(1);
        doubled(UNSETTLED_REQUEUE, entry.count, SETTLED_REQUEUE)
    }

    /// Checked before every write, so a replica whose leadership ended never starts one.
    fn may_write(&self) -> Result<(), Error> {
        if self.gate.is_open() {
            Ok(())
        } else {
            Err(Error::NotLeader)
        }
    }
}

/// Re-checks of one generation that found the app still unsettled.
struct Unsettled {
    generation: Option<i64>,
    count: u32,
}

/// `base`, doubled for each `count` after the first, at most `max`.
fn doubled(base: Duration, count: u32, max: Duration) -> Duration {
    let factor = 2u32.saturating_pow(count.saturating_sub(1).min(16));
    base.saturating_mul(factor).min(max)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a counter map inconsistent, so poison is ignored.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Entry point used by the controller: one span per reconcile, metrics, and failure handling.
#[tracing::instrument(skip_all, fields(name = %app.name_any(), namespace = app.namespace().unwrap_or_default()))]
pub async fn reconcile(app: Arc<WsgiApp>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let outcome = match reconcile_app(&app, &ctx).await {
        Ok(settled) => {
            ctx.succeeded(&app);
            Ok(Action::requeue(ctx.requeue(&app, settled)))
        }
        Err(error @ (Error::NotLeader | Error::NotSynced)) => Err(error),
        Err(error) if error.is_permanent() => {
            tracing::warn!(%error, "spec cannot be applied; waiting for it to change");
            Ok(Action::requeue(INVALID_REQUEUE))
        }
        Err(error) => {
            tracing::warn!(%error, "reconcile failed");
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

/// What one reconcile did, for the status.
struct Outcome {
    deployment: Option<Arc<k8s_openapi::api::apps::v1::Deployment>>,
    errors: Vec<Error>,
    url: Option<String>,
    address: Option<String>,
    monitoring: Option<String>,
    migration: Option<Migration>,
}

/// Applies and records the status; `Ok(settled)` or the errors, already shown in the status.
async fn reconcile_app(app: &WsgiApp, ctx: &Context) -> Result<bool, Error> {
    ctx.live.synced(SYNC_WAIT).await?;
    let existing = ctx.live.deployments.get(&live::key(
        &app.name_any(),
        &app.namespace().unwrap_or_default(),
    ));
    let previous = app.status.clone().unwrap_or_default();
    let Outcome {
        deployment,
        mut errors,
        url,
        address,
        monitoring,
        migration,
    } = if app.spec.paused {
        // Everything stays as it is; only the status tells what the children look like.
        Outcome {
            deployment: existing,
            errors: Vec::new(),
            url: previous.url.clone(),
            address: previous.address.clone(),
            monitoring: previous.monitoring.clone(),
            migration: None,
        }
    } else {
        apply(app, ctx, existing).await
    };
    if errors.iter().any(|e| matches!(e, Error::NotLeader)) {
        return Err(Error::NotLeader);
    }
    // Only the injected runtime leaves a verdict in the termination log worth reading.
    let pods = if app.spec.runtime == Runtime::Injected && errors.is_empty() && !app.spec.paused {
        list_pods(ctx, app).await.unwrap_or_else(|error| {
            errors.push(error);
            Vec::new()
        })
    } else {
        Vec::new()
    };
    let error = match errors.len() {
        0 => None,
        1 => errors.pop(),
        _ => Some(Error::Children(errors)),
    };

    let mut status = status::compute(&Observed {
        generation: app.metadata.generation,
        deployment: deployment.as_deref(),
        pods: &pods,
        url,
        address,
        monitoring,
        migration,
        paused: app.spec.paused,
        failure: error.as_ref().map(|e| Failure {
            reason: e.reason().to_owned(),
            message: e.to_string(),
        }),
        previous: &previous.conditions,
        now: Timestamp::now(),
    });
    // The scale subresource's `labelSelectorPath`.
    status.selector = Some(labels::selector_query(&app.name_any()));
    if let Some(degraded) = status
        .conditions
        .iter()
        .find(|c| c.type_ == status::DEGRADED && c.status == "True")
        && !previous.conditions.iter().any(|c| {
            c.type_ == status::DEGRADED
                && c.status == "True"
                && c.reason == degraded.reason
                && c.message == degraded.message
        })
    {
        publish(
            ctx,
            app,
            None,
            EventType::Warning,
            &degraded.reason,
            &degraded.message,
        )
        .await;
    }
    // Our own status write comes back as a watch event; an unchanged status is not written, and
    // the controller ignores WsgiApp events that do not change the generation.
    if app.status.as_ref() != Some(&status) {
        let written = patch_status(ctx, app, &status).await;
        if let Err(report_error) = written {
            match &error {
                Some(_) => {
                    tracing::warn!(error = %report_error, "could not record the failure in the status");
                }
                None => return Err(report_error),
            }
        }
    }
    match error {
        Some(error) => Err(error),
        None => Ok(status::is_settled(&status)),
    }
}

/// Renders with what the cluster holds, applies the set, and starts or updates the autoscaler.
async fn apply(
    app: &WsgiApp,
    ctx: &Context,
    existing: Option<Arc<k8s_openapi::api::apps::v1::Deployment>>,
) -> Outcome {
    let stored = app.status.clone().unwrap_or_default();
    let failed = |error: Error, existing| Outcome {
        deployment: existing,
        errors: vec![error],
        url: stored.url.clone(),
        address: stored.address.clone(),
        monitoring: stored.monitoring.clone(),
        migration: None,
    };
    let config_hash = match config::config_hash(ctx, app).await {
        Ok(hash) => hash,
        Err(error) => return failed(error, existing),
    };
    let current = Current {
        replicas: existing
            .as_ref()
            .and_then(|d| d.spec.as_ref())
            .and_then(|s| s.replicas),
        config_hash,
    };
    match render::render_over(app, &ctx.render, current) {
        Ok(children) => {
            let applied = children::apply(ctx, app, &children).await;
            if let Some(autoscalers) = &ctx.autoscalers
                && applied.errors.is_empty()
            {
                autoscalers.sync(app);
            }
            Outcome {
                deployment: applied.deployment,
                errors: applied.errors,
                url: Some(children.url),
                address: Some(children.address),
                monitoring: applied.monitoring,
                migration: applied.migration,
            }
        }
        Err(source) => failed(
            Error::Render {
                app: render::display_name(app),
                source,
            },
            existing,
        ),
    }
}

/// The stored `Degraded` message, when it is about `what` (e.g. a failed migration Job already
/// described).
fn status_message_mentions(app: &WsgiApp, what: &str) -> Option<String> {
    app.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == status::DEGRADED && c.status == "True" && c.message.contains(what))
        .map(|c| c.message.clone())
}

async fn list_pods(ctx: &Context, app: &WsgiApp) -> Result<Vec<Pod>, Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &app.namespace().unwrap_or_default());
    api.list(&ListParams::default().labels(&labels::selector_query(&app.name_any())))
        .await
        .map(|list| list.items)
        .map_err(|source| Error::ListPods {
            app: render::display_name(app),
            source: Box::new(source),
        })
}

async fn patch_status(ctx: &Context, app: &WsgiApp, status: &WsgiAppStatus) -> Result<(), Error> {
    ctx.may_write()?;
    let name = app.name_any();
    let namespace = app.namespace().unwrap_or_default();
    let api: Api<WsgiApp> = Api::namespaced(ctx.client.clone(), &namespace);
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

/// Best effort: failing to publish an Event is logged, not retried. `related` names the child an
/// Event is about (Events with the same reason but different children stay apart).
async fn publish(
    ctx: &Context,
    app: &WsgiApp,
    related: Option<ObjectReference>,
    type_: EventType,
    reason: &str,
    message: &str,
) {
    if ctx.may_write().is_err() {
        return;
    }
    let event = Event {
        type_,
        reason: reason.to_owned(),
        // Events are capped at 1 kB of note.
        note: Some(message.chars().take(1000).collect()),
        action: "Reconcile".to_owned(),
        secondary: related,
    };
    if let Err(error) = ctx.recorder.publish(&event, &app.object_ref(&())).await {
        tracing::warn!(error = %crate::error::describe(&error), "could not publish an event");
    }
}

#[cfg(test)]
mod tests {
    use http::{Request, Response};
    use kube::client::Body;
    use kube::runtime::events::Reporter;

    use super::*;

    #[tokio::test]
    async fn a_replica_without_the_lease_writes_nothing() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let requests = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some((request, _)) = handle.next_request().await {
                seen.push(format!("{} {}", request.method(), request.uri()));
            }
            seen
        });
        let client = Client::new(service, "default");
        let (live, mut writers) = live::stores(live::Optional::default());
        writers.all_listed();
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: labels::MANAGER.into(),
                instance: None,
            },
        );
        let ctx = Arc::new(Context::new(
            client,
            RenderConfig::default(),
            recorder,
            Arc::new(Metrics::default()),
            Gate::never_open(),
            live,
        ));
        let mut app = WsgiApp::new(
            "web",
            serde_json::from_value(json!({"image": "img:1", "app": "web:app"})).expect("spec"),
        );
        app.metadata.namespace = Some("default".into());
        app.metadata.uid = Some("u1".into());
        app.metadata.generation = Some(1);

        let result = reconcile(Arc::new(app), ctx.clone()).await;
        assert!(matches!(result, Err(Error::NotLeader)), "{result:?}");
        drop(ctx);
        let seen = requests.await.expect("mock");
        assert!(seen.is_empty(), "{seen:?}");
    }
}
