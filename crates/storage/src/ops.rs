//! Log operations beyond append/read: ListOffsets by timestamp, DeleteRecords, retention and
//! truncation.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::log::{lock, wall_clock_ms, Writer, LOG_START};
use crate::recovery::load_producers;
use crate::segment::Segment;
use crate::{io_err, Log, Result, StorageError};

impl Log {
    /// ListOffsets by timestamp: the earliest offset at or after the log start whose record
    /// timestamp is >= `ts`, with that record's timestamp. `None` if no record is that recent.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>> {
        self.check_online()?;
        let segs = self.snapshot();
        let log_start = self.log_start_offset();
        for seg in segs.iter() {
            if seg.max_timestamp() < ts || seg.next_offset() <= log_start {
                continue;
            }
            if let Some(found) = seg.find_by_timestamp(ts, log_start).map_err(|e| io_err(&seg.log_path, e))? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// ListOffsets MAX_TIMESTAMP: the first record carrying the largest timestamp in the log, as
    /// (offset, timestamp). Like Kafka, this does not consider the log start offset within the
    /// oldest segment. `None` for an empty log.
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        let segs = self.snapshot();
        let mut best: Option<&Arc<Segment>> = None;
        for seg in segs.iter().filter(|s| s.size() > 0) {
            if best.is_none_or(|b| seg.max_timestamp() > b.max_timestamp()) {
                best = Some(seg);
            }
        }
        let seg = best?;
        let ts = seg.max_timestamp();
        match seg.find_by_timestamp(ts, seg.base_offset) {
            Ok(Some(found)) => Some(found),
            Ok(None) => Some((seg.offset_of_max_timestamp(), ts)),
            Err(e) => {
                tracing::warn!(segment = %seg.log_path.display(), error = %e, "max timestamp lookup failed");
                Some((seg.offset_of_max_timestamp(), ts))
            }
        }
    }

    /// DeleteRecords: advances the log start offset to `offset` (-1 means the high watermark),
    /// persists it and deletes segments wholly below it. Returns the new log start offset.
    pub fn delete_records_before(&self, offset: i64) -> Result<i64> {
        let mut w = lock(&self.writer);
        self.check_online()?;
        let hw = self.high_watermark();
        let offset = if offset == -1 { hw } else { offset };
        let log_start = self.log_start_offset();
        if offset < 0 || offset > hw {
            return Err(StorageError::OffsetOutOfRange { offset, log_start, log_end: self.log_end_offset() });
        }
        if offset > log_start {
            self.advance_log_start(offset)?;
            let segs = self.snapshot();
            let below = segs.windows(2).take_while(|p| p[1].base_offset <= offset).count();
            self.delete_oldest(&mut w, below, 0)?;
        }
        Ok(self.log_start_offset())
    }

