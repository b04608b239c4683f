//! Two replicas electing a leader against an in-memory Lease store behind mocked API servers
//! (tower-test), one per replica so faults can be injected on one side only. Time is tokio's paused
//! clock: it advances only when every task waits, so 100 s of election run in milliseconds and
//! every instant can be checked.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{Elector, Gate, Timing};

const NAME: &str = "wharf-operator";

/// What the API server in front of one replica does with its Lease calls.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    None,
    /// 503 without touching the Lease.
    Unavailable,
    /// The write happens, but the answer is lost (503).
    AnswerLost,
    /// Writes are rejected with 409 without touching the Lease.
    Conflict,
    /// Requests are held this long, then carried out (a retry stuck in a proxy).
    Delayed(Duration),
}

/// The Lease as the API server stores it, with optimistic concurrency on resourceVersion.
#[derive(Default)]
struct Store {
    lease: Option<Value>,
    version: u64,
    /// (holder after the write, who wrote it, when the request arrived)
    writes: Vec<(Option<String>, String, Instant)>,
}

impl Store {
    fn holder(&self) -> Option<String> {
        self.lease
            .as_ref()
            .and_then(|l| l["spec"]["holderIdentity"].as_str())
            .map(str::to_owned)
    }

    /// Carries out a call that reached the API server at `arrived`.
    fn answer(
        &mut self,
        method: &Method,
        body: &Value,
        writer: &str,
        arrived: Instant,
    ) -> (StatusCode, Value) {
        match *method {
            Method::GET => match &self.lease {
                Some(lease) => (StatusCode::OK, lease.clone()),
                None => status(404, "NotFound"),
            },
            Method::POST if self.lease.is_some() => status(409, "AlreadyExists"),
            Method::PUT if self.lease.is_none() => status(404, "NotFound"),
            // Like the real API server: a PUT without resourceVersion is unconditional.
            Method::PUT
                if body["metadata"]["resourceVersion"]
                    .as_str()
                    .is_some_and(|v| v != self.version.to_string()) =>
            {
                status(409, "Conflict")
            }
            Method::POST | Method::PUT => {
                self.version += 1;
                let mut lease = body.clone();
                lease["metadata"]["resourceVersion"] = json!(self.version.to_string());
                lease["metadata"]["namespace"] = json!("ops");
                self.lease = Some(lease.clone());
                self.writes
                    .push((self.holder(), writer.to_owned(), arrived));
                (StatusCode::OK, lease)
            }
            _ => status(405, "MethodNotAllowed"),
        }
    }
}

fn status(code: u16, reason: &str) -> (StatusCode, Value) {
    (
        StatusCode::from_u16(code).expect("status code"),
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code, "message": reason}),
    )
}

struct Replica {
    elector: Elector,
    gate: Gate,
    fault: Arc<Mutex<Fault>>,
}

impl Replica {
    fn start(identity: &str, store: &Arc<Mutex<Store>>) -> Replica {
        let fault = Arc::new(Mutex::new(Fault::None));
        let client = serve(identity, store.clone(), fault.clone());
        let elector = Elector::spawn(
            Api::namespaced(client, "ops"),
            NAME,
            identity,
            Timing::default(),
        );
        Replica {
            gate: elector.gate(),
            elector,
            fault,
        }
    }

    fn fail(&self, fault: Fault) {
        *self.fault.lock().expect("fault lock") = fault;
    }

    fn acts(&self) -> bool {
        self.gate.is_open()
    }
}

fn serve(identity: &str, store: Arc<Mutex<Store>>, fault: Arc<Mutex<Fault>>) -> Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let identity = identity.to_owned();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            assert!(
                parts.uri.path().contains("/namespaces/ops/leases"),
                "unexpected call {}",
                parts.uri
            );
            let bytes = body.collect_bytes().await.expect("request body");
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let store = store.clone();
            let identity = identity.clone();
            let fault = *fault.lock().expect("fault lock");
            let arrived = Instant::now();
            tokio::spawn(async move {
                let (code, answer) = match fault {
                    Fault::None => store.lock().expect("store").answer(
                        &parts.method,
                        &body,
                        &identity,
                        arrived,
                    ),
                    Fault::Unavailable => status(503, "ServiceUnavailable"),
                    Fault::AnswerLost => {
                        store.lock().expect("store").answer(
                            &parts.method,
                            &body,
                            &identity,
                            arrived,
                        );
                        status(503, "ServiceUnavailable")
                    }
                    Fault::Conflict if parts.method != Method::GET => status(409, "Conflict"),
                    Fault::Conflict => store.lock().expect("store").answer(
                        &parts.method,
                        &body,
                        &identity,
                        arrived,
                    ),
                    Fault::Delayed(delay) => {
                        tokio::time::sleep(delay).await;
                        store.lock().expect("store").answer(
                            &parts.method,
                            &body,
                            &identity,
                            arrived,
                        )
                    }
                };
                let response = Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&answer).expect("json")))
                    .expect("response");
                send.send_response(response);
            });
        }
    });
    Client::new(service, "default")
}

