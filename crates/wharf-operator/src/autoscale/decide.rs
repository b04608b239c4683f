//! The scaling decision as a pure function: window state + this tick's samples + the spec in, the
//! desired replica count and the reason out. The formula is documented in docs/operator.md
//! ("Concurrency autoscaling"); the names below follow it.

use std::fmt;
use std::time::Duration;

use super::window::{Tick, Window};

/// A sample older than this at decision time is ignored: with a 1 s scrape period it means the pod
/// missed two scrapes in a row, and a number that old no longer says how busy the pod is now.
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(3);

/// The knobs of `spec.autoscaling` the decision needs, already defaulted and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// Share of the Python threads that should be busy or queued, in percent.
    pub target_utilization_percent: u32,
    /// The stable window: the count follows the mean load over it, and moves down only once it
    /// has been observed in full and no rise happened within it.
    pub scale_down_delay: Duration,
    pub panic_window: Duration,
    pub panic_threshold_percent: u32,
    /// At most this many times the ready pods per decision.
    pub max_scale_up_rate: u32,
    /// At most down to current / this per decision.
    pub max_scale_down_rate: u32,
}

impl Default for Params {
    /// The schema's defaults, with Knative's rates (1000 up, 2 down).
    fn default() -> Self {
        Params {
            min_replicas: 1,
            max_replicas: 10,
            target_utilization_percent: 70,
            scale_down_delay: Duration::from_secs(60),
            panic_window: Duration::from_secs(6),
            panic_threshold_percent: 200,
            max_scale_up_rate: 1000,
            max_scale_down_rate: 2,
        }
    }
}

/// One ready pod's admin `/metrics`, read at `scraped_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodSample {
    pub busy: u32,
    pub queued: u32,
    pub threads: u32,
    pub scraped_at: Duration,
}

/// What the decision sees at one tick.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    pub now: Duration,
    /// Replicas the Deployment asks for right now (ready, starting and unready pods alike).
    pub current: u32,
    /// Pods passing their readiness probe, sampled or not.
    pub ready: u32,
    /// Samples of (a subset of) the ready pods; unreachable pods simply have none.
    pub samples: &'a [PodSample],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Stable,
    Panic,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Stable => "Stable",
            Mode::Panic => "Panic",
        }
    }
}

/// Why the decision came out as it did; shown in `status.autoscaling`, Events and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No usable sample this tick: keep the count (within min/max).
    NoFreshSamples {
        stale: u32,
    },
    /// The load needs what there is.
    Steady,
    /// Scale up on the newest load, over the panic threshold.
    PanicBurst,
    /// Scale up on the mean load of the stable window.
    LoadRose,
    /// Both windows need fewer pods, but the stable window is not observed in full yet or the
    /// count rose within it.
    HeldByStableWindow {
        want: u32,
    },
    /// Panicking: never scale down.
    HeldByPanic {
        want: u32,
    },
    /// Both windows need fewer pods: down to what the busier of them needs.
    LoadFell,
    RateLimitedUp {
        want: u32,
    },
    RateLimitedDown {
        want: u32,
    },
    AtMin {
        want: u32,
    },
    AtMax {
        want: u32,
    },
}

impl Reason {
    /// CamelCase, for Events and `status.autoscaling.lastScaleReason`.
    pub fn code(self) -> &'static str {
        match self {
            Reason::NoFreshSamples { .. } => "NoFreshSamples",
            Reason::Steady => "Steady",
            Reason::PanicBurst => "PanicBurst",
            Reason::LoadRose => "LoadRose",
            Reason::HeldByStableWindow { .. } => "HeldByStableWindow",
            Reason::HeldByPanic { .. } => "HeldByPanic",
            Reason::LoadFell => "LoadFell",
            Reason::RateLimitedUp { .. } => "RateLimitedUp",
            Reason::RateLimitedDown { .. } => "RateLimitedDown",
            Reason::AtMin { .. } => "AtMinReplicas",
            Reason::AtMax { .. } => "AtMaxReplicas",
        }
    }
}

