mod common;

use std::path::Path;

use common::*;
use kafka_protocol::records::Compression;
use proptest::prelude::*;
use tern_storage::{Log, LogConfig, StorageError};

const SEG: &str = "00000000000000000000.log";

/// Writes `n` batches (mixed codecs) and drops the log without closing it (a crash).
fn crashed_log(dir: &Path, n: usize) -> Vec<u64> {
    let log = Log::open(dir, small_config(), 0).unwrap();
    let mut ends = Vec::new();
    for i in 0..n {
        let codec = [Compression::None, Compression::Snappy][i % 2];
        log.append_committed(&batch_ts(&[i as i64, i as i64 + 1], codec), 0, 0).unwrap();
        ends.push(log.size_bytes());
    }
    ends
}

fn check_recovered(dir: &Path, complete_batches: usize, expect_size: u64) {
    let log = Log::open(dir, small_config(), 0).unwrap();
    let leo = complete_batches as i64 * 2;
    assert_eq!(log.log_end_offset(), leo);
    assert_eq!(log.size_bytes(), expect_size);
    let all = read_all(&log, 0);
    assert_eq!(all.iter().map(|r| r.0).collect::<Vec<_>>(), (0..leo).collect::<Vec<_>>());
    assert_eq!(log.append_committed(&batch(1, 0), 0, 0).unwrap().base_offset, leo);
    assert_eq!(read_all(&log, leo).len(), 1);
}

#[test]
fn torn_tail_truncated_at_every_byte() {
    let base = tempfile::tempdir().unwrap();
    let ends = crashed_log(base.path(), 4);
    let (prev, last) = (ends[2], ends[3]);
    let original = std::fs::read(base.path().join(SEG)).unwrap();
    for cut in prev..last {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SEG), &original[..cut as usize]).unwrap();
        check_recovered(dir.path(), 3, prev);
    }
}

#[test]
fn garbage_tail_overwritten_at_every_byte() {
    let base = tempfile::tempdir().unwrap();
    let ends = crashed_log(base.path(), 4);
    let (prev, last) = (ends[2] as usize, ends[3] as usize);
    let original = std::fs::read(base.path().join(SEG)).unwrap();
    for from in prev..last {
        for fill in [0x00u8, 0xff, 0x5a] {
            let dir = tempfile::tempdir().unwrap();
            let mut bytes = original.clone();
            bytes[from..].iter_mut().enumerate().for_each(|(i, b)| *b ^= fill.wrapping_add(i as u8) | 1);
            // Garbage can also extend the file beyond the old end.
            bytes.extend(std::iter::repeat_n(fill, 100));
            std::fs::write(dir.path().join(SEG), &bytes).unwrap();
            check_recovered(dir.path(), 3, prev as u64);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_tail_damage_recovers_a_prefix(n in 1usize..6, cut_frac in 0.0f64..1.0, garbage in proptest::collection::vec(any::<u8>(), 0..200)) {
        let dir = tempfile::tempdir().unwrap();
        let ends = crashed_log(dir.path(), n);
        let path = dir.path().join(SEG);
        let mut bytes = std::fs::read(&path).unwrap();
        let cut = (bytes.len() as f64 * cut_frac) as usize;
        bytes.truncate(cut);
        bytes.extend(&garbage);
        std::fs::write(&path, &bytes).unwrap();
        let complete = ends.iter().take_while(|&&e| e as usize <= cut).count();
        let expect = if complete == 0 { 0 } else { ends[complete - 1] };
        // Garbage that happens to be a valid continuation is astronomically unlikely (CRC).
        check_recovered(dir.path(), complete, expect);
    }
}

#[test]
fn garbage_files_do_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(SEG), vec![0xffu8; 1000]).unwrap();
    std::fs::write(dir.path().join("00000000000000000000.index"), [1, 2, 3]).unwrap();
    std::fs::write(dir.path().join("leader-epoch-checkpoint"), "garbage").unwrap();
    std::fs::write(dir.path().join("notes.log"), "hello").unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    assert_eq!((log.log_end_offset(), log.size_bytes()), (0, 0));
    assert_eq!(log.append_committed(&batch(1, 0), 0, 0).unwrap().base_offset, 0);
    assert_eq!(std::fs::read(dir.path().join("notes.log")).unwrap(), b"hello", "not the broker's: left alone");
}

