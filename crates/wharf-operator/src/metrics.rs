//! The operator's own Prometheus metrics (OpenMetrics text on `/metrics`).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::autoscale::metrics::AutoscalerMetrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub reason: String,
}

pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    errors: Family<ErrorLabels, Counter>,
    duration: Histogram,
    leader: Gauge,
    pub autoscaler: AutoscalerMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("wharf_operator");
        let reconciles = Counter::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        // 5 ms .. ~20 s: a reconcile is a handful of API round trips.
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 13));
        let leader = Gauge::default();
        registry.register(
            "reconciles",
            "Reconciliations of WsgiApps",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciliations by reason",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time taken by one reconciliation",
            duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        registry.register(
            "otel_spans_failed",
            "Trace spans whose export failed (collector unreachable or refusing, TLS error)",
            crate::telemetry::spans_failed(),
        );
        let autoscaler = AutoscalerMetrics::default();
        autoscaler.register(&mut registry);
        Metrics {
            registry,
            autoscaler,
            reconciles,
            errors,
            duration,
            leader,
        }
    }
}

impl Metrics {
    pub fn observe(&self, took: Duration, error_reason: Option<&str>) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
        if let Some(reason) = error_reason {
            self.errors
                .get_or_create(&ErrorLabels {
                    reason: reason.to_owned(),
                })
                .inc();
        }
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_counts_errors_and_durations() {
        let m = Metrics::default();
        m.observe(Duration::from_millis(12), None);
        m.observe(Duration::from_millis(40), Some("Conflict"));
        m.set_leader(true);
        let text = m.encode();
        assert!(text.contains("wharf_operator_reconciles_total 2"), "{text}");
        assert!(
            text.contains("wharf_operator_reconcile_errors_total{reason=\"Conflict\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("wharf_operator_reconcile_duration_seconds_count 2"),
            "{text}"
        );
        assert!(text.contains("wharf_operator_leader 1"), "{text}");
    }
}
