//! Building and splitting v2 record batches with the `kafka-protocol` codec.

use bytes::{Buf, Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
};

use crate::error::{Error, Result};

/// Bytes of framing a record adds on top of key, value and headers (worst-case varints).
pub(crate) const RECORD_OVERHEAD: usize = 21;
/// Bytes of a v2 batch header.
pub(crate) const BATCH_OVERHEAD: usize = 61;

/// A record as the producer hands it to the encoder: offset delta `index`, no producer id.
pub(crate) fn producer_record(
    index: i32,
    timestamp: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
    headers: Vec<(String, Option<Bytes>)>,
) -> Record {
    let headers = if headers.is_empty() {
        IndexMap::new()
    } else {
        headers.into_iter().map(|(k, v)| (StrBytes::from_string(k), v)).collect()
    };
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
        producer_id: NO_PRODUCER_ID,
        producer_epoch: NO_PRODUCER_EPOCH,
        timestamp_type: TimestampType::Creation,
        offset: index as i64,
        // The encoder groups records whose (offset - sequence) agree and writes the first
        // sequence as the base: this keeps one batch with base sequence -1 (none).
        sequence: index - 1,
        timestamp,
        key,
        value,
        headers,
    }
}

/// Encodes `records` (offsets 0..n) as exactly one v2 batch.
pub(crate) fn encode_batch(records: &[Record], compression: Compression, size_hint: usize) -> Result<Bytes> {
    let mut buf = BytesMut::with_capacity(size_hint + BATCH_OVERHEAD);
    let opts = RecordEncodeOptions { version: 2, compression };
    RecordBatchEncoder::encode(&mut buf, records.iter(), &opts).map_err(Error::protocol)?;
    Ok(buf.freeze())
}

/// One complete batch cut out of a fetched record set.
pub(crate) struct RawBatch {
    pub base_offset: i64,
    /// Offset after the batch's last offset (what a consumer fetches next).
    pub next_offset: i64,
    pub is_control: bool,
    pub data: Bytes,
}

/// Splits `buf` into complete batches; a trailing partial batch (cut by max_bytes) is ignored.
pub(crate) fn split_batches(mut buf: Bytes) -> Vec<RawBatch> {
    let mut out = Vec::new();
    // base_offset(8) length(4) epoch(4) magic(1) crc(4) attributes(2) last_offset_delta(4)
    while buf.len() >= 27 {
        let base_offset = (&buf[0..8]).get_i64();
        let len = (&buf[8..12]).get_i32();
        if len < 0 {
            break;
        }
        let total = 12 + len as usize;
        if buf.len() < total || (len as usize) < 15 {
            break;
        }
        let magic = buf[16] as i8;
        let attributes = (&buf[21..23]).get_i16();
        let last_delta = (&buf[23..27]).get_i32();
        let data = buf.split_to(total);
        if magic != 2 {
            // Legacy message sets are not supported; skip past them rather than fail.
            tracing::warn!(magic, base_offset, "skipping pre-v2 message set");
            continue;
        }
        out.push(RawBatch {
            base_offset,
            next_offset: base_offset + last_delta as i64 + 1,
            is_control: attributes & (1 << 5) != 0,
            data,
        });
    }
    out
}

/// Decodes one complete batch into its records.
pub(crate) fn decode_batch(batch: &RawBatch) -> Result<Vec<Record>> {
    let mut data = batch.data.clone();
    RecordBatchDecoder::decode(&mut data)
        .map(|set| set.records)
        .map_err(|e| Error::Protocol(format!("batch at offset {}: {e}", batch.base_offset)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: i32) -> Vec<Record> {
        (0..n)
            .map(|i| {
                let key = (i % 3 != 0).then(|| Bytes::from(format!("key-{i}")));
                let value = (i % 5 != 4).then(|| Bytes::from(vec![b'v'; 100 + i as usize]));
                let headers = if i % 2 == 0 {
                    vec![("h".to_owned(), Some(Bytes::from_static(b"x"))), ("n".to_owned(), None)]
                } else {
                    vec![]
                };
                producer_record(i, 1_700_000_000_000 + i as i64, key, value, headers)
            })
            .collect()
    }

    #[test]
    fn roundtrip_all_compressions() {
        for c in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let recs = sample(50);
            let mut bytes = BytesMut::new();
            let one = encode_batch(&recs, c, 1024).unwrap();
            // Pretend the broker assigned base offset 1000.
            let mut rebased = BytesMut::from(&one[..]);
            rebased[0..8].copy_from_slice(&1000i64.to_be_bytes());
            bytes.extend_from_slice(&rebased);
            bytes.extend_from_slice(&rebased);
            // A partial third batch as cut by max_bytes.
            bytes.extend_from_slice(&rebased[..rebased.len() / 2]);
            let batches = split_batches(bytes.freeze());
            assert_eq!(batches.len(), 2, "{c:?}");
            for b in &batches {
                assert_eq!(b.base_offset, 1000);
                assert_eq!(b.next_offset, 1050);
                assert!(!b.is_control);
                let got = decode_batch(b).unwrap();
                assert_eq!(got.len(), 50);
                for (i, (g, w)) in got.iter().zip(&recs).enumerate() {
                    assert_eq!(g.offset, 1000 + i as i64, "{c:?}");
                    assert_eq!(g.timestamp, w.timestamp);
                    assert_eq!(g.key, w.key);
                    assert_eq!(g.value, w.value);
                    assert_eq!(g.headers, w.headers);
                    assert_eq!(g.producer_id, -1);
                }
            }
        }
    }

    #[test]
    fn one_batch_with_no_sequence() {
        let recs = sample(10);
        let b = encode_batch(&recs, Compression::None, 0).unwrap();
        let info = RecordBatchDecoder::decode_batch_info(&mut b.clone()).unwrap();
        assert_eq!(info.len(), 1);
        assert_eq!(info[0].record_count, 10);
        assert_eq!(info[0].base_sequence, -1);
        assert_eq!(info[0].producer_id, -1);
    }

    #[test]
    fn split_ignores_short_tail() {
        assert!(split_batches(Bytes::from_static(&[0u8; 10])).is_empty());
        assert!(split_batches(Bytes::new()).is_empty());
    }
}
