//! Rate-limited reporting of refused appends. A full disk or a misbehaving client can cause tens
//! of thousands of refusals a second: each must reach the operator, but not as a line apiece.
//! The first refusal of a kind is logged at once, later ones at most every [`INTERVAL_MS`] with
//! the number left unlogged in between. Storage failures (ERROR) and refused input (WARN) are
//! limited separately, so a flood of bad input never hides a failing disk.

use std::path::Path;
use std::sync::Mutex;

use crate::log::lock;
use crate::segment::Damage;
use crate::StorageError;

const INTERVAL_MS: i64 = 10_000;

#[derive(Debug, Default)]
struct Limiter {
    /// When a line was last logged (`None`: never).
    last_logged_ms: Option<i64>,
    /// Refusals since then that were not logged.
    suppressed: u64,
}

impl Limiter {
    /// `Some(number suppressed since the last line)` if a line is due now.
    fn due(&mut self, now_ms: i64) -> Option<u64> {
        if self.last_logged_ms.is_some_and(|t| now_ms.saturating_sub(t) < INTERVAL_MS) {
            self.suppressed += 1;
            return None;
        }
        self.last_logged_ms = Some(now_ms);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[derive(Debug, Default)]
pub(crate) struct Refusals {
    storage: Mutex<Limiter>,
    input: Mutex<Limiter>,
    damage: Mutex<Limiter>,
}

impl Refusals {
    /// Damage a read ran into: the read fails, the operator must hear of it.
    pub(crate) fn report_damage(&self, damage: &Damage) {
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let Some(suppressed) = lock(&self.damage).due(now_ms) else { return };
        tracing::error!(%damage, more_since_last_report = suppressed, "read refused: the log is damaged here");
    }

    pub(crate) fn report(&self, dir: &Path, error: &StorageError, now_ms: i64) {
        let failed_storage = matches!(error, StorageError::Io { .. } | StorageError::Offline { .. });
        let limiter = if failed_storage { &self.storage } else { &self.input };
        let Some(suppressed) = lock(limiter).due(now_ms) else { return };
        if failed_storage {
            tracing::error!(log = %dir.display(), %error, more_since_last_report = suppressed, "append failed");
        } else {
            tracing::warn!(log = %dir.display(), %error, more_since_last_report = suppressed, "append refused");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_first_then_at_most_every_interval_with_a_count() {
        let mut l = Limiter::default();
        assert_eq!(l.due(1_000), Some(0));
        assert_eq!(l.due(1_001), None);
        assert_eq!(l.due(5_000), None);
        assert_eq!(l.due(11_000), Some(2));
        assert_eq!(l.due(11_001), None);
    }
}
