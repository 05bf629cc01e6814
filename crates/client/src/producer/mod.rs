//! The producer: per-partition batching, linger, retries, pipelined Produce requests.
//!
//! `send` appends to an in-memory accumulator under a short lock and returns at once; a
//! background sender task drains ready batches, groups them per leader and keeps up to
//! `max_in_flight` Produce requests outstanding per broker.

mod delivery;
mod sender;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kafka_protocol::records::{Compression, Record};
use tokio::sync::{oneshot, Notify};

pub use delivery::{DeliveryFuture, RecordMetadata};
use delivery::{Outcome, Placement};

use crate::cluster::{Cluster, ClusterConfig};
use crate::error::{Error, Result};
use crate::partitioner::{DefaultPartitioner, Partitioner};
use crate::records::{producer_record, RECORD_OVERHEAD};

/// Producer settings; `Default` mirrors the Java client's defaults where they apply.
#[derive(Clone)]
pub struct ProducerConfig {
    /// Comma-separated `host:port` list.
    pub bootstrap: String,
    pub client_id: String,
    /// 0 (no response), 1 (leader) or -1 (all in-sync replicas).
    pub acks: i16,
    /// How long a non-full batch may wait for more records.
    pub linger: Duration,
    /// Target size of one partition's batch in bytes (before compression).
    pub batch_size: usize,
    pub retries: u32,
    pub retry_backoff: Duration,
    pub compression: Compression,
    /// Produce requests outstanding per broker.
    pub max_in_flight: usize,
    pub request_timeout: Duration,
    /// Upper bound on the batches packed into one Produce request, in bytes.
    pub max_request_size: usize,
    pub partitioner: Arc<dyn Partitioner>,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            bootstrap: "127.0.0.1:9092".into(),
            client_id: "tern-producer".into(),
            acks: -1,
            linger: Duration::from_millis(5),
            batch_size: 16 * 1024,
            retries: 10,
            retry_backoff: Duration::from_millis(100),
            compression: Compression::None,
            max_in_flight: 5,
            request_timeout: Duration::from_secs(30),
            max_request_size: 1024 * 1024,
            partitioner: Arc::new(DefaultPartitioner::new()),
        }
    }
}

impl std::fmt::Debug for ProducerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerConfig")
            .field("bootstrap", &self.bootstrap)
            .field("client_id", &self.client_id)
            .field("acks", &self.acks)
            .field("linger", &self.linger)
            .field("batch_size", &self.batch_size)
            .field("retries", &self.retries)
            .field("compression", &self.compression)
            .field("max_in_flight", &self.max_in_flight)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

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
    pub bytes: usize,
    pub outcome: Arc<Outcome>,
    pub attempts: u32,
    pub retry_at: Option<Instant>,
}

#[derive(Default)]
pub(crate) struct PartQueue {
    open: Option<OpenBatch>,
    pub ready: VecDeque<ReadyBatch>,
}

pub(crate) struct TopicQueues {
    pub name: Arc<str>,
    pub num_partitions: i32,
    pub parts: Vec<PartQueue>,
}

struct PendingRecord {
    record: ProducerRecord,
    timestamp: i64,
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
}

pub(crate) struct Shared {
    pub config: ProducerConfig,
    pub cluster: Arc<Cluster>,
    pub state: Mutex<State>,
    /// Wakes the sender task.
    pub wake: Notify,
    /// Wakes `flush` callers when `incomplete` reaches 0.
    pub idle: Notify,
}

impl Shared {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks one batch finished and wakes flushers if nothing is left.
    pub fn batch_done(&self, outcome: &Outcome, r: Result<(i64, i64)>) {
        if outcome.complete(r) {
            let mut st = self.lock();
            st.incomplete -= 1;
            if st.incomplete == 0 {
                self.idle.notify_waiters();
            }
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

impl Producer {
    /// Connects to the cluster and starts the sender task.
    pub async fn new(config: ProducerConfig) -> Result<Self> {
        if !matches!(config.acks, -1..=1) {
            return Err(Error::Config(format!("acks must be -1, 0 or 1, not {}", config.acks)));
        }
        if config.max_in_flight == 0 || config.batch_size == 0 {
            return Err(Error::Config("max_in_flight and batch_size must be > 0".into()));
        }
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
        });
        let sender = tokio::spawn(sender::run(shared.clone()));
        Ok(Producer { shared, sender: Some(sender) })
    }

    /// The cluster handle this producer uses (metadata, connections).
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.shared.cluster
    }

    /// Queues `record` and returns a future for its delivery. The record is queued before this
    /// returns, so many sends can be issued before awaiting any of them; records to one
    /// partition are sent in call order (barring retries with `max_in_flight > 1`).
    pub fn send(&self, record: ProducerRecord) -> DeliveryFuture {
        let timestamp = record.timestamp.unwrap_or_else(now_ms);
        let shared = &self.shared;
        let mut st = shared.lock();
        if st.closed {
            return DeliveryFuture::failed(Error::Closed);
        }
        // Anything already waiting for metadata goes first, to keep send order.
        if st.pending.is_empty() {
            let known = st.topics.get(record.topic.as_str()).map(|t| t.num_partitions);
            if let Some(n) = known.filter(|&n| n > 0) {
                let r = append(shared, &mut st, record, timestamp, n);
                return match r {
                    Ok((outcome, index)) => DeliveryFuture::waiting(outcome, index, timestamp),
                    Err(e) => DeliveryFuture::failed(e),
                };
            }
        }
        let (tx, rx) = oneshot::channel();
        st.pending.push_back(PendingRecord {
            record,
            timestamp,
            tx,
            deadline: Instant::now() + shared.config.request_timeout,
        });
        st.incomplete += 1;
        drop(st);
        shared.wake.notify_one();
        DeliveryFuture::placing(rx, timestamp)
    }

    /// Sends everything queued so far without waiting for linger, and waits until it is done.
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
        q.ready.push_back(ReadyBatch {
            records: b.records,
            encoded: None,
            bytes: b.bytes,
            outcome: b.outcome,
            attempts: 0,
            retry_at: None,
        });
        cfg.partitioner.on_new_batch(&tq.name, tq.num_partitions, partition);
    }
}
