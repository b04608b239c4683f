//! The sliding window of per-tick observations the decision looks back over.

use std::collections::VecDeque;
use std::time::Duration;

/// One decision tick: the app's total load then, and the pods it called for on its own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Tick {
    pub at: Duration,
    pub load: f64,
    pub want: u32,
}

/// Ticks of the last `horizon`, oldest first. Time is a `Duration` since an arbitrary origin chosen
/// by the caller, which keeps the decision pure and tests free of clocks.
#[derive(Debug, Clone, Default)]
pub(crate) struct Window {
    ticks: VecDeque<Tick>,
}

impl Window {
    pub fn push(&mut self, tick: Tick, horizon: Duration) {
        // A clock that went backwards (it should not, it is monotonic) must not leave ticks from
        // "the future" in the window forever.
        while self.ticks.back().is_some_and(|last| last.at > tick.at) {
            self.ticks.pop_back();
        }
        self.ticks.push_back(tick);
        while self
            .ticks
            .front()
            .is_some_and(|first| tick.at.saturating_sub(first.at) >= horizon)
        {
            self.ticks.pop_front();
        }
    }

    /// Ticks younger than `span` as of `now`.
    fn within(&self, now: Duration, span: Duration) -> impl Iterator<Item = &Tick> {
        self.ticks
            .iter()
            .rev()
            .take_while(move |t| now.saturating_sub(t.at) < span)
    }

    /// Mean load over the last `span`; `None` when no tick falls in it.
    pub fn mean_load(&self, now: Duration, span: Duration) -> Option<f64> {
        let (sum, count) = self
            .within(now, span)
            .fold((0.0, 0u32), |(s, c), t| (s + t.load, c + 1));
        (count > 0).then(|| sum / f64::from(count))
    }

    /// Largest `want` over the last `span`.
    pub fn max_want(&self, now: Duration, span: Duration) -> Option<u32> {
        self.within(now, span).map(|t| t.want).max()
    }

    /// Sets the newest tick's `want`, which depends on the mean that tick is part of.
    pub fn set_last_want(&mut self, want: u32) {
        if let Some(last) = self.ticks.back_mut() {
            last.want = want;
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ticks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(secs: u64, load: f64, want: u32) -> Tick {
        Tick {
            at: Duration::from_secs(secs),
            load,
            want,
        }
    }

    #[test]
    fn keeps_only_the_horizon_and_averages_the_span() {
        let mut w = Window::default();
        let horizon = Duration::from_secs(3);
        for (s, load) in [(0, 9.0), (1, 1.0), (2, 2.0), (3, 3.0)] {
            w.push(tick(s, load, s as u32), horizon);
        }
        assert_eq!(w.len(), 3, "the tick at 0 s is 3 s old and falls out");
        let now = Duration::from_secs(3);
        assert_eq!(w.mean_load(now, Duration::from_secs(2)), Some(2.5));
        assert_eq!(w.max_want(now, Duration::from_secs(3)), Some(3));
        assert_eq!(
            w.mean_load(Duration::from_secs(60), Duration::from_secs(2)),
            None
        );
    }

    #[test]
    fn a_clock_going_back_drops_the_future() {
        let mut w = Window::default();
        let horizon = Duration::from_secs(10);
        w.push(tick(5, 50.0, 5), horizon);
        w.push(tick(4, 4.0, 1), horizon);
        assert_eq!(w.len(), 1);
        assert_eq!(w.max_want(Duration::from_secs(4), horizon), Some(1));
    }
}
