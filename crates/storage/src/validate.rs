//! Validation of produced batches, as Kafka's `LogValidator` (and `UnifiedLog`'s
//! `analyzeAndValidateRecords`) does it: framing, size and CRC; the checks Kafka applies to
//! client batches only; then every record is decoded (lengths, varints, key and value, header
//! count, header keys as UTF-8, no trailing bytes), with the per-record checks that Kafka reports
//! as KIP-467 record errors (a keyless record on a compacted topic, a timestamp outside
//! `message.timestamp.before.max.ms`/`after.max.ms`).
//!
//! The validated batches are written to the append's write buffer: as sent, but with the true
//! max timestamp in the header (and the CRC recomputed) when the producer's differs, or
//! recompressed with the topic's `compression.type` when that differs from the producer's
//! codec. Compressed records are decoded as a stream: no batch is ever expanded in memory, its
//! expansion is capped at [`MAX_EXPANSION`] x `max.message.bytes`, and the decoder's and
//! encoder's working memory is reserved from a process-wide budget first (`decompress.rs`).

use std::io::{self, BufRead, BufReader, Read};

use crate::batch::{
    self, be_i32, corrupt, read_varint, read_varlong, BatchHeader, ValidBatch, ATTRIBUTES, BATCH_LENGTH,
    COMPRESSION_MASK, CRC, HEADER_SIZE, LOG_OVERHEAD, MAGIC, MAX_TIMESTAMP, MIN_BATCH_LENGTH, TIMESTAMP_TYPE_BIT,
    TRANSACTIONAL_BIT,
};
use crate::compress::{encoder_memory, Capped, Encoder, Tee};
use crate::decompress::{self, BUDGET};
use crate::{AppendOrigin, Codec, LogConfig, RecordError, Result, StorageError, TimestampType};

/// A produced batch may decompress to at most this many times the topic's `max.message.bytes`
/// (64 MiB at Kafka's default of 1 MiB). Kafka itself has no such bound; producers compress
/// batches of at most `batch.size` (Java, measured compressed) or `message.max.bytes` (librdkafka,
/// uncompressed), so only data compressing better than 64:1 within one batch meets it.
pub const MAX_EXPANSION: usize = 64;

/// Read-ahead of the decompressing stream.
const STREAM_BUFFER: usize = 64 << 10;

/// What the broker checks of a produce request's records before they reach the log (Kafka's
/// `RequestUtils.hasTransactionalRecords` and `ProduceRequest.validateRecords`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProducedBatches {
    /// Some batch has the transactional bit.
    pub transactional: bool,
    /// Some batch is zstd-compressed (refused below Produce v7).
    pub zstd: bool,
    /// The largest producer id of any batch (-1: none is idempotent).
    pub max_producer_id: i64,
}

/// Reads the attributes of every batch of a produce request's records (stopping at broken
/// framing, which validation reports).
pub fn inspect_produced(records: &[u8]) -> ProducedBatches {
    let mut found = ProducedBatches { max_producer_id: -1, ..ProducedBatches::default() };
    let mut rest = records;
    while rest.len() >= HEADER_SIZE {
        if let Some(h) = BatchHeader::parse(rest) {
            found.max_producer_id = found.max_producer_id.max(h.producer_id);
        }
        let attributes = batch::be_i16(rest, ATTRIBUTES);
        found.transactional |= attributes & TRANSACTIONAL_BIT != 0;
        found.zstd |= attributes & COMPRESSION_MASK == Codec::Zstd as i16;
        let len = be_i32(rest, BATCH_LENGTH);
        if len < MIN_BATCH_LENGTH as i32 || len as usize > rest.len() - LOG_OVERHEAD {
            break;
        }
        rest = &rest[len as usize + LOG_OVERHEAD..];
    }
    found
}

fn invalid(msg: String) -> StorageError {
    StorageError::InvalidRecord(msg)
}

