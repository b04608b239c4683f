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
use kube::runtime::watcher;
use serde_json::{Value, json};
use wharf_operator::crd::WsgiApp;
use wharf_operator::leader::Gate;
use wharf_operator::metrics::Metrics;
use wharf_operator::reconcile::live::{self, LiveWriters};
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
    /// The watches' side of the children stores: what the reconciler believes exists.
    live: Mutex<LiveWriters>,
}

fn mock(respond: Responder) -> MockApi {
    // The cluster serves the Gateway API and the Prometheus Operator's CRDs.
    mock_in(
        respond,
        live::Optional {
            routes: true,
            pod_monitors: true,
        },
    )
}

fn mock_in(respond: Responder, optional: live::Optional) -> MockApi {
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
            // A string answer is sent as plain text (pod logs).
            let (content_type, bytes) = match answer {
                Value::String(text) => ("text/plain", text.into_bytes()),
                other => (
                    "application/json",
                    serde_json::to_vec(&other).expect("json"),
                ),
            };
            let response = Response::builder()
                .status(status)
                .header("content-type", content_type)
                .body(Body::from(bytes))
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
    let (live, mut writers) = live::stores(optional);
    // Every watch has listed once, and found nothing.
    writers.all_listed();
    let ctx = Arc::new(Context::new(
        client,
        RenderConfig {
            default_injector_image: Some("reg/injector:1".into()),
            operator_namespace: "wharf-system".into(),
        },
        recorder,
        Arc::new(Metrics::default()),
        Gate::always_open(),
        live,
    ));
    MockApi {
        calls,
        ctx,
        live: Mutex::new(writers),
    }
}

impl MockApi {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("lock").clone()
    }

    fn forget_calls(&self) {
        self.calls.lock().expect("lock").clear();
    }

    /// Tells the reconciler, as a watch event would, that `object` exists as given (JSON).
    fn sees(&self, object: &Value) {
        let mut live = self.live.lock().expect("lock");
        match object["kind"].as_str() {
            Some("Deployment") => live
                .deployments
                .apply_watcher_event(&watcher::Event::Apply(from(object))),
            Some("Service") => live
                .services
                .apply_watcher_event(&watcher::Event::Apply(from(object))),
            Some("HorizontalPodAutoscaler") => live
                .hpas
                .apply_watcher_event(&watcher::Event::Apply(from(object))),
            Some("PodDisruptionBudget") => live
                .pdbs
                .apply_watcher_event(&watcher::Event::Apply(from(object))),
            Some("Ingress") => live
                .ingresses
                .apply_watcher_event(&watcher::Event::Apply(from(object))),
            Some("NetworkPolicy") => live
                .network_policies
                .apply_watcher_event(&watcher::Event::Apply(from(object))),
            Some("Job") => live
                .jobs
                .apply_watcher_event(&watcher::Event::Apply(from(object))),
            Some("HTTPRoute") => live
                .routes
                .as_mut()
                .expect("routes served")
                .apply_watcher_event(&watcher::Event::Apply(from(object))),
            Some("PodMonitor") => live
                .pod_monitors
                .as_mut()
                .expect("pod monitors served")
                .apply_watcher_event(&watcher::Event::Apply(from(object))),
            Some("ConfigMap") => live
                .config_maps
                .apply_watcher_event(&watcher::Event::Apply(from(object))),
            Some("Secret") => live
                .secrets
                .apply_watcher_event(&watcher::Event::Apply(from(object))),
            other => panic!("not a child: {other:?}"),
        }
    }

    /// Feeds every object the reconciler applied back in, as the watches would.
    fn sees_what_was_applied(&self) {
        for call in self.calls() {
            if call.method == Method::PATCH && !call.path.ends_with("/status") {
                self.sees(&call.body);
            }
        }
    }
}

fn from<K: serde::de::DeserializeOwned>(object: &Value) -> K {
    serde_json::from_value(object.clone()).expect("a valid object")
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

    let applies: Vec<&Call> = calls
        .iter()
        .filter(|c| c.method == Method::PATCH && !c.path.contains("/events"))
        .collect();
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
    // No autoscaling, and the watch saw no HPA: nothing to create, look up or delete.
    assert!(
        !calls
            .iter()
            .any(|c| c.path.contains("horizontalpodautoscalers")),
        "{calls:#?}"
    );
    // Every child is new: one Normal Event each.
    assert_eq!(
        event_reasons(&calls),
        vec!["Normal:Created", "Normal:Created", "Normal:Created"]
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
    assert_eq!(condition(&status, "Progressing")["reason"], "Updating");
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
        "spec": if kind == "HorizontalPodAutoscaler" {
            json!({"maxReplicas": 3, "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"}})
        } else {
            json!({})
        }
    })
}

