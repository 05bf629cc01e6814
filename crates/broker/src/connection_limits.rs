//! What the socket server bounds, with Kafka's settings: connections in all and per client
//! address (`max.connections`, `max.connections.per.ip[.overrides]`), requests read but not yet
//! answered (`queued.max.requests`), bytes of large requests buffered at once
//! (`queued.max.request.bytes`), and how long a connection may stay idle
//! (`connections.max.idle.ms`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::config::{BrokerConfig, ConfigError};

/// Each connection reads into a buffer of its own, up to this much beyond what it has; a frame
/// up to this size is read there without drawing on the shared receive budget.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

pub(crate) struct Limits {
    /// `socket.request.max.bytes`.
    pub max_frame: usize,
    /// `queued.max.request.bytes` as permits of one byte; `None`: unbounded.
    pub receive_budget: Option<Arc<Semaphore>>,
    pub receive_budget_bytes: usize,
    /// `queued.max.requests`: one permit per request read and not yet answered.
    pub queued_requests: Arc<Semaphore>,
    pub idle: Option<Duration>,
    /// `max.connections`: one permit per open connection.
    pub connections: Arc<Semaphore>,
    pub max_connections: usize,
    pub per_ip: Arc<PerIp>,
}

impl Limits {
    pub(crate) fn new(config: &BrokerConfig) -> Result<Limits, ConfigError> {
        let budget = config.queued_max_request_bytes();
        let max_connections = config.max_connections().min(Semaphore::MAX_PERMITS);
        Ok(Limits {
            max_frame: config.socket_request_max_bytes(),
            receive_budget: budget.map(|b| Arc::new(Semaphore::new(b.min(Semaphore::MAX_PERMITS)))),
            receive_budget_bytes: budget.unwrap_or(usize::MAX),
            queued_requests: Arc::new(Semaphore::new(config.queued_max_requests())),
            idle: config.connections_max_idle_ms().map(Duration::from_millis),
            connections: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            per_ip: Arc::new(PerIp {
                default: config.max_connections_per_ip(),
                overrides: config.max_connections_per_ip_overrides()?.into_iter().collect(),
                open: Mutex::new(HashMap::new()),
            }),
        })
    }
}

/// Open connections per client address.
pub(crate) struct PerIp {
    default: usize,
    overrides: HashMap<IpAddr, usize>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection of an address; closing it (dropping this) frees the slot.
pub(crate) struct IpSlot {
    per_ip: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    /// A slot for one more connection from `ip`, or the limit that refuses it.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<IpSlot, usize> {
        let limit = self.overrides.get(&ip).copied().unwrap_or(self.default);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= limit {
            if *count == 0 {
                open.remove(&ip);
            }
            return Err(limit);
        }
        *count += 1;
        Ok(IpSlot { per_ip: self.clone(), ip })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.per_ip.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// When a connection last moved bytes, and whether a request of it is being handled: a
/// connection is idle when neither has happened for `connections.max.idle.ms`.
pub(crate) struct Activity {
    origin: Instant,
    last_ms: AtomicU64,
    busy: AtomicBool,
}

impl Activity {
    pub(crate) fn new() -> Activity {
        Activity { origin: Instant::now(), last_ms: AtomicU64::new(0), busy: AtomicBool::new(false) }
    }

    pub(crate) fn touch(&self) {
        self.last_ms.store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub(crate) fn set_busy(&self, busy: bool) {
        self.busy.store(busy, Ordering::Relaxed);
        self.touch();
    }

    fn last(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Completes once the connection has been idle for `idle`; never if `idle` is `None`.
    pub(crate) async fn idle_for(&self, idle: Option<Duration>) {
        let Some(idle) = idle else { return std::future::pending().await };
        loop {
            tokio::time::sleep_until(self.last() + idle).await;
            if self.busy.load(Ordering::Relaxed) {
                tokio::time::sleep(idle).await;
            } else if self.last() + idle <= Instant::now() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_slots_are_counted_and_freed() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let per_ip = Arc::new(PerIp { default: 2, overrides: [(other, 0)].into(), open: Mutex::new(HashMap::new()) });
        let a = per_ip.admit(ip).unwrap();
        let _b = per_ip.admit(ip).unwrap();
        assert_eq!(per_ip.admit(ip).err(), Some(2));
        assert_eq!(per_ip.admit(other).err(), Some(0));
        drop(a);
        assert!(per_ip.admit(ip).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_means_no_bytes_and_no_request_in_hand() {
        let activity = Activity::new();
        activity.set_busy(true);
        let idle = Some(Duration::from_secs(10));
        assert!(tokio::time::timeout(Duration::from_secs(25), activity.idle_for(idle)).await.is_err());
        activity.set_busy(false);
        let start = Instant::now();
        activity.idle_for(idle).await;
        assert!(start.elapsed() >= Duration::from_secs(10));
    }
}
