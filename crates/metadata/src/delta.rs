//! What a batch of records changed (Kafka's `MetadataDelta`), and what that means for one
//! broker (Kafka's `TopicsDelta.localChanges`): this is how a broker learns to become leader or
//! follower of a partition, or to stop hosting it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use uuid::Uuid;

use crate::image::{ApplyError, BrokerRegistration, MetadataImage, PartitionRegistration};
use crate::records::{BrokerId, ConfigResourceType, TopicIdPartition};

/// Filled by [`MetadataImage::apply_batch`] / [`MetadataImage::apply_tracked`]: the state of
/// everything touched as it was before the first record that touched it.
#[derive(Debug, Clone, Default)]
pub struct MetadataDelta {
    /// `None` for a partition that did not exist before.
    pub(crate) partitions: HashMap<TopicIdPartition, Option<PartitionRegistration>>,
    /// `None` for a broker that was not registered before.
    pub(crate) brokers: BTreeMap<BrokerId, Option<BrokerRegistration>>,
    pub(crate) created_topics: BTreeSet<Uuid>,
    /// Id and name of every removed topic.
    pub(crate) removed_topics: BTreeMap<Uuid, String>,
    pub(crate) configs: BTreeSet<(ConfigResourceType, String)>,
    /// Records that did not apply, by offset.
    pub errors: Vec<(i64, ApplyError)>,
}

/// A partition a broker hosts, as it now is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPartition {
    pub tp: TopicIdPartition,
    pub topic_name: String,
    pub state: PartitionRegistration,
    /// The broker did not lead it before this delta (Kafka's `electedLeaders`).
    pub newly_led: bool,
}

/// What one broker must do after a delta: become (or stay, with a new epoch) leader or
/// follower, or stop hosting partitions and delete them. Each list is sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalChanges {
    pub leaders: Vec<LocalPartition>,
    pub followers: Vec<LocalPartition>,
    /// Partitions it hosted and no longer does: their topic was removed or it left the replicas.
    pub deletes: Vec<(TopicIdPartition, String)>,
}

impl LocalChanges {
    pub fn is_empty(&self) -> bool {
        self.leaders.is_empty() && self.followers.is_empty() && self.deletes.is_empty()
    }
}

impl MetadataDelta {
    pub(crate) fn note_partition(&mut self, tp: TopicIdPartition, before: Option<PartitionRegistration>) {
        self.partitions.entry(tp).or_insert(before);
    }

    pub(crate) fn note_broker(&mut self, id: BrokerId, before: Option<&BrokerRegistration>) {
        self.brokers.entry(id).or_insert_with(|| before.cloned());
    }

    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
            && self.brokers.is_empty()
            && self.created_topics.is_empty()
            && self.removed_topics.is_empty()
            && self.configs.is_empty()
    }

    /// Partitions whose state changed (created, changed or removed), sorted.
    pub fn changed_partitions(&self) -> Vec<TopicIdPartition> {
        let mut tps: Vec<_> = self.partitions.keys().copied().collect();
        tps.sort_unstable();
        tps
    }

    /// The state of a changed partition before this delta (`None` if it is new).
    pub fn partition_before(&self, tp: TopicIdPartition) -> Option<Option<&PartitionRegistration>> {
        self.partitions.get(&tp).map(Option::as_ref)
    }

    /// Brokers registered, changed or unregistered.
    pub fn changed_brokers(&self) -> impl Iterator<Item = BrokerId> + '_ {
        self.brokers.keys().copied()
    }

    pub fn created_topics(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.created_topics.iter().copied()
    }

    pub fn removed_topics(&self) -> impl Iterator<Item = (Uuid, &str)> + '_ {
        self.removed_topics.iter().map(|(id, name)| (*id, name.as_str()))
    }

    pub fn changed_configs(&self) -> impl Iterator<Item = &(ConfigResourceType, String)> + '_ {
        self.configs.iter()
    }

    /// What `broker` must do, given `image` with this delta applied.
    pub fn local_changes(&self, image: &MetadataImage, broker: BrokerId) -> LocalChanges {
        let mut changes = LocalChanges::default();
        for (&tp, before) in &self.partitions {
            let hosted_before = before.as_ref().is_some_and(|p| p.replicas.contains(&broker));
            let Some(now) = image.partition(tp) else {
                if hosted_before {
                    let name = self.removed_topics.get(&tp.topic_id).cloned().unwrap_or_default();
                    changes.deletes.push((tp, name));
                }
                continue;
            };
            let topic_name = image.topic(tp.topic_id).map(|t| t.name.clone()).unwrap_or_default();
            if !now.replicas.contains(&broker) {
                if hosted_before {
                    changes.deletes.push((tp, topic_name));
                }
                continue;
            }
            let led_before = before.as_ref().is_some_and(|p| p.leader == broker);
            let local = LocalPartition { tp, topic_name, state: now.clone(), newly_led: !led_before };
            if now.leader == broker {
                changes.leaders.push(local);
            } else {
                changes.followers.push(LocalPartition { newly_led: false, ..local });
            }
        }
        changes.leaders.sort_by_key(|p| p.tp);
        changes.followers.sort_by_key(|p| p.tp);
        changes.deletes.sort();
        changes
    }
}
