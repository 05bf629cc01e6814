//! One segment: a `.log` file of whole batches plus its sparse indexes. The writer (serialised
//! by the log's append lock) appends with `pwrite` and then publishes the committed size;
//! readers only ever look at bytes below the committed size.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::batch::{self, BatchHeader, HEADER_SIZE};
use crate::index::{self, OffsetIndex, TimeIndex, OFFSET_ENTRY, TIME_ENTRY};
use crate::LogConfig;

/// Read-ahead used when walking batch headers.
const SCAN_CHUNK: usize = 16 * 1024;
/// Read size for full-batch recovery scans.
const RECOVERY_CHUNK: usize = 1 << 20;

pub(crate) fn file_name(dir: &Path, base_offset: i64, ext: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{ext}"))
}

/// Bytes of a segment that are not the batches the log wrote there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    pub path: PathBuf,
    /// Where the invalid bytes start; every batch before it is valid.
    pub position: u64,
    pub file_len: u64,
    /// One past the last offset of the valid batches before `position` (`i64::MIN`: unknown).
    pub next_offset: i64,
    /// What was found at `position`.
    pub detail: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} at byte {} (file length {})", self.path.display(), self.detail, self.position, self.file_len)
    }
}

/// Where [`Segment::locate`] found an offset.
#[derive(Debug)]
pub(crate) enum Located {
    /// In the batch at this position.
    At(u64, BatchHeader),
    /// Not in this segment (beyond its last offset, or in a gap compaction left).
    NotHere,
    /// The segment should hold it, but its bytes are damaged on the way.
    Damaged(Damage),
}

/// Valid batches found in bytes about to be dropped, for the log line that says what went.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dropped {
    pub batches: u64,
    pub records: u64,
    /// First and last offset of the batches found.
    pub range: Option<(i64, i64)>,
}

impl Dropped {
    pub fn offsets(&self) -> String {
        self.range.map_or_else(|| "none".to_string(), |(a, b)| format!("{a}..={b}"))
    }
}

/// The batch length field of a header's first 12 bytes, if present.
fn batch_length(b: &[u8]) -> Option<i32> {
    b.get(8..12).map(|l| i32::from_be_bytes(l.try_into().expect("4 bytes")))
}

/// Mutable per-segment state, guarded by a mutex that is never held during log-file I/O.
#[derive(Debug)]
pub(crate) struct SegState {
    pub index: OffsetIndex,
    pub time_index: TimeIndex,
    bytes_since_index: usize,
    max_ts: i64,
    /// Last offset of the batch that first reached `max_ts` (Kafka's shallow offset).
    offset_of_max_ts: i64,
    /// Max timestamp of the first batch: `segment.ms` counts from it when present.
    pub first_batch_ts: Option<i64>,
    pub created_ms: i64,
    pub last_modified_ms: i64,
    /// How much earlier than `segment.ms` this segment rolls (`segment.jitter.ms`).
    pub roll_jitter_ms: i64,
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub base_offset: i64,
    pub file: File,
    pub log_path: PathBuf,
    index_path: PathBuf,
    time_path: PathBuf,
    size: AtomicU64,
    next_offset: AtomicI64,
    max_ts: AtomicI64,
    /// Cleared when an index entry is found not to point at its batch: lookups then walk the
    /// segment from its start (the index is rebuilt when the log is next opened).
    index_trusted: AtomicBool,
    state: Mutex<SegState>,
}

impl Segment {
    fn new(dir: &Path, base_offset: i64, file: File, now_ms: i64) -> Segment {
        Segment {
            base_offset,
            file,
            log_path: file_name(dir, base_offset, "log"),
            index_path: file_name(dir, base_offset, "index"),
            time_path: file_name(dir, base_offset, "timeindex"),
            size: AtomicU64::new(0),
            next_offset: AtomicI64::new(base_offset),
            max_ts: AtomicI64::new(-1),
            index_trusted: AtomicBool::new(true),
            state: Mutex::new(SegState {
                index: OffsetIndex::default(),
                time_index: TimeIndex::default(),
                bytes_since_index: 0,
                max_ts: -1,
                offset_of_max_ts: base_offset,
                first_batch_ts: None,
                created_ms: now_ms,
                last_modified_ms: now_ms,
                roll_jitter_ms: 0,
            }),
        }
    }

