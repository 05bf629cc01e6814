//! Log compaction: the cleaner's results, triggers, tombstones, codecs, reopening and crashes.
mod common;

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use common::*;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use proptest::prelude::*;
use tern_storage::{CleanStats, CleanerOptions, CleanupPolicy, CrashPoint, Log, LogConfig, OnDamage, StorageError};

/// One appended record: (offset, key, value, timestamp); `None` value is a tombstone.
type Rec = (i64, Option<Bytes>, Option<Bytes>, i64);

fn compact_config() -> LogConfig {
    LogConfig {
        cleanup_policy: CleanupPolicy::COMPACT,
        segment_bytes: 700,
        index_interval_bytes: 64,
        ..LogConfig::default()
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// A batch of (key, value) records, all with timestamp `ts`.
fn kv_batch(entries: &[(Option<&str>, Option<&str>)], ts: i64, codec: Compression) -> Vec<u8> {
    let records: Vec<_> =
        entries.iter().enumerate().map(|(i, (k, v))| record(i, ts + i as i64, k.map(b), v.map(b))).collect();
    encode(&records, codec)
}

/// Appends `entries` as one batch and returns the records as the log now holds them.
fn append(log: &Log, entries: &[(Option<&str>, Option<&str>)], ts: i64, codec: Compression) -> Vec<Rec> {
    let info = log.append_committed(&kv_batch(entries, ts, codec), 0, ts).unwrap();
    entries
        .iter()
        .enumerate()
        .map(|(i, (k, v))| (info.base_offset + i as i64, k.map(b), v.map(b), ts + i as i64))
        .collect()
}

/// Every record readable from the log start, following batches by their last offset (as
/// consumers do, since compaction leaves gaps).
fn read_records(log: &Log) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    while next < log.log_end_offset() {
        let r = log.read(next, 1 << 20, i64::MAX, true).unwrap();
        if r.records.is_empty() {
            break;
        }
        let mut rest = r.records.clone();
        while rest.len() >= 61 {
            let len = i32::from_be_bytes(rest[8..12].try_into().unwrap()) as usize + 12;
            let base = i64::from_be_bytes(rest[..8].try_into().unwrap());
            let last = base + i32::from_be_bytes(rest[23..27].try_into().unwrap()) as i64;
            let mut one = rest.split_to(len);
            assert_eq!(crc32c::crc32c(&one[21..]), u32::from_be_bytes(one[17..21].try_into().unwrap()), "CRC");
            let set = RecordBatchDecoder::decode(&mut one).unwrap();
            for r in set.records {
                assert!(r.offset >= base && r.offset <= last, "record {} outside its batch", r.offset);
                if r.offset >= next {
                    out.push((r.offset, r.key, r.value, r.timestamp));
                }
            }
            next = last + 1;
        }
    }
    out
}

/// What one cleaning of everything below `cleanable_end` leaves, given every record appended
/// (tombstones kept: a first cleaning never removes them).
fn model_clean(appended: &[Rec], cleanable_end: i64) -> Vec<Rec> {
    let mut latest: BTreeMap<&Bytes, i64> = BTreeMap::new();
    for r in appended.iter().filter(|r| r.0 < cleanable_end) {
        latest.insert(r.1.as_ref().expect("keyed"), r.0);
    }
    appended.iter().filter(|r| r.0 >= cleanable_end || latest[r.1.as_ref().unwrap()] == r.0).cloned().collect()
}

fn force() -> CleanerOptions {
    CleanerOptions { force: true, ..CleanerOptions::default() }
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

fn active_file(log: &Log) -> Vec<u8> {
    let base = *log.segment_base_offsets().last().unwrap();
    std::fs::read(log.dir().join(format!("{base:020}.log"))).unwrap()
}

/// 300 records over 17 keys in a scrambled order, every 11th a tombstone, in batches of 1..=3.
fn fill(log: &Log, codec: Compression) -> Vec<Rec> {
    let mut appended = Vec::new();
    let mut i = 0;
    while i < 300 {
        let n = 1 + i % 3;
        let keys: Vec<String> = (i..i + n).map(|j| format!("k{}", ((j * 2_654_435_761usize) >> 7) % 17)).collect();
        let values: Vec<String> = (i..i + n).map(|j| format!("value-{j}")).collect();
        let entries: Vec<_> =
            (0..n).map(|x| (Some(keys[x].as_str()), ((i + x) % 11 != 0).then_some(values[x].as_str()))).collect();
        appended.extend(append(log, &entries, 1000 + i as i64, codec));
        i += n;
    }
    appended
}

#[test]
fn keeps_latest_value_per_key_with_offsets_and_log_end_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), compact_config(), 0).unwrap();
    let appended = fill(&log, Compression::None);
    let segments_before = log.segment_base_offsets();
    assert!(segments_before.len() > 5, "{segments_before:?}");
    let active_base = *segments_before.last().unwrap();
    let (leo, active) = (log.log_end_offset(), active_file(&log));

    let stats = log.clean_with(5000, &force()).unwrap().expect("a pass ran");
    let expected = model_clean(&appended, active_base);
    assert_eq!(read_records(&log), expected);
    assert!(expected.len() < appended.len() / 3);
    assert_eq!(log.log_end_offset(), leo);
    assert_eq!(active_file(&log), active, "the active segment is never touched");
    assert_eq!(*log.segment_base_offsets().last().unwrap(), active_base);
    assert_eq!(log.first_dirty_offset(), active_base);
    assert_eq!((stats.first_dirty_offset, stats.end_offset), (0, active_base));
    let keys: std::collections::BTreeSet<_> = appended.iter().filter(|r| r.0 < active_base).map(|r| &r.1).collect();
    assert_eq!(stats.keys, keys.len());
    assert_eq!(stats.records_removed as usize, appended.len() - expected.len());
    assert!(stats.bytes_written < stats.bytes_read);

    // A read from an offset compacted away starts at the next surviving record.
    let gone = (0..active_base).find(|o| !expected.iter().any(|r| r.0 == *o)).unwrap();
    let r = log.read(gone, 1 << 20, i64::MAX, false).unwrap();
    let first_after = expected.iter().find(|r| r.0 > gone).unwrap().0;
    assert!(decode(&r.records).iter().any(|r| r.0 == first_after));
    // ListOffsets by timestamp finds the first surviving record at or after the time.
    for target in [0, 1000, 1100, 1250, 1299] {
        let want = expected.iter().find(|r| r.3 >= target).map(|r| (r.0, r.3));
        assert_eq!(log.offset_for_timestamp(target).unwrap(), want, "timestamp {target}");
    }

    // Nothing left to do: the dirty section is empty and no tombstone is due. Forcing a pass
    // removes nothing but merges the now small segments (up to segment.bytes).
    assert_eq!(log.clean(5000).unwrap(), None);
    let cleaned_segments = log.segment_base_offsets().len();
    let again = log.clean_with(5000, &force()).unwrap().unwrap();
    assert_eq!(again.records_removed, 0);
    assert!(log.segment_base_offsets().len() < cleaned_segments, "{:?}", log.segment_base_offsets());
    assert_eq!(read_records(&log), expected);
    assert_eq!(active_file(&log), active);
    // Appends carry on at the log end offset.
    let more = append(&log, &[(Some("k1"), Some("after"))], 9000, Compression::None);
    assert_eq!(more[0].0, leo);
}