/// The outcome of one tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub desired: u32,
    pub mode: Mode,
    pub reason: Reason,
    /// Busy + queued over all ready pods (extrapolated from the sampled ones); `None` without data.
    pub load: Option<f64>,
    /// Python threads over all ready pods.
    pub capacity: Option<f64>,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} replicas ({}, {}",
            self.desired,
            self.mode.as_str(),
            self.reason.code()
        )?;
        match self.reason {
            Reason::NoFreshSamples { stale } => write!(f, ", {stale} stale samples")?,
            Reason::HeldByStableWindow { want }
            | Reason::HeldByPanic { want }
            | Reason::RateLimitedUp { want }
            | Reason::RateLimitedDown { want }
            | Reason::AtMin { want }
            | Reason::AtMax { want } => write!(f, ", load alone wants {want}")?,
            _ => {}
        }
        if let (Some(load), Some(capacity)) = (self.load, self.capacity) {
            write!(f, "; load {load:.1} of {capacity:.0} threads")?;
        }
        f.write_str(")")
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Panic {
    /// The last tick that was over the panic threshold; a panic lasts at least a panic window
    /// past it.
    last_over: Duration,
    /// The most replicas asked for during this panic; a panic never asks for fewer.
    peak: u32,
}

/// What the decision remembers between ticks (one per WsgiApp).
#[derive(Debug, Clone, Default)]
pub struct State {
    window: Window,
    panic: Option<Panic>,
    /// The last scale-up in stable mode: no scale-down for a stable window after it.
    last_rise: Option<Duration>,
}

impl State {
    pub fn mode(&self) -> Mode {
        if self.panic.is_some() {
            Mode::Panic
        } else {
            Mode::Stable
        }
    }
}

