//! One Produce request: its turn on the broker's connection, encoding, the response, and the
//! outcome (or retry) of each of its batches.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::{Notify, OwnedSemaphorePermit};

use super::idempotence::{refusal, restamp_batch, stamp_records, Refusal};
use super::{expired, expires_at, ReadyBatch, Shared};
use crate::connection::{Connection, PendingResponse};
use crate::error::{Error, Result};
use crate::records::encode_batch;

/// A batch taken from its partition queue into a request.
pub(crate) struct InFlight {
    pub topic: Arc<str>,
    pub partition: i32,
    pub batch: ReadyBatch,
}

/// A Produce request whose batches are encoded, waiting for its turn on the connection.
struct Prepared {
    sendable: Vec<InFlight>,
    request: ProduceRequest,
}

/// Hands out, per broker, the order in which requests go on the connection: the order the sender
/// drained them. Each request runs on its own task (compression runs in parallel) but waits for
/// its turn before it is enqueued, so batches of one partition reach the broker in send order;
/// only the waits for responses overlap.
#[derive(Default)]
pub(crate) struct Turns {
    brokers: HashMap<i32, (Arc<Turnstile>, u64)>,
}

impl Turns {
    pub fn submit(&mut self, shared: &Arc<Shared>, node: i32, batches: Vec<InFlight>, permit: OwnedSemaphorePermit) {
        let (turnstile, next) = self.brokers.entry(node).or_default();
        let seq = *next;
        *next += 1;
        tokio::spawn(produce(shared.clone(), node, turnstile.clone(), seq, batches, permit));
    }
}

#[derive(Default)]
pub(crate) struct Turnstile {
    /// Sequence number of the request whose turn it is.
    current: AtomicU64,
    changed: Notify,
}

impl Turnstile {
    /// Waits until it is `seq`'s turn; the turn passes on when the returned guard drops.
    async fn wait(&self, seq: u64) -> Turn<'_> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.current.load(Ordering::Acquire) == seq {
                return Turn(self);
            }
            changed.await;
        }
    }
}

/// Holds a broker's turn; passes it to the next request when dropped (on every path).
struct Turn<'a>(&'a Turnstile);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.current.fetch_add(1, Ordering::AcqRel);
        self.0.changed.notify_waiters();
    }
}

async fn produce(
    shared: Arc<Shared>,
    node: i32,
    turnstile: Arc<Turnstile>,
    seq: u64,
    batches: Vec<InFlight>,
    permit: OwnedSemaphorePermit,
) {
    let prepared = prepare(&shared, batches);
    let turn = turnstile.wait(seq).await;
    if let Some(p) = prepared {
        send(&shared, node, turn, p, permit).await;
    } else {
        drop(turn);
        drop(permit);
        shared.wake.notify_one();
    }
}

/// Encodes (and compresses, on the first attempt) the batches of one request, with their
/// producer id and sequence; a retry after a producer id reset only rewrites the header.
fn prepare(shared: &Shared, batches: Vec<InFlight>) -> Option<Prepared> {
    let cfg = &shared.config;
    let mut topic_data: Vec<TopicProduceData> = Vec::new();
    let mut sendable = Vec::with_capacity(batches.len());
    for mut b in batches {
        if let Err(e) = encode(cfg.compression, &mut b.batch) {
            let mut st = shared.lock();
            shared.landed(&mut st, &b.topic, b.partition);
            shared.finish(&mut st, &b.topic, b.partition, b.batch, Err(e));
            continue;
        }
        // Requests hold few topics: a linear search beats hashing.
        let idx = match topic_data.iter().position(|t| *t.name.0 == *b.topic) {
            Some(i) => i,
            None => {
                topic_data
                    .push(TopicProduceData::default().with_name(TopicName(StrBytes::from_string(b.topic.to_string()))));
                topic_data.len() - 1
            }
        };
        topic_data[idx]
            .partition_data
            .push(PartitionProduceData::default().with_index(b.partition).with_records(b.batch.encoded.clone()));
        sendable.push(b);
    }
    if sendable.is_empty() {
        return None;
    }
    let request = ProduceRequest::default()
        .with_acks(cfg.acks)
        .with_timeout_ms(cfg.request_timeout.as_millis().min(i32::MAX as u128) as i32)
        .with_topic_data(topic_data);
    Some(Prepared { sendable, request })
}

fn encode(compression: kafka_protocol::records::Compression, b: &mut ReadyBatch) -> Result<()> {
    match &b.encoded {
        None => {
            if let Some(stamp) = b.stamp {
                stamp_records(&mut b.records, stamp);
            }
            b.encoded = Some(encode_batch(&b.records, compression, b.bytes)?);
            b.encoded_stamp = b.stamp;
            b.records = Vec::new();
        }
        Some(bytes) if b.encoded_stamp != b.stamp => {
            let stamp = b.stamp.expect("a batch is only renumbered with idempotence, which stamps every batch");
            b.encoded = Some(restamp_batch(bytes, stamp)?);
            b.encoded_stamp = b.stamp;
        }
        Some(_) => {}
    }
    Ok(())
}

