//! Log compaction (`cleanup.policy=compact`): Kafka's log cleaner, for one partition.
//!
//! Why: a compacted topic (`__consumer_offsets`, changelogs, tables) is a key→value table written
//! as a log. The cleaner bounds its size by keeping only the latest record per key, while every
//! offset that survives keeps its meaning, so consumers resume exactly where they were.
//!
//! A pass ([`Log::clean_with`]):
//! 1. Plan. The log is split at the first dirty offset (`cleaner-offset-checkpoint`) into a clean
//!    head, already compacted, and a dirty tail. The dirty section ends at the first uncleanable
//!    segment: the active one, one reaching the high watermark, or one with records younger than
//!    `min.compaction.lag.ms`. The pass runs if dirty / (clean + dirty) bytes exceeds
//!    `min.cleanable.dirty.ratio`, or if dirty data is older than `max.compaction.lag.ms`.
//! 2. Build an offset map key → latest offset over the dirty section (up to a memory budget; the
//!    section is then cut at a batch boundary and the rest waits for the next pass).
//! 3. Rewrite every segment below the map's end, in groups of consecutive segments up to
//!    `segment.bytes`, keeping a record only if it is the latest for its key. Records without a
//!    key are dropped (Kafka counts them as invalid). Tombstones that are the latest for their
//!    key are kept until the delete horizon (below). Control batches and transactional batches
//!    are copied as they are and never feed the map (no transaction support yet, so nothing can
//!    tell aborted data apart: keeping it all loses nothing).
//! 4. Swap each rewritten group in (crash-safe, below) and advance the checkpoint.
//!
//! Batch rewriting follows Kafka's `MemoryRecords.filterTo`: a batch whose records all survive is
//! copied byte for byte; a batch left empty is dropped; otherwise the batch keeps its header
//! (base offset, lastOffsetDelta, base timestamp, producer fields) and gets the surviving records,
//! byte for byte, recompressed with the batch's codec, a new record count, max timestamp and CRC.
//! Offsets therefore become non-contiguous, both between and inside batches. The log end offset
//! never moves: the cleaner never touches the active segment, whose base offset is the log end
//! offset whenever it is empty.
//!
//! Tombstones follow KIP-534 (Kafka 3.1+): the first time a batch that keeps a tombstone is
//! cleaned, its delete horizon (now + `delete.retention.ms`) is stored in its base timestamp and
//! attribute bit 6 is set (the records' timestamp deltas are re-encoded relative to it, so record
//! timestamps do not change). A later pass at or after the horizon removes the batch's
//! tombstones. So a tombstone is kept for at least `delete.retention.ms` after it was first
//! cleaned, whatever happens to the segments around it, and a due horizon triggers a pass by
//! itself (remembered in memory only: after a restart, the next pass triggered otherwise removes
//! the expired tombstones). The pre-KIP-534 rule, based on segment modification times, never
//! expires tombstones once cleaned segments are merged into newer ones (KAFKA-8522).
//!
//! Crash safety (Kafka's `.cleaned` → `.swap` → live protocol, plus a marker naming the range):
//! 1. write `<base>.log.cleaned`, `.index.cleaned`, `.timeindex.cleaned`, fsync them;
//! 2. write `cleaner-swap` = "<base> <end>" atomically: the group replaces offsets [base, end);
//! 3. under the log's writer lock, check that the source segments are still in place (retention
//!    or truncation may have removed them meanwhile: then the pass stops);
//! 4. rename the index files to `.swap`, then the log file to `.swap`, fsync the directory: the
//!    log's `.swap` is the commit point; swap the in-memory segment list (readers holding the old
//!    list keep reading the old, now unlinked, files);
//! 5. delete the other source segments (base in (base, end)), rename the index `.swap` files,
//!    then the log `.swap`, over the live names, fsync the directory, remove `cleaner-swap`.
//!
//! [`recover_swaps`] on open: `.cleaned` files are deleted; if `<base>.log.swap` exists, step 5 is
//! completed (and the segment rescanned); otherwise orphan index `.swap` files and the marker are
//! deleted. The log is thus either entirely old or entirely new at every crash point.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::BytesMut;

use crate::batch::{self, BatchHeader, Deltas, HEADER_SIZE};
use crate::decompress::{decompress, MAX_DECOMPRESSED_BYTES};
use crate::index::{self, OFFSET_ENTRY, TIME_ENTRY};
use crate::log::{lock, sync_dir, write_atomically};
use crate::segment::{self, read_full, Segment};
use crate::{io_err, Log, LogConfig, Result};

