//! The reconciler against a mocked API server (tower-test): which calls it makes, with which field
//! manager and bodies, and how it reacts to API errors.

// Helpers outside #[test] functions may panic too: a panic here is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};
use wharf_operator::crd::WsgiApp;
use wharf_operator::metrics::Metrics;
use wharf_operator::reconcile::{self, Context};
use wharf_operator::render::RenderConfig;

#[derive(Debug, Clone)]
struct Call {
    method: Method,
    path: String,
    query: String,
    body: Value,
}

impl Call {
    fn is(&self, method: &Method, path_suffix: &str) -> bool {
        self.method == method && self.path.ends_with(path_suffix)
    }
}

/// Answers each request with `respond`, recording it.
type Responder = Arc<dyn Fn(&Call) -> (StatusCode, Value) + Send + Sync>;

struct MockApi {
    calls: Arc<Mutex<Vec<Call>>>,
    ctx: Arc<Context>,
}

fn mock(respond: Responder) -> MockApi {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let recorded = calls.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.expect("request body");
            let call = Call {
                method: parts.method.clone(),
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().unwrap_or_default().to_owned(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            let (status, answer) = respond(&call);
            recorded.lock().expect("lock").push(call);
            let response = Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&answer).expect("json")))
                .expect("response");
            send.send_response(response);
        }
    });
    let client = Client::new(service, "default");
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "wharf-operator".into(),
            instance: Some("test".into()),
        },
    );
    let ctx = Arc::new(Context::new(
        client,
        RenderConfig {
            default_injector_image: Some("reg/injector:1".into()),
        },
        recorder,
        Arc::new(Metrics::default()),
    ));
    MockApi { calls, ctx }
}

impl MockApi {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("lock").clone()
    }
}

fn api_status(code: u16, reason: &str) -> (StatusCode, Value) {
    (
        StatusCode::from_u16(code).expect("code"),
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": format!("{reason} from mock"), "reason": reason, "code": code}),
    )
}

/// A well-behaved API server: applies echo the body, children do not exist yet.
fn echo(call: &Call) -> (StatusCode, Value) {
    if call.method == Method::PATCH && call.path.ends_with("/status") {
        // The real server answers a status patch with the whole object.
        let mut object = call.body.clone();
        let name = call.path.rsplit('/').nth(1).unwrap_or_default();
        object["metadata"] = json!({"name": name});
        object["spec"] = json!({"image": "img", "app": "a:b"});
        return (StatusCode::OK, object);
    }
    match call.method {
        Method::PATCH | Method::POST => (StatusCode::OK, call.body.clone()),
        Method::GET if call.path.contains("/pods") => (
            StatusCode::OK,
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}),
        ),
        Method::GET => api_status(404, "NotFound"),
        _ => api_status(405, "MethodNotAllowed"),
    }
}

fn example(name: &str) -> WsgiApp {
    let (_, path) = common::cases()
        .into_iter()
        .find(|(n, _)| n == name)
        .expect("case");
    common::load(&path)
}

fn condition<'a>(status_patch: &'a Call, type_: &str) -> &'a Value {
    status_patch.body["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {}", status_patch.body))
}

fn status_patch(calls: &[Call], name: &str) -> Call {
    calls
        .iter()
        .rev()
        .find(|c| c.is(&Method::PATCH, &format!("/wsgiapps/{name}/status")))
        .cloned()
        .unwrap_or_else(|| panic!("no status patch in {calls:#?}"))
}

#[tokio::test]
async fn applies_children_with_the_operator_field_manager_and_writes_status() {
    let api = mock(Arc::new(echo));
    let app = example("minimal");
    let action = reconcile::reconcile(Arc::new(app.clone()), api.ctx.clone())
        .await
        .expect("reconciles");
    let calls = api.calls();

    let applies: Vec<&Call> = calls.iter().filter(|c| c.method == Method::PATCH).collect();
    for call in &applies {
        assert!(
            call.query.contains("fieldManager=wharf-operator"),
            "{call:?}"
        );
        assert!(call.query.contains("force=true"), "{call:?}");
    }
    let deployment = calls
        .iter()
        .find(|c| {
            c.is(
                &Method::PATCH,
                "/apis/apps/v1/namespaces/default/deployments/hello",
            )
        })
        .expect("deployment applied");
    assert_eq!(deployment.body["kind"], "Deployment");
    assert_eq!(deployment.body["spec"]["replicas"], 1);
    assert_eq!(
        deployment.body["metadata"]["ownerReferences"][0]["uid"],
        json!(app.metadata.uid)
    );
    assert!(
        calls
            .iter()
            .any(|c| c.is(&Method::PATCH, "/api/v1/namespaces/default/services/hello"))
    );
    assert!(calls.iter().any(|c| c.is(
        &Method::PATCH,
        "/apis/policy/v1/namespaces/default/poddisruptionbudgets/hello"
    )));
    // No autoscaling: the HPA is looked up (absent) and not created.
    assert!(
        calls
            .iter()
            .any(|c| c.is(&Method::GET, "/horizontalpodautoscalers/hello"))
    );
    assert!(
        !calls
            .iter()
            .any(|c| c.method != Method::GET && c.path.contains("horizontalpodautoscalers"))
    );

    let status = status_patch(&calls, "hello");
    assert!(
        status.query.contains("fieldManager=wharf-operator"),
        "{status:?}"
    );
    assert_eq!(status.body["kind"], "WsgiApp");
    assert_eq!(status.body["status"]["url"], "http://hello.default.svc");
    assert_eq!(status.body["status"]["observedGeneration"], 1);
    assert_eq!(condition(&status, "Ready")["status"], "False");
    assert_eq!(condition(&status, "Progressing")["reason"], "RollingOut");
    assert_eq!(condition(&status, "Degraded")["status"], "False");
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));
}