/// One decision tick. See docs/operator.md for the formula in prose.
pub fn decide(state: &mut State, p: &Params, o: &Observation) -> Decision {
    let fresh: Vec<&PodSample> = o
        .samples
        .iter()
        .filter(|s| s.threads > 0 && o.now.saturating_sub(s.scraped_at) <= STALE_AFTER)
        .collect();
    let stale = u32::try_from(o.samples.len() - fresh.len()).unwrap_or(u32::MAX);
    if fresh.is_empty() {
        let (desired, bounded) = bound(o.current, p, o.current);
        return Decision {
            desired,
            mode: state.mode(),
            reason: bounded.unwrap_or(Reason::NoFreshSamples { stale }),
            load: None,
            capacity: None,
        };
    }

    // Extrapolate the sampled pods to every ready pod: with many pods only a subset is scraped, and
    // the pod list may lag the scrapes by a tick (hence at least the sampled count).
    let sampled = fresh.len() as f64;
    let ready = f64::from(o.ready).max(sampled);
    let busy_or_queued: f64 = fresh
        .iter()
        .map(|s| f64::from(s.busy) + f64::from(s.queued))
        .sum();
    let threads_per_pod = fresh.iter().map(|s| f64::from(s.threads)).sum::<f64>() / sampled;
    let load = busy_or_queued / sampled * ready;
    let capacity = threads_per_pod * ready;
    let per_pod_target =
        (threads_per_pod * f64::from(p.target_utilization_percent) / 100.0).max(f64::MIN_POSITIVE);
    let pods_for = |l: f64| ceil_u32(l / per_pod_target);

    let horizon = p.scale_down_delay.max(p.panic_window);
    state.window.push(Tick { at: o.now, load }, horizon);
    let stable_mean = state
        .window
        .mean_load(o.now, p.scale_down_delay)
        .unwrap_or(load);
    let short = state
        .window
        .mean_load(o.now, p.panic_window)
        .unwrap_or(load);
    // Pods for the mean load of the stable window, and of the panic window.
    let stable_want = pods_for(stable_mean);
    let short_want = pods_for(short);
    // The newest sample is exact at scrape time, so a rise needs no averaging to be believed; a fall
    // has to last through the windows.
    let burst = pods_for(load.max(short));

    let over = f64::from(burst) >= ready.max(1.0) * f64::from(p.panic_threshold_percent) / 100.0;
    state.panic = match state.panic {
        _ if over => Some(Panic {
            last_over: o.now,
            peak: state.panic.map_or(0, |pn| pn.peak),
        }),
        // A panic ends once its last trigger has left the panic window and that window no longer
        // asks for more than the stable one: the burst is over, or the stable mean has caught up.
        Some(pn)
            if o.now.saturating_sub(pn.last_over) < p.panic_window || short_want > stable_want =>
        {
            Some(pn)
        }
        _ => None,
    };

    let (mut desired, mut reason) = match &mut state.panic {
        Some(pn) => {
            let asked = stable_want.max(burst).max(pn.peak).max(o.current);
            pn.peak = asked;
            let reason = if asked > o.current {
                Reason::PanicBurst
            } else if short_want < o.current {
                Reason::HeldByPanic { want: short_want }
            } else {
                Reason::Steady
            };
            (asked, reason)
        }
        None if stable_want > o.current => (stable_want, Reason::LoadRose),
        None => {
            // Down only as far as both windows allow, and not while the stable window is still
            // filling or within a stable window of the last rise: under steady load the stable mean
            // can hover at a pod boundary, and this keeps it from flapping there.
            let want = stable_want.max(short_want);
            let held = !state.window.covers(o.now, p.scale_down_delay)
                || state
                    .last_rise
                    .is_some_and(|at| o.now.saturating_sub(at) < p.scale_down_delay);
            if want >= o.current {
                (o.current, Reason::Steady)
            } else if held {
                (o.current, Reason::HeldByStableWindow { want })
            } else {
                (want, Reason::LoadFell)
            }
        }
    };

    let up_cap = ceil_u32(ready.max(1.0) * f64::from(p.max_scale_up_rate)).max(o.current);
    let down_floor = o.current / p.max_scale_down_rate.max(1);
    if desired > up_cap {
        reason = Reason::RateLimitedUp { want: desired };
        desired = up_cap;
    } else if desired < down_floor {
        reason = Reason::RateLimitedDown { want: desired };
        desired = down_floor;
    }
    let (desired, bounded) = bound(desired, p, short_want.max(stable_want));
    if state.panic.is_none() && desired > o.current {
        state.last_rise = Some(o.now);
    }
    Decision {
        desired,
        mode: state.mode(),
        reason: bounded.unwrap_or(reason),
        load: Some(load),
        capacity: Some(capacity),
    }
}

/// min/max win over everything else; the reason says so only when they changed the outcome.
fn bound(desired: u32, p: &Params, want: u32) -> (u32, Option<Reason>) {
    let min = p.min_replicas;
    let max = p.max_replicas.max(min);
    if desired < min {
        (min, Some(Reason::AtMin { want }))
    } else if desired > max {
        (max, Some(Reason::AtMax { want }))
    } else {
        (desired, None)
    }
}