#[tokio::test]
async fn children_no_longer_wanted_are_deleted_only_when_owned() {
    let mut app = example("autoscaled");
    // Autoscaling switched off (the PDB is already disabled in this fixture).
    app.spec.autoscaling = None;
    app.spec.replicas = Some(2);
    let uid = json!(app.metadata.uid);
    let api = mock(Arc::new(|call: &Call| match call.method {
        Method::DELETE => (
            StatusCode::OK,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
        ),
        _ => echo(call),
    }));
    api.sees(&owned_by(&uid, "HorizontalPodAutoscaler", "autoscaling/v2"));
    // A PDB of the same name that someone else created.
    api.sees(&owned_by(
        &json!("someone-else"),
        "PodDisruptionBudget",
        "policy/v1",
    ));
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
    // The HPA goes before the Deployment gets its fixed count, with a Normal Event.
    let position = |method: &Method, kind: &str| {
        calls
            .iter()
            .position(|c| c.method == *method && c.path.contains(kind))
    };
    assert!(
        position(&Method::DELETE, "horizontalpodautoscalers")
            < position(&Method::PATCH, "/deployments/")
    );
    assert!(
        event_reasons(&calls).contains(&"Normal:Deleted".to_owned()),
        "{calls:#?}"
    );
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
        // A repeated Event is a PATCH of its series.
        .filter(|c| c.method != Method::GET && c.path.contains("/events"))
        .map(|c| {
            format!(
                "{}:{}",
                c.body["type"].as_str().unwrap_or_default(),
                c.body["reason"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

fn warnings(calls: &[Call]) -> Vec<String> {
    event_reasons(calls)
        .into_iter()
        .filter(|r| r.starts_with("Warning:"))
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
    // The Deployment's failure is reported, the other children are still applied (as new: Created).
    assert_eq!(
        event_reasons(&calls),
        vec![
            "Normal:Created",
            "Normal:Created",
            "Warning:ReconcileFailed"
        ]
    );
    let status = status_patch(&calls, "hello");
    assert_eq!(condition(&status, "Degraded")["status"], "True");
    assert_eq!(condition(&status, "Degraded")["reason"], "ReconcileFailed");
    // The API server's message, reason and code, once; no Rust debug dump.
    assert_eq!(
        condition(&status, "Degraded")["message"],
        "apply Deployment default/hello failed: InternalError from mock (InternalError, HTTP 500)"
    );
    assert!(
        calls
            .iter()
            .any(|c| c.is(&Method::PATCH, "/services/hello"))
    );
    assert!(
        calls
            .iter()
            .any(|c| c.is(&Method::PATCH, "/poddisruptionbudgets/hello"))
    );

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
    assert_eq!(warnings(&calls), vec!["Warning:InvalidSpec"]);
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
    assert_eq!(warnings(&calls), vec!["Warning:RuntimeUnsupported"]);
}

fn failing(method: Method, path_suffix: &'static str, code: u16) -> Responder {
    Arc::new(move |call: &Call| {
        if call.is(&method, path_suffix) {
            api_status(code, "InternalError")
        } else {
            echo(call)
        }
    })
}

#[tokio::test]
async fn a_failed_hpa_delete_holds_back_the_fixed_replica_count_but_not_the_other_children() {
    let mut app = example("autoscaled");
    app.spec.autoscaling = None;
    app.spec.replicas = Some(2);
    app.spec.disruption_budget = None;
    let api = mock(failing(
        Method::DELETE,
        "/horizontalpodautoscalers/api",
        500,
    ));
    api.sees(&owned_by(
        &json!(app.metadata.uid),
        "HorizontalPodAutoscaler",
        "autoscaling/v2",
    ));
    let error = reconcile::reconcile(Arc::new(app), api.ctx.clone())
        .await
        .expect_err("retried");
    let calls = api.calls();
    // A Deployment with `replicas: 2` next to the live HPA would fight it: not applied.
    assert!(
        !calls.iter().any(|c| c.path.contains("/deployments/")),
        "{calls:#?}"
    );
    assert!(calls.iter().any(|c| c.is(&Method::PATCH, "/services/api")));
    assert!(
        calls
            .iter()
            .any(|c| c.is(&Method::PATCH, "/poddisruptionbudgets/api"))
    );
    let message = condition(&status_patch(&calls, "api"), "Degraded")["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(message, error.to_string());
    assert!(
        message.starts_with("delete HorizontalPodAutoscaler prod/api failed: InternalError from mock (InternalError, HTTP 500); the Deployment's fixed replica count is not applied until"),
        "{message}"
    );
}

#[tokio::test]
async fn a_failed_deployment_apply_holds_back_the_hpa() {
    let api = mock(failing(Method::PATCH, "/deployments/api", 500));
    reconcile::reconcile(Arc::new(example("autoscaled")), api.ctx.clone())
        .await
        .expect_err("retried");
    let calls = api.calls();
    assert!(
        !calls
            .iter()
            .any(|c| c.path.contains("horizontalpodautoscalers")),
        "{calls:#?}"
    );
    assert!(calls.iter().any(|c| c.is(&Method::PATCH, "/services/api")));
}

fn rolled_out(mut deployment: Value) -> Value {
    deployment["metadata"]["generation"] = json!(1);
    deployment["status"] = json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1});
    deployment
}

/// The app as the watch shows it after the operator wrote `call`'s status.
fn with_status(mut app: WsgiApp, call: &Call) -> WsgiApp {
    app.status = Some(serde_json::from_value(call.body["status"].clone()).expect("status"));
    app
}

#[tokio::test]
async fn a_settled_app_costs_no_request_and_drift_or_deletion_is_repaired() {
    // An API server whose Deployments are rolled out by the time the apply answers.
    let api = mock(Arc::new(|call: &Call| {
        if call.is(&Method::PATCH, "/deployments/hello") {
            (StatusCode::OK, rolled_out(call.body.clone()))
        } else {
            echo(call)
        }
    }));
    let mut app = example("minimal");
    let action = reconcile::reconcile(Arc::new(app.clone()), api.ctx.clone())
        .await
        .expect("reconciles");
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    // The watches see what was applied (the Deployment rolled out).
    api.sees_what_was_applied();
    let applied_deployment = rolled_out(
        api.calls()
            .into_iter()
            .find(|c| c.is(&Method::PATCH, "/deployments/hello"))
            .expect("deployment applied")
            .body,
    );
    api.sees(&applied_deployment);
    app = with_status(app, &status_patch(&api.calls(), "hello"));
    api.forget_calls();

    // Steady state (a re-check, or the watch event of our own writes): nothing to write.
    reconcile::reconcile(Arc::new(app.clone()), api.ctx.clone())
        .await
        .expect("reconciles");
    assert_eq!(api.calls().len(), 0, "{:#?}", api.calls());

    // Someone changes the image: only the Deployment is applied again, with a Normal Event.
    let mut edited = applied_deployment.clone();
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = json!("evil:1");
    api.sees(&edited);
    reconcile::reconcile(Arc::new(app.clone()), api.ctx.clone())
        .await
        .expect("reconciles");
    let calls = api.calls();
    assert_eq!(
        calls.iter().filter(|c| !c.path.contains("/events")).count(),
        1,
        "{calls:#?}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c.is(&Method::PATCH, "/deployments/hello"))
    );
    assert_eq!(event_reasons(&calls), vec!["Normal:DriftCorrected"]);
    api.sees(&applied_deployment);
    api.forget_calls();

    // Someone deletes the Service: it comes back, with a Normal Event.
    let service = api
        .live
        .lock()
        .expect("lock")
        .services
        .as_reader()
        .state()
        .first()
        .map(|s| (**s).clone())
        .expect("service seen");
    api.live
        .lock()
        .expect("lock")
        .services
        .apply_watcher_event(&watcher::Event::Delete(service));
    reconcile::reconcile(Arc::new(app), api.ctx.clone())
        .await
        .expect("reconciles");
    let calls = api.calls();
    assert!(
        calls
            .iter()
            .any(|c| c.is(&Method::PATCH, "/services/hello"))
    );
    assert_eq!(event_reasons(&calls), vec!["Normal:Created"]);
}

#[tokio::test]
async fn unsettled_apps_are_rechecked_less_and_less_often() {
    let api = mock(Arc::new(echo));
    let app = Arc::new(example("minimal"));
    let mut delays = Vec::new();
    for _ in 0..4 {
        match reconcile::reconcile(app.clone(), api.ctx.clone()).await {
            Ok(action) => delays.push(action),
            Err(error) => panic!("{error}"),
        }
    }
    assert_eq!(
        delays,
        [10, 20, 40, 80].map(|s| Action::requeue(Duration::from_secs(s)))
    );
    // A new generation starts again at 10 s.
    let mut changed = (*app).clone();
    changed.metadata.generation = Some(2);
    let action = reconcile::reconcile(Arc::new(changed), api.ctx.clone())
        .await
        .expect("reconciles");
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));
}

/// Deployment `hello` as the watch sees it: `replicas` pods, its `spec.replicas` owned by `owner`
/// (as in `metadata.managedFields`).
fn existing_deployment(replicas: i32, owner: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "hello", "namespace": "default", "managedFields": [{
            "manager": owner, "operation": "Apply", "apiVersion": "apps/v1",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {}}},
        }]},
        "spec": {"replicas": replicas, "selector": {}, "template": {}},
    })
}

