//! Wiring: watches, leader election, the metrics endpoint and graceful shutdown around
//! [`reconcile`](crate::reconcile::reconcile).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{Controller, controller};
use kube::{Api, Client};
use tokio::sync::watch;

use crate::autoscale::task::Autoscalers;
use crate::cli::RunArgs;
use crate::error::Error;
use crate::http::{self, Health};
use crate::leader::{self, Elector, Gate, Timing};
use crate::metrics::Metrics;
use crate::reconcile::{self, Context, live};
use crate::render::config::ConfigKind;
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
    let optional = watches::discover(&client).await;
    let (live, writers) = live::stores(optional);
    let (apps, app_events) = watches::apps(&client, ns);
    let recorder = Recorder::new(client.clone(), reporter);
    // Lives as long as this function, which runs only while this replica leads; every write of
    // the autoscalers also passes the gate.
    let autoscalers = Autoscalers::start(
        client.clone(),
        ns,
        recorder.clone(),
        metrics.clone(),
        gate.clone(),
        live.deployments.clone(),
    );
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            RenderConfig {
                default_injector_image: args.injector_image.clone(),
                operator_namespace: args
                    .lease_namespace
                    .clone()
                    .or_else(|| args.namespace.clone())
                    .unwrap_or_else(|| "default".to_owned()),
            },
            recorder,
            metrics,
            gate,
            live.clone(),
        )
        .with_autoscalers(autoscalers),
    );
    let mut controller = Controller::for_stream(app_events, apps.clone())
        .owns_stream(watches::children(&client, ns, writers.deployments))
        .owns_stream(watches::children(&client, ns, writers.services))
        .owns_stream(watches::children(&client, ns, writers.hpas))
        .owns_stream(watches::children(&client, ns, writers.pdbs))
        .owns_stream(watches::children(&client, ns, writers.ingresses))
        .owns_stream(watches::children(&client, ns, writers.network_policies))
        .owns_stream(watches::children(&client, ns, writers.jobs));
    if let Some(writer) = writers.routes {
        controller = controller.owns_stream(watches::children(&client, ns, writer));
    }
    if let Some(writer) = writers.pod_monitors {
        controller = controller.owns_stream(watches::children(&client, ns, writer));
    }
    let controller = controller
        .watches_stream(
            watches::config_metadata::<ConfigMap>(&client, ns, writers.config_maps),
            watches::referencing(apps.clone(), ConfigKind::ConfigMap),
        )
        .watches_stream(
            watches::config_metadata::<Secret>(&client, ns, writers.secrets),
            watches::referencing(apps.clone(), ConfigKind::Secret),
        )
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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use ::http::{Request, Response, StatusCode};
    use clap::Parser;
    use kube::client::Body;

    use super::*;
    use crate::cli::Cli;

    /// Log lines, captured by a subscriber installed for the test's (single) thread.
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("logs").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Logs {
        fn warnings_about(&self, what: &str) -> usize {
            let text = String::from_utf8_lossy(&self.0.lock().expect("logs")).into_owned();
            text.lines()
                .filter(|l| l.contains("WARN") && l.contains(what))
                .count()
        }
    }

    /// An API server with no objects, where listing HPAs is forbidden until `allow_hpas` is set.
    /// Watch requests are held open without events, like a quiet cluster.
    fn api(allow_hpas: Arc<AtomicBool>) -> Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some((request, send)) = handle.next_request().await {
                let path = request.uri().path().to_owned();
                let query = request.uri().query().unwrap_or_default().to_owned();
                if query.contains("watch=true") {
                    held.push(send);
                    continue;
                }
                let (status, body) = if path.contains("horizontalpodautoscalers")
                    && !allow_hpas.load(Ordering::SeqCst)
                {
                    (
                        StatusCode::FORBIDDEN,
                        serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
                            "message": "horizontalpodautoscalers.autoscaling is forbidden: User \"system:serviceaccount:wharf-system:wharf-operator\" cannot list resource \"horizontalpodautoscalers\""}),
                    )
                } else {
                    (
                        StatusCode::OK,
                        serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []}),
                    )
                };
                let response = Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&body).expect("json")))
                    .expect("response");
                send.send_response(response);
            }
        });
        Client::new(service, "default")
    }

    #[tokio::test(start_paused = true)]
    async fn not_ready_and_warned_once_a_minute_until_every_watch_lists() {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let allow_hpas = Arc::new(AtomicBool::new(false));
        let client = api(allow_hpas.clone());
        let args = Cli::try_parse_from(["wharf-operator", "--leader-election=false"])
            .expect("parses")
            .run;
        let health = Arc::new(Health::default());
        health.set_ready(true);
        let (stop, stopping) = watch::channel(false);
        let running = tokio::spawn({
            let health = health.clone();
            async move {
                control(
                    client,
                    &args,
                    Arc::new(Metrics::default()),
                    health,
                    Gate::always_open(),
                    stopped(stopping),
                )
                .await;
            }
        });

        // Two minutes of retries with backoff: never ready, and the same error at most once a minute.
        tokio::time::sleep(Duration::from_secs(119)).await;
        assert!(!health.is_ready());
        let warnings = logs.warnings_about("cannot watch HorizontalPodAutoscalers");
        assert!((1..=2).contains(&warnings), "{warnings} warnings");
        assert!(
            logs.warnings_about("cannot list resource") >= 1,
            "the API's message is quoted"
        );
        assert_eq!(logs.warnings_about("cannot watch Deployments"), 0);

        // RBAC fixed: the next retry lists, and the operator becomes ready.
        allow_hpas.store(true, Ordering::SeqCst);
        let mut ready = false;
        for _ in 0..120 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if health.is_ready() {
                ready = true;
                break;
            }
        }
        assert!(ready, "ready once all watches have listed");
        stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(30), running)
            .await
            .expect("the controller stops on shutdown")
            .expect("no panic");
    }
}
