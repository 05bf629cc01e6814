//! Kafka v2 `RecordBatch` framing: header parsing, patching of broker-assigned fields, walking
//! stored records (the cleaner) and per-record timestamp lookup for ListOffsets. Validation of
//! produced batches is in `validate.rs`.

use crate::decompress::{decompress, MAX_DECOMPRESSED_BYTES};
use crate::{Result, StorageError};

/// baseOffset(8) + batchLength(4): the part of a batch not counted by `batchLength`.
pub(crate) const LOG_OVERHEAD: usize = 12;
/// Size of the fixed v2 batch header, up to and including `recordCount`.
pub(crate) const HEADER_SIZE: usize = 61;
/// Smallest legal `batchLength` (header minus [`LOG_OVERHEAD`]).
pub(crate) const MIN_BATCH_LENGTH: usize = HEADER_SIZE - LOG_OVERHEAD;

const BASE_OFFSET: usize = 0;
pub(crate) const BATCH_LENGTH: usize = 8;
const LEADER_EPOCH: usize = 12;
pub(crate) const MAGIC: usize = 16;
pub(crate) const CRC: usize = 17;
/// The CRC covers everything from the attributes to the end of the batch.
pub(crate) const ATTRIBUTES: usize = 21;
const LAST_OFFSET_DELTA: usize = 23;
const BASE_TIMESTAMP: usize = 27;
pub(crate) const MAX_TIMESTAMP: usize = 35;
const PRODUCER_ID: usize = 43;
const PRODUCER_EPOCH: usize = 51;
const BASE_SEQUENCE: usize = 53;
const RECORD_COUNT: usize = 57;

pub(crate) const COMPRESSION_MASK: i16 = 0x07;
pub(crate) const TIMESTAMP_TYPE_BIT: i16 = 1 << 3;
pub(crate) const TRANSACTIONAL_BIT: i16 = 1 << 4;
pub(crate) const CONTROL_BIT: i16 = 1 << 5;
/// KIP-534: the base timestamp holds the batch's delete horizon.
const DELETE_HORIZON_BIT: i16 = 1 << 6;

pub(crate) fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
pub(crate) fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// The fields of a batch header the log cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchHeader {
    pub base_offset: i64,
    /// Whole batch size in bytes, including [`LOG_OVERHEAD`].
    pub size: usize,
    pub magic: i8,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    /// -1 unless the producer is idempotent (then with its epoch and first sequence number).
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Parses the first [`HEADER_SIZE`] bytes of `b`; `None` if too short or `batchLength` is
    /// negative. Does not check magic or CRC.
    pub fn parse(b: &[u8]) -> Option<BatchHeader> {
        if b.len() < HEADER_SIZE {
            return None;
        }
        let len = be_i32(b, BATCH_LENGTH);
        if len < 0 {
            return None;
        }
        Some(BatchHeader {
            base_offset: be_i64(b, BASE_OFFSET),
            size: len as usize + LOG_OVERHEAD,
            magic: b[MAGIC] as i8,
            attributes: be_i16(b, ATTRIBUTES),
            last_offset_delta: be_i32(b, LAST_OFFSET_DELTA),
            base_timestamp: be_i64(b, BASE_TIMESTAMP),
            max_timestamp: be_i64(b, MAX_TIMESTAMP),
            producer_id: be_i64(b, PRODUCER_ID),
            producer_epoch: be_i16(b, PRODUCER_EPOCH),
            base_sequence: be_i32(b, BASE_SEQUENCE),
            record_count: be_i32(b, RECORD_COUNT),
        })
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }
    pub fn compression(&self) -> i16 {
        self.attributes & COMPRESSION_MASK
    }
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }
    /// KIP-534's delete horizon: when set, the base timestamp is the time after which the
    /// cleaner may remove the batch's tombstones.
    pub fn delete_horizon(&self) -> Option<i64> {
        (self.attributes & DELETE_HORIZON_BIT != 0).then_some(self.base_timestamp)
    }
}

/// The partition leader epoch stamped in a batch (at least [`HEADER_SIZE`] bytes).
pub(crate) fn leader_epoch(b: &[u8]) -> i32 {
    be_i32(b, LEADER_EPOCH)
}

/// Checks the stored CRC-32C of a whole batch.
pub(crate) fn crc_ok(batch: &[u8]) -> bool {
    batch.len() >= HEADER_SIZE && be_u32(batch, CRC) == crc32c::crc32c(&batch[ATTRIBUTES..])
}

/// What validation learned about one input batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ValidBatch {
    /// Where the (validated, possibly rewritten) batch starts in the write buffer.
    pub start: usize,
    pub header: BatchHeader,
}

/// Produce validation lives in `validate.rs` (Kafka's `LogValidator`).
pub(crate) use crate::validate::validate_input;

pub(crate) fn corrupt(msg: String) -> StorageError {
    StorageError::CorruptRecord(msg)
}