/// Per-partition cleaner checkpoint: the first dirty offset.
pub(crate) const CHECKPOINT: &str = "cleaner-offset-checkpoint";
/// The earliest delete horizon still pending (epoch ms), so that a restarted broker still
/// knows when expired tombstones call for a pass; absent when no tombstone waits.
pub(crate) const HORIZON_FILE: &str = "cleaner-delete-horizon";
/// Present while a swap is in progress: "<base> <end>", the offset range being replaced.
pub(crate) const SWAP_MARKER: &str = "cleaner-swap";
/// Kafka's `log.cleaner.dedupe.buffer.size` default.
const DEFAULT_MAP_BYTES: usize = 128 << 20;
/// Bookkeeping per map entry on top of the key bytes (hash table slot, box header, offset).
const MAP_ENTRY_OVERHEAD: usize = 48;
/// Read size when walking a segment's batches.
const READ_CHUNK: usize = 1 << 20;
/// Cleaned batches are written to the new segment in chunks of about this size.
const WRITE_CHUNK: usize = 1 << 20;

/// State kept between passes; the mutex around it serialises passes.
#[derive(Debug, Default)]
pub(crate) struct CleanerState {
    /// A swap that committed but whose file renames failed: (base, end), finished first.
    pending: Option<(i64, i64)>,
    /// The earliest delete horizon of a batch still holding tombstones, as of the last pass.
    next_horizon: Option<i64>,
}

impl CleanerState {
    pub(crate) fn load(dir: &std::path::Path) -> CleanerState {
        CleanerState { pending: None, next_horizon: crate::log::read_offset_file(&dir.join(HORIZON_FILE)) }
    }
}

/// How to run a cleaning pass.
#[derive(Debug, Clone)]
pub struct CleanerOptions {
    /// Clean whatever is cleanable, ignoring `min.cleanable.dirty.ratio` and
    /// `max.compaction.lag.ms` (the active segment, the high watermark and
    /// `min.compaction.lag.ms` still bound what is cleanable). With no dirty data, this rewrites
    /// the clean head only if something in it changes (expired tombstones).
    pub force: bool,
    /// Memory for the key → offset map (Kafka's `log.cleaner.dedupe.buffer.size`). When the dirty
    /// section has more keys, the pass cleans up to the last batch that fit (at least one).
    pub map_bytes: usize,
    /// Test hook: stop right after this step of the swap protocol, as if the process died there.
    #[doc(hidden)]
    pub crash_after: Option<CrashPoint>,
}

impl Default for CleanerOptions {
    fn default() -> Self {
        CleanerOptions { force: false, map_bytes: DEFAULT_MAP_BYTES, crash_after: None }
    }
}

/// Steps of the swap protocol, for crash tests (see the module docs).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// The `.cleaned` files are written and fsynced.
    CleanedWritten,
    /// `cleaner-swap` is written.
    MarkerWritten,
    /// The index files are renamed to `.swap`.
    IndexesSwapped,
    /// The log file is renamed to `.swap` (the commit point).
    LogSwapped,
    /// The other source segments are deleted.
    OldDeleted,
    /// The index `.swap` files are renamed to the live names.
    IndexesLive,
    /// The log `.swap` file is renamed to the live name (only the marker is left).
    LogLive,
}

/// What a cleaning pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CleanStats {
    /// The first dirty offset the pass started from.
    pub first_dirty_offset: i64,
    /// The new first dirty offset (end of the offset map).
    pub end_offset: i64,
    /// dirty / (clean + dirty) bytes of the non-active segments when the pass started.
    pub dirty_ratio: f64,
    /// Whether the pass ran because of `max.compaction.lag.ms` or [`CleanerOptions::force`]
    /// rather than the dirty ratio.
    pub forced: bool,
    /// Distinct keys in the offset map.
    pub keys: usize,
    pub segments_read: usize,
    /// Segments swapped in (a single segment with nothing to remove is left alone).
    pub segments_written: usize,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_read: u64,
    /// Records removed: superseded, tombstones past the horizon and keyless ones.
    pub records_removed: u64,
    /// Tombstones removed because the delete horizon had passed.
    pub tombstones_removed: u64,
    /// Records removed because they had no key.
    pub keyless_removed: u64,
}

/// What the planner decided to clean.
struct Plan {
    first_dirty: i64,
    /// Index of the first dirty segment and one past the last cleanable one (may be equal when
    /// only expired tombstones in the clean head call for a pass).
    dirty_start: usize,
    dirty_end: usize,
    ratio: f64,
    forced: bool,
}

/// Key → latest offset over the dirty section.
#[derive(Default)]
struct OffsetMap {
    map: HashMap<Box<[u8]>, i64>,
    bytes: usize,
}

impl OffsetMap {
    fn put(&mut self, key: &[u8], offset: i64) {
        if let Some(o) = self.map.get_mut(key) {
            *o = offset;
        } else {
            self.bytes += key.len() + MAP_ENTRY_OVERHEAD;
            self.map.insert(key.into(), offset);
        }
    }
}

