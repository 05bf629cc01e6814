//! Partition assignors, run by the group leader: Kafka's `range`, `roundrobin` and
//! `cooperative-sticky`, with the Java client's algorithms so that a group mixing Tern and Java
//! consumers gets the same assignment whichever member leads.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use bytes::{Buf, Bytes};

use super::sticky;
use super::TopicPartition;

/// One member's JoinGroup metadata, as the leader sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    pub topics: Vec<String>,
    pub user_data: Option<Bytes>,
    /// What the member owns now (cooperative protocol; empty under the eager protocol).
    pub owned_partitions: Vec<TopicPartition>,
    /// The generation `owned_partitions` belong to (ConsumerProtocolSubscription v2+).
    pub generation: Option<i32>,
    pub rack: Option<String>,
    /// Static members sort by this instead of by member id.
    pub group_instance_id: Option<String>,
}

/// Member id → partitions.
pub type Assignment = BTreeMap<String, Vec<TopicPartition>>;

/// A partition assignment strategy (`partition.assignment.strategy`).
pub trait PartitionAssignor: Send + Sync + std::fmt::Debug {
    /// The protocol name in JoinGroup, e.g. `range`.
    fn name(&self) -> &str;

    /// Whether the strategy follows the cooperative rebalance protocol (KIP-429): members keep
    /// their partitions across a rebalance and a moving partition is revoked before it is
    /// reassigned.
    fn supports_cooperative(&self) -> bool {
        false
    }

    /// User data for this member's subscription; `generation` is its current one (-1 if none).
    fn subscription_user_data(&self, _generation: i32) -> Option<Bytes> {
        None
    }

    /// Assigns the partitions of `partitions_per_topic` (topic → partition count) to the members
    /// of `subscriptions` (member id → subscription). Every member appears in the result.
    fn assign(
        &self,
        partitions_per_topic: &BTreeMap<String, i32>,
        subscriptions: &BTreeMap<String, Subscription>,
    ) -> Assignment;
}

/// The assignor named `name` (`range`, `roundrobin`, `cooperative-sticky`).
pub fn assignor_by_name(name: &str) -> Option<Arc<dyn PartitionAssignor>> {
    match name {
        "range" => Some(Arc::new(RangeAssignor)),
        "roundrobin" => Some(Arc::new(RoundRobinAssignor)),
        "cooperative-sticky" => Some(Arc::new(CooperativeStickyAssignor)),
        _ => None,
    }
}

/// The Java client's default `partition.assignment.strategy`: range, then cooperative-sticky.
pub fn default_assignors() -> Vec<Arc<dyn PartitionAssignor>> {
    vec![Arc::new(RangeAssignor), Arc::new(CooperativeStickyAssignor)]
}

fn empty_assignment(subscriptions: &BTreeMap<String, Subscription>) -> Assignment {
    subscriptions.keys().map(|m| (m.clone(), Vec::new())).collect()
}