/// What the offset deltas of a stored batch's records must look like (produced batches are
/// checked for `0, 1, ..., recordCount - 1` by `validate.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deltas {
    /// Strictly increasing within `[0, lastOffsetDelta]`: stored batches, which compaction may
    /// have thinned out while keeping the survivors' offsets.
    Increasing,
}

/// One record of an uncompressed records section, borrowed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawRecord<'a> {
    /// The whole record, its length prefix included.
    pub bytes: &'a [u8],
    pub offset_delta: i32,
    pub timestamp: i64,
    attributes: u8,
    /// The record after its timestamp delta: offset delta, key, value, headers.
    after_timestamp: &'a [u8],
    /// The record after its offset delta: key, value, headers.
    tail: &'a [u8],
}

impl<'a> RawRecord<'a> {
    /// The key, `None` if null.
    pub fn key(&self) -> Result<Option<&'a [u8]>> {
        let mut b = self.tail;
        read_bytes(&mut b)
    }
    /// The key and whether the value is null (a tombstone).
    pub fn key_and_tombstone(&self) -> Result<(Option<&'a [u8]>, bool)> {
        let mut b = self.tail;
        let key = read_bytes(&mut b)?;
        let value_len = read_varint(&mut b)?;
        if value_len > 0 && value_len as usize > b.len() {
            return Err(corrupt(format!("record value length {value_len} exceeds the record")));
        }
        Ok((key, value_len < 0))
    }

    /// Appends this record to `out` re-encoded for a batch whose base timestamp is `base_ts`:
    /// only its length and timestamp delta change, the rest is copied.
    pub fn rebased(&self, base_ts: i64, out: &mut Vec<u8>) {
        let mut delta = Vec::with_capacity(10);
        write_varlong(&mut delta, self.timestamp.wrapping_sub(base_ts));
        let len = 1 + delta.len() + self.after_timestamp.len();
        write_varlong(out, len as i64);
        out.push(self.attributes);
        out.extend_from_slice(&delta);
        out.extend_from_slice(self.after_timestamp);
    }
}

/// A varint-length-prefixed byte string; a negative length is null.
fn read_bytes<'a>(b: &mut &'a [u8]) -> Result<Option<&'a [u8]>> {
    let len = read_varint(b)?;
    if len < 0 {
        return Ok(None);
    }
    if len as usize > b.len() {
        return Err(corrupt(format!("record key length {len} exceeds the record")));
    }
    let (v, rest) = b.split_at(len as usize);
    *b = rest;
    Ok(Some(v))
}

/// Walks the (uncompressed) records of a batch without allocating, checking the offset deltas
/// against `deltas` and that the record lengths account for every byte. `visit` returns true to
/// stop early; the walk then returns that record's (offset delta, timestamp).
pub(crate) fn walk_records<'a>(
    records: &'a [u8],
    h: &BatchHeader,
    deltas: Deltas,
    mut visit: impl FnMut(&RawRecord<'a>) -> Result<bool>,
) -> Result<Option<(i32, i64)>> {
    let mut rest = records;
    let mut prev = -1;
    for i in 0..h.record_count {
        let start = rest;
        let len = read_varint(&mut rest)?;
        if len < 0 || len as usize > rest.len() {
            return Err(corrupt(format!("record {i} length {len} exceeds the batch")));
        }
        let whole = start.len() - rest.len() + len as usize;
        let (mut body, after) = rest.split_at(len as usize);
        if body.is_empty() {
            return Err(corrupt(format!("record {i} is empty")));
        }
        let attributes = body[0];
        body = &body[1..];
        let ts_delta = read_varlong(&mut body)?;
        let after_timestamp = body;
        let offset_delta = read_varint(&mut body)?;
        let ok = match deltas {
            Deltas::Increasing => offset_delta > prev && offset_delta <= h.last_offset_delta,
        };
        if !ok {
            return Err(StorageError::InvalidRecord(format!("record {i} has offset delta {offset_delta}")));
        }
        prev = offset_delta;
        let record = RawRecord {
            bytes: &start[..whole],
            offset_delta,
            timestamp: h.base_timestamp.wrapping_add(ts_delta),
            attributes,
            after_timestamp,
            tail: body,
        };
        if visit(&record)? {
            return Ok(Some((offset_delta, record.timestamp)));
        }
        rest = after;
    }
    if !rest.is_empty() {
        return Err(corrupt(format!("{} bytes after the last record", rest.len())));
    }
    Ok(None)
}

