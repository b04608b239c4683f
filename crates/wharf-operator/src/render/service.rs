//! spec → Service.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Target, labels, object_meta};

pub fn render(t: &Target) -> Service {
    let spec = &t.app.spec;
    let mut meta = object_meta(t);
    if !spec.service.annotations.is_empty() {
        meta.annotations = Some(spec.service.annotations.clone());
    }
    Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            type_: Some(spec.service.type_.as_str().to_owned()),
            selector: Some(labels::selector(t.name)),
            ports: Some(vec![
                ServicePort {
                    name: Some("http".to_owned()),
                    port: spec.service.port,
                    target_port: Some(IntOrString::String("http".to_owned())),
                    protocol: Some("TCP".to_owned()),
                    app_protocol: Some("http".to_owned()),
                    ..ServicePort::default()
                },
                ServicePort {
                    name: Some("metrics".to_owned()),
                    port: spec.server.admin_port,
                    target_port: Some(IntOrString::String("admin".to_owned())),
                    protocol: Some("TCP".to_owned()),
                    app_protocol: Some("http".to_owned()),
                    ..ServicePort::default()
                },
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// In-cluster URL of the Service, as reported in `status.url`.
pub fn url(t: &Target) -> String {
    let port = t.app.spec.service.port;
    let base = format!("http://{}.{}.svc", t.name, t.namespace);
    if port == 80 {
        base
    } else {
        format!("{base}:{port}")
    }
}
