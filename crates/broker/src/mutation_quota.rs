//! The controller mutation quota of KIP-599: partitions created, added or deleted per second and
//! client id, as a token bucket holding `controller.quota.window.num` x
//! `controller.quota.window.size.seconds` seconds of the rate. Newer request versions (CreateTopics
//! v6+, CreatePartitions v3+, DeleteTopics v5+) are strict: a topic is refused with
//! THROTTLING_QUOTA_EXCEEDED while the client's bucket is below zero (one that brings it below
//! zero still passes, as in Kafka); older versions, and topics created by Metadata, are
//! permissive: always accepted, answered with the time the client should wait.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::BrokerConfig;

/// Buckets kept for this many client ids at most; full buckets are forgotten first.
const MAX_TRACKED_CLIENTS: usize = 10_000;

pub(crate) struct MutationQuota {
    /// Partitions per second; `None`: no quota.
    rate: Option<f64>,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The quota as one request sees it: once a topic of a strict request has been refused, the
/// rest of the request is refused too.
pub(crate) struct RequestQuota<'a> {
    quota: &'a MutationQuota,
    client_id: &'a str,
    strict: bool,
    /// The time the client should wait, once the quota has been exceeded.
    pub throttle_time_ms: i32,
}

impl MutationQuota {
    pub(crate) fn new(config: &BrokerConfig) -> MutationQuota {
        let rate = config.controller_mutation_rate();
        let burst = rate.map_or(0.0, |r| r * config.controller_quota_burst_seconds());
        MutationQuota { rate, burst, buckets: Mutex::new(HashMap::new()) }
    }

    pub(crate) fn for_request<'a>(&'a self, client_id: &'a str, strict: bool) -> RequestQuota<'a> {
        RequestQuota { quota: self, client_id, strict, throttle_time_ms: 0 }
    }

    /// Takes `partitions` tokens from the client's bucket unless `strict` and it is already
    /// below zero. Returns whether they were taken and, if the bucket is below zero, how long
    /// until it is back at zero.
    fn record(&self, client_id: &str, partitions: u64, strict: bool, now: Instant) -> (bool, i32) {
        let Some(rate) = self.rate else { return (true, 0) };
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_TRACKED_CLIENTS && !buckets.contains_key(client_id) {
            let (rate, burst) = (rate, self.burst);
            buckets.retain(|_, b| b.tokens + rate * now.duration_since(b.at).as_secs_f64() < burst);
        }
        let bucket = buckets.entry(client_id.to_string()).or_insert(Bucket { tokens: self.burst, at: now });
        bucket.tokens = (bucket.tokens + rate * now.duration_since(bucket.at).as_secs_f64()).min(self.burst);
        bucket.at = now;
        let wait = |tokens: f64| {
            if tokens < 0.0 {
                ((-tokens / rate) * 1000.0).round().min(i32::MAX as f64) as i32
            } else {
                0
            }
        };
        if strict && bucket.tokens < 0.0 {
            return (false, wait(bucket.tokens));
        }
        bucket.tokens -= partitions as f64;
        (true, wait(bucket.tokens))
    }
}

impl RequestQuota<'_> {
    /// Records a mutation of `partitions` partitions; `Err` with a message if it is refused.
    pub(crate) fn record(&mut self, partitions: u64) -> Result<(), String> {
        if self.strict && self.throttle_time_ms > 0 {
            return Err(self.refusal());
        }
        let (taken, wait) = self.quota.record(self.client_id, partitions, self.strict, Instant::now());
        if !taken {
            self.throttle_time_ms = wait.max(1);
            return Err(self.refusal());
        }
        if !self.strict {
            self.throttle_time_ms = self.throttle_time_ms.max(wait);
        }
        Ok(())
    }

    fn refusal(&self) -> String {
        format!(
            "The throttling quota has been exceeded: controller.quota.mutation.rate is {} partitions per second \
             for client id '{}'; retry after {} ms.",
            self.quota.rate.unwrap_or_default(),
            self.client_id,
            self.throttle_time_ms
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn quota(rate: f64, burst_seconds: f64) -> MutationQuota {
        MutationQuota { rate: Some(rate), burst: rate * burst_seconds, buckets: Mutex::new(HashMap::new()) }
    }

    #[test]
    fn strict_refuses_only_once_the_bucket_is_below_zero() {
        let q = quota(10.0, 1.0);
        let now = Instant::now();
        assert_eq!(q.record("a", 8, true, now), (true, 0));
        // 2 tokens left: a mutation of 5 still passes and leaves the bucket at -3.
        assert_eq!(q.record("a", 5, true, now), (true, 300));
        assert_eq!(q.record("a", 1, true, now), (false, 300));
        // Another client has its own bucket.
        assert_eq!(q.record("b", 1, true, now), (true, 0));
        // 0.3 s later the bucket is back at zero.
        assert_eq!(q.record("a", 1, true, now + Duration::from_millis(300)), (true, 100));
    }

    #[test]
    fn permissive_always_records_and_reports_the_wait() {
        let q = quota(1.0, 1.0);
        let now = Instant::now();
        assert_eq!(q.record("a", 3, false, now), (true, 2000));
        assert_eq!(q.record("a", 1, false, now), (true, 3000));
    }

    #[test]
    fn a_request_stops_at_its_first_refusal() {
        let q = quota(1.0, 1.0);
        let mut r = q.for_request("a", true);
        assert!(r.record(5).is_ok());
        assert!(r.record(1).is_err());
        assert!(r.throttle_time_ms >= 3000);
        let mut unlimited_broker = MutationQuota { rate: None, burst: 0.0, buckets: Mutex::new(HashMap::new()) };
        let mut r = unlimited_broker.for_request("a", true);
        assert!(r.record(1_000_000).is_ok());
        assert!(unlimited_broker.buckets.get_mut().unwrap().is_empty());
    }
}
