//! The idempotent producer's pieces (Kafka's `TransactionManager`, without transactions): the
//! producer id and epoch from InitProducerId, the sequence numbers stamped on batches, and what a
//! Produce error means for a numbered batch.

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, ProducerId};
use kafka_protocol::records::Record;

use crate::cluster::Cluster;
use crate::error::{Error, Result};

/// What an idempotent batch carries in its header: who wrote it and its first sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub producer_id: i64,
    pub epoch: i16,
    pub base_sequence: i32,
}

/// Kafka's `DefaultRecordBatch.incrementSequence`: sequences wrap from `i32::MAX` to 0.
pub(crate) fn increment_sequence(sequence: i32, increment: u32) -> i32 {
    let room = (i32::MAX - sequence) as u32;
    if increment > room {
        (increment - room - 1) as i32
    } else {
        sequence + increment as i32
    }
}

/// Sets the producer fields of records about to be encoded as one batch. Within the batch the
/// sequence may wrap past `i32::MAX` (the encoder only writes the first one, as the header's base
/// sequence, and groups records by offset minus sequence in wrapping arithmetic).
pub(crate) fn stamp_records(records: &mut [Record], stamp: Stamp) {
    for (i, r) in records.iter_mut().enumerate() {
        r.producer_id = stamp.producer_id;
        r.producer_epoch = stamp.epoch;
        r.sequence = stamp.base_sequence.wrapping_add(i as i32);
    }
}

// Offsets in a v2 batch header.
const CRC: usize = 17;
const ATTRIBUTES: usize = 21;
const PRODUCER_ID: usize = 43;
const PRODUCER_EPOCH: usize = 51;
const BASE_SEQUENCE: usize = 53;
const HEADER_LEN: usize = 61;

/// Rewrites the producer id, epoch and base sequence of one encoded v2 batch and its CRC
/// (which covers everything from the attributes on), as the Java client's
/// `ProducerBatch.resetProducerState` does after a producer id reset.
pub(crate) fn restamp_batch(batch: &Bytes, stamp: Stamp) -> Result<Bytes> {
    if batch.len() < HEADER_LEN || batch[16] != 2 {
        return Err(Error::Protocol("cannot restamp a batch that is not a v2 record batch".into()));
    }
    let mut b = BytesMut::from(&batch[..]);
    b[PRODUCER_ID..PRODUCER_EPOCH].copy_from_slice(&stamp.producer_id.to_be_bytes());
    b[PRODUCER_EPOCH..BASE_SEQUENCE].copy_from_slice(&stamp.epoch.to_be_bytes());
    b[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&stamp.base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&b[ATTRIBUTES..]);
    b[CRC..ATTRIBUTES].copy_from_slice(&crc.to_be_bytes());
    Ok(b.freeze())
}

/// What to do with a numbered batch the broker refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Send it again with the same producer id and sequence.
    Retry,
    /// The broker no longer agrees on this producer's sequence: get a new producer id, then send
    /// it again renumbered.
    RetryAfterReset,
    /// Give it up.
    Fail,
}

/// Kafka's rules (`TransactionManager.canRetry` and the KIP-360 epoch bump) for an error on a
/// batch with a sequence. `oldest` says whether no earlier batch of its partition is still
/// unacknowledged: an OUT_OF_ORDER_SEQUENCE_NUMBER behind an earlier batch that failed and is
/// being retried is expected (the broker refuses the gap) and only needs a retry in order.
pub(crate) fn refusal(e: &Error, numbered: bool, oldest: bool) -> Refusal {
    match e.kafka_code() {
        Some(ResponseError::OutOfOrderSequenceNumber) if numbered && !oldest => Refusal::Retry,
        Some(
            ResponseError::OutOfOrderSequenceNumber
            | ResponseError::UnknownProducerId
            | ResponseError::InvalidProducerEpoch,
        ) if numbered => Refusal::RetryAfterReset,
        _ if e.is_retriable() => Refusal::Retry,
        _ => Refusal::Fail,
    }
}

