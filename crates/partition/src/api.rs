//! The values that go in and out of a [`crate::Partition`]: controller state, broker
//! registrations, fetches, AlterPartition proposals. Fields follow Kafka's messages.

use std::collections::BTreeSet;

use crate::epochs::{EpochEndOffset, LeaderEpochCache};

pub type BrokerId = i32;

/// Kafka's `NO_LEADER`.
pub const NO_LEADER: BrokerId = -1;

/// Identifies an acks=all produce in [`crate::Effect::CompleteProduce`]; chosen by the driver,
/// unique among the partition's waiting requests.
pub type RequestId = u64;

/// Identifies an AlterPartition proposal in [`crate::Partition::alter_partition_completed`].
pub type ProposalId = u64;

/// Settings with Kafka's names and defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionConfig {
    /// `replica.lag.time.max.ms`
    pub replica_lag_time_max_ms: i64,
    /// `min.insync.replicas` (a topic config)
    pub min_insync_replicas: i32,
}

impl Default for PartitionConfig {
    fn default() -> Self {
        PartitionConfig { replica_lag_time_max_ms: 30_000, min_insync_replicas: 1 }
    }
}

/// The partition as the controller last recorded it (KRaft's `PartitionRegistration`, or an
/// accepted AlterPartition's answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderAndIsr {
    /// [`NO_LEADER`] when the partition has none.
    pub leader: BrokerId,
    pub leader_epoch: i32,
    /// Bumped by the controller on every change to the partition (KRaft's partition epoch).
    pub partition_epoch: i32,
    /// The assigned replicas, in preference order.
    pub replicas: Vec<BrokerId>,
    pub isr: BTreeSet<BrokerId>,
}

/// One broker as the metadata image shows it; decides ISR eligibility (KIP-841) and fences
/// fetches from a previous incarnation of the broker (KIP-903).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerRegistration {
    pub broker_epoch: i64,
    pub fenced: bool,
    pub in_controlled_shutdown: bool,
}

/// The local log as storage found it when the partition was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalLog {
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    /// From the high-watermark checkpoint.
    pub high_watermark: i64,
    pub epochs: LeaderEpochCache,
}

/// A Fetch from a follower, for this partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerFetch {
    pub replica_id: BrokerId,
    /// Fetch v15+ `ReplicaState.ReplicaEpoch` (KIP-903); -1 when absent.
    pub broker_epoch: i64,
    /// Fetch v9+ (KIP-320).
    pub current_leader_epoch: Option<i32>,
    pub fetch_offset: i64,
    /// Fetch v12+ (KIP-595): the epoch of the last record the follower has.
    pub last_fetched_epoch: Option<i32>,
    pub log_start_offset: i64,
}

/// The leader's answer to a valid follower fetch. Offsets are the leader's as the fetch arrived
/// (before this fetch moved the high watermark), as in Kafka's `LogReadInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerFetchAnswer {
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    /// Set when the follower's log diverges from the leader's: send no records; the follower
    /// truncates to this epoch's end offset.
    pub diverging_epoch: Option<EpochEndOffset>,
}

/// What a follower's fetcher got from the leader, after storage appended the records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedFromLeader {
    /// (partition leader epoch, base offset) of every appended batch, in order.
    pub batches: Vec<(i32, i64)>,
    /// The local log end offset after the append.
    pub log_end_offset: i64,
    pub leader_high_watermark: i64,
    pub leader_log_start_offset: i64,
}

/// A member of a proposed ISR, with the broker epoch the leader saw it fetch with (-1 unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct IsrMember {
    pub broker_id: BrokerId,
    pub broker_epoch: i64,
}

/// An AlterPartition request for this partition (leader recovery state is always RECOVERED).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterPartitionProposal {
    pub proposal_id: ProposalId,
    pub leader_id: BrokerId,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<IsrMember>,
}

impl AlterPartitionProposal {
    pub fn isr(&self) -> BTreeSet<BrokerId> {
        self.new_isr.iter().map(|m| m.broker_id).collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
}
