mod common;

use common::*;
use kafka_protocol::records::Compression;
use tern_storage::{Log, LogConfig, StorageError};

fn files(dir: &std::path::Path, ext: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(ext))
        .collect();
    v.sort();
    v
}

#[test]
fn rolls_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let one = batch(2, 100).len() as u64;
    let config = LogConfig { segment_bytes: one * 3, ..small_config() };
    let log = Log::open(dir.path(), config, 0).unwrap();
    for _ in 0..7 {
        log.append_committed(&batch(2, 100), 0, 0).unwrap();
    }
    assert_eq!(log.segment_base_offsets(), vec![0, 6, 12]);
    assert_eq!(
        files(dir.path(), ".log"),
        vec!["00000000000000000000.log", "00000000000000000006.log", "00000000000000000012.log"]
    );
    assert_eq!(files(dir.path(), ".timeindex").len(), 3);
    assert_eq!(read_all(&log, 0).len(), 14);
    assert_eq!(read_all(&log, 7).first().unwrap().0, 7);
    assert_eq!(log.size_bytes(), one * 7);
}

#[test]
fn rolls_by_time_and_index_size() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_ms: 1000, ..small_config() };
    let log = Log::open(dir.path(), config.clone(), 0).unwrap();
    log.append_committed(&batch(1, 10_000), 0, 0).unwrap();
    log.append_committed(&batch(1, 10_500), 0, 0).unwrap();
    assert_eq!(log.segment_base_offsets(), vec![0]);
    // Rolled by record timestamps (first batch's timestamp + segment.ms).
    log.append_committed(&batch(1, 11_001), 0, 0).unwrap();
    assert_eq!(log.segment_base_offsets(), vec![0, 2]);

    // Without timestamps (-1) the segment's creation time counts.
    let dir2 = tempfile::tempdir().unwrap();
    let log = Log::open(dir2.path(), config, 0).unwrap();
    log.append_committed(&batch(1, -1), 0, 500).unwrap();
    log.append_committed(&batch(1, -1), 0, 1000).unwrap();
    log.append_committed(&batch(1, -1), 0, 1001).unwrap();
    assert_eq!(log.segment_base_offsets(), vec![0, 2]);

    // A full index (room for 2 entries) forces a roll.
    let dir3 = tempfile::tempdir().unwrap();
    let config = LogConfig { index_interval_bytes: 1, segment_index_bytes: 24, ..LogConfig::default() };
    let log = Log::open(dir3.path(), config, 0).unwrap();
    for _ in 0..10 {
        log.append_committed(&batch(1, 5), 0, 0).unwrap();
    }
    assert!(log.segment_base_offsets().len() > 2);
    assert_eq!(read_all(&log, 0).len(), 10);
}

#[test]
fn retention_by_time_keeps_log_end_offset() {
    let dir = tempfile::tempdir().unwrap();
    let one = batch(1, 0).len() as u64;
    let config = LogConfig { segment_bytes: one * 2, retention_ms: 1000, ..small_config() };
    let log = Log::open(dir.path(), config, 0).unwrap();
    for ts in [100, 200, 5000, 5100, 9000] {
        log.append_committed(&batch(1, ts), 0, ts).unwrap();
    }
    assert_eq!(log.segment_base_offsets(), vec![0, 2, 4]);
    assert_eq!(log.enforce_retention(5500).unwrap(), 1);
    assert_eq!(log.log_start_offset(), 2);
    assert!(matches!(log.read(1, 100, i64::MAX, true), Err(StorageError::OffsetOutOfRange { .. })));
    assert_eq!(read_all(&log, 2).len(), 3);
    // Everything expired: the active segment is rolled and the log is empty at LEO 5.
    assert_eq!(log.enforce_retention(100_000).unwrap(), 2);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (5, 5));
    assert_eq!(log.segment_base_offsets(), vec![5]);
    assert_eq!(log.size_bytes(), 0);
    assert!(log.read(5, 100, i64::MAX, true).unwrap().records.is_empty());
    assert_eq!(log.append_committed(&batch(1, 1), 0, 0).unwrap().base_offset, 5);
    log.close().unwrap();
    drop(log);
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (5, 6));
}