/// A mocked API server whose Deployment watch has seen `deployment`.
fn mock_with(deployment: Value) -> MockApi {
    let api = mock(Arc::new(echo));
    api.sees(&deployment);
    api
}

fn deployment_patches(calls: &[Call]) -> Vec<&Call> {
    calls
        .iter()
        .filter(|c| c.is(&Method::PATCH, "/deployments/hello"))
        .collect()
}

fn with_autoscaling(autoscaling: Value) -> WsgiApp {
    let mut app = example("minimal");
    app.spec.autoscaling = Some(serde_json::from_value(autoscaling).expect("autoscaling"));
    app
}

#[tokio::test]
async fn turning_autoscaling_on_hands_the_current_count_over_before_letting_go() {
    for autoscaling in [
        json!({"maxReplicas": 8}),
        json!({"metric": "CPU", "maxReplicas": 8}),
        json!({"metric": "External", "maxReplicas": 8}),
    ] {
        let api = mock_with(existing_deployment(4, "wharf-operator"));
        let app = with_autoscaling(autoscaling.clone());
        reconcile::reconcile(Arc::new(app), api.ctx.clone())
            .await
            .expect("reconciles");
        let calls = api.calls();
        let patches = deployment_patches(&calls);
        assert_eq!(patches.len(), 2, "{autoscaling}: {patches:#?}");
        // First the autoscaler's manager takes the field at the current count ...
        assert!(
            patches[0].query.contains("fieldManager=wharf-autoscaler"),
            "{patches:#?}"
        );
        assert_eq!(patches[0].body["spec"], json!({"replicas": 4}));
        // ... then the operator applies the Deployment without it, so it is not removed.
        assert!(patches[1].query.contains("fieldManager=wharf-operator"));
        assert!(
            patches[1].body["spec"].get("replicas").is_none(),
            "{autoscaling}"
        );
    }
}