#[test]
fn reopen_after_cleaning_with_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let config = compact_config();
    let log = Log::open(dir.path(), config.clone(), 0).unwrap();
    let appended = fill(&log, Compression::None);
    log.clean_with(5000, &force()).unwrap().unwrap();
    let after = read_records(&log);
    let (leo, segs) = (log.log_end_offset(), log.segment_base_offsets());
    let times: Vec<_> = (990..1310).step_by(7).map(|t| log.offset_for_timestamp(t).unwrap()).collect();
    let check = |log: &Log| {
        assert_eq!(read_records(log), after);
        assert_eq!(log.log_end_offset(), leo);
        assert_eq!(log.segment_base_offsets(), segs);
        let t: Vec<_> = (990..1310).step_by(7).map(|t| log.offset_for_timestamp(t).unwrap()).collect();
        assert_eq!(t, times);
        assert_eq!(log.end_offset_for_epoch(0), Some((0, leo)));
    };
    // Unclean: every segment is rescanned (no recovery point file matches).
    drop(log);
    std::fs::remove_file(dir.path().join("recovery-point")).ok();
    let log = Log::open(dir.path(), config.clone(), 0).unwrap();
    check(&log);
    assert_eq!(log.first_dirty_offset(), *segs.last().unwrap());
    // Clean shutdown: indexes are trusted.
    log.close().unwrap();
    drop(log);
    let log = Log::open(dir.path(), config.clone(), 0).unwrap();
    check(&log);
    // Indexes deleted: rebuilt from the gapped segments.
    log.close().unwrap();
    drop(log);
    for f in files(dir.path()).iter().filter(|f| f.ends_with("index")) {
        std::fs::remove_file(dir.path().join(f)).unwrap();
    }
    let log = Log::open(dir.path(), config, 0).unwrap();
    check(&log);
    let next = append(&log, &[(Some("k0"), Some("x"))], 9000, Compression::None);
    assert_eq!(next[0].0, leo);
    assert_eq!(appended.len() as i64, leo);
}

