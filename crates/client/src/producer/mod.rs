//! The producer: per-partition batching, linger, a bounded buffer, idempotence, retries in order,
//! pipelined Produce requests.
//!
//! `send` appends to an in-memory accumulator under a short lock (waiting first, up to
//! `max_block`, while the buffer is full); a background sender task drains ready batches, groups
//! them per leader and keeps up to `max_in_flight` Produce requests outstanding per broker.
//!
//! Every batch ends in exactly one outcome, reported to all its records' futures: acknowledged,
//! or an error (non-retriable, retries exhausted, `delivery_timeout` passed, a fatal producer
//! error, or the producer gone). `flush` returns once every batch sent before it has one.

mod config;
mod delivery;
mod idempotence;
mod request;
mod sender;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::records::Record;
use tokio::sync::{oneshot, Notify};

pub use config::ProducerConfig;
pub use delivery::{DeliveryFuture, RecordMetadata};
use delivery::{Outcome, Placement};
use idempotence::Stamp;

use crate::cluster::{Cluster, ClusterConfig};
use crate::error::{Error, Result};
use crate::records::{producer_record, RECORD_OVERHEAD};

/// A record to produce.
#[derive(Debug, Clone, Default)]
pub struct ProducerRecord {
    pub topic: String,
    /// Explicit partition; `None` lets the partitioner choose.
    pub partition: Option<i32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Milliseconds since the epoch; `None` = now.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    /// A keyless record with `value`.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        ProducerRecord { topic: topic.into(), value: Some(value.into()), ..Default::default() }
    }

    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn with_partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    pub fn with_header(mut self, name: impl Into<String>, value: Option<Bytes>) -> Self {
        self.headers.push((name.into(), value));
        self
    }

    pub fn with_timestamp(mut self, ts: i64) -> Self {
        self.timestamp = Some(ts);
        self
    }

    fn size_estimate(&self) -> usize {
        RECORD_OVERHEAD
            + self.key.as_ref().map_or(0, |k| k.len())
            + self.value.as_ref().map_or(0, |v| v.len())
            + self.headers.iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len()) + 4).sum::<usize>()
    }
}

pub(crate) struct OpenBatch {
    records: Vec<Record>,
    bytes: usize,
    created: Instant,
    outcome: Arc<Outcome>,
}

/// A closed batch waiting to be sent (or re-sent).
pub(crate) struct ReadyBatch {
    pub records: Vec<Record>,
    /// Set after the first encode so retries do not compress again.
    pub encoded: Option<Bytes>,
    /// The producer fields written in `encoded`.
    pub encoded_stamp: Option<Stamp>,
    /// Bytes of its records as counted against `buffer_memory`.
    pub bytes: usize,
    pub count: u32,
    pub outcome: Arc<Outcome>,
    pub attempts: u32,
    pub retry_at: Option<Instant>,
    pub created: Instant,
    /// Position among its partition's batches: retries go back in this order.
    pub number: u64,
    /// Producer id, epoch and sequence, given at the first send with idempotence and kept
    /// across retries until the producer id is reset.
    pub stamp: Option<Stamp>,
    pub last_error: Option<Error>,
}

#[derive(Default)]
pub(crate) struct PartQueue {
    open: Option<OpenBatch>,
    /// Ordered by `number`.
    pub ready: VecDeque<ReadyBatch>,
    next_number: u64,
    /// The sequence the next numbered batch starts at.
    pub next_sequence: i32,
    /// Batches sent at least once and without an outcome yet (in flight or waiting to be retried).
    pub unfinished: BTreeSet<u64>,
    pub in_flight: usize,
}

impl PartQueue {
    /// Puts a batch back for a retry, keeping the partition's order.
    pub fn requeue(&mut self, batch: ReadyBatch) {
        let at = self.ready.iter().position(|b| b.number > batch.number).unwrap_or(self.ready.len());
        self.ready.insert(at, batch);
    }
}

pub(crate) struct TopicQueues {
    pub name: Arc<str>,
    pub num_partitions: i32,
    pub parts: Vec<PartQueue>,
}

struct PendingRecord {
    record: ProducerRecord,
    timestamp: i64,
    size: usize,
    tx: oneshot::Sender<Placement>,
    deadline: Instant,
}