#[test]
fn retention_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let one = batch(1, 0).len() as u64;
    let config = LogConfig { segment_bytes: one * 2, retention_bytes: (one * 3) as i64, ..small_config() };
    let log = Log::open(dir.path(), config, 0).unwrap();
    for _ in 0..7 {
        log.append_committed(&batch(1, 0), 0, 0).unwrap();
    }
    assert_eq!(log.segment_base_offsets(), vec![0, 2, 4, 6]);
    // 7 batches, keep >= 3: segments [0,2) and [2,4) go, 3 batches remain.
    assert_eq!(log.enforce_retention(0).unwrap(), 2);
    assert_eq!(log.log_start_offset(), 4);
    assert_eq!(log.size_bytes(), one * 3);
    assert_eq!(log.enforce_retention(0).unwrap(), 0);
    assert_eq!(log.log_end_offset(), 7);
}

#[test]
fn delete_records_before_advances_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let one = batch(2, 0).len() as u64;
    let config = LogConfig { segment_bytes: one * 2, ..small_config() };
    let log = Log::open(dir.path(), config.clone(), 0).unwrap();
    for i in 0..5 {
        log.append_committed(&batch(2, i * 10), 0, 0).unwrap();
    }
    assert_eq!(log.segment_base_offsets(), vec![0, 4, 8]);
    assert!(matches!(log.delete_records_before(11), Err(StorageError::OffsetOutOfRange { .. })));
    assert_eq!(log.delete_records_before(5).unwrap(), 5);
    assert_eq!(log.segment_base_offsets(), vec![4, 8]);
    assert!(matches!(log.read(4, 100, i64::MAX, true), Err(StorageError::OffsetOutOfRange { .. })));
    assert_eq!(read_all(&log, 5).first().unwrap().0, 5);
    // Going backwards is a no-op.
    assert_eq!(log.delete_records_before(2).unwrap(), 5);
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((5, 20)));
    drop(log); // unclean
    let log = Log::open(dir.path(), config, 0).unwrap();
    assert_eq!(log.log_start_offset(), 5);
    // After a crash the HW is the one checkpointed at the last roll (base 8), until the leader
    // commits the rest again.
    assert_eq!(log.high_watermark(), 8);
    assert_eq!(log.delete_records_before(-1).unwrap(), 8);
    log.set_high_watermark(log.log_end_offset());
    assert_eq!(log.delete_records_before(-1).unwrap(), 10);
    assert_eq!(log.segment_base_offsets(), vec![8]);
}

#[test]
fn offset_for_timestamp_and_max_timestamp() {
    for codec in ALL_CODECS {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig { segment_bytes: 300, index_interval_bytes: 1, ..LogConfig::default() };
        let log = Log::open(dir.path(), config, 0).unwrap();
        assert_eq!(log.max_timestamp(), None);
        assert_eq!(log.offset_for_timestamp(0).unwrap(), None);
        // Offsets 0..3: ts 100, 300, 200; offsets 3..5: 250, 400 (max); 5..7: 400, 150.
        log.append_committed(&batch_ts(&[100, 300, 200], codec), 0, 0).unwrap();
        log.append_committed(&batch_ts(&[250, 400], codec), 0, 0).unwrap();
        log.append_committed(&batch_ts(&[400, 150], codec), 0, 0).unwrap();
        for _ in 0..5 {
            log.append_committed(&batch_ts(&[50], codec), 0, 0).unwrap();
        }
        assert!(log.segment_base_offsets().len() > 1, "{codec:?}");
        assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 100)), "{codec:?}");
        assert_eq!(log.offset_for_timestamp(100).unwrap(), Some((0, 100)));
        assert_eq!(log.offset_for_timestamp(101).unwrap(), Some((1, 300)));
        assert_eq!(log.offset_for_timestamp(301).unwrap(), Some((4, 400)));
        assert_eq!(log.offset_for_timestamp(400).unwrap(), Some((4, 400)));
        assert_eq!(log.offset_for_timestamp(401).unwrap(), None);
        assert_eq!(log.max_timestamp(), Some((4, 400)), "{codec:?}");
    }
}

