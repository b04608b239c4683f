//! The autoscaler task end to end against a mocked API server (tower-test) and a fake wharf admin
//! port on 127.0.0.1: what it writes, under which field manager, and that a replica without the
//! Lease writes nothing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::runtime::events::Reporter;
use kube::runtime::watcher;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

type Calls = Arc<Mutex<Vec<(Method, String, String, Value)>>>;

/// An API server that accepts every write and echoes its body.
fn mock_api() -> (Client, Calls) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let calls: Calls = Arc::new(Mutex::new(Vec::new()));
    let recorded = calls.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            recorded.lock().expect("lock").push((
                parts.method.clone(),
                parts.uri.path().to_owned(),
                parts.uri.query().unwrap_or_default().to_owned(),
                body.clone(),
            ));
            let response = Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&body).unwrap_or_default()))
                .expect("response");
            send.send_response(response);
        }
    });
    (Client::new(service, "default"), calls)
}

/// wharf's admin port as the autoscaler sees it: 8 threads, all busy, 30 requests queued.
async fn saturated_pod() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let text =
            "wharf_python_threads_busy 8\nwharf_python_threads_total 8\nwharf_requests_queued 30\n";
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    port
}

fn autoscalers(client: Client, gate: Gate) -> Autoscalers {
    let (pods, mut pod_writer) = reflector::store::<Pod>();
    let (deployments, mut deployment_writer) = reflector::store::<Deployment>();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "shop-1", "namespace": "web", "labels": labels::selector("shop")},
        "status": {"podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]},
    }))
    .expect("pod");
    pod_writer.apply_watcher_event(&watcher::Event::Apply(pod));
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "shop", "namespace": "web"},
        "spec": {"replicas": 1, "selector": {}, "template": {}},
    }))
    .expect("deployment");
    deployment_writer.apply_watcher_event(&watcher::Event::Apply(deployment));
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: labels::MANAGER.into(),
            instance: None,
        },
    );
    Autoscalers {
        shared: Arc::new(Shared {
            client,
            recorder,
            metrics: Arc::new(Metrics::default()),
            gate,
            pods,
            deployments,
        }),
        running: Mutex::new(HashMap::new()),
        pods_watch: tokio::spawn(async {}),
    }
}

fn app(admin_port: u16, metric: &str) -> WsgiApp {
    let mut app = WsgiApp::new(
        "shop",
        serde_json::from_value(json!({
            "image": "img:1", "app": "shop:app",
            "server": {"adminPort": admin_port},
            "autoscaling": {"metric": metric, "maxReplicas": 10},
        }))
        .expect("spec"),
    );
    app.metadata.namespace = Some("web".into());
    app
}

fn scale_writes(calls: &Calls) -> Vec<(String, Value)> {
    calls
        .lock()
        .expect("lock")
        .iter()
        .filter(|(m, path, _, _)| m == Method::PATCH && path.ends_with("/deployments/shop"))
        .map(|(_, _, query, body)| (query.clone(), body.clone()))
        .collect()
}

#[tokio::test]
async fn a_saturated_pod_is_scaled_up_under_the_autoscaler_manager_with_status_and_event() {
    let port = saturated_pod().await;
    let (client, calls) = mock_api();
    let scalers = autoscalers(client, Gate::always_open());
    scalers.sync(&app(port, "Concurrency"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while scale_writes(&calls).is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let writes = scale_writes(&calls);
    let (query, body) = writes.first().expect("a replica write within 10 s");
    assert!(query.contains("fieldManager=wharf-autoscaler"), "{query}");
    // 38 busy or queued at 70 % of 8 threads per pod: ceil(38 / 5.6) = 7.
    assert_eq!(body["spec"], json!({"replicas": 7}));
    // The Event and the status follow the write in the same tick.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let (event, status) = loop {
        let seen = calls.lock().expect("lock").clone();
        let event = seen
            .iter()
            .find(|(m, path, _, _)| m == Method::POST && path.contains("/events"))
            .map(|c| c.3.clone());
        let status = seen
            .iter()
            .find(|(m, path, _, _)| m == Method::PATCH && path.ends_with("/wsgiapps/shop/status"))
            .map(|c| (c.2.clone(), c.3.clone()));
        if let (Some(e), Some(s)) = (event, status) {
            break (e, s);
        }
        assert!(tokio::time::Instant::now() < deadline, "{seen:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(event["reason"], "Scaled");
    assert_eq!(event["type"], "Normal");
    assert!(
        event["note"]
            .as_str()
            .unwrap_or_default()
            .starts_with("1 -> 7 replicas (Panic, PanicBurst"),
        "{event}"
    );
    assert!(status.0.contains("fieldManager=wharf-autoscaler"));
    let shown = &status.1["status"]["autoscaling"];
    assert_eq!(shown["desiredReplicas"], 7);
    assert_eq!(shown["mode"], "Panic");
    assert_eq!(shown["observedLoad"], "38.0");
    assert_eq!(shown["lastScaleReason"], "PanicBurst");
}

#[tokio::test]
async fn without_the_lease_nothing_is_written_and_other_modes_run_no_task() {
    let port = saturated_pod().await;
    let (client, calls) = mock_api();
    let scalers = autoscalers(client.clone(), Gate::never_open());
    scalers.sync(&app(port, "Concurrency"));
    // Several ticks, measured by the task's own metric (set every tick, before any write).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !scalers
        .shared
        .metrics
        .encode()
        .contains("wharf_operator_autoscaler_desired_replicas{namespace=\"web\",name=\"shop\"} 7")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the task never decided"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A negative needs a wait: one more tick, in which a write would have been attempted.
    tokio::time::sleep(TICK + Duration::from_millis(200)).await;
    assert!(
        calls.lock().expect("lock").is_empty(),
        "{:#?}",
        calls.lock()
    );

    // With External (the operator decides nothing) or CPU (the HPA decides), no task runs.
    let (client, _) = mock_api();
    let scalers = autoscalers(client, Gate::always_open());
    for metric in ["External", "CPU"] {
        scalers.sync(&app(port, metric));
    }
    assert!(scalers.running().is_empty());
}