/// Asks any broker for a new producer id (epoch 0 on a new id). A failed reset asks again
/// without the old id, so it never depends on the broker knowing it.
pub(crate) async fn init_producer_id(cluster: &Cluster) -> Result<(i64, i16)> {
    let conn = cluster.any_connection().await?;
    let version = conn.version_of::<InitProducerIdRequest>().map_err(|_| {
        Error::Config(format!(
            "broker {} does not support InitProducerId: it cannot serve an idempotent producer \
             (turn enable.idempotence off)",
            conn.addr()
        ))
    })?;
    // Java's idempotent producer sends no transactional id and the largest timeout.
    let req = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(i32::MAX)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let resp = conn.enqueue(&req, version)?.wait().await?;
    if let Some(e) = Error::from_code(resp.error_code, None, None, Some("InitProducerId")) {
        return Err(e);
    }
    if resp.producer_id.0 < 0 || resp.producer_epoch < 0 {
        return Err(Error::Protocol(format!(
            "InitProducerId answered producer id {} epoch {}",
            resp.producer_id.0, resp.producer_epoch
        )));
    }
    Ok((resp.producer_id.0, resp.producer_epoch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{encode_batch, producer_record};
    use kafka_protocol::records::{Compression, RecordBatchDecoder};

    #[test]
    fn sequences_wrap_to_zero() {
        assert_eq!(increment_sequence(0, 5), 5);
        assert_eq!(increment_sequence(i32::MAX - 5, 5), i32::MAX);
        assert_eq!(increment_sequence(i32::MAX - 5, 6), 0);
        assert_eq!(increment_sequence(i32::MAX, 3), 2);
    }

    fn batch(n: i32, stamp: Option<Stamp>) -> Bytes {
        let mut records: Vec<Record> =
            (0..n).map(|i| producer_record(i, 1_000 + i as i64, None, Some(Bytes::from("v")), vec![])).collect();
        if let Some(s) = stamp {
            stamp_records(&mut records, s);
        }
        encode_batch(&records, Compression::Lz4, 64).unwrap()
    }

    #[test]
    fn stamped_batches_stay_one_batch_even_across_the_wrap() {
        for base in [0, 17, i32::MAX - 3] {
            let s = Stamp { producer_id: 42, epoch: 3, base_sequence: base };
            let b = batch(10, Some(s));
            let info = RecordBatchDecoder::decode_batch_info(&mut b.clone()).unwrap();
            assert_eq!(info.len(), 1, "base {base}");
            assert_eq!((info[0].producer_id, info[0].producer_epoch, info[0].base_sequence), (42, 3, base));
        }
    }

    #[test]
    fn restamping_rewrites_the_header_and_a_valid_crc() {
        let b = batch(7, Some(Stamp { producer_id: 1, epoch: 0, base_sequence: 40 }));
        let s = Stamp { producer_id: 99, epoch: 2, base_sequence: 0 };
        let again = restamp_batch(&b, s).unwrap();
        // Decoding checks the CRC.
        let set = RecordBatchDecoder::decode(&mut again.clone()).unwrap();
        assert_eq!(set.records.len(), 7);
        for (i, r) in set.records.iter().enumerate() {
            assert_eq!((r.producer_id, r.producer_epoch, r.sequence), (99, 2, i as i32));
        }
        assert!(restamp_batch(&Bytes::from_static(b"short"), s).is_err());
    }

    #[test]
    fn refusals_follow_kafka() {
        let code = |c: ResponseError| Error::from_code(c.code(), Some("t"), Some(0), None).unwrap();
        let oos = code(ResponseError::OutOfOrderSequenceNumber);
        assert_eq!(refusal(&oos, true, false), Refusal::Retry);
        assert_eq!(refusal(&oos, true, true), Refusal::RetryAfterReset);
        assert_eq!(refusal(&code(ResponseError::UnknownProducerId), true, false), Refusal::RetryAfterReset);
        assert_eq!(refusal(&code(ResponseError::NotLeaderOrFollower), true, true), Refusal::Retry);
        assert_eq!(refusal(&code(ResponseError::MessageTooLarge), true, true), Refusal::Fail);
        assert_eq!(refusal(&code(ResponseError::NotLeaderOrFollower), false, true), Refusal::Retry);
    }
}