#[tokio::test]
async fn no_hand_over_when_someone_else_already_owns_the_count() {
    let api = mock_with(existing_deployment(5, "kube-controller-manager"));
    let app = with_autoscaling(json!({"metric": "CPU", "maxReplicas": 8}));
    reconcile::reconcile(Arc::new(app), api.ctx.clone())
        .await
        .expect("reconciles");
    let calls = api.calls();
    let patches = deployment_patches(&calls);
    assert_eq!(patches.len(), 1, "{patches:#?}");
    assert!(patches[0].body["spec"].get("replicas").is_none());
}

#[tokio::test]
async fn turning_autoscaling_off_keeps_the_current_count() {
    let api = mock_with(existing_deployment(3, "wharf-autoscaler"));
    let app = example("minimal");
    assert!(app.spec.replicas.is_none() && app.spec.autoscaling.is_none());
    reconcile::reconcile(Arc::new(app), api.ctx.clone())
        .await
        .expect("reconciles");
    let calls = api.calls();
    let patches = deployment_patches(&calls);
    assert_eq!(patches.len(), 1, "{patches:#?}");
    assert_eq!(patches[0].body["spec"]["replicas"], 3, "not the default 1");
    assert!(patches[0].query.contains("force=true"));
}

#[tokio::test]
async fn external_mirrors_the_count_written_through_the_scale_subresource() {
    let api = mock_with(existing_deployment(2, "wharf-operator"));
    let mut app = with_autoscaling(json!({"metric": "External", "maxReplicas": 8}));
    app.spec.replicas = Some(6);
    reconcile::reconcile(Arc::new(app), api.ctx.clone())
        .await
        .expect("reconciles");
    let calls = api.calls();
    let patches = deployment_patches(&calls);
    assert_eq!(patches.len(), 1, "{patches:#?}");
    assert_eq!(patches[0].body["spec"]["replicas"], 6);
    // The scale subresource reads its selector from the status.
    assert_eq!(
        status_patch(&calls, "hello").body["status"]["selector"],
        "app.kubernetes.io/instance=hello,app.kubernetes.io/name=hello"
    );
}