#[test]
fn checkpoints_that_contradict_the_log_are_refused_not_obeyed() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    for i in 0..10 {
        log.append_committed(&batch(10, i), 0, 0).unwrap();
    }
    log.close().unwrap();
    drop(log);
    let ckpt = dir.path().join("log-start-offset");
    // Garbage, and an offset beyond the log end: either would make the log drop data.
    for (content, detail) in [("x\n", "not an offset checkpoint"), ("5000\n", "beyond the log end offset 100")] {
        std::fs::write(&ckpt, content).unwrap();
        match Log::open(dir.path(), small_config(), 0) {
            Err(StorageError::Damaged { path, detail: d, .. }) => {
                assert_eq!(path, ckpt);
                assert!(d.contains(detail), "{d}");
            }
            other => panic!("expected a refusal, got {:?}", other.map(|l| l.log_start_offset())),
        }
    }
    // The data is untouched: with a sane checkpoint every record is still there.
    std::fs::write(&ckpt, "0\n").unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    assert_eq!(read_all(&log, 0).len(), 100);
}

#[test]
fn missing_or_corrupt_indexes_rebuilt_with_identical_reads() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_bytes: 2000, index_interval_bytes: 100, ..LogConfig::default() };
    let log = Log::open(dir.path(), config.clone(), 0).unwrap();
    for i in 0..100 {
        log.append_committed(&batch_ts(&[i, i + 5, i + 2], Compression::None), 0, 0).unwrap();
    }
    let offsets: Vec<i64> = (0..300).step_by(7).collect();
    let snapshot = |log: &Log| {
        let reads: Vec<_> = offsets.iter().map(|&o| log.read(o, 500, i64::MAX, true).unwrap().records).collect();
        let times: Vec<_> = (0..110).step_by(3).map(|t| log.offset_for_timestamp(t).unwrap()).collect();
        (reads, times, log.max_timestamp(), log.log_end_offset())
    };
    let before = snapshot(&log);
    log.close().unwrap();
    drop(log);
    let mut indexes = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.to_string_lossy().into_owned();
        if name.ends_with(".index") {
            indexes += 1;
            if indexes % 2 == 0 {
                std::fs::remove_file(&path).unwrap();
            } else {
                std::fs::write(&path, [0xffu8; 16]).unwrap();
            }
        } else if name.ends_with(".timeindex") {
            std::fs::remove_file(&path).unwrap();
        }
    }
    assert!(indexes > 2);
    let log = Log::open(dir.path(), config.clone(), 0).unwrap();
    assert_eq!(snapshot(&log), before);
    log.close().unwrap();
    drop(log);
    // The rebuilt index files are written back and trusted on the next clean open.
    let idx = std::fs::metadata(dir.path().join("00000000000000000000.index")).unwrap();
    assert!(idx.len() > 0 && idx.len().is_multiple_of(8));
    let log = Log::open(dir.path(), config, 0).unwrap();
    assert_eq!(snapshot(&log), before);
}

#[test]
fn unclean_reopen_rescans_after_recovery_point() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_bytes: 1000, ..small_config() };
    let log = Log::open(dir.path(), config.clone(), 0).unwrap();
    for i in 0..50 {
        log.append_committed(&batch(3, i), 2, 0).unwrap();
    }
    let before = read_all(&log, 0);
    let segs = log.segment_base_offsets();
    drop(log);
    // Tear the active segment's tail.
    let active = dir.path().join(format!("{:020}.log", segs.last().unwrap()));
    let len = std::fs::metadata(&active).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&active).unwrap().set_len(len - 3).unwrap();
    let log = Log::open(dir.path(), config, 0).unwrap();
    assert_eq!(log.segment_base_offsets(), segs);
    assert_eq!(log.log_end_offset(), 147);
    assert_eq!(read_all(&log, 0), before[..147]);
    assert_eq!(log.end_offset_for_epoch(2), Some((2, 147)));
}
