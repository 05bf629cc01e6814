//! Validation of produced batches (Kafka's LogValidator): record decoding, per-record errors,
//! timestamps, client-only checks, recompression and the bound on decompression.

mod common;

use bytes::Bytes;
use common::*;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use tern_storage::{
    AppendOrigin, CleanupPolicy, Codec, CompressionType, Log, LogConfig, StorageError, TimestampType, MAX_EXPANSION,
};

const CLIENT: AppendOrigin = AppendOrigin::Client { producer_ids_below: 1000 };
const NOW: i64 = 1_700_000_000_000;

fn varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn field(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => varint(out, -1),
        Some(b) => {
            varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

/// One record; `headers` is the raw header section (count included).
fn raw_record(offset_delta: i64, ts_delta: i64, key: Option<&[u8]>, headers: &[u8]) -> Vec<u8> {
    let mut body = vec![0u8];
    varint(&mut body, ts_delta);
    varint(&mut body, offset_delta);
    field(&mut body, key);
    field(&mut body, Some(b"value"));
    body.extend_from_slice(headers);
    let mut out = Vec::new();
    varint(&mut out, body.len() as i64);
    out.extend(body);
    out
}

fn header_section(headers: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(&mut out, headers.len() as i64);
    for (k, v) in headers {
        field(&mut out, Some(k));
        field(&mut out, Some(v));
    }
    out
}

/// A v2 batch around `records` (already encoded), compressed with `codec`, CRC correct.
fn raw_batch(records: &[Vec<u8>], base_ts: i64, max_ts: i64, attributes: i16, codec: Compression) -> Vec<u8> {
    let section: Vec<u8> = records.concat();
    let section = compress(&section, codec);
    let n = records.len() as i32;
    let attributes = attributes | codec_id(codec);
    let mut b = Vec::new();
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // length, below
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes()); // crc, below
    b.extend_from_slice(&attributes.to_be_bytes());
    b.extend_from_slice(&(n - 1).to_be_bytes());
    b.extend_from_slice(&base_ts.to_be_bytes());
    b.extend_from_slice(&max_ts.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&n.to_be_bytes());
    b.extend_from_slice(&section);
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    fix_crc(&mut b);
    b
}

fn codec_id(c: Compression) -> i16 {
    match c {
        Compression::None => 0,
        Compression::Gzip => 1,
        Compression::Snappy => 2,
        Compression::Lz4 => 3,
        Compression::Zstd => 4,
    }
}

fn compress(section: &[u8], codec: Compression) -> Vec<u8> {
    use std::io::Write;
    match codec {
        Compression::None => section.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(section).unwrap();
            e.finish().unwrap()
        }
        Compression::Snappy => snap::raw::Encoder::new().compress_vec(section).unwrap(),
        Compression::Lz4 => {
            let mut e = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
            e.write_all(section).unwrap();
            e.finish().0
        }
        Compression::Zstd => zstd::encode_all(section, 3).unwrap(),
    }
}

fn open(dir: &tempfile::TempDir, config: LogConfig) -> Log {
    Log::open(dir.path(), config, 0).unwrap()
}

/// A stored record: offset, timestamp, key, value.
type Stored = (i64, i64, Option<Bytes>, Option<Bytes>);

/// The stored batches' (attributes, max timestamp) and records.
fn stored(log: &Log) -> (Vec<(i16, i64)>, Vec<Stored>) {
    let mut bytes = log.read(0, 1 << 24, i64::MAX, true).unwrap().records;
    let mut headers = Vec::new();
    let mut pos = 0;
    while pos + 61 <= bytes.len() {
        let attributes = i16::from_be_bytes([bytes[pos + 21], bytes[pos + 22]]);
        let max_ts = i64::from_be_bytes(bytes[pos + 35..pos + 43].try_into().unwrap());
        headers.push((attributes, max_ts));
        pos += 12 + i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().unwrap()) as usize;
    }
    let records = RecordBatchDecoder::decode_all(&mut bytes)
        .unwrap()
        .into_iter()
        .flat_map(|set| set.records)
        .map(|r| (r.offset, r.timestamp, r.key, r.value))
        .collect();
    (headers, records)
}

