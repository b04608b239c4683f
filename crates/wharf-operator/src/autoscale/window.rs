//! The sliding window of per-tick observations the decision looks back over.

use std::collections::VecDeque;
use std::time::Duration;

/// One decision tick: the app's total load then.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Tick {
    pub at: Duration,
    pub load: f64,
}

/// Ticks of the last `horizon`, oldest first. Time is a `Duration` since an arbitrary origin chosen
/// by the caller, which keeps the decision pure and tests free of clocks.
#[derive(Debug, Clone, Default)]
pub(crate) struct Window {
    ticks: VecDeque<Tick>,
    /// When the current unbroken run of ticks began: the first tick, or the first after a gap
    /// longer than the horizon (every pod unreachable that long).
    since: Option<Duration>,
}

impl Window {
    pub fn push(&mut self, tick: Tick, horizon: Duration) {
        // A clock that went backwards (it should not, it is monotonic) must not leave ticks from
        // "the future" in the window forever.
        while self.ticks.back().is_some_and(|last| last.at > tick.at) {
            self.ticks.pop_back();
        }
        let gap = self
            .ticks
            .back()
            .map(|last| tick.at.saturating_sub(last.at));
        if gap.is_none_or(|gap| gap > horizon) || self.since.is_some_and(|since| since > tick.at) {
            self.since = Some(tick.at);
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

    /// Whether the ticks reach back unbroken over `span` as of `now`: averages over a window
    /// that has only just started say little about it.
    pub fn covers(&self, now: Duration, span: Duration) -> bool {
        self.since
            .is_some_and(|since| now.saturating_sub(since) >= span)
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

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ticks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(secs: u64, load: f64) -> Tick {
        Tick {
            at: Duration::from_secs(secs),
            load,
        }
    }

    #[test]
    fn keeps_only_the_horizon_and_averages_the_span() {
        let mut w = Window::default();
        let horizon = Duration::from_secs(3);
        for (s, load) in [(0, 9.0), (1, 1.0), (2, 2.0), (3, 3.0)] {
            w.push(tick(s, load), horizon);
        }
        assert_eq!(w.len(), 3, "the tick at 0 s is 3 s old and falls out");
        let now = Duration::from_secs(3);
        assert_eq!(w.mean_load(now, Duration::from_secs(2)), Some(2.5));
        assert_eq!(w.mean_load(now, Duration::from_secs(3)), Some(2.0));
        assert_eq!(
            w.mean_load(Duration::from_secs(60), Duration::from_secs(2)),
            None
        );
    }

    #[test]
    fn a_clock_going_back_drops_the_future() {
        let mut w = Window::default();
        let horizon = Duration::from_secs(10);
        w.push(tick(5, 50.0), horizon);
        w.push(tick(4, 4.0), horizon);
        assert_eq!(w.len(), 1);
        assert_eq!(w.mean_load(Duration::from_secs(4), horizon), Some(4.0));
        assert!(!w.covers(Duration::from_secs(5), Duration::from_secs(2)));
    }

    #[test]
    fn covers_counts_from_the_first_tick_and_restarts_after_a_gap() {
        let mut w = Window::default();
        let horizon = Duration::from_secs(10);
        let span = Duration::from_secs(5);
        assert!(
            !w.covers(Duration::from_secs(100), span),
            "nothing seen yet"
        );
        for s in 0..5 {
            w.push(tick(s, 1.0), horizon);
        }
        assert!(!w.covers(Duration::from_secs(4), span));
        w.push(tick(5, 1.0), horizon);
        assert!(w.covers(Duration::from_secs(5), span));
        // No tick for longer than the horizon: the run starts again.
        w.push(tick(30, 1.0), horizon);
        assert!(!w.covers(Duration::from_secs(30), span));
        assert!(w.covers(Duration::from_secs(35), span));
    }
}
