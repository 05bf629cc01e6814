//! Tern's controller: the sans-io controller state machine ([`Controller`]) over the metadata
//! image, and its replication by a Raft quorum of controllers built on openraft ([`raft`]).
//!
//! # The command model
//! [`Controller`] does no I/O and reads no clock: each request is a method call (with
//! `now_ms` where time matters) that returns a [`ControllerResult`]: the metadata records to
//! commit, in order, and the answer to send once they are committed. Session expiry fires
//! from [`Controller::tick`]. The records are already applied to the controller's working
//! image when they are returned.
//!
//! # Brokers and the controller
//! [`raft::ControllerNode`] runs one voter of the quorum and, while it leads, the active
//! controller. Brokers send it Kafka's controller requests over the quorum port
//! ([`raft::rpc`]) with a [`raft::ControllerClient`], which finds the active controller among
//! the voters; a broker co-located with a voter ("combined" mode) reads the committed image
//! from the node, woken by [`raft::ControllerNode::applied`].

pub mod api;
mod controller;
pub mod errors;
pub mod partition_change;
pub mod placement;
mod rng;

pub use api::*;
pub use controller::{Controller, ControllerConfig, PRODUCER_ID_BLOCK_SIZE, UNCLEAN_LEADER_ELECTION_ENABLE};
pub use rng::Rng;
pub mod raft;
