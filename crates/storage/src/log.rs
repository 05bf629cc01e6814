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
use crate::cleaner::CleanerState;
use crate::epoch::EpochCache;
use crate::producers::{self, ProducerStates, SequenceCheck};
use crate::refusals::Refusals;
use crate::segment::{self, Damage, Located, Segment};
use crate::{io_err, AppendInfo, AppendOrigin, LogConfig, ReadResult, Result, StorageError, TimestampType};

/// Present only while the log is cleanly closed; open removes it, so its absence means a crash.
pub(crate) const CLEAN_SHUTDOWN: &str = ".tern-clean-shutdown";
/// Log start offset checkpoint (advanced by DeleteRecords and retention).
pub(crate) const LOG_START: &str = "log-start-offset";
/// Every segment below the one containing this offset is fsynced with its indexes.
pub(crate) const RECOVERY_POINT: &str = "recovery-point";
/// The high watermark as last checkpointed (Kafka's `replication-offset-checkpoint`, one file
/// per partition here). The live value is the replica state machine's; it is checkpointed at
/// every roll and at close, and a restarted leader advances it again as its ISR allows.
pub(crate) const HIGH_WATERMARK: &str = "high-watermark";

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
    /// When expired producers are next looked for.
    next_producer_expiry_ms: i64,
    /// Files of segments taken out of the log, renamed `.deleted`, with when to remove them.
    retired: Vec<(i64, PathBuf)>,
}

impl Writer {
    pub(crate) fn new(now_ms: i64, producers: ProducerStates) -> Writer {
        Writer {
            last_flush_ms: now_ms,
            producers,
            next_producer_expiry_ms: now_ms.saturating_add(PRODUCER_EXPIRY_CHECK_MS),
            ..Writer::default()
        }
    }
}

/// How often expired producer state is looked for (Kafka's
/// `producer.id.expiration.check.interval.ms` default).
const PRODUCER_EXPIRY_CHECK_MS: i64 = 600_000;

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
    pub(crate) offline: RwLock<Option<String>>,
    /// Set with `offline` by [`Log::mark_deleted`]: requests then learn the topic is gone.
    pub(crate) deleted: std::sync::atomic::AtomicBool,
    /// The largest producer id seen in this log's batches (-1: none), so that ids stay unique
    /// even if the broker's own record of issued ids is lost.
    pub(crate) max_producer_id: AtomicI64,
    pub(crate) refusals: Refusals,
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

pub(crate) fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

pub(crate) fn read_offset_file(path: &Path) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok().filter(|&o| o >= 0)
}

