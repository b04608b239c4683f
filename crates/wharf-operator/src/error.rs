//! Errors of the operator, each with the context needed to act on it.

use crate::render::RenderError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot render the children of {app}: {source}")]
    Render { app: String, source: RenderError },
    #[error("{verb} {kind} {namespace}/{name} failed: {source}")]
    Api {
        verb: &'static str,
        kind: String,
        namespace: String,
        name: String,
        source: Box<kube::Error>,
    },
    #[error("cannot list the pods of {app}: {source}")]
    ListPods {
        app: String,
        source: Box<kube::Error>,
    },
    #[error("cannot serialize {kind} {name} for apply: {source}")]
    Serialize {
        kind: String,
        name: String,
        source: serde_json::Error,
    },
    #[error("cannot reach the Kubernetes API: {0}")]
    Client(#[source] Box<kube::Error>),
    #[error("cannot load the Kubernetes client configuration: {0}")]
    Config(#[source] kube::config::InferConfigError),
    #[error("leader election failed: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    #[error("lost the leader lease; exiting so another replica takes over")]
    LostLease,
    #[error("cannot serve {what} on {addr}: {source}")]
    Listen {
        what: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot set up telemetry: {0}")]
    Telemetry(String),
    #[error("cannot serialize the CRD: {0}")]
    CrdYaml(String),
    #[error("cannot write to stdout: {0}")]
    Stdout(#[source] std::io::Error),
}

impl Error {
    /// HTTP status of the API server's answer, when there was one.
    pub fn api_code(&self) -> Option<u16> {
        match self {
            Error::Api { source, .. } | Error::ListPods { source, .. } => match source.as_ref() {
                kube::Error::Api(status) => Some(status.code),
                _ => None,
            },
            _ => None,
        }
    }

    /// CamelCase reason for the `Degraded` condition and the Event.
    pub fn reason(&self) -> &'static str {
        match (self, self.api_code()) {
            (
                Error::Render {
                    source: RenderError::Spec(_),
                    ..
                },
                _,
            )
            | (_, Some(422)) => "InvalidSpec",
            (_, Some(409)) => "Conflict",
            (_, Some(403)) => "Forbidden",
            _ => "ReconcileFailed",
        }
    }

    /// Errors that will recur unchanged until the WsgiApp changes; retrying them hot only loads the
    /// API server.
    pub fn is_permanent(&self) -> bool {
        self.reason() == "InvalidSpec"
    }
}
