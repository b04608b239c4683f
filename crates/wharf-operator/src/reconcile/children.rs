//! Applying one WsgiApp's rendered children as a set: every child is attempted and every failure
//! collected, in an order in which the Deployment and the HPA never both own `spec.replicas`.

use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::Store;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::live::key;
use super::migration;
use super::unchanged::{self, Verdict};
use super::{Context, publish};
use crate::autoscale::{handover, scale};
use crate::crd::WsgiApp;
use crate::error::Error;
use crate::render::{Children, labels};
use crate::status::Migration;

/// Outcome of applying the set.
pub(crate) struct Applied {
    /// The Deployment as it now is (apply answer, or the watched copy when nothing changed), if
    /// it exists.
    pub(crate) deployment: Option<Arc<Deployment>>,
    pub(crate) errors: Vec<Error>,
    /// Set while the Deployment waits for `spec.migrate`'s Job.
    pub(crate) migration: Option<Migration>,
    /// What `spec.monitoring` produced, for `status.monitoring`.
    pub(crate) monitoring: Option<String>,
}

pub(crate) async fn apply(ctx: &Context, app: &WsgiApp, children: &Children) -> Applied {
    let name = app.name_any();
    let namespace = app.namespace().unwrap_or_default();
    // The migration runs before the Deployment gets the template it migrates to.
    let gate = migration::gate(ctx, app, children).await;
    let mut errors = Vec::new();
    let deployment = if gate.holds() {
        None
    } else {
        apply_workload(ctx, app, children, &mut errors).await
    };
    errors.extend(gate.errors);
    apply_others(ctx, app, children, &mut errors).await;
    let monitoring = monitoring(ctx, app, children, &mut errors).await;
    let deployment = deployment.or_else(|| ctx.live.deployments.get(&key(&name, &namespace)));
    Applied {
        deployment,
        errors,
        migration: gate.migration,
        monitoring,
    }
}

/// The Deployment and the HPA, in an order in which they never both own `spec.replicas`.
async fn apply_workload(
    ctx: &Context,
    app: &WsgiApp,
    children: &Children,
    errors: &mut Vec<Error>,
) -> Option<Arc<Deployment>> {
    let live = &ctx.live;
    let name = app.name_any();
    // Before the Deployment is applied without `spec.replicas`, its current count gets another
    // owner; if that fails, applying it would drop the field and the pods with it.
    if let Err(error) = hand_over(ctx, app, children).await {
        errors.push(error);
        return None;
    }
    match &children.hpa {
        // Deployment first: the rendered one leaves `spec.replicas` out, so the HPA does not find
        // it owned by us. If that fails, no HPA either: it would fight the fixed count.
        Some(hpa) => match ensure(ctx, app, &live.deployments, &children.deployment).await {
            Ok(deployment) => {
                if let Err(error) = ensure(ctx, app, &live.hpas, hpa).await {
                    errors.push(error);
                }
                Some(deployment)
            }
            Err(error) => {
                errors.push(error);
                None
            }
        },
        // The HPA goes first: a Deployment with a fixed count next to a live HPA would fight it.
        // If it cannot be deleted, the Deployment keeps leaving the count to it for now.
        None => match remove(ctx, app, &live.hpas, &name).await {
            Ok(()) => match ensure(ctx, app, &live.deployments, &children.deployment).await {
                Ok(deployment) => Some(deployment),
                Err(error) => {
                    errors.push(error);
                    None
                }
            },
            Err(error) => {
                errors.push(error);
                errors.push(Error::HeldBack {
                    what: "the Deployment's fixed replica count",
                    until: "the HorizontalPodAutoscaler is deleted",
                });
                None
            }
        },
    }
}

/// Every other child: each attempted, whatever happened to the rest.
async fn apply_others(ctx: &Context, app: &WsgiApp, children: &Children, errors: &mut Vec<Error>) {
    let live = &ctx.live;
    let name = app.name_any();
    let results = [
        ensure(ctx, app, &live.services, &children.service)
            .await
            .map(drop),
        ensure_or_remove(ctx, app, &live.pdbs, children.pdb.as_ref(), &name).await,
        ensure_or_remove(ctx, app, &live.ingresses, children.ingress.as_ref(), &name).await,
        ensure_or_remove(
            ctx,
            app,
            &live.network_policies,
            children.network_policy.as_ref(),
            &name,
        )
        .await,
        match (&live.routes, &children.route) {
            (Some(store), route) => ensure_or_remove(ctx, app, store, route.as_ref(), &name).await,
            (None, Some(_)) => Err(Error::MissingCrd {
                field: "spec.route",
                kind: "HTTPRoute",
                api: "gateway.networking.k8s.io/v1",
                install: "the Gateway API CRDs",
            }),
            (None, None) => Ok(()),
        },
    ];
    errors.extend(results.into_iter().filter_map(Result::err));
}

