//! Opening a log: finding its segments, recovering from a crash, and refusing what a crash
//! cannot explain.
//!
//! A crash (`kill -9`, power loss) can leave exactly one kind of damage: a torn tail in the last
//! segment, written after the last fsync. That tail is cut, and what was cut is logged at ERROR.
//! Anything else (a damaged batch in a sealed segment, a damaged segment after a clean shutdown,
//! segments that overlap or leave offsets missing, a checkpoint that contradicts the segments) is
//! the work of something other than the broker: the open fails with [`StorageError::Damaged`]
//! naming the file, and nothing is changed, so an operator can look before anything is lost. An
//! explicit repair ([`OnDamage::Truncate`]) cuts the log at the damage, logging what it drops.

use std::path::Path;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex, RwLock};

use crate::cleaner::{self, CleanerState};
use crate::epoch::EpochCache;
use crate::log::{read_offset_file, sync_dir, Writer, CLEAN_SHUTDOWN, HIGH_WATERMARK, LOG_START, RECOVERY_POINT};
use crate::producers::{self, ProducerStates};
use crate::segment::{self, Damage, Segment};
use crate::{io_err, Log, LogConfig, Result, StorageError};

/// What opening a log does with damage a crash cannot explain (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDamage {
    /// Fail with [`StorageError::Damaged`] naming the file; change nothing.
    Refuse,
    /// Cut the log at the first damage, dropping everything after it, each drop logged at
    /// ERROR. For an operator's explicit repair.
    Truncate,
}

impl Log {
    /// Opens (creating if absent) the log in `dir`, cutting a torn tail after a crash and
    /// refusing any other damage (see the module docs).
    pub fn open(dir: &Path, config: LogConfig, now_ms: i64) -> Result<Log> {
        Log::open_with(dir, config, now_ms, OnDamage::Refuse)
    }