#[test]
fn leader_epochs_checkpointed() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    assert_eq!(log.latest_epoch(), None);
    assert_eq!(log.end_offset_for_epoch(0), None);
    log.append_committed(&batch(2, 0), 0, 0).unwrap();
    log.append_committed(&batch(2, 0), 0, 0).unwrap();
    log.append_committed(&batch(3, 0), 2, 0).unwrap();
    log.append_committed(&batch(1, 0), 5, 0).unwrap();
    assert_eq!(log.latest_epoch(), Some(5));
    assert_eq!(log.end_offset_for_epoch(0), Some((0, 4)));
    assert_eq!(log.end_offset_for_epoch(1), Some((0, 4)));
    assert_eq!(log.end_offset_for_epoch(4), Some((2, 7)));
    assert_eq!(log.end_offset_for_epoch(5), Some((5, 8)));
    assert_eq!(log.end_offset_for_epoch(6), None);
    let text = std::fs::read_to_string(dir.path().join("leader-epoch-checkpoint")).unwrap();
    assert_eq!(text, "0\n3\n0 0\n2 4\n5 7\n");
    // The epoch is stamped into each batch.
    let r = log.read(4, 1 << 20, i64::MAX, false).unwrap();
    assert_eq!(i32::from_be_bytes(r.records[12..16].try_into().unwrap()), 2);

    log.truncate_to(5).unwrap();
    assert_eq!(log.log_end_offset(), 4);
    assert_eq!(log.latest_epoch(), Some(0));
    drop(log);
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    assert_eq!(log.epoch_entries(), vec![(0, 0)]);
    assert_eq!(log.end_offset_for_epoch(0), Some((0, 4)));
}

#[test]
fn truncate_to_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let one = batch(1, 0).len() as u64;
    let config = LogConfig { segment_bytes: one * 2, index_interval_bytes: 1, ..LogConfig::default() };
    let log = Log::open(dir.path(), config, 0).unwrap();
    for i in 0..9 {
        log.append_committed(&batch(1, i * 10), 0, 0).unwrap();
    }
    log.truncate_to(3).unwrap();
    assert_eq!(log.log_end_offset(), 3);
    assert_eq!(log.high_watermark(), 3);
    assert_eq!(log.segment_base_offsets(), vec![0, 2]);
    assert_eq!(log.max_timestamp(), Some((2, 20)));
    assert_eq!(log.append_committed(&batch(1, 0), 0, 0).unwrap().base_offset, 3);
    assert_eq!(read_all(&log, 0).len(), 4);
    log.truncate_to(0).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset(), log.size_bytes()), (0, 0, 0));
    assert_eq!(log.append_committed(&batch(1, 0), 0, 0).unwrap().base_offset, 0);
}

#[test]
fn reopen_after_clean_close() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_bytes: 500, ..small_config() };
    let log = Log::open(dir.path(), config.clone(), 0).unwrap();
    for i in 0..30 {
        log.append_committed(
            &batch_ts(&[i, i + 1], if i % 2 == 0 { Compression::None } else { Compression::Zstd }),
            1,
            0,
        )
        .unwrap();
    }
    let before = read_all(&log, 0);
    let max_ts = log.max_timestamp();
    log.close().unwrap();
    assert!(dir.path().join(".tern-clean-shutdown").exists());
    drop(log);
    let log = Log::open(dir.path(), config, 0).unwrap();
    assert!(!dir.path().join(".tern-clean-shutdown").exists());
    assert_eq!(log.log_end_offset(), 60);
    assert_eq!(read_all(&log, 0), before);
    assert_eq!(log.max_timestamp(), max_ts);
    assert_eq!(log.append_committed(&batch(1, 0), 1, 0).unwrap().base_offset, 60);
    log.delete().unwrap();
    assert!(!dir.path().exists());
}

