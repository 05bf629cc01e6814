//! Tern's partition log: an append-only sequence of Kafka v2 record batches on the local
//! filesystem, stored byte-for-byte as producers sent them (only the base offset, partition
//! leader epoch and, for LogAppendTime, the max timestamp are patched). Under
//! `cleanup.policy=compact` the cleaner later rewrites batches without superseded records
//! (`cleaner.rs`), so offsets may then have gaps.
//!
//! This crate knows nothing of sockets or the Kafka request layer: the broker calls it from
//! blocking threads, never from the tasks that serve sockets.

use std::path::{Path, PathBuf};

use bytes::Bytes;

mod batch;
mod cleaner;
mod compress;
mod decompress;
mod epoch;
mod index;
mod log;
mod ops;
mod producers;
mod recovery;
mod refusals;
mod segment;
mod validate;

pub use crate::cleaner::{CleanStats, CleanerOptions, CrashPoint};
pub use crate::log::Log;
pub use crate::recovery::OnDamage;
pub use crate::validate::{inspect_produced, ProducedBatches, MAX_EXPANSION};

/// How record timestamps are assigned (`message.timestamp.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// `cleanup.policy`: which of deletion (time/size retention) and compaction apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupPolicy {
    /// `delete`: `retention.ms` and `retention.bytes` remove old segments.
    pub delete: bool,
    /// `compact`: the cleaner keeps the latest record per key (see [`Log::clean`]).
    pub compact: bool,
}

impl CleanupPolicy {
    pub const DELETE: CleanupPolicy = CleanupPolicy { delete: true, compact: false };
    pub const COMPACT: CleanupPolicy = CleanupPolicy { delete: false, compact: true };

    /// Parses Kafka's list syntax (`delete`, `compact`, `compact,delete`); unknown entries are
    /// ignored and an empty list means `delete`, Kafka's default.
    pub fn parse(value: &str) -> CleanupPolicy {
        let mut p = CleanupPolicy { delete: false, compact: false };
        for item in value.split(',').map(|s| s.trim()) {
            p.delete |= item.eq_ignore_ascii_case("delete");
            p.compact |= item.eq_ignore_ascii_case("compact");
        }
        if !p.delete && !p.compact {
            p.delete = true;
        }
        p
    }
}

/// A Kafka record-batch compression codec (the low three bits of a batch's attributes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None = 0,
    Gzip = 1,
    Snappy = 2,
    Lz4 = 3,
    Zstd = 4,
}

impl Codec {
    pub fn from_id(id: i16) -> Option<Codec> {
        Some(match id {
            0 => Codec::None,
            1 => Codec::Gzip,
            2 => Codec::Snappy,
            3 => Codec::Lz4,
            4 => Codec::Zstd,
            _ => return None,
        })
    }
}

/// `compression.type`: the codec batches are stored with. `Producer` keeps whatever the
/// producer used; any other value makes the broker recompress batches that differ, as Kafka
/// does (`uncompressed` is Kafka's name for [`Codec::None`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionType {
    Producer,
    Codec(Codec),
}

impl CompressionType {
    /// Kafka's names: `producer`, `uncompressed`, `gzip`, `snappy`, `lz4`, `zstd`.
    pub fn parse(value: &str) -> Option<CompressionType> {
        Some(match value.trim() {
            "producer" => CompressionType::Producer,
            "uncompressed" => CompressionType::Codec(Codec::None),
            "gzip" => CompressionType::Codec(Codec::Gzip),
            "snappy" => CompressionType::Codec(Codec::Snappy),
            "lz4" => CompressionType::Codec(Codec::Lz4),
            "zstd" => CompressionType::Codec(Codec::Zstd),
            _ => return None,
        })
    }
    /// The codec a batch compressed with `source` is stored with.
    pub fn target(self, source: Codec) -> Codec {
        match self {
            CompressionType::Producer => source,
            CompressionType::Codec(c) => c,
        }
    }
}

/// Who is appending, as Kafka's `AppendOrigin`: batches from clients get the checks Kafka
/// applies only to client input (one batch per request, base offset 0, no control batches, a
/// sequence with every producer id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOrigin {
    /// The broker's own records, e.g. the group coordinator's writes to `__consumer_offsets`.
    Coordinator,
    /// A produce request. Producer ids at or above `producer_ids_below` were never handed out
    /// by this broker (InitProducerId).
    Client { producer_ids_below: i64 },
}

