//! The controller quorum on openraft: the replicated log holds batches of metadata records
//! ([`RecordBatch`]); the state machine applies committed batches to the committed
//! [`MetadataImage`](tern_metadata::MetadataImage), and its snapshots are the encoded image.
//!
//! - [`LogStore`] and [`StateMachineStore`] keep everything in memory and, when given a
//!   directory, also persist it: an append-only log file with a CRC per entry, fsynced on
//!   append; the vote, the purge point and snapshots written atomically (temp file, fsync,
//!   rename).
//! - The transport is openraft's [`RaftNetworkFactory`](openraft::RaftNetworkFactory);
//!   [`Router`] is the in-process one the tests use; [`TcpNetwork`] and [`QuorumServer`]
//!   carry the same RPCs between voters over TCP, in the [`codec`] wire encoding.
//! - [`ControllerNode`] runs one voter: the Raft instance, its stores, and, while it leads,
//!   the active [`Controller`](crate::Controller) whose records it proposes; its ticker fences
//!   expired broker sessions, [`ControllerNode::applied`] says when the committed image moved,
//!   [`ControllerNode::quorum_info`] describes the quorum.
//! - [`QuorumServer`] also answers Kafka requests for the active controller ([`rpc`]), and
//!   [`ControllerClient`] sends them, to whichever voter is the active controller.
//!
//! This module is the only one that imports openraft.

// openraft's traits return its large error types; helpers return them too, as its examples do.
#![allow(clippy::result_large_err)]

mod client;
pub mod codec;
mod log_store;
mod network;
mod node;
pub mod rpc;
mod setup;
mod state_machine;
mod tcp;

use std::io::Cursor;

use tern_metadata::MetadataRecord;

pub use client::{ControllerClient, ControllerClientError, RETRY_BACKOFF};
pub use log_store::LogStore;
pub use network::Router;
pub use node::{now_ms, ControllerNode, NodeError, QuorumInfo, ReplicaState, MAX_TICK_INTERVAL};
pub use state_machine::{CommittedState, StateMachineStore};
pub use tcp::{
    parse_quorum_voters, QuorumServer, TcpConnection, TcpNetwork, VotersError, DEFAULT_REQUEST_TIMEOUT, MAX_FRAME_BYTES,
};

pub type NodeId = u64;

/// The records of one controller request, committed atomically as one log entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordBatch(pub Vec<MetadataRecord>);

/// The answer of the state machine to an applied batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchApplied {
    /// The metadata offset of the batch's last record (the image's offset after it).
    pub last_offset: i64,
}

openraft::declare_raft_types!(
    /// openraft's types for the controller quorum.
    pub TypeConfig:
        D = RecordBatch,
        R = BatchApplied,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