/// Everything one pass's record decisions depend on, and what they found.
struct Pass<'a> {
    map: &'a OffsetMap,
    /// Records at or after this offset are beyond the map and always kept.
    end: i64,
    now_ms: i64,
    delete_retention_ms: i64,
    /// The earliest delete horizon among written batches that still hold tombstones.
    next_horizon: Option<i64>,
    stats: CleanStats,
}

impl Pass<'_> {
    /// Whether a record survives (Kafka's `Cleaner.shouldRetainRecord`).
    fn keep(&mut self, offset: i64, key: Option<&[u8]>, tombstone: bool, retain_deletes: bool) -> bool {
        if offset >= self.end {
            return true;
        }
        let Some(key) = key else {
            self.stats.keyless_removed += 1;
            return false;
        };
        if offset < self.map.map.get(key).copied().unwrap_or(-1) {
            return false;
        }
        if tombstone && !retain_deletes {
            self.stats.tombstones_removed += 1;
            return false;
        }
        true
    }
}

/// What filtering did to one batch.
enum Filtered {
    Unchanged,
    Dropped,
    Rewritten(Vec<u8>),
}

impl Log {
    /// Runs a cleaning pass if `cleanup.policy` includes `compact` and the dirty ratio,
    /// `max.compaction.lag.ms` or an expired tombstone calls for one. `None` if there was nothing
    /// to do. Blocking; call it from a background thread. See [`Log::clean_with`].
    pub fn clean(&self, now_ms: i64) -> Result<Option<CleanStats>> {
        self.clean_with(now_ms, &CleanerOptions::default())
    }

