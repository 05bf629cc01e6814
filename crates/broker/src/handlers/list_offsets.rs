//! ListOffsets: earliest, latest, max-timestamp and by-timestamp lookups; v0's segment-based
//! `old_style_offsets`.

use std::collections::HashSet;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use tern_storage::Log;

use super::{blocking, requested_partition};
use crate::errors::storage_error_code;
use crate::{now_ms, Broker};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;
/// `replica_id` of an ordinary consumer (as opposed to a follower or a debugging tool).
const CONSUMER_REPLICA_ID: i32 = -1;

pub(crate) async fn handle(broker: &Arc<Broker>, request: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let b = broker.clone();
    blocking(move || {
        let mut response = ListOffsetsResponse::default();
        // Kafka answers a partition named twice with INVALID_REQUEST; doing so for every version
        // also keeps the response proportional to the partitions this broker has.
        let mut seen = HashSet::new();
        let duplicated: HashSet<(String, i32)> = request
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.name.0.as_str().to_string(), p.partition_index)))
            .filter(|key| !seen.insert(key.clone()))
            .collect();
        let from_consumer = request.replica_id.0 == CONSUMER_REPLICA_ID;
        for t in request.topics {
            let topic = b.topics.get(t.name.0.as_str());
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut r = ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
                    if version >= 1 {
                        r = r.with_timestamp(-1).with_offset(-1).with_leader_epoch(-1);
                    }
                    if duplicated.contains(&(t.name.0.as_str().to_string(), p.partition_index)) {
                        return r.with_error_code(ResponseError::InvalidRequest.code());
                    }
                    let partition = match requested_partition(topic.as_ref(), p.partition_index, p.current_leader_epoch)
                    {
                        Ok(partition) => partition,
                        Err(e) => return r.with_error_code(e.code()),
                    };
                    let log = &partition.log;
                    if version == 0 {
                        return match old_style_offsets(log, p.timestamp, p.max_num_offsets, from_consumer) {
                            Ok(offsets) => r.with_old_style_offsets(offsets),
                            Err(e) => r.with_error_code(e.code()),
                        };
                    }
                    let found = match p.timestamp {
                        LATEST => Ok(Some((log.high_watermark(), -1))),
                        EARLIEST | EARLIEST_LOCAL => Ok(Some((log.log_start_offset(), -1))),
                        LATEST_TIERED => Ok(None),
                        MAX_TIMESTAMP => Ok(log.max_timestamp()),
                        ts if ts < 0 => return r.with_error_code(ResponseError::InvalidRequest.code()),
                        ts => log.offset_for_timestamp(ts),
                    };
                    match found {
                        Ok(Some((offset, timestamp))) => {
                            // leader_epoch exists from v4; older versions must leave it at its default.
                            let epoch = if version >= 4 { partition.leader_epoch() } else { -1 };
                            r.with_offset(offset).with_timestamp(timestamp).with_leader_epoch(epoch)
                        }
                        Ok(None) => r,
                        Err(e) => r.with_error_code(storage_error_code(&e).code()),
                    }
                })
                .collect();
            response.topics.push(ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(partitions));
        }
        response
    })
    .await
}

/// ListOffsets v0, as Kafka's `legacyFetchOffsetsBefore`: the candidate offsets are each
/// segment's base offset (not below the log start) stamped with the segment file's modification
/// time, plus the log end offset stamped now if the active segment holds data. LATEST starts from
/// the newest candidate, EARLIEST from the oldest, a timestamp from the newest candidate modified
/// at or before it; up to `max_num_offsets` offsets from there towards older ones, newest first.
fn old_style_offsets(
    log: &Log,
    timestamp: i64,
    max_num_offsets: i32,
    from_consumer: bool,
) -> Result<Vec<i64>, ResponseError> {
    if timestamp < EARLIEST {
        // v0 has no other special timestamps; Kafka answers them so.
        return Err(ResponseError::UnsupportedVersion);
    }
    if max_num_offsets < 0 {
        return Err(ResponseError::InvalidRequest);
    }
    if log.offline_reason().is_some() {
        return Err(ResponseError::KafkaStorageError);
    }
    let log_start = log.log_start_offset();
    let mut candidates: Vec<(i64, i64)> = Vec::new();
    let mut last_size = 0;
    for base in log.segment_base_offsets() {
        let meta = std::fs::metadata(log.dir().join(format!("{base:020}.log")));
        let modified = meta
            .as_ref()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64);
        last_size = meta.map_or(0, |m| m.len());
        candidates.push((base.max(log_start), modified));
    }
    if last_size > 0 {
        candidates.push((log.log_end_offset(), now_ms()));
    }
    let start = match timestamp {
        LATEST => candidates.len().checked_sub(1),
        EARLIEST => (!candidates.is_empty()).then_some(0),
        ts => candidates.iter().rposition(|&(_, modified)| modified <= ts),
    };
    let Some(start) = start else { return Ok(Vec::new()) };
    let mut offsets: Vec<i64> =
        candidates[..=start].iter().rev().take(max_num_offsets as usize).map(|&(offset, _)| offset).collect();
    offsets.sort_unstable_by(|a, b| b.cmp(a));
    if from_consumer {
        // A consumer is never told of offsets past the high watermark.
        let hw = log.high_watermark();
        if offsets.iter().any(|&o| o > hw) {
            offsets.retain(|&o| o <= hw);
            offsets.insert(0, hw);
        }
    }
    Ok(offsets)
}
