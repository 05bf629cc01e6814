//! Idempotent-producer state per partition (Kafka's `ProducerStateManager`, without
//! transactions): for each producer id, its epoch and the sequence ranges of its last five
//! batches, so a retried batch is recognised and answered with its original offsets instead of
//! being written twice, and a gap in sequence numbers is refused.
//!
//! The state lives in memory under the log's writer lock. On open it is rebuilt from the batch
//! headers of the active segment only: a producer last seen in an older segment is treated as
//! new, and its next batch is accepted whatever its sequence (Kafka, too, accepts an unknown
//! producer's batch once its state has been removed).

use std::collections::{HashMap, VecDeque};

use crate::batch::BatchHeader;
use crate::{Result, StorageError};

/// Kafka keeps this many batches per producer for duplicate detection (the most a client may
/// have in flight with idempotence on).
const CACHED_BATCHES: usize = 5;

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
}

/// What to do with an idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SequenceCheck {
    /// Not idempotent (no producer id or sequence), or the next in sequence: append it.
    Append,
    /// Already in the log at these offsets: answer with them, write nothing.
    Duplicate { base_offset: i64, last_offset: i64 },
}

#[derive(Debug, Default, Clone)]
pub(crate) struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
}

fn last_seq(h: &BatchHeader) -> i32 {
    // Sequences wrap at i32::MAX back to 0, as in Kafka.
    ((h.base_sequence as i64 + h.last_offset_delta as i64) % (i32::MAX as i64 + 1)) as i32
}

fn is_idempotent(h: &BatchHeader) -> bool {
    h.producer_id >= 0 && h.base_sequence >= 0 && !h.is_control()
}

impl ProducerStates {
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

    /// Records a batch now in the log (`h.base_offset` is its assigned offset).
    pub(crate) fn record(&mut self, h: &BatchHeader) {
        if !is_idempotent(h) {
            return;
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
    }

    /// The largest producer id recorded, -1 if none.
    pub(crate) fn max_producer_id(&self) -> i64 {
        self.producers.keys().copied().max().unwrap_or(-1)
    }

    /// Forgets everything (after a truncation the cached offsets may be gone).
    pub(crate) fn clear(&mut self) {
        self.producers.clear();
    }
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
            s.record(&h);
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
        s.record(&h);
        assert!(matches!(s.check(&header(7, 0, 9, 1, -1)), Err(StorageError::InvalidProducerEpoch(_))));
        // Unknown producers and non-idempotent batches are appended.
        assert_eq!(s.check(&header(8, 0, 42, 1, -1)).unwrap(), SequenceCheck::Append);
        assert_eq!(s.check(&header(-1, -1, -1, 1, -1)).unwrap(), SequenceCheck::Append);
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut s = ProducerStates::default();
        for i in 0..7 {
            s.record(&header(1, 0, i, 1, i as i64));
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
        s.record(&h);
        assert_eq!(s.check(&header(1, 0, 0, 1, -1)).unwrap(), SequenceCheck::Append);
    }
}
