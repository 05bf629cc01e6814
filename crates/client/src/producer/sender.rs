//! The producer's background task: metadata, draining ready batches, Produce requests.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::{append, close_open, PartQueue, ReadyBatch, Shared, TopicQueues};
use crate::connection::{Connection, PendingResponse};
use crate::error::Error;
use crate::records::encode_batch;
use kafka_protocol::error::ResponseError;

struct InFlight {
    topic: Arc<str>,
    partition: i32,
    batch: ReadyBatch,
}

pub(super) async fn run(shared: Arc<Shared>) {
    let mut permits: HashMap<i32, Arc<Semaphore>> = HashMap::new();
    let mut last_refresh: Option<Instant> = None;
    let mut turns = Turns::default();
    loop {
        let (want_refresh, closed_and_idle) = {
            let st = shared.lock();
            (st.refresh_metadata || !st.pending.is_empty(), st.closed && st.incomplete == 0)
        };
        if closed_and_idle {
            return;
        }
        let backoff = shared.config.retry_backoff;
        let mut next_wake = None;
        if want_refresh {
            if last_refresh.is_none_or(|t| t.elapsed() >= backoff) {
                last_refresh = Some(Instant::now());
                refresh(&shared).await;
            } else {
                next_wake = last_refresh.map(|t| t + backoff);
            }
        }
        place_pending(&shared);
        {
            let st = shared.lock();
            if st.refresh_metadata || !st.pending.is_empty() {
                // Poll metadata again after the backoff; nothing else would wake us.
                next_wake = min_opt(next_wake, last_refresh.map(|t| t + backoff));
            }
        }
        let (requests, wake) = drain(&shared, &mut permits);
        next_wake = min_opt(next_wake, wake);
        for (node, batches, permit) in requests {
            turns.submit(&shared, node, batches, permit);
        }
        let notified = shared.wake.notified();
        match next_wake {
            Some(t) if t <= Instant::now() => continue,
            Some(t) => {
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep_until(t.into()) => {}
                }
            }
            None => notified.await,
        }
    }
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn refresh(shared: &Shared) {
    let topics: Vec<String> = {
        let st = shared.lock();
        let mut set: HashSet<&str> = st.topics.keys().map(String::as_str).collect();
        set.extend(st.pending.iter().map(|p| p.record.topic.as_str()));
        set.into_iter().map(str::to_owned).collect()
    };
    if topics.is_empty() {
        shared.lock().refresh_metadata = false;
        return;
    }
    match shared.cluster.fetch_metadata(Some(&topics), true).await {
        Ok(_) => {
            let mut st = shared.lock();
            st.refresh_metadata = false;
            for name in &topics {
                let Some(info) = shared.cluster.topic(name) else {
                    continue;
                };
                let n = info.partitions.len() as i32;
                let tq = st.topics.entry(name.clone()).or_insert_with(|| TopicQueues {
                    name: Arc::from(name.as_str()),
                    num_partitions: 0,
                    parts: Vec::new(),
                });
                if n > tq.num_partitions {
                    tq.parts.resize_with(n as usize, PartQueue::default);
                    tq.num_partitions = n;
                }
            }
        }
        Err(e) => tracing::debug!(error = %e, "producer metadata refresh failed"),
    }
}

/// Moves records that waited for metadata into batches, in order per topic.
fn place_pending(shared: &Shared) {
    let mut st = shared.lock();
    if st.pending.is_empty() {
        return;
    }
    let now = Instant::now();
    let mut blocked: HashSet<String> = HashSet::new();
    let mut keep = std::collections::VecDeque::new();
    let pending = std::mem::take(&mut st.pending);
    for p in pending {
        let topic = p.record.topic.as_str();
        let n = if blocked.contains(topic) {
            None
        } else {
            st.topics.get(topic).map(|t| t.num_partitions).filter(|&n| n > 0)
        };
        match n {
            Some(n) => {
                let ts = p.timestamp;
                let r = append(shared, &mut st, p.record, ts, n);
                st.incomplete -= 1;
                let _ = p.tx.send(r);
            }
            None if now >= p.deadline => {
                let e = Error::from_code(
                    ResponseError::UnknownTopicOrPartition.code(),
                    Some(topic),
                    None,
                    Some("topic metadata not available before the request timeout"),
                )
                .expect("non-zero code");
                st.incomplete -= 1;
                let _ = p.tx.send(Err(e));
            }
            None => {
                blocked.insert(topic.to_owned());
                keep.push_back(p);
            }
        }
    }
    st.pending = keep;
    if st.incomplete == 0 {
        shared.idle.notify_waiters();
    }
}