/// Validates every batch of `input` appended as `origin` and writes the batches to store into
/// `scratch` (`out` says where each starts). Nothing is written to the log if this fails.
pub(crate) fn validate_input(
    input: &[u8],
    cfg: &LogConfig,
    origin: AppendOrigin,
    now_ms: i64,
    out: &mut Vec<ValidBatch>,
    scratch: &mut Vec<u8>,
) -> Result<()> {
    out.clear();
    scratch.clear();
    if input.is_empty() {
        return Err(invalid("no record batches".into()));
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
            return Err(invalid(format!("unsupported record batch magic {}", rest[MAGIC] as i8)));
        }
        if (len as usize) < MIN_BATCH_LENGTH {
            return Err(corrupt(format!("batch length {len} below the v2 header size")));
        }
        if pos > 0 && matches!(origin, AppendOrigin::Client { .. }) {
            // ProduceRequest.validateRecords: one batch per partition from Produce v3 on.
            return Err(invalid("a produce request may hold exactly one record batch per partition".into()));
        }
        if size > cfg.max_message_bytes {
            return Err(StorageError::RecordTooLarge { size, max: cfg.max_message_bytes });
        }
        let input_batch = &rest[..size];
        if !batch::crc_ok(input_batch) {
            return Err(corrupt(format!("CRC mismatch in batch at byte {pos}")));
        }
        let header = BatchHeader::parse(input_batch).expect("length checked");
        validate_batch(&header, origin)?;
        let start = scratch.len();
        let header = validate_records(input_batch, header, cfg, now_ms, scratch)?;
        out.push(ValidBatch { start, header });
        pos += size;
    }
    Ok(())
}

/// Kafka's `LogValidator.validateBatch` and the base-offset check of `analyzeAndValidateRecords`.
fn validate_batch(h: &BatchHeader, origin: AppendOrigin) -> Result<()> {
    if h.record_count <= 0 {
        return Err(invalid(format!("record count {} in a produced batch", h.record_count)));
    }
    if h.last_offset_delta != h.record_count - 1 {
        return Err(invalid(format!(
            "lastOffsetDelta {} does not match record count {}",
            h.last_offset_delta, h.record_count
        )));
    }
    let AppendOrigin::Client { producer_ids_below } = origin else { return Ok(()) };
    if h.base_offset != 0 {
        return Err(invalid(format!("the base offset of a produced batch must be 0, not {}", h.base_offset)));
    }
    if h.is_control() {
        return Err(invalid("clients are not allowed to write control records".into()));
    }
    if h.producer_id >= 0 && h.base_sequence < 0 {
        return Err(invalid(format!(
            "invalid sequence number {} in a batch with producer id {}",
            h.base_sequence, h.producer_id
        )));
    }
    // Kafka's ids come from its controller, which never sees forged ones; here an id the broker
    // never issued would claim sequence state for a producer that gets it later, so it is
    // refused with the error the Java client answers by asking for a new id (KIP-360).
    if h.producer_id >= producer_ids_below {
        return Err(StorageError::UnknownProducerId(format!(
            "producer id {} was never issued by this broker (InitProducerId)",
            h.producer_id
        )));
    }
    Ok(())
}