/// A new batch with `batch`'s header and `records` as its records section (already compressed
/// with the batch's codec), holding `record_count` records whose largest timestamp is
/// `max_timestamp`. Base offset, lastOffsetDelta, attributes and the producer fields are kept, so
/// the surviving records keep their offsets (Kafka's `MemoryRecords.filterTo` with
/// `overrideLastOffset`). `delete_horizon` (KIP-534) sets the delete-horizon bit and stores the
/// horizon as the base timestamp; the records must then be encoded relative to it. Under
/// LogAppendTime the max timestamp is the append time and stays.
pub(crate) fn rebuild(
    batch: &[u8],
    h: &BatchHeader,
    records: &[u8],
    record_count: i32,
    max_timestamp: i64,
    delete_horizon: Option<i64>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_SIZE + records.len());
    out.extend_from_slice(&batch[..HEADER_SIZE]);
    out.extend_from_slice(records);
    let len = (out.len() - LOG_OVERHEAD) as i32;
    out[BATCH_LENGTH..BATCH_LENGTH + 4].copy_from_slice(&len.to_be_bytes());
    out[RECORD_COUNT..RECORD_COUNT + 4].copy_from_slice(&record_count.to_be_bytes());
    if !h.is_log_append_time() {
        out[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&max_timestamp.to_be_bytes());
    }
    if let Some(horizon) = delete_horizon {
        let attrs = h.attributes | DELETE_HORIZON_BIT;
        out[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attrs.to_be_bytes());
        out[BASE_TIMESTAMP..BASE_TIMESTAMP + 8].copy_from_slice(&horizon.to_be_bytes());
    }
    let crc = crc32c::crc32c(&out[ATTRIBUTES..]);
    out[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

pub(crate) fn read_varlong(b: &mut &[u8]) -> Result<i64> {
    let mut v: u64 = 0;
    for shift in (0..70).step_by(7) {
        let Some((&byte, rest)) = b.split_first() else {
            return Err(corrupt("truncated varint".into()));
        };
        *b = rest;
        if shift == 63 && byte > 1 {
            break;
        }
        v |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Ok((v >> 1) as i64 ^ -((v & 1) as i64));
        }
    }
    Err(corrupt("varint too long".into()))
}

pub(crate) fn read_varint(b: &mut &[u8]) -> Result<i32> {
    let v = read_varlong(b)?;
    i32::try_from(v).map_err(|_| corrupt("varint out of i32 range".into()))
}

/// The zigzag varint encoding of the record format (the inverse of [`read_varlong`]).
fn write_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Overwrites the broker-owned fields of a batch already copied into the write buffer.
/// Base offset and leader epoch are outside the CRC; LogAppendTime changes the attributes and
/// max timestamp, which are inside it, so the CRC is recomputed only then.
pub(crate) fn patch(batch: &mut [u8], base_offset: i64, leader_epoch: i32, log_append_time: Option<i64>) {
    batch[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
    batch[LEADER_EPOCH..LEADER_EPOCH + 4].copy_from_slice(&leader_epoch.to_be_bytes());
    if let Some(now) = log_append_time {
        let attrs = be_i16(batch, ATTRIBUTES) | TIMESTAMP_TYPE_BIT;
        batch[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attrs.to_be_bytes());
        batch[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&now.to_be_bytes());
        let crc = crc32c::crc32c(&batch[ATTRIBUTES..]);
        batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    }
}

/// The first record of a stored batch with offset >= `min_offset` and timestamp >= `target`,
/// as (offset, timestamp). Falls back to the batch-level answer if the records can't be decoded.
pub(crate) fn find_record_by_timestamp(
    batch: &[u8],
    h: &BatchHeader,
    min_offset: i64,
    target: i64,
) -> Option<(i64, i64)> {
    if h.max_timestamp < target || h.last_offset() < min_offset {
        return None;
    }
    if h.is_log_append_time() {
        // Under LogAppendTime every record carries the batch's max timestamp.
        return Some((h.base_offset.max(min_offset), h.max_timestamp));
    }
    let fallback = Some((h.base_offset.max(min_offset), h.max_timestamp));
    let decompressed;
    let records = if h.compression() == 0 {
        &batch[HEADER_SIZE..]
    } else {
        match decompress(h.compression(), &batch[HEADER_SIZE..], MAX_DECOMPRESSED_BYTES) {
            Ok(r) => {
                decompressed = r;
                &decompressed[..]
            }
            Err(_) => return fallback,
        }
    };
    let found = walk_records(records, h, Deltas::Increasing, |r| {
        Ok(h.base_offset + r.offset_delta as i64 >= min_offset && r.timestamp >= target)
    });
    match found {
        Ok(Some((delta, ts))) => Some((h.base_offset + delta as i64, ts)),
        Ok(None) => None,
        Err(_) => fallback,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varlong_roundtrip() {
        for v in [0, 1, -1, 63, -64, 64, 300, -300, i32::MAX as i64, i64::MAX, i64::MIN, 1_700_000_000_000] {
            let mut buf = Vec::new();
            write_varlong(&mut buf, v);
            let mut rest = &buf[..];
            assert_eq!(read_varlong(&mut rest).unwrap(), v);
            assert!(rest.is_empty());
        }
    }
}