#[test]
fn every_record_is_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir, small_config());
    let ok = |h: &[u8]| raw_record(0, 0, Some(b"k"), h);
    let mut trailing = header_section(&[]);
    trailing.extend_from_slice(&[0, 0]);
    let malformed: Vec<(&str, Vec<u8>)> = vec![
        ("header count beyond the record", ok(&[10])),
        ("negative header count", ok(&[3])),
        ("header key length beyond the record", ok(&[2, 80, b'a'])),
        ("negative header key length", ok(&[2, 1, 1])),
        ("bytes after the headers", ok(&trailing)),
        ("varint of 11 bytes", ok(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])),
        ("offset delta 1 for record 0", raw_record(1, 0, Some(b"k"), &header_section(&[]))),
    ];
    for codec in ALL_CODECS {
        for (what, record) in &malformed {
            let batch = raw_batch(std::slice::from_ref(record), NOW, NOW, 0, codec);
            let err = log.append_as(&batch, 0, NOW, CLIENT).unwrap_err();
            assert!(matches!(err, StorageError::InvalidRecord(_)), "{codec:?} {what}: {err}");
        }
        // Bytes after the last record (but inside the batch).
        let mut section = raw_record(0, 0, Some(b"k"), &header_section(&[]));
        section.push(0);
        let batch = raw_batch(&[section], NOW, NOW, 0, codec);
        let err = log.append_as(&batch, 0, NOW, CLIENT).unwrap_err();
        assert!(matches!(err, StorageError::InvalidRecord(ref m) if m.contains("remain")), "{codec:?}: {err}");
        // A header key that is not UTF-8 is a record error naming the record.
        let records = vec![
            raw_record(0, 0, Some(b"k"), &header_section(&[("ok".as_bytes(), b"v")])),
            raw_record(1, 0, Some(b"k"), &header_section(&[(b"\xe2\x82", b"v")])),
        ];
        match log.append_as(&raw_batch(&records, NOW, NOW, 0, codec), 0, NOW, CLIENT) {
            Err(StorageError::InvalidRecords { records, .. }) => {
                assert_eq!(records.iter().map(|r| r.batch_index).collect::<Vec<_>>(), [1], "{codec:?}")
            }
            other => panic!("{codec:?}: {other:?}"),
        }
    }
    assert_eq!(log.log_end_offset(), 0);
    // Multi-byte UTF-8 header keys are fine.
    let good = raw_record(0, 0, Some(b"k"), &header_section(&[("clé-€-𝄞".as_bytes(), b"v")]));
    log.append_as(&raw_batch(&[good], NOW, NOW, 0, Compression::Zstd), 0, NOW, CLIENT).unwrap();
    assert_eq!(log.log_end_offset(), 1);
}

#[test]
fn the_true_max_timestamp_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir, small_config());
    for (i, codec) in ALL_CODECS.into_iter().enumerate() {
        let records: Vec<Vec<u8>> =
            [0, 5000, 3000].iter().enumerate().map(|(j, &d)| raw_record(j as i64, d, Some(b"k"), &[0])).collect();
        // Understated and overstated (a year ahead) max timestamps are both corrected.
        for claimed in [NOW, NOW + 365 * 86_400_000] {
            log.append_as(&raw_batch(&records, NOW, claimed, 0, codec), 0, NOW, CLIENT).unwrap();
        }
        let (headers, _) = stored(&log);
        assert_eq!(headers[2 * i..], [(codec_id(codec), NOW + 5000), (codec_id(codec), NOW + 5000)], "{codec:?}");
    }
    let (_, records) = stored(&log);
    assert_eq!(records.len(), 30);
    assert_eq!(log.offset_for_timestamp(NOW + 4000).unwrap(), Some((1, NOW + 5000)));
}

