//! Fetch: read whole batches, long-polling until `min_bytes` arrive or `max_wait_ms` passes.
//!
//! Reads run on the blocking pool, so a fetch of cold data that misses the page cache never
//! stalls the tasks serving other connections. Fetch sessions (KIP-227) are declined by
//! answering session id 0, which every client handles by sending full fetches. A response holds
//! at most the broker's `fetch.max.bytes` of records (beyond the first batch, as in Kafka).
//!
//! Fetch v0-3 come from clients that read only message formats v0/v1; Tern stores v2 batches
//! and does not down-convert, so every partition is answered UNSUPPORTED_VERSION, as Kafka
//! answers them when `message.downconversion.enable=false`.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use tokio::sync::Notify;
use uuid::Uuid;

use super::{blocking, requested_partition};
use crate::errors::storage_error_code;
use crate::log_limit::LogLimiter;
use crate::Broker;

/// One partition to read, resolved from the request.
struct Wanted {
    topic_index: usize,
    name: Option<String>,
    topic_id: Uuid,
    partition: i32,
    fetch_offset: i64,
    partition_max_bytes: usize,
    current_leader_epoch: i32,
    last_fetched_epoch: i32,
    log_start_offset: i64,
}

/// A fetch from a follower broker (Kafka's `replica_id` >= 0): it reads up to the log end,
/// and tells the leader how far the follower has got.
#[derive(Clone, Copy)]
struct Follower {
    replica_id: i32,
    /// Fetch v15+ (KIP-903); -1 before.
    broker_epoch: i64,
}

static OLD_VERSION_LOG: LogLimiter = LogLimiter::new();

pub(crate) async fn handle(
    broker: &Arc<Broker>,
    request: FetchRequest,
    version: i16,
    client_id: &str,
) -> FetchResponse {
    let mut response = FetchResponse::default();
    if request.session_id != 0 {
        response.error_code = ResponseError::FetchSessionIdNotFound.code();
        return response;
    }
    let use_ids = version >= 13;
    let mut wanted = Vec::new();
    let mut topics = Vec::new();
    for (topic_index, t) in request.topics.iter().enumerate() {
        let name = if use_ids {
            broker.topics.get_by_id(t.topic_id).map(|t| t.name.clone())
        } else {
            Some(t.topic.0.as_str().to_string())
        };
        topics.push(FetchableTopicResponse::default().with_topic(t.topic.clone()).with_topic_id(t.topic_id));
        for p in &t.partitions {
            wanted.push(Wanted {
                topic_index,
                name: name.clone(),
                topic_id: t.topic_id,
                partition: p.partition,
                fetch_offset: p.fetch_offset,
                partition_max_bytes: p.partition_max_bytes.max(0) as usize,
                current_leader_epoch: p.current_leader_epoch,
                last_fetched_epoch: p.last_fetched_epoch,
                log_start_offset: p.log_start_offset,
            });
        }
    }
    if version < 4 {
        if let Some(suppressed) = OLD_VERSION_LOG.allow() {
            tracing::info!(
                client_id,
                version,
                suppressed,
                "answered Fetch with UNSUPPORTED_VERSION: versions 0-3 read message formats v0/v1, which Tern does not convert to"
            );
        }
        for w in &wanted {
            let known = w
                .name
                .as_deref()
                .and_then(|n| broker.topics.get(n))
                .is_some_and(|t| t.partition(w.partition).is_some());
            let error = if known { ResponseError::UnsupportedVersion } else { ResponseError::UnknownTopicOrPartition };
            topics[w.topic_index].partitions.push(
                PartitionData::default()
                    .with_partition_index(w.partition)
                    .with_error_code(error.code())
                    .with_high_watermark(-1)
                    .with_records(Some(Default::default())),
            );
        }
        response.responses = topics;
        return response;
    }
    let wanted = Arc::new(wanted);
    let replica_id = if version >= 15 { request.replica_state.replica_id.0 } else { request.replica_id.0 };
    let follower = (replica_id >= 0).then_some(Follower {
        replica_id,
        broker_epoch: if version >= 15 { request.replica_state.replica_epoch } else { -1 },
    });
    // v0-2 have no max_bytes (it decodes as i32::MAX); every version is capped by the broker's.
    let max_bytes = (request.max_bytes.max(0) as usize).min(broker.config.fetch_max_bytes());
    let min_bytes = (request.min_bytes.max(0) as usize).min(max_bytes);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(request.max_wait_ms.max(0) as u64);
    // Kafka's DelayedFetch: watch only the partitions read; an append to one of them wakes
    // this fetch to read again (registered before the first read, so no append is missed).
    let waker = Arc::new(Notify::new());
    for w in wanted.iter() {
        let topic = w.name.as_deref().and_then(|n| broker.topics.get(n));
        if let Some(partition) = topic.as_ref().and_then(|t| t.partition(w.partition)) {
            partition.waiters.watch(&waker);
        }
    }
    let results = loop {
        let (b, w) = (broker.clone(), wanted.clone());
        let results = blocking(move || read_all(&b, &w, max_bytes, use_ids, follower)).await;
        let total: usize = results.iter().map(|r| r.records.as_ref().map_or(0, |r| r.len())).sum();
        let any_error = results.iter().any(|r| r.error_code != 0);
        if total >= min_bytes || any_error || tokio::time::Instant::now() >= deadline {
            break results;
        }
        if tokio::time::timeout_at(deadline, waker.notified()).await.is_err() {
            // Timed out: answer with what there is (read again: something may just have arrived).
            let (b, w) = (broker.clone(), wanted.clone());
            break blocking(move || read_all(&b, &w, max_bytes, use_ids, follower)).await;
        }
    };
    for (w, data) in wanted.iter().zip(results) {
        topics[w.topic_index].partitions.push(data);
    }
    response.responses = topics;
    response
}

