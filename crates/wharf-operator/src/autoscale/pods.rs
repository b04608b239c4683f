//! Which pods the autoscaler reads: the ready ones, at their pod IP and wharf's admin port, and only
//! a rotating subset of them when there are many.

use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::Pod;

/// Pods scraped per tick at most. A scrape is one small HTTP request, but 1 s ticks over hundreds
/// of pods would make the operator a load of its own; 20 pods of a uniform app estimate the mean
/// load per pod well (the decision extrapolates to every ready pod).
pub const MAX_SCRAPED: usize = 20;

/// The ready pods of one tick and the admin addresses to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets {
    pub ready: u32,
    pub admin: Vec<SocketAddr>,
}

/// Ready = condition `Ready` True, not being deleted, with a pod IP. Starting and unready pods are
/// left out on purpose (they serve nothing); a terminating pod is leaving the Service already.
pub fn targets<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
    admin_port: u16,
    max: usize,
    tick: usize,
) -> Targets {
    let mut ready: Vec<(String, SocketAddr)> = pods
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
        .filter_map(|p| {
            let ip: IpAddr = p.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
            Some((
                p.metadata.name.clone().unwrap_or_default(),
                SocketAddr::new(ip, admin_port),
            ))
        })
        .collect();
    ready.sort();
    let count = ready.len();
    let take = count.min(max.max(1));
    // Rotate the window each tick so every pod is read now and then.
    let start = if count > take { tick % count } else { 0 };
    let admin = ready
        .iter()
        .cycle()
        .skip(start)
        .take(take)
        .map(|(_, addr)| *addr)
        .collect();
    Targets {
        ready: u32::try_from(count).unwrap_or(u32::MAX),
        admin,
    }
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(name: &str, ip: Option<&str>, ready: bool, deleting: bool) -> Pod {
        let mut p = json!({
            "metadata": {"name": name},
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        });
        if let Some(ip) = ip {
            p["status"]["podIP"] = json!(ip);
        }
        if deleting {
            p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        serde_json::from_value(p).expect("pod")
    }

    #[test]
    fn only_ready_pods_with_an_ip_are_read_at_the_admin_port() {
        let pods = [
            pod("a", Some("10.0.0.1"), true, false),
            pod("b", Some("10.0.0.2"), false, false),
            pod("c", None, true, false),
            pod("d", Some("10.0.0.4"), true, true),
            pod("e", Some("fd00::5"), true, false),
        ];
        let t = targets(&pods, 9000, MAX_SCRAPED, 0);
        assert_eq!(t.ready, 2);
        assert_eq!(
            t.admin,
            vec![
                "10.0.0.1:9000".parse().expect("addr"),
                "[fd00::5]:9000".parse().expect("addr")
            ]
        );
    }

    #[test]
    fn many_pods_are_read_in_a_rotating_bounded_subset() {
        let pods: Vec<Pod> = (0..5)
            .map(|i| pod(&format!("p{i}"), Some(&format!("10.0.0.{i}")), true, false))
            .collect();
        let first = targets(&pods, 9000, 2, 0);
        let second = targets(&pods, 9000, 2, 1);
        assert_eq!(
            first.ready, 5,
            "all ready pods count, not only the read ones"
        );
        assert_eq!(first.admin.len(), 2);
        assert_ne!(first.admin, second.admin);
        let seen: std::collections::BTreeSet<_> = (0..5)
            .flat_map(|tick| targets(&pods, 9000, 2, tick).admin)
            .collect();
        assert_eq!(seen.len(), 5, "every pod is read within a few ticks");
    }
}
