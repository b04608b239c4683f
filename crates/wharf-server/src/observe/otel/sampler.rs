//! Which requests are traced: `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`, with the
//! decisions of the OpenTelemetry SDK's samplers (so a ratio keeps the same traces as the
//! Python SDK of the app behind wharf would).

use opentelemetry::trace::TraceId;

use super::OtelError;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Root {
    AlwaysOn,
    AlwaysOff,
    /// Keeps this fraction of traces, chosen by trace id.
    Ratio(f64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Sampler {
    /// Decides for a request without an incoming trace, or for every request when not
    /// `parent_based`.
    root: Root,
    /// Follow the incoming trace's sampled flag when there is one (the default).
    parent_based: bool,
}

impl Sampler {
    pub(super) fn read(set: &dyn Fn(&str) -> Option<String>) -> Result<Sampler, OtelError> {
        let Some(name) = set("OTEL_TRACES_SAMPLER") else {
            return Ok(Sampler { root: Root::AlwaysOn, parent_based: true });
        };
        let ratio = || -> Result<Root, OtelError> {
            let Some(arg) = set("OTEL_TRACES_SAMPLER_ARG") else {
                return Ok(Root::Ratio(1.0));
            };
            match arg.trim().parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(Root::Ratio(r)),
                _ => Err(OtelError::InvalidRatio { value: arg }),
            }
        };
        let (root, parent_based) = match name.trim() {
            "always_on" => (Root::AlwaysOn, false),
            "always_off" => (Root::AlwaysOff, false),
            "traceidratio" => (ratio()?, false),
            "parentbased_always_on" => (Root::AlwaysOn, true),
            "parentbased_always_off" => (Root::AlwaysOff, true),
            "parentbased_traceidratio" => (ratio()?, true),
            _ => {
                return Err(OtelError::Unsupported {
                    var: "OTEL_TRACES_SAMPLER",
                    value: name,
                    expected: "always_on, always_off, traceidratio, parentbased_always_on, \
                               parentbased_always_off or parentbased_traceidratio",
                });
            }
        };
        Ok(Sampler { root, parent_based })
    }

    /// Whether the span of `trace_id` is sampled; `parent` is the incoming trace's sampled flag.
    pub(super) fn sampled(&self, trace_id: TraceId, parent: Option<bool>) -> bool {
        match (self.parent_based, parent) {
            (true, Some(sampled)) => sampled,
            _ => match self.root {
                Root::AlwaysOn => true,
                Root::AlwaysOff => false,
                Root::Ratio(ratio) => by_ratio(ratio, trace_id),
            },
        }
    }
}

/// The SDK's `TraceIdRatioBased`: the low 63 bits of the trace id below `ratio * 2^63`.
fn by_ratio(ratio: f64, trace_id: TraceId) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let bound = (ratio.max(0.0) * (1u64 << 63) as f64) as u64;
    let low = u128::from_be_bytes(trace_id.to_bytes()) as u64;
    (low >> 1) < bound
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(vars: &[(&str, &str)]) -> Result<Sampler, OtelError> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Sampler::read(&move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    fn id(low: u64) -> TraceId {
        TraceId::from(u128::from(low) | (7u128 << 64))
    }

    #[test]
    fn default_follows_the_parent_and_samples_roots() {
        let s = sampler(&[]).expect("valid");
        assert!(s.sampled(id(1), None));
        assert!(!s.sampled(id(1), Some(false)));
        assert!(s.sampled(id(1), Some(true)));
    }

    #[test]
    fn ratio_uses_the_low_bits_of_the_trace_id_like_the_sdk() {
        let s = sampler(&[("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "0.5")]).expect("valid");
        assert!(s.sampled(id(0), None));
        assert!(s.sampled(id((1 << 63) - 1), None), "low bits just under half");
        assert!(!s.sampled(id(u64::MAX), None));
        assert!(!s.sampled(id(u64::MAX), Some(true)), "not parent based: the parent does not decide");
        let s = sampler(&[("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "0")])
            .expect("valid");
        assert!(!s.sampled(id(0), None));
        assert!(s.sampled(id(0), Some(true)));
        assert!(!sampler(&[("OTEL_TRACES_SAMPLER", "always_off")]).expect("valid").sampled(id(0), Some(true)));
    }

    #[test]
    fn bad_values_are_refused_with_the_variable_named() {
        for vars in [
            &[("OTEL_TRACES_SAMPLER", "sometimes")][..],
            &[("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "1.5")][..],
            &[("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "half")][..],
        ] {
            let error = sampler(vars).expect_err("invalid").to_string();
            assert!(error.contains("OTEL_TRACES_SAMPLER"), "{error}");
        }
    }
}