type Request = (i32, Vec<InFlight>, OwnedSemaphorePermit);

/// Closes lingering batches and takes at most one ready batch per partition into per-leader
/// requests, while permits last. Returns the requests and when to look again.
fn drain(shared: &Shared, permits: &mut HashMap<i32, Arc<Semaphore>>) -> (Vec<Request>, Option<Instant>) {
    let cfg = &shared.config;
    let now = Instant::now();
    let mut st = shared.lock();
    let flush_all = st.flushing > 0 || st.closed;
    let mut next_wake: Option<Instant> = None;
    let mut requests: HashMap<i32, (Vec<InFlight>, usize, OwnedSemaphorePermit)> = HashMap::new();
    let mut blocked_nodes: HashSet<i32> = HashSet::new();
    let mut need_refresh = false;
    for tq in st.topics.values_mut() {
        let info = shared.cluster.topic(&tq.name);
        for p in 0..tq.parts.len() {
            if let Some(open) = &tq.parts[p].open {
                let due = open.created + cfg.linger;
                if flush_all || due <= now {
                    close_open(cfg, tq, p as i32);
                } else {
                    next_wake = min_opt(next_wake, Some(due));
                }
            }
            let q = &mut tq.parts[p];
            let Some(front) = q.ready.front() else {
                continue;
            };
            if let Some(t) = front.retry_at.filter(|&t| t > now) {
                next_wake = min_opt(next_wake, Some(t));
                continue;
            }
            let Some(leader) = info.as_ref().and_then(|i| i.leader(p as i32)) else {
                need_refresh = true;
                continue;
            };
            if blocked_nodes.contains(&leader) {
                continue;
            }
            if let Entry::Vacant(slot) = requests.entry(leader) {
                let sem = permits.entry(leader).or_insert_with(|| Arc::new(Semaphore::new(cfg.max_in_flight)));
                match sem.clone().try_acquire_owned() {
                    Ok(permit) => {
                        slot.insert((Vec::new(), 0, permit));
                    }
                    Err(_) => {
                        // A finishing request wakes the sender.
                        blocked_nodes.insert(leader);
                        continue;
                    }
                }
            }
            let (batches, bytes, _) = requests.get_mut(&leader).expect("inserted above");
            if !batches.is_empty() && *bytes + front.bytes > cfg.max_request_size {
                next_wake = Some(now);
                continue;
            }
            let batch = q.ready.pop_front().expect("front exists");
            *bytes += batch.bytes;
            batches.push(InFlight { topic: tq.name.clone(), partition: p as i32, batch });
            if !q.ready.is_empty() {
                // More for this partition: go round again once this request is queued.
                next_wake = Some(now);
            }
        }
    }
    if need_refresh {
        st.refresh_metadata = true;
        next_wake = Some(now);
    }
    let out = requests
        .into_iter()
        .filter(|(_, (b, _, _))| !b.is_empty())
        .map(|(node, (b, _, permit))| (node, b, permit))
        .collect();
    (out, next_wake)
}

/// A Produce request whose batches are encoded, waiting for its turn on the connection.
struct Prepared {
    sendable: Vec<InFlight>,
    request: ProduceRequest,
}

/// Hands out, per broker, the order in which requests go on the connection: the order the sender
/// drained them. Each request runs on its own task (compression runs in parallel) but waits for
/// its turn before it is enqueued, so batches of one partition reach the broker in send order
/// (barring retries); only the waits for responses overlap.
#[derive(Default)]
struct Turns {
    brokers: HashMap<i32, (Arc<Turnstile>, u64)>,
}

