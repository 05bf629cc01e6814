//! Log lines a client can trigger at will are limited, so a flood of refused requests cannot
//! flood the log: the first one is logged, then at most one per period.

use std::sync::atomic::{AtomicI64, Ordering};

pub(crate) struct Every {
    period_ms: i64,
    last_ms: AtomicI64,
}

impl Every {
    pub(crate) const fn new(period_ms: i64) -> Every {
        Every { period_ms, last_ms: AtomicI64::new(i64::MIN) }
    }

    /// Whether to log now: true at most once per period.
    pub(crate) fn ready(&self) -> bool {
        let now = crate::now_ms();
        let last = self.last_ms.load(Ordering::Relaxed);
        now.saturating_sub(last) >= self.period_ms
            && self.last_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn once_per_period() {
        let every = super::Every::new(60_000);
        assert!(every.ready());
        assert!(!every.ready());
    }
}