#[test]
fn timestamps_outside_the_topic_bounds_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        message_timestamp_before_max_ms: 86_400_000,
        message_timestamp_after_max_ms: 3_600_000,
        ..small_config()
    };
    let log = open(&dir, config);
    let year = 365 * 86_400_000;
    for codec in ALL_CODECS {
        let records = vec![
            raw_record(0, 0, Some(b"k"), &[0]),
            raw_record(1, year, Some(b"k"), &[0]),
            raw_record(2, -year, Some(b"k"), &[0]),
            raw_record(3, 3_600_000, Some(b"k"), &[0]),
        ];
        match log.append_as(&raw_batch(&records, NOW, NOW, 0, codec), 0, NOW, CLIENT) {
            Err(StorageError::InvalidTimestamp { records, .. }) => {
                assert_eq!(records.iter().map(|r| r.batch_index).collect::<Vec<_>>(), [1, 2], "{codec:?}");
                assert!(records[0].message.contains("out of range"), "{:?}", records[0]);
            }
            other => panic!("{codec:?}: {other:?}"),
        }
    }
    // A producer may not claim LogAppendTime.
    let claimed = raw_batch(&[raw_record(0, 0, Some(b"k"), &[0])], -1, -1, 1 << 3, Compression::None);
    assert!(matches!(log.append_as(&claimed, 0, NOW, CLIENT), Err(StorageError::InvalidTimestamp { .. })));
    // Records without a timestamp (-1) are not checked.
    log.append_as(&raw_batch(&[raw_record(0, 0, Some(b"k"), &[0])], -1, -1, 0, Compression::None), 0, NOW, CLIENT)
        .unwrap();
    assert_eq!(log.log_end_offset(), 1);
}

#[test]
fn client_only_checks() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir, small_config());
    let one = || raw_batch(&[raw_record(0, 0, Some(b"k"), &[0])], NOW, NOW, 0, Compression::None);
    let with = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut b = one();
        edit(&mut b);
        fix_crc(&mut b);
        b
    };
    let control = with(&|b| b[22] |= 1 << 5);
    let no_sequence = with(&|b| {
        b[43..51].copy_from_slice(&5i64.to_be_bytes());
        b[51..53].copy_from_slice(&0i16.to_be_bytes());
    });
    let offset = with(&|b| b[0..8].copy_from_slice(&42i64.to_be_bytes()));
    let two = [one(), one()].concat();
    for (what, input) in [("control", &control), ("no sequence", &no_sequence), ("offset", &offset), ("two", &two)] {
        let err = log.append_as(input, 0, NOW, CLIENT).unwrap_err();
        assert!(matches!(err, StorageError::InvalidRecord(_)), "{what}: {err}");
    }
    let forged = with(&|b| {
        b[43..51].copy_from_slice(&1000i64.to_be_bytes());
        b[51..53].copy_from_slice(&0i16.to_be_bytes());
        b[53..57].copy_from_slice(&0i32.to_be_bytes());
    });
    assert!(matches!(log.append_as(&forged, 0, NOW, CLIENT), Err(StorageError::UnknownProducerId(_))));
    assert_eq!(log.log_end_offset(), 0);
    // The broker's own writers are not clients.
    log.append_committed(&two, 0, NOW).unwrap();
    log.append_committed(&control, 0, NOW).unwrap();
    assert_eq!(log.log_end_offset(), 3);
}

#[test]
fn keyless_records_on_a_compacted_topic_are_record_errors() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir, LogConfig { cleanup_policy: CleanupPolicy::COMPACT, ..small_config() });
    for codec in ALL_CODECS {
        let records: Vec<Vec<u8>> = [Some(&b"a"[..]), None, Some(b"c"), None]
            .iter()
            .enumerate()
            .map(|(i, k)| raw_record(i as i64, 0, *k, &[0]))
            .collect();
        match log.append_as(&raw_batch(&records, NOW, NOW, 0, codec), 0, NOW, CLIENT) {
            Err(StorageError::InvalidRecords { message, records }) => {
                assert_eq!(records.iter().map(|r| r.batch_index).collect::<Vec<_>>(), [1, 3]);
                assert!(message.contains("2 record errors"), "{message}");
            }
            other => panic!("{codec:?}: {other:?}"),
        }
    }
}

