//! The controller's watch streams: WsgiApps (changes of `spec` only), and our own children, each
//! mirrored into a reflector store the reconciler reads. A watch that cannot list (CRD missing,
//! RBAC missing) is reported at warn, once a minute per distinct error.

use std::fmt::Debug;
use std::hash::Hash;
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use kube::core::{GroupVersionKind, PartialObjectMeta};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::crd::WsgiApp;
use crate::error::describe;
use crate::reconcile::live::Optional;
use crate::render::config::{ConfigKind, ConfigRef, references};
use crate::render::labels;

/// Repeated reports of the same watch error are held back this long.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// WsgiApps, mirrored into the returned store. Only events that change `metadata.generation` (the
/// spec) reach the reconciler: the operator's own status writes do not trigger it again.
pub(crate) fn apps(
    client: &Client,
    namespace: Option<&str>,
) -> (
    Store<WsgiApp>,
    BoxStream<'static, Result<WsgiApp, watcher::Error>>,
) {
    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(
            api::<WsgiApp>(client, namespace),
            watcher::Config::default().any_semantic(),
        ),
    )
    .default_backoff()
    .inspect_err(rate_limited_warning("WsgiApps (is the CRD installed?)"))
    .applied_objects()
    .predicate_filter(predicates::generation, Default::default())
    .boxed();
    (reader, stream)
}

/// Children labelled as managed by us, mirrored into `writer`'s store. Every change and deletion
/// triggers the owner, so a deleted child comes back at once.
pub(crate) fn children<K>(
    client: &Client,
    namespace: Option<&str>,
    writer: Writer<K>,
) -> BoxStream<'static, Result<K, watcher::Error>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    // Only our own children are watched, which keeps the caches small on busy clusters.
    let owned =
        watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, labels::MANAGER));
    let what = format!("{}s", K::kind(&()));
    reflector(writer, watcher(api::<K>(client, namespace), owned))
        .default_backoff()
        .inspect_err(rate_limited_warning(&what))
        .touched_objects()
        .boxed()
}

/// ConfigMaps or Secrets, metadata only (no Secret data in memory), mirrored into `writer`'s store.
pub(crate) fn config_metadata<K>(
    client: &Client,
    namespace: Option<&str>,
    writer: Writer<PartialObjectMeta<K>>,
) -> BoxStream<'static, Result<PartialObjectMeta<K>, watcher::Error>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let what = format!("{}s", K::kind(&()));
    reflector(
        writer,
        // An Api of PartialObjectMeta makes metadata-only requests.
        watcher(
            api::<PartialObjectMeta<K>>(client, namespace),
            watcher::Config::default(),
        )
        // Only the resourceVersion is read; managed fields are most of a metadata object.
        .map_ok(|event| event.modify(|meta| meta.managed_fields_mut().clear())),
    )
    .default_backoff()
    .inspect_err(rate_limited_warning(&what))
    .touched_objects()
    .boxed()
}

/// Maps a changed ConfigMap or Secret to the WsgiApps whose pods reference it.
pub(crate) fn referencing<K>(
    apps: Store<WsgiApp>,
    kind: ConfigKind,
) -> impl Fn(PartialObjectMeta<K>) -> Vec<ObjectRef<WsgiApp>> + Send + Sync + 'static
where
    K: Resource<DynamicType = ()>,
{
    move |meta| {
        let wanted = ConfigRef {
            kind,
            name: meta.name_any(),
        };
        let namespace = meta.namespace();
        apps.state()
            .iter()
            .filter(|app| app.namespace() == namespace)
            .filter(|app| references(&app.spec).contains(&wanted))
            .map(|app| ObjectRef::from(app.as_ref()))
            .collect()
    }
}

/// Which optional kinds the API server serves; a failed lookup counts as absent (logged).
pub(crate) async fn discover(client: &Client) -> Optional {
    let serves = |group: &'static str, kind: &'static str| async move {
        let gvk = GroupVersionKind::gvk(group, "v1", kind);
        match kube::discovery::pinned_kind(client, &gvk).await {
            Ok(_) => true,
            Err(error) => {
                tracing::info!(error = %describe(&error), "{kind} ({group}/v1) not served; its WsgiApp fields will be reported as unavailable");
                false
            }
        }
    };
    Optional {
        routes: serves("gateway.networking.k8s.io", "HTTPRoute").await,
        pod_monitors: serves("monitoring.coreos.com", "PodMonitor").await,
    }
}

fn rate_limited_warning(what: &str) -> impl FnMut(&watcher::Error) + Send + 'static {
    let what = what.to_owned();
    let mut last: Option<(String, Instant)> = None;
    move |error| {
        let text = match error {
            watcher::Error::InitialListFailed(e)
            | watcher::Error::WatchStartFailed(e)
            | watcher::Error::WatchFailed(e) => describe(e),
            watcher::Error::WatchError(status) => describe(&kube::Error::Api(status.clone())),
            watcher::Error::NoResourceVersion => error.to_string(),
        };
        let repeated = last
            .as_ref()
            .is_some_and(|(previous, at)| *previous == text && at.elapsed() < WARN_EVERY);
        if !repeated {
            tracing::warn!(error = %text, "cannot watch {what}; retrying with backoff. Check the CRD and the operator's RBAC (list, watch)");
            last = Some((text, Instant::now()));
        }
    }
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

#[cfg(test)]
mod tests {
    use ::http::{Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn discovery_finds_the_served_kinds_only() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let (status, body) = match request.uri().path() {
                    "/apis/gateway.networking.k8s.io/v1" => (
                        StatusCode::OK,
                        json!({"kind": "APIResourceList", "apiVersion": "v1",
                               "groupVersion": "gateway.networking.k8s.io/v1", "resources": [
                            {"name": "httproutes", "singularName": "httproute", "namespaced": true,
                             "kind": "HTTPRoute", "verbs": ["get", "list", "watch", "create", "patch", "delete"]}
                        ]}),
                    ),
                    _ => (
                        StatusCode::NOT_FOUND,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                               "reason": "NotFound", "code": 404, "message": "the server could not find the requested resource"}),
                    ),
                };
                let response = Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&body).expect("json")))
                    .expect("response");
                send.send_response(response);
            }
        });
        let found = discover(&Client::new(service, "default")).await;
        assert_eq!(
            found,
            Optional {
                routes: true,
                pod_monitors: false
            }
        );
    }
}
