//! Wiring: watches, leader election, the metrics endpoint and graceful shutdown around
//! [`reconcile`](crate::reconcile::reconcile).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{Controller, controller, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use crate::autoscale::task::Autoscalers;
use crate::cli::RunArgs;
use crate::crd::WsgiApp;
use crate::error::Error;
use crate::http::{self, Health};
use crate::leader;
use crate::metrics::Metrics;
use crate::reconcile::{self, Context};
use crate::render::{RenderConfig, labels};

pub async fn run(args: RunArgs) -> Result<(), Error> {
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    let listener = http::bind(args.metrics_bind).await?;
    let server = tokio::spawn(http::serve(listener, metrics.clone(), health.clone()));
    tracing::info!(addr = %args.metrics_bind, "serving /metrics, /livez and /readyz");

    let config = kube::Config::infer().await.map_err(Error::Config)?;
    let client = Client::try_from(config).map_err(|e| Error::Client(Box::new(e)))?;
    client
        .apiserver_version()
        .await
        .map_err(|e| Error::Client(Box::new(e)))?;
    health.set_ready(true);

    let result = if args.leader_election {
        let namespace = args
            .lease_namespace
            .clone()
            .or_else(|| args.namespace.clone())
            .unwrap_or_else(|| "default".to_owned());
        let mut leadership = tokio::select! {
            leadership = leader::acquire(client.clone(), &args.lease_name, &namespace, args.identity.as_deref()) => leadership?,
            () = shutdown_signal() => return Ok(()),
        };
        metrics.set_leader(true);
        let result = tokio::select! {
            () = control(client, &args, metrics.clone(), shutdown_signal()) => Ok(()),
            () = leadership.lost() => Err(Error::LostLease),
        };
        metrics.set_leader(false);
        leadership.release().await;
        result
    } else {
        metrics.set_leader(true);
        control(client, &args, metrics, shutdown_signal()).await;
        Ok(())
    };
    server.abort();
    result
}

/// Runs the controller until `shutdown` resolves and in-flight reconciles finish.
async fn control(
    client: Client,
    args: &RunArgs,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let reporter = Reporter {
        controller: labels::MANAGER.to_owned(),
        instance: args.identity.clone(),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    // Lives as long as this function, which runs only while this replica leads.
    let autoscalers = Autoscalers::start(
        client.clone(),
        args.namespace.as_deref(),
        recorder.clone(),
        metrics.clone(),
    );
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            RenderConfig {
                default_injector_image: args.injector_image.clone(),
            },
            recorder,
            metrics,
        )
        .with_autoscalers(autoscalers),
    );
    // Only our own children are watched, which keeps the caches small on busy clusters.
    let owned =
        watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, labels::MANAGER));
    let ns = args.namespace.as_deref();
    Controller::new(
        api::<WsgiApp>(&client, ns),
        watcher::Config::default().any_semantic(),
    )
    .owns(api::<Deployment>(&client, ns), owned.clone())
    .owns(api::<Service>(&client, ns), owned.clone())
    .owns(api::<HorizontalPodAutoscaler>(&client, ns), owned.clone())
    .owns(api::<PodDisruptionBudget>(&client, ns), owned)
    .with_config(controller::Config::default().concurrency(args.concurrency))
    .graceful_shutdown_on(shutdown)
    .run(reconcile::reconcile, reconcile::error_policy, ctx)
    .for_each(|result| async move {
        match result {
            Ok((object, _)) => tracing::debug!(%object, "reconciled"),
            Err(error) => tracing::debug!(%error, "controller event"),
        }
    })
    .await;
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// SIGTERM (Kubernetes) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => drop(signal.recv().await),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