#[test]
fn torn_tail_of_a_cleaned_segment_is_still_detected() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_bytes: 1 << 20, segment_ms: 100, ..compact_config() };
    let log = Log::open(dir.path(), config.clone(), 0).unwrap();
    for i in 0..40i64 {
        let k = format!("k{}", i % 5);
        let v = format!("v{i}");
        append(&log, &[(Some(&k), Some(&v)), (Some("z"), Some(&v))], 1000 + 60 * i, Compression::None);
    }
    log.clean_with(1_000_000, &force()).unwrap().unwrap();
    let after = read_records(&log);
    let (first, active) = (log.segment_base_offsets()[0], *log.segment_base_offsets().last().unwrap());
    assert!(active > first);
    drop(log);
    let path = dir.path().join(format!("{first:020}.log"));
    let bytes = std::fs::read(&path).unwrap();
    // The cleaned segment, whose offsets have gaps, with its last batch torn, then with a copy of
    // its last batch appended (valid CRC, but offsets going backwards).
    let last_start = {
        let mut pos = 0;
        let mut last = 0;
        while pos < bytes.len() {
            last = pos;
            pos += i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().unwrap()) as usize + 12;
        }
        last
    };
    let survivors_before_last = |recs: &[Rec]| {
        let last_base = i64::from_be_bytes(bytes[last_start..last_start + 8].try_into().unwrap());
        recs.iter().filter(|r| r.0 < last_base).cloned().collect::<Vec<_>>()
    };
    for damaged in [bytes[..bytes.len() - 1].to_vec(), [&bytes[..], &bytes[last_start..]].concat()] {
        let copy = tempfile::tempdir().unwrap();
        for f in files(dir.path()) {
            std::fs::copy(dir.path().join(&f), copy.path().join(&f)).unwrap();
        }
        std::fs::write(copy.path().join(format!("{first:020}.log")), &damaged).unwrap();
        std::fs::remove_file(copy.path().join("recovery-point")).ok();
        std::fs::remove_file(copy.path().join(".tern-clean-shutdown")).ok();
        // Damage in a segment that is not the last is no crash's doing: the open is refused,
        // naming the file and the position, and nothing is changed.
        let seg_path = copy.path().join(format!("{first:020}.log"));
        match Log::open(copy.path(), config.clone(), 0) {
            Err(StorageError::Damaged { path, position, .. }) => {
                let expected = if damaged.len() < bytes.len() { last_start } else { bytes.len() };
                assert_eq!((path, position), (seg_path.clone(), expected as u64));
            }
            other => panic!("damage in a sealed segment must refuse the open, got {:?}", other.map(|_| ())),
        }
        assert_eq!(std::fs::read(&seg_path).unwrap(), damaged);
        // An explicit repair cuts the log there: the bad batch and everything after it go.
        let log = Log::open_with(copy.path(), config.clone(), 0, OnDamage::Truncate).unwrap();
        let recs = read_records(&log);
        if damaged.len() < bytes.len() {
            assert_eq!(recs, survivors_before_last(&after));
        } else {
            let segment: Vec<_> = after.iter().filter(|r| r.0 < active).cloned().collect();
            assert_eq!(recs, segment);
        }
    }
}

