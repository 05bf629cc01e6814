//! The partition log: an ordered list of segments, the append path, reads, retention,
//! truncation and recovery on open.
//!
//! Concurrency: one `writer` mutex serialises every mutation (append, roll, retention,
//! truncation, flush, and the cleaner's swap of cleaned segments). Readers never take it: they
//! load the log end offset, then clone the `Arc`'d segment list under a short read lock and
//! `pread` below each segment's committed size. A segment replaced by the cleaner stays readable
//! through the `Arc`s (and open file) of readers that took their snapshot before the swap.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use bytes::Bytes;

use crate::batch::{self, BatchHeader, ValidBatch};
use crate::cleaner::{self, CleanerState};
use crate::epoch::EpochCache;
use crate::producers::{ProducerStates, SequenceCheck};
use crate::segment::{self, Segment};
use crate::{io_err, AppendInfo, AppendOrigin, LogConfig, ReadResult, Result, StorageError, TimestampType};

/// Present only while the log is cleanly closed; open removes it, so its absence means a crash.
pub(crate) const CLEAN_SHUTDOWN: &str = ".tern-clean-shutdown";
/// Log start offset checkpoint (advanced by DeleteRecords and retention).
pub(crate) const LOG_START: &str = "log-start-offset";
/// Every segment below the one containing this offset is fsynced with its indexes.
pub(crate) const RECOVERY_POINT: &str = "recovery-point";

pub(crate) type Segments = Arc<Vec<Arc<Segment>>>;

#[derive(Default)]
pub(crate) struct Writer {
    scratch: Vec<u8>,
    valid: Vec<ValidBatch>,
    placed: Vec<(usize, BatchHeader)>,
    pub(crate) unflushed: i64,
    pub(crate) last_flush_ms: i64,
    pub(crate) closed: bool,
    /// Idempotent producers' recent batches (duplicate and sequence checks).
    pub(crate) producers: ProducerStates,
}

/// One partition's log. All methods take `&self`: appends are serialised internally,
/// reads run concurrently with appends.
pub struct Log {
    pub(crate) dir: PathBuf,
    pub(crate) writer: Mutex<Writer>,
    pub(crate) segments: RwLock<Segments>,
    pub(crate) config: RwLock<LogConfig>,
    pub(crate) epochs: Mutex<EpochCache>,
    pub(crate) log_start: AtomicI64,
    pub(crate) leo: AtomicI64,
    pub(crate) hw: AtomicI64,
    /// The cleaner's first dirty offset (`cleaner-offset-checkpoint`); changed under `writer`.
    pub(crate) first_dirty: AtomicI64,
    /// Held for a whole cleaning pass, so passes never overlap. Taken before `writer`, never
    /// while holding it.
    pub(crate) cleaner: Mutex<CleanerState>,
    /// Why the log is offline, if it is: every operation then fails with
    /// [`StorageError::Offline`]. Set once, never cleared (a restart reopens the log).
    offline: RwLock<Option<String>>,
    /// The largest producer id seen in this log's batches (-1: none), so that ids stay unique
    /// even if the broker's own record of issued ids is lost.
    pub(crate) max_producer_id: AtomicI64,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes `path` via a temporary file, fsync and rename, so it is never seen half-written.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut &f, bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

pub(crate) fn read_offset_file(path: &Path) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok().filter(|&o| o >= 0)
}