    /// Creates a new empty segment (replacing leftovers with the same name).
    pub fn create(dir: &Path, base_offset: i64, now_ms: i64) -> io::Result<Segment> {
        let path = file_name(dir, base_offset, "log");
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path)?;
        let seg = Segment::new(dir, base_offset, file, now_ms);
        index::create_empty(&seg.index_path)?;
        index::create_empty(&seg.time_path)?;
        crate::log::sync_dir(dir)?;
        Ok(seg)
    }

    /// [`Segment::create`] with the log's settings: `preallocate` reserves `segment.bytes` of
    /// disk (without changing the file's size, so readers and recovery see only batches), and
    /// `segment.jitter.ms` draws this segment's roll jitter.
    pub fn create_for_log(dir: &Path, base_offset: i64, now_ms: i64, cfg: &LogConfig) -> io::Result<Segment> {
        let seg = Segment::create(dir, base_offset, now_ms)?;
        if cfg.preallocate {
            let len = libc::off_t::try_from(cfg.segment_bytes.min(i32::MAX as u64)).unwrap_or(libc::off_t::MAX);
            // SAFETY: fallocate on a file descriptor this segment owns; no memory is involved.
            let rc = unsafe { libc::fallocate(seg.file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 0, len) };
            if rc != 0 {
                tracing::warn!(segment = %seg.log_path.display(), error = %io::Error::last_os_error(), "preallocate failed");
            }
        }
        if cfg.segment_jitter_ms > 0 {
            use std::hash::BuildHasher;
            let draw = std::collections::hash_map::RandomState::new().hash_one((dir, base_offset, now_ms));
            seg.lock().roll_jitter_ms = (draw % cfg.segment_jitter_ms as u64) as i64;
        }
        Ok(seg)
    }

    /// Releases disk reserved by `preallocate` beyond the data (when the segment is sealed).
    pub fn release_preallocation(&self) -> io::Result<()> {
        self.file.set_len(self.size())
    }

    /// Opens an existing segment. With `recover`, every batch is CRC-checked and the indexes are
    /// rebuilt; otherwise the index files are trusted if they pass sanity checks (else it
    /// recovers too). `gaps` says whether offsets may skip (compaction). Bytes that do not form
    /// valid batches are reported as [`Damage`], never removed here: the segment's committed
    /// size stops before them, and the caller decides (see [`Segment::cut`]).
    pub fn open(
        dir: &Path,
        base_offset: i64,
        now_ms: i64,
        interval: usize,
        recover: bool,
        gaps: bool,
    ) -> io::Result<(Segment, Option<Damage>)> {
        let path = file_name(dir, base_offset, "log");
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let len = file.metadata()?.len();
        let mtime = file
            .metadata()?
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(now_ms, |d| d.as_millis() as i64);
        let seg = Segment::new(dir, base_offset, file, now_ms);
        seg.size.store(len, Ordering::Release);
        let loaded = {
            let mut st = seg.lock();
            st.last_modified_ms = mtime;
            !recover && seg.load_indexes(&mut st, len, gaps)?
        };
        if loaded {
            return Ok((seg, None));
        }
        let damage = seg.recover(interval, gaps)?;
        Ok((seg, damage))
    }

    /// Creates the `<base>.log.cleaned` file the cleaner writes a replacement segment into. The
    /// segment's paths are the live names it will have once swapped in; its indexes are written
    /// with [`Segment::persist_indexes_to`] to the `.cleaned` names.
    pub fn create_cleaned(dir: &Path, base_offset: i64, now_ms: i64) -> io::Result<Segment> {
        let path = file_name(dir, base_offset, "log.cleaned");
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path)?;
        Ok(Segment::new(dir, base_offset, file, now_ms))
    }

    /// Whether a batch's offsets are representable in this segment's indexes (relative u32).
    fn fits(&self, h: &BatchHeader) -> bool {
        h.base_offset >= self.base_offset && h.last_offset() - self.base_offset <= i32::MAX as i64
    }

    pub fn lock(&self) -> MutexGuard<'_, SegState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Committed size in bytes.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }
    /// One past the last offset in this segment.
    pub fn next_offset(&self) -> i64 {
        self.next_offset.load(Ordering::Acquire)
    }
    /// Largest record timestamp, -1 if none.
    pub fn max_timestamp(&self) -> i64 {
        self.max_ts.load(Ordering::Acquire)
    }
    pub fn offset_of_max_timestamp(&self) -> i64 {
        self.lock().offset_of_max_ts
    }
    /// When the segment was last appended to (the file's mtime after a reopen).
    pub fn last_modified_ms(&self) -> i64 {
        self.lock().last_modified_ms
    }
    /// The max timestamp of the first batch, if any.
    pub fn first_batch_timestamp(&self) -> Option<i64> {
        self.lock().first_batch_ts
    }
    /// The timestamp retention compares against: the largest record timestamp, or the last
    /// modification time when records carry none.
    pub fn retention_timestamp(&self) -> i64 {
        let ts = self.max_timestamp();
        if ts >= 0 {
            ts
        } else {
            self.lock().last_modified_ms
        }
    }

    fn load_indexes(&self, st: &mut SegState, len: u64, gaps: bool) -> io::Result<bool> {
        let Some(idx) = OffsetIndex::load(&self.index_path, len) else { return Ok(false) };
        let Some(tidx) = TimeIndex::load(&self.time_path, u32::MAX) else { return Ok(false) };
        let tail_start = match idx.last() {
            Some((rel, pos)) => {
                // The last entry must point at the batch ending at its offset.
                let h = self.read_header(pos as u64)?;
                if h.is_none_or(|h| h.magic != 2 || h.last_offset() != self.base_offset + rel as i64) {
                    return Ok(false);
                }
                pos as u64
            }
            None => 0,
        };
        st.index = idx;
        st.time_index = tidx;
        self.rebuild_tail_state(st, tail_start, len, gaps)
    }

    /// Recomputes next offset, max timestamp and index bookkeeping from the time index and a
    /// header walk of `[tail_start, len)`. `false` if the headers there are inconsistent.
    fn rebuild_tail_state(&self, st: &mut SegState, tail_start: u64, len: u64, gaps: bool) -> io::Result<bool> {
        let (mut max_ts, mut max_off) = match st.time_index.last() {
            Some((t, rel)) => (t, self.base_offset + rel as i64),
            None => (-1, self.base_offset),
        };
        let mut next = self.base_offset;
        let mut end = tail_start;
        self.scan_headers(tail_start, len, |pos, h| {
            // Offsets increase by one from batch to batch; compaction may leave gaps.
            let known = pos == 0 || pos != tail_start;
            let misplaced = known && (h.base_offset < next || (!gaps && h.base_offset != next));
            if misplaced || h.magic != 2 || h.last_offset_delta < 0 || !self.fits(h) {
                return false;
            }
            if h.max_timestamp > max_ts {
                max_ts = h.max_timestamp;
                max_off = h.last_offset();
            }
            next = h.last_offset() + 1;
            end = pos + h.size as u64;
            true
        })?;
        if end != len || (len > 0 && next == self.base_offset) {
            return Ok(false);
        }
        if st.time_index.last().is_some_and(|(_, rel)| self.base_offset + rel as i64 >= next) {
            return Ok(false);
        }
        st.first_batch_ts = if len > 0 { self.read_header(0)?.map(|h| h.max_timestamp) } else { None };
        st.bytes_since_index = (len - tail_start) as usize;
        st.max_ts = max_ts;
        st.offset_of_max_ts = max_off;
        self.max_ts.store(max_ts, Ordering::Release);
        self.next_offset.store(next, Ordering::Release);
        Ok(true)
    }

    /// Full scan with CRC checks that rebuilds the indexes. The committed size ends after the
    /// last valid batch; what follows is returned as [`Damage`] and left in the file. Index files
    /// are rewritten if possible; failing that (a full disk) they are kept in memory only.
    pub fn recover(&self, interval: usize, gaps: bool) -> io::Result<Option<Damage>> {
        let len = self.file.metadata()?.len();
        let mut st = self.lock();
        st.index.clear();
        st.time_index.clear();
        st.bytes_since_index = 0;
        st.max_ts = -1;
        st.offset_of_max_ts = self.base_offset;
        st.first_batch_ts = None;
        let mut buf = vec![0u8; RECOVERY_CHUNK];
        let (mut pos, mut next) = (0u64, self.base_offset);
        let mut problem = None;
        while pos < len && problem.is_none() {
            let n = read_full(&self.file, &mut buf, pos)?;
            let mut off = 0;
            while off < n {
                let at = pos + off as u64;
                let Some(h) = BatchHeader::parse(&buf[off..n]) else {
                    if at + HEADER_SIZE as u64 <= len && off > 0 {
                        break; // the header continues in the next chunk
                    }
                    problem = Some(match batch_length(&buf[off..n]) {
                        Some(l) if l < 0 => format!("negative batch length {l}"),
                        _ => format!("an incomplete batch header ({} bytes before the end of the file)", len - at),
                    });
                    break;
                };
                if h.size < HEADER_SIZE || at + h.size as u64 > len {
                    problem =
                        Some(format!("a batch length of {} bytes, past the end of the file ({len} bytes)", h.size));
                    break;
                }
                if off + h.size > n {
                    if off == 0 {
                        buf.resize(h.size, 0); // larger than the buffer: re-read it whole
                    }
                    break;
                }
                if let Some(why) = self.stored_batch_problem(&buf[off..off + h.size], &h, next, gaps) {
                    problem = Some(why);
                    break;
                }
                st.on_batch(self.base_offset, at as u32, &h, interval);
                next = h.last_offset() + 1;
                off += h.size;
            }
            pos += off as u64;
        }
        self.size.store(pos, Ordering::Release);
        self.max_ts.store(st.max_ts, Ordering::Release);
        self.next_offset.store(next, Ordering::Release);
        drop(st);
        if let Err(e) = self.persist_indexes(true, false) {
            tracing::warn!(segment = %self.log_path.display(), error = %e, "could not rewrite the indexes; kept in memory");
        }
        Ok(problem.map(|detail| Damage {
            path: self.log_path.clone(),
            position: pos,
            file_len: len,
            next_offset: next,
            detail,
        }))
    }

    /// Why a stored batch (whole, `h` its header) is not what the log wrote at its place, where
    /// the previous batch ended before offset `next`. `None` if it is.
    fn stored_batch_problem(&self, b: &[u8], h: &BatchHeader, next: i64, gaps: bool) -> Option<String> {
        if h.magic != 2 {
            return Some(format!("record batch magic {}", h.magic));
        }
        if h.base_offset < next || (!gaps && h.base_offset != next) {
            return Some(format!("a batch at offset {} where offset {next} was expected", h.base_offset));
        }
        if h.last_offset_delta < 0 || h.record_count < 0 || !self.fits(h) {
            return Some(format!(
                "a batch header claiming offsets {}..={} ({} records)",
                h.base_offset,
                h.last_offset(),
                h.record_count
            ));
        }
        if !batch::crc_ok(b) {
            return Some(format!("a CRC mismatch in the batch at offset {}", h.base_offset));
        }
        None
    }

    /// The valid batches (whole, CRC intact) in `[from, len)` of the file, found by trying every
    /// position: what is lost if the file is cut at `from`.
    pub fn batches_after(&self, from: u64, len: u64) -> Dropped {
        let mut dropped = Dropped::default();
        let mut buf = vec![0u8; RECOVERY_CHUNK];
        let mut pos = from;
        while pos + HEADER_SIZE as u64 <= len {
            let Ok(n) = read_full(&self.file, &mut buf, pos) else { break };
            let mut off = 0;
            while off + HEADER_SIZE <= n {
                let plausible = buf[off + 16] == 2
                    && BatchHeader::parse(&buf[off..n]).is_some_and(|h| {
                        h.size >= HEADER_SIZE && pos + (off + h.size) as u64 <= len && h.last_offset_delta >= 0
                    });
                let h = BatchHeader::parse(&buf[off..n]).filter(|_| plausible);
                let whole = h.and_then(|h| {
                    if off + h.size <= n {
                        Some(batch::crc_ok(&buf[off..off + h.size]))
                    } else {
                        self.read_at(pos + off as u64, h.size).ok().map(|b| batch::crc_ok(&b))
                    }
                });
                match (h, whole) {
                    (Some(h), Some(true)) => {
                        dropped.batches += 1;
                        dropped.records += h.record_count.max(0) as u64;
                        let (first, _) = dropped.range.unwrap_or((h.base_offset, 0));
                        dropped.range = Some((first, h.last_offset()));
                        off += h.size;
                    }
                    _ => off += 1,
                }
            }
            if off == 0 {
                break;
            }
            pos += off as u64;
        }
        dropped
    }

    /// Cuts the file at `position` (the start of [`Damage`]) and fsyncs it.
    pub fn cut(&self, position: u64) -> io::Result<()> {
        self.file.set_len(position)?;
        self.file.sync_all()
    }

    /// Appends already-validated, patched batches (`batches` gives each batch's header and its
    /// start in `buf`) and publishes them to readers.
    pub fn append(&self, buf: &[u8], batches: &[(usize, BatchHeader)], interval: usize, now_ms: i64) -> io::Result<()> {
        let pos = self.size();
        if let Err(e) = self.file.write_all_at(buf, pos) {
            let _ = self.file.set_len(pos);
            return Err(e);
        }
        let mut st = self.lock();
        for (start, h) in batches {
            st.on_batch(self.base_offset, (pos + *start as u64) as u32, h, interval);
        }
        st.last_modified_ms = now_ms;
        self.max_ts.store(st.max_ts, Ordering::Release);
        drop(st);
        let last = batches.last().expect("non-empty append").1.last_offset();
        self.size.store(pos + buf.len() as u64, Ordering::Release);
        self.next_offset.store(last + 1, Ordering::Release);
        Ok(())
    }

    /// Number of (offset index, time index) entries.
    pub fn index_entries(&self) -> (usize, usize) {
        let st = self.lock();
        (st.index.len(), st.time_index.len())
    }

    /// Whether the indexes can take no more entries under `segment.index.bytes`.
    pub fn index_full(&self, index_bytes: usize) -> bool {
        let st = self.lock();
        st.index.len() >= index_bytes / OFFSET_ENTRY || st.time_index.len() >= index_bytes / TIME_ENTRY
    }

    /// Writes index entries not yet on disk. `final_entry` adds the closing time-index entry
    /// Kafka writes when a segment becomes inactive or the log is closed.
    pub fn persist_indexes(&self, sync: bool, final_entry: bool) -> io::Result<()> {
        self.persist_indexes_to(&self.index_path, &self.time_path, sync, final_entry)
    }

    /// [`Segment::persist_indexes`] to other file names (the cleaner's `.cleaned` files).
    pub fn persist_indexes_to(&self, index: &Path, time: &Path, sync: bool, final_entry: bool) -> io::Result<()> {
        let mut st = self.lock();
        if final_entry && st.max_ts >= 0 {
            let (ts, rel) = (st.max_ts, (st.offset_of_max_ts - self.base_offset) as u32);
            st.time_index.maybe_push(ts, rel);
        }
        st.index.persist(index, sync)?;
        st.time_index.persist(time, sync)
    }

    /// Removes every batch at or after the one containing `offset`; returns the new next offset.
    pub fn truncate_to(&self, offset: i64, interval: usize, gaps: bool) -> io::Result<i64> {
        let (pos, h) = match self.locate(offset, self.size(), gaps)? {
            Located::At(pos, h) => (pos, h),
            Located::NotHere => return Ok(self.next_offset()),
            Located::Damaged(d) => return Err(io::Error::other(d.to_string())),
        };
        self.size.store(pos, Ordering::Release);
        self.file.set_len(pos)?;
        let mut st = self.lock();
        st.index.truncate_to_position(pos as u32);
        st.time_index.truncate_to_offset((h.base_offset - self.base_offset) as u32);
        let tail = st.index.last().map_or(0, |e| e.1 as u64);
        if !self.rebuild_tail_state(&mut st, tail, pos, gaps)? {
            drop(st);
            if let Some(d) = self.recover(interval, gaps)? {
                return Err(io::Error::other(d.to_string()));
            }
        }
        Ok(self.next_offset())
    }

    pub fn delete_files(&self) -> io::Result<()> {
        delete_files(self.log_path.parent().expect("segment in a dir"), self.base_offset)
    }

    /// Reads up to `len` bytes at `pos`, fewer at end of file.
    pub fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        // pread straight into uninitialised capacity: zero-filling first cost ~6% of fetch CPU.
        let mut buf = Vec::with_capacity(len);
        while buf.len() < len {
            let offset = libc::off_t::try_from(pos + buf.len() as u64).map_err(io::Error::other)?;
            let spare = buf.spare_capacity_mut();
            // SAFETY: pread writes at most `spare.len()` bytes into the spare capacity, and
            // `set_len` below covers only the bytes it reported as written.
            let n = unsafe { libc::pread(self.file.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len(), offset) };
            match n {
                0 => break,
                n if n > 0 => unsafe { buf.set_len(buf.len() + n as usize) },
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
        Ok(buf)
    }

    fn read_header(&self, pos: u64) -> io::Result<Option<BatchHeader>> {
        let mut b = [0u8; HEADER_SIZE];
        let n = read_full(&self.file, &mut b, pos)?;
        Ok(BatchHeader::parse(&b[..n]))
    }

    /// Walks batch headers in `[from, end)` with buffered reads; `f(position, header)` returns
    /// false to stop. Stops silently at a header that is incomplete before `end`.
    pub fn scan_headers(&self, from: u64, end: u64, mut f: impl FnMut(u64, &BatchHeader) -> bool) -> io::Result<()> {
        let mut buf = vec![0u8; SCAN_CHUNK];
        let mut pos = from;
        while pos + HEADER_SIZE as u64 <= end {
            let want = (end - pos).min(buf.len() as u64) as usize;
            let n = read_full(&self.file, &mut buf[..want], pos)?;
            let mut off = 0;
            while let Some(h) = BatchHeader::parse(&buf[off..n]) {
                if h.size < HEADER_SIZE || pos + (off + h.size) as u64 > end || !f(pos + off as u64, &h) {
                    return Ok(());
                }
                off += h.size;
                if off >= n {
                    break;
                }
            }
            if off == 0 {
                return Ok(());
            }
            pos += off as u64;
        }
        Ok(())
    }

    /// Position and header of the first batch below `end` whose last offset is >= `offset`.
    /// Never skips: the index entry used is checked against the batch it points to (an entry that
    /// does not match is reported and the segment is walked from its start instead), every
    /// header on the way must follow the one before it (one offset apart unless `gaps`), and a
    /// segment that should hold `offset` but ends first is damaged.
    pub fn locate(&self, offset: i64, end: u64, gaps: bool) -> io::Result<Located> {
        let rel = (offset - self.base_offset).clamp(0, u32::MAX as i64) as u32;
        let entry = if self.index_trusted.load(Ordering::Acquire) { self.lock().index.lookup(rel) } else { None };
        let mut start = (0, self.base_offset);
        if let Some((entry_rel, entry_pos)) = entry {
            let expected_last = self.base_offset + entry_rel as i64;
            let h = self.read_header(entry_pos as u64)?;
            match h {
                Some(h) if h.magic == 2 && h.size >= HEADER_SIZE && h.last_offset() == expected_last => {
                    start = (entry_pos as u64, i64::MIN);
                }
                _ => {
                    self.index_trusted.store(false, Ordering::Release);
                    tracing::error!(
                        index = %self.index_path.display(),
                        entry_offset = expected_last,
                        entry_position = entry_pos,
                        found = ?h.map(|h| (h.base_offset, h.last_offset())),
                        "index entry does not point at its batch; walking the segment from its start until it is rebuilt"
                    );
                }
            }
        }
        let (from, first_base) = start;
        let mut found = None;
        let damage = self.walk_checked(from, end, first_base, gaps, |pos, h| {
            if h.last_offset() >= offset {
                found = Some((pos, *h));
                return false;
            }
            true
        })?;
        if let Some(damage) = damage {
            return Ok(Located::Damaged(damage));
        }
        match found {
            Some((pos, h)) => Ok(Located::At(pos, h)),
            None if offset >= self.base_offset && offset < self.next_offset() => Ok(Located::Damaged(Damage {
                path: self.log_path.clone(),
                position: end,
                file_len: self.file.metadata().map_or(0, |m| m.len()),
                next_offset: self.next_offset(),
                detail: format!("the batches end before offset {offset}, which the segment holds"),
            })),
            None => Ok(Located::NotHere),
        }
    }

    /// Walks the batch headers in `[from, end)` checking that they are the log's: whole, within
    /// `end`, magic 2, and each starting right after the one before (`first_base` for the first,
    /// `i64::MIN` if unknown; with `gaps`, anywhere after). `f(position, header)` returns false to
    /// stop. A header that breaks the chain, or bytes missing below `end` (the file was cut
    /// short under the broker), is returned as [`Damage`].
    fn walk_checked(
        &self,
        from: u64,
        end: u64,
        first_base: i64,
        gaps: bool,
        mut f: impl FnMut(u64, &BatchHeader) -> bool,
    ) -> io::Result<Option<Damage>> {
        let mut buf = vec![0u8; SCAN_CHUNK];
        let (mut pos, mut next) = (from, first_base);
        let damaged = |pos: u64, next: i64, detail: String| {
            let file_len = self.file.metadata().map_or(0, |m| m.len());
            Ok(Some(Damage { path: self.log_path.clone(), position: pos, file_len, next_offset: next, detail }))
        };
        while pos < end {
            let want = (end - pos).min(buf.len() as u64) as usize;
            let n = read_full(&self.file, &mut buf[..want], pos)?;
            // Fewer bytes than asked: the file is shorter than what the log committed to it.
            let cut_short = |at: u64| format!("the file ends at byte {at}, before its committed size {end}");
            let mut off = 0;
            while off < n || (n < want && off == n) {
                let at = pos + off as u64;
                let Some(h) = BatchHeader::parse(&buf[off..n]) else {
                    if n < want {
                        return damaged(at, next, cut_short(pos + n as u64));
                    }
                    if at + HEADER_SIZE as u64 <= end && off > 0 {
                        break; // the header continues in the next chunk
                    }
                    return damaged(at, next, "an incomplete or invalid batch header".into());
                };
                if n < want && off + h.size > n && at + (h.size as u64) <= end {
                    return damaged(at, next, cut_short(pos + n as u64));
                }
                let problem = if h.magic != 2 {
                    Some(format!("record batch magic {}", h.magic))
                } else if h.size < HEADER_SIZE || at + h.size as u64 > end {
                    Some(format!("a batch length of {} bytes, past the committed end {end}", h.size))
                } else if next != i64::MIN && (h.base_offset < next || (!gaps && h.base_offset != next)) {
                    Some(format!("a batch at offset {} where offset {next} was expected", h.base_offset))
                } else if h.last_offset_delta < 0 {
                    Some(format!("a batch header with lastOffsetDelta {}", h.last_offset_delta))
                } else {
                    None
                };
                if let Some(detail) = problem {
                    return damaged(at, next, detail);
                }
                if !f(at, &h) {
                    return Ok(None);
                }
                next = h.last_offset() + 1;
                off += h.size;
            }
            pos += off as u64;
        }
        Ok(None)
    }

    /// ListOffsets by timestamp within this segment: the first record with offset >=
    /// `min_offset` and timestamp >= `target`.
    pub fn find_by_timestamp(&self, target: i64, min_offset: i64) -> io::Result<Option<(i64, i64)>> {
        if self.max_timestamp() < target {
            return Ok(None);
        }
        let end = self.size();
        let start = {
            let st = self.lock();
            let from_time = st.time_index.lookup_before(target).map(|e| e.1);
            let from_start = (min_offset - self.base_offset).clamp(0, u32::MAX as i64) as u32;
            let rel = from_time.unwrap_or(0).max(from_start);
            st.index.lookup(rel).map_or(0, |e| e.1 as u64)
        };
        let mut from = start;
        loop {
            let mut hit = None;
            self.scan_headers(from, end, |pos, h| {
                if h.max_timestamp >= target && h.last_offset() >= min_offset {
                    hit = Some((pos, *h));
                    return false;
                }
                true
            })?;
            let Some((pos, h)) = hit else { return Ok(None) };
            let bytes = self.read_at(pos, h.size)?;
            if let Some(found) = batch::find_record_by_timestamp(&bytes, &h, min_offset, target) {
                return Ok(Some(found));
            }
            // A header claiming a timestamp no record has: keep looking after it.
            from = pos + h.size as u64;
        }
    }
}

