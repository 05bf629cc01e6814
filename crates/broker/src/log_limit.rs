//! Rate limits for log lines a client can trigger at will (refused requests, closed
//! connections): a burst per window goes through, the rest is counted and reported with the next
//! line that goes through, so a flood neither fills the disk nor goes unnoticed.

use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(10);
const BURST: u32 = 20;

pub(crate) struct LogLimiter {
    state: Mutex<State>,
}

struct State {
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

impl LogLimiter {
    pub(crate) const fn new() -> LogLimiter {
        LogLimiter { state: Mutex::new(State { window_start: None, in_window: 0, suppressed: 0 }) }
    }

    /// `Some(n)` if this line may be logged, `n` being how many were suppressed before it.
    pub(crate) fn allow(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if s.window_start.is_none_or(|start| now.duration_since(start) >= WINDOW) {
            s.window_start = Some(now);
            s.in_window = 0;
        }
        if s.in_window >= BURST {
            s.suppressed += 1;
            return None;
        }
        s.in_window += 1;
        Some(std::mem::take(&mut s.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_through_then_lines_are_counted() {
        let limiter = LogLimiter::new();
        for _ in 0..BURST {
            assert_eq!(limiter.allow(), Some(0));
        }
        assert_eq!(limiter.allow(), None);
        assert_eq!(limiter.allow(), None);
        limiter.state.lock().unwrap().window_start = Some(Instant::now() - WINDOW);
        assert_eq!(limiter.allow(), Some(2));
    }
}
