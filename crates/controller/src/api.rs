//! Requests to the controller and its answers. Fields follow Kafka's messages
//! (BrokerRegistration, BrokerHeartbeat, CreateTopics, CreatePartitions, DeleteTopics,
//! AlterPartition, ElectLeaders), reduced to what the controller decides on.

use tern_metadata::{BrokerId, Endpoint, MetadataRecord, Uuid};

/// What a request produced: the records to commit, in order, and the answer to send once
/// they are committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerResult<T> {
    pub records: Vec<MetadataRecord>,
    pub response: T,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRegistrationRequest {
    pub broker_id: BrokerId,
    pub incarnation_id: Uuid,
    pub listeners: Vec<Endpoint>,
    pub rack: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerRegistrationReply {
    pub error_code: i16,
    pub broker_epoch: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerHeartbeatRequest {
    pub broker_id: BrokerId,
    pub broker_epoch: i64,
    /// The offset of the last metadata record the broker applied.
    pub current_metadata_offset: i64,
    pub want_fence: bool,
    pub want_shutdown: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BrokerHeartbeatReply {
    pub error_code: i16,
    /// The broker has applied its own registration record.
    pub is_caught_up: bool,
    pub is_fenced: bool,
    pub in_controlled_shutdown: bool,
    pub should_shutdown: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatableTopic {
    pub name: String,
    /// -1 for `num.partitions`; must be -1 with `assignments`.
    pub num_partitions: i32,
    /// -1 for `default.replication.factor`; must be -1 with `assignments`.
    pub replication_factor: i16,
    /// Manual placement: the replicas of partitions 0, 1, ... in order.
    pub assignments: Vec<Vec<BrokerId>>,
    pub configs: Vec<(String, Option<String>)>,
}

impl CreatableTopic {
    pub fn new(name: &str, num_partitions: i32, replication_factor: i16) -> Self {
        CreatableTopic {
            name: name.to_string(),
            num_partitions,
            replication_factor,
            assignments: Vec::new(),
            configs: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatableTopicResult {
    pub name: String,
    /// Nil on error.
    pub topic_id: Uuid,
    pub error_code: i16,
    pub error_message: Option<String>,
    pub num_partitions: i32,
    pub replication_factor: i16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatePartitionsTopic {
    pub name: String,
    /// The new total number of partitions.
    pub count: i32,
    /// Manual placement of the new partitions only.
    pub assignments: Option<Vec<Vec<BrokerId>>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicError {
    pub name: String,
    pub error_code: i16,
    pub error_message: Option<String>,
}

/// A topic to delete, by name (DeleteTopics v0-5) or by id (v6+).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicRef {
    Name(String),
    Id(Uuid),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletableTopicResult {
    pub topic: TopicRef,
    pub topic_id: Uuid,
    pub error_code: i16,
}

/// A member of a proposed ISR, with the broker epoch the leader saw (-1: not checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsrMember {
    pub broker_id: BrokerId,
    pub broker_epoch: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterPartitionRequest {
    /// The request version: topics are named by id from v2 (by name before), and ineligible
    /// replicas get INELIGIBLE_REPLICA from v2 (OPERATION_NOT_ATTEMPTED before).
    pub version: i16,
    pub broker_id: BrokerId,
    pub broker_epoch: i64,
    pub topics: Vec<AlterPartitionTopic>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterPartitionTopic {
    pub topic_id: Uuid,
    pub topic_name: String,
    pub partitions: Vec<AlterPartitionData>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterPartitionData {
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<IsrMember>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlterPartitionResponse {
    /// STALE_BROKER_EPOCH when the requesting broker's epoch is not current; then `topics` is
    /// empty.
    pub error_code: i16,
    pub topics: Vec<AlterPartitionTopicResult>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterPartitionTopicResult {
    pub topic_id: Uuid,
    pub topic_name: String,
    pub partitions: Vec<AlterPartitionResult>,
}

/// The partition as the controller now records it when `error_code` is NONE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterPartitionResult {
    pub partition: i32,
    pub error_code: i16,
    pub leader: BrokerId,
    pub leader_epoch: i32,
    pub isr: Vec<BrokerId>,
    pub partition_epoch: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionType {
    Preferred = 0,
    Unclean = 1,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectLeadersTopicResult {
    pub topic: String,
    /// (partition, error code)
    pub partitions: Vec<(i32, i16)>,
}