/// Enqueues one request on the broker's connection while holding the broker's turn, then
/// waits for the response.
async fn send(shared: &Arc<Shared>, node: i32, turn: Turn<'_>, p: Prepared, permit: OwnedSemaphorePermit) {
    let Prepared { sendable, request } = p;
    let finish = |permit: OwnedSemaphorePermit| {
        drop(permit);
        shared.wake.notify_one();
    };
    let conn = match shared.cluster.broker(node).await {
        Ok(c) => c,
        Err(e) => {
            retry_all(shared, sendable, e);
            return finish(permit);
        }
    };
    let version = match conn.version_of::<ProduceRequest>() {
        Ok(v) => v,
        Err(e) => {
            fail_all(shared, sendable, e);
            return finish(permit);
        }
    };
    if shared.config.acks == 0 {
        match conn.enqueue_no_response(&request, version) {
            Ok(()) => {
                let mut st = shared.lock();
                for b in sendable {
                    shared.landed(&mut st, &b.topic, b.partition);
                    shared.finish(&mut st, &b.topic, b.partition, b.batch, Ok((-1, -1)));
                }
            }
            Err(e) => {
                if !conn.is_alive() {
                    shared.cluster.drop_connection(node).await;
                }
                retry_all(shared, sendable, e);
            }
        }
        return finish(permit);
    }
    match conn.enqueue(&request, version) {
        Ok(pending) => {
            drop(turn);
            drop(request);
            complete(shared, node, conn, pending, sendable).await;
            finish(permit);
        }
        Err(e) => {
            drop(turn);
            if !conn.is_alive() {
                shared.cluster.drop_connection(node).await;
            }
            retry_all(shared, sendable, e);
            finish(permit);
        }
    }
}

/// Awaits one Produce response and completes (or requeues) its batches.
async fn complete(
    shared: &Shared,
    node: i32,
    conn: Connection,
    pending: PendingResponse<ProduceResponse>,
    sendable: Vec<InFlight>,
) {
    let resp = match pending.wait().await {
        Ok(resp) => resp,
        Err(e) => {
            if !conn.is_alive() {
                shared.cluster.drop_connection(node).await;
            }
            return retry_all(shared, sendable, e);
        }
    };
    let mut by_tp: HashMap<(&str, i32), _> = HashMap::new();
    for t in &resp.responses {
        for p in &t.partition_responses {
            by_tp.insert((t.name.0.as_str(), p.index), p);
        }
    }
    let mut st = shared.lock();
    for b in sendable {
        let Some(p) = by_tp.get(&(&*b.topic, b.partition)) else {
            let e = Error::Protocol(format!("produce response lacks {}-{}", b.topic, b.partition));
            shared.landed(&mut st, &b.topic, b.partition);
            shared.finish(&mut st, &b.topic, b.partition, b.batch, Err(e));
            continue;
        };
        let msg = p.error_message.as_ref().map(|m| m.to_string()).or_else(|| {
            p.record_errors.first().and_then(|r| r.batch_index_error_message.as_ref()).map(|m| m.to_string())
        });
        match Error::from_code(p.error_code, Some(&b.topic), Some(b.partition), msg.as_deref()) {
            // A retry of a batch the broker already has: written once, acknowledged now.
            None | Some(Error::Kafka { code: ResponseError::DuplicateSequenceNumber, .. }) => {
                shared.landed(&mut st, &b.topic, b.partition);
                shared.finish(&mut st, &b.topic, b.partition, b.batch, Ok((p.base_offset, p.log_append_time_ms)));
            }
            Some(e) => retry_or_fail(shared, &mut st, b, e),
        }
    }
    drop(st);
}

fn retry_all(shared: &Shared, batches: Vec<InFlight>, e: Error) {
    let mut st = shared.lock();
    for b in batches {
        retry_or_fail(shared, &mut st, b, e.clone());
    }
}

fn fail_all(shared: &Shared, batches: Vec<InFlight>, e: Error) {
    let mut st = shared.lock();
    for b in batches {
        shared.landed(&mut st, &b.topic, b.partition);
        shared.finish(&mut st, &b.topic, b.partition, b.batch, Err(e.clone()));
    }
}

/// Puts a refused batch back in its partition's order for another attempt if the error, the
/// retry budget and `delivery_timeout` allow it; otherwise gives it its error.
fn retry_or_fail(shared: &Shared, st: &mut super::State, b: InFlight, e: Error) {
    let cfg = &shared.config;
    let InFlight { topic, partition, mut batch } = b;
    shared.landed(st, &topic, partition);
    if let Some(fatal) = st.fatal.clone() {
        return shared.finish(st, &topic, partition, batch, Err(fatal));
    }
    let Some(q) = st.topics.get_mut(&*topic).and_then(|t| t.parts.get_mut(partition as usize)) else {
        return shared.finish(st, &topic, partition, batch, Err(e));
    };
    let oldest = q.unfinished.first() == Some(&batch.number);
    let verdict = refusal(&e, batch.stamp.is_some(), oldest);
    if verdict == Refusal::Fail {
        return shared.finish(st, &topic, partition, batch, Err(e));
    }
    if batch.attempts >= cfg.retries {
        tracing::debug!(%topic, partition, attempts = batch.attempts, "giving up on a batch: retries exhausted");
        return shared.finish(st, &topic, partition, batch, Err(e));
    }
    let now = Instant::now();
    batch.last_error = Some(e.clone());
    if expires_at(cfg, &batch) <= now {
        let e = expired(cfg, &topic, partition, &batch);
        return shared.finish(st, &topic, partition, batch, Err(e));
    }
    tracing::debug!(%topic, partition, error = %e, ?verdict, "retrying batch");
    batch.attempts += 1;
    batch.retry_at = Some(now + cfg.retry_backoff);
    q.requeue(batch);
    if verdict == Refusal::RetryAfterReset {
        st.reset_producer_id = true;
    }
    if e.invalidates_metadata() {
        st.refresh_metadata = true;
    }
    shared.wake.notify_one();
}