/// Decodes and checks the records of one batch and appends the batch to store to `scratch`;
/// returns its header.
fn validate_records(
    input: &[u8],
    mut h: BatchHeader,
    cfg: &LogConfig,
    now_ms: i64,
    scratch: &mut Vec<u8>,
) -> Result<BatchHeader> {
    let source = Codec::from_id(h.compression())
        .ok_or_else(|| invalid(format!("unknown compression codec {}", h.compression())))?;
    // Kafka does not compress control records written uncompressed.
    let target = if h.is_control() { source } else { cfg.compression.target(source) };
    let limit = MAX_EXPANSION.saturating_mul(cfg.max_message_bytes);
    let section = &input[HEADER_SIZE..];
    let checks = RecordChecks::new(&h, cfg, now_ms);
    let start = scratch.len();
    let summary = if source == target {
        let walked = if source == Codec::None {
            match walk_fast(section, &h, &checks) {
                Some(summary) => Ok(summary),
                None => walk(&mut Slice::new(section), &h, &checks),
            }
        } else {
            let stream =
                decompress::stream(source as i16, section, limit).map_err(|e| Fail::Io(e).into_error(limit, cfg))?;
            let _memory = BUDGET.reserve(stream.working_memory + STREAM_BUFFER);
            walk(&mut Stream::new(BufReader::with_capacity(STREAM_BUFFER, stream.reader)), &h, &checks)
        };
        let summary = walked.map_err(|f| f.into_error(limit, cfg))?;
        summary.refuse_if_any()?;
        scratch.extend_from_slice(input);
        summary
    } else {
        let summary = recompress(input, &h, target, &checks, limit, cfg, scratch)?;
        h.attributes = (h.attributes & !COMPRESSION_MASK) | target as i16;
        h.size = scratch.len() - start;
        summary
    };
    // The true max timestamp (Kafka's `setMaxTimestamp`); under LogAppendTime the append
    // stamps the append time later.
    if cfg.message_timestamp_type == TimestampType::CreateTime {
        h.attributes &= !TIMESTAMP_TYPE_BIT;
        h.max_timestamp = summary.max_timestamp;
    }
    let stored = &mut scratch[start..];
    stored[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&h.attributes.to_be_bytes());
    stored[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&h.max_timestamp.to_be_bytes());
    if stored[..HEADER_SIZE] != input[..HEADER_SIZE] || target != source {
        let crc = crc32c::crc32c(&stored[ATTRIBUTES..]);
        stored[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    }
    Ok(h)
}

/// Walks the records of `input` while feeding every byte read to a `target` encoder whose output
/// goes straight into `scratch` after a copy of the batch header (batch length fixed here;
/// attributes, max timestamp and CRC by the caller). Holds at most the decoder, the encoder and
/// `max.message.bytes` of output: a batch that recompresses to more is refused, as Kafka does.
fn recompress(
    input: &[u8],
    h: &BatchHeader,
    target: Codec,
    checks: &RecordChecks,
    limit: usize,
    cfg: &LogConfig,
    scratch: &mut Vec<u8>,
) -> Result<Summary> {
    let section = &input[HEADER_SIZE..];
    let (decoded, decoder_memory): (Box<dyn Read + '_>, usize) = if h.compression() == Codec::None as i16 {
        (Box::new(section), 0)
    } else {
        let stream =
            decompress::stream(h.compression(), section, limit).map_err(|e| Fail::Io(e).into_error(limit, cfg))?;
        let memory = stream.working_memory;
        (Box::new(stream.reader), memory)
    };
    let out_limit = cfg.max_message_bytes.saturating_sub(HEADER_SIZE);
    let _memory = BUDGET.reserve(decoder_memory + STREAM_BUFFER + encoder_memory(target) + out_limit);
    let start = scratch.len();
    scratch.extend_from_slice(&input[..HEADER_SIZE]);
    let (summary, written) = {
        let encoder = Encoder::new(target, Capped { out: &mut *scratch, limit: out_limit, written: 0 })
            .map_err(|e| corrupt(format!("cannot start {target:?} compression: {e}")))?;
        let mut cursor = Stream::new(BufReader::with_capacity(STREAM_BUFFER, Tee { src: decoded, sink: encoder }));
        let summary = walk(&mut cursor, h, checks).map_err(|f| f.into_error(limit, cfg))?;
        summary.refuse_if_any()?;
        let Tee { sink, .. } = cursor.src.into_inner();
        let written = sink.finish().map_err(|e| corrupt(format!("{target:?} compression failed: {e}")))?.written;
        (summary, written)
    };
    if written > out_limit {
        return Err(StorageError::RecordTooLarge { size: HEADER_SIZE + written, max: cfg.max_message_bytes });
    }
    let length = (scratch.len() - start - LOG_OVERHEAD) as i32;
    scratch[start + BATCH_LENGTH..start + BATCH_LENGTH + 4].copy_from_slice(&length.to_be_bytes());
    Ok(summary)
}

fn undecodable(e: String) -> StorageError {
    corrupt(format!("undecodable compressed batch: {e}"))
}

/// Why a walk over the records stopped.
#[derive(Debug)]
enum Fail {
    /// The decompressing stream failed, or produced more than its limit.
    Io(io::Error),
    /// The records end before the batch's record count is reached.
    Eof,
    /// A record does not decode (Kafka's `InvalidRecordException`).
    Malformed(String),
}

impl Fail {
    fn into_error(self, limit: usize, cfg: &LogConfig) -> StorageError {
        match self {
            Fail::Io(e) if e.get_ref().is_some_and(|inner| inner.is::<decompress::TooLarge>()) => corrupt(format!(
                "records decompress to more than {limit} bytes ({MAX_EXPANSION} x max.message.bytes {})",
                cfg.max_message_bytes
            )),
            Fail::Io(e) => undecodable(e.to_string()),
            Fail::Eof => invalid("the records end before the batch's record count is reached".into()),
            Fail::Malformed(m) => invalid(m),
        }
    }
}

/// The per-record checks Kafka reports as record errors.
struct RecordChecks {
    need_key: bool,
    create_time: bool,
    before_max_ms: i64,
    after_max_ms: i64,
    now_ms: i64,
    claims_log_append_time: bool,
}

impl RecordChecks {
    fn new(h: &BatchHeader, cfg: &LogConfig, now_ms: i64) -> RecordChecks {
        RecordChecks {
            need_key: cfg.cleanup_policy.compact && !h.is_control(),
            create_time: cfg.message_timestamp_type == TimestampType::CreateTime,
            before_max_ms: cfg.message_timestamp_before_max_ms,
            after_max_ms: cfg.message_timestamp_after_max_ms,
            now_ms,
            claims_log_append_time: h.is_log_append_time(),
        }
    }

    /// Kafka's `validateRecord`: the key first, then the timestamp.
    fn check(&self, index: i32, has_key: bool, timestamp: i64, bad_header: Option<i32>, s: &mut Summary) {
        let mut refuse = |message: String| s.errors.push(RecordError { batch_index: index, message });
        if self.need_key && !has_key {
            return refuse("Compacted topic cannot accept message without key".into());
        }
        if let Some(j) = bad_header {
            return refuse(format!("The key of header {j} is not valid UTF-8"));
        }
        // -1 is the record format's "no timestamp".
        if self.create_time && timestamp != -1 {
            let (now, before, after) = (self.now_ms, self.before_max_ms, self.after_max_ms);
            if now.saturating_sub(timestamp) > before || timestamp.saturating_sub(now) > after {
                refuse(format!(
                    "Timestamp {timestamp} of message with offset {index} is out of range. The timestamp should be \
                     within [{}, {}]",
                    now.saturating_sub(before),
                    now.saturating_add(after)
                ));
                s.timestamp_errors = true;
            }
        } else if self.claims_log_append_time {
            refuse(
                "Invalid timestamp type in message. Producer should not set timestamp type to LogAppendTime.".into(),
            );
            s.timestamp_errors = true;
        }
    }
}

/// What the walk over a batch's records found.
#[derive(Debug)]
struct Summary {
    /// The largest record timestamp, -1 (no timestamp) if none is larger.
    max_timestamp: i64,
    errors: Vec<RecordError>,
    timestamp_errors: bool,
}

impl Summary {
    /// Kafka's `processRecordErrors`: INVALID_TIMESTAMP if any record's timestamp was refused,
    /// else INVALID_RECORD; every refused record listed either way.
    fn refuse_if_any(&self) -> Result<()> {
        if self.errors.is_empty() {
            return Ok(());
        }
        let records = self.errors.clone();
        if self.timestamp_errors {
            return Err(StorageError::InvalidTimestamp {
                message: "One or more records have been rejected due to invalid timestamp".into(),
                records,
            });
        }
        let first: Vec<String> =
            records.iter().take(3).map(|e| format!("record {}: {}", e.batch_index, e.message)).collect();
        Err(StorageError::InvalidRecords {
            message: format!(
                "One or more records have been rejected due to {} record errors in total, and only showing the first \
                 three errors at most: [{}]",
                records.len(),
                first.join("; ")
            ),
            records,
        })
    }
}

/// [`walk`] over an uncompressed section, on the slice itself and without saying what is
/// wrong: `None` for anything [`walk`] would refuse, which then runs to say why. Every accepted
/// batch takes only this path, the hot one of produce (a third of [`walk`]'s cost).
fn walk_fast(section: &[u8], h: &BatchHeader, checks: &RecordChecks) -> Option<Summary> {
    let mut s = Summary { max_timestamp: -1, errors: Vec::new(), timestamp_errors: false };
    let mut rest = section;
    for i in 0..h.record_count {
        let len = read_varint(&mut rest).ok()?;
        if len < 0 || len as usize > rest.len() {
            return None;
        }
        let (record, after) = rest.split_at(len as usize);
        let (_attributes, mut b) = record.split_first()?;
        let timestamp = h.base_timestamp.wrapping_add(read_varlong(&mut b).ok()?);
        if read_varint(&mut b).ok()? != i {
            return None;
        }
        let has_key = skip_field(&mut b)?;
        skip_field(&mut b)?;
        let headers = read_varint(&mut b).ok()?;
        if headers < 0 {
            return None;
        }
        let mut bad_header = None;
        for j in 0..headers {
            let key_len = read_varint(&mut b).ok()?;
            if key_len < 0 || key_len as usize > b.len() {
                return None;
            }
            let (key, tail) = b.split_at(key_len as usize);
            b = tail;
            if !key.is_ascii() && std::str::from_utf8(key).is_err() && bad_header.is_none() {
                bad_header = Some(j);
            }
            skip_field(&mut b)?;
        }
        if !b.is_empty() {
            return None;
        }
        rest = after;
        s.max_timestamp = s.max_timestamp.max(timestamp);
        checks.check(i, has_key, timestamp, bad_header, &mut s);
    }
    rest.is_empty().then_some(s)
}

/// Skips a length-prefixed field; whether it is not null. `None` if malformed.
#[inline]
fn skip_field(b: &mut &[u8]) -> Option<bool> {
    let len = read_varint(b).ok()?;
    if len == -1 {
        return Some(false);
    }
    if len < 0 || len as usize > b.len() {
        return None;
    }
    *b = &b[len as usize..];
    Some(true)
}

/// Decodes every record of a batch (Kafka's `DefaultRecord.readFrom`), without keeping any.
fn walk(c: &mut impl Source, h: &BatchHeader, checks: &RecordChecks) -> std::result::Result<Summary, Fail> {
    let mut s = Summary { max_timestamp: -1, errors: Vec::new(), timestamp_errors: false };
    for i in 0..h.record_count {
        let len = c.varint()?;
        if len < 0 {
            return Err(Fail::Malformed(format!("record {i} has a negative length {len}")));
        }
        let start = c.position();
        let end = start + len as u64;
        c.byte()?; // attributes: unused in v2 records
        let timestamp = h.base_timestamp.wrapping_add(c.varlong()?);
        let offset_delta = c.varint()?;
        if offset_delta != i {
            return Err(Fail::Malformed(format!("record {i} has offset delta {offset_delta}")));
        }
        let has_key = c.bytes(end, i, "key")?;
        c.bytes(end, i, "value")?;
        let headers = c.varint()?;
        if headers < 0 || headers as u64 > end.saturating_sub(c.position()) {
            return Err(Fail::Malformed(format!("record {i} has an invalid number of headers {headers}")));
        }
        let mut bad_header = None;
        for j in 0..headers {
            let key_len = c.varint()?;
            if key_len < 0 || key_len as u64 > end.saturating_sub(c.position()) {
                return Err(Fail::Malformed(format!("record {i} header {j} has an invalid key length {key_len}")));
            }
            if !c.utf8(key_len as usize)? && bad_header.is_none() {
                bad_header = Some(j);
            }
            c.bytes(end, i, "header value")?;
        }
        if c.position() != end {
            return Err(Fail::Malformed(format!(
                "record {i}: expected to read {len} bytes in the record, but read {}",
                c.position() - start
            )));
        }
        s.max_timestamp = s.max_timestamp.max(timestamp);
        checks.check(i, has_key, timestamp, bad_header, &mut s);
    }
    if !c.at_end()? {
        return Err(Fail::Malformed("bytes remain after the batch's last record".into()));
    }
    Ok(s)
}

/// The fields of the record format, read from an uncompressed records section ([`Slice`]) or
/// a decompressing stream ([`Stream`]).
trait Source {
    /// Bytes consumed so far.
    fn position(&self) -> u64;
    fn byte(&mut self) -> std::result::Result<u8, Fail>;
    fn skip(&mut self, n: usize) -> std::result::Result<(), Fail>;
    /// Consumes `n` bytes; whether they are valid UTF-8.
    fn utf8(&mut self, n: usize) -> std::result::Result<bool, Fail>;
    fn at_end(&mut self) -> std::result::Result<bool, Fail>;

    /// A zigzag varint of at most 10 bytes (Kafka's `ByteUtils.readVarlong`).
    fn varlong(&mut self) -> std::result::Result<i64, Fail> {
        varlong(self)
    }

    #[inline]
    fn varint(&mut self) -> std::result::Result<i32, Fail> {
        let v = self.varlong()?;
        i32::try_from(v).map_err(|_| Fail::Malformed(format!("varint {v} out of the int range")))
    }

    /// A length-prefixed field (-1: null) that must end by `end`; skipped. True unless null.
    #[inline]
    fn bytes(&mut self, end: u64, record: i32, what: &str) -> std::result::Result<bool, Fail> {
        let len = self.varint()?;
        if len == -1 {
            return Ok(false);
        }
        if len < 0 || len as u64 > end.saturating_sub(self.position()) {
            return Err(Fail::Malformed(format!("record {record} {what} length {len} exceeds the record")));
        }
        self.skip(len as usize)?;
        Ok(true)
    }
}

fn varlong<S: Source + ?Sized>(source: &mut S) -> std::result::Result<i64, Fail> {
    let mut v: u64 = 0;
    for shift in (0..70).step_by(7) {
        let byte = source.byte()?;
        if shift == 63 && byte > 1 {
            break;
        }
        v |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Ok((v >> 1) as i64 ^ -((v & 1) as i64));
        }
    }
    Err(Fail::Malformed("varint too long".into()))
}

