//! Errors of the operator, each with the context needed to act on it.

use crate::render::RenderError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot render the children of {app}: {source}")]
    Render { app: String, source: RenderError },
    #[error("{verb} {kind} {namespace}/{name} failed: {}", describe(source))]
    Api {
        verb: &'static str,
        kind: String,
        namespace: String,
        name: String,
        source: Box<kube::Error>,
    },
    #[error("cannot list the pods of {app}: {}", describe(source))]
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
    #[error("not the leader any more; writes stopped")]
    NotLeader,
    #[error("{what} is not applied until {until}")]
    HeldBack {
        what: &'static str,
        until: &'static str,
    },
    #[error(
        "{field} needs the {kind} kind ({api}), which this cluster does not serve: install {install}, then restart wharf-operator (it looks for the kind at start)"
    )]
    MissingCrd {
        field: &'static str,
        kind: &'static str,
        api: &'static str,
        install: &'static str,
    },
    #[error("the watches of the children have not listed yet (see the warnings about watches)")]
    NotSynced,
    /// Several children failed; each was still attempted (or held back for a reason given).
    #[error("{}", join(.0))]
    Children(Vec<Error>),
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
            Error::Children(errors) => errors.first().and_then(Error::api_code),
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
            (Error::Children(errors), _) => errors.first().map_or("ReconcileFailed", Error::reason),
            (
                Error::Render {
                    source: RenderError::Spec(_) | RenderError::Overrides(_),
                    ..
                },
                _,
            )
            | (_, Some(422)) => "InvalidSpec",
            (Error::MissingCrd { .. }, _) => "MissingCRD",
            (_, Some(409)) => "Conflict",
            (_, Some(403)) => "Forbidden",
            (Error::NotLeader, _) => "NotLeader",
            _ => "ReconcileFailed",
        }
    }

    /// Errors that will recur unchanged until the WsgiApp changes; retrying them hot only loads the
    /// API server.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Children(errors) => errors.iter().all(Error::is_permanent),
            _ => matches!(self.reason(), "InvalidSpec" | "MissingCRD"),
        }
    }
}

/// The API server's own words: its message, reason and HTTP code (kube's `Display` of an API
/// error is a debug dump that repeats the message).
pub fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            let message = if status.message.is_empty() {
                "no message"
            } else {
                status.message.as_str()
            };
            match status.reason.as_str() {
                "" => format!("{message} (HTTP {})", status.code),
                reason => format!("{message} ({reason}, HTTP {})", status.code),
            }
        }
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                let cause_text = cause.to_string();
                if !text.contains(&cause_text) {
                    text = format!("{text}: {cause_text}");
                }
                source = cause.source();
            }
            text
        }
    }
}

fn join(errors: &[Error]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
