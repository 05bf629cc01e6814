//! The internal topic `__consumer_offsets`: where the group coordinator's state lives, in Apache
//! Kafka's own record formats (encoded by `tern-group`), so tools that read the topic directly
//! (Burrow and the like) work. This module only moves records in and out of its partition logs;
//! what they mean is the coordinator's business. Blocking: call from the blocking pool.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
};
use tern_storage::{Log, StorageError};

use crate::topics::{Partition, Topic, TopicError, TopicRegistry};
use crate::BrokerConfig;

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Bytes read per step while loading a partition.
const LOAD_CHUNK: usize = 4 << 20;

/// A key and its value (`None`: a tombstone).
pub type KeyValue = (Bytes, Option<Bytes>);

/// Creates `__consumer_offsets` if it does not exist, with Kafka's settings for it
/// (`offsets.topic.num.partitions`, compacted, `offsets.topic.segment.bytes`). An existing
/// topic keeps its partition count whatever the setting says now (that is reported).
pub fn ensure_offsets_topic(topics: &TopicRegistry, config: &BrokerConfig) -> Result<Arc<Topic>, TopicError> {
    if let Some(topic) = topics.get(OFFSETS_TOPIC) {
        let setting = config.offsets_topic_num_partitions();
        if topic.partition_count != setting {
            tracing::warn!(
                setting,
                partitions = topic.partition_count,
                "offsets.topic.num.partitions differs from the partitions {OFFSETS_TOPIC} has; \
                 groups stay placed by the topic's partitions (the setting only applies when the topic is created)"
            );
        }
        return Ok(topic);
    }
    let configs = BTreeMap::from([
        ("cleanup.policy".to_string(), "compact".to_string()),
        ("compression.type".to_string(), "producer".to_string()),
        ("segment.bytes".to_string(), config.offsets_topic_segment_bytes().to_string()),
    ]);
    let log_config = config.log_config(&configs);
    let partitions = config.offsets_topic_num_partitions();
    let topic = topics.create(OFFSETS_TOPIC, partitions, configs, &log_config)?;
    tracing::info!(partitions, "created {OFFSETS_TOPIC}");
    Ok(topic)
}

/// A partition's records for the group coordinator to load; `None` if the partition is offline
/// or cannot be read, which takes it offline (named at ERROR): its groups are then answered
/// COORDINATOR_NOT_AVAILABLE while the other partitions' groups are served.
pub fn load_partition(partition: &Partition) -> Option<Vec<KeyValue>> {
    if partition.offline_reason().is_some() {
        return None;
    }
    match read_all(&partition.log) {
        Ok(records) => Some(records),
        Err(e) => {
            partition.log.take_offline(&format!(
                "{OFFSETS_TOPIC}-{} cannot be loaded: {e} (`tern log check` finds the damage, `tern log truncate` removes it)",
                partition.index
            ));
            None
        }
    }
}

/// Every key/value in a partition log, oldest first (control batches skipped).
pub fn read_all(log: &Log) -> Result<Vec<KeyValue>, StorageError> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    let end = log.log_end_offset();
    while next < end {
        let chunk = log.read(next, LOAD_CHUNK, end, true)?;
        if chunk.records.is_empty() {
            break;
        }
        let mut buf = chunk.records;
        let before = next;
        while buf.len() >= 61 {
            // Compaction leaves gaps: the next read starts after the batch's last offset, which
            // its header keeps even when the records at the end were cleaned away.
            let base_offset = i64::from_be_bytes(buf[0..8].try_into().unwrap_or_default());
            let batch_len = i32::from_be_bytes(buf[8..12].try_into().unwrap_or_default());
            let last_offset_delta = i32::from_be_bytes(buf[23..27].try_into().unwrap_or_default());
            let size = 12 + usize::try_from(batch_len).unwrap_or(0);
            if size > buf.len() {
                break;
            }
            let mut batch = buf.split_to(size);
            let decoded = RecordBatchDecoder::decode(&mut batch)
                .map_err(|e| StorageError::CorruptRecord(format!("{OFFSETS_TOPIC} batch: {e:#}")))?;
            next = next.max(base_offset + last_offset_delta as i64 + 1);
            for record in decoded.records {
                if record.control {
                    continue;
                }
                if let Some(key) = record.key {
                    out.push((key, record.value));
                }
            }
        }
        if next == before {
            return Err(StorageError::CorruptRecord(format!("{OFFSETS_TOPIC}: no progress reading at offset {next}")));
        }
    }
    Ok(out)
}

/// Encodes `records` as one uncompressed v2 batch (empty for no records).
pub fn encode_batch(records: &[KeyValue], now_ms: i64) -> Result<Bytes, StorageError> {
    let batch: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32 - 1, // one batch, base sequence -1 (see tern-client's records.rs)
            timestamp: now_ms,
            key: Some(key.clone()),
            value: value.clone(),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    if !batch.is_empty() {
        let options = RecordEncodeOptions { version: 2, compression: Compression::None };
        RecordBatchEncoder::encode(&mut buf, batch.iter(), &options)
            .map_err(|e| StorageError::InvalidRecord(format!("encoding {OFFSETS_TOPIC} records: {e:#}")))?;
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_then_read_all_round_trips_including_tombstones() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), Default::default(), 0).unwrap();
        let kv = |k: &str, v: Option<&str>| (Bytes::from(k.to_string()), v.map(|v| Bytes::from(v.to_string())));
        let mut input = encode_batch(&[kv("a", Some("1")), kv("b", Some("2"))], 1000).unwrap().to_vec();
        input.extend_from_slice(&encode_batch(&[kv("a", None)], 1001).unwrap());
        log.append(&input, 0, 1001).unwrap();
        assert_eq!(read_all(&log).unwrap(), vec![kv("a", Some("1")), kv("b", Some("2")), kv("a", None)]);
    }

    /// After compaction, batches end in gaps; loading must step over them.
    #[test]
    fn read_all_steps_over_offsets_removed_by_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let config = tern_storage::LogConfig {
            segment_bytes: 300,
            cleanup_policy: tern_storage::CleanupPolicy { delete: false, compact: true },
            ..Default::default()
        };
        let log = Log::open(dir.path(), config, 0).unwrap();
        let kv = |k: &str, v: String| (Bytes::from(k.to_string()), Some(Bytes::from(v)));
        for i in 0..40 {
            // The key that is overwritten every time comes last, so cleaned batches end in a gap.
            let batch = encode_batch(&[kv(&format!("k{}", i % 3), format!("v{i}")), kv("a", format!("a{i}"))], 1000);
            log.append(&batch.unwrap(), 0, 1000).unwrap();
        }
        log.set_high_watermark(log.log_end_offset()); // committed: the cleaner stops at the HW
        let options = tern_storage::CleanerOptions { force: true, ..Default::default() };
        let stats = log.clean_with(2000, &options).unwrap();
        assert!(stats.is_some_and(|s| s.records_removed > 0));
        let all = read_all(&log).unwrap();
        assert!(all.len() < 80, "compaction removed nothing: {} records", all.len());
        assert_eq!(all.iter().filter(|(k, _)| &k[..] == b"a").last().unwrap().1.as_deref(), Some(&b"a39"[..]));
    }
}
