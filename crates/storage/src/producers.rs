//! Idempotent-producer state per partition (Kafka's `ProducerStateManager`, without
//! transactions): for each producer id, its epoch and the sequence ranges of its last five
//! batches, so a retried batch is recognised and answered with its original offsets instead of
//! being written twice, and a gap in sequence numbers is refused.
//!
//! The state lives in memory under the log's writer lock and survives restarts through
//! snapshots, as in Kafka: `<offset>.snapshot` holds the state as of `offset` (every batch
//! below it); one is written when a segment is rolled (at the new segment's base) and at a
//! clean shutdown (at the log end). Opening a log loads the newest readable snapshot and replays
//! the batch headers after it, or the whole log when there is none. The file is Kafka's format
//! (version 1, CRC-32C, one entry per batch: Kafka keeps one per producer, we keep the last five
//! batches as consecutive entries, which Kafka's reader would load as the newest one).
//!
//! Bounds: a producer not heard from for `producer.id.expiration.ms` is forgotten (its next
//! batch is then accepted whatever its sequence, as Kafka does), and at most
//! [`ProducerStates::max_entries`] producers are kept per partition, the least recently active
//! evicted first.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use crate::batch::BatchHeader;
use crate::{Result, StorageError};

/// Kafka keeps this many batches per producer for duplicate detection (the most a client may
/// have in flight with idempotence on).
const CACHED_BATCHES: usize = 5;
/// Producers kept per partition unless configured otherwise.
pub(crate) const DEFAULT_MAX_ENTRIES: usize = 100_000;

pub(crate) const SNAPSHOT_EXT: &str = "snapshot";
const SNAPSHOT_VERSION: i16 = 1;
/// version(2) + crc(4) + entry count(4)
const SNAPSHOT_HEADER: usize = 10;
/// producer id, epoch, last sequence, last offset, offset delta, timestamp, coordinator epoch,
/// current transaction's first offset
const SNAPSHOT_ENTRY: usize = 8 + 2 + 4 + 8 + 4 + 8 + 4 + 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchSeq {
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
    last_offset: i64,
}

#[derive(Debug, Default, Clone)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchSeq>,
    /// When the producer last wrote (the append's wall-clock time; a batch's max timestamp when
    /// rebuilt from the log), for `producer.id.expiration.ms`.
    last_write_ms: i64,
}

/// What to do with an idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SequenceCheck {
    /// Not idempotent (no producer id or sequence), or the next in sequence: append it.
    Append,
    /// Already in the log at these offsets: answer with them, write nothing.
    Duplicate { base_offset: i64, last_offset: i64 },
}

#[derive(Debug, Clone)]
pub(crate) struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
    max_entries: usize,
}

impl Default for ProducerStates {
    fn default() -> Self {
        ProducerStates { producers: HashMap::new(), max_entries: DEFAULT_MAX_ENTRIES }
    }
}

fn last_seq(h: &BatchHeader) -> i32 {
    // Sequences wrap at i32::MAX back to 0, as in Kafka.
    ((h.base_sequence as i64 + h.last_offset_delta as i64) % (i32::MAX as i64 + 1)) as i32
}

fn is_idempotent(h: &BatchHeader) -> bool {
    h.producer_id >= 0 && h.base_sequence >= 0 && !h.is_control()
}

impl ProducerStates {
    pub(crate) fn with_max_entries(max_entries: usize) -> ProducerStates {
        ProducerStates { producers: HashMap::new(), max_entries: max_entries.max(1) }
    }

    pub(crate) fn set_max_entries(&mut self, max_entries: usize) {
        self.max_entries = max_entries.max(1);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.producers.len()
    }

