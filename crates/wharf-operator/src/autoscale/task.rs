//! One task per WsgiApp in `Concurrency` mode: every second, read the ready pods' saturation,
//! decide, write the replica count, and show it (status, Event, metrics, log).
//!
//! The tasks live in [`Autoscalers`], which the controller holds only while this replica leads:
//! dropping it (leadership lost, shutdown) aborts every task and its watches at once, so a replica
//! that is not the leader never writes a replica count.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::join_all;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::decide::{self, Decision, Observation, Params, PodSample, State};
use super::handover::AUTOSCALER_MANAGER;
use super::{pods, scrape};
use crate::crd::{AutoscalingMetric, AutoscalingStatus, WsgiApp};
use crate::leader::Gate;
use crate::metrics::Metrics;
use crate::render::{self, labels};
use crate::watches;

const TICK: Duration = Duration::from_secs(1);
/// A pod slower than this to answer `/metrics` counts as unreachable for the tick; well under the
/// tick so one slow pod cannot delay the decision.
const SCRAPE_TIMEOUT: Duration = Duration::from_millis(500);
/// `status.autoscaling` is written on every scale or mode change, and otherwise at most this often:
/// a status write per second per app would load the API server for a number nobody reads that fast.
const STATUS_EVERY: Duration = Duration::from_secs(15);
/// A task whose Deployment has been gone this long ends: its WsgiApp was deleted (reconciles do
/// not run on deletion, the garbage collector removes the children), or it was never created.
const GONE_AFTER: Duration = Duration::from_secs(60);

/// What a task needs to know about its app; replaced when the WsgiApp changes.
#[derive(Debug, Clone, PartialEq)]
struct Setup {
    params: Params,
    admin_port: u16,
    app: ObjectRef<WsgiApp>,
}

struct Running {
    setup: watch::Sender<Setup>,
    task: JoinHandle<()>,
}

struct Shared {
    client: Client,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    /// Closed when this replica is not (or no longer) the leader: no write may start then.
    gate: Gate,
    pods: Store<Pod>,
    deployments: Store<Deployment>,
}

/// The running autoscalers and the pod and Deployment watches they read from.
pub struct Autoscalers {
    shared: Arc<Shared>,
    running: Mutex<HashMap<ObjectRef<WsgiApp>, Running>>,
    pods_watch: JoinHandle<()>,
}