#[test]
fn tombstones_survive_until_delete_retention_then_disappear() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { delete_retention_ms: 1000, segment_bytes: 300, ..compact_config() };
    let log = Log::open(dir.path(), config.clone(), 0).unwrap();
    let mut appended = Vec::new();
    appended.extend(append(&log, &[(Some("a"), Some("1")), (Some("b"), Some("1"))], 100, Compression::None));
    appended.extend(append(&log, &[(Some("a"), None), (Some("c"), Some("1"))], 200, Compression::Lz4));
    for i in 0..6 {
        let v = format!("{i}");
        appended.extend(append(&log, &[(Some("d"), Some(&v))], 300 + i, Compression::None));
    }
    let active = *log.segment_base_offsets().last().unwrap();
    assert!(active > 4);

    let stats = log.clean(10_000).unwrap().expect("a first pass is due (dirty ratio 1)");
    assert_eq!(stats.tombstones_removed, 0);
    let with_tombstone = model_clean(&appended, active);
    assert!(with_tombstone.iter().any(|r| r.1.as_deref() == Some(&b"a"[..]) && r.2.is_none()));
    assert_eq!(read_records(&log), with_tombstone, "timestamps and offsets unchanged");

    // Before the horizon (first cleaning + delete.retention.ms) nothing triggers and a forced
    // pass keeps the tombstone.
    assert_eq!(log.clean(10_999).unwrap(), None);
    log.clean_with(10_999, &force()).unwrap();
    assert_eq!(read_records(&log), with_tombstone);

    // The horizon survives a restart (it is in the batch).
    log.close().unwrap();
    drop(log);
    let log = Log::open(dir.path(), config, 0).unwrap();
    assert_eq!(read_records(&log), with_tombstone);
    // So does the trigger (cleaner-delete-horizon): no new writes needed for the tombstone to go.
    assert_eq!(log.clean(10_999).unwrap(), None);
    let stats = log.clean(11_000).unwrap().expect("the expired horizon triggers a pass after a restart");
    assert_eq!(stats.tombstones_removed, 1);
    assert!(!dir.path().join("cleaner-delete-horizon").exists(), "no tombstone waits any more");
    assert_eq!(log.clean(20_000).unwrap(), None);
    let without: Vec<_> = with_tombstone.iter().filter(|r| r.2.is_some()).cloned().collect();
    assert_eq!(read_records(&log), without);
}

#[test]
fn due_horizon_triggers_a_pass_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { delete_retention_ms: 500, segment_bytes: 300, ..compact_config() };
    let log = Log::open(dir.path(), config, 0).unwrap();
    append(&log, &[(Some("x"), Some("1")), (Some("y"), None)], 100, Compression::None);
    for i in 0..6 {
        append(&log, &[(Some("z"), Some("1"))], 200 + i, Compression::None);
    }
    log.clean(1000).unwrap().unwrap();
    assert!(read_records(&log).iter().any(|r| r.2.is_none()));
    assert_eq!(log.clean(1499).unwrap(), None);
    let stats = log.clean(1500).unwrap().expect("horizon due");
    assert!(stats.forced);
    assert_eq!(stats.tombstones_removed, 1);
    assert!(read_records(&log).iter().all(|r| r.2.is_some()));
    assert_eq!(log.clean(100_000).unwrap(), None, "no tombstones left to wait for");
}

#[test]
fn min_compaction_lag_keeps_young_segments_dirty() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { min_compaction_lag_ms: 5000, ..compact_config() };
    let log = Log::open(dir.path(), config, 0).unwrap();
    let mut appended = Vec::new();
    for i in 0..40 {
        let v = format!("old{i}");
        appended.extend(append(&log, &[(Some("k"), Some(&v)), (Some("j"), Some(&v))], 1000 + i, Compression::None));
    }
    let young_from = log.log_end_offset();
    for i in 0..40 {
        let v = format!("young{i}");
        appended.extend(append(&log, &[(Some("k"), Some(&v)), (Some("j"), Some(&v))], 9000 + i, Compression::None));
    }
    // Nothing is older than now - lag.
    assert_eq!(log.clean_with(5500, &force()).unwrap(), None);
    let segs = log.segment_base_offsets();
    // The old segments are cleanable, up to the segment holding the first young record.
    let boundary = *segs.iter().rev().find(|&&s| s <= young_from).unwrap();
    let stats = log.clean_with(10_000, &force()).unwrap().unwrap();
    assert_eq!(stats.end_offset, boundary);
    assert_eq!(log.first_dirty_offset(), boundary);
    assert_eq!(read_records(&log), model_clean(&appended, boundary));
    // Later, everything but the active segment.
    log.clean_with(100_000, &force()).unwrap().unwrap();
    let active = *log.segment_base_offsets().last().unwrap();
    assert_eq!(read_records(&log), model_clean(&appended, active));
}

