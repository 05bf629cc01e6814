//! Kafka-protocol broker.
