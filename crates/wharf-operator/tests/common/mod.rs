//! Fixtures shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use wharf_operator::crd::WsgiApp;

pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn repo_dir() -> PathBuf {
    crate_dir().join("../..")
}

/// Representative WsgiApps: the example manifests plus the golden-only inputs.
pub fn cases() -> Vec<(String, PathBuf)> {
    let mut cases = vec![
        (
            "minimal".to_owned(),
            repo_dir().join("deploy/examples/minimal.yaml"),
        ),
        (
            "full".to_owned(),
            repo_dir().join("deploy/examples/full.yaml"),
        ),
        (
            "injected".to_owned(),
            repo_dir().join("deploy/examples/injected.yaml"),
        ),
        (
            "django".to_owned(),
            repo_dir().join("deploy/examples/django/wsgiapp.yaml"),
        ),
    ];
    for name in ["autoscaled", "concurrency", "tracing", "realapp"] {
        cases.push((
            name.to_owned(),
            crate_dir().join(format!("tests/golden/inputs/{name}.yaml")),
        ));
    }
    cases
}

/// The WsgiApp document of a manifest, which may also hold other objects (e.g. its Namespace).
pub fn wsgiapp_document(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.split("\n---\n")
        .find(|d| d.contains("\nkind: WsgiApp"))
        .unwrap_or_else(|| panic!("{}: no WsgiApp", path.display()))
        .to_owned()
}

/// Reads the WsgiApp of a manifest and gives it what the API server would: a uid and a generation.
pub fn load(path: &Path) -> WsgiApp {
    let document = wsgiapp_document(path);
    let mut app: WsgiApp =
        serde_saphyr::from_str(&document).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let name = app.metadata.name.clone().expect("fixture has a name");
    app.metadata.uid = Some(format!("00000000-0000-4000-8000-{:0>12}", name.len()));
    app.metadata.generation = Some(1);
    app
}