#[test]
fn dirty_ratio_and_max_compaction_lag_trigger_passes() {
    let dir = tempfile::tempdir().unwrap();
    let config = compact_config();
    let log = Log::open(dir.path(), config.clone(), 0).unwrap();
    // Distinct keys: cleaning removes nothing, so the clean head stays large.
    for i in 0..60 {
        let k = format!("key{i}");
        append(&log, &[(Some(&k), Some("v"))], 1000, Compression::None);
    }
    assert_eq!(log.clean(0).unwrap().expect("no clean head yet: ratio 1").dirty_ratio, 1.0);
    assert_eq!(log.clean(0).unwrap(), None);
    // A little dirty data: below the 0.5 ratio.
    for i in 0..20 {
        let k = format!("key{}", i % 3);
        append(&log, &[(Some(&k), Some("w"))], 1000, Compression::None);
    }
    assert_eq!(log.clean(0).unwrap(), None);
    // Lots of dirty data: above it.
    for i in 0..120 {
        let k = format!("key{}", i % 3);
        append(&log, &[(Some(&k), Some("w"))], 1000, Compression::None);
    }
    let stats = log.clean(0).unwrap().expect("ratio above 0.5");
    assert!(stats.dirty_ratio > 0.5 && !stats.forced, "{stats:?}");

    // A ratio that never triggers, and max.compaction.lag.ms.
    let dir = tempfile::tempdir().unwrap();
    let lag = LogConfig { min_cleanable_dirty_ratio: 1.0, max_compaction_lag_ms: 10_000, ..config };
    let log = Log::open(dir.path(), lag, 0).unwrap();
    for i in 0..30 {
        let k = format!("key{}", i % 3);
        append(&log, &[(Some(&k), Some("x"))], 20_000 + i, Compression::None);
    }
    assert!(log.segment_base_offsets().len() > 2);
    assert_eq!(log.clean(25_000).unwrap(), None);
    let stats = log.clean(30_001).unwrap().expect("dirty data older than max.compaction.lag.ms");
    assert!(stats.forced);
}

#[test]
fn compact_with_lag_rolls_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_bytes: 1 << 20, max_compaction_lag_ms: 1000, ..compact_config() };
    let log = Log::open(dir.path(), config, 0).unwrap();
    append(&log, &[(Some("a"), Some("1"))], 1000, Compression::None);
    append(&log, &[(Some("a"), Some("2"))], 1500, Compression::None);
    assert_eq!(log.segment_base_offsets(), vec![0]);
    append(&log, &[(Some("a"), Some("3"))], 2001, Compression::None);
    assert_eq!(log.segment_base_offsets(), vec![0, 2]);
}

#[test]
fn every_codec_is_cleaned_and_recompressed() {
    for codec in ALL_CODECS {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig { segment_bytes: 2000, ..compact_config() };
        let log = Log::open(dir.path(), config.clone(), 0).unwrap();
        let appended = fill(&log, codec);
        let active = *log.segment_base_offsets().last().unwrap();
        log.clean_with(5000, &force()).unwrap().unwrap();
        let expected = model_clean(&appended, active);
        assert_eq!(read_records(&log), expected, "{codec:?}");
        // Every batch keeps its codec; the rewritten ones have gaps inside.
        let mut gapped = 0;
        let mut next = 0;
        while next < active {
            let raw = log.read(next, 1 << 24, active, true).unwrap().records;
            let mut rest = &raw[..];
            assert!(!rest.is_empty());
            while !rest.is_empty() {
                let len = i32::from_be_bytes(rest[8..12].try_into().unwrap()) as usize + 12;
                let attrs = i16::from_be_bytes(rest[21..23].try_into().unwrap());
                assert_eq!(attrs & 7, codec as i16, "{codec:?}");
                let base = i64::from_be_bytes(rest[..8].try_into().unwrap());
                let last_delta = i32::from_be_bytes(rest[23..27].try_into().unwrap());
                let count = i32::from_be_bytes(rest[57..61].try_into().unwrap());
                gapped += (count < last_delta + 1) as usize;
                next = base + last_delta as i64 + 1;
                rest = &rest[len..];
            }
        }
        assert!(gapped > 0, "{codec:?}");
        drop(log);
        let log = Log::open(dir.path(), config, 0).unwrap();
        assert_eq!(read_records(&log), expected, "{codec:?} after reopen");
    }
}

#[test]
fn keyless_records_rejected_under_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), compact_config(), 0).unwrap();
    append(&log, &[(Some("k"), Some("v"))], 1, Compression::None);
    for codec in ALL_CODECS {
        let bad = kv_batch(&[(Some("k"), Some("v")), (None, Some("no key"))], 1, codec);
        let err = log.append_committed(&bad, 0, 1).unwrap_err();
        assert!(matches!(err, StorageError::InvalidRecords { .. }), "{codec:?}: {err}");
        // Several batches: nothing is written if one is bad.
        let mut two = kv_batch(&[(Some("k"), Some("v"))], 1, codec);
        two.extend(kv_batch(&[(None, Some("v"))], 1, codec));
        assert!(log.append_committed(&two, 0, 1).is_err());
    }
    assert_eq!(log.log_end_offset(), 1);
    // Tombstones have keys and are fine; under `delete` keyless records are too.
    append(&log, &[(Some("k"), None)], 1, Compression::None);
    log.update_config(LogConfig { cleanup_policy: CleanupPolicy::DELETE, ..compact_config() });
    append(&log, &[(None, Some("v"))], 1, Compression::None);
    assert_eq!(log.log_end_offset(), 3);
}

