//! Kafka's KRaft metadata records that Tern uses (`metadata/src/main/resources/common/metadata`),
//! with Kafka's field names. Record types are numbered with Kafka's API keys.

use uuid::Uuid;

pub type BrokerId = i32;

/// Kafka's `LeaderConstants.NO_LEADER`.
pub const NO_LEADER: BrokerId = -1;

/// One partition of one topic, by topic id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicIdPartition {
    pub topic_id: Uuid,
    pub partition: i32,
}

impl TopicIdPartition {
    pub fn new(topic_id: Uuid, partition: i32) -> Self {
        TopicIdPartition { topic_id, partition }
    }
}

/// A listener a broker serves on (`RegisterBrokerRecord.EndPoints`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// Kafka's `SecurityProtocol` id (0 PLAINTEXT, 1 SSL, 2 SASL_PLAINTEXT, 3 SASL_SSL).
    pub security_protocol: i16,
}

/// `RegisterBrokerRecord` (API key 0). Replaces any previous registration of the broker id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterBroker {
    pub broker_id: BrokerId,
    pub incarnation_id: Uuid,
    /// The offset of the first registration record of this incarnation.
    pub broker_epoch: i64,
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
    pub fenced: bool,
    pub in_controlled_shutdown: bool,
}

/// `UnregisterBrokerRecord` (API key 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnregisterBroker {
    pub broker_id: BrokerId,
    pub broker_epoch: i64,
}

/// `BrokerRegistrationChangeRecord` (API key 17): Kafka's successor of `FenceBrokerRecord` and
/// `UnfenceBrokerRecord`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerRegistrationChange {
    pub broker_id: BrokerId,
    pub broker_epoch: i64,
    /// `Some(true)` fences, `Some(false)` unfences, `None` leaves it.
    pub fenced: Option<bool>,
    /// Only ever set, never cleared: a broker leaves controlled shutdown by re-registering.
    pub in_controlled_shutdown: bool,
}

/// `TopicRecord` (API key 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRecord {
    pub name: String,
    pub topic_id: Uuid,
}

/// `PartitionRecord` (API key 3): the whole state of a new partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRecord {
    pub topic_id: Uuid,
    pub partition: i32,
    /// In preference order: the first is the preferred leader.
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    pub leader: BrokerId,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

/// `PartitionChangeRecord` (API key 5). Applying it bumps the partition epoch; setting
/// `leader` (even to the current leader) bumps the leader epoch, as Kafka's
/// `PartitionRegistration.merge` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionChange {
    pub topic_id: Uuid,
    pub partition: i32,
    pub isr: Option<Vec<BrokerId>>,
    /// `None` is Kafka's `NO_LEADER_CHANGE` (-2); `Some(NO_LEADER)` leaves it leaderless.
    pub leader: Option<BrokerId>,
    pub replicas: Option<Vec<BrokerId>>,
}

/// `RemoveTopicRecord` (API key 9): removes the topic, its partitions and its configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoveTopic {
    pub topic_id: Uuid,
}

/// `ProducerIdsRecord` (API key 15): the controller handed broker `broker_id` the producer ids
/// below `next_producer_id` not handed out before; the next block starts there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIds {
    pub broker_id: BrokerId,
    pub broker_epoch: i64,
    pub next_producer_id: i64,
}

/// Kafka's `ConfigResource.Type` ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConfigResourceType(pub i8);

impl ConfigResourceType {
    pub const TOPIC: ConfigResourceType = ConfigResourceType(2);
    pub const BROKER: ConfigResourceType = ConfigResourceType(4);
}

/// `ConfigRecord` (API key 4). A `None` value deletes the key. An empty resource name with
/// [`ConfigResourceType::BROKER`] is the cluster-wide default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigRecord {
    pub resource_type: ConfigResourceType,
    pub resource_name: String,
    pub name: String,
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataRecord {
    RegisterBroker(RegisterBroker),
    UnregisterBroker(UnregisterBroker),
    BrokerRegistrationChange(BrokerRegistrationChange),
    Topic(TopicRecord),
    Partition(PartitionRecord),
    PartitionChange(PartitionChange),
    RemoveTopic(RemoveTopic),
    Config(ConfigRecord),
    ProducerIds(ProducerIds),
}

impl MetadataRecord {
    /// Kafka's API key for the record type.
    pub fn api_key(&self) -> u8 {
        match self {
            MetadataRecord::RegisterBroker(_) => 0,
            MetadataRecord::UnregisterBroker(_) => 1,
            MetadataRecord::Topic(_) => 2,
            MetadataRecord::Partition(_) => 3,
            MetadataRecord::Config(_) => 4,
            MetadataRecord::PartitionChange(_) => 5,
            MetadataRecord::RemoveTopic(_) => 9,
            MetadataRecord::ProducerIds(_) => 15,
            MetadataRecord::BrokerRegistrationChange(_) => 17,
        }
    }
}