#[derive(Default)]
pub(crate) struct State {
    pub topics: HashMap<String, TopicQueues>,
    pending: VecDeque<PendingRecord>,
    /// Open, ready or in-flight batches plus pending records; flush waits for 0.
    pub incomplete: usize,
    pub flushing: usize,
    pub closed: bool,
    pub refresh_metadata: bool,
    /// Record bytes and records held, bounded by `buffer_memory` and `buffer_max_records`.
    buffered_bytes: usize,
    buffered_records: usize,
    /// Batches in Produce requests awaiting their response.
    pub in_flight: usize,
    /// The idempotent producer's id and epoch, once InitProducerId answered.
    pub producer_id: Option<(i64, i16)>,
    /// A numbered batch failed or the broker lost track of our sequences: get a new producer id
    /// once nothing is in flight, and renumber what is left.
    pub reset_producer_id: bool,
    /// An error that ends the producer: every batch fails with it.
    pub fatal: Option<Error>,
}

pub(crate) struct Shared {
    pub config: ProducerConfig,
    pub cluster: Arc<Cluster>,
    pub state: Mutex<State>,
    /// Wakes the sender task.
    pub wake: Notify,
    /// Wakes `flush` callers when `incomplete` reaches 0.
    pub idle: Notify,
    /// Wakes `send` callers waiting for room in the buffer.
    space: Notify,
}

impl Shared {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives a batch that left its partition queue its one outcome and releases its room in the
    /// buffer. `sent`: it was counted in flight.
    pub fn finish(&self, st: &mut State, topic: &str, partition: i32, batch: ReadyBatch, r: Result<(i64, i64)>) {
        if let Some(q) = st.topics.get_mut(topic).and_then(|t| t.parts.get_mut(partition as usize)) {
            q.unfinished.remove(&batch.number);
        }
        if let Err(e) = &r {
            tracing::debug!(%topic, partition, records = batch.count, error = %e, "batch failed");
            if batch.stamp.is_some() && self.config.enable_idempotence {
                // Its sequence numbers may never reach the broker: later batches would be refused.
                st.reset_producer_id = true;
            }
        }
        if batch.outcome.complete(r) {
            st.incomplete -= 1;
        }
        self.release(st, batch.bytes, batch.count as usize);
    }

    fn release(&self, st: &mut State, bytes: usize, records: usize) {
        st.buffered_bytes -= bytes;
        st.buffered_records -= records;
        self.space.notify_waiters();
        if st.incomplete == 0 {
            self.idle.notify_waiters();
        }
    }

    /// Counts a batch back out of flight.
    pub fn landed(&self, st: &mut State, topic: &str, partition: i32) {
        st.in_flight -= 1;
        if let Some(q) = st.topics.get_mut(topic).and_then(|t| t.parts.get_mut(partition as usize)) {
            q.in_flight -= 1;
        }
    }

    /// Fails everything not in flight with `e` (a fatal error, or the producer gone).
    pub fn fail_queued(&self, st: &mut State, e: &Error) {
        for p in std::mem::take(&mut st.pending) {
            st.incomplete -= 1;
            let _ = p.tx.send(Err(e.clone()));
            self.release(st, p.size, 1);
        }
        let mut batches = Vec::new();
        for tq in st.topics.values_mut() {
            for (p, q) in tq.parts.iter_mut().enumerate() {
                if let Some(open) = q.open.take() {
                    q.next_number += 1;
                    batches.push((tq.name.clone(), p as i32, open.into_ready(q.next_number - 1)));
                }
                batches.extend(q.ready.drain(..).map(|b| (tq.name.clone(), p as i32, b)));
            }
        }
        for (topic, p, b) in batches {
            self.finish(st, &topic, p, b, Err(e.clone()));
        }
    }
}

impl OpenBatch {
    fn into_ready(self, number: u64) -> ReadyBatch {
        ReadyBatch {
            count: self.records.len() as u32,
            records: self.records,
            encoded: None,
            encoded_stamp: None,
            bytes: self.bytes,
            outcome: self.outcome,
            attempts: 0,
            retry_at: None,
            created: self.created,
            number,
            stamp: None,
            last_error: None,
        }
    }
}

/// An async Kafka producer. Dropping it flushes outstanding records in the background.
pub struct Producer {
    shared: Arc<Shared>,
    sender: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").field("config", &self.shared.config).finish()
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Whether `send` queued the record or found no room.
enum Enqueue {
    Queued(DeliveryFuture),
    Full(ProducerRecord),
}

impl Producer {
    /// Connects to the cluster and starts the sender task.
    pub async fn new(config: ProducerConfig) -> Result<Self> {
        config.validate()?;
        let cluster = Cluster::connect(ClusterConfig {
            bootstrap: config.bootstrap.clone(),
            client_id: config.client_id.clone(),
            request_timeout: config.request_timeout,
        })
        .await?;
        let shared = Arc::new(Shared {
            config,
            cluster,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            idle: Notify::new(),
            space: Notify::new(),
        });
        let sender = tokio::spawn(sender::run(shared.clone()));
        Ok(Producer { shared, sender: Some(sender) })
    }

