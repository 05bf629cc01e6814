//! The metadata image: the state that the committed metadata records build, applied in log
//! order (Kafka's `MetadataImage`, applied in place rather than rebuilt per batch).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use uuid::Uuid;

use crate::codec::{self, DecodeError, Reader, Writer};
use crate::delta::MetadataDelta;
use crate::records::*;

/// A registered broker (Kafka's `BrokerRegistration`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRegistration {
    pub id: BrokerId,
    pub incarnation_id: Uuid,
    pub epoch: i64,
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
    pub fenced: bool,
    pub in_controlled_shutdown: bool,
}

impl BrokerRegistration {
    /// May lead partitions and join ISRs: unfenced and not shutting down (Kafka's `isActive`).
    pub fn is_active(&self) -> bool {
        !self.fenced && !self.in_controlled_shutdown
    }
}

/// A partition's replicas, ISR and leadership (Kafka's `PartitionRegistration`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRegistration {
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    /// [`NO_LEADER`] when the partition has none.
    pub leader: BrokerId,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

impl PartitionRegistration {
    pub fn has_leader(&self) -> bool {
        self.leader != NO_LEADER
    }

    /// The leader is the first replica.
    pub fn has_preferred_leader(&self) -> bool {
        self.replicas.first() == Some(&self.leader)
    }

    /// The state after `change` (Kafka's `PartitionRegistration.merge`): the partition epoch
    /// always moves; the leader epoch moves whenever the record names a leader.
    pub fn merge(&self, change: &PartitionChange) -> PartitionRegistration {
        let (leader, leader_epoch) = match change.leader {
            Some(leader) => (leader, self.leader_epoch + 1),
            None => (self.leader, self.leader_epoch),
        };
        PartitionRegistration {
            replicas: change.replicas.clone().unwrap_or_else(|| self.replicas.clone()),
            isr: change.isr.clone().unwrap_or_else(|| self.isr.clone()),
            leader,
            leader_epoch,
            partition_epoch: self.partition_epoch + 1,
        }
    }

    fn to_record(&self, tp: TopicIdPartition) -> PartitionRecord {
        PartitionRecord {
            topic_id: tp.topic_id,
            partition: tp.partition,
            replicas: self.replicas.clone(),
            isr: self.isr.clone(),
            leader: self.leader,
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    pub id: Uuid,
    pub name: String,
    pub partitions: BTreeMap<i32, PartitionRegistration>,
}

/// Why a record could not be applied. The image is left as it was, and the record still
/// takes its offset: every replica skips the same records, so images stay identical.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("unknown topic id {0}")]
    UnknownTopic(Uuid),
    #[error("unknown partition {}-{}", .0.topic_id, .0.partition)]
    UnknownPartition(TopicIdPartition),
    #[error("topic name {name} is already used by topic id {existing}")]
    TopicNameInUse { name: String, existing: Uuid },
    #[error("topic id {0} already exists")]
    TopicIdInUse(Uuid),
    #[error("broker {0} is not registered")]
    UnknownBroker(BrokerId),
    #[error("broker {broker_id} has epoch {current}, not {record}")]
    StaleBrokerEpoch { broker_id: BrokerId, current: i64, record: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a metadata image snapshot")]
    BadMagic,
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("snapshot record does not apply: {0}")]
    Apply(#[from] ApplyError),
}

const SNAPSHOT_MAGIC: &[u8; 4] = b"TMI\0";

/// Brokers, topics, partitions and configs as of [`MetadataImage::offset`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataImage {
    /// The offset of the last record applied; -1 for the empty image.
    offset: i64,
    brokers: BTreeMap<BrokerId, BrokerRegistration>,
    topics: BTreeMap<Uuid, TopicImage>,
    topic_ids: HashMap<String, Uuid>,
    configs: BTreeMap<(ConfigResourceType, String), BTreeMap<String, String>>,
    /// Derived from `topics`: the partitions each broker is a replica of, so that a broker's
    /// partitions are found without scanning every partition.
    hosted: HashMap<BrokerId, HashSet<TopicIdPartition>>,
    /// Derived from `topics`: partitions without a leader.
    leaderless: BTreeSet<TopicIdPartition>,
    /// Every producer id below this was handed to some broker (`ProducerIdsRecord`).
    next_producer_id: i64,
}

impl Default for MetadataImage {
    fn default() -> Self {
        MetadataImage {
            offset: -1,
            brokers: BTreeMap::new(),
            topics: BTreeMap::new(),
            topic_ids: HashMap::new(),
            configs: BTreeMap::new(),
            hosted: HashMap::new(),
            leaderless: BTreeSet::new(),
            next_producer_id: 0,
        }
    }
}

impl MetadataImage {
    pub fn new() -> Self {
        Self::default()
    }