fn real_app() -> WsgiApp {
    let mut app = example("realapp");
    app.spec.migrate = None;
    app
}

fn patch_of<'a>(calls: &'a [Call], path: &str) -> &'a Call {
    calls
        .iter()
        .find(|c| c.is(&Method::PATCH, path))
        .unwrap_or_else(|| panic!("no PATCH of {path} in {calls:#?}"))
}

#[tokio::test]
async fn routes_monitoring_and_network_policy_are_applied_and_the_url_is_external() {
    let api = mock(Arc::new(echo));
    reconcile::reconcile(Arc::new(real_app()), api.ctx.clone())
        .await
        .expect("reconciles");
    let calls = api.calls();
    let ingress = patch_of(
        &calls,
        "/apis/networking.k8s.io/v1/namespaces/web/ingresses/shop",
    );
    assert_eq!(ingress.body["spec"]["tls"][0]["secretName"], "shop-tls");
    assert!(ingress.query.contains("fieldManager=wharf-operator"));
    let route = patch_of(
        &calls,
        "/apis/gateway.networking.k8s.io/v1/namespaces/web/httproutes/shop",
    );
    assert_eq!(route.body["kind"], "HTTPRoute");
    assert_eq!(route.body["spec"]["rules"][0]["backendRefs"][0]["port"], 80);
    let monitor = patch_of(
        &calls,
        "/apis/monitoring.coreos.com/v1/namespaces/web/podmonitors/shop",
    );
    assert_eq!(monitor.body["metadata"]["labels"]["release"], "prometheus");
    patch_of(
        &calls,
        "/apis/networking.k8s.io/v1/namespaces/web/networkpolicies/shop",
    );
    assert_eq!(
        event_reasons(&calls)
            .iter()
            .filter(|r| *r == "Normal:Created")
            .count(),
        7,
        "Deployment, Service, PDB, Ingress, NetworkPolicy, HTTPRoute, PodMonitor"
    );
    let status = status_patch(&calls, "shop");
    assert_eq!(status.body["status"]["url"], "https://shop.example.com/");
    assert_eq!(status.body["status"]["address"], "http://shop.web.svc");
    assert!(
        status.body["status"]["monitoring"]
            .as_str()
            .unwrap_or_default()
            .starts_with("PodMonitor shop scrapes /metrics"),
        "{}",
        status.body
    );
}

#[tokio::test]
async fn children_of_removed_fields_are_deleted() {
    let app = real_app();
    let uid = json!(app.metadata.uid);
    let mut plain = app.clone();
    plain.spec.ingress = None;
    plain.spec.route = None;
    plain.spec.monitoring = None;
    plain.spec.network_policy = None;
    let api = mock(Arc::new(|call: &Call| match call.method {
        Method::DELETE => (
            StatusCode::OK,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
        ),
        _ => echo(call),
    }));
    for (kind, api_version) in [
        ("Ingress", "networking.k8s.io/v1"),
        ("NetworkPolicy", "networking.k8s.io/v1"),
        ("HTTPRoute", "gateway.networking.k8s.io/v1"),
        ("PodMonitor", "monitoring.coreos.com/v1"),
    ] {
        let mut object = owned_by(&uid, kind, api_version);
        object["metadata"]["name"] = json!("shop");
        object["metadata"]["namespace"] = json!("web");
        object["metadata"]["ownerReferences"][0]["name"] = json!("shop");
        if kind == "HTTPRoute" {
            object["spec"] = json!({"parentRefs": [], "rules": []});
        } else if kind == "PodMonitor" {
            object["spec"] = json!({"selector": {}, "podMetricsEndpoints": []});
        }
        api.sees(&object);
    }
    reconcile::reconcile(Arc::new(plain), api.ctx.clone())
        .await
        .expect("reconciles");
    let deleted: Vec<String> = api
        .calls()
        .iter()
        .filter(|c| c.method == Method::DELETE)
        .map(|c| c.path.clone())
        .collect();
    assert_eq!(
        deleted,
        [
            "/apis/networking.k8s.io/v1/namespaces/web/ingresses/shop",
            "/apis/networking.k8s.io/v1/namespaces/web/networkpolicies/shop",
            "/apis/gateway.networking.k8s.io/v1/namespaces/web/httproutes/shop",
            "/apis/monitoring.coreos.com/v1/namespaces/web/podmonitors/shop",
        ]
    );
}