    /// Checks a batch about to be appended.
    pub(crate) fn check(&self, h: &BatchHeader) -> Result<SequenceCheck> {
        if !is_idempotent(h) {
            return Ok(SequenceCheck::Append);
        }
        let Some(entry) = self.producers.get(&h.producer_id) else { return Ok(SequenceCheck::Append) };
        if h.producer_epoch < entry.epoch {
            return Err(StorageError::InvalidProducerEpoch(format!(
                "producer {} epoch {} is older than the current epoch {}",
                h.producer_id, h.producer_epoch, entry.epoch
            )));
        }
        if h.producer_epoch > entry.epoch {
            // A new epoch starts its sequences again at 0.
            return if h.base_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(StorageError::OutOfOrderSequence(format!(
                    "producer {} epoch {} starts at sequence {}, expected 0",
                    h.producer_id, h.producer_epoch, h.base_sequence
                )))
            };
        }
        let last = last_seq(h);
        if let Some(b) = entry.batches.iter().find(|b| b.first_seq == h.base_sequence && b.last_seq == last) {
            return Ok(SequenceCheck::Duplicate { base_offset: b.base_offset, last_offset: b.last_offset });
        }
        let expected = entry.batches.back().map_or(0, |b| if b.last_seq == i32::MAX { 0 } else { b.last_seq + 1 });
        if h.base_sequence != expected {
            return Err(StorageError::OutOfOrderSequence(format!(
                "producer {} epoch {}: sequence {} where {expected} was expected",
                h.producer_id, h.producer_epoch, h.base_sequence
            )));
        }
        Ok(SequenceCheck::Append)
    }

    /// Records a batch now in the log (`h.base_offset` is its assigned offset), written at
    /// `now_ms`. Returns how many producers were evicted to stay within the bound.
    pub(crate) fn record(&mut self, h: &BatchHeader, now_ms: i64) -> usize {
        if !is_idempotent(h) {
            return 0;
        }
        let entry = self.producers.entry(h.producer_id).or_default();
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == CACHED_BATCHES {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchSeq {
            first_seq: h.base_sequence,
            last_seq: last_seq(h),
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
        });
        entry.last_write_ms = entry.last_write_ms.max(now_ms);
        self.enforce_bound()
    }

    /// Evicts the least recently active eighth when over the bound, so that a flood of new
    /// producers costs one sort per eighth of the bound, not one scan per batch.
    fn enforce_bound(&mut self) -> usize {
        if self.producers.len() <= self.max_entries {
            return 0;
        }
        let evict = (self.producers.len() - self.max_entries).max(self.max_entries / 8).max(1);
        let mut by_age: Vec<(i64, i64)> = self.producers.iter().map(|(&id, e)| (e.last_write_ms, id)).collect();
        by_age.select_nth_unstable(evict - 1);
        for &(_, id) in &by_age[..evict] {
            self.producers.remove(&id);
        }
        evict
    }

    /// Forgets producers whose last write is `expiration_ms` or more before `now_ms`
    /// (`producer.id.expiration.ms`). Returns how many were forgotten.
    pub(crate) fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| now_ms.saturating_sub(e.last_write_ms) < expiration_ms);
        before - self.producers.len()
    }

    /// The largest producer id recorded, -1 if none.
    pub(crate) fn max_producer_id(&self) -> i64 {
        self.producers.keys().copied().max().unwrap_or(-1)
    }

    /// Forgets everything (after a truncation the cached offsets may be gone).
    pub(crate) fn clear(&mut self) {
        self.producers.clear();
    }

    /// Kafka's snapshot format (see the module docs), entries ordered by producer id and, per
    /// producer, oldest batch first.
    pub(crate) fn encode_snapshot(&self) -> Vec<u8> {
        let mut ids: Vec<i64> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        let count: usize = self.producers.values().map(|e| e.batches.len()).sum();
        let mut out = Vec::with_capacity(SNAPSHOT_HEADER + count * SNAPSHOT_ENTRY);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&(count as i32).to_be_bytes());
        for id in ids {
            let e = &self.producers[&id];
            for b in &e.batches {
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&e.epoch.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
                out.extend_from_slice(&((b.last_offset - b.base_offset) as i32).to_be_bytes());
                out.extend_from_slice(&e.last_write_ms.to_be_bytes());
                out.extend_from_slice(&(-1i32).to_be_bytes());
                out.extend_from_slice(&(-1i64).to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out[6..]);
        out[2..6].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// Parses a snapshot; `Err` says what is wrong with it.
    pub(crate) fn decode_snapshot(bytes: &[u8], max_entries: usize) -> std::result::Result<ProducerStates, String> {
        if bytes.len() < SNAPSHOT_HEADER {
            return Err(format!("{} bytes, shorter than the header", bytes.len()));
        }
        let version = i16::from_be_bytes([bytes[0], bytes[1]]);
        if version != SNAPSHOT_VERSION {
            return Err(format!("unknown version {version}"));
        }
        let crc = u32::from_be_bytes(bytes[2..6].try_into().expect("4 bytes"));
        if crc != crc32c::crc32c(&bytes[6..]) {
            return Err("CRC mismatch".into());
        }
        let count = i32::from_be_bytes(bytes[6..10].try_into().expect("4 bytes"));
        let body = &bytes[SNAPSHOT_HEADER..];
        if count < 0 || body.len() != count as usize * SNAPSHOT_ENTRY {
            return Err(format!("{count} entries in {} bytes", body.len()));
        }
        let mut states = ProducerStates::with_max_entries(max_entries);
        for e in body.chunks_exact(SNAPSHOT_ENTRY) {
            let id = i64::from_be_bytes(e[0..8].try_into().expect("8 bytes"));
            let epoch = i16::from_be_bytes([e[8], e[9]]);
            let last_seq = i32::from_be_bytes(e[10..14].try_into().expect("4 bytes"));
            let last_offset = i64::from_be_bytes(e[14..22].try_into().expect("8 bytes"));
            let delta = i32::from_be_bytes(e[22..26].try_into().expect("4 bytes"));
            let ts = i64::from_be_bytes(e[26..34].try_into().expect("8 bytes"));
            if id < 0 || delta < 0 || last_seq < 0 {
                return Err(format!("invalid entry for producer {id}"));
            }
            let first_seq = ((last_seq as i64 - delta as i64).rem_euclid(i32::MAX as i64 + 1)) as i32;
            let entry = states.producers.entry(id).or_default();
            if entry.epoch != epoch {
                entry.epoch = epoch;
                entry.batches.clear();
            }
            if entry.batches.len() == CACHED_BATCHES {
                entry.batches.pop_front();
            }
            entry.batches.push_back(BatchSeq {
                first_seq,
                last_seq,
                base_offset: last_offset - delta as i64,
                last_offset,
            });
            entry.last_write_ms = entry.last_write_ms.max(ts);
        }
        Ok(states)
    }
}

pub(crate) fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    crate::segment::file_name(dir, offset, SNAPSHOT_EXT)
}

