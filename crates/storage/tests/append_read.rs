mod common;

use std::io::Read;

use bytes::Bytes;
use common::*;
use kafka_protocol::records::Compression;
use tern_storage::{Log, LogConfig, StorageError, TimestampType};

#[test]
fn append_read_roundtrip_assigns_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset(), log.high_watermark()), (0, 0, 0));
    let info = log.append_committed(&batch(3, 100), 0, 5).unwrap();
    assert_eq!((info.base_offset, info.last_offset, info.record_count, info.log_append_time), (0, 2, 3, -1));
    // Several concatenated batches in one append.
    let mut multi = batch(2, 200);
    multi.extend(batch(4, 300));
    let info = log.append_committed(&multi, 0, 6).unwrap();
    assert_eq!((info.base_offset, info.last_offset, info.record_count), (3, 8, 6));
    assert_eq!((log.log_end_offset(), log.high_watermark()), (9, 9));

    let all = read_all(&log, 0);
    assert_eq!(all.iter().map(|r| r.0).collect::<Vec<_>>(), (0..9).collect::<Vec<_>>());
    assert_eq!(all[4].2, "v1");
    assert_eq!(all[4].1, 200);

    // The first batch may start before the fetch offset.
    let r = log.read(4, 1 << 20, i64::MAX, false).unwrap();
    assert_eq!(decode(&r.records).first().unwrap().0, 3);
    assert_eq!((r.log_start_offset, r.log_end_offset, r.high_watermark), (0, 9, 9));
    // Offset == LEO is empty, beyond is out of range.
    assert!(log.read(9, 100, i64::MAX, true).unwrap().records.is_empty());
    assert!(matches!(log.read(10, 100, i64::MAX, true), Err(StorageError::OffsetOutOfRange { .. })));
    assert!(matches!(log.read(-1, 100, i64::MAX, true), Err(StorageError::OffsetOutOfRange { .. })));
    // max_offset excludes batches reaching it.
    let r = log.read(0, 1 << 20, 5, false).unwrap();
    assert_eq!(decode(&r.records).last().unwrap().0, 4);
    let r = log.read(0, 1 << 20, 4, false).unwrap();
    assert_eq!(decode(&r.records).last().unwrap().0, 2);
    assert!(log.read(3, 1 << 20, 4, true).unwrap().records.is_empty());
    // max_bytes: whole batches only, min_one overrides for the first.
    let first_len = batch(3, 100).len();
    let r = log.read(0, first_len + 10, i64::MAX, false).unwrap();
    assert_eq!(r.records.len(), first_len);
    assert!(log.read(0, 10, i64::MAX, false).unwrap().records.is_empty());
    assert_eq!(log.read(0, 10, i64::MAX, true).unwrap().records.len(), first_len);
}

#[test]
fn compressed_batches_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    for (i, codec) in ALL_CODECS.into_iter().enumerate() {
        let info = log.append_committed(&batch_ts(&[10, 20, 30], codec), 1, 0).unwrap();
        assert_eq!(info.base_offset, i as i64 * 3);
    }
    let all = read_all(&log, 0);
    assert_eq!(all.len(), 15);
    assert!(all.iter().enumerate().all(|(i, r)| r.0 == i as i64));
}

#[test]
fn corrupt_batch_rejected_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    log.append_committed(&batch(1, 1), 0, 0).unwrap();
    for codec in ALL_CODECS {
        let good = batch_ts(&[1, 2], codec);
        let mut bad = batch_ts(&[1, 2], codec);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let mut input = good.clone();
        input.extend(&bad);
        assert!(matches!(log.append_committed(&input, 0, 0), Err(StorageError::CorruptRecord(_))), "{codec:?}");
    }
    // Truncated framing.
    let b = batch(2, 1);
    assert!(matches!(log.append_committed(&b[..b.len() - 1], 0, 0), Err(StorageError::CorruptRecord(_))));
    assert!(matches!(log.append_committed(&b[..5], 0, 0), Err(StorageError::CorruptRecord(_))));
    // Old magic.
    let mut old = batch(2, 1);
    old[16] = 1;
    assert!(matches!(log.append_committed(&old, 0, 0), Err(StorageError::InvalidRecord(_))));
    assert_eq!(log.log_end_offset(), 1);
    assert_eq!(log.size_bytes(), batch(1, 1).len() as u64);
}

/// A few hundred KiB of zstd that expands to 256 MiB is refused without expanding it all.
#[test]
fn decompression_bomb_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    let mut bomb = encode(&[record(0, 1, None, Some(Bytes::from_static(b"v")))], Compression::Zstd);
    bomb.truncate(61);
    // One well-formed record start whose value claims 256 MiB of zeros.
    let value_len = 256u64 << 20;
    let mut prefix = Vec::new();
    for v in [value_len + 10, 0, 0, 0, u64::MAX, value_len] {
        // zigzag varints: record length, attributes (a plain byte 0), timestamp and offset
        // deltas, a null key (-1), the value length.
        let mut z = if v == u64::MAX { 1 } else { v << 1 };
        while z >= 0x80 {
            prefix.push((z as u8 & 0x7f) | 0x80);
            z >>= 7;
        }
        prefix.push(z as u8);
    }
    bomb.extend(zstd::encode_all(prefix.chain(std::io::repeat(0).take(value_len)), 1).unwrap());
    let batch_length = (bomb.len() - 12) as i32;
    bomb[8..12].copy_from_slice(&batch_length.to_be_bytes());
    fix_crc(&mut bomb);
    assert!(bomb.len() < 1 << 20);
    let err = log.append_committed(&bomb, 0, 0).unwrap_err();
    assert!(matches!(&err, StorageError::CorruptRecord(m) if m.contains("more than")), "{err}");
    assert_eq!(log.log_end_offset(), 0);
}