impl Turns {
    fn submit(&mut self, shared: &Arc<Shared>, node: i32, batches: Vec<InFlight>, permit: OwnedSemaphorePermit) {
        let (turnstile, next) = self.brokers.entry(node).or_default();
        let seq = *next;
        *next += 1;
        tokio::spawn(produce(shared.clone(), node, turnstile.clone(), seq, batches, permit));
    }
}

#[derive(Default)]
struct Turnstile {
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

/// Encodes (and compresses, on the first attempt) the batches of one request.
fn prepare(shared: &Shared, batches: Vec<InFlight>) -> Option<Prepared> {
    let cfg = &shared.config;
    let mut topic_data: Vec<TopicProduceData> = Vec::new();
    let mut sendable = Vec::with_capacity(batches.len());
    for mut b in batches {
        if b.batch.encoded.is_none() {
            match encode_batch(&b.batch.records, cfg.compression, b.batch.bytes) {
                Ok(bytes) => {
                    b.batch.encoded = Some(bytes);
                    b.batch.records = Vec::new();
                }
                Err(e) => {
                    shared.batch_done(&b.batch.outcome, Err(e));
                    continue;
                }
            }
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
            for b in sendable {
                shared.batch_done(&b.batch.outcome, Err(e.clone()));
            }
            return finish(permit);
        }
    };
    if shared.config.acks == 0 {
        match conn.enqueue_no_response(&request, version) {
            Ok(()) => {
                for b in sendable {
                    shared.batch_done(&b.batch.outcome, Ok((-1, -1)));
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
            complete(shared, node, conn, pending, sendable, permit).await;
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
    permit: OwnedSemaphorePermit,
) {
    match pending.wait().await {
        Err(e) => {
            if !conn.is_alive() {
                shared.cluster.drop_connection(node).await;
            }
            retry_all(shared, sendable, e);
        }
        Ok(resp) => {
            let mut by_tp: HashMap<(&str, i32), _> = HashMap::new();
            for t in &resp.responses {
                for p in &t.partition_responses {
                    by_tp.insert((t.name.0.as_str(), p.index), p);
                }
            }
            let mut retry = Vec::new();
            for b in sendable {
                let Some(p) = by_tp.get(&(&*b.topic, b.partition)) else {
                    let e = Error::Protocol(format!("produce response lacks {}-{}", b.topic, b.partition));
                    shared.batch_done(&b.batch.outcome, Err(e));
                    continue;
                };
                let msg = p.error_message.as_ref().map(|m| m.to_string()).or_else(|| {
                    p.record_errors.first().and_then(|r| r.batch_index_error_message.as_ref()).map(|m| m.to_string())
                });
                match Error::from_code(p.error_code, Some(&b.topic), Some(b.partition), msg.as_deref()) {
                    None => shared.batch_done(&b.batch.outcome, Ok((p.base_offset, p.log_append_time_ms))),
                    Some(e) => retry.push((b, e)),
                }
            }
            for (b, e) in retry {
                retry_one(shared, b, e);
            }
        }
    }
    drop(permit);
    shared.wake.notify_one();
}

fn retry_all(shared: &Shared, batches: Vec<InFlight>, e: Error) {
    for b in batches {
        retry_one(shared, b, e.clone());
    }
}

/// Requeues a failed batch at the front of its partition if the error allows another attempt,
/// else fails it.
fn retry_one(shared: &Shared, mut b: InFlight, e: Error) -> Option<()> {
    if !e.is_retriable() || b.batch.attempts >= shared.config.retries {
        shared.batch_done(&b.batch.outcome, Err(e));
        return None;
    }
    tracing::debug!(topic = %b.topic, partition = b.partition, error = %e, "retrying batch");
    b.batch.attempts += 1;
    b.batch.retry_at = Some(Instant::now() + shared.config.retry_backoff);
    let mut st = shared.lock();
    if e.invalidates_metadata() {
        st.refresh_metadata = true;
    }
    let q = st.topics.get_mut(&*b.topic).and_then(|t| t.parts.get_mut(b.partition as usize))?;
    q.ready.push_front(b.batch);
    drop(st);
    shared.wake.notify_one();
    Some(())
}
