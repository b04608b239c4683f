//! spec.ingress → Ingress (networking.k8s.io/v1) to the Service's `http` port.

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};

use super::{Target, object_meta};

/// `None` without `spec.ingress`, meaning an existing Ingress must be deleted.
pub fn render(t: &Target) -> Option<Ingress> {
    let spec = t.app.spec.ingress.as_ref()?;
    let mut meta = object_meta(t);
    if !spec.annotations.is_empty() {
        meta.annotations = Some(spec.annotations.clone());
    }
    let backend = IngressBackend {
        service: Some(IngressServiceBackend {
            name: t.name.to_owned(),
            port: Some(ServiceBackendPort {
                name: Some("http".to_owned()),
                number: None,
            }),
        }),
        resource: None,
    };
    let paths: Vec<HTTPIngressPath> = spec
        .paths
        .iter()
        .map(|path| HTTPIngressPath {
            path: Some(path.clone()),
            path_type: spec.path_type.as_str().to_owned(),
            backend: backend.clone(),
        })
        .collect();
    Some(Ingress {
        metadata: meta,
        spec: Some(IngressSpec {
            ingress_class_name: spec.class_name.clone(),
            rules: Some(
                spec.hosts
                    .iter()
                    .map(|host| IngressRule {
                        host: Some(host.clone()),
                        http: Some(HTTPIngressRuleValue {
                            paths: paths.clone(),
                        }),
                    })
                    .collect(),
            ),
            tls: spec.tls_secret_name.as_ref().map(|secret| {
                vec![IngressTLS {
                    hosts: Some(spec.hosts.clone()),
                    secret_name: Some(secret.clone()),
                }]
            }),
            default_backend: None,
        }),
        status: None,
    })
}

/// The external URL the Ingress gives the app: its first non-wildcard host and first path.
pub fn url(t: &Target) -> Option<String> {
    let spec = t.app.spec.ingress.as_ref()?;
    let scheme = if spec.tls_secret_name.is_some() {
        "https"
    } else {
        "http"
    };
    // A wildcard host names no address to link to.
    let host = spec.hosts.iter().find(|h| !h.starts_with('*'))?;
    let path = spec.paths.first().map_or("/", String::as_str);
    Some(format!("{scheme}://{host}{path}"))
}
