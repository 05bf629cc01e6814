//! What the log does when its files are damaged under it, when a write fails, and what of its
//! state survives a restart.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::*;
use kafka_protocol::records::{Compression, Record};
use tern_storage::{Log, LogConfig, OnDamage, StorageError};

fn seg_path(dir: &Path, base: i64, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

/// A log of 30 batches of 10 records (offsets 10i..10i+9), several per segment.
fn filled(dir: &Path, config: &LogConfig) -> Log {
    let log = Log::open(dir, config.clone(), 0).unwrap();
    for i in 0..30 {
        log.append_committed(&batch(10, i), 0, 0).unwrap();
    }
    assert!(log.segment_base_offsets().len() > 3);
    log
}

fn config() -> LogConfig {
    LogConfig { segment_bytes: 1500, index_interval_bytes: 100, ..LogConfig::default() }
}

/// Position of the batch whose base offset is `base` in a segment file.
fn batch_position(path: &Path, base: i64) -> usize {
    let bytes = std::fs::read(path).unwrap();
    let mut pos = 0;
    while pos < bytes.len() {
        if i64::from_be_bytes(bytes[pos..pos + 8].try_into().unwrap()) == base {
            return pos;
        }
        pos += i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().unwrap()) as usize + 12;
    }
    panic!("no batch at {base} in {}", path.display());
}

fn edit(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).unwrap();
    f(&mut bytes);
    // In place, as an operator's editor or a failing disk would: open files see the change.
    std::fs::OpenOptions::new().write(true).open(path).unwrap().set_len(0).unwrap();
    std::fs::write(path, &bytes).unwrap();
}

/// The first offset a read at `offset` returns (reading one batch), or the error.
fn first_offset_read(log: &Log, offset: i64) -> Result<Option<i64>, StorageError> {
    let r = log.read(offset, 1, i64::MAX, true)?;
    Ok(decode(&r.records).into_iter().map(|r| r.0).find(|&o| o >= offset))
}

fn assert_damaged(result: Result<Option<i64>, StorageError>, path: &Path) {
    match result {
        Err(StorageError::Damaged { path: p, .. }) => assert_eq!(p, path),
        other => panic!("expected damage in {}, got {other:?}", path.display()),
    }
}

#[test]
fn a_damaged_batch_header_is_an_error_never_a_skip() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path(), &config());
    let bases = log.segment_base_offsets();
    let sealed = seg_path(dir.path(), bases[1], "log");
    let victim = bases[1] + 10;
    // The batch at `victim` now claims to hold 3 records, not 10 (lastOffsetDelta is outside
    // what a CRC check of the header alone would catch: the fix-up keeps the CRC valid).
    edit(&sealed, |b| {
        let at = batch_position(&sealed, victim);
        b[at + 23..at + 27].copy_from_slice(&2i32.to_be_bytes());
        let size = i32::from_be_bytes(b[at + 8..at + 12].try_into().unwrap()) as usize + 12;
        fix_crc(&mut b[at..at + size]);
    });
    for offset in victim + 3..victim + 10 {
        assert_damaged(first_offset_read(&log, offset), &sealed);
    }
    // What comes before the damage, and the segments after it, read as ever.
    assert_eq!(first_offset_read(&log, victim - 1).unwrap(), Some(victim - 1));
    assert_eq!(first_offset_read(&log, bases[2]).unwrap(), Some(bases[2]));

    // A length field pointing into the middle of the next batch.
    let victim = bases[2] + 10;
    let sealed = seg_path(dir.path(), bases[2], "log");
    edit(&sealed, |b| {
        let at = batch_position(&sealed, victim);
        b[at + 8..at + 12].copy_from_slice(&200i32.to_be_bytes());
    });
    assert_damaged(first_offset_read(&log, victim + 1), &sealed);
    assert_damaged(first_offset_read(&log, victim + 15), &sealed);
}

