//! spec.route → Gateway API HTTPRoute (gateway.networking.k8s.io/v1). The types are the few
//! fields the operator writes: the gateway-api crate's newest release (0.21) is built on kube 3
//! and k8s-openapi 0.27, and its types do not mix with this crate's kube 5 and k8s-openapi 0.29.

use kube::CustomResource;
use serde::{Deserialize, Serialize};

use super::{Target, object_meta};

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "HTTPRoute",
    plural = "httproutes",
    namespaced,
    derive = "PartialEq",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteSpec {
    pub parent_refs: Vec<GatewayRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    pub rules: Vec<HTTPRouteRule>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GatewayRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteRule {
    pub matches: Vec<HTTPRouteMatch>,
    pub backend_refs: Vec<BackendRef>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct HTTPRouteMatch {
    pub path: PathMatch,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct PathMatch {
    #[serde(rename = "type")]
    pub type_: String,
    pub value: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct BackendRef {
    pub name: String,
    pub port: i32,
}

/// `None` without `spec.route`, meaning an existing HTTPRoute must be deleted.
pub fn render(t: &Target) -> Option<HTTPRoute> {
    let spec = t.app.spec.route.as_ref()?;
    let mut meta = object_meta(t);
    if !spec.annotations.is_empty() {
        meta.annotations = Some(spec.annotations.clone());
    }
    Some(HTTPRoute {
        metadata: meta,
        spec: HTTPRouteSpec {
            parent_refs: spec
                .parent_refs
                .iter()
                .map(|p| GatewayRef {
                    name: p.name.clone(),
                    namespace: p.namespace.clone(),
                    section_name: p.section_name.clone(),
                    port: p.port,
                })
                .collect(),
            hostnames: spec.hostnames.clone(),
            rules: vec![HTTPRouteRule {
                matches: spec
                    .paths
                    .iter()
                    .map(|path| HTTPRouteMatch {
                        path: PathMatch {
                            type_: "PathPrefix".to_owned(),
                            value: path.clone(),
                        },
                    })
                    .collect(),
                // A Service backend takes the Service port, not the pod's.
                backend_refs: vec![BackendRef {
                    name: t.name.to_owned(),
                    port: t.app.spec.service.port,
                }],
            }],
        },
    })
}

/// The external URL the route gives the app, when it names a host.
pub fn url(t: &Target) -> Option<String> {
    let spec = t.app.spec.route.as_ref()?;
    // A wildcard host names no address to link to.
    let host = spec.hostnames.iter().find(|h| !h.starts_with('*'))?;
    let scheme = if spec.https { "https" } else { "http" };
    let path = spec.paths.first().map_or("/", String::as_str);
    Some(format!("{scheme}://{host}{path}"))
}
