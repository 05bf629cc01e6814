//! The producer's background task: metadata, the producer id, expiring and draining batches.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use kafka_protocol::error::ResponseError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::idempotence::{self, increment_sequence, Stamp};
use super::request::{InFlight, Turns};
use super::{append, close_open, expired, expires_at, PartQueue, Shared, State, TopicQueues};
use crate::error::Error;

/// Fails whatever is left if the sender task ends before everything had its outcome (a panic,
/// or the runtime shutting down): no future is left waiting for a task that is gone.
struct Leftovers(Arc<Shared>);

impl Drop for Leftovers {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.closed = true;
        if st.fatal.is_none() {
            st.fatal = Some(Error::Closed);
        }
        if st.incomplete > 0 {
            self.0.fail_queued(&mut st, &Error::Closed);
        }
    }
}

pub(super) async fn run(shared: Arc<Shared>) {
    let _leftovers = Leftovers(shared.clone());
    let cfg = &shared.config;
    let backoff = cfg.retry_backoff;
    let mut permits: HashMap<i32, Arc<Semaphore>> = HashMap::new();
    let mut last_refresh: Option<Instant> = None;
    let mut init_not_before: Option<Instant> = None;
    let mut turns = Turns::default();
    loop {
        let (want_refresh, closed_and_idle, want_producer_id) = {
            let st = shared.lock();
            (
                st.refresh_metadata || !st.pending.is_empty(),
                st.closed && st.incomplete == 0,
                needs_producer_id(&shared, &st),
            )
        };
        if closed_and_idle {
            return;
        }
        let mut next_wake = None;
        if want_producer_id {
            if init_not_before.is_none_or(|t| t <= Instant::now()) {
                init_not_before = init_producer_id(&shared).await;
            }
            next_wake = init_not_before;
        }
        if want_refresh {
            if last_refresh.is_none_or(|t| t.elapsed() >= backoff) {
                last_refresh = Some(Instant::now());
                refresh(&shared).await;
            } else {
                next_wake = min_opt(next_wake, last_refresh.map(|t| t + backoff));
            }
        }
        place_pending(&shared);
        let (requests, wake) = drain(&shared, &mut permits);
        next_wake = min_opt(next_wake, wake);
        {
            let st = shared.lock();
            if st.refresh_metadata || !st.pending.is_empty() {
                // Poll metadata again after the backoff; nothing else would wake us.
                let again = last_refresh.map_or_else(Instant::now, |t| t + backoff);
                next_wake = min_opt(next_wake, Some(again));
            }
        }
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

/// An idempotent producer needs a producer id before its first batch, and a new one after a
/// reset was asked for, once nothing is in flight (a response under the old id must not be
/// confused with the new numbering).
fn needs_producer_id(shared: &Shared, st: &State) -> bool {
    shared.config.enable_idempotence
        && st.fatal.is_none()
        && (st.producer_id.is_none() || st.reset_producer_id)
        && st.in_flight == 0
        && st.incomplete > st.pending.len()
}

/// Runs InitProducerId; returns when to try again if it failed retriably.
async fn init_producer_id(shared: &Shared) -> Option<Instant> {
    match idempotence::init_producer_id(&shared.cluster).await {
        Ok((id, epoch)) => {
            let mut st = shared.lock();
            let old = st.producer_id.replace((id, epoch));
            if st.reset_producer_id {
                st.reset_producer_id = false;
                // A new id starts every partition's sequence at 0; what waits is renumbered.
                let mut renumbered = 0;
                for tq in st.topics.values_mut() {
                    for q in &mut tq.parts {
                        q.next_sequence = 0;
                        for b in &mut q.ready {
                            renumbered += usize::from(b.stamp.take().is_some());
                        }
                    }
                }
                tracing::warn!(
                    old = ?old, producer_id = id, epoch, renumbered,
                    "idempotent producer reset its producer id: a batch failed or the broker lost its sequence numbers"
                );
            } else {
                tracing::debug!(producer_id = id, epoch, "idempotent producer got its producer id");
            }
            drop(st);
            shared.wake.notify_one();
            None
        }
        Err(e) if e.is_retriable() => {
            tracing::debug!(error = %e, "InitProducerId failed; will retry");
            Some(Instant::now() + shared.config.retry_backoff)
        }
        Err(e) => {
            tracing::error!(error = %e, "the idempotent producer cannot get a producer id: failing every record");
            let mut st = shared.lock();
            st.fatal = Some(e.clone());
            shared.fail_queued(&mut st, &e);
            None
        }
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
    let mut keep = VecDeque::new();
    let pending = std::mem::take(&mut st.pending);
    for p in pending {
        let size = p.size;
        let topic = p.record.topic.as_str();
        let n = if blocked.contains(topic) {
            None
        } else {
            st.topics.get(topic).map(|t| t.num_partitions).filter(|&n| n > 0)
        };
        let failed = match n {
            Some(n) => {
                let ts = p.timestamp;
                let r = append(shared, &mut st, p.record, ts, n);
                st.incomplete -= 1;
                let failed = r.is_err();
                let _ = p.tx.send(r);
                failed
            }
            None if now >= p.deadline => {
                let e = Error::from_code(
                    ResponseError::UnknownTopicOrPartition.code(),
                    Some(topic),
                    None,
                    Some("topic metadata not available within max.block.ms"),
                )
                .expect("non-zero code");
                st.incomplete -= 1;
                let _ = p.tx.send(Err(e));
                true
            }
            None => {
                blocked.insert(topic.to_owned());
                keep.push_back(p);
                false
            }
        };
        if failed {
            shared.release(&mut st, size, 1);
        }
    }
    st.pending = keep;
    if st.incomplete == 0 {
        shared.idle.notify_waiters();
    }
}

type Request = (i32, Vec<InFlight>, OwnedSemaphorePermit);

/// Closes lingering batches, fails those past `delivery_timeout`, and takes at most one ready
/// batch per partition into per-leader requests, while permits last. Returns the requests and
/// when to look again.
fn drain(shared: &Shared, permits: &mut HashMap<i32, Arc<Semaphore>>) -> (Vec<Request>, Option<Instant>) {
    let cfg = &shared.config;
    let now = Instant::now();
    let mut guard = shared.lock();
    let st = &mut *guard;
    let flush_all = st.flushing > 0 || st.closed;
    // With idempotence nothing goes out without a current producer id.
    let producer_id = if cfg.enable_idempotence {
        st.producer_id.filter(|_| !st.reset_producer_id && st.fatal.is_none())
    } else {
        None
    };
    let sendable = !cfg.enable_idempotence || producer_id.is_some();
    let mut next_wake: Option<Instant> = None;
    let mut requests: HashMap<i32, (Vec<InFlight>, usize, OwnedSemaphorePermit)> = HashMap::new();
    let mut blocked_nodes: HashSet<i32> = HashSet::new();
    let mut need_refresh = false;
    let mut expired_batches = Vec::new();
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
            // Creation times grow along the queue (retries keep their place).
            while let Some(front) = q.ready.front() {
                let at = expires_at(cfg, front);
                if at > now {
                    next_wake = min_opt(next_wake, Some(at));
                    break;
                }
                let batch = q.ready.pop_front().expect("front exists");
                expired_batches.push((tq.name.clone(), p as i32, batch));
            }
            if !sendable {
                continue;
            }
            let Some(front) = q.ready.front() else {
                continue;
            };
            if let Some(t) = front.retry_at.filter(|&t| t > now) {
                next_wake = min_opt(next_wake, Some(t));
                continue;
            }
            // A retry goes alone: batches after it that are still in flight come back first
            // (refused as out of sequence with idempotence) and are put back behind it.
            if front.attempts > 0 && q.in_flight > 0 {
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
            let mut batch = q.ready.pop_front().expect("front exists");
            if let (Some((producer_id, epoch)), None) = (producer_id, batch.stamp) {
                batch.stamp = Some(Stamp { producer_id, epoch, base_sequence: q.next_sequence });
                q.next_sequence = increment_sequence(q.next_sequence, batch.count);
            }
            q.unfinished.insert(batch.number);
            q.in_flight += 1;
            st.in_flight += 1;
            *bytes += batch.bytes;
            batches.push(InFlight { topic: tq.name.clone(), partition: p as i32, batch });
            if !q.ready.is_empty() {
                // More for this partition: go round again once this request is queued.
                next_wake = Some(now);
            }
        }
    }
    for (topic, p, batch) in expired_batches {
        let e = expired(cfg, &topic, p, &batch);
        shared.finish(st, &topic, p, batch, Err(e));
    }
    if need_refresh {
        // The caller wakes up for it after the refresh backoff.
        st.refresh_metadata = true;
    }
    let out = requests
        .into_iter()
        .filter(|(_, (b, _, _))| !b.is_empty())
        .map(|(node, (b, _, permit))| (node, b, permit))
        .collect();
    (out, next_wake)
}