#[test]
fn an_index_entry_that_points_elsewhere_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let config = config();
    let log = filled(dir.path(), &config);
    let before: Vec<_> = (0..300).map(|o| first_offset_read(&log, o).unwrap()).collect();
    let bases = log.segment_base_offsets();
    log.close().unwrap();
    drop(log);
    // Shift the first entry of a sealed segment's index by one batch (it still looks sane).
    let index = seg_path(dir.path(), bases[1], "index");
    let batch_len = batch(10, 0).len() as u32;
    edit(&index, |b| {
        assert!(b.len() >= 16, "the test needs two entries");
        let pos = u32::from_be_bytes(b[4..8].try_into().unwrap());
        b[4..8].copy_from_slice(&(pos + batch_len).to_be_bytes());
    });
    let log = Log::open(dir.path(), config, 0).unwrap();
    let after: Vec<_> = (0..300).map(|o| first_offset_read(&log, o).unwrap()).collect();
    assert_eq!(after, before);
}

#[test]
fn a_sealed_segment_cut_short_is_an_error_while_running_and_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let config = config();
    let log = filled(dir.path(), &config);
    let bases = log.segment_base_offsets();
    let sealed = seg_path(dir.path(), bases[1], "log");
    let len = std::fs::metadata(&sealed).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&sealed).unwrap().set_len(len / 2 + 7).unwrap();
    assert_eq!(first_offset_read(&log, bases[1] + 1).unwrap(), Some(bases[1] + 1), "in the half that is left");
    assert_damaged(first_offset_read(&log, bases[2] - 1), &sealed);
    assert_eq!(first_offset_read(&log, bases[2]).unwrap(), Some(bases[2]));
    log.close().unwrap();
    drop(log);
    match Log::open(dir.path(), config.clone(), 0) {
        Err(StorageError::Damaged { path, .. }) => assert_eq!(path, sealed),
        other => panic!("expected a refusal, got {:?}", other.map(|l| l.log_end_offset())),
    }
    assert!(seg_path(dir.path(), bases[2], "log").exists(), "a refusal deletes nothing");
    // The operator's explicit repair keeps every whole batch before the cut.
    let log = Log::open_with(dir.path(), config, 0, OnDamage::Truncate).unwrap();
    let end = log.log_end_offset();
    assert!(end > bases[1] && end < bases[2], "{end}");
    assert_eq!(read_all(&log, 0).len() as i64, end);
    assert!(!seg_path(dir.path(), bases[2], "log").exists());
}

#[test]
fn a_failed_append_leaves_nothing_readable() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    log.append_committed(&batch(5, 0), 0, 0).unwrap();
    let size = log.size_bytes();
    // The next append starts leader epoch 1, whose checkpoint cannot be written.
    let blocker = dir.path().join("leader-epoch-checkpoint.tmp");
    std::fs::create_dir(&blocker).unwrap();
    match log.append_committed(&batch(5, 0), 1, 0) {
        Err(StorageError::Io { path, .. }) => assert_eq!(path, dir.path().join("leader-epoch-checkpoint")),
        other => panic!("expected an i/o error, got {other:?}"),
    }
    assert_eq!((log.log_end_offset(), log.size_bytes()), (5, size));
    assert!(log.read(5, 1 << 20, i64::MAX, true).unwrap().records.is_empty());
    std::fs::remove_dir(&blocker).unwrap();
    assert_eq!(log.append_committed(&batch(5, 0), 1, 0).unwrap().base_offset, 5);
    assert_eq!(read_all(&log, 0).len(), 10);
}

/// One batch of `n` records from an idempotent producer.
fn idempotent(producer_id: i64, first_sequence: i32, n: usize) -> Vec<u8> {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            producer_id,
            producer_epoch: 0,
            sequence: first_sequence + i as i32,
            ..record(i, 1000, Some(Bytes::from("k")), Some(Bytes::from(format!("v{i}"))))
        })
        .collect();
    encode(&records, Compression::None)
}