    /// The offset of the last record applied (-1 for none); the next record gets `offset() + 1`.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// Applies the next record in log order.
    pub fn apply(&mut self, record: &MetadataRecord) -> Result<(), ApplyError> {
        self.offset += 1;
        self.replay(record, None)
    }

    /// Applies records in order and returns what they changed. Records that do not apply are
    /// skipped and listed in [`MetadataDelta::errors`].
    pub fn apply_batch<'a>(&mut self, records: impl IntoIterator<Item = &'a MetadataRecord>) -> MetadataDelta {
        let mut delta = MetadataDelta::default();
        for record in records {
            self.apply_tracked(record, &mut delta);
        }
        delta
    }

    /// Applies the next record and adds what it changed to `delta`.
    pub fn apply_tracked(&mut self, record: &MetadataRecord, delta: &mut MetadataDelta) {
        self.offset += 1;
        if let Err(error) = self.replay(record, Some(delta)) {
            delta.errors.push((self.offset, error));
        }
    }

    fn replay(&mut self, record: &MetadataRecord, mut delta: Option<&mut MetadataDelta>) -> Result<(), ApplyError> {
        match record {
            MetadataRecord::RegisterBroker(r) => {
                if let Some(d) = delta {
                    d.note_broker(r.broker_id, self.brokers.get(&r.broker_id));
                }
                self.brokers.insert(
                    r.broker_id,
                    BrokerRegistration {
                        id: r.broker_id,
                        incarnation_id: r.incarnation_id,
                        epoch: r.broker_epoch,
                        endpoints: r.endpoints.clone(),
                        rack: r.rack.clone(),
                        fenced: r.fenced,
                        in_controlled_shutdown: r.in_controlled_shutdown,
                    },
                );
            }
            MetadataRecord::UnregisterBroker(r) => {
                self.check_broker_epoch(r.broker_id, r.broker_epoch)?;
                if let Some(d) = delta {
                    d.note_broker(r.broker_id, self.brokers.get(&r.broker_id));
                }
                self.brokers.remove(&r.broker_id);
            }
            MetadataRecord::BrokerRegistrationChange(r) => {
                self.check_broker_epoch(r.broker_id, r.broker_epoch)?;
                if let Some(d) = delta {
                    d.note_broker(r.broker_id, self.brokers.get(&r.broker_id));
                }
                let broker = self.brokers.get_mut(&r.broker_id).expect("checked");
                match r.fenced {
                    Some(true) => broker.fenced = true,
                    Some(false) => broker.fenced = false,
                    None => {}
                }
                if r.in_controlled_shutdown {
                    broker.in_controlled_shutdown = true;
                }
            }
            MetadataRecord::Topic(r) => {
                if let Some(&existing) = self.topic_ids.get(&r.name) {
                    return Err(ApplyError::TopicNameInUse { name: r.name.clone(), existing });
                }
                if self.topics.contains_key(&r.topic_id) {
                    return Err(ApplyError::TopicIdInUse(r.topic_id));
                }
                if let Some(d) = delta {
                    d.created_topics.insert(r.topic_id);
                }
                self.topic_ids.insert(r.name.clone(), r.topic_id);
                self.topics.insert(
                    r.topic_id,
                    TopicImage { id: r.topic_id, name: r.name.clone(), partitions: BTreeMap::new() },
                );
            }
            MetadataRecord::Partition(r) => {
                let tp = TopicIdPartition::new(r.topic_id, r.partition);
                let topic = self.topics.get_mut(&r.topic_id).ok_or(ApplyError::UnknownTopic(r.topic_id))?;
                let new = PartitionRegistration {
                    replicas: r.replicas.clone(),
                    isr: r.isr.clone(),
                    leader: r.leader,
                    leader_epoch: r.leader_epoch,
                    partition_epoch: r.partition_epoch,
                };
                let old = topic.partitions.insert(r.partition, new);
                if let Some(d) = delta.as_deref_mut() {
                    d.note_partition(tp, old.clone());
                }
                self.reindex(tp, old.as_ref());
            }
            MetadataRecord::PartitionChange(r) => {
                let tp = TopicIdPartition::new(r.topic_id, r.partition);
                let topic = self.topics.get_mut(&r.topic_id).ok_or(ApplyError::UnknownPartition(tp))?;
                let partition = topic.partitions.get_mut(&r.partition).ok_or(ApplyError::UnknownPartition(tp))?;
                let merged = partition.merge(r);
                let old = std::mem::replace(partition, merged);
                if let Some(d) = delta {
                    d.note_partition(tp, Some(old.clone()));
                }
                self.reindex(tp, Some(&old));
            }
            MetadataRecord::RemoveTopic(r) => {
                let topic = self.topics.remove(&r.topic_id).ok_or(ApplyError::UnknownTopic(r.topic_id))?;
                self.topic_ids.remove(&topic.name);
                self.configs.remove(&(ConfigResourceType::TOPIC, topic.name.clone()));
                for (partition, registration) in topic.partitions {
                    let tp = TopicIdPartition::new(r.topic_id, partition);
                    for broker in &registration.replicas {
                        self.unhost(*broker, tp);
                    }
                    self.leaderless.remove(&tp);
                    if let Some(d) = delta.as_deref_mut() {
                        d.note_partition(tp, Some(registration));
                    }
                }
                if let Some(d) = delta {
                    d.removed_topics.insert(r.topic_id, topic.name);
                }
            }
            MetadataRecord::ProducerIds(r) => {
                // Blocks only move forward, so an id is never handed out twice.
                self.next_producer_id = self.next_producer_id.max(r.next_producer_id);
            }
            MetadataRecord::Config(r) => {
                let key = (r.resource_type, r.resource_name.clone());
                match &r.value {
                    Some(value) => {
                        self.configs.entry(key.clone()).or_default().insert(r.name.clone(), value.clone());
                    }
                    None => {
                        if let Some(resource) = self.configs.get_mut(&key) {
                            resource.remove(&r.name);
                            if resource.is_empty() {
                                self.configs.remove(&key);
                            }
                        }
                    }
                }
                if let Some(d) = delta {
                    d.configs.insert(key);
                }
            }
        }
        Ok(())
    }