impl Log {
    /// Opens (creating if absent) the log in `dir`, recovering a torn tail after a crash.
    pub fn open(dir: &Path, config: LogConfig, now_ms: i64) -> Result<Log> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let marker = dir.join(CLEAN_SHUTDOWN);
        let clean = marker.exists();
        // Finish or roll back a cleaner swap interrupted by a crash, before segments are listed.
        let swapped = cleaner::recover_swaps(dir).map_err(|e| io_err(dir, e))?;
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
            let entry = entry.map_err(|e| io_err(dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(stem) = name.strip_suffix(".log") {
                if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
                    if let Ok(base) = stem.parse::<i64>() {
                        bases.push(base);
                    }
                }
            } else if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        bases.sort_unstable();
        let start_ckpt = read_offset_file(&dir.join(LOG_START)).unwrap_or(0);
        // Without a recovery point everything is rescanned.
        let recovery_point = if clean { i64::MAX } else { read_offset_file(&dir.join(RECOVERY_POINT)).unwrap_or(0) };
        let interval = config.index_interval_bytes;

        let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(bases.len().max(1));
        for (i, &base) in bases.iter().enumerate() {
            let last = i + 1 == bases.len();
            let recover = (!clean && (last || bases[i + 1] > recovery_point)) || swapped.contains(&base);
            let path = segment::file_name(dir, base, "log");
            if let Some(prev) = segments.last() {
                // Compaction can leave a gap between segments, never an overlap.
                if prev.next_offset() > base {
                    tracing::warn!(segment = %path.display(), "dropping segment overlapping its predecessor");
                    segment::delete_files(dir, base).map_err(|e| io_err(&path, e))?;
                    continue;
                }
            }
            let (seg, truncated) = Segment::open(dir, base, now_ms, interval, recover).map_err(|e| io_err(&path, e))?;
            segments.push(Arc::new(seg));
            if truncated && !last {
                // Corruption in the middle: everything after it is unreachable.
                for &later in &bases[i + 1..] {
                    segment::delete_files(dir, later).map_err(|e| io_err(dir, e))?;
                }
                break;
            }
        }
        if segments.is_empty() {
            let base = start_ckpt;
            let seg = Segment::create(dir, base, now_ms).map_err(|e| io_err(dir, e))?;
            segments.push(Arc::new(seg));
        }
        let leo = segments.last().unwrap().next_offset();
        let log_start = start_ckpt.max(segments[0].base_offset).min(leo);
        // Segments wholly below the log start (a crash between checkpoint and deletion).
        while segments.len() > 1 && segments[1].base_offset <= log_start {
            let seg = segments.remove(0);
            seg.delete_files().map_err(|e| io_err(&seg.log_path, e))?;
        }
        let first_dirty = read_offset_file(&dir.join(cleaner::CHECKPOINT)).unwrap_or(log_start).min(leo);
        let mut epochs = EpochCache::load(dir);
        epochs.truncate_from_end(leo)?;
        epochs.truncate_from_start(log_start)?;
        if clean {
            std::fs::remove_file(&marker).map_err(|e| io_err(&marker, e))?;
        }
        sync_dir(dir).map_err(|e| io_err(dir, e))?;
        // Producer state from the active segment's batch headers (see producers.rs).
        let mut producers = ProducerStates::default();
        let active = segments.last().expect("at least one segment");
        active
            .scan_headers(0, active.size(), |_, h| {
                producers.record(h);
                true
            })
            .map_err(|e| io_err(&active.log_path, e))?;
        let max_producer_id = producers.max_producer_id();
        Ok(Log {
            dir: dir.to_path_buf(),
            writer: Mutex::new(Writer { last_flush_ms: now_ms, producers, ..Writer::default() }),
            segments: RwLock::new(Arc::new(segments)),
            config: RwLock::new(config),
            epochs: Mutex::new(epochs),
            log_start: AtomicI64::new(log_start),
            leo: AtomicI64::new(leo),
            // Single node: everything appended is committed. Replication will own the HW.
            hw: AtomicI64::new(leo),
            first_dirty: AtomicI64::new(first_dirty),
            cleaner: Mutex::new(CleanerState::load(dir)),
            offline: RwLock::new(None),
            max_producer_id: AtomicI64::new(max_producer_id),
        })
    }

