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

/// Kafka's name of an error code (`UNSUPPORTED_FOR_MESSAGE_FORMAT`), for log lines.
pub(crate) fn error_name(code: i16) -> String {
    let error = match ResponseError::try_from_code(code) {
        Some(ResponseError::Unknown(_)) | None => return format!("error {code}"),
        Some(error) => error,
    };
    let camel = format!("{error:?}");
    let mut name = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_names_are_kafkas() {
        assert_eq!(super::error_name(43), "UNSUPPORTED_FOR_MESSAGE_FORMAT");
        assert_eq!(super::error_name(56), "KAFKA_STORAGE_ERROR");
        assert_eq!(super::error_name(-999), "error -999");
    }
}
