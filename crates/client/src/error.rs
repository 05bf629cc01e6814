//! The crate's single error type.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ApiKey;

/// Result alias used throughout the client.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `tern-client`.
///
/// `Clone` so that one failed request can fail every record future waiting on it.
#[non_exhaustive]
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A socket-level failure talking to `broker`.
    #[error("I/O error talking to {broker}: {source}")]
    Io {
        broker: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The connection to `broker` closed before a response arrived.
    #[error("connection to {broker} closed")]
    ConnectionClosed { broker: String },
    /// A request did not complete in time.
    #[error("{api:?} request to {broker} timed out")]
    Timeout { api: ApiKey, broker: String },
    /// A message could not be encoded or decoded.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The broker does not support any version of `api` that this client implements.
    #[error("broker {broker} does not support a usable version of {api:?}")]
    UnsupportedVersion { api: ApiKey, broker: String },
    /// The broker answered with a Kafka error code.
    #[error("{}", format_kafka(.code, .topic, .partition, .message))]
    Kafka { code: ResponseError, topic: Option<String>, partition: Option<i32>, message: Option<String> },
    /// No broker could be reached or none is known for the request.
    #[error("no broker available: {0}")]
    NoBroker(String),
    /// Invalid user input or configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The producer or consumer was shut down.
    #[error("client is closed")]
    Closed,
    /// The producer's buffer stayed full for `max.block.ms` (librdkafka's QUEUE_FULL).
    #[error("producer buffer full: {0}")]
    BufferFull(String),
    /// A record got no acknowledgement within `delivery.timeout.ms`; it may or may not have
    /// been written.
    #[error("delivery timed out: {0}")]
    DeliveryTimeout(String),
}

impl Error {
    /// Builds a [`Error::Kafka`] from a non-zero error code; `None` for code 0.
    pub fn from_code(code: i16, topic: Option<&str>, partition: Option<i32>, message: Option<&str>) -> Option<Self> {
        ResponseError::try_from_code(code).map(|code| Error::Kafka {
            code,
            topic: topic.map(str::to_owned),
            partition,
            message: message.filter(|m| !m.is_empty()).map(str::to_owned),
        })
    }

    /// The Kafka error, if this is one.
    pub fn kafka_code(&self) -> Option<ResponseError> {
        match self {
            Error::Kafka { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether retrying the same request may succeed (Kafka's retriable errors and transport failures).
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Kafka { code, .. } => code.is_retriable(),
            Error::Io { .. } | Error::ConnectionClosed { .. } | Error::Timeout { .. } => true,
            Error::NoBroker(_) => true,
            // Sending again later may succeed (Kafka's BufferExhausted and Timeout exceptions
            // are retriable too).
            Error::BufferFull(_) | Error::DeliveryTimeout(_) => true,
            _ => false,
        }
    }

    /// Whether the cached metadata is probably stale after this error.
    pub fn invalidates_metadata(&self) -> bool {
        match self {
            Error::Kafka { code, .. } => matches!(
                code,
                ResponseError::NotLeaderOrFollower
                    | ResponseError::UnknownTopicOrPartition
                    | ResponseError::LeaderNotAvailable
                    | ResponseError::FencedLeaderEpoch
                    | ResponseError::UnknownLeaderEpoch
                    | ResponseError::UnknownTopicId
                    | ResponseError::InconsistentTopicId
                    | ResponseError::KafkaStorageError
                    | ResponseError::NotController
                    | ResponseError::BrokerNotAvailable
            ),
            Error::Io { .. } | Error::ConnectionClosed { .. } | Error::Timeout { .. } => true,
            Error::NoBroker(_) => true,
            _ => false,
        }
    }

    pub(crate) fn protocol(e: impl std::fmt::Display) -> Self {
        Error::Protocol(e.to_string())
    }

    pub(crate) fn io(broker: &str, e: std::io::Error) -> Self {
        Error::Io { broker: broker.to_owned(), source: Arc::new(e) }
    }
}

/// The Java-style name of a Kafka error code, e.g. `NOT_LEADER_OR_FOLLOWER`.
pub fn error_name(code: ResponseError) -> String {
    if let ResponseError::Unknown(_) = code {
        return "UNKNOWN_ERROR_CODE".to_owned();
    }
    let camel = format!("{code:?}");
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn format_kafka(
    code: &ResponseError,
    topic: &Option<String>,
    partition: &Option<i32>,
    message: &Option<String>,
) -> String {
    let mut s = format!("{} ({})", error_name(*code), code.code());
    match (topic, partition) {
        (Some(t), Some(p)) => s.push_str(&format!(" for {t}-{p}")),
        (Some(t), None) => s.push_str(&format!(" for topic {t}")),
        _ => {}
    }
    if let Some(m) = message {
        s.push_str(": ");
        s.push_str(m);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_java_style() {
        assert_eq!(error_name(ResponseError::NotLeaderOrFollower), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(error_name(ResponseError::OffsetOutOfRange), "OFFSET_OUT_OF_RANGE");
        let e = Error::from_code(36, Some("t"), None, Some("exists")).unwrap();
        assert_eq!(e.to_string(), "TOPIC_ALREADY_EXISTS (36) for topic t: exists");
        assert!(Error::from_code(0, None, None, None).is_none());
    }
}
