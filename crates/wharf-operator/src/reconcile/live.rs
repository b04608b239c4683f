//! The children as the watches last saw them: reflector stores filled by the controller's own
//! watches, so a reconcile reads what exists without a request. The ConfigMaps and Secrets are
//! watched as metadata only: their `resourceVersion` tells when to read their data again.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::store::{Writer, WriterDropped};
use kube::runtime::reflector::{self, ObjectRef, Store};

use crate::error::Error;
use crate::render::gateway::HTTPRoute;
use crate::render::monitor::PodMonitor;

/// Which kinds of other projects' CRDs the cluster serves (found by discovery at start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Optional {
    /// Gateway API `HTTPRoute` (gateway.networking.k8s.io/v1).
    pub routes: bool,
    /// Prometheus Operator `PodMonitor` (monitoring.coreos.com/v1).
    pub pod_monitors: bool,
}

/// Read side, held by the reconciler.
#[derive(Clone)]
pub struct Live {
    pub(crate) deployments: Store<Deployment>,
    pub(crate) services: Store<Service>,
    pub(crate) hpas: Store<HorizontalPodAutoscaler>,
    pub(crate) pdbs: Store<PodDisruptionBudget>,
    pub(crate) ingresses: Store<Ingress>,
    pub(crate) network_policies: Store<NetworkPolicy>,
    pub(crate) jobs: Store<Job>,
    /// `None` when the cluster has no such CRD.
    pub(crate) routes: Option<Store<HTTPRoute>>,
    pub(crate) pod_monitors: Option<Store<PodMonitor>>,
    pub(crate) config_maps: Store<PartialObjectMeta<ConfigMap>>,
    pub(crate) secrets: Store<PartialObjectMeta<Secret>>,
}

/// Write side, fed by the watches (or by a test).
pub struct LiveWriters {
    pub deployments: Writer<Deployment>,
    pub services: Writer<Service>,
    pub hpas: Writer<HorizontalPodAutoscaler>,
    pub pdbs: Writer<PodDisruptionBudget>,
    pub ingresses: Writer<Ingress>,
    pub network_policies: Writer<NetworkPolicy>,
    pub jobs: Writer<Job>,
    pub routes: Option<Writer<HTTPRoute>>,
    pub pod_monitors: Option<Writer<PodMonitor>>,
    pub config_maps: Writer<PartialObjectMeta<ConfigMap>>,
    pub secrets: Writer<PartialObjectMeta<Secret>>,
}

pub fn stores(optional: Optional) -> (Live, LiveWriters) {
    let (deployments, deployments_w) = reflector::store();
    let (services, services_w) = reflector::store();
    let (hpas, hpas_w) = reflector::store();
    let (pdbs, pdbs_w) = reflector::store();
    let (ingresses, ingresses_w) = reflector::store();
    let (network_policies, network_policies_w) = reflector::store();
    let (jobs, jobs_w) = reflector::store();
    let (routes, routes_w) = optional_store(optional.routes);
    let (pod_monitors, pod_monitors_w) = optional_store(optional.pod_monitors);
    let (config_maps, config_maps_w) = reflector::store();
    let (secrets, secrets_w) = reflector::store();
    (
        Live {
            deployments,
            services,
            hpas,
            pdbs,
            ingresses,
            network_policies,
            jobs,
            routes,
            pod_monitors,
            config_maps,
            secrets,
        },
        LiveWriters {
            deployments: deployments_w,
            services: services_w,
            hpas: hpas_w,
            pdbs: pdbs_w,
            ingresses: ingresses_w,
            network_policies: network_policies_w,
            jobs: jobs_w,
            routes: routes_w,
            pod_monitors: pod_monitors_w,
            config_maps: config_maps_w,
            secrets: secrets_w,
        },
    )
}

fn optional_store<K>(present: bool) -> (Option<Store<K>>, Option<Writer<K>>)
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    if present {
        let (store, writer) = reflector::store();
        (Some(store), Some(writer))
    } else {
        (None, None)
    }
}

impl LiveWriters {
    /// Tells every store that its watch has listed once (for tests that feed the stores by hand).
    pub fn all_listed(&mut self) {
        use kube::runtime::watcher::Event;
        self.deployments.apply_watcher_event(&Event::InitDone);
        self.services.apply_watcher_event(&Event::InitDone);
        self.hpas.apply_watcher_event(&Event::InitDone);
        self.pdbs.apply_watcher_event(&Event::InitDone);
        self.ingresses.apply_watcher_event(&Event::InitDone);
        self.network_policies.apply_watcher_event(&Event::InitDone);
        self.jobs.apply_watcher_event(&Event::InitDone);
        if let Some(routes) = &mut self.routes {
            routes.apply_watcher_event(&Event::InitDone);
        }
        if let Some(monitors) = &mut self.pod_monitors {
            monitors.apply_watcher_event(&Event::InitDone);
        }
        self.config_maps.apply_watcher_event(&Event::InitDone);
        self.secrets.apply_watcher_event(&Event::InitDone);
    }
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
        self.pdbs.wait_until_ready().await?;
        self.ingresses.wait_until_ready().await?;
        self.network_policies.wait_until_ready().await?;
        self.jobs.wait_until_ready().await?;
        if let Some(routes) = &self.routes {
            routes.wait_until_ready().await?;
        }
        if let Some(monitors) = &self.pod_monitors {
            monitors.wait_until_ready().await?;
        }
        self.config_maps.wait_until_ready().await?;
        self.secrets.wait_until_ready().await
    }
}

pub(crate) fn key<K>(name: &str, namespace: &str) -> ObjectRef<K>
where
    K: kube::Resource<DynamicType = ()>,
{
    ObjectRef::new(name).within(namespace)
}
