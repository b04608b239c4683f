//! Per-app metrics of the concurrency autoscaler, on the operator's `/metrics`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::decide::{Decision, Mode};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabels {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScaleLabels {
    pub namespace: String,
    pub name: String,
    pub direction: String,
    pub reason: String,
}

#[derive(Default)]
pub struct AutoscalerMetrics {
    load: Family<AppLabels, Gauge<f64, AtomicU64>>,
    capacity: Family<AppLabels, Gauge<f64, AtomicU64>>,
    desired: Family<AppLabels, Gauge>,
    panic: Family<AppLabels, Gauge>,
    scales: Family<ScaleLabels, Counter>,
}

impl AutoscalerMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "autoscaler_observed_load",
            "Busy + queued Python threads over the ready pods of a WsgiApp",
            self.load.clone(),
        );
        registry.register(
            "autoscaler_capacity",
            "Python threads over the ready pods of a WsgiApp",
            self.capacity.clone(),
        );
        registry.register(
            "autoscaler_desired_replicas",
            "Replicas the concurrency autoscaler asks for",
            self.desired.clone(),
        );
        registry.register(
            "autoscaler_panic",
            "1 while the autoscaler of a WsgiApp is in panic mode",
            self.panic.clone(),
        );
        registry.register(
            "autoscaler_scales",
            "Replica count changes written by the concurrency autoscaler",
            self.scales.clone(),
        );
    }

    pub fn observe(&self, namespace: &str, name: &str, decision: &Decision, current: u32) {
        let app = AppLabels {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        if let (Some(load), Some(capacity)) = (decision.load, decision.capacity) {
            self.load.get_or_create(&app).set(load);
            self.capacity.get_or_create(&app).set(capacity);
        }
        self.desired
            .get_or_create(&app)
            .set(i64::from(decision.desired));
        self.panic
            .get_or_create(&app)
            .set(i64::from(decision.mode == Mode::Panic));
        if decision.desired != current {
            self.scales
                .get_or_create(&ScaleLabels {
                    namespace: app.namespace,
                    name: app.name,
                    direction: if decision.desired > current {
                        "up"
                    } else {
                        "down"
                    }
                    .to_owned(),
                    reason: decision.reason.code().to_owned(),
                })
                .inc();
        }
    }

    /// Drops an app's series when its autoscaler stops.
    pub fn forget(&self, namespace: &str, name: &str) {
        let app = AppLabels {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        self.load.remove(&app);
        self.capacity.remove(&app);
        self.desired.remove(&app);
        self.panic.remove(&app);
    }
}

#[cfg(test)]
mod tests {
    use super::super::decide::Reason;
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn a_scale_up_shows_per_app_and_forget_drops_the_gauges() {
        let m = Metrics::default();
        let decision = Decision {
            desired: 9,
            mode: Mode::Panic,
            reason: Reason::PanicBurst,
            load: Some(188.0),
            capacity: Some(96.0),
        };
        m.autoscaler.observe("web", "shop", &decision, 3);
        let text = m.encode();
        for line in [
            "wharf_operator_autoscaler_desired_replicas{namespace=\"web\",name=\"shop\"} 9",
            "wharf_operator_autoscaler_observed_load{namespace=\"web\",name=\"shop\"} 188.0",
            "wharf_operator_autoscaler_panic{namespace=\"web\",name=\"shop\"} 1",
            "wharf_operator_autoscaler_scales_total{namespace=\"web\",name=\"shop\",direction=\"up\",reason=\"PanicBurst\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        m.autoscaler.forget("web", "shop");
        assert!(!m.encode().contains("desired_replicas{"));
    }
}
