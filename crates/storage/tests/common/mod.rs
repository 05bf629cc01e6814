//! Helpers shared by the storage integration tests.
#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tern_storage::{AppendInfo, Log, LogConfig, StorageError};

pub const ALL_CODECS: [Compression; 5] =
    [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd];

/// Appends as a leader with no followers does: committed at once. Storage never moves the high
/// watermark by itself (the broker's replica state machine does), so tests that want their
/// records visible to reads, retention and the cleaner commit them here.
pub trait AppendCommitted {
    fn append_committed(&self, batches: &[u8], leader_epoch: i32, now_ms: i64) -> Result<AppendInfo, StorageError>;
}

impl AppendCommitted for Log {
    fn append_committed(&self, batches: &[u8], leader_epoch: i32, now_ms: i64) -> Result<AppendInfo, StorageError> {
        let info = self.append(batches, leader_epoch, now_ms)?;
        self.set_high_watermark(self.log_end_offset());
        Ok(info)
    }
}

/// A record for test batches; batch-level fields are left for the encoder.
pub fn record(i: usize, timestamp: i64, key: Option<Bytes>, value: Option<Bytes>) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: i as i64,
        sequence: i as i32,
        timestamp,
        key,
        value,
        headers: Default::default(),
    }
}

/// Encodes `records` as one v2 batch.
pub fn encode(records: &[Record], compression: Compression) -> Vec<u8> {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, records, &RecordEncodeOptions { version: 2, compression }).unwrap();
    buf.to_vec()
}

/// One v2 batch with a record per timestamp; values are `v{i}`.
pub fn batch_ts(timestamps: &[i64], compression: Compression) -> Vec<u8> {
    let records: Vec<Record> = timestamps
        .iter()
        .enumerate()
        .map(|(i, &ts)| record(i, ts, Some(Bytes::from(format!("k{i}"))), Some(Bytes::from(format!("v{i}")))))
        .collect();
    encode(&records, compression)
}

/// A batch of `n` records, all with timestamp `ts`.
pub fn batch(n: usize, ts: i64) -> Vec<u8> {
    batch_ts(&vec![ts; n], Compression::None)
}

/// A batch of one record whose value has `size` bytes.
pub fn big_batch(size: usize) -> Vec<u8> {
    encode(&[record(0, 1000, None, Some(Bytes::from(vec![7u8; size])))], Compression::None)
}

/// Recomputes the CRC of a single batch after a test edited it.
pub fn fix_crc(b: &mut [u8]) {
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// (offset, timestamp, value) of every record in `bytes`.
pub fn decode(bytes: &Bytes) -> Vec<(i64, i64, Bytes)> {
    let mut buf = bytes.clone();
    RecordBatchDecoder::decode_all(&mut buf)
        .unwrap()
        .into_iter()
        .flat_map(|set| set.records)
        .map(|r| (r.offset, r.timestamp, r.value.unwrap_or_default()))
        .collect()
}

/// All record offsets readable from `from`, following the log batch by batch.
pub fn read_all(log: &Log, from: i64) -> Vec<(i64, i64, Bytes)> {
    let mut out = Vec::new();
    let mut next = from;
    while next < log.log_end_offset() {
        let r = log.read(next, 1 << 20, i64::MAX, true).unwrap();
        let recs: Vec<_> = decode(&r.records).into_iter().filter(|r| r.0 >= next).collect();
        assert!(!recs.is_empty(), "no progress reading at {next}");
        next = recs.last().unwrap().0 + 1;
        out.extend(recs);
    }
    out
}

pub fn small_config() -> LogConfig {
    LogConfig { index_interval_bytes: 64, ..LogConfig::default() }
}
