//! `spec.podOverrides`: a patch merged over the rendered pod template, last, for anything the
//! WsgiApp has no field for (Stackable's pod overrides). Objects merge key by key and `null`
//! removes a key (JSON merge patch, RFC 7386); lists whose items all carry a `name` (containers,
//! volumes, env, ports, ...) merge item by item on it, as strategic merge does for these lists;
//! any other list is replaced.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;

use super::RenderError;

pub fn apply(template: PodTemplateSpec, patch: &Value) -> Result<PodTemplateSpec, RenderError> {
    let mut value = serde_json::to_value(&template).map_err(|source| RenderError::Serialize {
        what: "pod template",
        source,
    })?;
    merge(&mut value, patch);
    serde_json::from_value(value).map_err(|source| RenderError::Overrides(source.to_string()))
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (Value::Array(target), Value::Array(patch)) if named(target) && named(patch) => {
            for item in patch {
                match target.iter_mut().find(|t| t["name"] == item["name"]) {
                    Some(existing) => merge(existing, item),
                    None => target.push(without_nulls(item)),
                }
            }
        }
        (target, patch) => *target = without_nulls(patch),
    }
}

/// Every item is an object with a string `name`.
fn named(items: &[Value]) -> bool {
    items.iter().all(|i| i["name"].is_string())
}

/// A value set wholesale keeps no `null` keys (they mean "absent" in a patch).
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn objects_merge_named_lists_merge_by_name_and_null_removes() {
        let mut target = json!({
            "metadata": {"labels": {"a": "1"}},
            "spec": {
                "containers": [{"name": "wharf", "image": "i:1", "args": ["x"], "env": [{"name": "A", "value": "1"}]}],
                "tolerations": [{"key": "old"}],
                "dnsPolicy": "ClusterFirst",
            }
        });
        let patch = json!({
            "metadata": {"labels": {"b": "2"}},
            "spec": {
                "containers": [
                    {"name": "wharf", "args": ["y"], "env": [{"name": "B", "value": "2"}]},
                    {"name": "extra", "image": "e:1", "ports": null}
                ],
                "tolerations": [{"key": "new"}],
                "dnsPolicy": null,
                "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["db"]}],
            }
        });
        merge(&mut target, &patch);
        assert_eq!(
            target,
            json!({
                "metadata": {"labels": {"a": "1", "b": "2"}},
                "spec": {
                    "containers": [
                        {"name": "wharf", "image": "i:1", "args": ["y"],
                         "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                        {"name": "extra", "image": "e:1"}
                    ],
                    "tolerations": [{"key": "new"}],
                    "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["db"]}],
                }
            })
        );
    }

    #[test]
    fn a_patch_that_is_not_a_pod_template_is_an_error() {
        let template = PodTemplateSpec::default();
        let error = apply(template, &json!({"spec": {"containers": "wharf"}}))
            .expect_err("containers must be a list");
        assert!(error.to_string().contains("podOverrides"), "{error}");
    }
}
