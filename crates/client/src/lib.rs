//! Async Kafka client.