#[tokio::test]
async fn without_the_crds_a_route_is_degraded_and_monitoring_says_why() {
    let api = mock_in(Arc::new(echo), live::Optional::default());
    let action = reconcile::reconcile(Arc::new(real_app()), api.ctx.clone())
        .await
        .expect("reported, not retried hot");
    assert_eq!(action, Action::requeue(Duration::from_secs(1800)));
    let calls = api.calls();
    assert!(
        !calls
            .iter()
            .any(|c| c.path.contains("httproutes") || c.path.contains("podmonitors")),
        "{calls:#?}"
    );
    // Everything else is still applied.
    patch_of(&calls, "/deployments/shop");
    patch_of(&calls, "/ingresses/shop");
    let status = status_patch(&calls, "shop");
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded["reason"], "MissingCRD");
    assert!(
        degraded["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("spec.route needs the HTTPRoute kind (gateway.networking.k8s.io/v1)"),
        "{degraded}"
    );
    assert!(
        status.body["status"]["monitoring"]
            .as_str()
            .unwrap_or_default()
            .starts_with(
                "no PodMonitor: the cluster has no monitoring.coreos.com/v1 PodMonitor CRD"
            ),
        "{}",
        status.body
    );
}

#[tokio::test]
async fn a_paused_app_writes_nothing_but_its_status() {
    let api = mock(Arc::new(echo));
    let mut app = real_app();
    app.spec.paused = true;
    reconcile::reconcile(Arc::new(app), api.ctx.clone())
        .await
        .expect("reconciles");
    let calls = api.calls();
    let writes: Vec<&Call> = calls.iter().filter(|c| c.method != Method::GET).collect();
    assert_eq!(writes.len(), 1, "{writes:#?}");
    let status = status_patch(&calls, "shop");
    assert_eq!(condition(&status, "Progressing")["reason"], "Paused");
}

/// Secret `shop-db` as the metadata watch shows it, at `version`.
fn secret_meta(version: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": "shop-db", "namespace": "web", "resourceVersion": version}})
}

fn template_annotation(calls: &[Call], key: &str) -> Option<String> {
    patch_of(calls, "/deployments/shop").body["spec"]["template"]["metadata"]["annotations"][key]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test]
async fn a_changed_secret_rolls_the_pods_and_its_data_is_read_once_per_version() {
    let data = Arc::new(Mutex::new("cG9zdGdyZXM6Ly9h".to_owned()));
    let served = data.clone();
    let api = mock(Arc::new(move |call: &Call| {
        if call.is(&Method::GET, "/api/v1/namespaces/web/secrets/shop-db") {
            let url = served.lock().expect("lock").clone();
            return (
                StatusCode::OK,
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "shop-db"}, "data": {"url": url}}),
            );
        }
        echo(call)
    }));
    api.sees(&secret_meta("10"));
    let app = Arc::new(real_app());
    let reads = |calls: &[Call]| {
        calls
            .iter()
            .filter(|c| c.is(&Method::GET, "/secrets/shop-db"))
            .count()
    };

    reconcile::reconcile(app.clone(), api.ctx.clone())
        .await
        .expect("reconciles");
    let calls = api.calls();
    assert_eq!(reads(&calls), 1);
    let first = template_annotation(&calls, "wharf.dev/config-hash").expect("config hash");
    let first_template = template_annotation(&calls, "wharf.dev/pod-template-hash");
    api.forget_calls();

    // Same resourceVersion: no read, same hash.
    reconcile::reconcile(app.clone(), api.ctx.clone())
        .await
        .expect("reconciles");
    let calls = api.calls();
    assert_eq!(reads(&calls), 0, "{calls:#?}");
    assert_eq!(
        template_annotation(&calls, "wharf.dev/config-hash"),
        Some(first.clone())
    );
    api.forget_calls();

    // The Secret's content changes: read again, new hash, new template.
    *data.lock().expect("lock") = "cG9zdGdyZXM6Ly9i".to_owned();
    api.sees(&secret_meta("11"));
    reconcile::reconcile(app.clone(), api.ctx.clone())
        .await
        .expect("reconciles");
    let calls = api.calls();
    assert_eq!(reads(&calls), 1);
    let second = template_annotation(&calls, "wharf.dev/config-hash").expect("config hash");
    assert_ne!(second, first);
    assert_ne!(
        template_annotation(&calls, "wharf.dev/pod-template-hash"),
        first_template
    );
}