#[test]
fn keyless_records_from_before_compaction_are_dropped_and_policies_combine() {
    let dir = tempfile::tempdir().unwrap();
    let delete = LogConfig { cleanup_policy: CleanupPolicy::DELETE, ..compact_config() };
    let log = Log::open(dir.path(), delete.clone(), 0).unwrap();
    let mut appended = Vec::new();
    for i in 0..30 {
        appended.extend(append(&log, &[(None, Some("nokey")), (Some("k"), Some("v"))], 100 + i, Compression::None));
    }
    // Not compacted: clean does nothing.
    assert_eq!(log.clean_with(1000, &force()).unwrap(), None);
    let both = LogConfig { cleanup_policy: CleanupPolicy::parse("compact,delete"), retention_ms: 10_000, ..delete };
    log.update_config(both);
    let stats = log.clean_with(1000, &force()).unwrap().unwrap();
    let active = *log.segment_base_offsets().last().unwrap();
    assert_eq!(stats.keyless_removed as usize, appended.iter().filter(|r| r.1.is_none() && r.0 < active).count());
    let records = read_records(&log);
    assert_eq!(records.iter().filter(|r| r.0 < active).count(), 1, "only the latest k below the active segment");
    // compact,delete: time retention applies as well.
    assert!(log.enforce_retention(100_000).unwrap() > 0);
    assert_eq!(log.log_start_offset(), log.log_end_offset());
    // compact alone: retention does not delete.
    let dir2 = tempfile::tempdir().unwrap();
    let log = Log::open(dir2.path(), LogConfig { retention_ms: 1, ..compact_config() }, 0).unwrap();
    for i in 0..30 {
        append(&log, &[(Some("k"), Some("v"))], i, Compression::None);
    }
    assert_eq!(log.enforce_retention(1_000_000).unwrap(), 0);
}

#[test]
fn map_budget_cleans_in_several_passes() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), compact_config(), 0).unwrap();
    let appended = fill(&log, Compression::None);
    let active = *log.segment_base_offsets().last().unwrap();
    let small = CleanerOptions { force: true, map_bytes: 1, ..CleanerOptions::default() };
    let mut passes = 0;
    while log.first_dirty_offset() < active {
        let stats: CleanStats = log.clean_with(5000, &small).unwrap().unwrap();
        assert!(stats.end_offset > stats.first_dirty_offset);
        passes += 1;
        assert!(passes < 400);
    }
    assert!(passes > 3);
    assert_eq!(read_records(&log), model_clean(&appended, active));
}

#[test]
fn truncation_lowers_the_cleaner_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), compact_config(), 0).unwrap();
    fill(&log, Compression::None);
    log.clean_with(5000, &force()).unwrap().unwrap();
    let first_dirty = log.first_dirty_offset();
    // Truncation into the cleaned range: what is left stays clean, the rest is new.
    log.truncate_to(first_dirty - 40).unwrap();
    let cut = log.log_end_offset();
    assert!(cut < first_dirty);
    assert_eq!(log.first_dirty_offset(), cut);
    let mut appended = read_records(&log);
    for i in 0..60i64 {
        let k = format!("k{}", i % 4);
        let v = format!("again{i}");
        appended.extend(append(&log, &[(Some(&k), Some(&v))], 7000 + i, Compression::None));
    }
    log.clean_with(8000, &force()).unwrap().unwrap();
    let active = *log.segment_base_offsets().last().unwrap();
    assert_eq!(read_records(&log), model_clean(&appended, active));
}

/// A log whose segments are small (rolled by time), so the cleaner merges them.
fn crash_fixture(dir: &Path) -> (LogConfig, Vec<Rec>) {
    let config = LogConfig { segment_bytes: 1 << 20, segment_ms: 100, ..compact_config() };
    let log = Log::open(dir, config.clone(), 0).unwrap();
    let mut appended = Vec::new();
    for i in 0..40i64 {
        let (k, v) = (format!("k{}", i % 6), format!("v{i}"));
        let tomb = i % 7 == 3;
        appended.extend(append(&log, &[(Some(&k), (!tomb).then_some(&v))], 1000 + 60 * i, Compression::Snappy));
    }
    log.close().unwrap();
    (config, appended)
}