    /// The cluster handle this producer uses (metadata, connections).
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.shared.cluster
    }

    /// Queues `record`, first waiting up to `max_block` while the buffer is full, and returns a
    /// future for its delivery. Records to one partition are delivered in the order they were
    /// queued (with idempotence also across retries), so many sends can be queued before
    /// awaiting any of the futures.
    ///
    /// Fails without queueing the record when the buffer stays full ([`Error::BufferFull`]),
    /// the producer is closed or failed, or the record is invalid (bad partition, larger than
    /// `max_request_size` or `buffer_memory`).
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let deadline = tokio::time::Instant::now() + self.shared.config.max_block;
        let mut record = record;
        loop {
            let space = self.shared.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            match self.enqueue(record)? {
                Enqueue::Queued(f) => return Ok(f),
                Enqueue::Full(r) => record = r,
            }
            if tokio::time::timeout_at(deadline, space).await.is_err() {
                return Err(self.buffer_full());
            }
        }
    }

    /// Like [`send`](Producer::send) but never waits: fails with [`Error::BufferFull`] at once
    /// when there is no room (librdkafka's QUEUE_FULL).
    pub fn try_send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        match self.enqueue(record)? {
            Enqueue::Queued(f) => Ok(f),
            Enqueue::Full(_) => Err(self.buffer_full()),
        }
    }

    fn buffer_full(&self) -> Error {
        let cfg = &self.shared.config;
        let (bytes, records) = {
            let st = self.shared.lock();
            (st.buffered_bytes, st.buffered_records)
        };
        Error::BufferFull(format!(
            "no room for the record within max.block.ms={} (buffer.memory={} bytes, \
             queue.buffering.max.messages={}; {bytes} bytes in {records} records are waiting to be acknowledged)",
            cfg.max_block.as_millis(),
            cfg.buffer_memory,
            cfg.buffer_max_records
        ))
    }

    fn enqueue(&self, record: ProducerRecord) -> Result<Enqueue> {
        let shared = &self.shared;
        let cfg = &shared.config;
        let size = record.size_estimate();
        if size > cfg.max_request_size || size > cfg.buffer_memory {
            let limit = cfg.max_request_size.min(cfg.buffer_memory);
            let msg = format!(
                "the record is {size} bytes, larger than {limit} (max.request.size={}, buffer.memory={})",
                cfg.max_request_size, cfg.buffer_memory
            );
            return Err(Error::from_code(ResponseError::MessageTooLarge.code(), Some(&record.topic), None, Some(&msg))
                .expect("non-zero code"));
        }
        let mut st = shared.lock();
        if let Some(e) = &st.fatal {
            return Err(e.clone());
        }
        if st.closed {
            return Err(Error::Closed);
        }
        if st.buffered_records >= cfg.buffer_max_records || st.buffered_bytes + size > cfg.buffer_memory {
            return Ok(Enqueue::Full(record));
        }
        let timestamp = record.timestamp.unwrap_or_else(now_ms);
        // Anything already waiting for metadata goes first, to keep send order.
        if st.pending.is_empty() {
            let known = st.topics.get(record.topic.as_str()).map(|t| t.num_partitions);
            if let Some(n) = known.filter(|&n| n > 0) {
                let (outcome, index) = append(shared, &mut st, record, timestamp, n)?;
                st.buffered_bytes += size;
                st.buffered_records += 1;
                return Ok(Enqueue::Queued(DeliveryFuture::waiting(outcome, index, timestamp)));
            }
        }
        let (tx, rx) = oneshot::channel();
        st.pending.push_back(PendingRecord {
            record,
            timestamp,
            size,
            tx,
            deadline: Instant::now() + cfg.max_block.min(cfg.delivery_timeout),
        });
        st.incomplete += 1;
        st.buffered_bytes += size;
        st.buffered_records += 1;
        drop(st);
        shared.wake.notify_one();
        Ok(Enqueue::Queued(DeliveryFuture::placing(rx, timestamp)))
    }

    /// Sends everything queued so far without waiting for linger, and waits until every batch
    /// has its outcome (each within `delivery_timeout` plus at most one `request_timeout`).
    pub async fn flush(&self) -> Result<()> {
        let shared = &self.shared;
        shared.lock().flushing += 1;
        shared.wake.notify_one();
        loop {
            let idle = shared.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if shared.lock().incomplete == 0 {
                break;
            }
            idle.await;
        }
        shared.lock().flushing -= 1;
        Ok(())
    }

    /// Flushes and stops the sender task.
    pub async fn close(mut self) -> Result<()> {
        self.flush().await?;
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(h) = self.sender.take() {
            let _ = h.await;
        }
        Ok(())
    }

    /// The producer id and epoch of an idempotent producer, once the broker gave one.
    pub fn producer_id(&self) -> Option<(i64, i16)> {
        self.shared.lock().producer_id
    }

    /// Bytes and records currently held against `buffer_memory` and `buffer_max_records`.
    pub fn buffered(&self) -> (usize, usize) {
        let st = self.shared.lock();
        (st.buffered_bytes, st.buffered_records)
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        // The sender drains what is queued and then exits.
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
    }
}