fn ceil_u32(x: f64) -> u32 {
    // Saturating float-to-int casts: NaN becomes 0, anything huge becomes u32::MAX.
    x.ceil() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const THREADS: u32 = 10;

    fn params() -> Params {
        Params {
            max_replicas: 50,
            ..Params::default()
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// `pods` ready pods sharing `load` evenly, all scraped just now.
    fn even(now: Duration, pods: u32, load: u32) -> Vec<PodSample> {
        (0..pods)
            .map(|i| {
                let share = load / pods + u32::from(i < load % pods);
                PodSample {
                    busy: share.min(THREADS),
                    queued: share.saturating_sub(THREADS),
                    threads: THREADS,
                    scraped_at: now,
                }
            })
            .collect()
    }

    /// Runs one tick where the Deployment has `current` replicas, all ready, under `load`.
    fn tick(state: &mut State, p: &Params, now: u64, current: u32, load: u32) -> Decision {
        let samples = even(secs(now), current, load);
        decide(
            state,
            p,
            &Observation {
                now: secs(now),
                current,
                ready: current,
                samples: &samples,
            },
        )
    }

    /// Runs ticks from `from` to `to` seconds, following the decision (pods are ready at once).
    fn follow(
        state: &mut State,
        p: &Params,
        from: u64,
        to: u64,
        mut current: u32,
        load: u32,
    ) -> (u32, Vec<u32>) {
        let mut changes = Vec::new();
        for now in from..to {
            let d = tick(state, p, now, current, load);
            if d.desired != current {
                changes.push(d.desired);
            }
            current = d.desired;
        }
        (current, changes)
    }

    #[test]
    fn steady_load_settles_at_the_target_and_stays_there() {
        let p = params();
        let mut s = State::default();
        // 35 busy threads at 70 % of 10 per pod: 5 pods.
        let (current, _) = follow(&mut s, &p, 0, 10, 5, 35);
        assert_eq!(current, 5);
        let (current, changes) = follow(&mut s, &p, 10, 200, current, 35);
        assert_eq!((current, changes), (5, vec![]));
        assert_eq!(s.mode(), Mode::Stable);
        let d = tick(&mut s, &p, 200, 5, 35);
        assert_eq!(d.reason, Reason::Steady);
        assert_eq!(d.load, Some(35.0));
        assert_eq!(d.capacity, Some(50.0));
    }

    #[test]
    fn noisy_steady_load_scales_down_at_most_once_per_window() {
        let p = params();
        let mut s = State::default();
        let mut current = 4;
        let mut downs = Vec::new();
        for now in 0..300u64 {
            // 20..=34 busy threads in a fixed pseudo-random order.
            let load = 20 + (now * 7919 % 15) as u32;
            let d = tick(&mut s, &p, now, current, load);
            if d.desired < current {
                downs.push(now);
            }
            current = d.desired;
        }
        for pair in downs.windows(2) {
            assert!(pair[1] - pair[0] >= 60, "scale-downs at {downs:?}");
        }
        assert_eq!(current, 4, "a mean of 27 threads at 70 % of 10 needs 4");
    }

    #[test]
    fn a_mean_hovering_at_a_pod_boundary_moves_down_at_most_once_per_window() {
        let p = params();
        let mut s = State::default();
        let mut current = 4;
        let (mut ups, mut downs) = (Vec::new(), Vec::new());
        for now in 0..900u64 {
            // 20 s at 31, 20 s at 25: the minute's mean swings across 28 (4 pods' worth).
            let load = if now % 40 < 20 { 31 } else { 25 };
            let d = tick(&mut s, &p, now, current, load);
            assert_eq!(d.mode, Mode::Stable, "at {now} s: {d}");
            if d.desired > current {
                ups.push(now);
            } else if d.desired < current {
                downs.push(now);
            }
            current = d.desired;
        }
        assert!(
            ups.len() > 1,
            "the mean must cross the boundary: ups {ups:?}"
        );
        for pair in downs.windows(2) {
            assert!(pair[1] - pair[0] >= 60, "scale-downs at {downs:?}");
        }
        for down in &downs {
            assert!(
                ups.iter().all(|up| up > down || down - up >= 60),
                "a scale-down within a stable window of a rise: ups {ups:?}, downs {downs:?}"
            );
        }
    }

    #[test]
    fn a_burst_panics_and_scales_up_on_the_first_tick() {
        let p = params();
        let mut s = State::default();
        let (current, _) = follow(&mut s, &p, 0, 30, 2, 10);
        assert_eq!(current, 2);
        // 10 -> 200 clients: 2 pods of 10 threads, 180 queued.
        let d = tick(&mut s, &p, 30, 2, 200);
        assert_eq!(d.mode, Mode::Panic);
        assert_eq!(d.reason, Reason::PanicBurst);
        assert_eq!(d.desired, 29, "ceil(200 / 7)");
        // While the new pods start, the load the ready pods see stays high; never fewer.
        let samples = even(secs(31), 2, 200);
        let d = decide(
            &mut s,
            &p,
            &Observation {
                now: secs(31),
                current: 29,
                ready: 2,
                samples: &samples,
            },
        );
        assert_eq!(d.desired, 29);
        assert_eq!(d.mode, Mode::Panic);
    }

    #[test]
    fn a_sustained_burst_is_held_until_the_stable_mean_catches_up() {
        let p = params();
        let mut s = State::default();
        follow(&mut s, &p, 0, 70, 1, 5);
        let mut current = 1;
        let mut modes = Vec::new();
        for now in 70..200 {
            let d = tick(&mut s, &p, now, current, 70);
            assert!(
                d.desired >= current,
                "never down under the burst, at {now} s: {d}"
            );
            current = d.desired;
            modes.push((now, d.mode));
        }
        assert_eq!(current, 10);
        // Pods for the stable mean reach 10 once it exceeds 63: 53 s of 70 and 7 of 5.
        let first_stable = modes
            .iter()
            .find(|(_, m)| *m == Mode::Stable)
            .map(|(t, _)| *t);
        assert_eq!(first_stable, Some(123), "{modes:?}");
        assert!(
            modes
                .iter()
                .filter(|(t, _)| *t >= 123)
                .all(|(_, m)| *m == Mode::Stable)
        );
    }

    #[test]
    fn a_panic_ends_a_panic_window_after_the_burst_and_the_count_follows_the_stable_mean() {
        let p = params();
        let mut s = State::default();
        follow(&mut s, &p, 0, 70, 1, 5);
        // 15 s of 70 busy threads (10 pods), then back to 5.
        let (current, _) = follow(&mut s, &p, 70, 85, 1, 70);
        assert_eq!((current, s.mode()), (10, Mode::Panic));
        // The panic window's mean still asks for more than the stable mean for 3 ticks.
        for now in 85..88 {
            let d = tick(&mut s, &p, now, 10, 5);
            assert_eq!((d.desired, d.mode), (10, Mode::Panic), "at {now} s: {d}");
            assert!(
                matches!(d.reason, Reason::HeldByPanic { .. }),
                "at {now} s: {d}"
            );
        }
        // Then the stable mean rules: (15 x 70 + 45 x 5) / 60 = 21.25 threads, 4 pods, reached in
        // rate-limited halvings.
        let d = tick(&mut s, &p, 88, 10, 5);
        assert_eq!(d.mode, Mode::Stable, "{d}");
        assert_eq!(
            (d.desired, d.reason),
            (5, Reason::RateLimitedDown { want: 4 })
        );
        let d = tick(&mut s, &p, 89, 5, 5);
        assert_eq!((d.desired, d.reason), (4, Reason::LoadFell));
        // The burst leaves the stable window between 130 and 144 s; the count follows it to 1.
        let (current, changes) = follow(&mut s, &p, 90, 150, 4, 5);
        assert_eq!((current, changes), (1, vec![3, 2, 1]));
    }

    #[test]
    fn scales_down_after_the_stable_window_and_not_before() {
        let p = Params {
            panic_threshold_percent: 1000,
            ..params()
        };
        let mut s = State::default();
        let (current, _) = follow(&mut s, &p, 0, 70, 8, 50);
        assert_eq!(current, 8);
        // Load falls to 7 busy threads (1 pod) at t = 70. The count falls with the stable mean: it
        // never asks for less than the mean of the last 60 s needs, and reaches 1 pod exactly when
        // the last tick of the old load leaves the window.
        let mut current = 8;
        for now in 70..160u64 {
            let d = tick(&mut s, &p, now, current, 7);
            let old = 129u64.saturating_sub(now).min(60) as f64;
            let mean = (50.0 * old + 7.0 * (60.0 - old)) / 60.0;
            assert!(d.desired <= current, "at {now} s: {d}");
            assert!(
                f64::from(d.desired) >= (mean / 7.0).ceil(),
                "below the stable mean's {mean} at {now} s: {d}"
            );
            if d.desired < current {
                assert_eq!(d.reason, Reason::LoadFell, "at {now} s");
            }
            assert_eq!(d.desired == 1, now >= 129, "at {now} s: {d}");
            current = d.desired;
        }
    }

    #[test]
    fn no_scale_down_before_a_whole_stable_window_is_observed() {
        // An operator that just started (or took over the lease) knows nothing of the last minute.
        let p = params();
        let mut s = State::default();
        for now in 0..60 {
            let d = tick(&mut s, &p, now, 8, 7);
            assert_eq!(
                (d.desired, d.reason),
                (8, Reason::HeldByStableWindow { want: 1 }),
                "at {now} s"
            );
        }
        let d = tick(&mut s, &p, 60, 8, 7);
        assert_eq!(
            (d.desired, d.reason),
            (4, Reason::RateLimitedDown { want: 1 })
        );
    }

    #[test]
    fn a_rise_below_the_panic_threshold_follows_the_stable_mean() {
        let p = params();
        let mut s = State::default();
        let (current, _) = follow(&mut s, &p, 0, 70, 4, 27);
        assert_eq!(current, 4);
        // 27 -> 40 busy threads (6 pods' worth, 1.5x what 4 pods are sized for).
        let mut current = 4;
        let mut ups = Vec::new();
        for now in 70..140 {
            let d = tick(&mut s, &p, now, current, 40);
            assert_eq!(d.mode, Mode::Stable, "at {now} s: {d}");
            if d.desired != current {
                assert!(d.desired > current, "at {now} s: {d}");
                assert_eq!(d.reason, Reason::LoadRose);
                ups.push((now, d.desired));
            }
            current = d.desired;
        }
        // The mean passes 28 (5 pods) after 5 ticks of the new load and 35 (6 pods) after 37.
        assert_eq!(ups, vec![(74, 5), (106, 6)]);
    }

    #[test]
    fn min_and_max_bound_everything() {
        let p = Params {
            min_replicas: 3,
            max_replicas: 6,
            ..params()
        };
        let mut s = State::default();
        follow(&mut s, &p, 0, 60, 3, 1);
        let d = tick(&mut s, &p, 60, 3, 1);
        assert_eq!((d.desired, d.reason), (3, Reason::AtMin { want: 1 }));
        let d = tick(&mut s, &p, 61, 3, 300);
        assert_eq!(d.desired, 6);
        assert!(matches!(d.reason, Reason::AtMax { .. }), "{d}");
        // A count outside the bounds (min was raised) is corrected even without samples.
        let d = decide(
            &mut State::default(),
            &p,
            &Observation {
                now: secs(0),
                current: 1,
                ready: 1,
                samples: &[],
            },
        );
        assert_eq!(d.desired, 3);
    }

    #[test]
    fn rate_limits_bound_each_step() {
        let p = Params {
            max_scale_up_rate: 2,
            max_scale_down_rate: 2,
            panic_threshold_percent: 100_000,
            scale_down_delay: secs(1),
            panic_window: secs(1),
            ..params()
        };
        let mut s = State::default();
        // 1 ready pod may become at most 2, whatever the load wants.
        let d = tick(&mut s, &p, 0, 1, 70);
        assert_eq!(
            (d.desired, d.reason),
            (2, Reason::RateLimitedUp { want: 10 })
        );
        let d = tick(&mut s, &p, 1, 2, 70);
        assert_eq!(d.desired, 4);
        // 16 pods with nearly nothing to do may halve, not drop to 1.
        let d = tick(&mut s, &p, 2, 16, 1);
        assert_eq!(
            (d.desired, d.reason),
            (8, Reason::RateLimitedDown { want: 1 })
        );
    }

    #[test]
    fn missing_samples_hold_the_count() {
        let p = params();
        let mut s = State::default();
        follow(&mut s, &p, 0, 10, 4, 25);
        // Every pod unreachable: keep what there is, say why.
        let d = decide(
            &mut s,
            &p,
            &Observation {
                now: secs(10),
                current: 4,
                ready: 4,
                samples: &[],
            },
        );
        assert_eq!(d.desired, 4);
        assert_eq!(d.reason, Reason::NoFreshSamples { stale: 0 });
        assert_eq!(d.load, None);
        // One pod of four answering: its load stands for all four.
        let one = even(secs(11), 4, 24)[..1].to_vec();
        let d = decide(
            &mut s,
            &p,
            &Observation {
                now: secs(11),
                current: 4,
                ready: 4,
                samples: &one,
            },
        );
        assert_eq!(d.load, Some(24.0));
        assert_eq!(d.desired, 4);
    }

    #[test]
    fn stale_samples_are_ignored() {
        let p = params();
        let mut s = State::default();
        follow(&mut s, &p, 0, 10, 2, 10);
        let old = [PodSample {
            busy: 10,
            queued: 500,
            threads: THREADS,
            scraped_at: secs(6),
        }];
        let d = decide(
            &mut s,
            &p,
            &Observation {
                now: secs(10),
                current: 2,
                ready: 2,
                samples: &old,
            },
        );
        assert_eq!(d.desired, 2, "a 4 s old burst must not trigger a panic");
        assert_eq!(d.reason, Reason::NoFreshSamples { stale: 1 });
        // A stale sample next to a fresh one: only the fresh one counts.
        let mut mixed = even(secs(11), 2, 10)[..1].to_vec();
        mixed.push(old[0]);
        let d = decide(
            &mut s,
            &p,
            &Observation {
                now: secs(11),
                current: 2,
                ready: 2,
                samples: &mixed,
            },
        );
        assert_eq!(d.load, Some(10.0));
        assert_eq!(d.mode, Mode::Stable);
    }

    #[test]
    fn a_pod_that_disappears_mid_window_changes_nothing_abruptly() {
        let p = params();
        let mut s = State::default();
        follow(&mut s, &p, 0, 20, 3, 18);
        // Pod 3 vanishes (evicted); the pod list still says 3 ready for a tick, then 2. Its clients
        // move to the other two, so their load per pod rises and the total stays.
        let two = even(secs(20), 2, 12);
        let d = decide(
            &mut s,
            &p,
            &Observation {
                now: secs(20),
                current: 3,
                ready: 3,
                samples: &two,
            },
        );
        assert_eq!(d.desired, 3, "{d}");
        assert_eq!(d.load, Some(18.0));
        for now in 21..30 {
            let samples = even(secs(now), 2, 18);
            let d = decide(
                &mut s,
                &p,
                &Observation {
                    now: secs(now),
                    current: 3,
                    ready: 2,
                    samples: &samples,
                },
            );
            assert_eq!((d.desired, d.mode), (3, Mode::Stable), "at {now} s: {d}");
        }
    }

    #[test]
    fn unready_pods_count_as_current_but_are_not_sampled() {
        let p = params();
        let mut s = State::default();
        follow(&mut s, &p, 0, 10, 1, 5);
        // Scaled to 6 a tick ago; 5 pods are still starting and only the ready one is sampled.
        let samples = even(secs(10), 1, 40);
        let d = decide(
            &mut s,
            &p,
            &Observation {
                now: secs(10),
                current: 6,
                ready: 1,
                samples: &samples,
            },
        );
        assert_eq!(d.desired, 6, "the starting pods are already asked for: {d}");
    }
}