    /// Compacts the log: keeps the latest record per key in every segment below the end of the
    /// dirty section, never touching the active segment. Readers and appends run concurrently;
    /// appends wait only while cleaned segments are swapped in (a few renames and an fsync).
    /// `None` if the log is not compacted or the pass was not due.
    pub fn clean_with(&self, now_ms: i64, opts: &CleanerOptions) -> Result<Option<CleanStats>> {
        let cfg = self.config();
        if !cfg.cleanup_policy.compact {
            return Ok(None);
        }
        let mut state = lock(&self.cleaner);
        self.check_online()?;
        if let Some((base, end)) = state.pending {
            let _w = lock(&self.writer);
            finish_swap(&self.dir, base, end, None).map_err(|e| io_err(&self.dir, e))?;
            state.pending = None;
        }
        let segs = self.snapshot();
        let Some(plan) = self.plan(&segs, &cfg, &state, now_ms, opts.force) else { return Ok(None) };
        let (map, end) = self.build_map(&segs, &plan, opts.map_bytes)?;
        // Everything below the map's end is cleaned, except what is not cleanable at all (the
        // active segment, beyond the high watermark). The last cleaned segment must stay
        // non-active: truncation into it would leave the map describing records that are gone.
        let cleanable =
            segs.len() - 1 - segs.iter().rev().skip(1).take_while(|s| s.next_offset() > self.high_watermark()).count();
        let mapped = segs.partition_point(|s| s.base_offset < end).min(cleanable);
        if mapped == 0 {
            return Ok(None);
        }
        let mut pass = Pass {
            map: &map,
            end,
            now_ms,
            delete_retention_ms: cfg.delete_retention_ms,
            next_horizon: None,
            stats: CleanStats {
                first_dirty_offset: plan.first_dirty,
                end_offset: end,
                dirty_ratio: plan.ratio,
                forced: plan.forced,
                keys: map.map.len(),
                ..CleanStats::default()
            },
        };
        let mut current: Vec<Arc<Segment>> = segs[..mapped].to_vec();
        let mut start = 0;
        for group in groups(&segs[..mapped], segs[mapped].base_offset, &cfg) {
            // A log deleted or taken offline meanwhile: stop here rather than finish the pass.
            self.check_online()?;
            let cleaned = self.clean_group(&segs[group.clone()], &mut pass, &cfg)?;
            let Some(cleaned) = cleaned else {
                start += group.len();
                continue;
            };
            if opts.crash_after == Some(CrashPoint::CleanedWritten) {
                return Ok(None);
            }
            let size = cleaned.size();
            let cleaned = Arc::new(cleaned);
            // The replaced range ends where the next segment starts; that segment cannot change
            // without the swap's check failing (truncation would make a cleaned one active).
            let swap = Swap { expected: &current[start..], group_len: group.len(), end: segs[group.end].base_offset };
            match self.swap_in(&mut state, swap, cleaned.clone(), opts.crash_after)? {
                SwapOutcome::Done => {}
                SwapOutcome::Crashed => return Ok(None),
                SwapOutcome::Aborted => {
                    tracing::info!(dir = %self.dir.display(), "log changed under the cleaner; pass abandoned");
                    return Ok(Some(pass.stats));
                }
            }
            current.splice(start..start + group.len(), [cleaned]);
            start += 1;
            pass.stats.segments_written += 1;
            pass.stats.bytes_written += size;
        }

        // Advance the checkpoint unless truncation reached into what was cleaned.
        let w = lock(&self.writer);
        let snapshot = self.snapshot();
        let last = current.last().expect("at least one segment cleaned");
        let intact = snapshot.iter().position(|s| Arc::ptr_eq(s, last)).is_some_and(|i| i + 1 < snapshot.len());
        if intact && !w.closed {
            if end > self.first_dirty.load(Ordering::Acquire) {
                self.write_checkpoint(CHECKPOINT, end)?;
                self.first_dirty.store(end, Ordering::Release);
            }
            if state.next_horizon != pass.next_horizon {
                match pass.next_horizon {
                    Some(h) => self.write_checkpoint(HORIZON_FILE, h)?,
                    None => match std::fs::remove_file(self.dir.join(HORIZON_FILE)) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(&self.dir, e)),
                        _ => {}
                    },
                }
            }
            state.next_horizon = pass.next_horizon;
        }
        drop(w);
        // The caller reports the pass (the broker logs it with topic and partition).
        Ok(Some(pass.stats))
    }

    /// The cleaner's first dirty offset: records below it have been compacted.
    pub fn first_dirty_offset(&self) -> i64 {
        self.first_dirty.load(Ordering::Acquire).max(self.log_start_offset())
    }

    /// Lowers the cleaner checkpoint to `offset` (truncation removed everything from there).
    /// Called with the writer lock held.
    pub(crate) fn lower_cleaner_checkpoint(&self, offset: i64) -> Result<()> {
        if self.first_dirty.load(Ordering::Acquire) > offset {
            self.write_checkpoint(CHECKPOINT, offset)?;
            self.first_dirty.store(offset, Ordering::Release);
        }
        Ok(())
    }

    fn plan(
        &self,
        segs: &[Arc<Segment>],
        cfg: &LogConfig,
        state: &CleanerState,
        now_ms: i64,
        force: bool,
    ) -> Option<Plan> {
        let log_start = self.log_start_offset();
        let hw = self.high_watermark();
        let mut first_dirty = self.first_dirty.load(Ordering::Acquire);
        if first_dirty < log_start || first_dirty > self.log_end_offset() {
            first_dirty = log_start;
        }
        let dirty_start = segs.partition_point(|s| s.base_offset <= first_dirty).saturating_sub(1);
        let last = segs.len() - 1;
        let lag_limit = now_ms.saturating_sub(cfg.min_compaction_lag_ms.max(0));
        let mut dirty_end = dirty_start;
        while dirty_end < last {
            let seg = &segs[dirty_end];
            if segs[dirty_end + 1].base_offset > hw
                || (cfg.min_compaction_lag_ms > 0 && seg.retention_timestamp() > lag_limit)
            {
                break;
            }
            dirty_end += 1;
        }
        let clean_bytes: u64 = segs[..dirty_start].iter().map(|s| s.size()).sum();
        let dirty_bytes: u64 = segs[dirty_start..dirty_end].iter().map(|s| s.size()).sum();
        let ratio =
            if clean_bytes + dirty_bytes == 0 { 0.0 } else { dirty_bytes as f64 / (clean_bytes + dirty_bytes) as f64 };
        let max_lag = cfg.max_compaction_lag_ms.max(0);
        let lagging = max_lag < i64::MAX
            && dirty_bytes > 0
            && segs[dirty_start..last]
                .iter()
                .filter_map(|s| s.first_batch_timestamp())
                .filter(|&t| t > 0)
                .min()
                .is_some_and(|t| t < now_ms.saturating_sub(max_lag));
        let horizon_due = state.next_horizon.is_some_and(|h| now_ms >= h);
        let dirty = dirty_end > dirty_start;
        let due = force || (dirty && ratio > cfg.min_cleanable_dirty_ratio) || lagging || horizon_due;
        if !due {
            return None;
        }
        Some(Plan { first_dirty, dirty_start, dirty_end, ratio, forced: force || lagging || horizon_due })
    }

    /// Builds the key → latest offset map over `[first_dirty, end of the dirty section)`;
    /// returns it with the offset it ends at (exclusive).
    fn build_map(&self, segs: &[Arc<Segment>], plan: &Plan, map_bytes: usize) -> Result<(OffsetMap, i64)> {
        let mut map = OffsetMap::default();
        let mut end = plan.first_dirty;
        for (i, seg) in segs.iter().enumerate().take(plan.dirty_end).skip(plan.dirty_start) {
            let mut full = false;
            for_each_batch(seg, |h, bytes| {
                if h.last_offset() < plan.first_dirty {
                    return Ok(true);
                }
                if map.bytes >= map_bytes && !map.map.is_empty() {
                    full = true;
                    return Ok(false);
                }
                if !h.is_control() && !h.is_transactional() && batch::crc_ok(bytes) {
                    with_records(bytes, h, |offset, key| {
                        if let (Some(k), true) = (key, offset >= plan.first_dirty) {
                            map.put(k, offset);
                        }
                    });
                }
                end = h.last_offset() + 1;
                Ok(true)
            })
            .map_err(|e| io_err(&seg.log_path, e))?;
            if full {
                return Ok((map, end));
            }
            end = segs[i + 1].base_offset;
        }
        Ok((map, end))
    }

    /// Writes the cleaned copy of `sources` to `<base>.log.cleaned` (+ indexes), fsynced.
    /// `None` if it would equal the single source segment.
    fn clean_group(&self, sources: &[Arc<Segment>], pass: &mut Pass<'_>, cfg: &LogConfig) -> Result<Option<Segment>> {
        let base = sources[0].base_offset;
        let mtime = sources.iter().map(|s| s.last_modified_ms()).max().unwrap_or(0);
        let out_path = segment::file_name(&self.dir, base, "log.cleaned");
        let ioe = |e| io_err(&out_path, e);
        let out = Segment::create_cleaned(&self.dir, base, mtime).map_err(ioe)?;
        let mut changed = sources.len() > 1;
        let mut buf = Vec::with_capacity(WRITE_CHUNK + READ_CHUNK);
        let mut placed: Vec<(usize, BatchHeader)> = Vec::new();
        let interval = cfg.index_interval_bytes;
        let flush = |buf: &mut Vec<u8>, placed: &mut Vec<(usize, BatchHeader)>| -> io::Result<()> {
            if placed.is_empty() {
                return Ok(());
            }
            if out.size() + buf.len() as u64 > i32::MAX as u64 {
                return Err(io::Error::other("cleaned segment would exceed 2 GiB"));
            }
            out.append(buf, placed, interval, mtime)?;
            buf.clear();
            placed.clear();
            Ok(())
        };
        for seg in sources {
            pass.stats.segments_read += 1;
            pass.stats.bytes_read += seg.size();
            let result = for_each_batch(seg, |h, bytes| {
                let filtered = if h.is_control() || h.is_transactional() || !batch::crc_ok(bytes) {
                    Filtered::Unchanged
                } else {
                    filter_batch(bytes, h, pass)
                };
                let (bytes, header) = match &filtered {
                    Filtered::Unchanged => (bytes, *h),
                    Filtered::Dropped => {
                        changed = true;
                        return Ok(true);
                    }
                    Filtered::Rewritten(b) => {
                        changed = true;
                        (&b[..], BatchHeader::parse(b).expect("rebuilt batch has a header"))
                    }
                };
                placed.push((buf.len(), header));
                buf.extend_from_slice(bytes);
                if buf.len() >= WRITE_CHUNK {
                    flush(&mut buf, &mut placed)?;
                }
                Ok(true)
            });
            result.map_err(|e| io_err(&seg.log_path, e))?;
        }
        let mut finish = || -> io::Result<bool> {
            flush(&mut buf, &mut placed)?;
            if !changed {
                return Ok(false);
            }
            if mtime >= 0 {
                out.file.set_modified(UNIX_EPOCH + Duration::from_millis(mtime as u64))?;
            }
            out.file.sync_all()?;
            let idx = segment::file_name(&self.dir, base, "index.cleaned");
            let tidx = segment::file_name(&self.dir, base, "timeindex.cleaned");
            // Created even when empty: the swap renames both.
            index::create_empty(&idx)?;
            index::create_empty(&tidx)?;
            out.persist_indexes_to(&idx, &tidx, true, true)?;
            Ok(true)
        };
        match finish() {
            Ok(true) => Ok(Some(out)),
            Ok(false) => {
                discard_cleaned(&self.dir, base).map_err(ioe)?;
                Ok(None)
            }
            Err(e) => {
                let _ = discard_cleaned(&self.dir, base);
                Err(ioe(e))
            }
        }
    }

    /// Swaps `cleaned` in for the group, if the segments it was made from are still in place.
    fn swap_in(
        &self,
        state: &mut CleanerState,
        swap: Swap<'_>,
        cleaned: Arc<Segment>,
        crash: Option<CrashPoint>,
    ) -> Result<SwapOutcome> {
        let Swap { expected, group_len, end } = swap;
        let base = cleaned.base_offset;
        let marker = self.dir.join(SWAP_MARKER);
        // Written before taking the writer lock (two fsyncs appends need not wait for): without
        // a `.swap` log it means nothing and is removed on open.
        write_atomically(&marker, format!("{base} {end}\n").as_bytes()).map_err(|e| io_err(&marker, e))?;
        if crash == Some(CrashPoint::MarkerWritten) {
            return Ok(SwapOutcome::Crashed);
        }
        let w = lock(&self.writer);
        let segs = self.snapshot();
        let pos = segs.iter().position(|s| Arc::ptr_eq(s, &expected[0]));
        let in_place = pos.is_some_and(|p| {
            segs.len() > p + expected.len() && expected.iter().zip(&segs[p..]).all(|(a, b)| Arc::ptr_eq(a, b))
        });
        let (Some(p), true, false) = (pos, in_place, w.closed) else {
            discard_cleaned(&self.dir, base).map_err(|e| io_err(&self.dir, e))?;
            remove_if_exists(&marker).map_err(|e| io_err(&marker, e))?;
            return Ok(SwapOutcome::Aborted);
        };
        debug_assert_eq!(segs[p + group_len].base_offset, end);
        let dir = &self.dir;
        let name = |ext: &str| segment::file_name(dir, base, ext);
        let commit = || -> io::Result<bool> {
            std::fs::rename(name("index.cleaned"), name("index.swap"))?;
            std::fs::rename(name("timeindex.cleaned"), name("timeindex.swap"))?;
            if crash == Some(CrashPoint::IndexesSwapped) {
                return Ok(false);
            }
            std::fs::rename(name("log.cleaned"), name("log.swap"))?;
            sync_dir(dir)?;
            Ok(crash != Some(CrashPoint::LogSwapped))
        };
        match commit() {
            Ok(true) => {}
            Ok(false) => return Ok(SwapOutcome::Crashed),
            Err(e) => {
                // Not committed: the old segments stay.
                let _ = discard_cleaned(dir, base);
                let _ = std::fs::remove_file(&marker);
                return Err(io_err(dir, e));
            }
        }
        let mut list = segs.as_ref().clone();
        list.splice(p..p + group_len, [cleaned]);
        self.replace_segments(list);
        match finish_swap(dir, base, end, crash) {
            Ok(true) => {}
            Ok(false) => return Ok(SwapOutcome::Crashed),
            Err(e) => {
                state.pending = Some((base, end));
                return Err(io_err(dir, e));
            }
        }
        drop(w);
        Ok(SwapOutcome::Done)
    }
}