/// The offsets of the snapshot files in `dir`, ascending.
pub(crate) fn list_snapshots(dir: &Path) -> std::io::Result<Vec<i64>> {
    let mut offsets = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".snapshot") {
            if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
                if let Ok(offset) = stem.parse::<i64>() {
                    offsets.push(offset);
                }
            }
        }
    }
    offsets.sort_unstable();
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(producer_id: i64, epoch: i16, base_sequence: i32, records: i32, base_offset: i64) -> BatchHeader {
        BatchHeader {
            base_offset,
            size: 100,
            magic: 2,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id,
            producer_epoch: epoch,
            base_sequence,
            record_count: records,
        }
    }

    #[test]
    fn duplicates_answered_gaps_and_stale_epochs_refused() {
        let mut s = ProducerStates::default();
        for (i, seq) in [0, 3, 6].into_iter().enumerate() {
            let h = header(7, 0, seq, 3, i as i64 * 3);
            assert_eq!(s.check(&h).unwrap(), SequenceCheck::Append);
            s.record(&h, 0);
        }
        // A retry of the second batch gets its original offsets.
        assert_eq!(
            s.check(&header(7, 0, 3, 3, -1)).unwrap(),
            SequenceCheck::Duplicate { base_offset: 3, last_offset: 5 }
        );
        assert!(matches!(s.check(&header(7, 0, 10, 1, -1)), Err(StorageError::OutOfOrderSequence(_))));
        assert_eq!(s.check(&header(7, 0, 9, 1, -1)).unwrap(), SequenceCheck::Append);
        // A bumped epoch starts at 0; an older one is fenced.
        assert!(matches!(s.check(&header(7, 1, 5, 1, -1)), Err(StorageError::OutOfOrderSequence(_))));
        let h = header(7, 1, 0, 1, 9);
        assert_eq!(s.check(&h).unwrap(), SequenceCheck::Append);
        s.record(&h, 0);
        assert!(matches!(s.check(&header(7, 0, 9, 1, -1)), Err(StorageError::InvalidProducerEpoch(_))));
        // Unknown producers and non-idempotent batches are appended.
        assert_eq!(s.check(&header(8, 0, 42, 1, -1)).unwrap(), SequenceCheck::Append);
        assert_eq!(s.check(&header(-1, -1, -1, 1, -1)).unwrap(), SequenceCheck::Append);
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut s = ProducerStates::default();
        for i in 0..7 {
            s.record(&header(1, 0, i, 1, i as i64), 0);
        }
        assert!(matches!(s.check(&header(1, 0, 1, 1, -1)), Err(StorageError::OutOfOrderSequence(_))));
        assert_eq!(
            s.check(&header(1, 0, 2, 1, -1)).unwrap(),
            SequenceCheck::Duplicate { base_offset: 2, last_offset: 2 }
        );
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut s = ProducerStates::default();
        let h = header(1, 0, i32::MAX - 1, 2, 0);
        s.record(&h, 0);
        assert_eq!(s.check(&header(1, 0, 0, 1, -1)).unwrap(), SequenceCheck::Append);
    }

    #[test]
    fn snapshot_round_trip_keeps_every_cached_batch() {
        let mut s = ProducerStates::default();
        for i in 0..7 {
            s.record(&header(3, 2, i * 2, 2, 100 + i as i64 * 2), 1_000 + i as i64);
        }
        s.record(&header(9, 0, i32::MAX, 3, 500), 5);
        let bytes = s.encode_snapshot();
        let back = ProducerStates::decode_snapshot(&bytes, 10).unwrap();
        assert_eq!(back.len(), 2);
        for i in 2..7 {
            assert_eq!(
                back.check(&header(3, 2, i * 2, 2, -1)).unwrap(),
                SequenceCheck::Duplicate { base_offset: 100 + i as i64 * 2, last_offset: 101 + i as i64 * 2 }
            );
        }
        // The wrapped batch keeps its first sequence.
        assert_eq!(
            back.check(&header(9, 0, i32::MAX, 3, -1)).unwrap(),
            SequenceCheck::Duplicate { base_offset: 500, last_offset: 502 }
        );
        let mut damaged = bytes.clone();
        damaged[20] ^= 1;
        assert!(ProducerStates::decode_snapshot(&damaged, 10).unwrap_err().contains("CRC"));
        assert!(ProducerStates::decode_snapshot(&bytes[..bytes.len() - 1], 10).is_err());
    }

    #[test]
    fn expiry_and_the_bound_forget_the_least_recent_producers() {
        let mut s = ProducerStates::with_max_entries(16);
        for id in 0..16 {
            assert_eq!(s.record(&header(id, 0, 0, 1, id), id * 10), 0);
        }
        // The 17th evicts the two least recently active (an eighth of the bound).
        assert_eq!(s.record(&header(100, 0, 0, 1, 100), 1_000), 2);
        assert_eq!(s.len(), 15);
        assert_eq!(s.check(&header(0, 0, 5, 1, -1)).unwrap(), SequenceCheck::Append, "evicted: unknown again");
        assert!(s.check(&header(2, 0, 5, 1, -1)).is_err(), "kept: still checked");
        assert_eq!(s.expire(1_000, 100), 14, "ids 2..=15 wrote at or before 900 ms");
        assert_eq!(s.max_producer_id(), 100);
    }
}
