//! The operator renders wharf's command line into every Deployment it creates; a flag it
//! renders that the server does not accept would crash every pod at start. This checks the
//! operator's golden renderings (regenerated from its renderer and compared by its own tests)
//! against the server's parser, without either crate depending on the other.

use std::path::Path;

use clap::Parser;
use serde_json::Value;

use crate::config::Config;

/// `args` of the app container of every Deployment in one golden file.
fn app_container_args(yaml: &str) -> Vec<Vec<String>> {
    let documents: Vec<Value> = serde_saphyr::from_multiple(yaml).unwrap_or_default();
    documents
        .iter()
        .filter(|doc| doc["kind"] == "Deployment")
        .filter_map(|doc| doc["spec"]["template"]["spec"]["containers"].as_array())
        .flatten()
        .filter(|container| container["name"] == "wharf")
        .map(|container| {
            let args = container["args"].as_array().map(Vec::as_slice).unwrap_or_default();
            args.iter().filter_map(Value::as_str).map(str::to_owned).collect()
        })
        .collect()
}

#[test]
fn every_rendered_command_line_parses() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wharf-operator/tests/golden");
    let mut checked = 0;
    for entry in std::fs::read_dir(&golden).expect("the operator's golden files") {
        let path = entry.expect("directory entry").path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let yaml = std::fs::read_to_string(&path).expect("readable golden file");
        for args in app_container_args(&yaml) {
            assert!(args.iter().any(|a| a == "--bind"), "{}: no --bind in {args:?}", path.display());
            let config = Config::try_parse_from(std::iter::once("wharf".to_owned()).chain(args.iter().cloned()))
                .unwrap_or_else(|err| panic!("{}: wharf rejects {args:?}:\n{err}", path.display()));
            assert_eq!(config.app_target().err(), None, "{}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} rendered command lines found under {}", golden.display());
}