#[test]
fn a_retry_of_a_batch_in_a_rolled_segment_is_recognised_after_a_restart() {
    for (clean, keep_snapshots) in [(true, true), (false, true), (false, false)] {
        let dir = tempfile::tempdir().unwrap();
        // One batch per segment, so every batch below the last is in a rolled segment.
        let config = LogConfig { segment_bytes: idempotent(9, 0, 3).len() as u64 + 1, ..small_config() };
        let log = Log::open(dir.path(), config.clone(), 0).unwrap();
        let mut offsets = Vec::new();
        for seq in 0..4 {
            offsets.push(log.append_committed(&idempotent(9, seq * 3, 3), 0, 0).unwrap().base_offset);
        }
        assert_eq!(log.segment_base_offsets().len(), 4);
        if clean {
            log.close().unwrap();
        }
        drop(log);
        if !keep_snapshots {
            for entry in std::fs::read_dir(dir.path()).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "snapshot") {
                    std::fs::remove_file(path).unwrap();
                }
            }
        }
        let log = Log::open(dir.path(), config, 0).unwrap();
        for (seq, &base) in offsets.iter().enumerate() {
            let info = log.append_committed(&idempotent(9, seq as i32 * 3, 3), 0, 0).unwrap();
            assert_eq!(info.base_offset, base, "clean={clean} snapshots={keep_snapshots}: retry of sequence {seq}");
        }
        assert_eq!(log.log_end_offset(), 12, "nothing written twice");
        assert!(matches!(log.append_committed(&idempotent(9, 20, 1), 0, 0), Err(StorageError::OutOfOrderSequence(_))));
        assert_eq!(log.append_committed(&idempotent(9, 12, 1), 0, 0).unwrap().base_offset, 12);
        assert_eq!(log.max_producer_id(), 9);
    }
}

#[test]
fn idle_producers_expire() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { producer_id_expiration_ms: 60_000, ..small_config() };
    let log = Log::open(dir.path(), config, 0).unwrap();
    log.append_committed(&idempotent(4, 0, 2), 0, 1_000).unwrap();
    assert!(matches!(log.append_committed(&idempotent(4, 7, 1), 0, 1_000), Err(StorageError::OutOfOrderSequence(_))));
    // The expiry check runs every 10 minutes; by then producer 4 has been idle long enough.
    log.maybe_flush(700_000).unwrap();
    assert_eq!(log.append_committed(&idempotent(4, 7, 1), 0, 700_000).unwrap().base_offset, 2, "forgotten: accepted");
}

#[test]
fn deleted_segments_linger_for_file_delete_delay_ms() {
    for delay in [0, 60_000] {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig { file_delete_delay_ms: delay, retention_ms: 1000, ..config() };
        let log = filled(dir.path(), &config);
        let first = log.segment_base_offsets()[0];
        let now = tern_now();
        assert!(log.enforce_retention(now).unwrap() > 0);
        assert!(!seg_path(dir.path(), first, "log").exists());
        let lingering = seg_path(dir.path(), first, "log.deleted");
        assert_eq!(lingering.exists(), delay > 0);
        log.maybe_flush(now + delay + 1_000).unwrap();
        assert!(!lingering.exists());
    }
}

fn tern_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[test]
fn preallocated_segments_reserve_disk_but_show_only_their_data() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { preallocate: true, segment_bytes: 1 << 20, ..small_config() };
    let log = Log::open(dir.path(), config.clone(), 0).unwrap();
    log.append_committed(&batch(3, 0), 0, 0).unwrap();
    let meta = std::fs::metadata(seg_path(dir.path(), 0, "log")).unwrap();
    assert_eq!(meta.len(), log.size_bytes());
    assert!(meta.blocks() * 512 >= 1 << 20, "{} blocks", meta.blocks());
    log.close().unwrap();
    drop(log);
    let log = Log::open(dir.path(), config, 0).unwrap();
    assert_eq!(read_all(&log, 0).len(), 3);
}