#[tokio::test]
async fn rolled_out_deployment_makes_the_app_ready() {
    let api = mock(Arc::new(|call: &Call| {
        if call.is(&Method::PATCH, "/deployments/hello") {
            let mut body = call.body.clone();
            body["metadata"]["generation"] = json!(3);
            body["status"] = json!({"observedGeneration": 3, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1});
            return (StatusCode::OK, body);
        }
        echo(call)
    }));
    let action = reconcile::reconcile(Arc::new(example("minimal")), api.ctx.clone())
        .await
        .expect("reconciles");
    let status = status_patch(&api.calls(), "hello");
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert_eq!(
        condition(&status, "Progressing")["reason"],
        "RolloutComplete"
    );
    assert_eq!(status.body["status"]["readyReplicas"], 1);
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
}

fn owned_by(uid: &Value, kind: &str, api_version: &str) -> Value {
    json!({
        "apiVersion": api_version, "kind": kind,
        "metadata": {"name": "api", "namespace": "prod", "ownerReferences": [
            {"apiVersion": "wharf.dev/v1alpha1", "kind": "WsgiApp", "name": "api", "uid": uid, "controller": true}
        ]},
        "spec": {}
    })
}

#[tokio::test]
async fn children_no_longer_wanted_are_deleted_only_when_owned() {
    let mut app = example("autoscaled");
    // Autoscaling switched off (the PDB is already disabled in this fixture).
    app.spec.autoscaling = None;
    app.spec.replicas = Some(2);
    let uid = json!(app.metadata.uid);
    let api = mock(Arc::new(move |call: &Call| {
        match (&call.method, call.path.as_str()) {
            (&Method::GET, p) if p.ends_with("/horizontalpodautoscalers/api") => (
                StatusCode::OK,
                owned_by(&uid, "HorizontalPodAutoscaler", "autoscaling/v2"),
            ),
            // A PDB of the same name that someone else created.
            (&Method::GET, p) if p.ends_with("/poddisruptionbudgets/api") => (
                StatusCode::OK,
                owned_by(&json!("someone-else"), "PodDisruptionBudget", "policy/v1"),
            ),
            (&Method::DELETE, _) => (
                StatusCode::OK,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
            ),
            _ => echo(call),
        }
    }));
    reconcile::reconcile(Arc::new(app), api.ctx.clone())
        .await
        .expect("reconciles");
    let calls = api.calls();
    assert!(
        calls.iter().any(|c| c.is(
            &Method::DELETE,
            "/apis/autoscaling/v2/namespaces/prod/horizontalpodautoscalers/api"
        )),
        "{calls:#?}"
    );
    assert!(
        !calls
            .iter()
            .any(|c| c.method == Method::DELETE && c.path.contains("poddisruptionbudgets")),
        "{calls:#?}"
    );
    let deployment = calls
        .iter()
        .find(|c| c.is(&Method::PATCH, "/deployments/api"))
        .expect("applied");
    assert_eq!(deployment.body["spec"]["replicas"], 2);
}

#[tokio::test]
async fn autoscaled_app_leaves_replicas_to_the_hpa() {
    let api = mock(Arc::new(echo));
    reconcile::reconcile(Arc::new(example("autoscaled")), api.ctx.clone())
        .await
        .expect("reconciles");
    let calls = api.calls();
    let deployment = calls
        .iter()
        .find(|c| c.is(&Method::PATCH, "/deployments/api"))
        .expect("applied");
    assert!(
        deployment.body["spec"].get("replicas").is_none(),
        "{}",
        deployment.body
    );
    let hpa = calls
        .iter()
        .find(|c| c.is(&Method::PATCH, "/horizontalpodautoscalers/api"))
        .expect("hpa applied");
    assert_eq!(hpa.body["spec"]["maxReplicas"], 6);
}

