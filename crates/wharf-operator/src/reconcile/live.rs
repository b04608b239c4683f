//! The children as the watches last saw them: reflector stores filled by the controller's own
//! watches, so a reconcile reads what exists without a request.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::reflector::store::{Writer, WriterDropped};
use kube::runtime::reflector::{self, ObjectRef, Store};

use crate::error::Error;

/// Read side, held by the reconciler.
#[derive(Clone)]
pub struct Live {
    pub(crate) deployments: Store<Deployment>,
    pub(crate) services: Store<Service>,
    pub(crate) hpas: Store<HorizontalPodAutoscaler>,
    pub(crate) pdbs: Store<PodDisruptionBudget>,
}

/// Write side, fed by the watches (or by a test).
pub struct LiveWriters {
    pub deployments: Writer<Deployment>,
    pub services: Writer<Service>,
    pub hpas: Writer<HorizontalPodAutoscaler>,
    pub pdbs: Writer<PodDisruptionBudget>,
}

pub fn stores() -> (Live, LiveWriters) {
    let (deployments, deployments_w) = reflector::store();
    let (services, services_w) = reflector::store();
    let (hpas, hpas_w) = reflector::store();
    let (pdbs, pdbs_w) = reflector::store();
    (
        Live {
            deployments,
            services,
            hpas,
            pdbs,
        },
        LiveWriters {
            deployments: deployments_w,
            services: services_w,
            hpas: hpas_w,
            pdbs: pdbs_w,
        },
    )
}

impl Live {
    /// Waits (bounded) until every watch has listed once: before that, an absent child may just
    /// not have been seen yet, and deciding on it would create or delete wrongly.
    pub(crate) async fn synced(&self, within: Duration) -> Result<(), Error> {
        match tokio::time::timeout(within, self.wait_synced()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(Error::NotSynced),
        }
    }

    /// Resolves once every watch has listed once; an error if a watch was dropped first.
    pub(crate) async fn wait_synced(&self) -> Result<(), WriterDropped> {
        self.deployments.wait_until_ready().await?;
        self.services.wait_until_ready().await?;
        self.hpas.wait_until_ready().await?;
        self.pdbs.wait_until_ready().await
    }
}

pub(crate) fn key<K>(name: &str, namespace: &str) -> ObjectRef<K>
where
    K: kube::Resource<DynamicType = ()>,
{
    ObjectRef::new(name).within(namespace)
}