/// Members in Kafka's `MemberInfo` order: static members first, by group.instance.id, then dynamic
/// members by member id.
fn member_order(subscriptions: &BTreeMap<String, Subscription>) -> Vec<&str> {
    let mut members: Vec<(&str, Option<&str>)> =
        subscriptions.iter().map(|(m, s)| (m.as_str(), s.group_instance_id.as_deref())).collect();
    members.sort_by(|a, b| match (a.1, b.1) {
        (Some(x), Some(y)) => x.cmp(y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.0.cmp(b.0),
    });
    members.into_iter().map(|(m, _)| m).collect()
}

/// Kafka's `RangeAssignor`: per topic, the subscribed members in order get contiguous ranges of
/// partitions; the first `partitions % members` get one extra.
#[derive(Debug, Clone, Copy, Default)]
pub struct RangeAssignor;

impl PartitionAssignor for RangeAssignor {
    fn name(&self) -> &str {
        "range"
    }

    fn assign(
        &self,
        partitions_per_topic: &BTreeMap<String, i32>,
        subscriptions: &BTreeMap<String, Subscription>,
    ) -> Assignment {
        let mut out = empty_assignment(subscriptions);
        let order = member_order(subscriptions);
        for (topic, &count) in partitions_per_topic {
            let members: Vec<&str> =
                order.iter().copied().filter(|m| subscriptions[*m].topics.iter().any(|t| t == topic)).collect();
            if members.is_empty() || count <= 0 {
                continue;
            }
            let m = members.len() as i32;
            let (per_member, extra) = (count / m, count % m);
            for (i, member) in members.into_iter().enumerate() {
                let i = i as i32;
                let start = per_member * i + i.min(extra);
                let len = per_member + i32::from(i < extra);
                let parts = out.get_mut(member).expect("every member has an entry");
                parts.extend((start..start + len).map(|p| TopicPartition::new(topic, p)));
            }
        }
        out
    }
}

/// Kafka's `RoundRobinAssignor`: all subscribed partitions sorted by topic and partition are dealt
/// to the members in order, skipping members not subscribed to a partition's topic.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundRobinAssignor;

impl PartitionAssignor for RoundRobinAssignor {
    fn name(&self) -> &str {
        "roundrobin"
    }

    fn assign(
        &self,
        partitions_per_topic: &BTreeMap<String, i32>,
        subscriptions: &BTreeMap<String, Subscription>,
    ) -> Assignment {
        let mut out = empty_assignment(subscriptions);
        let order = member_order(subscriptions);
        let subscribed: Vec<HashSet<&str>> =
            order.iter().map(|m| subscriptions[*m].topics.iter().map(String::as_str).collect()).collect();
        let topics: BTreeSet<&str> = subscribed.iter().flatten().copied().collect();
        let mut next = 0;
        for topic in topics {
            let Some(&count) = partitions_per_topic.get(topic) else { continue };
            for p in 0..count {
                // Terminates: `topic` came from some member's subscription.
                while !subscribed[next].contains(topic) {
                    next = (next + 1) % order.len();
                }
                out.get_mut(order[next]).expect("member").push(TopicPartition::new(topic, p));
                next = (next + 1) % order.len();
            }
        }
        out
    }
}

/// Kafka's `CooperativeStickyAssignor`: the sticky assignment (balanced, moving as few partitions
/// as possible), minus every partition that changes owner: those are revoked by their current
/// owner first and assigned in the follow-up rebalance that the revocation triggers.
#[derive(Debug, Clone, Copy, Default)]
pub struct CooperativeStickyAssignor;

impl PartitionAssignor for CooperativeStickyAssignor {
    fn name(&self) -> &str {
        "cooperative-sticky"
    }

    fn supports_cooperative(&self) -> bool {
        true
    }

    /// The generation as a 4-byte integer, for leaders that only read v0/v1 subscriptions.
    fn subscription_user_data(&self, generation: i32) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(&generation.to_be_bytes()))
    }

    fn assign(
        &self,
        partitions_per_topic: &BTreeMap<String, i32>,
        subscriptions: &BTreeMap<String, Subscription>,
    ) -> Assignment {
        // Kafka hands the sticky algorithm only the topics some member subscribes to.
        let subscribed: HashSet<&String> = subscriptions.values().flat_map(|s| s.topics.iter()).collect();
        let partitions_per_topic: BTreeMap<String, i32> =
            partitions_per_topic.iter().filter(|(t, _)| subscribed.contains(t)).map(|(t, &n)| (t.clone(), n)).collect();
        let members: BTreeMap<String, sticky::Member> = subscriptions
            .iter()
            .map(|(id, s)| {
                let generation =
                    s.generation.or_else(|| s.user_data.as_ref().filter(|d| d.len() >= 4).map(|d| (&d[..4]).get_i32()));
                let member = sticky::Member { topics: s.topics.clone(), owned: s.owned_partitions.clone(), generation };
                (id.clone(), member)
            })
            .collect();
        let (mut assignment, transferring) = sticky::assign(&partitions_per_topic, &members);
        let transferring = transferring.unwrap_or_else(|| transferring_ownership(&members, &assignment));
        for (tp, member) in transferring {
            if let Some(parts) = assignment.get_mut(&member) {
                parts.retain(|p| *p != tp);
            }
        }
        assignment
    }
}

/// Partitions newly assigned to a member that some member owned and loses: Kafka's
/// `computePartitionsTransferringOwnership`, for the general sticky case.
fn transferring_ownership(
    members: &BTreeMap<String, sticky::Member>,
    assignment: &Assignment,
) -> BTreeMap<TopicPartition, String> {
    let mut added = BTreeMap::new();
    let mut revoked = HashSet::new();
    for (member, assigned) in assignment {
        let owned: HashSet<&TopicPartition> = members[member].owned.iter().collect();
        let assigned_set: HashSet<&TopicPartition> = assigned.iter().collect();
        for tp in assigned {
            if !owned.contains(tp) {
                added.insert(tp.clone(), member.clone());
            }
        }
        for tp in &members[member].owned {
            if !assigned_set.contains(tp) {
                revoked.insert(tp.clone());
            }
        }
    }
    added.retain(|tp, _| revoked.contains(tp));
    added
}

#[cfg(test)]
mod tests;