/// The migration Job `job` (as the watch shows it) with a condition, or none while it runs.
fn migration_job(app: &WsgiApp, job: &Value, condition: Option<(&str, &str)>) -> Value {
    let mut job = job.clone();
    job["metadata"]["uid"] = json!("job-uid");
    job["metadata"]["ownerReferences"][0]["uid"] = json!(app.metadata.uid);
    if let Some((type_, reason)) = condition {
        job["status"] = json!({"conditions": [{"type": type_, "status": "True", "reason": reason,
                                "message": "Job has reached the specified backoff limit"}]});
    }
    job
}

#[tokio::test]
async fn the_deployment_rolls_only_after_its_migration_succeeded() {
    let api = mock(Arc::new(|call: &Call| {
        if call.is(&Method::GET, "/api/v1/namespaces/web/pods") {
            assert!(call.query.contains("job-name"), "{call:?}");
            return (
                StatusCode::OK,
                json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [
                    {"metadata": {"name": "shop-migrate-1-abcde", "creationTimestamp": "2026-01-01T00:00:00Z"}}
                ]}),
            );
        }
        if call.is(&Method::GET, "/pods/shop-migrate-1-abcde/log") {
            assert!(call.query.contains("tailLines=10"), "{call:?}");
            return (
                StatusCode::OK,
                json!(
                    "Applying shop.0002_orders...\ndjango.db.utils.OperationalError: no such column"
                ),
            );
        }
        echo(call)
    }));
    let app = example("realapp");
    let app_arc = Arc::new(app.clone());

    // A new template: the Job is created, the Deployment is not touched.
    reconcile::reconcile(app_arc.clone(), api.ctx.clone())
        .await
        .expect("reconciles");
    let calls = api.calls();
    let job_call = calls
        .iter()
        .find(|c| {
            c.method == Method::PATCH
                && c.path
                    .contains("/apis/batch/v1/namespaces/web/jobs/shop-migrate-")
        })
        .unwrap_or_else(|| panic!("no Job applied: {calls:#?}"))
        .clone();
    let job_spec = &job_call.body["spec"]["template"]["spec"];
    assert_eq!(
        job_spec["containers"][0]["command"],
        json!(["python", "manage.py", "migrate", "--noinput"])
    );
    assert_eq!(
        job_spec["containers"].as_array().map(Vec::len),
        Some(1),
        "no sidecars"
    );
    assert_eq!(job_spec["restartPolicy"], "Never");
    assert!(
        !calls.iter().any(|c| c.path.contains("/deployments/")),
        "{calls:#?}"
    );
    patch_of(&calls, "/services/shop");
    let status = status_patch(&calls, "shop");
    assert_eq!(condition(&status, "Progressing")["reason"], "Migrating");
    api.forget_calls();

    // It fails: Degraded with the Job's reason and the pod's last log lines; still no Deployment.
    api.sees(&migration_job(
        &app,
        &job_call.body,
        Some(("Failed", "BackoffLimitExceeded")),
    ));
    reconcile::reconcile(app_arc.clone(), api.ctx.clone())
        .await
        .expect("reconciles");
    let calls = api.calls();
    assert!(
        !calls.iter().any(|c| c.path.contains("/deployments/")),
        "{calls:#?}"
    );
    let status = status_patch(&calls, "shop");
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded["reason"], "MigrationFailed");
    let message = degraded["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("(BackoffLimitExceeded: Job has reached the specified backoff limit)"),
        "{message}"
    );
    assert!(
        message.ends_with("OperationalError: no such column"),
        "{message}"
    );
    assert_eq!(warnings(&calls), vec!["Warning:MigrationFailed"]);
    api.forget_calls();

    // Once the failure is in the status, the logs are not read again.
    let failed = with_status(app.clone(), &status);
    reconcile::reconcile(Arc::new(failed), api.ctx.clone())
        .await
        .expect("reconciles");
    let calls = api.calls();
    assert!(!calls.iter().any(|c| c.path.contains("/log")), "{calls:#?}");
    api.forget_calls();

    // It succeeds: now the Deployment gets the new template.
    api.sees(&migration_job(
        &app,
        &job_call.body,
        Some(("Complete", "Completed")),
    ));
    reconcile::reconcile(app_arc, api.ctx.clone())
        .await
        .expect("reconciles");
    let calls = api.calls();
    let deployment = patch_of(&calls, "/deployments/shop");
    let hash = deployment.body["spec"]["template"]["metadata"]["annotations"]["wharf.dev/pod-template-hash"]
        .as_str()
        .expect("template hash");
    assert!(
        job_call
            .path
            .ends_with(&format!("shop-migrate-{}", &hash[..8])),
        "{}",
        job_call.path
    );
    assert_ne!(
        condition(&status_patch(&calls, "shop"), "Progressing")["reason"],
        "Migrating"
    );
}