    fn check_broker_epoch(&self, broker_id: BrokerId, epoch: i64) -> Result<(), ApplyError> {
        let broker = self.brokers.get(&broker_id).ok_or(ApplyError::UnknownBroker(broker_id))?;
        if broker.epoch != epoch {
            return Err(ApplyError::StaleBrokerEpoch { broker_id, current: broker.epoch, record: epoch });
        }
        Ok(())
    }

    /// Brings the derived indexes up to date after `tp` changed from `old`.
    fn reindex(&mut self, tp: TopicIdPartition, old: Option<&PartitionRegistration>) {
        let new = &self.topics[&tp.topic_id].partitions[&tp.partition];
        let has_leader = new.has_leader();
        let old_replicas: &[BrokerId] = old.map(|o| o.replicas.as_slice()).unwrap_or(&[]);
        if old_replicas != new.replicas.as_slice() {
            let (removed, added): (Vec<BrokerId>, Vec<BrokerId>) = (
                old_replicas.iter().copied().filter(|b| !new.replicas.contains(b)).collect(),
                new.replicas.iter().copied().filter(|b| !old_replicas.contains(b)).collect(),
            );
            for broker in removed {
                self.unhost(broker, tp);
            }
            for broker in added {
                self.hosted.entry(broker).or_default().insert(tp);
            }
        }
        if has_leader {
            self.leaderless.remove(&tp);
        } else {
            self.leaderless.insert(tp);
        }
    }

    fn unhost(&mut self, broker: BrokerId, tp: TopicIdPartition) {
        if let Some(set) = self.hosted.get_mut(&broker) {
            set.remove(&tp);
            if set.is_empty() {
                self.hosted.remove(&broker);
            }
        }
    }

    pub fn broker(&self, id: BrokerId) -> Option<&BrokerRegistration> {
        self.brokers.get(&id)
    }

