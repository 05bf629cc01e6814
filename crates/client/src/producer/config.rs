//! [`ProducerConfig`]: the producer's settings, with Kafka's names and defaults.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::records::Compression;

use crate::error::{Error, Result};
use crate::partitioner::{DefaultPartitioner, Partitioner};

/// Producer settings. Each field names the Kafka setting it stands for; `Default` has the Java
/// client's defaults (librdkafka's where Java has no equivalent).
#[derive(Clone)]
pub struct ProducerConfig {
    /// `bootstrap.servers`: comma-separated `host:port` list.
    pub bootstrap: String,
    /// `client.id`.
    pub client_id: String,
    /// `acks`: 0 (no response), 1 (leader) or -1 (all in-sync replicas). Default -1.
    pub acks: i16,
    /// `enable.idempotence` (default true, as in Kafka 3.0+ clients): the producer gets a producer
    /// id (InitProducerId) and numbers each partition's batches, so the broker writes a retried
    /// batch once and in order. Requires `acks = -1`, `retries > 0` and `max_in_flight <= 5`.
    pub enable_idempotence: bool,
    /// `linger.ms`: how long a non-full batch may wait for more records. Default 5 ms.
    pub linger: Duration,
    /// `batch.size`: target size of one partition's batch in bytes (before compression). 16 KiB.
    pub batch_size: usize,
    /// `retries`: resends of a batch after a retriable error. Default `i32::MAX`: retrying is
    /// bounded by `delivery_timeout` instead.
    pub retries: u32,
    /// `retry.backoff.ms`. Default 100 ms.
    pub retry_backoff: Duration,
    /// `compression.type`. Default none.
    pub compression: Compression,
    /// `max.in.flight.requests.per.connection`: Produce requests outstanding per broker. 5.
    pub max_in_flight: usize,
    /// `request.timeout.ms`: how long to wait for one response. Default 30 s.
    pub request_timeout: Duration,
    /// `delivery.timeout.ms`: upper bound on the time from `send` until a record's outcome is
    /// reported (success or failure), retries included; a batch still unsent or waiting for a
    /// retry when it passes fails with [`Error::DeliveryTimeout`]. A batch in flight at that
    /// moment gets its outcome when its response arrives or `request_timeout` passes. Must be at
    /// least `linger + request_timeout`. Default 120 s.
    pub delivery_timeout: Duration,
    /// `max.request.size`: upper bound on the batches packed into one Produce request, and on one
    /// record, in bytes. Default 1 MiB.
    pub max_request_size: usize,
    /// `buffer.memory`: bytes of records the producer holds (queued, in flight or waiting for
    /// metadata) before `send` waits for room. Default 32 MiB.
    pub buffer_memory: usize,
    /// librdkafka's `queue.buffering.max.messages`: records the producer holds before `send`
    /// waits for room. Default 100,000.
    pub buffer_max_records: usize,
    /// `max.block.ms`: how long `send` waits for room in the buffer before failing with
    /// [`Error::BufferFull`], and how long a record waits for its topic's metadata. Default 60 s.
    pub max_block: Duration,
    /// `partitioner.class`.
    pub partitioner: Arc<dyn Partitioner>,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            bootstrap: "127.0.0.1:9092".into(),
            client_id: "tern-producer".into(),
            acks: -1,
            enable_idempotence: true,
            linger: Duration::from_millis(5),
            batch_size: 16 * 1024,
            retries: i32::MAX as u32,
            retry_backoff: Duration::from_millis(100),
            compression: Compression::None,
            max_in_flight: 5,
            request_timeout: Duration::from_secs(30),
            delivery_timeout: Duration::from_secs(120),
            max_request_size: 1024 * 1024,
            buffer_memory: 32 * 1024 * 1024,
            buffer_max_records: 100_000,
            max_block: Duration::from_secs(60),
            partitioner: Arc::new(DefaultPartitioner::new()),
        }
    }
}

/// Most requests an idempotent producer may have in flight per broker: the broker remembers the
/// last five batches of each producer and partition for duplicate detection.
pub(crate) const MAX_IN_FLIGHT_IDEMPOTENT: usize = 5;

impl ProducerConfig {
    /// Refuses contradictory settings, naming them as Kafka does.
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if !matches!(self.acks, -1..=1) {
            return bad(format!("acks must be -1, 0 or 1, not {}", self.acks));
        }
        if self.max_in_flight == 0 || self.batch_size == 0 {
            return bad("max.in.flight.requests.per.connection and batch.size must be > 0".into());
        }
        if self.buffer_memory == 0 || self.buffer_max_records == 0 {
            return bad("buffer.memory and queue.buffering.max.messages must be > 0".into());
        }
        if self.delivery_timeout < self.linger + self.request_timeout {
            return bad(format!(
                "delivery.timeout.ms ({} ms) must be at least linger.ms + request.timeout.ms ({} ms)",
                self.delivery_timeout.as_millis(),
                (self.linger + self.request_timeout).as_millis()
            ));
        }
        if self.enable_idempotence {
            if self.acks != -1 {
                return bad(format!(
                    "enable.idempotence requires acks=-1 (all), not {}; turn idempotence off for other acks",
                    self.acks
                ));
            }
            if self.retries == 0 {
                return bad("enable.idempotence requires retries > 0".into());
            }
            if self.max_in_flight > MAX_IN_FLIGHT_IDEMPOTENT {
                return bad(format!(
                    "enable.idempotence requires max.in.flight.requests.per.connection <= \
                     {MAX_IN_FLIGHT_IDEMPOTENT}, not {}",
                    self.max_in_flight
                ));
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for ProducerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerConfig")
            .field("bootstrap", &self.bootstrap)
            .field("client_id", &self.client_id)
            .field("acks", &self.acks)
            .field("enable_idempotence", &self.enable_idempotence)
            .field("linger", &self.linger)
            .field("batch_size", &self.batch_size)
            .field("retries", &self.retries)
            .field("compression", &self.compression)
            .field("max_in_flight", &self.max_in_flight)
            .field("request_timeout", &self.request_timeout)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("buffer_memory", &self.buffer_memory)
            .field("buffer_max_records", &self.buffer_max_records)
            .field("max_block", &self.max_block)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kafkas_and_valid() {
        let c = ProducerConfig::default();
        assert!(c.enable_idempotence);
        assert_eq!((c.acks, c.max_in_flight, c.retries), (-1, 5, i32::MAX as u32));
        assert_eq!(c.delivery_timeout, Duration::from_secs(120));
        assert_eq!((c.buffer_memory, c.max_block), (33_554_432, Duration::from_secs(60)));
        c.validate().unwrap();
    }

    #[test]
    fn idempotence_refuses_what_it_cannot_honour() {
        let err = |c: ProducerConfig| c.validate().unwrap_err().to_string();
        assert!(err(ProducerConfig { acks: 1, ..Default::default() }).contains("acks=-1"));
        assert!(err(ProducerConfig { retries: 0, ..Default::default() }).contains("retries"));
        assert!(err(ProducerConfig { max_in_flight: 6, ..Default::default() }).contains("max.in.flight"));
        ProducerConfig { acks: 1, max_in_flight: 6, enable_idempotence: false, ..Default::default() }
            .validate()
            .unwrap();
        let short = ProducerConfig { delivery_timeout: Duration::from_secs(1), ..Default::default() };
        assert!(err(short).contains("delivery.timeout.ms"));
    }
}