#[test]
fn crash_at_every_swap_step_recovers_old_or_new_content() {
    let reference = tempfile::tempdir().unwrap();
    let (config, appended) = crash_fixture(reference.path());
    let log = Log::open(reference.path(), config.clone(), 0).unwrap();
    let old = read_records(&log);
    let leo = log.log_end_offset();
    let segs_before = log.segment_base_offsets();
    assert!(segs_before.len() > 10);
    let stats = log.clean_with(1_000_000, &force()).unwrap().unwrap();
    assert_eq!(stats.segments_written, 1, "everything merged into one segment");
    let new = read_records(&log);
    assert_eq!(new, model_clean(&appended, *segs_before.last().unwrap()));
    assert_ne!(old, new);
    log.close().unwrap();
    drop(log);
    let clean_files = files(reference.path());

    use CrashPoint::*;
    for point in [CleanedWritten, MarkerWritten, IndexesSwapped, LogSwapped, OldDeleted, IndexesLive, LogLive] {
        let dir = tempfile::tempdir().unwrap();
        crash_fixture(dir.path());
        let log = Log::open(dir.path(), config.clone(), 0).unwrap();
        let opts = CleanerOptions { force: true, crash_after: Some(point), ..CleanerOptions::default() };
        assert_eq!(log.clean_with(1_000_000, &opts).unwrap(), None);
        drop(log); // the process dies here
        let left = files(dir.path());
        let has = |suffix: &str| left.iter().any(|f| f.ends_with(suffix));
        match point {
            CleanedWritten => assert!(has(".log.cleaned") && !has("cleaner-swap")),
            MarkerWritten => assert!(has(".log.cleaned") && has("cleaner-swap")),
            IndexesSwapped => assert!(has(".index.swap") && has(".log.cleaned")),
            LogSwapped | OldDeleted | IndexesLive => assert!(has(".log.swap")),
            LogLive => assert!(has("cleaner-swap") && !has(".swap")),
        }
        let committed = !matches!(point, CleanedWritten | MarkerWritten | IndexesSwapped);
        let log = Log::open(dir.path(), config.clone(), 0).unwrap();
        assert_eq!(read_records(&log), if committed { new.clone() } else { old.clone() }, "{point:?}");
        assert_eq!(log.log_end_offset(), leo);
        let left = files(dir.path());
        assert!(
            !left.iter().any(|f| f.ends_with(".cleaned") || f.ends_with(".swap") || f == "cleaner-swap"),
            "{point:?}: {left:?}"
        );
        // Cleaning again (after a rollback) or not (after completion) ends at the same state.
        log.clean_with(1_000_000, &force()).unwrap();
        assert_eq!(read_records(&log), new, "{point:?}");
        log.close().unwrap();
        drop(log);
        assert_eq!(files(dir.path()), clean_files, "{point:?}");
        let log = Log::open(dir.path(), config.clone(), 0).unwrap();
        assert_eq!(read_records(&log), new);
        assert_eq!(append(&log, &[(Some("k1"), Some("z"))], 10_000, Compression::None)[0].0, leo);
    }
}

#[test]
fn leftover_cleaner_files_are_handled_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = crash_fixture(dir.path());
    let old = read_records(&Log::open(dir.path(), config.clone(), 0).unwrap());
    // Garbage `.cleaned` files and an orphan index `.swap` (a swap that never committed), and a
    // marker without a `.swap` log.
    std::fs::write(dir.path().join("00000000000000000000.log.cleaned"), b"partial").unwrap();
    std::fs::write(dir.path().join("00000000000000000000.timeindex.cleaned"), b"x").unwrap();
    std::fs::write(dir.path().join("00000000000000000000.index.swap"), [0u8; 8]).unwrap();
    std::fs::write(dir.path().join("cleaner-swap"), b"0 4\n").unwrap();
    let log = Log::open(dir.path(), config.clone(), 0).unwrap();
    assert_eq!(read_records(&log), old);
    assert!(!files(dir.path()).iter().any(|f| f.contains("cleaned") || f.contains("swap")));
    drop(log);
    // A `.swap` log without a marker replaces only the segment with its base offset.
    let second = Log::open(dir.path(), config.clone(), 0).unwrap().segment_base_offsets()[1];
    let src = dir.path().join(format!("{second:020}.log"));
    std::fs::copy(&src, dir.path().join(format!("{second:020}.log.swap"))).unwrap();
    let log = Log::open(dir.path(), config, 0).unwrap();
    assert_eq!(read_records(&log), old);
}