/// An uncompressed records section: what is left of it, and its whole length.
struct Slice<'a> {
    rest: &'a [u8],
    len: usize,
}

impl<'a> Slice<'a> {
    fn new(section: &'a [u8]) -> Slice<'a> {
        Slice { rest: section, len: section.len() }
    }
}

impl Source for Slice<'_> {
    #[inline]
    fn position(&self) -> u64 {
        (self.len - self.rest.len()) as u64
    }
    /// Most varints of a record are one byte: those skip the loop.
    #[inline]
    fn varlong(&mut self) -> std::result::Result<i64, Fail> {
        match self.rest.split_first() {
            Some((&b, tail)) if b < 0x80 => {
                self.rest = tail;
                Ok((b >> 1) as i64 ^ -((b & 1) as i64))
            }
            _ => varlong(self),
        }
    }
    #[inline]
    fn byte(&mut self) -> std::result::Result<u8, Fail> {
        let (&b, tail) = self.rest.split_first().ok_or(Fail::Eof)?;
        self.rest = tail;
        Ok(b)
    }
    #[inline]
    fn skip(&mut self, n: usize) -> std::result::Result<(), Fail> {
        self.rest = self.rest.get(n..).ok_or(Fail::Eof)?;
        Ok(())
    }
    fn utf8(&mut self, n: usize) -> std::result::Result<bool, Fail> {
        if n > self.rest.len() {
            return Err(Fail::Eof);
        }
        let (bytes, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(bytes.is_ascii() || std::str::from_utf8(bytes).is_ok())
    }
    fn at_end(&mut self) -> std::result::Result<bool, Fail> {
        Ok(self.rest.is_empty())
    }
}

/// A decompressing stream, read through a buffer.
struct Stream<R> {
    src: R,
    read: u64,
}

impl<R: BufRead> Stream<R> {
    fn new(src: R) -> Stream<R> {
        Stream { src, read: 0 }
    }
}

impl<R: BufRead> Source for Stream<R> {
    fn position(&self) -> u64 {
        self.read
    }