#[test]
fn compression_type_recompresses_and_keeps_every_record() {
    let targets = [Codec::None, Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd];
    for target in targets {
        let dir = tempfile::tempdir().unwrap();
        let log = open(&dir, LogConfig { compression: CompressionType::Codec(target), ..small_config() });
        let mut expected = Vec::new();
        for (i, codec) in ALL_CODECS.into_iter().enumerate() {
            // Enough records for several xerial/lz4 blocks, with headers.
            let records: Vec<Vec<u8>> = (0..3000)
                .map(|j| raw_record(j, j, Some(format!("key-{i}-{j}").as_bytes()), &header_section(&[(b"h", b"x")])))
                .collect();
            log.append_as(&raw_batch(&records, NOW, NOW, 0, codec), 0, NOW, CLIENT).unwrap();
            expected.extend((0..3000).map(|j| (i as i64 * 3000 + j, NOW + j, format!("key-{i}-{j}"))));
        }
        let (headers, records) = stored(&log);
        assert!(headers.iter().all(|&(attributes, max)| attributes & 7 == target as i16 && max == NOW + 2999));
        let got: Vec<_> = records
            .into_iter()
            .map(|(o, ts, k, v)| {
                assert_eq!(v.as_deref(), Some(&b"value"[..]));
                (o, ts, String::from_utf8(k.unwrap().to_vec()).unwrap())
            })
            .collect();
        assert_eq!(got, expected, "{target:?}");
    }
}

#[test]
fn a_batch_that_recompresses_beyond_max_message_bytes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        LogConfig { compression: CompressionType::Codec(Codec::None), max_message_bytes: 10_000, ..small_config() };
    let log = open(&dir, config);
    let big = raw_record(0, 0, Some(&[b'x'; 20_000]), &[0]);
    let batch = raw_batch(&[big], NOW, NOW, 0, Compression::Zstd);
    assert!(batch.len() < 10_000);
    match log.append_as(&batch, 0, NOW, CLIENT) {
        Err(StorageError::RecordTooLarge { size, max: 10_000 }) => assert!(size > 20_000, "{size}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(log.log_end_offset(), 0);
}

#[test]
fn decompression_is_bounded_by_max_message_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let max = 10_000;
    let log = open(&dir, LogConfig { max_message_bytes: max, ..small_config() });
    let expands = |n: usize| raw_record(0, 0, Some(b"k"), &header_section(&[(b"h", &vec![0u8; n])]));
    // Snappy cannot compress 64:1; its blocks state their length, which is checked first.
    let mut claim = raw_batch(&[expands(10)], NOW, NOW, 0, Compression::Snappy);
    claim.truncate(61);
    claim.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    let len = (claim.len() - 12) as i32;
    claim[8..12].copy_from_slice(&len.to_be_bytes());
    fix_crc(&mut claim);
    let err = log.append_as(&claim, 0, NOW, CLIENT).unwrap_err();
    assert!(matches!(&err, StorageError::CorruptRecord(m) if m.contains("max.message.bytes")), "{err}");
    for codec in [Compression::Gzip, Compression::Lz4, Compression::Zstd] {
        let bomb = raw_batch(&[expands(MAX_EXPANSION * max)], NOW, NOW, 0, codec);
        assert!(bomb.len() <= max, "{codec:?}: {}", bomb.len());
        let err = log.append_as(&bomb, 0, NOW, CLIENT).unwrap_err();
        assert!(matches!(&err, StorageError::CorruptRecord(m) if m.contains("max.message.bytes")), "{codec:?}: {err}");
        let fine = raw_batch(&[expands(MAX_EXPANSION * max / 2)], NOW, NOW, 0, codec);
        log.append_as(&fine, 0, NOW, CLIENT).unwrap();
    }
    assert_eq!(log.log_end_offset(), 3);
}

#[test]
fn log_append_time_topics_stamp_the_append_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir, LogConfig { message_timestamp_type: TimestampType::LogAppendTime, ..small_config() });
    let batch = raw_batch(&[raw_record(0, 0, Some(b"k"), &[0])], NOW - 5, NOW - 5, 0, Compression::Gzip);
    let info = log.append_as(&batch, 0, NOW, CLIENT).unwrap();
    assert_eq!(info.log_append_time, NOW);
    let (headers, _) = stored(&log);
    assert_eq!(headers, [(1 | 1 << 3, NOW)]);
}
