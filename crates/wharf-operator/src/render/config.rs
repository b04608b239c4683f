//! The ConfigMaps and Secrets a WsgiApp's pods read (env, envFrom, volumes of every container),
//! and the digest of their data that goes into the pod template so a change of content rolls the
//! pods.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, Volume};
use sha2::{Digest, Sha256};

use crate::crd::WsgiAppSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigKind {
    ConfigMap,
    Secret,
}

impl ConfigKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigKind::ConfigMap => "ConfigMap",
            ConfigKind::Secret => "Secret",
        }
    }
}

/// A ConfigMap or Secret in the WsgiApp's namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigRef {
    pub kind: ConfigKind,
    pub name: String,
}

/// Every ConfigMap and Secret the pods reference, sorted.
pub fn references(spec: &WsgiAppSpec) -> BTreeSet<ConfigRef> {
    let mut refs = BTreeSet::new();
    let mut add = |kind, name: &str| {
        if !name.is_empty() {
            refs.insert(ConfigRef {
                kind,
                name: name.to_owned(),
            });
        }
    };
    let app_env = spec.env.iter();
    let container_env = spec
        .init_containers
        .iter()
        .chain(&spec.sidecars)
        .flat_map(|c: &Container| c.env.iter().flatten());
    for var in app_env.chain(container_env) {
        if let Some(from) = &var.value_from {
            if let Some(key) = &from.config_map_key_ref {
                add(ConfigKind::ConfigMap, &key.name);
            }
            if let Some(key) = &from.secret_key_ref {
                add(ConfigKind::Secret, &key.name);
            }
        }
    }
    let container_env_from = spec
        .init_containers
        .iter()
        .chain(&spec.sidecars)
        .flat_map(|c| c.env_from.iter().flatten());
    for source in spec.env_from.iter().chain(container_env_from) {
        if let Some(cm) = &source.config_map_ref {
            add(ConfigKind::ConfigMap, &cm.name);
        }
        if let Some(secret) = &source.secret_ref {
            add(ConfigKind::Secret, &secret.name);
        }
    }
    for volume in &spec.volumes {
        volume_refs(volume, &mut add);
    }
    refs
}

fn volume_refs(volume: &Volume, add: &mut impl FnMut(ConfigKind, &str)) {
    if let Some(cm) = &volume.config_map {
        add(ConfigKind::ConfigMap, &cm.name);
    }
    if let Some(name) = volume
        .secret
        .as_ref()
        .and_then(|s| s.secret_name.as_deref())
    {
        add(ConfigKind::Secret, name);
    }
    for source in volume
        .projected
        .as_ref()
        .and_then(|p| p.sources.as_ref())
        .into_iter()
        .flatten()
    {
        if let Some(cm) = &source.config_map {
            add(ConfigKind::ConfigMap, &cm.name);
        }
        if let Some(secret) = &source.secret {
            add(ConfigKind::Secret, &secret.name);
        }
    }
}

/// Digest of one object's content: its `data` and `binaryData`, by key (`section`, key, value).
pub fn data_digest<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str, &'a [u8])>) -> String {
    let mut hasher = Sha256::new();
    for (section, key, value) in entries {
        // Lengths first, so no two different maps hash the same bytes.
        hasher.update(format!("{section}:{}:{}:", key.len(), value.len()));
        hasher.update(key.as_bytes());
        hasher.update(value);
    }
    super::short_hex(&hasher.finalize())
}

/// Digest of every referenced object's digest (`None`: it does not exist), for the pod template's
/// `wharf.dev/config-hash`. `None` when nothing is referenced, so such apps carry no annotation.
pub fn config_hash(contents: &BTreeMap<ConfigRef, Option<String>>) -> Option<String> {
    if contents.is_empty() {
        return None;
    }
    let mut hasher = Sha256::new();
    for (reference, digest) in contents {
        hasher.update(format!(
            "{}/{}={};",
            reference.kind.as_str(),
            reference.name,
            digest.as_deref().unwrap_or("absent")
        ));
    }
    Some(super::short_hex(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_kind_of_reference_is_found_once() {
        let spec: WsgiAppSpec = serde_json::from_value(json!({
            "image": "i", "app": "a:b",
            "env": [
                {"name": "DB", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}},
                {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
                {"name": "PLAIN", "value": "x"}
            ],
            "envFrom": [{"configMapRef": {"name": "settings"}}, {"secretRef": {"name": "api-keys"}}],
            "volumes": [
                {"name": "certs", "secret": {"secretName": "tls"}},
                {"name": "conf", "configMap": {"name": "nginx"}},
                {"name": "both", "projected": {"sources": [{"configMap": {"name": "p-cm"}}, {"secret": {"name": "p-s"}}]}},
                {"name": "uploads", "persistentVolumeClaim": {"claimName": "uploads"}}
            ],
            "sidecars": [{"name": "proxy", "image": "p", "envFrom": [{"secretRef": {"name": "proxy"}}]}],
            "initContainers": [{"name": "wait", "image": "w", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "init", "key": "k"}}}]}]
        }))
        .expect("spec");
        let found: Vec<String> = references(&spec)
            .into_iter()
            .map(|r| format!("{}/{}", r.kind.as_str(), r.name))
            .collect();
        assert_eq!(
            found,
            [
                "ConfigMap/init",
                "ConfigMap/nginx",
                "ConfigMap/p-cm",
                "ConfigMap/settings",
                "Secret/api-keys",
                "Secret/db",
                "Secret/p-s",
                "Secret/proxy",
                "Secret/tls"
            ]
        );
    }

    #[test]
    fn the_hash_follows_content_and_existence() {
        let one = |v: &'static str| data_digest([("data", "k", v.as_bytes())]);
        assert_ne!(one("a"), one("b"));
        assert_ne!(one("a"), data_digest([("binaryData", "k", "a".as_bytes())]));
        assert_ne!(
            data_digest([("data", "ab", "c".as_bytes())]),
            data_digest([("data", "a", "bc".as_bytes())])
        );
        let reference = ConfigRef {
            kind: ConfigKind::Secret,
            name: "db".into(),
        };
        let with = |d: Option<String>| config_hash(&BTreeMap::from([(reference.clone(), d)]));
        let a = with(Some(one("a")));
        assert_eq!(a, with(Some(one("a"))));
        assert_ne!(a, with(Some(one("b"))));
        assert_ne!(a, with(None));
        assert_eq!(config_hash(&BTreeMap::new()), None);
    }
}