impl SegState {
    fn on_batch(&mut self, base_offset: i64, pos: u32, h: &BatchHeader, interval: usize) {
        if h.max_timestamp > self.max_ts {
            self.max_ts = h.max_timestamp;
            self.offset_of_max_ts = h.last_offset();
        }
        if self.first_batch_ts.is_none() {
            self.first_batch_ts = Some(h.max_timestamp);
        }
        if self.bytes_since_index > interval {
            let rel = (h.last_offset() - base_offset) as u32;
            self.index.push(rel, pos);
            let (ts, off) = (self.max_ts, (self.offset_of_max_ts - base_offset) as u32);
            self.time_index.maybe_push(ts, off);
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += h.size;
    }
}

/// Removes a segment's log and index files, and any cleaner copies of them (`.cleaned`, `.swap`).
pub(crate) fn delete_files(dir: &Path, base_offset: i64) -> io::Result<()> {
    const EXTS: [&str; 9] = [
        "log",
        "index",
        "timeindex",
        "log.cleaned",
        "index.cleaned",
        "timeindex.cleaned",
        "log.swap",
        "index.swap",
        "timeindex.swap",
    ];
    for ext in EXTS {
        match std::fs::remove_file(file_name(dir, base_offset, ext)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// `read_at` until `buf` is full or end of file; returns the bytes read.
pub(crate) fn read_full(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], pos + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