#[test]
fn record_count_mismatch_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    for codec in ALL_CODECS {
        for (count, delta) in [(2i32, 2i32), (2, 1), (4, 3), (0, -1)] {
            let mut b = batch_ts(&[1, 2, 3], codec);
            b[23..27].copy_from_slice(&delta.to_be_bytes());
            b[57..61].copy_from_slice(&count.to_be_bytes());
            fix_crc(&mut b);
            let err = log.append_committed(&b, 0, 0).unwrap_err();
            assert!(
                matches!(err, StorageError::InvalidRecord(_) | StorageError::CorruptRecord(_)),
                "{codec:?} {count}: {err}"
            );
        }
    }
    assert_eq!(log.log_end_offset(), 0);
}

#[test]
fn max_message_bytes_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { max_message_bytes: 1000, ..small_config() };
    let log = Log::open(dir.path(), config, 0).unwrap();
    let big = big_batch(2000);
    match log.append_committed(&big, 0, 0) {
        Err(StorageError::RecordTooLarge { size, max }) => assert_eq!((size, max), (big.len(), 1000)),
        other => panic!("{other:?}"),
    }
    log.append_committed(&big_batch(500), 0, 0).unwrap();
}

#[test]
fn log_append_time_stamps_batches() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { message_timestamp_type: TimestampType::LogAppendTime, ..small_config() };
    let log = Log::open(dir.path(), config, 0).unwrap();
    let info = log.append_committed(&batch_ts(&[1, 2], Compression::Lz4), 3, 777).unwrap();
    assert_eq!(info.log_append_time, 777);
    let r = log.read(0, 1 << 20, i64::MAX, false).unwrap();
    // The decoder verifies the recomputed CRC.
    assert_eq!(decode(&r.records).len(), 2);
    assert_eq!(r.records[21..23], [0, 8 | 3]);
    assert_eq!(i64::from_be_bytes(r.records[35..43].try_into().unwrap()), 777);
    assert_eq!(i32::from_be_bytes(r.records[12..16].try_into().unwrap()), 3);
    assert_eq!(log.offset_for_timestamp(700).unwrap(), Some((0, 777)));
    assert_eq!(log.max_timestamp(), Some((0, 777)));
}

#[test]
fn concurrent_reader_and_writer() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_bytes: 4096, ..small_config() };
    let log = std::sync::Arc::new(Log::open(dir.path(), config, 0).unwrap());
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            for i in 0..500 {
                log.append_committed(&batch((i % 5) + 1, i as i64), 0, i as i64).unwrap();
            }
        })
    };
    let mut next = 0;
    let mut reads = 0;
    while !writer.is_finished() || next < log.log_end_offset() {
        let r = log.read(next, 2048, i64::MAX, true).unwrap();
        for (offset, _, _) in decode(&r.records) {
            if offset >= next {
                assert_eq!(offset, next);
                next += 1;
            }
        }
        assert!(next <= r.log_end_offset);
        reads += 1;
    }
    writer.join().unwrap();
    assert_eq!(next, log.log_end_offset());
    assert!(reads > 0);
    assert!(log.segment_base_offsets().len() > 1);
}

/// A batch of an idempotent producer: `n` records from sequence `seq`.
fn idempotent_batch(producer_id: i64, epoch: i16, seq: i32, n: usize) -> Vec<u8> {
    let records: Vec<_> = (0..n)
        .map(|i| {
            let mut r = record(i, 1000, Some(Bytes::from(format!("k{i}"))), Some(Bytes::from_static(b"v")));
            r.producer_id = producer_id;
            r.producer_epoch = epoch;
            r.sequence = seq + i as i32;
            r
        })
        .collect();
    encode(&records, Compression::None)
}

#[test]
fn idempotent_retries_are_not_written_twice_even_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    let first = log.append_committed(&idempotent_batch(5, 0, 0, 3), 0, 0).unwrap();
    let second = log.append_committed(&idempotent_batch(5, 0, 3, 2), 0, 0).unwrap();
    assert_eq!((first.base_offset, second.base_offset), (0, 3));
    let retry = log.append_committed(&idempotent_batch(5, 0, 0, 3), 0, 0).unwrap();
    assert_eq!((retry.base_offset, retry.last_offset), (0, 2), "a retry gets the original offsets");
    assert_eq!(log.log_end_offset(), 5, "and writes nothing");
    let gap = log.append_committed(&idempotent_batch(5, 0, 7, 1), 0, 0);
    assert!(matches!(gap, Err(StorageError::OutOfOrderSequence(_))), "{gap:?}");
    log.close().unwrap();
    drop(log);

    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    let retry = log.append_committed(&idempotent_batch(5, 0, 3, 2), 0, 0).unwrap();
    assert_eq!((retry.base_offset, log.log_end_offset()), (3, 5), "the state is rebuilt on open");
    assert_eq!(log.append_committed(&idempotent_batch(5, 0, 5, 1), 0, 0).unwrap().base_offset, 5);
    let stale = log.append_committed(&idempotent_batch(5, -1, 0, 1), 0, 0);
    assert!(matches!(stale, Err(StorageError::InvalidProducerEpoch(_))), "{stale:?}");
    // A mixed request: a new batch after one already written.
    let mut mixed = idempotent_batch(5, 0, 5, 1);
    mixed.extend(idempotent_batch(5, 0, 6, 1));
    assert!(matches!(log.append_committed(&mixed, 0, 0), Err(StorageError::DuplicateSequence(_))));
    let mut both_new = idempotent_batch(5, 0, 6, 1);
    both_new.extend(idempotent_batch(5, 0, 7, 1));
    assert_eq!(log.append_committed(&both_new, 0, 0).unwrap().last_offset, 7);
}
