//! Tern's partition replication engine: one replica of one partition as a sans-io state machine
//! (Apache Kafka's `Partition`, `Replica`, the leader-epoch cache and the acks=all part of
//! `DelayedProduce`).
//!
//! # The command model
//! [`Partition`] does no I/O and reads no clock: every input is a method call, with `now_ms`
//! where time matters, and mutating calls return a `Vec<Effect>` the driver (the broker) executes
//! in order. Storage appends, truncates and reads; the driver tells the machine what changed
//! ([`Partition::leader_appended`], [`Partition::apply_fetch_response`],
//! [`Partition::truncate_to`], ...). Requests that are only validated answer directly
//! ([`Partition::check_leader_epoch`], [`Partition::check_append`],
//! [`Partition::last_offset_for_leader_epoch`]); a follower's fetch answers directly and may
//! also return effects.
//!
//! - The controller's decisions come in through [`Partition::apply_leader_and_isr`] (become
//!   leader or follower; a partition epoch older than the current one is ignored, as in
//!   Kafka's `makeLeader`/`makeFollower`) and [`Partition::update_brokers`] (which brokers are
//!   fenced or shutting down, and their epochs).
//! - A leader never changes its ISR itself: it emits [`Effect::AlterPartition`] and waits for
//!   [`Partition::alter_partition_completed`]. While a proposal is in flight the high watermark
//!   uses the *maximal* ISR (committed ISR plus a replica being added), and `min.insync.replicas`
//!   is checked against the committed ISR (KIP-497).
//! - An acks=all produce registers with [`Partition::await_replication`] and is answered by
//!   [`Effect::CompleteProduce`] once the high watermark reaches its offset, at its deadline
//!   (REQUEST_TIMED_OUT), or when this broker stops leading (NOT_LEADER_OR_FOLLOWER).
//! - Timers (ISR shrink, produce deadlines) fire from [`Partition::tick`]; Kafka runs the shrink
//!   check every `replica.lag.time.max.ms / 2`.
//!
//! # Invariants
//! - The high watermark never exceeds the local log end offset, and on a leader never goes
//!   backwards. It advances only to an offset every member of the maximal ISR (and every
//!   caught-up, ISR-eligible follower) has reached, and not at all while the committed ISR is
//!   smaller than `min.insync.replicas` (KAFKA-15583).
//! - An acks=all produce succeeds only when the high watermark has reached its offset, hence
//!   only after every committed-ISR member has it. Every registered request is answered exactly
//!   once; none survives the loss of leadership.
//! - A leader proposes to add a follower only if it is eligible (registered, not fenced, not in
//!   controlled shutdown, fetching with its current broker epoch: KIP-841, KIP-903) and has
//!   reached both the high watermark and the start of the current leader epoch. One proposal is
//!   in flight at a time; an answer to any other proposal is ignored.
//! - The crate depends on nothing: no async runtime, no storage, no protocol codec.

mod api;
pub mod epochs;
pub mod errors;
mod follower;
mod partition;

pub use api::*;
pub use epochs::{EpochEndOffset, EpochEntry, LeaderEpochCache};
pub use follower::{FollowerState, UNKNOWN_OFFSET};
pub use partition::Partition;

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send this AlterPartition to the controller, then report its answer with
    /// [`Partition::alter_partition_completed`].
    AlterPartition(AlterPartitionProposal),
    /// Answer the acks=all produce registered as `request_id` with this error code (NONE on
    /// success).
    CompleteProduce { request_id: RequestId, error_code: i16 },
    /// The high watermark moved: checkpoint it, and retry delayed fetches.
    HighWatermarkChanged { high_watermark: i64 },
    /// (Re)start fetching from this leader at the local log end offset: the leader epoch changed.
    FetchFrom { leader_id: BrokerId, leader_epoch: i32 },
    /// Stop fetching: this broker became the leader.
    StopFetching,
}