impl Log {
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
            deleted: Default::default(),
            max_producer_id: AtomicI64::new(-1),
            refusals: Refusals::default(),
        }
    }

    /// Why the log is offline, `None` while it serves.
    pub fn offline_reason(&self) -> Option<String> {
        self.offline.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether [`Log::mark_deleted`] was called.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
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
            Some(_) if self.deleted.load(Ordering::Acquire) => Err(StorageError::Deleted { dir: self.dir.clone() }),
            Some(reason) => Err(StorageError::Offline { dir: self.dir.clone(), reason: reason.clone() }),
        }
    }

    /// Marks the log deleted: when this returns, no append, read or cleaning pass is running on
    /// it and none will start (an append in progress has finished; a cleaning pass stops at the
    /// next group of segments). The caller then moves the directory away.
    pub fn mark_deleted(&self) {
        {
            let mut offline = self.offline.write().unwrap_or_else(|e| e.into_inner());
            if offline.is_none() {
                *offline = Some("deleted".to_string());
                self.deleted.store(true, Ordering::Release);
            }
        }
        drop(lock(&self.writer));
        drop(lock(&self.cleaner));
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
    /// `leader_epoch`. Nothing is written if any batch is invalid, and nothing stays written if
    /// a write fails. Refusals are logged here (rate-limited), so a flood of them is never silent.
    pub fn append_as(
        &self,
        batches: &[u8],
        leader_epoch: i32,
        now_ms: i64,
        origin: AppendOrigin,
    ) -> Result<AppendInfo> {
        let result = self.append_locked(batches, leader_epoch, now_ms, origin);
        if let Err(e) = &result {
            self.refusals.report(&self.dir, e, now_ms);
        }
        result
    }

    fn append_locked(
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
        self.reopen_for_writes(w)?;
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
        // A new leader epoch is checkpointed before the data it covers: if that fails nothing is
        // written, and an entry beyond the log end is dropped when the log is opened.
        lock(&self.epochs).assign(leader_epoch, base_offset)?;
        // The HW is not moved here: the replica state machine decides what is committed.
        self.write_placed(w, &cfg, &seg, base_offset, next, now_ms)?;
        Ok(AppendInfo {
            base_offset,
            last_offset: next - 1,
            log_append_time: append_time.unwrap_or(-1),
            record_count: next - base_offset,
            log_start_offset: self.log_start_offset(),
        })
    }

    /// Appends batches copied from the partition leader (Kafka's `appendAsFollower`): their
    /// offsets and leader epochs are the leader's and are kept. Each batch's framing and CRC are
    /// checked, offsets must increase and start at or after the log end offset; nothing is
    /// revalidated or recompressed (the leader did that). All or nothing, like [`Log::append`].
    pub fn append_replicated(&self, batches: &[u8], now_ms: i64) -> Result<AppendInfo> {
        let cfg = self.config();
        let mut guard = lock(&self.writer);
        self.check_online()?;
        let w = &mut *guard;
        let leo = self.leo.load(Ordering::Acquire);
        w.placed.clear();
        w.scratch.clear();
        let mut next = leo;
        let mut max_ts = i64::MIN;
        let mut epochs: Vec<(i32, i64)> = Vec::new();
        let mut rest = batches;
        while !rest.is_empty() {
            let h = BatchHeader::parse(rest)
                .filter(|h| h.size <= rest.len() && h.size >= batch::HEADER_SIZE)
                .ok_or_else(|| StorageError::CorruptRecord("a replicated batch is truncated".into()))?;
            if h.magic != 2 || !batch::crc_ok(&rest[..h.size]) {
                return Err(StorageError::CorruptRecord(format!(
                    "replicated batch at offset {} fails its magic or CRC check",
                    h.base_offset
                )));
            }
            if h.base_offset < next || h.last_offset() < h.base_offset {
                return Err(StorageError::InvalidRecord(format!(
                    "replicated batch at offset {} is not after the log end offset {next}",
                    h.base_offset
                )));
            }
            let epoch = batch::leader_epoch(rest);
            if epochs.last().is_none_or(|&(e, _)| e < epoch) {
                epochs.push((epoch, h.base_offset));
            }
            w.placed.push((w.scratch.len(), h));
            w.scratch.extend_from_slice(&rest[..h.size]);
            max_ts = max_ts.max(h.max_timestamp);
            next = h.last_offset() + 1;
            rest = &rest[h.size..];
        }
        if w.placed.is_empty() {
            return Err(StorageError::InvalidRecord("no record batches".into()));
        }
        self.reopen_for_writes(w)?;
        let base_offset = w.placed[0].1.base_offset;
        let bytes = w.scratch.len() as u64;
        let seg = self.maybe_roll(w, &cfg, bytes, next - 1, max_ts, now_ms)?;
        {
            // `assign` keeps only epochs newer than the latest one.
            let mut cache = lock(&self.epochs);
            for &(epoch, start) in &epochs {
                cache.assign(epoch, start)?;
            }
        }
        self.write_placed(w, &cfg, &seg, leo, next, now_ms)?;
        Ok(AppendInfo {
            base_offset,
            last_offset: next - 1,
            log_append_time: -1,
            record_count: next - base_offset,
            log_start_offset: self.log_start_offset(),
        })
    }

    /// Before the first write after a clean close: the clean-shutdown marker goes, so a crash
    /// from now on is recovered at the next start.
    fn reopen_for_writes(&self, w: &mut Writer) -> Result<()> {
        if w.closed {
            let marker = self.dir.join(CLEAN_SHUTDOWN);
            std::fs::remove_file(&marker).map_err(|e| io_err(&marker, e))?;
            w.closed = false;
        }
        Ok(())
    }

    /// Writes the batches placed in the writer's scratch to `seg` and makes them the log's end
    /// (`next`): producer state, and an fsync once `flush.messages` offsets since `from` are
    /// unflushed. A write that fails is cut back by `Segment::append`; if it could not be, the
    /// file holds bytes no reader may see and a restart must recover: the log goes offline.
    fn write_placed(
        &self,
        w: &mut Writer,
        cfg: &LogConfig,
        seg: &Segment,
        from: i64,
        next: i64,
        now_ms: i64,
    ) -> Result<()> {
        if let Err(e) = seg.append(&w.scratch, &w.placed, cfg.index_interval_bytes, now_ms) {
            if seg.file.metadata().map_or(true, |m| m.len() != seg.size()) {
                self.take_offline(&format!("a failed write to {} could not be undone: {e}", seg.log_path.display()));
            }
            return Err(io_err(&seg.log_path, e));
        }
        self.leo.store(next, Ordering::Release);
        for (_, h) in &w.placed {
            let evicted = w.producers.record(h, now_ms);
            if evicted > 0 {
                tracing::warn!(
                    dir = %self.dir.display(),
                    evicted,
                    max = cfg.max_producer_entries,
                    "too many idempotent producers on one partition: forgot the least recently active"
                );
            }
            self.max_producer_id.fetch_max(h.producer_id, Ordering::AcqRel);
        }
        w.unflushed += next - from;
        if w.unflushed >= cfg.flush_messages {
            self.sync_active(w, seg, now_ms)?;
        }
        Ok(())
    }

    /// fsyncs the active segment. A failed fsync takes the log offline: the kernel may have
    /// dropped the dirty pages it could not write, so what readers would see from the page
    /// cache may no longer be what is on disk (the fsyncgate lesson); a restart recovers.
    fn sync_active(&self, w: &mut Writer, seg: &Segment, now_ms: i64) -> Result<()> {
        self.fsync(seg)?;
        w.unflushed = 0;
        w.last_flush_ms = now_ms;
        Ok(())
    }

    pub(crate) fn fsync(&self, seg: &Segment) -> Result<()> {
        seg.file.sync_data().map_err(|e| {
            self.take_offline(&format!("fsync of {} failed: {e}", seg.log_path.display()));
            io_err(&seg.log_path, e)
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
            state.record(&h, 0);
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
            let located =
                seg.locate(offset, end, self.may_gap(seg.base_offset)).map_err(|e| io_err(&seg.log_path, e))?;
            let (pos, h) = match located {
                Located::At(pos, h) => (pos, h),
                Located::NotHere => continue,
                Located::Damaged(damage) => return Err(self.read_damaged(damage)),
            };
            if h.last_offset() >= max_offset {
                break;
            }
            let want = if max_bytes < h.size {
                if !min_one {
                    break;
                }
                h.size
            } else {
                (max_bytes as u64).min(end - pos) as usize
            };
            let bytes = seg.read_at(pos, want).map_err(|e| io_err(&seg.log_path, e))?;
            if bytes.len() < h.size.min(want) {
                let file_len = seg.file.metadata().map_or(0, |m| m.len());
                return Err(self.read_damaged(Damage {
                    path: seg.log_path.clone(),
                    position: pos + bytes.len() as u64,
                    file_len,
                    next_offset: h.base_offset,
                    detail: format!("the file ends inside the batch at offset {}", h.base_offset),
                }));
            }
            let gaps = self.may_gap(seg.base_offset);
            return match whole_batches(bytes, max_offset, gaps) {
                Ok(records) => Ok(result(records)),
                Err(detail) => Err(self.read_damaged(Damage {
                    path: seg.log_path.clone(),
                    position: pos,
                    file_len: seg.file.metadata().map_or(0, |m| m.len()),
                    next_offset: h.base_offset,
                    detail,
                })),
            };
        }
        Ok(result(Bytes::new()))
    }

    /// Whether offsets from `offset` on may skip: compacted logs, and what the cleaner already
    /// cleaned in a log that is no longer compacted.
    pub(crate) fn may_gap(&self, offset: i64) -> bool {
        offset < self.first_dirty.load(Ordering::Acquire) || self.config().cleanup_policy.compact
    }

    /// Reports damage found by a read (ERROR, rate-limited) and turns it into the read's error.
    fn read_damaged(&self, damage: Damage) -> StorageError {
        self.refusals.report_damage(&damage);
        StorageError::Damaged { path: damage.path, position: damage.position, detail: damage.detail }
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start.load(Ordering::Acquire)
    }
    pub fn log_end_offset(&self) -> i64 {
        self.leo.load(Ordering::Acquire)
    }
    /// The offset below which records are committed and visible to consumers. Appends do not
    /// move it: its owner (the broker's replica state machine) does, with
    /// [`Log::set_high_watermark`].
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
        lock(&self.writer).producers.set_max_entries(config.max_producer_entries);
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
        let (waited, jitter) = {
            let st = active.lock();
            let waited = match st.first_batch_ts {
                Some(t) if t >= 0 && max_ts >= 0 => max_ts.saturating_sub(t),
                _ => now_ms.saturating_sub(st.created_ms),
            };
            (waited, st.roll_jitter_ms)
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
            || waited > segment_ms.saturating_sub(jitter)
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
        let cfg = self.config();
        if cfg.preallocate {
            old.release_preallocation().map_err(|e| io_err(&old.log_path, e))?;
        }
        self.fsync(old)?;
        old.persist_indexes(true, true).map_err(|e| io_err(&old.log_path, e))?;
        let leo = self.log_end_offset();
        let new = Arc::new(Segment::create_for_log(&self.dir, leo, now_ms, &cfg).map_err(|e| io_err(&self.dir, e))?);
        let mut list = segs.as_ref().clone();
        list.push(new.clone());
        self.replace_segments(list);
        self.write_checkpoint(RECOVERY_POINT, leo)?;
        self.write_checkpoint(HIGH_WATERMARK, self.high_watermark())?;
        self.write_producer_snapshot(w, leo);
        w.unflushed = 0;
        w.last_flush_ms = now_ms;
        tracing::debug!(dir = %self.dir.display(), base_offset = leo, "rolled segment");
        Ok(new)
    }

    /// Takes a segment's files out of the log: renamed `<name>.deleted` and removed once
    /// `file.delete.delay.ms` has passed (at once if it is 0), as Kafka does. Readers that took
    /// the segment before keep reading it through their open file either way. The producer
    /// snapshot at its base goes at once: it describes a point below the log start.
    pub(crate) fn retire(&self, w: &mut Writer, seg: &Segment) -> Result<()> {
        let delay = self.config().file_delete_delay_ms;
        let _ = std::fs::remove_file(producers::snapshot_path(&self.dir, seg.base_offset));
        if delay <= 0 {
            return seg.delete_files().map_err(|e| io_err(&seg.log_path, e));
        }
        let due = wall_clock_ms().saturating_add(delay);
        for ext in ["log", "index", "timeindex"] {
            let path = segment::file_name(&self.dir, seg.base_offset, ext);
            let retired = path.with_extension(format!("{ext}.deleted"));
            match std::fs::rename(&path, &retired) {
                Ok(()) => w.retired.push((due, retired)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path, e)),
            }
        }
        Ok(())
    }

    fn remove_retired_files(&self, w: &mut Writer, now_ms: i64) {
        w.retired.retain(|(due, path)| {
            if now_ms < *due {
                return true;
            }
            if let Err(e) = std::fs::remove_file(path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(file = %path.display(), error = %e, "could not remove a deleted segment file");
                }
            }
            false
        });
    }

    /// Writes the producer state as of `offset` (the log end) to `<offset>.snapshot`. Best
    /// effort: without it, a restart rebuilds the state from an older snapshot and the log.
    pub(crate) fn write_producer_snapshot(&self, w: &Writer, offset: i64) {
        let path = producers::snapshot_path(&self.dir, offset);
        if let Err(e) = write_atomically(&path, &w.producers.encode_snapshot()) {
            tracing::warn!(snapshot = %path.display(), error = %e, "could not write a producer state snapshot");
        }
    }

    pub(crate) fn write_checkpoint(&self, name: &str, offset: i64) -> Result<()> {
        let path = self.dir.join(name);
        write_atomically(&path, format!("{offset}\n").as_bytes()).map_err(|e| io_err(&path, e))
    }

    fn flush_locked(&self, w: &mut Writer, now_ms: i64) -> Result<()> {
        let active = self.active();
        self.sync_active(w, &active, now_ms)?;
        active.persist_indexes(true, false).map_err(|e| io_err(&active.log_path, e))
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
        if now_ms >= w.next_producer_expiry_ms {
            let expired = w.producers.expire(now_ms, self.config().producer_id_expiration_ms);
            w.next_producer_expiry_ms = now_ms.saturating_add(PRODUCER_EXPIRY_CHECK_MS);
            if expired > 0 {
                tracing::debug!(dir = %self.dir.display(), expired, "expired idle producer state");
            }
        }
        self.remove_retired_files(&mut w, now_ms);
        Ok(())
    }

    /// Flushes everything, writes the indexes and a clean-shutdown marker so the next open
    /// skips recovery.
    pub fn close(&self) -> Result<()> {
        let mut w = lock(&self.writer);
        // An offline log is left as it is: no clean-shutdown marker, so the next open recovers.
        self.check_online()?;
        let active = self.active();
        self.fsync(&active)?;
        active.persist_indexes(true, true).map_err(|e| io_err(&active.log_path, e))?;
        w.unflushed = 0;
        self.write_checkpoint(RECOVERY_POINT, self.log_end_offset())?;
        self.write_checkpoint(LOG_START, self.log_start_offset())?;
        self.write_checkpoint(HIGH_WATERMARK, self.high_watermark())?;
        self.write_producer_snapshot(&w, self.log_end_offset());
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

/// Cuts `bytes` after the last whole batch that ends below `max_offset`, or before the first
/// batch that is not valid where it is (bad header, offsets that do not follow, CRC mismatch):
/// the next read starts there and reports it. The first batch is the one the read asked for:
/// if it is not valid, that is the read's error. Checking the CRC costs about 0.1 CPU-second per
/// GB served, and is what keeps a client that does not check (librdkafka's default) from
/// reading garbage and skipping the offsets a damaged length hides.
fn whole_batches(mut bytes: Vec<u8>, max_offset: i64, gaps: bool) -> std::result::Result<Bytes, String> {
    let mut off = 0;
    let mut next = i64::MIN;
    while let Some(h) = BatchHeader::parse(&bytes[off..]) {
        if h.last_offset() >= max_offset {
            break;
        }
        let whole = h.size >= batch::HEADER_SIZE && off + h.size <= bytes.len();
        let follows = next == i64::MIN || (h.base_offset >= next && (gaps || h.base_offset == next));
        let problem = if !whole {
            (off == 0).then(|| format!("a batch of {} bytes that the file does not hold", h.size))
        } else if h.magic != 2 || h.last_offset_delta < 0 || !follows {
            Some(format!("a batch header that does not follow (offset {}, magic {})", h.base_offset, h.magic))
        } else if !batch::crc_ok(&bytes[off..off + h.size]) {
            Some(format!("a CRC mismatch in the batch at offset {}", h.base_offset))
        } else {
            None
        };
        if let Some(problem) = problem {
            if off == 0 {
                return Err(problem);
            }
            break;
        }
        if !whole {
            break;
        }
        next = h.last_offset() + 1;
        off += h.size;
    }
    bytes.truncate(off);
    Ok(Bytes::from(bytes))
}
