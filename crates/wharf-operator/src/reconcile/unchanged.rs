//! Pure: would applying a rendered child change anything? Two checks, both needed:
//! - the digest of the rendered object, kept in an annotation on the live one, changes whenever
//!   what we render changes (including fields we stop setting, which a comparison cannot see);
//! - every field we render still has our value on the live object, which catches edits by
//!   others (drift) without a request.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Annotation holding the digest of the rendered object last applied.
pub(crate) const APPLIED_DIGEST: &str = "wharf.dev/applied-digest";

/// What applying the rendered object would do to the live one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Create,
    /// What we render changed.
    Update,
    /// We render the same, but the live object no longer has some of our values.
    Drifted,
    UpToDate,
}

/// Adds the digest annotation to a rendered object (as JSON) and returns the digest.
pub(crate) fn stamp(body: &mut Value) -> String {
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let digest = crate::render::short_hex(&Sha256::digest(&bytes));
    if let Some(metadata) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = metadata
            .entry("annotations")
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        if let Some(map) = annotations.as_object_mut() {
            map.insert(APPLIED_DIGEST.to_owned(), Value::String(digest.clone()));
        }
    }
    digest
}

pub(crate) fn verdict(stamped: &Value, digest: &str, live: Option<&Value>) -> Verdict {
    let Some(live) = live else {
        return Verdict::Create;
    };
    if live["metadata"]["annotations"][APPLIED_DIGEST].as_str() != Some(digest) {
        Verdict::Update
    } else if contains(live, stamped) {
        Verdict::UpToDate
    } else {
        Verdict::Drifted
    }
}

/// True when every field of `want` has the same value in `live`. Lists compare element by element
/// (the API server keeps their order); fields the server added to `live` are ignored; an empty or
/// zero value we render matches an absent one (the server drops them).
fn contains(live: &Value, want: &Value) -> bool {
    match (live, want) {
        (Value::Object(live), Value::Object(want)) => want.iter().all(|(key, w)| {
            live.get(key)
                .map_or_else(|| is_empty(w), |l| contains(l, w))
        }),
        (Value::Array(live), Value::Array(want)) => {
            live.len() == want.len() && live.iter().zip(want).all(|(l, w)| contains(l, w))
        }
        (Value::String(l), Value::String(w)) => l == w || same_quantity(l, w),
        (Value::Null, w) => is_empty(w),
        (l, w) => l == w,
    }
}

/// Values the API server leaves out of what it returns: empty lists and maps, and Go's zero values
/// of `omitempty` fields (`value: ""` of an env var, `readOnly: false`, …).
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
    }
}

/// The API server rewrites resource quantities into canonical form (`0.5` → `500m`,
/// `1024Mi` → `1Gi`); such a pair is the same value, not drift.
fn same_quantity(a: &str, b: &str) -> bool {
    match (quantity(a), quantity(b)) {
        (Some(a), Some(b)) => (a - b).abs() <= f64::EPSILON * a.abs().max(b.abs()) * 4.0,
        _ => false,
    }
}

fn quantity(text: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 13] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (number, factor) = SUFFIXES
        .iter()
        .find_map(|(suffix, factor)| text.strip_suffix(suffix).map(|n| (n, *factor)))
        .unwrap_or((text, 1.0));
    let starts_like_a_number = number
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_digit() || c == '.' || c == '+' || c == '-');
    if !starts_like_a_number {
        return None;
    }
    number.parse::<f64>().ok().map(|n| n * factor)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rendered() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"template": {"spec": {"containers": [
                {"name": "wharf", "image": "img:1", "resources": {"requests": {"cpu": "0.5", "memory": "1024Mi"}}, "env": [],
                 "envFrom": [{"configMapRef": {"name": "cfg", "optional": false}}], "volumeMounts": [{"name": "tmp", "mountPath": "/tmp", "readOnly": false}]}
            ]}}}
        })
    }

    /// What the API server returns for it: defaults, server fields, canonical quantities.
    fn live_of(stamped: &Value) -> Value {
        let mut live = stamped.clone();
        live["metadata"]["uid"] = json!("u1");
        live["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = json!("3");
        let container = &mut live["spec"]["template"]["spec"]["containers"][0];
        container["resources"]["requests"] = json!({"cpu": "500m", "memory": "1Gi"});
        container["terminationMessagePath"] = json!("/dev/termination-log");
        container.as_object_mut().expect("object").remove("env");
        container["envFrom"][0]["configMapRef"]
            .as_object_mut()
            .expect("ref")
            .remove("optional");
        container["volumeMounts"][0]
            .as_object_mut()
            .expect("mount")
            .remove("readOnly");
        live["status"] = json!({"replicas": 1});
        live
    }

    #[test]
    fn unchanged_render_of_an_untouched_object_is_up_to_date() {
        let mut body = rendered();
        let digest = stamp(&mut body);
        assert_eq!(
            body["metadata"]["annotations"][APPLIED_DIGEST],
            json!(digest)
        );
        assert_eq!(verdict(&body, &digest, None), Verdict::Create);
        let live = live_of(&body);
        assert_eq!(verdict(&body, &digest, Some(&live)), Verdict::UpToDate);
    }

    #[test]
    fn a_changed_render_is_an_update_even_when_it_only_drops_a_field() {
        let mut old = rendered();
        let old_digest = stamp(&mut old);
        let live = live_of(&old);
        let mut new = rendered();
        new["metadata"]["labels"]
            .as_object_mut()
            .expect("labels")
            .clear();
        let digest = stamp(&mut new);
        assert_ne!(digest, old_digest);
        assert_eq!(verdict(&new, &digest, Some(&live)), Verdict::Update);
    }

    #[test]
    fn edits_by_others_are_drift() {
        let mut body = rendered();
        let digest = stamp(&mut body);
        for edit in [
            json!({"path": "image", "value": "img:hacked"}),
            json!({"path": "name", "value": "other"}),
        ] {
            let mut live = live_of(&body);
            let field = edit["path"].as_str().expect("path");
            live["spec"]["template"]["spec"]["containers"][0][field] = edit["value"].clone();
            assert_eq!(
                verdict(&body, &digest, Some(&live)),
                Verdict::Drifted,
                "{edit}"
            );
        }
        let mut live = live_of(&body);
        live["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .expect("containers")
            .push(json!({"name": "sidecar"}));
        assert_eq!(verdict(&body, &digest, Some(&live)), Verdict::Drifted);
        let mut live = live_of(&body);
        live["metadata"]["labels"]["app"] = json!("changed");
        assert_eq!(verdict(&body, &digest, Some(&live)), Verdict::Drifted);
    }

    #[test]
    fn quantities_compare_by_value() {
        assert!(same_quantity("0.5", "500m"));
        assert!(same_quantity("1024Mi", "1Gi"));
        assert!(same_quantity("2", "2000m"));
        assert!(!same_quantity("1", "1Ki"));
        assert!(!same_quantity("img:1", "img:1.0"));
        assert!(!same_quantity("Mi", "Mi"));
    }
}