impl Autoscalers {
    /// Starts the pod watch (only the operator's own pods, by label) in `namespace`; Deployments
    /// are read from the controller's own watch.
    pub fn start(
        client: Client,
        namespace: Option<&str>,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        gate: Gate,
        deployments: Store<Deployment>,
    ) -> Self {
        let (pods, writer) = reflector::store();
        let pods_watch = tokio::spawn(
            watches::children::<Pod>(&client, namespace, writer).for_each(|_| async {}),
        );
        Autoscalers {
            shared: Arc::new(Shared {
                client,
                recorder,
                metrics,
                gate,
                pods,
                deployments,
            }),
            running: Mutex::new(HashMap::new()),
            pods_watch,
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<WsgiApp>, Running>> {
        // The map stays consistent even if a holder panicked: every operation is a single insert or
        // remove.
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Called by every reconcile: runs, retunes or stops the app's autoscaler to match its spec.
    pub fn sync(&self, app: &WsgiApp) {
        let key = ObjectRef::from(app);
        let wanted = app
            .spec
            .autoscaling
            .as_ref()
            .filter(|a| {
                a.metric == AutoscalingMetric::Concurrency
                    && app.meta().deletion_timestamp.is_none()
            })
            .map(|a| Setup {
                params: a.params(),
                admin_port: u16::try_from(app.spec.server.admin_port).unwrap_or(9000),
                app: key.clone(),
            });
        let mut running = self.running();
        match (wanted, running.get(&key)) {
            (Some(setup), Some(r)) if !r.task.is_finished() => {
                r.setup.send_if_modified(|old| {
                    let changed = *old != setup;
                    *old = setup;
                    changed
                });
            }
            (Some(setup), _) => {
                let (tx, rx) = watch::channel(setup);
                let task = tokio::spawn(run(self.shared.clone(), rx));
                running.insert(key, Running { setup: tx, task });
            }
            (None, Some(_)) => {
                if let Some(r) = running.remove(&key) {
                    r.task.abort();
                }
                let shared = self.shared.clone();
                tokio::spawn(async move { clear_status(&shared, &key).await });
            }
            (None, None) => {}
        }
    }
}

impl Drop for Autoscalers {
    fn drop(&mut self) {
        for (_, r) in self.running().drain() {
            r.task.abort();
        }
        self.pods_watch.abort();
    }
}

/// What the last status write said, to write again only on change.
#[derive(Default)]
struct Shown {
    at: Option<Instant>,
    desired: u32,
    mode: Option<decide::Mode>,
    last_scale: Option<(Timestamp, &'static str)>,
}

async fn run(shared: Arc<Shared>, mut setup: watch::Receiver<Setup>) {
    let origin = Instant::now();
    let mut state = State::default();
    let mut shown = Shown::default();
    let mut last_seen = Duration::ZERO;
    let mut written: Option<(u32, u32)> = None;
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let first = setup.borrow().clone();
    let (namespace, name) = (
        first.app.namespace.clone().unwrap_or_default(),
        first.app.name.clone(),
    );
    tracing::info!(%namespace, %name, "concurrency autoscaler started");
    for tick in 0usize.. {
        interval.tick().await;
        let Setup {
            params,
            admin_port,
            app,
        } = setup.borrow_and_update().clone();
        let deployment_ref = ObjectRef::<Deployment>::new(&name).within(&namespace);
        let Some(deployment) = shared.deployments.get(&deployment_ref) else {
            // Not created yet, the watch has not caught up, or the app is gone.
            if origin.elapsed().saturating_sub(last_seen) >= GONE_AFTER {
                tracing::info!(%namespace, %name, "no Deployment for a minute; autoscaler stopped");
                shared.metrics.autoscaler.forget(&namespace, &name);
                return;
            }
            continue;
        };
        last_seen = origin.elapsed();
        let seen = deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .and_then(|r| u32::try_from(r).ok())
            .unwrap_or(1);
        // Until the watch shows our last write, the count is what we wrote, not what it last saw:
        // otherwise a lagging watch would have us write (and announce) the same change twice.
        let current = match written {
            Some((from, to)) if seen == from => to,
            _ => {
                written = None;
                seen
            }
        };
        let selector = labels::selector(&name);
        let app_pods = shared.pods.state_filter(|p| {
            p.namespace().as_deref() == Some(namespace.as_str())
                && selector.iter().all(|(k, v)| p.labels().get(k) == Some(v))
        });
        let targets = pods::targets(
            app_pods.iter().map(|p| p.as_ref()),
            admin_port,
            pods::MAX_SCRAPED,
            tick,
        );
        let now = origin.elapsed();
        let samples: Vec<PodSample> = join_all(
            targets
                .admin
                .iter()
                .map(|addr| scrape::scrape(*addr, SCRAPE_TIMEOUT)),
        )
        .await
        .into_iter()
        .filter_map(|result| match result {
            Ok(s) => Some(PodSample {
                busy: s.busy,
                queued: s.queued,
                threads: s.threads,
                scraped_at: now,
            }),
            Err(error) => {
                tracing::debug!(%namespace, %name, %error, "pod not read this tick");
                None
            }
        })
        .collect();
        let decision = decide::decide(
            &mut state,
            &params,
            &Observation {
                now,
                current,
                ready: targets.ready,
                samples: &samples,
            },
        );
        shared
            .metrics
            .autoscaler
            .observe(&namespace, &name, &decision, current);
        if decision.desired != current
            && scale(&shared, &app, &namespace, &name, current, &decision).await
        {
            written = Some((seen, decision.desired));
            shown.last_scale = Some((Timestamp::now(), decision.reason.code()));
        }
        let due = shown.at.is_none_or(|at| at.elapsed() >= STATUS_EVERY)
            || shown.desired != decision.desired
            || shown.mode != Some(decision.mode);
        if due {
            write_status(&shared, &app, &decision, current, &shown).await;
            shown.at = Some(Instant::now());
            shown.desired = decision.desired;
            shown.mode = Some(decision.mode);
        }
    }
}

async fn scale(
    shared: &Shared,
    app: &ObjectRef<WsgiApp>,
    namespace: &str,
    name: &str,
    current: u32,
    decision: &Decision,
) -> bool {
    if !shared.gate.is_open() {
        return false;
    }
    let desired = i32::try_from(decision.desired).unwrap_or(i32::MAX);
    if let Err(error) = super::scale::write_replicas(&shared.client, namespace, name, desired).await
    {
        tracing::warn!(%namespace, %name, %error, "could not write the replica count; next tick retries");
        return false;
    }
    tracing::info!(%namespace, %name, from = current, to = decision.desired, %decision, "scaled");
    let event = Event {
        type_: EventType::Normal,
        reason: "Scaled".to_owned(),
        note: Some(format!("{current} -> {decision}")),
        action: "Autoscale".to_owned(),
        secondary: None,
    };
    if let Err(error) = shared
        .recorder
        .publish(&event, &object_reference(app))
        .await
    {
        tracing::warn!(%error, "could not publish the scale event");
    }
    true
}

fn object_reference(app: &ObjectRef<WsgiApp>) -> k8s_openapi::api::core::v1::ObjectReference {
    k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(render::api_version()),
        kind: Some("WsgiApp".to_owned()),
        name: Some(app.name.clone()),
        namespace: app.namespace.clone(),
        ..Default::default()
    }
}

async fn write_status(
    shared: &Shared,
    app: &ObjectRef<WsgiApp>,
    decision: &Decision,
    current: u32,
    shown: &Shown,
) {
    let status = AutoscalingStatus {
        observed_load: decision.load.map(|l| format!("{l:.1}")),
        capacity: decision.capacity.map(|c| c.round() as i32),
        desired_replicas: i32::try_from(decision.desired).ok(),
        current_replicas: i32::try_from(current).ok(),
        mode: Some(decision.mode.as_str().to_owned()),
        last_scale_time: shown.last_scale.map(|(at, _)| Time(at)),
        last_scale_reason: shown.last_scale.map(|(_, reason)| reason.to_owned()),
        message: Some(decision.to_string()),
    };
    patch_status(shared, app, json!({ "autoscaling": status })).await;
}

/// Removes `status.autoscaling` (the fields this manager owns) when the app leaves Concurrency mode.
async fn clear_status(shared: &Shared, app: &ObjectRef<WsgiApp>) {
    if let Some(ns) = &app.namespace {
        shared.metrics.autoscaler.forget(ns, &app.name);
    }
    patch_status(shared, app, json!({})).await;
}

async fn patch_status(shared: &Shared, app: &ObjectRef<WsgiApp>, status: serde_json::Value) {
    if !shared.gate.is_open() {
        return;
    }
    let api: Api<WsgiApp> = Api::namespaced(
        shared.client.clone(),
        app.namespace.as_deref().unwrap_or_default(),
    );
    let body = json!({
        "apiVersion": render::api_version(),
        "kind": "WsgiApp",
        "status": status,
    });
    if let Err(error) = api
        .patch_status(
            &app.name,
            &PatchParams::apply(AUTOSCALER_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
    {
        tracing::warn!(name = %app.name, %error, "could not write status.autoscaling");
    }
}

#[cfg(test)]
mod tests;
