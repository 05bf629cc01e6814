//! Kafka v2 `RecordBatch` framing: header parsing, validation of producer input, patching of
//! broker-assigned fields, and per-record timestamp lookup for ListOffsets.

use crate::decompress::{decompress, MAX_DECOMPRESSED_BYTES};
use crate::{Result, StorageError};

/// baseOffset(8) + batchLength(4): the part of a batch not counted by `batchLength`.
pub(crate) const LOG_OVERHEAD: usize = 12;
/// Size of the fixed v2 batch header, up to and including `recordCount`.
pub(crate) const HEADER_SIZE: usize = 61;
/// Smallest legal `batchLength` (header minus [`LOG_OVERHEAD`]).
pub(crate) const MIN_BATCH_LENGTH: usize = HEADER_SIZE - LOG_OVERHEAD;

const BASE_OFFSET: usize = 0;
const BATCH_LENGTH: usize = 8;
const LEADER_EPOCH: usize = 12;
const MAGIC: usize = 16;
const CRC: usize = 17;
/// The CRC covers everything from the attributes to the end of the batch.
const ATTRIBUTES: usize = 21;
const LAST_OFFSET_DELTA: usize = 23;
const BASE_TIMESTAMP: usize = 27;
const MAX_TIMESTAMP: usize = 35;
const RECORD_COUNT: usize = 57;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 1 << 3;

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
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
}

/// Checks the stored CRC-32C of a whole batch.
pub(crate) fn crc_ok(batch: &[u8]) -> bool {
    batch.len() >= HEADER_SIZE && be_u32(batch, CRC) == crc32c::crc32c(&batch[ATTRIBUTES..])
}

/// Validates a batch as stored on disk during recovery: framing, magic, CRC and offsets that
/// continue exactly at `expected_offset` (Tern does not compact, so offsets are contiguous).
pub(crate) fn stored_batch_ok(batch: &[u8], h: &BatchHeader, expected_offset: i64) -> bool {
    h.size >= HEADER_SIZE
        && h.size == batch.len()
        && h.magic == 2
        && h.base_offset == expected_offset
        && h.last_offset_delta >= 0
        && crc_ok(batch)
}

/// What validation learned about one input batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ValidBatch {
    pub start: usize,
    pub header: BatchHeader,
}

/// Validates every batch of a produce request; returns them in order, or the first error.
pub(crate) fn validate_input(input: &[u8], max_message_bytes: usize, out: &mut Vec<ValidBatch>) -> Result<()> {
    out.clear();
    if input.is_empty() {
        return Err(StorageError::InvalidRecord("no record batches".into()));
    }
    let mut pos = 0;
    while pos < input.len() {
        let rest = &input[pos..];
        if rest.len() < LOG_OVERHEAD {
            return Err(corrupt(format!("truncated batch framing at byte {pos}")));
        }
        let len = be_i32(rest, BATCH_LENGTH);
        if len < 0 || len as usize > rest.len() - LOG_OVERHEAD {
            return Err(corrupt(format!("batch length {len} at byte {pos} exceeds the input")));
        }
        let size = len as usize + LOG_OVERHEAD;
        if rest.len() > MAGIC && rest[MAGIC] != 2 {
            return Err(StorageError::InvalidRecord(format!("unsupported record batch magic {}", rest[MAGIC] as i8)));
        }
        if (len as usize) < MIN_BATCH_LENGTH {
            return Err(corrupt(format!("batch length {len} below the v2 header size")));
        }
        if size > max_message_bytes {
            return Err(StorageError::RecordTooLarge { size, max: max_message_bytes });
        }
        let batch = &rest[..size];
        if !crc_ok(batch) {
            return Err(corrupt(format!("CRC mismatch in batch at byte {pos}")));
        }
        let header = BatchHeader::parse(batch).expect("length checked");
        validate_records(batch, &header)?;
        out.push(ValidBatch { start: pos, header });
        pos += size;
    }
    Ok(())
}

fn corrupt(msg: String) -> StorageError {
    StorageError::CorruptRecord(msg)
}

fn validate_records(batch: &[u8], h: &BatchHeader) -> Result<()> {
    if h.record_count <= 0 {
        return Err(StorageError::InvalidRecord(format!("record count {} in a produced batch", h.record_count)));
    }
    if h.last_offset_delta != h.record_count - 1 {
        return Err(StorageError::InvalidRecord(format!(
            "lastOffsetDelta {} does not match record count {}",
            h.last_offset_delta, h.record_count
        )));
    }
    match h.compression() {
        0 => walk_records(&batch[HEADER_SIZE..], h, |_, _| false).map(|_| ()),
        1..=4 => {
            let records = decompress(h.compression(), &batch[HEADER_SIZE..], MAX_DECOMPRESSED_BYTES)
                .map_err(|e| corrupt(format!("undecodable compressed batch: {e}")))?;
            walk_records(&records, h, |_, _| false).map(|_| ())
        }
        c => Err(StorageError::InvalidRecord(format!("unknown compression codec {c}"))),
    }
}

/// Walks the (uncompressed) records of a batch without allocating, checking that the offset
/// deltas are 0..n-1 and that the record lengths account for every byte. `visit(offset_delta,
/// timestamp)` returns true to stop early; the walk then returns that record.
pub(crate) fn walk_records(
    records: &[u8],
    h: &BatchHeader,
    mut visit: impl FnMut(i32, i64) -> bool,
) -> Result<Option<(i32, i64)>> {
    let mut rest = records;
    for i in 0..h.record_count {
        let len = read_varint(&mut rest)?;
        if len < 0 || len as usize > rest.len() {
            return Err(corrupt(format!("record {i} length {len} exceeds the batch")));
        }
        let (mut body, after) = rest.split_at(len as usize);
        if body.is_empty() {
            return Err(corrupt(format!("record {i} is empty")));
        }
        body = &body[1..]; // attributes
        let ts_delta = read_varlong(&mut body)?;
        let offset_delta = read_varint(&mut body)?;
        if offset_delta != i {
            return Err(StorageError::InvalidRecord(format!("record {i} has offset delta {offset_delta}")));
        }
        if visit(offset_delta, h.base_timestamp.wrapping_add(ts_delta)) {
            return Ok(Some((offset_delta, h.base_timestamp.wrapping_add(ts_delta))));
        }
        rest = after;
    }
    if !rest.is_empty() {
        return Err(corrupt(format!("{} bytes after the last record", rest.len())));
    }
    Ok(None)
}

fn read_varlong(b: &mut &[u8]) -> Result<i64> {
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

fn read_varint(b: &mut &[u8]) -> Result<i32> {
    let v = read_varlong(b)?;
    i32::try_from(v).map_err(|_| corrupt("varint out of i32 range".into()))
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
    let found = walk_records(records, h, |delta, ts| h.base_offset + delta as i64 >= min_offset && ts >= target);
    match found {
        Ok(Some((delta, ts))) => Some((h.base_offset + delta as i64, ts)),
        Ok(None) => None,
        Err(_) => fallback,
    }
}
