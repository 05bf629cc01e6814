//! Tern's cluster metadata: the KRaft metadata records ([`records`]), their stable encoding
//! ([`codec`]), and the [`MetadataImage`] they build when applied in log order, with the
//! [`MetadataDelta`] of a batch and each broker's [`LocalChanges`].
//!
//! The controller quorum writes these records to its Raft log; every controller applies them
//! to its image, and brokers (later) apply the same records to theirs. The crate does no I/O
//! and knows nothing of Raft.
//!
//! # Invariants
//! - Applying the same records in the same order to the same image gives the same image:
//!   [`MetadataImage::apply`] is deterministic, and a record that does not apply changes
//!   nothing but still takes its offset.
//! - Record `n` of the log (from 0) is applied at offset `n`: a broker's epoch is the offset
//!   of its registration record.
//! - A snapshot ([`MetadataImage::encode_snapshot`]) decodes to an equal image.
//! - A partition's partition epoch grows on every change; its leader epoch grows whenever a
//!   change names a leader.

pub mod codec;
mod delta;
mod image;
pub mod records;

pub use delta::{LocalChanges, LocalPartition, MetadataDelta};
pub use image::{ApplyError, BrokerRegistration, MetadataImage, PartitionRegistration, SnapshotError, TopicImage};
pub use records::*;
pub use uuid::Uuid;
