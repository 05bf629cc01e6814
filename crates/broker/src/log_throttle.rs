//! Log lines about what clients send, bounded: a client that repeats a refused request in a
//! loop must not flood the operator's log.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// At most one line per `interval_ms`; lines held back are counted and reported with the next.
pub(crate) struct LogThrottle {
    interval_ms: i64,
    last_ms: AtomicI64,
    held_back: AtomicU64,
}

impl LogThrottle {
    pub(crate) const fn new(interval_ms: i64) -> LogThrottle {
        LogThrottle { interval_ms, last_ms: AtomicI64::new(i64::MIN), held_back: AtomicU64::new(0) }
    }

    /// `Some(lines held back since the last one)` if a line may be logged now.
    pub(crate) fn admit(&self, now_ms: i64) -> Option<u64> {
        let last = self.last_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) >= self.interval_ms
            && self.last_ms.compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            return Some(self.held_back.swap(0, Ordering::Relaxed));
        }
        self.held_back.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_of_the_rest() {
        let t = LogThrottle::new(1000);
        assert_eq!(t.admit(5000), Some(0));
        assert_eq!(t.admit(5001), None);
        assert_eq!(t.admit(5999), None);
        assert_eq!(t.admit(6000), Some(2));
        assert_eq!(t.admit(6000), None);
    }
}