/// Per-log settings, named after Kafka's topic configs; `Default` gives Kafka's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`
    pub segment_bytes: u64,
    /// `segment.ms`
    pub segment_ms: i64,
    /// `retention.ms`; -1 keeps data forever.
    pub retention_ms: i64,
    /// `retention.bytes`; -1 means no size limit.
    pub retention_bytes: i64,
    /// `flush.messages`: fsync after this many messages; 1 means fsync every append.
    pub flush_messages: i64,
    /// `flush.ms`
    pub flush_ms: i64,
    /// `max.message.bytes`: the largest record batch accepted.
    pub max_message_bytes: usize,
    /// `message.timestamp.type`
    pub message_timestamp_type: TimestampType,
    /// `index.interval.bytes`
    pub index_interval_bytes: usize,
    /// `segment.index.bytes`
    pub segment_index_bytes: usize,
    /// `cleanup.policy`
    pub cleanup_policy: CleanupPolicy,
    /// `delete.retention.ms`: how long tombstones survive after they were first cleaned.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: records younger than this are never compacted.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: dirty records older than this force a cleaning.
    pub max_compaction_lag_ms: i64,
    /// `message.timestamp.before.max.ms`: how far in the past a CreateTime record may be.
    pub message_timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms`: how far in the future a CreateTime record may be.
    pub message_timestamp_after_max_ms: i64,
    /// `preallocate`: new segment files are allocated at `segment.bytes` up front.
    pub preallocate: bool,
    /// `segment.jitter.ms`: the most a segment's time-based roll is brought forward, so that
    /// partitions created together do not all roll at once.
    pub segment_jitter_ms: i64,
    /// `file.delete.delay.ms`: how long files removed from the log stay on disk (renamed
    /// `.deleted`) before they are deleted, so readers still holding them finish.
    pub file_delete_delay_ms: i64,
    /// `producer.id.expiration.ms` (a broker setting): producer state is forgotten this long
    /// after the producer's last write.
    pub producer_id_expiration_ms: i64,
    /// The most idempotent producers whose state a partition keeps (the least recently active
    /// are forgotten first). Kafka has no such bound; a client that keeps asking for new
    /// producer ids could otherwise grow the broker's memory without limit.
    pub max_producer_entries: usize,
    /// `compression.type`: batches whose codec differs are recompressed on append.
    pub compression: CompressionType,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            flush_messages: i64::MAX,
            flush_ms: i64::MAX,
            max_message_bytes: 1_048_588,
            message_timestamp_type: TimestampType::CreateTime,
            index_interval_bytes: 4096,
            segment_index_bytes: 10 * 1024 * 1024,
            cleanup_policy: CleanupPolicy::DELETE,
            delete_retention_ms: 24 * 60 * 60 * 1000,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            message_timestamp_before_max_ms: i64::MAX,
            message_timestamp_after_max_ms: i64::MAX,
            preallocate: false,
            segment_jitter_ms: 0,
            file_delete_delay_ms: 60_000,
            producer_id_expiration_ms: 86_400_000,
            max_producer_entries: 100_000,
            compression: CompressionType::Producer,
        }
    }
}

/// Errors of the storage layer; the broker maps each to one Kafka error code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// CRC mismatch, bad length or otherwise undecodable batch (CORRUPT_MESSAGE).
    #[error("corrupt record batch: {0}")]
    CorruptRecord(String),
    /// Well-formed but not acceptable, e.g. magic < 2, record count mismatch or a record without
    /// a key under `cleanup.policy=compact` (INVALID_RECORD).
    #[error("invalid record batch: {0}")]
    InvalidRecord(String),
    /// An idempotent producer's batch that does not follow its previous one
    /// (OUT_OF_ORDER_SEQUENCE_NUMBER).
    #[error("out of order sequence: {0}")]
    OutOfOrderSequence(String),
    /// An idempotent producer's batch from an epoch older than the current one
    /// (INVALID_PRODUCER_EPOCH).
    #[error("invalid producer epoch: {0}")]
    InvalidProducerEpoch(String),
    /// Records refused one by one (Kafka's `RecordValidationException`, INVALID_RECORD): e.g. a
    /// record without a key under `cleanup.policy=compact`, or a header key that is not UTF-8.
    /// `records` are KIP-467's record errors (index in the batch, reason).
    #[error("{message}")]
    InvalidRecords { message: String, records: Vec<RecordError> },
    /// A record timestamp outside `message.timestamp.before.max.ms`/`after.max.ms`, or a
    /// producer claiming LogAppendTime (INVALID_TIMESTAMP), with the records concerned.
    #[error("{message}")]
    InvalidTimestamp { message: String, records: Vec<RecordError> },
    /// An idempotent batch carrying a producer id this broker never issued
    /// (UNKNOWN_PRODUCER_ID).
    #[error("unknown producer id: {0}")]
    UnknownProducerId(String),
    /// A request mixing an already written batch with new ones (DUPLICATE_SEQUENCE_NUMBER).
    #[error("duplicate sequence: {0}")]
    DuplicateSequence(String),
    /// A batch larger than `max.message.bytes` (MESSAGE_TOO_LARGE).
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    RecordTooLarge { size: usize, max: usize },
    /// Offset outside [log start offset, log end offset] (OFFSET_OUT_OF_RANGE).
    #[error("offset {offset} out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange { offset: i64, log_start: i64, log_end: i64 },
    /// Stored data that is not what the log wrote there (a damaged batch, index entry or file,
    /// or a checkpoint that contradicts the segments). Reads and opens refuse it rather than
    /// skip or delete it (CORRUPT_MESSAGE for a read; the partition stays offline at open).
    #[error("{path}: {detail} at byte {position}")]
    Damaged { path: PathBuf, position: u64, detail: String },
    /// The log's topic was deleted while the request was on its way (UNKNOWN_TOPIC_OR_PARTITION).
    #[error("partition log {dir} was deleted")]
    Deleted { dir: PathBuf },
    /// The log is offline: a write or fsync failed (the page cache can no longer be trusted), its
    /// files could not be opened as they are, or it was deleted (KAFKA_STORAGE_ERROR).
    #[error("partition log {dir} is offline: {reason}")]
    Offline { dir: PathBuf, reason: String },
    /// Filesystem failure (KAFKA_STORAGE_ERROR).
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// One refused record of a batch (KIP-467): its index in the batch and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    pub batch_index: i32,
    pub message: String,
}

/// What an append assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The broker time written into the batches under LogAppendTime, else -1.
    pub log_append_time: i64,
    pub record_count: i64,
    /// The log start offset after the append.
    pub log_start_offset: i64,
}

/// Whole record batches read from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// Whole batches; the first may start before the fetch offset (clients skip the rest).
    pub records: Bytes,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub high_watermark: i64,
}

pub(crate) fn io_err(path: &Path, source: std::io::Error) -> StorageError {
    StorageError::Io { path: path.to_path_buf(), source }
}

#[allow(dead_code)]
fn assert_log_is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Log>();
}