    /// [`Log::open`], choosing what to do with damage.
    pub fn open_with(dir: &Path, config: LogConfig, now_ms: i64, on_damage: OnDamage) -> Result<Log> {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent).map_err(|e| io_err(parent, e))?;
            }
        }
        let marker = dir.join(CLEAN_SHUTDOWN);
        let clean = marker.exists();
        // Finish or roll back a cleaner swap interrupted by a crash, before segments are listed.
        let swapped = cleaner::recover_swaps(dir).map_err(|e| io_err(dir, e))?;
        let bases = list_segments(dir)?;
        let start_ckpt = read_checkpoint(dir, LOG_START)?;
        let hw_ckpt = read_checkpoint(dir, HIGH_WATERMARK)?;
        // Without a (readable) recovery point everything is rescanned.
        let recovery_point = if clean { i64::MAX } else { read_offset_file(&dir.join(RECOVERY_POINT)).unwrap_or(0) };
        let first_dirty_ckpt = read_offset_file(&dir.join(cleaner::CHECKPOINT));
        // Offsets only skip where the cleaner may have been.
        let may_gap = |offset: i64| config.cleanup_policy.compact || first_dirty_ckpt.is_some_and(|d| offset < d);
        let interval = config.index_interval_bytes;
        let refuse = |damage: &Damage| -> Result<()> {
            match on_damage {
                OnDamage::Refuse => Err(damaged(damage)),
                OnDamage::Truncate => Ok(()),
            }
        };

        let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(bases.len().max(1));
        let mut tail_cut = false;
        for (i, &base) in bases.iter().enumerate() {
            let last = i + 1 == bases.len();
            let path = segment::file_name(dir, base, "log");
            if let Some(prev) = segments.last() {
                let expected = prev.next_offset();
                if base < expected || (base > expected && !may_gap(expected)) {
                    let what =
                        if base < expected { "overlaps the segment before it" } else { "leaves offsets missing" };
                    let damage = Damage {
                        path: path.clone(),
                        position: 0,
                        file_len: std::fs::metadata(&path).map_or(0, |m| m.len()),
                        next_offset: expected,
                        detail: format!(
                            "the segment starts at offset {base} but {} ends at offset {expected}: it {what}",
                            prev.log_path.display()
                        ),
                    };
                    refuse(&damage)?;
                    drop_segments(dir, &bases[i..], &damage)?;
                    break;
                }
            }
            let recover = (!clean && (last || bases[i + 1] > recovery_point)) || swapped.contains(&base);
            let (seg, damage) =
                Segment::open(dir, base, now_ms, interval, recover, may_gap(base)).map_err(|e| io_err(&path, e))?;
            let Some(damage) = damage else {
                segments.push(Arc::new(seg));
                continue;
            };
            // After a crash, the last segment may end in bytes that never reached the disk whole.
            let torn_tail = !clean && last;
            if !torn_tail {
                refuse(&damage)?;
            }
            report_cut(&seg, &damage);
            seg.cut(damage.position).map_err(|e| io_err(&path, e))?;
            tail_cut = true;
            segments.push(Arc::new(seg));
            if !last {
                let after = Damage { detail: format!("the segment after damaged {}", path.display()), ..damage };
                drop_segments(dir, &bases[i + 1..], &after)?;
            }
            break;
        }
        if segments.is_empty() {
            let base = start_ckpt.unwrap_or(0);
            let seg = Segment::create_for_log(dir, base, now_ms, &config).map_err(|e| io_err(dir, e))?;
            segments.push(Arc::new(seg));
        }
        let leo = segments.last().expect("at least one segment").next_offset();
        let mut log_start = start_ckpt.unwrap_or(0).max(segments[0].base_offset);
        if log_start > leo {
            let damage = Damage {
                path: dir.join(LOG_START),
                position: 0,
                file_len: 0,
                next_offset: leo,
                detail: format!("log start offset {log_start} is beyond the log end offset {leo}"),
            };
            if !tail_cut {
                refuse(&damage)?;
                tracing::error!(%damage, "ignoring the log start offset checkpoint; the log keeps its data");
                log_start = segments[0].base_offset;
            } else {
                // The crash took records that DeleteRecords had already made invisible: the log
                // restarts empty at its log start, so no offset is ever used twice.
                tracing::error!(%damage, "the log restarts empty at its log start offset");
                let fresh = Segment::create_for_log(dir, log_start, now_ms, &config).map_err(|e| io_err(dir, e))?;
                for seg in segments.drain(..).filter(|s| s.base_offset != log_start) {
                    seg.delete_files().map_err(|e| io_err(&seg.log_path, e))?;
                }
                segments.push(Arc::new(fresh));
            }
        }
        let leo = segments.last().expect("at least one segment").next_offset();
        // Segments wholly below the log start: a DeleteRecords or retention that was checkpointed
        // but not finished before a crash.
        while segments.len() > 1 && segments[1].base_offset <= log_start {
            let seg = segments.remove(0);
            tracing::warn!(segment = %seg.log_path.display(), log_start, "deleting a segment below the log start offset");
            seg.delete_files().map_err(|e| io_err(&seg.log_path, e))?;
        }
        let first_dirty = first_dirty_ckpt.unwrap_or(log_start).min(leo);
        // Checkpoint rewrites here are best effort: the broker must start on a full disk.
        let mut epochs = EpochCache::load(dir);
        if let Err(e) = epochs.truncate_from_end(leo).and_then(|_| epochs.truncate_from_start(log_start)) {
            tracing::warn!(dir = %dir.display(), error = %e, "could not rewrite the leader epoch checkpoint");
        }
        if clean {
            std::fs::remove_file(&marker).map_err(|e| io_err(&marker, e))?;
        }
        sync_dir(dir).map_err(|e| io_err(dir, e))?;
        let producers = load_producers(dir, &segments, log_start, leo, &config, now_ms)?;
        let max_producer_id = producers.max_producer_id();
        Ok(Log {
            dir: dir.to_path_buf(),
            writer: Mutex::new(Writer::new(now_ms, producers)),
            segments: RwLock::new(Arc::new(segments)),
            config: RwLock::new(config),
            epochs: Mutex::new(epochs),
            log_start: AtomicI64::new(log_start),
            leo: AtomicI64::new(leo),
            // As checkpointed (none: nothing is known committed beyond the log start), never
            // beyond what survived recovery.
            hw: AtomicI64::new(hw_ckpt.unwrap_or(log_start).clamp(log_start, leo)),
            first_dirty: AtomicI64::new(first_dirty),
            cleaner: Mutex::new(CleanerState::load(dir)),
            offline: RwLock::new(None),
            deleted: Default::default(),
            max_producer_id: AtomicI64::new(max_producer_id),
            refusals: Default::default(),
        })
    }
}

