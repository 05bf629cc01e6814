//! Tern's classic consumer-group coordinator: Apache Kafka's `GroupCoordinator` /
//! `GroupMetadataManager` (JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit,
//! OffsetFetch, OffsetDelete, ListGroups, DescribeGroups, DeleteGroups) as a sans-io state
//! machine, plus the `__consumer_offsets` record formats ([`records`]).
//!
//! # The command model
//! Like openraft's engine, [`GroupCoordinator`] does no I/O and reads no clock. Every input is a
//! method call carrying `now_ms` (wall-clock epoch millis); mutating calls return a
//! `Vec<Command>` that the driver (the broker) executes in order:
//! - [`Command::Reply`] answers the request that carried that [`ReplyTo`] token. A request may be
//!   answered at once, or later from another call: a JoinGroup waits for the rebalance, a
//!   follower's SyncGroup for the leader's, an OffsetCommit for its append.
//! - [`Command::Append`] asks the driver to append records to a `__consumer_offsets`
//!   partition and then to report the outcome with [`GroupCoordinator::append_completed`].
//!
//! Timers (session timeouts, rebalance timeouts, the initial rebalance delay, offset expiry)
//! fire from [`GroupCoordinator::tick`]; [`GroupCoordinator::next_deadline`] says when to call it.
//! Read-only requests (OffsetFetch, ListGroups, DescribeGroups) and Heartbeat answer directly.
//!
//! # Invariants
//! - Every `ReplyTo` handed in is answered exactly once. (Loading a partition that is still
//!   loaded drops its parked requests: call [`GroupCoordinator::unload_partition`] first.)
//! - An offset commit is acknowledged, and becomes visible to OffsetFetch, only after its
//!   append completed successfully. A generation's assignment reaches the members only after
//!   the group record was appended.
//! - Requests for a group whose `__consumer_offsets` partition is not loaded get
//!   NOT_COORDINATOR (COORDINATOR_LOAD_IN_PROGRESS while it loads).
//! - Records are Kafka's byte for byte: a log written by Kafka loads here and back.

pub mod api;
mod coordinator;
pub mod errors;
mod group;
mod membership;
mod offsets;
pub mod records;

pub use api::*;
pub use coordinator::{GroupConfig, GroupCoordinator, LoadSummary};
pub use group::GroupState;
pub use records::partition_for;

use bytes::Bytes;

/// Opaque token the driver attaches to a request; the answer comes back with it.
pub type ReplyTo = u64;

/// Identifies an [`Command::Append`] in [`GroupCoordinator::append_completed`].
pub type AppendToken = u64;

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Send `Response` to the request that carried `ReplyTo`.
    Reply(ReplyTo, Response),
    /// Append these records (key, value; a `None` value is a tombstone) to partition
    /// `partition` of `__consumer_offsets`, in order, then call `append_completed(token, ..)`.
    Append { partition: i32, records: Vec<(Bytes, Option<Bytes>)>, token: AppendToken },
}