/// One group's swap: `expected` is the group's segments (`group_len` of them) followed by the
/// rest of the cleaned range; the group replaces offsets up to `end`.
struct Swap<'a> {
    expected: &'a [Arc<Segment>],
    group_len: usize,
    end: i64,
}

enum SwapOutcome {
    Done,
    Aborted,
    Crashed,
}

/// Groups consecutive segments for rewriting into one: up to `segment.bytes` of input, indexes
/// within `segment.index.bytes`, and offsets within 2^31 of the group's base. `upper` is the base
/// offset of the segment after `segs`.
fn groups(segs: &[Arc<Segment>], upper: i64, cfg: &LogConfig) -> Vec<std::ops::Range<usize>> {
    let max_bytes = cfg.segment_bytes.min(i32::MAX as u64);
    let index_bytes = |s: &Segment| {
        let (o, t) = s.index_entries();
        (o * OFFSET_ENTRY, t * TIME_ENTRY)
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < segs.len() {
        let (mut size, (mut idx, mut tidx)) = (segs[i].size(), index_bytes(&segs[i]));
        let mut j = i + 1;
        while j < segs.len() {
            let next_upper = segs.get(j + 1).map_or(upper, |s| s.base_offset);
            let (si, st) = index_bytes(&segs[j]);
            if size + segs[j].size() > max_bytes
                || idx + si > cfg.segment_index_bytes
                || tidx + st > cfg.segment_index_bytes
                || next_upper - 1 - segs[i].base_offset > i32::MAX as i64
            {
                break;
            }
            size += segs[j].size();
            idx += si;
            tidx += st;
            j += 1;
        }
        out.push(i..j);
        i = j;
    }
    out
}

/// Calls `f(header, whole batch)` for each batch of a (non-active) segment, in order, until it
/// returns false. A malformed batch is an error: a non-active segment was checked when opened.
fn for_each_batch(seg: &Segment, mut f: impl FnMut(&BatchHeader, &[u8]) -> io::Result<bool>) -> io::Result<()> {
    let len = seg.size();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut pos = 0u64;
    while pos < len {
        let want = (len - pos).min(buf.len() as u64) as usize;
        let n = read_full(&seg.file, &mut buf[..want], pos)?;
        let mut off = 0;
        while off < n {
            let Some(h) = BatchHeader::parse(&buf[off..n]) else { break };
            if h.size < HEADER_SIZE || pos + (off + h.size) as u64 > len {
                return Err(io::Error::other(format!("malformed batch at byte {} of a segment", pos + off as u64)));
            }
            if off + h.size > n {
                break;
            }
            if !f(&h, &buf[off..off + h.size])? {
                return Ok(());
            }
            off += h.size;
        }
        if off == 0 {
            // One batch larger than the buffer (or a short read): grow and re-read.
            let need = BatchHeader::parse(&buf[..n]).map_or(HEADER_SIZE, |h| h.size);
            if n < want || need <= buf.len() {
                return Err(io::Error::other(format!("truncated batch at byte {pos} of a segment")));
            }
            buf.resize(need, 0);
            continue;
        }
        pos += off as u64;
    }
    Ok(())
}

/// Calls `f(offset, key)` for each record of a stored batch; logs and stops at undecodable ones.
fn with_records(bytes: &[u8], h: &BatchHeader, mut f: impl FnMut(i64, Option<&[u8]>)) {
    let Some(records) = records_of(bytes, h) else { return };
    let walk = batch::walk_records(&records, h, Deltas::Increasing, |r| {
        f(h.base_offset + r.offset_delta as i64, r.key()?);
        Ok(false)
    });
    if let Err(e) = walk {
        tracing::warn!(offset = h.base_offset, error = %e, "cleaner: undecodable batch left as is");
    }
}

/// The uncompressed records section of a batch; `None` (logged) if it cannot be decompressed.
fn records_of<'a>(bytes: &'a [u8], h: &BatchHeader) -> Option<std::borrow::Cow<'a, [u8]>> {
    if h.compression() == 0 {
        return Some(std::borrow::Cow::Borrowed(&bytes[HEADER_SIZE..]));
    }
    match decompress(h.compression(), &bytes[HEADER_SIZE..], MAX_DECOMPRESSED_BYTES) {
        Ok(r) => Some(std::borrow::Cow::Owned(r)),
        Err(e) => {
            tracing::warn!(offset = h.base_offset, error = %e, "cleaner: undecodable batch left as is");
            None
        }
    }
}