/// Appends to the partition's open batch, closing it first if the record would overflow it.
/// Returns the batch outcome and the record's index in it.
fn append(
    shared: &Shared,
    st: &mut State,
    record: ProducerRecord,
    timestamp: i64,
    num_partitions: i32,
) -> Result<(Arc<Outcome>, u32)> {
    let cfg = &shared.config;
    let size = record.size_estimate();
    let keyless = record.partition.is_none() && record.key.is_none();
    let mut partition = match record.partition {
        Some(p) if (0..num_partitions).contains(&p) => p,
        Some(p) => {
            return Err(Error::Config(format!(
                "partition {p} out of range for {} ({num_partitions} partitions)",
                record.topic
            )))
        }
        None => cfg.partitioner.partition(&record.topic, record.key.as_deref(), num_partitions),
    };
    let tq = st.topics.get_mut(record.topic.as_str()).expect("caller checked topic is known");
    let full =
        |q: &PartQueue| q.open.as_ref().is_some_and(|b| !b.records.is_empty() && b.bytes + size > cfg.batch_size);
    if full(&tq.parts[partition as usize]) {
        close_open(cfg, tq, partition);
        if keyless {
            // KIP-480: a full sticky batch moves keyless records to another partition.
            partition = cfg.partitioner.partition(&record.topic, None, num_partitions);
            if full(&tq.parts[partition as usize]) {
                close_open(cfg, tq, partition);
            }
        }
        shared.wake.notify_one();
    }
    let q = &mut tq.parts[partition as usize];
    let mut opened = false;
    let batch = q.open.get_or_insert_with(|| {
        opened = true;
        OpenBatch {
            records: Vec::with_capacity((cfg.batch_size / size.max(1)).clamp(1, 1024)),
            bytes: 0,
            created: Instant::now(),
            outcome: Outcome::new(tq.name.clone(), partition),
        }
    });
    let index = batch.records.len() as u32;
    batch.records.push(producer_record(index as i32, timestamp, record.key, record.value, record.headers));
    batch.bytes += size;
    let outcome = batch.outcome.clone();
    if opened {
        st.incomplete += 1;
        if cfg.linger.is_zero() {
            shared.wake.notify_one();
        }
    }
    Ok((outcome, index))
}

/// Moves the open batch of `partition` to its ready queue.
pub(crate) fn close_open(cfg: &ProducerConfig, tq: &mut TopicQueues, partition: i32) {
    let q = &mut tq.parts[partition as usize];
    if let Some(b) = q.open.take() {
        let number = q.next_number;
        q.next_number += 1;
        q.ready.push_back(b.into_ready(number));
        cfg.partitioner.on_new_batch(&tq.name, tq.num_partitions, partition);
    }
}

/// How long until `batch` passes `delivery_timeout`.
pub(crate) fn expires_at(cfg: &ProducerConfig, batch: &ReadyBatch) -> Instant {
    batch.created + cfg.delivery_timeout
}

/// The error of a batch that passed `delivery_timeout` (Java's wording).
pub(crate) fn expired(cfg: &ProducerConfig, topic: &str, partition: i32, batch: &ReadyBatch) -> Error {
    let last = batch.last_error.as_ref().map(|e| format!("; last error: {e}")).unwrap_or_default();
    Error::DeliveryTimeout(format!(
        "expiring {} record(s) for {topic}-{partition}: {} ms has passed since batch creation \
         (delivery.timeout.ms){last}",
        batch.count,
        cfg.delivery_timeout.as_millis()
    ))
}