    /// A log that could not be opened (`reason` says why and names the file): it holds no
    /// segments and answers every operation with [`StorageError::Offline`], so the broker can
    /// serve its other partitions while this one waits for an operator.
    pub fn offline(dir: &Path, config: LogConfig, reason: String) -> Log {
        Log {
            dir: dir.to_path_buf(),
            writer: Mutex::new(Writer::default()),
            segments: RwLock::new(Arc::new(Vec::new())),
            config: RwLock::new(config),
            epochs: Mutex::new(EpochCache::empty(dir)),
            log_start: AtomicI64::new(0),
            leo: AtomicI64::new(0),
            hw: AtomicI64::new(0),
            first_dirty: AtomicI64::new(0),
            cleaner: Mutex::new(CleanerState::default()),
            offline: RwLock::new(Some(reason)),
            max_producer_id: AtomicI64::new(-1),
        }
    }

    /// Why the log is offline, `None` while it serves.
    pub fn offline_reason(&self) -> Option<String> {
        self.offline.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Takes the log offline for good (until the process restarts): logged at ERROR once.
    pub fn take_offline(&self, reason: &str) {
        let mut offline = self.offline.write().unwrap_or_else(|e| e.into_inner());
        if offline.is_none() {
            tracing::error!(dir = %self.dir.display(), reason, "partition log taken offline");
            *offline = Some(reason.to_string());
        }
    }

    /// Fails with [`StorageError::Offline`] if the log is offline.
    pub(crate) fn check_online(&self) -> Result<()> {
        match &*self.offline.read().unwrap_or_else(|e| e.into_inner()) {
            None => Ok(()),
            Some(reason) => Err(StorageError::Offline { dir: self.dir.clone(), reason: reason.clone() }),
        }
    }

    /// Marks the log deleted under its writer lock: no append, read or cleaning pass starts
    /// after this returns, and one in progress has finished. The caller then moves the
    /// directory away.
    pub fn mark_deleted(&self) {
        let _cleaner = lock(&self.cleaner);
        let _w = lock(&self.writer);
        let mut offline = self.offline.write().unwrap_or_else(|e| e.into_inner());
        if offline.is_none() {
            *offline = Some("deleted".to_string());
        }
    }

    /// The largest producer id in this log's batches, -1 if none.
    pub fn max_producer_id(&self) -> i64 {
        self.max_producer_id.load(Ordering::Acquire)
    }

    /// Appends the broker's own batches ([`AppendOrigin::Coordinator`]); see [`Log::append_as`].
    pub fn append(&self, batches: &[u8], leader_epoch: i32, now_ms: i64) -> Result<AppendInfo> {
        self.append_as(batches, leader_epoch, now_ms, AppendOrigin::Coordinator)
    }

    /// Validates one or more v2 record batches as Kafka's LogValidator does for `origin`
    /// (`validate.rs`) and appends them as validated (true max timestamp, the topic's
    /// `compression.type`), assigning offsets from the log end offset and stamping
    /// `leader_epoch`. Nothing is written if any batch is invalid.
    pub fn append_as(
        &self,
        batches: &[u8],
        leader_epoch: i32,
        now_ms: i64,
        origin: AppendOrigin,
    ) -> Result<AppendInfo> {
        let cfg = self.config();
        let mut guard = lock(&self.writer);
        self.check_online()?;
        let w = &mut *guard;
        batch::validate_input(batches, &cfg, origin, now_ms, &mut w.valid, &mut w.scratch)?;
        if w.closed {
            let marker = self.dir.join(CLEAN_SHUTDOWN);
            std::fs::remove_file(&marker).map_err(|e| io_err(&marker, e))?;
            w.closed = false;
        }
        let base_offset = self.leo.load(Ordering::Acquire);
        // A retried batch of an idempotent producer is answered with its original offsets.
        if let [only] = &w.valid[..] {
            if let SequenceCheck::Duplicate { base_offset, last_offset } = w.producers.check(&only.header)? {
                return Ok(AppendInfo {
                    base_offset,
                    last_offset,
                    log_append_time: -1,
                    record_count: last_offset - base_offset + 1,
                    log_start_offset: self.log_start_offset(),
                });
            }
        } else {
            self.check_sequences(w)?;
        }
        let append_time = (cfg.message_timestamp_type == TimestampType::LogAppendTime).then_some(now_ms);
        w.placed.clear();
        let mut next = base_offset;
        let mut max_ts = i64::MIN;
        for vb in &w.valid {
            let mut h = vb.header;
            batch::patch(&mut w.scratch[vb.start..vb.start + h.size], next, leader_epoch, append_time);
            h.base_offset = next;
            if let Some(now) = append_time {
                h.max_timestamp = now;
                h.attributes |= 1 << 3;
            }
            max_ts = max_ts.max(h.max_timestamp);
            next += h.record_count as i64;
            w.placed.push((vb.start, h));
        }
        let bytes = w.scratch.len() as u64;
        let seg = self.maybe_roll(w, &cfg, bytes, next - 1, max_ts, now_ms)?;
        seg.append(&w.scratch, &w.placed, cfg.index_interval_bytes, now_ms).map_err(|e| io_err(&seg.log_path, e))?;
        self.leo.store(next, Ordering::Release);
        self.hw.store(next, Ordering::Release);
        for (_, h) in &w.placed {
            w.producers.record(h);
            self.max_producer_id.fetch_max(h.producer_id, Ordering::AcqRel);
        }
        lock(&self.epochs).assign(leader_epoch, base_offset)?;
        w.unflushed += next - base_offset;
        if w.unflushed >= cfg.flush_messages {
            seg.file.sync_data().map_err(|e| io_err(&seg.log_path, e))?;
            w.unflushed = 0;
            w.last_flush_ms = now_ms;
        }
        Ok(AppendInfo {
            base_offset,
            last_offset: next - 1,
            log_append_time: append_time.unwrap_or(-1),
            record_count: next - base_offset,
            log_start_offset: self.log_start_offset(),
        })
    }

    /// Sequence checks for an input of several batches, each against the state the batches
    /// before it would leave (on a copy: nothing changes unless the append goes through).
    fn check_sequences(&self, w: &Writer) -> Result<()> {
        if !w.valid.iter().any(|vb| vb.header.producer_id >= 0) {
            return Ok(());
        }
        let mut state = w.producers.clone();
        let mut next = self.leo.load(Ordering::Acquire);
        for vb in &w.valid {
            if let SequenceCheck::Duplicate { .. } = state.check(&vb.header)? {
                return Err(StorageError::DuplicateSequence(format!(
                    "batch of producer {} with sequence {} is already in the log",
                    vb.header.producer_id, vb.header.base_sequence
                )));
            }
            let mut h = vb.header;
            h.base_offset = next;
            next += h.record_count as i64;
            state.record(&h);
        }
        Ok(())
    }

    /// Reads whole batches starting at the one containing `offset`, up to `max_bytes`
    /// (at least one batch if `min_one` even if larger), not beyond `max_offset` (exclusive).
    pub fn read(&self, offset: i64, max_bytes: usize, max_offset: i64, min_one: bool) -> Result<ReadResult> {
        self.check_online()?;
        let leo = self.log_end_offset();
        let hw = self.high_watermark();
        let segs = self.snapshot();
        let log_start = self.log_start_offset();
        let result = |records: Bytes| ReadResult {
            records,
            log_start_offset: log_start,
            log_end_offset: leo,
            high_watermark: hw,
        };
        if offset < log_start || offset > leo {
            return Err(StorageError::OffsetOutOfRange { offset, log_start, log_end: leo });
        }
        // Data appended after the LEO was loaded stays invisible to this read.
        let max_offset = max_offset.min(leo);
        if offset == leo || offset >= max_offset {
            return Ok(result(Bytes::new()));
        }
        let Some(first) = segs.partition_point(|s| s.base_offset <= offset).checked_sub(1) else {
            return Err(StorageError::OffsetOutOfRange { offset, log_start, log_end: leo });
        };
        for seg in &segs[first..] {
            let end = seg.size();
            let found = seg.locate(offset, end).map_err(|e| io_err(&seg.log_path, e))?;
            let Some((pos, h)) = found else { continue };
            if h.last_offset() >= max_offset {
                break;
            }
            if max_bytes < h.size {
                if !min_one {
                    break;
                }
                let bytes = seg.read_at(pos, h.size).map_err(|e| io_err(&seg.log_path, e))?;
                return Ok(result(whole_batches(bytes, max_offset)));
            }
            let want = (max_bytes as u64).min(end - pos) as usize;
            let bytes = seg.read_at(pos, want).map_err(|e| io_err(&seg.log_path, e))?;
            return Ok(result(whole_batches(bytes, max_offset)));
        }
        Ok(result(Bytes::new()))
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start.load(Ordering::Acquire)
    }
    pub fn log_end_offset(&self) -> i64 {
        self.leo.load(Ordering::Acquire)
    }
    /// For now the broker is single-node, so every append moves the HW to the log end offset;
    /// replication will instead advance it through [`Log::set_high_watermark`].
    pub fn high_watermark(&self) -> i64 {
        self.hw.load(Ordering::Acquire)
    }
    /// Sets the HW, clamped to [log start offset, log end offset].
    pub fn set_high_watermark(&self, hw: i64) {
        let _w = lock(&self.writer);
        let hw = hw.clamp(self.log_start_offset(), self.log_end_offset());
        self.hw.store(hw, Ordering::Release);
    }

    pub(crate) fn snapshot(&self) -> Segments {
        self.segments.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
    pub(crate) fn replace_segments(&self, segs: Vec<Arc<Segment>>) {
        *self.segments.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(segs);
    }
    fn active(&self) -> Arc<Segment> {
        self.snapshot().last().expect("a log always has a segment").clone()
    }

    pub fn config(&self) -> LogConfig {
        self.config.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// Applies new settings; they take effect from the next append, roll or retention pass.
    pub fn update_config(&self, config: LogConfig) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Total bytes of all segment files.
    pub fn size_bytes(&self) -> u64 {
        self.snapshot().iter().map(|s| s.size()).sum()
    }
    /// Base offsets of the segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.snapshot().iter().map(|s| s.base_offset).collect()
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        lock(&self.epochs).latest_epoch()
    }
    /// OffsetForLeaderEpoch: `(largest epoch <= epoch, end offset of that epoch)`, `None` if
    /// unknown (Kafka's `(-1, -1)`).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        lock(&self.epochs).end_offset_for(epoch, self.log_end_offset())
    }
    /// The leader epoch cache as (epoch, start offset) pairs.
    pub fn epoch_entries(&self) -> Vec<(i32, i64)> {
        lock(&self.epochs).entries().to_vec()
    }

    fn maybe_roll(
        &self,
        w: &mut Writer,
        cfg: &LogConfig,
        bytes: u64,
        last_offset: i64,
        max_ts: i64,
        now_ms: i64,
    ) -> Result<Arc<Segment>> {
        let active = self.active();
        let size = active.size();
        if size == 0 {
            return Ok(active);
        }
        let waited = {
            let st = active.lock();
            match st.first_batch_ts {
                Some(t) if t >= 0 && max_ts >= 0 => max_ts.saturating_sub(t),
                _ => now_ms.saturating_sub(st.created_ms),
            }
        };
        let max_size = cfg.segment_bytes.min(i32::MAX as u64);
        // Records in the active segment cannot be compacted, so a compacted log also rolls
        // once `max.compaction.lag.ms` has passed (Kafka's `LogConfig.maxSegmentMs`).
        let segment_ms = if cfg.cleanup_policy.compact && cfg.max_compaction_lag_ms > 0 {
            cfg.segment_ms.min(cfg.max_compaction_lag_ms)
        } else {
            cfg.segment_ms
        };
        let roll = size + bytes > max_size
            || waited > segment_ms
            || active.index_full(cfg.segment_index_bytes)
            || last_offset - active.base_offset > i32::MAX as i64;
        if roll {
            self.roll(w, now_ms)
        } else {
            Ok(active)
        }
    }

    /// Makes the active segment read-only (fsynced, final index entries written) and starts a
    /// new one at the log end offset. No-op if the active segment is empty.
    pub(crate) fn roll(&self, w: &mut Writer, now_ms: i64) -> Result<Arc<Segment>> {
        let segs = self.snapshot();
        let old = segs.last().expect("a log always has a segment");
        if old.size() == 0 {
            return Ok(old.clone());
        }
        old.file.sync_data().map_err(|e| io_err(&old.log_path, e))?;
        old.persist_indexes(true, true).map_err(|e| io_err(&old.log_path, e))?;
        let leo = self.log_end_offset();
        let new = Arc::new(Segment::create(&self.dir, leo, now_ms).map_err(|e| io_err(&self.dir, e))?);
        let mut list = segs.as_ref().clone();
        list.push(new.clone());
        self.replace_segments(list);
        self.write_checkpoint(RECOVERY_POINT, leo)?;
        w.unflushed = 0;
        w.last_flush_ms = now_ms;
        tracing::debug!(dir = %self.dir.display(), base_offset = leo, "rolled segment");
        Ok(new)
    }

    pub(crate) fn write_checkpoint(&self, name: &str, offset: i64) -> Result<()> {
        let path = self.dir.join(name);
        write_atomically(&path, format!("{offset}\n").as_bytes()).map_err(|e| io_err(&path, e))
    }

    fn flush_locked(&self, w: &mut Writer, now_ms: i64) -> Result<()> {
        let active = self.active();
        active.file.sync_data().map_err(|e| io_err(&active.log_path, e))?;
        active.persist_indexes(true, false).map_err(|e| io_err(&active.log_path, e))?;
        w.unflushed = 0;
        w.last_flush_ms = now_ms;
        Ok(())
    }

    /// fsyncs the log and its indexes.
    pub fn flush(&self) -> Result<()> {
        let mut w = lock(&self.writer);
        self.check_online()?;
        let now = w.last_flush_ms;
        self.flush_locked(&mut w, now)
    }

    /// Flushes if there are unflushed messages older than `flush.ms`.
    pub fn maybe_flush(&self, now_ms: i64) -> Result<()> {
        let flush_ms = self.config().flush_ms;
        let mut w = lock(&self.writer);
        self.check_online()?;
        if w.unflushed > 0 && now_ms.saturating_sub(w.last_flush_ms) >= flush_ms {
            self.flush_locked(&mut w, now_ms)?;
        }
        Ok(())
    }

    /// Flushes everything, writes the indexes and a clean-shutdown marker so the next open
    /// skips recovery.
    pub fn close(&self) -> Result<()> {
        let mut w = lock(&self.writer);
        // An offline log is left as it is: no clean-shutdown marker, so the next open recovers.
        self.check_online()?;
        let active = self.active();
        active.file.sync_data().map_err(|e| io_err(&active.log_path, e))?;
        active.persist_indexes(true, true).map_err(|e| io_err(&active.log_path, e))?;
        w.unflushed = 0;
        self.write_checkpoint(RECOVERY_POINT, self.log_end_offset())?;
        self.write_checkpoint(LOG_START, self.log_start_offset())?;
        let marker = self.dir.join(CLEAN_SHUTDOWN);
        write_atomically(&marker, b"").map_err(|e| io_err(&marker, e))?;
        w.closed = true;
        Ok(())
    }

    /// Removes the log's directory and everything in it.
    pub fn delete(self) -> Result<()> {
        let _w = lock(&self.writer);
        std::fs::remove_dir_all(&self.dir).map_err(|e| io_err(&self.dir, e))
    }
}

/// Cuts `bytes` after the last whole batch that ends below `max_offset`.
fn whole_batches(mut bytes: Vec<u8>, max_offset: i64) -> Bytes {
    let mut off = 0;
    while let Some(h) = BatchHeader::parse(&bytes[off..]) {
        if h.size < batch::HEADER_SIZE || off + h.size > bytes.len() || h.last_offset() >= max_offset {
            break;
        }
        off += h.size;
    }
    bytes.truncate(off);
    Bytes::from(bytes)
}