/// Filters one data batch through [`Pass::keep`] and, when it keeps a tombstone for the first
/// time, stamps the KIP-534 delete horizon on it. Undecodable batches are left as they are.
fn filter_batch(bytes: &[u8], h: &BatchHeader, pass: &mut Pass<'_>) -> Filtered {
    let Some(records) = records_of(bytes, h) else { return Filtered::Unchanged };
    let horizon = h.delete_horizon();
    let retain_deletes = horizon.is_none_or(|t| pass.now_ms < t);
    let before = pass.stats.clone();
    let mut kept = Vec::new();
    let mut removed = 0u64;
    let mut max_ts = -1;
    let mut kept_tombstone = false;
    let walk = batch::walk_records(&records, h, Deltas::Increasing, |r| {
        let (key, tombstone) = r.key_and_tombstone()?;
        if pass.keep(h.base_offset + r.offset_delta as i64, key, tombstone, retain_deletes) {
            kept.push(*r);
            max_ts = max_ts.max(r.timestamp);
            kept_tombstone |= tombstone;
        } else {
            removed += 1;
        }
        Ok(false)
    });
    if let Err(e) = walk {
        tracing::warn!(offset = h.base_offset, error = %e, "cleaner: undecodable batch left as is");
        pass.stats = before;
        return Filtered::Unchanged;
    }
    pass.stats.records_read += kept.len() as u64 + removed;
    let new_horizon =
        (kept_tombstone && horizon.is_none()).then(|| pass.now_ms.saturating_add(pass.delete_retention_ms));
    let result = if removed == 0 && new_horizon.is_none() {
        Filtered::Unchanged
    } else if kept.is_empty() {
        Filtered::Dropped
    } else {
        match rewrite(bytes, h, &kept, max_ts, new_horizon) {
            Ok(b) => Filtered::Rewritten(b),
            Err(e) => {
                tracing::warn!(offset = h.base_offset, error = %e, "cleaner: rewriting failed; batch left as is");
                let read = pass.stats.records_read;
                pass.stats = CleanStats { records_read: read, ..before };
                return Filtered::Unchanged;
            }
        }
    };
    pass.stats.records_removed += removed;
    if kept_tombstone {
        let t = new_horizon.or(horizon).expect("a kept tombstone has a horizon");
        pass.next_horizon = Some(pass.next_horizon.map_or(t, |n| n.min(t)));
    }
    result
}