fn migrating_hello() -> WsgiApp {
    let mut app = example("minimal");
    app.spec.migrate = Some(
        serde_json::from_value(json!({"command": ["./migrate"], "historyLimit": 2}))
            .expect("migrate"),
    );
    app
}

/// An earlier migration Job of `app`, created at `minute`, finished or not.
fn old_job(app: &WsgiApp, hash: &str, minute: u32, finished: bool) -> Value {
    let mut job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {
            "name": format!("hello-migrate-{hash}"), "namespace": "default",
            "creationTimestamp": format!("2026-01-01T00:{minute:02}:00Z"),
            "labels": {"wharf.dev/template-hash": hash},
            "ownerReferences": [{"apiVersion": "wharf.dev/v1alpha1", "kind": "WsgiApp", "name": "hello",
                                 "uid": app.metadata.uid, "controller": true}]
        },
        "spec": {"template": {"spec": {"containers": []}}}
    });
    if finished {
        job["status"] = json!({"conditions": [{"type": "Complete", "status": "True"}]});
    }
    job
}

fn deleted_jobs(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.method == Method::DELETE && c.path.contains("/jobs/"))
        .map(|c| c.path.rsplit('/').next().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn finished_migrations_beyond_the_history_limit_are_deleted_running_ones_never() {
    let app = migrating_hello();
    let api = mock(Arc::new(|call: &Call| match call.method {
        Method::DELETE => (
            StatusCode::OK,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
        ),
        _ => echo(call),
    }));
    // The Deployment already runs the rendered template: nothing to migrate.
    let rendered = wharf_operator::render::render(&app, &api.ctx.render).expect("renders");
    let mut deployment = serde_json::to_value(&rendered.deployment).expect("json");
    deployment["apiVersion"] = json!("apps/v1");
    deployment["kind"] = json!("Deployment");
    api.sees(&deployment);
    for (hash, minute, finished) in [
        ("0000000a", 1, true),
        ("0000000b", 2, true),
        ("0000000c", 3, false),
        ("0000000d", 4, true),
        ("0000000e", 5, true),
    ] {
        api.sees(&old_job(&app, hash, minute, finished));
    }
    reconcile::reconcile(Arc::new(app), api.ctx.clone())
        .await
        .expect("reconciles");
    let calls = api.calls();
    assert_eq!(
        deleted_jobs(&calls),
        ["hello-migrate-0000000b", "hello-migrate-0000000a"],
        "the newest two finished ones stay, the running one too"
    );
    assert!(
        !calls
            .iter()
            .any(|c| c.method == Method::PATCH && c.path.contains("/jobs/")),
        "{calls:#?}"
    );
}

#[tokio::test]
async fn a_new_migration_waits_for_an_older_one_still_running() {
    let app = migrating_hello();
    let api = mock(Arc::new(echo));
    api.sees(&old_job(&app, "0000000c", 3, false));
    reconcile::reconcile(Arc::new(app), api.ctx.clone())
        .await
        .expect("reconciles");
    let calls = api.calls();
    assert!(
        !calls
            .iter()
            .any(|c| c.path.contains("/jobs/") || c.path.contains("/deployments/")),
        "{calls:#?}"
    );
    let progressing = condition(&status_patch(&calls, "hello"), "Progressing").clone();
    assert_eq!(progressing["reason"], "Migrating");
    assert!(
        progressing["message"]
            .as_str()
            .unwrap_or_default()
            .contains("waits for hello-migrate-0000000c"),
        "{progressing}"
    );
}