#[test]
fn flush_messages_and_config_update() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { flush_messages: 1, ..small_config() };
    let log = Log::open(dir.path(), config.clone(), 0).unwrap();
    log.append_committed(&batch(1, 0), 0, 0).unwrap();
    assert_eq!(log.config(), config);
    let updated = LogConfig { flush_messages: i64::MAX, flush_ms: 10, ..config };
    log.update_config(updated.clone());
    assert_eq!(log.config(), updated);
    log.append_committed(&batch(1, 0), 0, 0).unwrap();
    log.maybe_flush(5).unwrap();
    log.maybe_flush(20).unwrap();
    log.flush().unwrap();
    log.set_high_watermark(1);
    assert_eq!(log.high_watermark(), 1);
    log.set_high_watermark(100);
    assert_eq!(log.high_watermark(), 2);
}

#[test]
fn appends_leave_the_high_watermark_to_its_owner_and_it_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    log.append(&batch(3, 0), 0, 0).unwrap();
    assert_eq!((log.log_end_offset(), log.high_watermark()), (3, 0), "an append commits nothing by itself");
    assert!(log.read(0, 1 << 20, log.high_watermark(), true).unwrap().records.is_empty());
    log.set_high_watermark(2);
    log.append(&batch(2, 0), 0, 0).unwrap();
    assert_eq!(log.high_watermark(), 2);
    log.close().unwrap();
    drop(log);
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    assert_eq!((log.log_end_offset(), log.high_watermark()), (5, 2), "checkpointed at close");
    // Never beyond what is in the log: truncation pulls it down, and so does a checkpoint from
    // before a crash cut the tail.
    log.truncate_to(3).unwrap();
    assert_eq!((log.log_end_offset(), log.high_watermark()), (3, 2));
    log.set_high_watermark(100);
    assert_eq!(log.high_watermark(), 3, "clamped to the log end");
    log.truncate_to(0).unwrap();
    assert_eq!(log.high_watermark(), 0, "truncation pulls it down");
}

/// A follower's log copies the leader's batches as they are: same offsets, same leader epochs
/// (so the same epoch cache), and a batch that overlaps what it has is refused whole.
#[test]
fn replicated_batches_keep_the_leaders_offsets_and_epochs() {
    let (ldir, fdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = Log::open(ldir.path(), small_config(), 0).unwrap();
    let follower = Log::open(fdir.path(), small_config(), 0).unwrap();
    for (i, epoch) in [0, 0, 3, 3, 5].into_iter().enumerate() {
        leader.append_committed(&batch(i + 1, 100), epoch, 0).unwrap();
    }
    let all = leader.read(0, 1 << 20, i64::MAX, true).unwrap().records;
    let info = follower.append_replicated(&all, 0).unwrap();
    assert_eq!((info.base_offset, info.last_offset), (0, leader.log_end_offset() - 1));
    assert_eq!(follower.log_end_offset(), leader.log_end_offset());
    assert_eq!(follower.epoch_entries(), leader.epoch_entries());
    follower.set_high_watermark(follower.log_end_offset());
    assert_eq!(read_all(&follower, 0), read_all(&leader, 0));
    // Overlapping the log end: refused, nothing written.
    let again = follower.append_replicated(&all, 0).unwrap_err();
    assert!(matches!(again, StorageError::InvalidRecord(_)), "{again}");
    let mut damaged = all.to_vec();
    let last = damaged.len() - 1;
    damaged[last] ^= 0xff;
    follower.truncate_to(0).unwrap();
    assert!(matches!(follower.append_replicated(&damaged, 0), Err(StorageError::CorruptRecord(_))));
    assert_eq!(follower.log_end_offset(), 0);
}