/// A batch holding only `kept` (records of `bytes`), recompressed with the batch's codec.
fn rewrite(
    bytes: &[u8],
    h: &BatchHeader,
    kept: &[batch::RawRecord<'_>],
    max_ts: i64,
    new_horizon: Option<i64>,
) -> std::result::Result<Vec<u8>, String> {
    let mut raw = Vec::with_capacity(kept.iter().map(|r| r.bytes.len() + 8).sum());
    for r in kept {
        match new_horizon {
            Some(base_ts) => r.rebased(base_ts, &mut raw),
            None => raw.extend_from_slice(r.bytes),
        }
    }
    let section = if h.compression() == 0 { raw } else { compress(h.compression(), &raw)? };
    Ok(batch::rebuild(bytes, h, &section, kept.len() as i32, max_ts, new_horizon))
}

/// Compresses a records section with Kafka codec `codec`, using kafka-protocol's compressors.
fn compress(codec: i16, raw: &[u8]) -> std::result::Result<Vec<u8>, String> {
    use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
    let mut out = Vec::with_capacity(raw.len() / 2 + 64);
    macro_rules! with {
        ($codec:ty) => {
            <$codec as Compressor<Vec<u8>>>::compress(&mut out, |b: &mut BytesMut| {
                b.extend_from_slice(raw);
                Ok(())
            })
        };
    }
    let result = match codec {
        1 => with!(Gzip),
        2 => with!(Snappy),
        3 => with!(Lz4),
        4 => with!(Zstd),
        c => return Err(format!("unknown compression codec {c}")),
    };
    result.map_err(|e| e.to_string())?;
    Ok(out)
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn rename_if_exists(from: &Path, to: &Path) -> io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes the `.cleaned` files of a group that will not be swapped in.
fn discard_cleaned(dir: &Path, base: i64) -> io::Result<()> {
    for ext in ["log.cleaned", "index.cleaned", "timeindex.cleaned"] {
        remove_if_exists(&segment::file_name(dir, base, ext))?;
    }
    Ok(())
}

/// Base offsets of the live segment files (`<20 digits>.log`) in `dir`.
fn live_bases(dir: &Path) -> io::Result<Vec<i64>> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".log") {
            if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
                if let Ok(base) = stem.parse::<i64>() {
                    bases.push(base);
                }
            }
        }
    }
    Ok(bases)
}