    /// Deletes segments past `retention.ms` or beyond `retention.bytes`, oldest first and only
    /// below the high watermark. If every segment expires, the active one is rolled first so the
    /// log ends up empty with its end offset kept. Returns the number of segments deleted.
    /// Does nothing unless `cleanup.policy` includes `delete`.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<usize> {
        let cfg = self.config();
        if !cfg.cleanup_policy.delete {
            return Ok(0);
        }
        let mut w = lock(&self.writer);
        self.check_online()?;
        let mut deleted = 0;
        if cfg.retention_ms >= 0 {
            let n = self.count_deletable(|seg, _| now_ms.saturating_sub(seg.retention_timestamp()) > cfg.retention_ms);
            deleted += self.delete_oldest(&mut w, n, now_ms)?;
        }
        if cfg.retention_bytes >= 0 {
            let mut excess = self.size_bytes() as i64 - cfg.retention_bytes;
            let n = self.count_deletable(|seg, _| {
                let size = seg.size() as i64;
                if excess - size >= 0 {
                    excess -= size;
                    true
                } else {
                    false
                }
            });
            deleted += self.delete_oldest(&mut w, n, now_ms)?;
        }
        Ok(deleted)
    }

    /// Counts the leading segments satisfying `pred`, stopping at the first that fails, that
    /// reaches past the high watermark, or the empty active segment.
    fn count_deletable(&self, mut pred: impl FnMut(&Segment, usize) -> bool) -> usize {
        let segs = self.snapshot();
        let hw = self.high_watermark();
        let mut n = 0;
        for (i, seg) in segs.iter().enumerate() {
            let upper = segs.get(i + 1).map_or(self.log_end_offset(), |s| s.base_offset);
            let empty_active = i + 1 == segs.len() && seg.size() == 0;
            if upper > hw || empty_active || !pred(seg, i) {
                break;
            }
            n += 1;
        }
        n
    }

    /// Deletes the `n` oldest segments (rolling first if that is all of them) and advances the
    /// log start offset to the first remaining segment.
    fn delete_oldest(&self, w: &mut Writer, n: usize, now_ms: i64) -> Result<usize> {
        if n == 0 {
            return Ok(0);
        }
        if n >= self.snapshot().len() {
            self.roll(w, now_ms)?;
        }
        let segs = self.snapshot();
        let n = n.min(segs.len() - 1);
        let (gone, kept) = segs.split_at(n);
        let new_start = kept[0].base_offset;
        if new_start > self.log_start_offset() {
            self.advance_log_start(new_start)?;
        }
        self.replace_segments(kept.to_vec());
        for seg in gone {
            self.retire(w, seg)?;
            tracing::info!(segment = %seg.log_path.display(), "deleted segment");
        }
        Ok(n)
    }

    fn advance_log_start(&self, offset: i64) -> Result<()> {
        self.write_checkpoint(LOG_START, offset)?;
        self.log_start.store(offset, Ordering::Release);
        lock(&self.epochs).truncate_from_start(offset)
    }

    /// Removes every record at or after `offset` (follower truncation). A batch straddling
    /// `offset` is removed whole, so the log end offset may end up below `offset`. Truncating
    /// below the log start offset empties the log and restarts it at `offset`.
    pub fn truncate_to(&self, offset: i64) -> Result<()> {
        let cfg = self.config();
        let mut w = lock(&self.writer);
        self.check_online()?;
        if offset >= self.log_end_offset() {
            return Ok(());
        }
        let segs = self.snapshot();
        if offset < self.log_start_offset() || offset <= segs[0].base_offset {
            let fresh = Arc::new(
                Segment::create_for_log(&self.dir, offset.max(0), w.last_flush_ms, &cfg)
                    .map_err(|e| io_err(&self.dir, e))?,
            );
            for seg in segs.iter().rev().filter(|s| s.base_offset != fresh.base_offset) {
                self.retire(&mut w, seg)?;
            }
            w.producers.clear();
            self.replace_segments(vec![fresh]);
            self.write_checkpoint(LOG_START, offset.max(0))?;
            self.log_start.store(offset.max(0), Ordering::Release);
            self.leo.store(offset.max(0), Ordering::Release);
            self.hw.store(offset.max(0), Ordering::Release);
            self.lower_cleaner_checkpoint(offset.max(0))?;
            lock(&self.epochs).clear()?;
            return Ok(());
        }
        let keep = segs.partition_point(|s| s.base_offset < offset).max(1);
        let (kept, gone) = segs.split_at(keep);
        self.replace_segments(kept.to_vec());
        // Newest first: a crash part way leaves a shorter log, never one with a hole.
        for seg in gone.iter().rev() {
            self.retire(&mut w, seg)?;
        }
        let active = kept.last().expect("kept at least one segment");
        let gaps = self.may_gap(active.base_offset);
        let leo =
            active.truncate_to(offset, cfg.index_interval_bytes, gaps).map_err(|e| io_err(&active.log_path, e))?;
        self.fsync(active)?;
        self.leo.store(leo, Ordering::Release);
        if self.high_watermark() > leo {
            self.hw.store(leo, Ordering::Release);
        }
        w.unflushed = 0;
        self.lower_cleaner_checkpoint(leo)?;
        lock(&self.epochs).truncate_from_end(leo)?;
        // Cached producer batches may be among what went: rebuild the state as of the new end.
        w.producers = load_producers(&self.dir, kept, self.log_start_offset(), leo, &cfg, wall_clock_ms())?;
        Ok(())
    }
}