#[test]
fn reads_during_cleaning_see_whole_batches() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_bytes: 1 << 20, segment_ms: 100, ..compact_config() };
    let log = std::sync::Arc::new(Log::open(dir.path(), config, 0).unwrap());
    let mut appended = Vec::new();
    for i in 0..200i64 {
        let (k, v) = (format!("k{}", i % 9), format!("v{i}"));
        appended.extend(append(&log, &[(Some(&k), Some(&v))], 1000 + 30 * i, Compression::Gzip));
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (log, stop, appended) = (log.clone(), stop.clone(), appended.clone());
        std::thread::spawn(move || {
            let mut rounds = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || rounds == 0 {
                // Every record read is one that was appended, in order (read_records checks CRCs).
                let got = read_records(&log);
                let mut it = appended.iter();
                for r in got.iter().filter(|r| r.0 < appended.len() as i64) {
                    assert!(it.any(|a| a == r), "unexpected record {r:?}");
                }
                rounds += 1;
            }
            rounds
        })
    };
    for round in 0..5 {
        let (k, v) = (format!("k{round}"), format!("later{round}"));
        for i in 0..20 {
            appended.push(
                append(&log, &[(Some(&k), Some(&v))], 8000 + 1000 * round + 60 * i, Compression::Gzip)[0].clone(),
            );
        }
        log.clean_with(1_000_000, &force()).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
}

/// Appends `ops` (key index, value or tombstone) in batches of `sizes`, cleaning at the given
/// batch indexes, then pushes everything out of the active segment and cleans once more: the log
/// must hold exactly the latest record per key, at its original offset.
fn check_against_model(ops: &[(u8, Option<u8>)], sizes: &[usize], cleans: &[usize], codec: Compression) {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_bytes: 400, ..compact_config() };
    let log = Log::open(dir.path(), config.clone(), 0).unwrap();
    let mut appended = Vec::new();
    let (mut i, mut n) = (0, 0);
    while i < ops.len() {
        let take = sizes[n % sizes.len()].min(ops.len() - i);
        let keys: Vec<String> = ops[i..i + take].iter().map(|o| format!("key{}", o.0)).collect();
        let vals: Vec<Option<String>> = ops[i..i + take].iter().map(|o| o.1.map(|v| format!("val{v}"))).collect();
        let entries: Vec<_> = (0..take).map(|x| (Some(keys[x].as_str()), vals[x].as_deref())).collect();
        appended.extend(append(&log, &entries, 1000 + n as i64, codec));
        if cleans.contains(&n) {
            let leo = log.log_end_offset();
            log.clean_with(2000, &force()).unwrap();
            assert_eq!(log.log_end_offset(), leo);
            // Whatever was cleaned, survivors are appended records, in order, and the latest
            // record of every key is there.
            let got = read_records(&log);
            let mut it = appended.iter();
            assert!(got.iter().all(|r| it.any(|a| a == r)));
            let latest: BTreeMap<_, _> = appended.iter().map(|r| (r.1.clone(), r)).collect();
            assert!(latest.values().all(|r| got.contains(r)));
        }
        i += take;
        n += 1;
    }
    // Two big fillers of one key: the second rolls the first, which rolls everything before.
    let filler = "f".repeat(500);
    appended.extend(append(&log, &[(Some("filler"), Some(&filler))], 5000, Compression::None));
    appended.extend(append(&log, &[(Some("filler"), Some(&filler))], 5001, Compression::None));
    let leo = log.log_end_offset();
    let active = *log.segment_base_offsets().last().unwrap();
    assert_eq!(active, leo - 1, "only the last filler is in the active segment");
    log.clean_with(6000, &force()).unwrap().unwrap();
    // Exactly the latest record of every key (the first filler's key is written again only in
    // the active segment, so it stays too), at its original offset.
    let mut model: BTreeMap<Bytes, Rec> = BTreeMap::new();
    for r in appended.iter().filter(|r| r.0 < active) {
        model.insert(r.1.clone().unwrap(), r.clone());
    }
    let mut expected: Vec<Rec> = model.into_values().collect();
    expected.push(appended.last().unwrap().clone());
    expected.sort_by_key(|r| r.0);
    assert_eq!(expected, model_clean(&appended, active));
    assert_eq!(read_records(&log), expected);
    assert_eq!(log.log_end_offset(), leo);
    drop(log);
    let log = Log::open(dir.path(), config, 0).unwrap();
    assert_eq!(read_records(&log), expected);
    assert_eq!(log.log_end_offset(), leo);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn cleaning_matches_a_model_map(
        ops in proptest::collection::vec((0u8..8, proptest::option::weighted(0.8, any::<u8>())), 1..150),
        sizes in proptest::collection::vec(1usize..5, 1..4),
        cleans in proptest::collection::vec(0usize..60, 0..4),
        codec in proptest::sample::select(ALL_CODECS.to_vec()),
    ) {
        check_against_model(&ops, &sizes, &cleans, codec);
    }
}