/// Samples both replicas every 10 ms for `duration`, failing on any instant where both act.
/// Returns the instants at which each replica started acting (one that already acts does not count).
async fn watch_pair(a: &Replica, b: &Replica, duration: Duration) -> (Vec<Instant>, Vec<Instant>) {
    let end = Instant::now() + duration;
    let (mut a_was, mut b_was) = (a.acts(), b.acts());
    let (mut a_started, mut b_started) = (Vec::new(), Vec::new());
    while Instant::now() < end {
        let (a_acts, b_acts) = (a.acts(), b.acts());
        assert!(!(a_acts && b_acts), "both replicas act at once");
        if a_acts && !a_was {
            a_started.push(Instant::now());
        }
        if b_acts && !b_was {
            b_started.push(Instant::now());
        }
        (a_was, b_was) = (a_acts, b_acts);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (a_started, b_started)
}

/// When `writer`'s last write that arrived before `before` was sent.
fn last_write(store: &Arc<Mutex<Store>>, writer: &str, before: Instant) -> Instant {
    store
        .lock()
        .expect("store")
        .writes
        .iter()
        .rev()
        .find(|(_, w, at)| w == writer && *at <= before)
        .map(|(_, _, at)| *at)
        .expect("a write")
}

/// A leads, B stands by.
async fn a_leads(store: &Arc<Mutex<Store>>) -> (Replica, Replica) {
    let a = Replica::start("a", store);
    let mut gate = a.gate.clone();
    tokio::time::timeout(Duration::from_secs(5), gate.opened())
        .await
        .expect("a single candidate acquires a free Lease at once");
    let b = Replica::start("b", store);
    let (a_started, b_started) = watch_pair(&a, &b, Duration::from_secs(30)).await;
    assert!(a.acts() && a_started.is_empty() && b_started.is_empty());
    assert_eq!(store.lock().expect("store").holder().as_deref(), Some("a"));
    (a, b)
}

#[tokio::test(start_paused = true)]
async fn a_leader_cut_off_by_503s_stops_before_the_standby_takes_over() {
    let store = Arc::new(Mutex::new(Store::default()));
    let (a, b) = a_leads(&store).await;
    let cut = Instant::now();
    a.fail(Fault::Unavailable);
    let mut gate = a.gate.clone();
    gate.closed().await;
    let renew_deadline = Timing::default().renew_deadline;
    assert!(!a.acts());
    assert!(Instant::now() <= last_write(&store, "a", Instant::now()) + renew_deadline);
    let (a_started, b_started) = watch_pair(&a, &b, Duration::from_secs(40)).await;
    assert!(a_started.is_empty());
    assert_eq!(b_started.len(), 1, "the standby takes over once");
    let takeover = b_started[0] - cut;
    // The leader's last renewal was sent at most one retry period before the cut; the standby waits
    // a lease duration after the last change it saw.
    assert!(
        takeover >= Duration::from_secs(13) && takeover <= Duration::from_secs(20),
        "{takeover:?}"
    );

    // The fault clears: the old leader, a candidate again, leaves the new leader alone.
    a.fail(Fault::None);
    let (a_started, b_started) = watch_pair(&a, &b, Duration::from_secs(60)).await;
    assert!(a_started.is_empty() && b_started.is_empty() && b.acts());
    let store = store.lock().expect("store");
    assert_eq!(store.holder().as_deref(), Some("b"));
    let after_takeover = store
        .writes
        .iter()
        .skip_while(|(holder, _, _)| holder.as_deref() != Some("b"));
    assert!(
        after_takeover.clone().all(|(_, writer, _)| writer == "b"),
        "{:?}",
        store.writes
    );
}

#[tokio::test(start_paused = true)]
async fn the_leader_stops_acting_at_the_renew_deadline_even_with_a_renewal_in_flight() {
    let store = Arc::new(Mutex::new(Store::default()));
    let (a, b) = a_leads(&store).await;
    // Slow but successful renewals first (3 s each), then renewals that hang for a minute and are
    // carried out afterwards: the "60-second-old renewal" of the report.
    a.fail(Fault::Delayed(Duration::from_secs(3)));
    watch_pair(&a, &b, Duration::from_secs(10)).await;
    assert!(a.acts());
    let cut = Instant::now();
    a.fail(Fault::Delayed(Duration::from_secs(60)));
    let mut gate = a.gate.clone();
    gate.closed().await;
    assert!(!a.acts());
    // The term is counted from when the last successful renewal was sent, not from its answer.
    let renewed = last_write(&store, "a", cut);
    assert!(Instant::now() <= renewed + Timing::default().renew_deadline);
    let (a_started, b_started) = watch_pair(&a, &b, Duration::from_secs(90)).await;
    assert!(a_started.is_empty(), "the old leader never acts again");
    assert_eq!(b_started.len(), 1);
    // The stale renewals landed after the takeover and were refused (409): B still holds it.
    let store = store.lock().expect("store");
    assert_eq!(store.holder().as_deref(), Some("b"));
    assert!(b.acts());
}

#[tokio::test(start_paused = true)]
async fn a_conflict_on_renewal_stops_the_leader_at_once() {
    let store = Arc::new(Mutex::new(Store::default()));
    let (a, b) = a_leads(&store).await;
    a.fail(Fault::Conflict);
    let cut = Instant::now();
    let mut gate = a.gate.clone();
    gate.closed().await;
    // The next renewal (every 2 s) gets the 409; no waiting for the deadline.
    assert!(Instant::now() - cut <= Duration::from_secs(3));
    let (_, b_started) = watch_pair(&a, &b, Duration::from_secs(40)).await;
    // A still appears as holder in the store, so B takes over only after a full lease duration.
    assert_eq!(b_started.len(), 1);
    assert!(b.acts() && !a.acts());
}

#[tokio::test(start_paused = true)]
async fn lost_answers_do_not_make_two_leaders() {
    let store = Arc::new(Mutex::new(Store::default()));
    let (a, b) = a_leads(&store).await;
    // Renewals succeed on the server but the leader never hears it; B keeps seeing new versions.
    a.fail(Fault::AnswerLost);
    let (a_started, b_started) = watch_pair(&a, &b, Duration::from_secs(60)).await;
    assert!(!a.acts(), "no renewal the leader knows of: it stopped");
    assert!(a_started.is_empty());
    // A's first lost renewal committed, so its later ones (same version) are refused; B takes over
    // a lease duration after that last change.
    assert_eq!(b_started.len(), 1);
    a.fail(Fault::None);
    let (a_started, _) = watch_pair(&a, &b, Duration::from_secs(30)).await;
    assert!(a_started.is_empty() && b.acts());
}

#[tokio::test(start_paused = true)]
async fn shutdown_hands_over_at_once_and_never_releases_a_lease_held_by_another() {
    let store = Arc::new(Mutex::new(Store::default()));
    let (a, b) = a_leads(&store).await;
    let stop = Instant::now();
    let Replica { elector, gate, .. } = a;
    elector.shutdown().await;
    assert!(!gate.is_open());
    {
        let store = store.lock().expect("store");
        let last_of_a = store
            .writes
            .iter()
            .rev()
            .find(|(_, writer, _)| writer == "a");
        assert!(
            last_of_a.is_some_and(|(holder, _, _)| holder.is_none()),
            "released: {:?}",
            store.writes
        );
    }
    let mut gate = b.gate.clone();
    gate.opened().await;
    assert!(
        Instant::now() - stop <= Duration::from_secs(3),
        "the standby takes a released Lease on its next attempt"
    );

    // B loses the Lease while cut off; A' takes over; B's shutdown must not touch A's Lease.
    let a = Replica::start("a2", &store);
    b.fail(Fault::Unavailable);
    let (_, _) = watch_pair(&a, &b, Duration::from_secs(40)).await;
    assert!(a.acts());
    b.fail(Fault::None);
    b.elector.shutdown().await;
    let store = store.lock().expect("store");
    assert_eq!(store.holder().as_deref(), Some("a2"));
    let since_a2 = store
        .writes
        .iter()
        .skip_while(|(holder, _, _)| holder.as_deref() != Some("a2"));
    assert!(
        since_a2.clone().all(|(_, writer, _)| writer == "a2"),
        "{:?}",
        store.writes
    );
}
