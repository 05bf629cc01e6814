//! Tern's partition replication engine (sans-io). So far: Kafka's leader-epoch cache.

pub mod epochs;
pub mod errors;

pub use epochs::{EpochEndOffset, EpochEntry, LeaderEpochCache};
