//! Per-partition waiters: Kafka's purgatory watcher lists, for delayed fetches.
//!
//! A long-polling fetch watches only the partitions it reads, and an append wakes only the
//! fetches watching that partition: idle consumers of other partitions cost nothing on a
//! produce (a broker-wide signal woke every waiting fetch to re-read all its partitions on
//! every append). Replication will wake the same lists when a partition's high watermark moves.

use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

/// The fetches waiting for one partition to change. A watcher is a fetch's `Notify`, held
/// weakly: a finished fetch drops it and its entries are swept out lazily, so a fetch never has
/// to find and remove itself from every partition it watched.
#[derive(Default)]
pub struct Waiters {
    watchers: Mutex<Vec<Weak<Notify>>>,
}

impl Waiters {
    /// Registers `waker` to be notified at the next [`Waiters::wake`]. Registering before reading
    /// loses no wake-up: `Notify` keeps a permit for a wake that comes before the wait.
    pub fn watch(&self, waker: &Arc<Notify>) {
        let mut watchers = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        // Sweep finished fetches before the list would grow: amortised, as a Vec's doubling.
        if watchers.len() == watchers.capacity() {
            watchers.retain(|w| w.strong_count() > 0);
        }
        watchers.push(Arc::downgrade(waker));
    }

    /// Notifies every live watcher; they stay registered until their fetch ends.
    pub fn wake(&self) {
        let mut watchers = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        watchers.retain(|w| match w.upgrade() {
            Some(waker) => {
                waker.notify_one();
                true
            }
            None => false,
        });
    }

    /// How many entries the list holds (live or not yet swept).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.watchers.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_wake_reaches_only_the_fetches_watching_that_partition() {
        let (p0, p1) = (Waiters::default(), Waiters::default());
        let (fetch_a, fetch_b) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        p0.watch(&fetch_a);
        p1.watch(&fetch_b);
        p0.wake();
        tokio::time::timeout(Duration::from_secs(1), fetch_a.notified()).await.expect("fetch a woken");
        let b = tokio::time::timeout(Duration::from_millis(50), fetch_b.notified()).await;
        assert!(b.is_err(), "an append to p0 must not wake a fetch of p1");
    }

    #[tokio::test]
    async fn a_wake_before_the_wait_is_not_lost() {
        let p = Waiters::default();
        let fetch = Arc::new(Notify::new());
        p.watch(&fetch);
        p.wake(); // arrives while the fetch is still reading
        tokio::time::timeout(Duration::from_secs(1), fetch.notified()).await.expect("kept as a permit");
    }

    #[test]
    fn finished_fetches_are_swept_and_the_list_stays_bounded() {
        let p = Waiters::default();
        let live = Arc::new(Notify::new());
        p.watch(&live);
        for _ in 0..10_000 {
            let finished = Arc::new(Notify::new());
            p.watch(&finished);
        }
        assert!(p.len() <= 64, "dead watchers swept while registering: {} left", p.len());
        p.wake();
        assert_eq!(p.len(), 1, "a wake keeps only the live watcher");
    }
}