fn read_all(
    broker: &Broker,
    wanted: &[Wanted],
    max_bytes: usize,
    use_ids: bool,
    follower: Option<Follower>,
) -> Vec<PartitionData> {
    let mut remaining = max_bytes;
    let mut first_data = true;
    wanted
        .iter()
        .map(|w| {
            let mut data = PartitionData::default()
                .with_partition_index(w.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1);
            let unknown = if use_ids { ResponseError::UnknownTopicId } else { ResponseError::UnknownTopicOrPartition };
            let Some(topic) = w.name.as_deref().and_then(|n| broker.topics.get(n)) else {
                return data.with_error_code(unknown.code());
            };
            if use_ids && topic.id != w.topic_id {
                return data.with_error_code(unknown.code());
            }
            if let Some(follower) = follower {
                let limit = w.partition_max_bytes.min(remaining);
                let data = read_for_follower(&topic, w, follower, limit, first_data, data);
                let read = data.records.as_ref().map_or(0, |r| r.len());
                remaining = remaining.saturating_sub(read);
                first_data &= read == 0;
                return data;
            }
            let partition = match requested_partition(Some(&topic), w.partition, w.current_leader_epoch) {
                Ok(partition) => partition,
                Err(e) => return data.with_error_code(e.code()),
            };
            let log = &partition.log;
            let hw = log.high_watermark();
            data.high_watermark = hw;
            data.last_stable_offset = hw;
            data.log_start_offset = log.log_start_offset();
            let limit = w.partition_max_bytes.min(remaining);
            if limit == 0 && !first_data {
                data.records = Some(Default::default());
                return data;
            }
            match log.read(w.fetch_offset, limit, hw, first_data) {
                Ok(read) => {
                    remaining = remaining.saturating_sub(read.records.len());
                    if !read.records.is_empty() {
                        first_data = false;
                    }
                    data.high_watermark = read.high_watermark;
                    data.last_stable_offset = read.high_watermark;
                    data.log_start_offset = read.log_start_offset;
                    data.records = Some(read.records);
                }
                Err(e) => {
                    data.error_code = storage_error_code(&e).code();
                    data.records = Some(Default::default());
                }
            }
            data
        })
        .collect()
}

/// A follower's read of one partition (Kafka's `fetchRecords` for a replica): the replica state
/// machine records the follower's position (which may move the high watermark and answer
/// acks=all produces), then the log is read up to its end, or a diverging epoch is answered.
fn read_for_follower(
    topic: &crate::topics::Topic,
    w: &Wanted,
    follower: Follower,
    limit: usize,
    min_one: bool,
    mut data: PartitionData,
) -> PartitionData {
    let Some(partition) = topic.partition(w.partition) else {
        return data.with_error_code(ResponseError::NotLeaderOrFollower.code());
    };
    if partition.offline_reason().is_some() {
        return data.with_error_code(ResponseError::KafkaStorageError.code());
    }
    let fetch = tern_partition::FollowerFetch {
        replica_id: follower.replica_id,
        broker_epoch: follower.broker_epoch,
        current_leader_epoch: (w.current_leader_epoch >= 0).then_some(w.current_leader_epoch),
        fetch_offset: w.fetch_offset,
        last_fetched_epoch: (w.last_fetched_epoch >= 0).then_some(w.last_fetched_epoch),
        log_start_offset: w.log_start_offset,
    };
    let answer = match partition.follower_fetch(&fetch) {
        Ok(answer) => answer,
        Err(code) => return data.with_error_code(code),
    };
    let log = &partition.log;
    data.high_watermark = log.high_watermark();
    data.last_stable_offset = data.high_watermark;
    data.log_start_offset = log.log_start_offset();
    if let Some(diverging) = answer.diverging_epoch {
        data.diverging_epoch.epoch = diverging.leader_epoch;
        data.diverging_epoch.end_offset = diverging.end_offset;
        data.records = Some(Default::default());
        return data;
    }
    match log.read(w.fetch_offset, limit, i64::MAX, min_one) {
        Ok(read) => data.records = Some(read.records),
        Err(e) => {
            data.error_code = storage_error_code(&e).code();
            data.records = Some(Default::default());
        }
    }
    data
}
