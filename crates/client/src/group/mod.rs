//! Consumer groups, Kafka's classic protocol, client side.
//!
//! - [`assignor`]: the partition assignors the group leader runs (`range`, `roundrobin`,
//!   `cooperative-sticky`).
//! - [`metadata`]: the subscription and assignment bytes members exchange through the broker.
//! - `coordinator`: the group's requests (FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//!   LeaveGroup, OffsetCommit, OffsetFetch) on a connection to the group coordinator.
//! - [`consumer`]: [`GroupConsumer`], which subscribes to topics, takes part in rebalances,
//!   fetches with the simple [`Consumer`](crate::Consumer) and commits offsets.

pub mod assignor;
pub mod consumer;
pub(crate) mod coordinator;
mod heartbeat;
pub mod metadata;
mod sticky;

pub use assignor::{
    assignor_by_name, default_assignors, Assignment, CooperativeStickyAssignor, PartitionAssignor, RangeAssignor,
    RoundRobinAssignor, Subscription,
};
pub use consumer::{GroupConsumer, GroupConsumerConfig, RebalanceEvent, RebalanceListener};

/// The protocol type of consumer groups in JoinGroup, ListGroups and DescribeGroups.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// A partition of a topic; orders by topic, then partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        TopicPartition { topic: topic.into(), partition }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}