/// Applies or prunes the PodMonitor; says in `status.monitoring` what came of `spec.monitoring`.
async fn monitoring(
    ctx: &Context,
    app: &WsgiApp,
    children: &Children,
    errors: &mut Vec<Error>,
) -> Option<String> {
    let name = app.name_any();
    match (&ctx.live.pod_monitors, &children.pod_monitor) {
        (Some(store), Some(monitor)) => match ensure(ctx, app, store, monitor).await {
            Ok(_) => Some(format!(
                "PodMonitor {name} scrapes /metrics on the pods' admin port every {}",
                monitor
                    .spec
                    .pod_metrics_endpoints
                    .first()
                    .map_or("30s", |e| e.interval.as_str())
            )),
            Err(error) => {
                errors.push(error);
                None
            }
        },
        (Some(store), None) => {
            if let Err(error) = remove(ctx, app, store, &name).await {
                errors.push(error);
            }
            None
        }
        // The app serves fine without it: said in the status, not Degraded.
        (None, Some(_)) => Some(
            "no PodMonitor: the cluster has no monitoring.coreos.com/v1 PodMonitor CRD; install the Prometheus Operator, then restart wharf-operator".to_owned(),
        ),
        (None, None) => None,
    }
}

async fn ensure_or_remove<K>(
    ctx: &Context,
    app: &WsgiApp,
    store: &Store<K>,
    desired: Option<&K>,
    name: &str,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    match desired {
        Some(desired) => ensure(ctx, app, store, desired).await.map(drop),
        None => remove(ctx, app, store, name).await,
    }
}

/// Pins the Deployment's current replica count under the autoscaler's field manager when the
/// operator is about to stop applying it (see [`handover`]).
async fn hand_over(ctx: &Context, app: &WsgiApp, children: &Children) -> Result<(), Error> {
    let namespace = app.namespace().unwrap_or_default();
    let name = app.name_any();
    let Some(existing) = ctx.live.deployments.get(&key(&name, &namespace)) else {
        return Ok(());
    };
    let rendered = children.deployment.spec.as_ref().and_then(|s| s.replicas);
    let Some(count) = handover::pin_before_release(&existing, rendered) else {
        return Ok(());
    };
    ctx.may_write()?;
    tracing::info!(%name, count, "handing the replica count over to {}", handover::AUTOSCALER_MANAGER);
    scale::write_replicas(&ctx.client, &namespace, &name, count).await
}

/// Server-side apply of `desired`, forcing ownership of the fields we set (the operator is their
/// source of truth), unless the watched copy shows it would change nothing.
pub(crate) async fn ensure<K>(
    ctx: &Context,
    app: &WsgiApp,
    store: &Store<K>,
    desired: &K,
) -> Result<Arc<K>, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let name = desired.meta().name.clone().unwrap_or_default();
    let namespace = desired.meta().namespace.clone().unwrap_or_default();
    let kind = K::kind(&());
    // A Null body, force-applied, would release every field this manager owns.
    let mut body = serde_json::to_value(desired).map_err(|source| Error::Serialize {
        kind: kind.clone().into_owned(),
        name: name.clone(),
        source,
    })?;
    body["apiVersion"] = json!(K::api_version(&()));
    body["kind"] = json!(kind);
    let digest = unchanged::stamp(&mut body);
    let current = store.get(&key(&name, &namespace));
    let current_json = current
        .as_ref()
        .and_then(|c| serde_json::to_value(c.as_ref()).ok());
    let verdict = unchanged::verdict(&body, &digest, current_json.as_ref());
    if let (Verdict::UpToDate, Some(current)) = (verdict, current) {
        return Ok(current);
    }
    ctx.may_write()?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(labels::MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|source| Error::Api {
            verb: "apply",
            kind: kind.clone().into_owned(),
            namespace: namespace.clone(),
            name: name.clone(),
            source: Box::new(source),
        })?;
    match verdict {
        Verdict::Create => {
            publish(
                ctx,
                app,
                Some(applied.object_ref(&())),
                EventType::Normal,
                "Created",
                &format!("created {kind} {name}"),
            )
            .await;
        }
        Verdict::Drifted => {
            tracing::info!(%kind, %name, "corrected drift: the live object lost some of the operator's values");
            publish(
                ctx,
                app,
                Some(applied.object_ref(&())),
                EventType::Normal,
                "DriftCorrected",
                &format!(
                    "{kind} {name} was changed by someone else; restored the operator's values"
                ),
            )
            .await;
        }
        Verdict::Update | Verdict::UpToDate => {}
    }
    Ok(Arc::new(applied))
}

/// Deletes `name` if (and only if) the watched copy exists and is controlled by `app`: an object of
/// the same name created by someone else is left alone.
pub(crate) async fn remove<K>(
    ctx: &Context,
    app: &WsgiApp,
    store: &Store<K>,
    name: &str,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let namespace = app.namespace().unwrap_or_default();
    let kind = K::kind(&());
    let Some(existing) = store.get(&key(name, &namespace)) else {
        return Ok(());
    };
    let owner_uid = app.uid().unwrap_or_default();
    let owned = existing
        .owner_references()
        .iter()
        .any(|o| o.uid == owner_uid && o.controller == Some(true));
    if !owned {
        tracing::debug!(%kind, name, "not deleting an object the WsgiApp does not control");
        return Ok(());
    }
    ctx.may_write()?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => {
            tracing::info!(%kind, name, "deleted child no longer wanted");
            publish(
                ctx,
                app,
                Some(existing.object_ref(&())),
                EventType::Normal,
                "Deleted",
                &format!("deleted {kind} {name}, no longer wanted"),
            )
            .await;
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::Api {
            verb: "delete",
            kind: kind.into_owned(),
            namespace,
            name: name.to_owned(),
            source: Box::new(source),
        }),
    }
}