/// Step 5 of the protocol, after the commit point: deletes the replaced segments other than the
/// one at `base`, moves the `.swap` files over the live names and removes the marker. Idempotent.
/// Returns false if stopped at a crash point.
fn finish_swap(dir: &Path, base: i64, end: i64, crash: Option<CrashPoint>) -> io::Result<bool> {
    for old in live_bases(dir)? {
        if old > base && old < end {
            segment::delete_files(dir, old)?;
        }
    }
    if crash == Some(CrashPoint::OldDeleted) {
        return Ok(false);
    }
    let name = |ext: &str| segment::file_name(dir, base, ext);
    rename_if_exists(&name("index.swap"), &name("index"))?;
    rename_if_exists(&name("timeindex.swap"), &name("timeindex"))?;
    if crash == Some(CrashPoint::IndexesLive) {
        return Ok(false);
    }
    rename_if_exists(&name("log.swap"), &name("log"))?;
    sync_dir(dir)?;
    if crash == Some(CrashPoint::LogLive) {
        return Ok(false);
    }
    remove_if_exists(&dir.join(SWAP_MARKER))?;
    Ok(true)
}

/// Completes or rolls back a swap interrupted by a crash (see the module docs). Returns the base
/// offsets of segments swapped in, which the caller rescans rather than trusting their indexes.
pub(crate) fn recover_swaps(dir: &Path) -> io::Result<Vec<i64>> {
    let mut swaps = Vec::new();
    let mut orphans = Vec::new();
    let mut changed = false;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".cleaned") {
            std::fs::remove_file(entry.path())?;
            changed = true;
        } else if let Some(stem) = name.strip_suffix(".log.swap") {
            if let Ok(base) = stem.parse::<i64>() {
                swaps.push(base);
            }
        } else if name.ends_with(".index.swap") || name.ends_with(".timeindex.swap") {
            orphans.push(entry.path());
        }
    }
    let marker_path = dir.join(SWAP_MARKER);
    if swaps.is_empty() && orphans.is_empty() && !changed && !marker_path.exists() {
        return Ok(swaps);
    }
    let marker = std::fs::read_to_string(&marker_path).ok().and_then(|s| {
        let mut it = s.split_whitespace().map(|v| v.parse::<i64>());
        match (it.next(), it.next()) {
            (Some(Ok(b)), Some(Ok(e))) => Some((b, e)),
            _ => None,
        }
    });
    for &base in &swaps {
        let end = match marker {
            Some((b, e)) if b == base => e,
            _ => {
                // Not written by this protocol's order; replace only the segment of the same base.
                tracing::warn!(dir = %dir.display(), base, "segment swap without a matching marker");
                base + 1
            }
        };
        tracing::info!(dir = %dir.display(), base, end, "completing an interrupted cleaner swap");
        finish_swap(dir, base, end, None)?;
    }
    for path in orphans {
        // Index files of a swap that never committed (or of one just completed: already gone).
        remove_if_exists(&path)?;
    }
    remove_if_exists(&marker_path)?;
    sync_dir(dir)?;
    Ok(swaps)
}