    /// All registered brokers, by id.
    pub fn brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values()
    }

    /// Unfenced brokers (including those in controlled shutdown), by id.
    pub fn unfenced_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    pub fn fenced_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values().filter(|b| b.fenced)
    }

    /// Whether the broker may lead and join ISRs (registered, unfenced, not shutting down).
    pub fn is_active(&self, id: BrokerId) -> bool {
        self.brokers.get(&id).is_some_and(|b| b.is_active())
    }

    /// The start of the next producer id block: every id below it may be in use.
    pub fn next_producer_id(&self) -> i64 {
        self.next_producer_id
    }

    pub fn topic(&self, id: Uuid) -> Option<&TopicImage> {
        self.topics.get(&id)
    }

    pub fn topic_by_name(&self, name: &str) -> Option<&TopicImage> {
        self.topic_ids.get(name).and_then(|id| self.topics.get(id))
    }

    /// All topics, by id.
    pub fn topics(&self) -> impl Iterator<Item = &TopicImage> {
        self.topics.values()
    }

    pub fn partition(&self, tp: TopicIdPartition) -> Option<&PartitionRegistration> {
        self.topics.get(&tp.topic_id)?.partitions.get(&tp.partition)
    }

    pub fn partition_count(&self) -> usize {
        self.topics.values().map(|t| t.partitions.len()).sum()
    }

    /// The configs set on one resource (empty when none are).
    pub fn configs(&self, resource_type: ConfigResourceType, resource_name: &str) -> Option<&BTreeMap<String, String>> {
        self.configs.get(&(resource_type, resource_name.to_string()))
    }

    pub fn config(&self, resource_type: ConfigResourceType, resource_name: &str, key: &str) -> Option<&str> {
        self.configs(resource_type, resource_name)?.get(key).map(String::as_str)
    }

    /// The partitions the broker is a replica of, in no particular order.
    pub fn hosted_partitions(&self, broker: BrokerId) -> impl Iterator<Item = TopicIdPartition> + '_ {
        self.hosted.get(&broker).into_iter().flatten().copied()
    }

    /// The partitions the broker leads, sorted.
    pub fn partitions_led_by(&self, broker: BrokerId) -> Vec<TopicIdPartition> {
        self.hosted_where(broker, |p| p.leader == broker)
    }

    /// The partitions the broker is a replica of but does not lead, sorted.
    pub fn partitions_followed_by(&self, broker: BrokerId) -> Vec<TopicIdPartition> {
        self.hosted_where(broker, |p| p.leader != broker)
    }

    /// Whether the broker leads any partition.
    pub fn leads_any(&self, broker: BrokerId) -> bool {
        self.hosted_partitions(broker).any(|tp| self.partition(tp).is_some_and(|p| p.leader == broker))
    }

    fn hosted_where(&self, broker: BrokerId, keep: impl Fn(&PartitionRegistration) -> bool) -> Vec<TopicIdPartition> {
        let mut tps: Vec<_> =
            self.hosted_partitions(broker).filter(|tp| self.partition(*tp).is_some_and(&keep)).collect();
        tps.sort_unstable();
        tps
    }

    /// Partitions without a leader, sorted.
    pub fn leaderless_partitions(&self) -> impl Iterator<Item = TopicIdPartition> + '_ {
        self.leaderless.iter().copied()
    }

    /// Records that rebuild this image from an empty one (brokers, then each topic with its
    /// partitions, then configs), as a Kafka snapshot holds.
    pub fn to_records(&self) -> Vec<MetadataRecord> {
        let mut records = Vec::new();
        for b in self.brokers.values() {
            records.push(MetadataRecord::RegisterBroker(RegisterBroker {
                broker_id: b.id,
                incarnation_id: b.incarnation_id,
                broker_epoch: b.epoch,
                endpoints: b.endpoints.clone(),
                rack: b.rack.clone(),
                fenced: b.fenced,
                in_controlled_shutdown: b.in_controlled_shutdown,
            }));
        }
        for t in self.topics.values() {
            records.push(MetadataRecord::Topic(TopicRecord { name: t.name.clone(), topic_id: t.id }));
            for (partition, p) in &t.partitions {
                records.push(MetadataRecord::Partition(p.to_record(TopicIdPartition::new(t.id, *partition))));
            }
        }
        if self.next_producer_id > 0 {
            records.push(MetadataRecord::ProducerIds(ProducerIds {
                broker_id: -1,
                broker_epoch: -1,
                next_producer_id: self.next_producer_id,
            }));
        }
        for ((resource_type, resource_name), entries) in &self.configs {
            for (name, value) in entries {
                records.push(MetadataRecord::Config(ConfigRecord {
                    resource_type: *resource_type,
                    resource_name: resource_name.clone(),
                    name: name.clone(),
                    value: Some(value.clone()),
                }));
            }
        }
        records
    }

    /// The image as snapshot bytes: magic, offset, then [`Self::to_records`] as a batch.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(SNAPSHOT_MAGIC);
        Writer(&mut out).i64(self.offset);
        out.extend_from_slice(&codec::encode_batch(&self.to_records()));
        out
    }

    pub fn decode_snapshot(bytes: &[u8]) -> Result<MetadataImage, SnapshotError> {
        let mut r = Reader(bytes);
        if r.take(4).map_err(|_| SnapshotError::BadMagic)? != SNAPSHOT_MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let offset = r.i64()?;
        let records = codec::decode_batch(r.0)?;
        let mut image = MetadataImage::new();
        for record in &records {
            image.replay(record, None)?;
        }
        image.offset = offset;
        Ok(image)
    }
}