fn damaged(d: &Damage) -> StorageError {
    StorageError::Damaged { path: d.path.clone(), position: d.position, detail: d.detail.clone() }
}

/// Base offsets of the segment files in `dir`, ascending. Removes what the broker left behind
/// by design: `.tmp` files of interrupted atomic writes and `.deleted` files awaiting
/// `file.delete.delay.ms`.
fn list_segments(dir: &Path) -> Result<Vec<i64>> {
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
        } else if name.ends_with(".tmp") || name.ends_with(".deleted") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// An offset checkpoint: `None` if absent, an error naming the file if it cannot be read or
/// holds anything but one offset.
fn read_checkpoint(dir: &Path, name: &str) -> Result<Option<i64>> {
    let path = dir.join(name);
    let text = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path, e)),
    };
    match std::str::from_utf8(&text).ok().and_then(|t| t.trim().parse::<i64>().ok()).filter(|&o| o >= 0) {
        Some(offset) => Ok(Some(offset)),
        None => Err(StorageError::Damaged {
            path,
            position: 0,
            detail: format!("not an offset checkpoint ({} bytes)", text.len()),
        }),
    }
}

/// Logs at ERROR what cutting a segment at its damage drops.
fn report_cut(seg: &Segment, damage: &Damage) {
    let dropped = seg.batches_after(damage.position, damage.file_len);
    tracing::error!(
        segment = %seg.log_path.display(),
        position = damage.position,
        bytes = damage.file_len - damage.position,
        found = %damage.detail,
        log_end_offset = damage.next_offset,
        valid_batches_dropped = dropped.batches,
        offsets_dropped = %dropped.offsets(),
        records_dropped = dropped.records,
        "cutting a damaged segment: everything from this position on is dropped"
    );
}

/// Deletes whole segments that follow damage (only with [`OnDamage::Truncate`], or after a
/// torn tail the crash left), each logged at ERROR with what it held.
fn drop_segments(dir: &Path, bases: &[i64], cause: &Damage) -> Result<()> {
    for &base in bases {
        let path = segment::file_name(dir, base, "log");
        let len = std::fs::metadata(&path).map_or(0, |m| m.len());
        let held = Segment::open(dir, base, 0, usize::MAX, false, true)
            .map(|(seg, _)| seg.batches_after(0, len))
            .unwrap_or_default();
        tracing::error!(
            segment = %path.display(),
            bytes = len,
            batches = held.batches,
            offsets = %held.offsets(),
            records = held.records,
            cause = %cause,
            "deleting a segment after damage"
        );
        segment::delete_files(dir, base).map_err(|e| io_err(&path, e))?;
    }
    Ok(())
}

/// Producer state as of the log end: the newest readable snapshot at or below it, then the
/// batches after it (or the whole log without one). Snapshots beyond the log end (left by a
/// truncation or a cut tail) are removed; so are expired producers.
pub(crate) fn load_producers(
    dir: &Path,
    segments: &[Arc<Segment>],
    log_start: i64,
    leo: i64,
    config: &LogConfig,
    now_ms: i64,
) -> Result<ProducerStates> {
    let max = config.max_producer_entries;
    let mut states = ProducerStates::with_max_entries(max);
    let mut from = log_start;
    let snapshots = producers::list_snapshots(dir).map_err(|e| io_err(dir, e))?;
    for &offset in snapshots.iter().rev() {
        let path = producers::snapshot_path(dir, offset);
        if offset > leo {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        if offset < log_start {
            break;
        }
        let loaded = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| ProducerStates::decode_snapshot(&bytes, max));
        match loaded {
            Ok(s) => {
                states = s;
                from = offset;
                break;
            }
            Err(e) => tracing::warn!(snapshot = %path.display(), error = e, "ignoring an unreadable producer snapshot"),
        }
    }
    for seg in segments.iter().filter(|s| s.next_offset() > from) {
        // Batches rebuilt from the log count as written when their segment was last written.
        let written = seg.last_modified_ms();
        seg.scan_headers(0, seg.size(), |_, h| {
            if h.base_offset >= from {
                states.record(h, written);
            }
            true
        })
        .map_err(|e| io_err(&seg.log_path, e))?;
    }
    states.expire(now_ms, config.producer_id_expiration_ms);
    Ok(states)
}
