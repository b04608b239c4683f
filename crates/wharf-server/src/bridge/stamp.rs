//! An optional duration in one atomic word, for values one thread sets and another reads
//! without a lock: 0 means none, anything else is nanoseconds plus one (so a zero duration is
//! still "set").

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Default)]
pub(crate) struct Stamp(AtomicU64);

fn encode(value: Duration) -> u64 {
    u64::try_from(value.as_nanos()).unwrap_or(u64::MAX - 1).saturating_add(1)
}

impl Stamp {
    /// A stamp holding `value`.
    pub(crate) fn new(value: Option<Duration>) -> Self {
        Stamp(AtomicU64::new(value.map_or(0, encode)))
    }

    pub(crate) fn set(&self, value: Duration) {
        self.0.store(encode(value), Ordering::Relaxed);
    }

    /// Sets `value` unless a value is set already.
    pub(crate) fn set_if_none(&self, value: Duration) {
        if self.0.load(Ordering::Relaxed) == 0 {
            self.set(value);
        }
    }

    pub(crate) fn clear(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            n => Some(Duration::from_nanos(n - 1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_a_value_and_none_is_not() {
        let stamp = Stamp::default();
        assert_eq!(stamp.get(), None);
        stamp.set(Duration::ZERO);
        assert_eq!(stamp.get(), Some(Duration::ZERO));
        stamp.set_if_none(Duration::from_secs(1));
        assert_eq!(stamp.get(), Some(Duration::ZERO));
        stamp.clear();
        stamp.set_if_none(Duration::from_millis(3));
        assert_eq!(stamp.get(), Some(Duration::from_millis(3)));
        assert_eq!(Stamp::new(Some(Duration::MAX)).get(), Some(Duration::from_nanos(u64::MAX - 1)));
    }
}
