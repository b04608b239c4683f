//! The digest of the ConfigMaps and Secrets a WsgiApp references. Their metadata comes from the
//! watches; the data is read (one GET) only when an object's `resourceVersion` changed since it
//! was last digested, so a settled app costs no request and no Secret data stays in memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, ResourceExt};

use super::live::key;
use super::{Context, lock};
use crate::crd::WsgiApp;
use crate::error::Error;
use crate::render::config::{self, ConfigKind, ConfigRef};

/// Digest of each object's data, by namespace and reference, with the resourceVersion it was
/// computed for.
#[derive(Default)]
pub(crate) struct Digests(Mutex<HashMap<(String, ConfigRef), (String, String)>>);

/// `wharf.dev/config-hash` for `app`'s pod template; `None` when it references nothing.
pub(crate) async fn config_hash(ctx: &Context, app: &WsgiApp) -> Result<Option<String>, Error> {
    let references = config::references(&app.spec);
    if references.is_empty() {
        return Ok(None);
    }
    let namespace = app.namespace().unwrap_or_default();
    let mut contents = BTreeMap::new();
    for reference in references {
        let version = match reference.kind {
            ConfigKind::ConfigMap => ctx
                .live
                .config_maps
                .get(&key(&reference.name, &namespace))
                .map(|m| m.resource_version()),
            ConfigKind::Secret => ctx
                .live
                .secrets
                .get(&key(&reference.name, &namespace))
                .map(|m| m.resource_version()),
        };
        // Absent (not created yet): the pods cannot start either; its creation rolls them.
        let digest = match version {
            None => None,
            Some(version) => digest(ctx, &namespace, &reference, version).await?,
        };
        contents.insert(reference, digest);
    }
    Ok(config::config_hash(&contents))
}

async fn digest(
    ctx: &Context,
    namespace: &str,
    reference: &ConfigRef,
    version: Option<String>,
) -> Result<Option<String>, Error> {
    let cache_key = (namespace.to_owned(), reference.clone());
    if let Some(version) = &version
        && let Some((seen, digest)) = lock(&ctx.digests.0).get(&cache_key)
        && seen == version
    {
        return Ok(Some(digest.clone()));
    }
    let read = match reference.kind {
        ConfigKind::ConfigMap => {
            let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
            api.get_opt(&reference.name).await.map(|found| {
                found.map(|cm| {
                    let data = cm.data.unwrap_or_default();
                    let binary = cm.binary_data.unwrap_or_default();
                    config::data_digest(
                        data.iter()
                            .map(|(k, v)| ("data", k.as_str(), v.as_bytes()))
                            .chain(
                                binary
                                    .iter()
                                    .map(|(k, v)| ("binaryData", k.as_str(), v.0.as_slice())),
                            ),
                    )
                })
            })
        }
        ConfigKind::Secret => {
            let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
            api.get_opt(&reference.name).await.map(|found| {
                found.map(|secret| {
                    let data = secret.data.unwrap_or_default();
                    config::data_digest(
                        data.iter()
                            .map(|(k, v)| ("data", k.as_str(), v.0.as_slice())),
                    )
                })
            })
        }
    };
    let digest = read.map_err(|source| Error::Api {
        verb: "read",
        kind: reference.kind.as_str().to_owned(),
        namespace: namespace.to_owned(),
        name: reference.name.clone(),
        source: Box::new(source),
    })?;
    if let (Some(version), Some(digest)) = (version, &digest) {
        lock(&ctx.digests.0).insert(cache_key, (version, digest.clone()));
    }
    Ok(digest)
}
