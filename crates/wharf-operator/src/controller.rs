//! Wiring: watches, leader election, the metrics endpoint and graceful shutdown around
//! [`reconcile`](crate::reconcile::reconcile).

use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{Controller, controller};
use kube::{Api, Client};
use tokio::sync::watch;

use crate::cli::RunArgs;
use crate::error::Error;
use crate::http::{self, Health};
use crate::leader::{self, Elector, Gate, Timing};
use crate::metrics::Metrics;
use crate::reconcile::{self, Context, live};
use crate::render::{RenderConfig, labels};
use crate::watches;

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

    let (stop, stopping) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        stop.send_replace(true);
    });
    if args.leader_election {
        let namespace = args
            .lease_namespace
            .clone()
            .or_else(|| args.namespace.clone())
            .unwrap_or_else(|| "default".to_owned());
        let identity = args
            .identity
            .clone()
            .unwrap_or_else(leader::random_identity);
        let elector = Elector::spawn(
            Api::namespaced(client.clone(), &namespace),
            &args.lease_name,
            &identity,
            Timing::default(),
        );
        lead(client, &args, &metrics, &health, elector.gate(), stopping).await;
        elector.shutdown().await;
    } else {
        metrics.set_leader(true);
        control(
            client,
            &args,
            metrics,
            health.clone(),
            Gate::always_open(),
            stopped(stopping),
        )
        .await;
    }
    server.abort();
    Ok(())
}

/// Runs the controller during each term of leadership, until shutdown. A lost term drops the
/// controller at once (in-flight reconciles are cancelled; their writes were gated anyway).
async fn lead(
    client: Client,
    args: &RunArgs,
    metrics: &Arc<Metrics>,
    health: &Arc<Health>,
    mut gate: Gate,
    stopping: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = gate.opened() => {}
            () = stopped(stopping.clone()) => return,
        }
        metrics.set_leader(true);
        let shutdown = stopped(stopping.clone());
        let finished = tokio::select! {
            () = control(client.clone(), args, metrics.clone(), health.clone(), gate.clone(), shutdown) => true,
            () = gate.closed() => false,
        };
        metrics.set_leader(false);
        // A standby is healthy: ready without watches.
        health.set_ready(true);
        if finished {
            return;
        }
    }
}

/// Runs the controller until `shutdown` resolves and in-flight reconciles finish. `/readyz` fails
/// until every watch has listed once.
async fn control(
    client: Client,
    args: &RunArgs,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    gate: Gate,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let reporter = Reporter {
        controller: labels::MANAGER.to_owned(),
        instance: args.identity.clone(),
    };
    let ns = args.namespace.as_deref();
    let (live, writers) = live::stores();
    let (apps, app_events) = watches::apps(&client, ns);
    let ctx = Arc::new(Context::new(
        client.clone(),
        RenderConfig {
            default_injector_image: args.injector_image.clone(),
        },
        Recorder::new(client.clone(), reporter),
        metrics,
        gate,
        live.clone(),
    ));
    let controller = Controller::for_stream(app_events, apps.clone())
        .owns_stream(watches::children(&client, ns, writers.deployments))
        .owns_stream(watches::children(&client, ns, writers.services))
        .owns_stream(watches::children(&client, ns, writers.hpas))
        .owns_stream(watches::children(&client, ns, writers.pdbs))
        .with_config(controller::Config::default().concurrency(args.concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                Err(error) => tracing::debug!(%error, "controller event"),
            }
        });
    health.set_ready(false);
    let synced = async {
        if apps.wait_until_ready().await.is_ok() && live.wait_synced().await.is_ok() {
            tracing::info!("all watches have listed; ready");
            health.set_ready(true);
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = controller => {},
        () = synced => {},
    }
}

/// Resolves once shutdown was requested.
async fn stopped(mut stopping: watch::Receiver<bool>) {
    // An error means the signal task is gone, which only happens after it sent `true`.
    let _ = stopping.wait_for(|stop| *stop).await;
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
