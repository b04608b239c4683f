//! `app.kubernetes.io/*` labels shared by every child object.

use std::collections::BTreeMap;

pub const NAME: &str = "app.kubernetes.io/name";
pub const INSTANCE: &str = "app.kubernetes.io/instance";
pub const COMPONENT: &str = "app.kubernetes.io/component";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const PART_OF: &str = "app.kubernetes.io/part-of";

/// Value of `app.kubernetes.io/managed-by`, also the server-side-apply field manager.
pub const MANAGER: &str = "wharf-operator";

/// Labels that select the app's pods; they never change for the life of the WsgiApp, because a
/// Deployment's selector is immutable.
pub fn selector(app_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME.to_owned(), app_name.to_owned()),
        (INSTANCE.to_owned(), app_name.to_owned()),
    ])
}

/// Labels put on every object the operator creates.
pub fn common(app_name: &str) -> BTreeMap<String, String> {
    let mut labels = selector(app_name);
    labels.insert(COMPONENT.to_owned(), "wsgi-server".to_owned());
    labels.insert(PART_OF.to_owned(), "wharf".to_owned());
    labels.insert(MANAGED_BY.to_owned(), MANAGER.to_owned());
    labels
}

/// The selector as a label-selector query string (`k=v,k=v`).
pub fn selector_query(app_name: &str) -> String {
    selector(app_name)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}