fn failing_deployment(code: u16, reason: &'static str) -> Responder {
    Arc::new(move |call: &Call| {
        if call.is(&Method::PATCH, "/deployments/hello") {
            api_status(code, reason)
        } else {
            echo(call)
        }
    })
}

fn event_reasons(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.method == Method::POST && c.path.ends_with("/events"))
        .map(|c| {
            format!(
                "{}:{}",
                c.body["type"].as_str().unwrap_or_default(),
                c.body["reason"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

#[tokio::test]
async fn server_errors_are_retried_with_growing_backoff_and_reported() {
    let api = mock(failing_deployment(500, "InternalError"));
    let app = Arc::new(example("minimal"));
    let error = reconcile::reconcile(app.clone(), api.ctx.clone())
        .await
        .expect_err("500 fails the reconcile");
    assert_eq!(error.reason(), "ReconcileFailed");
    let calls = api.calls();
    assert_eq!(event_reasons(&calls), vec!["Warning:ReconcileFailed"]);
    let status = status_patch(&calls, "hello");
    assert_eq!(condition(&status, "Degraded")["status"], "True");
    assert_eq!(condition(&status, "Degraded")["reason"], "ReconcileFailed");
    assert!(
        condition(&status, "Degraded")["message"]
            .as_str()
            .unwrap_or_default()
            .contains("InternalError from mock")
    );
    // No child after the failed one is touched.
    assert!(!calls.iter().any(|c| c.path.contains("/services/")));

    let delays: Vec<Action> = (0..3)
        .map(|_| reconcile::error_policy(app.clone(), &error, api.ctx.clone()))
        .collect();
    assert_eq!(
        delays,
        [5, 10, 20].map(|s| Action::requeue(Duration::from_secs(s)))
    );
}

#[tokio::test]
async fn conflicts_are_retried_and_reported_as_such() {
    let api = mock(failing_deployment(409, "Conflict"));
    let error = reconcile::reconcile(Arc::new(example("minimal")), api.ctx.clone())
        .await
        .expect_err("409 is retried");
    assert_eq!(error.reason(), "Conflict");
    assert_eq!(
        condition(&status_patch(&api.calls(), "hello"), "Degraded")["reason"],
        "Conflict"
    );
}

#[tokio::test]
async fn invalid_objects_are_reported_without_hot_retries() {
    let api = mock(failing_deployment(422, "Invalid"));
    let action = reconcile::reconcile(Arc::new(example("minimal")), api.ctx.clone())
        .await
        .expect("an invalid spec is not an error to retry");
    assert_eq!(action, Action::requeue(Duration::from_secs(1800)));
    let calls = api.calls();
    assert_eq!(event_reasons(&calls), vec!["Warning:InvalidSpec"]);
    assert_eq!(
        condition(&status_patch(&calls, "hello"), "Degraded")["reason"],
        "InvalidSpec"
    );
}

#[tokio::test]
async fn spec_that_slipped_past_the_schema_is_reported_without_api_writes() {
    let api = mock(Arc::new(echo));
    let mut app = example("minimal");
    app.spec.app = "not an app".into();
    let action = reconcile::reconcile(Arc::new(app), api.ctx.clone())
        .await
        .expect("reported, not retried");
    assert_eq!(action, Action::requeue(Duration::from_secs(1800)));
    let calls = api.calls();
    assert!(
        !calls.iter().any(|c| c.path.contains("/deployments/")),
        "{calls:#?}"
    );
    assert_eq!(
        condition(&status_patch(&calls, "hello"), "Degraded")["reason"],
        "InvalidSpec"
    );
}

#[tokio::test]
async fn unsupported_python_in_injected_mode_degrades_the_app() {
    let api = mock(Arc::new(|call: &Call| {
        if call.is(&Method::GET, "/namespaces/default/pods") {
            assert!(call.query.contains("labelSelector="), "{call:?}");
            return (
                StatusCode::OK,
                json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [{
                    "metadata": {"name": "legacy-1"},
                    "status": {"containerStatuses": [{
                        "name": "wharf", "image": "x", "imageID": "", "ready": false, "restartCount": 3,
                        "lastState": {"terminated": {"exitCode": 3, "message": "RuntimeUnsupported: the injected wharf runtime cannot be loaded by this image's Python (Python 3.6.15): ImportError: bad magic"}}
                    }]}
                }]}),
            );
        }
        echo(call)
    }));
    reconcile::reconcile(Arc::new(example("injected")), api.ctx.clone())
        .await
        .expect("reconciles");
    let calls = api.calls();
    let degraded = condition(&status_patch(&calls, "legacy"), "Degraded").clone();
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "RuntimeUnsupported");
    assert!(
        degraded["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Python 3.6.15"),
        "{degraded}"
    );
    assert_eq!(event_reasons(&calls), vec!["Warning:RuntimeUnsupported"]);
}
