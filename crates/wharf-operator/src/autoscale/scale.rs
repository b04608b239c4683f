//! Replica writes of the autoscaler (and of hand-overs) on the Deployment: server-side apply of
//! `spec.replicas` alone under the `wharf-autoscaler` field manager.

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use super::handover::AUTOSCALER_MANAGER;
use crate::error::Error;

/// Sets the Deployment's `spec.replicas` to `replicas`, taking the field over from whoever had it
/// (force): in the modes that call this, the autoscaler is the field's rightful owner.
pub async fn write_replicas(
    client: &Client,
    namespace: &str,
    name: &str,
    replicas: i32,
) -> Result<(), Error> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let body = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": replicas},
    });
    api.patch(
        name,
        &PatchParams::apply(AUTOSCALER_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map(drop)
    .map_err(|source| Error::Api {
        verb: "scale",
        kind: "Deployment".to_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        source: Box::new(source),
    })
}
