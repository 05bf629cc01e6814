//! The one place where internal errors become Kafka error codes.

use kafka_protocol::error::ResponseError;
use tern_storage::StorageError;

use crate::topics::TopicError;

pub(crate) fn storage_error_code(e: &StorageError) -> ResponseError {
    match e {
        StorageError::CorruptRecord(_) => ResponseError::CorruptMessage,
        StorageError::InvalidRecord(_) | StorageError::InvalidRecords { .. } => ResponseError::InvalidRecord,
        StorageError::InvalidTimestamp { .. } => ResponseError::InvalidTimestamp,
        StorageError::UnknownProducerId(_) => ResponseError::UnknownProducerId,
        StorageError::RecordTooLarge { .. } => ResponseError::MessageTooLarge,
        StorageError::OutOfOrderSequence(_) => ResponseError::OutOfOrderSequenceNumber,
        StorageError::InvalidProducerEpoch(_) => ResponseError::InvalidProducerEpoch,
        StorageError::DuplicateSequence(_) => ResponseError::DuplicateSequenceNumber,
        StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        StorageError::Io { .. } | StorageError::Offline { .. } => ResponseError::KafkaStorageError,
        StorageError::Deleted { .. } => ResponseError::UnknownTopicOrPartition,
        StorageError::Damaged { .. } => ResponseError::CorruptMessage,
        _ => ResponseError::UnknownServerError,
    }
}

pub(crate) fn topic_error_code(e: &TopicError) -> ResponseError {
    match e {
        TopicError::AlreadyExists(_) => ResponseError::TopicAlreadyExists,
        TopicError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        TopicError::InvalidName(_) => ResponseError::InvalidTopicException,
        TopicError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        TopicError::Storage(e) => storage_error_code(e),
        TopicError::Offline { .. } | TopicError::DataDir(_) => ResponseError::KafkaStorageError,
    }
}