    fn byte(&mut self) -> std::result::Result<u8, Fail> {
        let b = *self.src.fill_buf().map_err(Fail::Io)?.first().ok_or(Fail::Eof)?;
        self.src.consume(1);
        self.read += 1;
        Ok(b)
    }

    fn skip(&mut self, mut n: usize) -> std::result::Result<(), Fail> {
        while n > 0 {
            let available = self.src.fill_buf().map_err(Fail::Io)?.len();
            if available == 0 {
                return Err(Fail::Eof);
            }
            let k = available.min(n);
            self.src.consume(k);
            self.read += k as u64;
            n -= k;
        }
        Ok(())
    }

    /// Checked chunk by chunk, carrying a character split between chunks, so a long key never
    /// has to be held whole.
    fn utf8(&mut self, mut n: usize) -> std::result::Result<bool, Fail> {
        let mut valid = true;
        let mut pending: Vec<u8> = Vec::new();
        while n > 0 {
            let buf = self.src.fill_buf().map_err(Fail::Io)?;
            if buf.is_empty() {
                return Err(Fail::Eof);
            }
            let k = buf.len().min(n);
            let mut chunk = &buf[..k];
            if valid && !pending.is_empty() {
                let width = utf8_width(pending[0]);
                let take = (width - pending.len()).min(chunk.len());
                pending.extend_from_slice(&chunk[..take]);
                chunk = &chunk[take..];
                if pending.len() == width {
                    valid = std::str::from_utf8(&pending).is_ok();
                    pending.clear();
                }
            }
            if valid && pending.is_empty() {
                if let Err(e) = std::str::from_utf8(chunk) {
                    match e.error_len() {
                        None => pending.extend_from_slice(&chunk[e.valid_up_to()..]),
                        Some(_) => valid = false,
                    }
                }
            }
            self.src.consume(k);
            self.read += k as u64;
            n -= k;
        }
        Ok(valid && pending.is_empty())
    }

    fn at_end(&mut self) -> std::result::Result<bool, Fail> {
        Ok(self.src.fill_buf().map_err(Fail::Io)?.is_empty())
    }
}

/// The length of the UTF-8 sequence a lead byte starts (only called for a lead byte `from_utf8`
/// reported as the start of an incomplete sequence).
fn utf8_width(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}
