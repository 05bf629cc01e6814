//! One partition's next leader and ISR as one [`PartitionChange`] record: Kafka's
//! `PartitionChangeBuilder` without eligible leader replicas (KIP-966) and without
//! reassignment, at a metadata version (3.6+) that does not bump the leader epoch on an ISR
//! shrink.

use tern_metadata::{BrokerId, PartitionChange, PartitionRegistration, TopicIdPartition, NO_LEADER};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Election {
    /// Keep the leader if it is still valid, else the first valid replica.
    Online,
    /// The first replica if valid, else keep the leader if valid, else the next valid replica.
    Preferred,
    /// As `Online`, then any acceptable replica, even outside the ISR (may lose data).
    Unclean,
}

/// The change that moves `partition` to `target_isr` and a leader chosen by `election` among
/// the replicas `is_acceptable` accepts; `None` if nothing would change.
pub fn build(
    tp: TopicIdPartition,
    partition: &PartitionRegistration,
    target_isr: Vec<BrokerId>,
    election: Election,
    is_acceptable: impl Fn(BrokerId) -> bool,
) -> Option<PartitionChange> {
    let valid = |r: BrokerId| target_isr.contains(&r) && is_acceptable(r);
    let replicas = &partition.replicas;
    let (leader, unclean) = match election {
        Election::Preferred => {
            let found = replicas
                .first()
                .copied()
                .filter(|r| valid(*r))
                .or_else(|| Some(partition.leader).filter(|r| valid(*r)))
                .or_else(|| replicas.iter().skip(1).copied().find(|r| valid(*r)));
            (found.unwrap_or(NO_LEADER), false)
        }
        Election::Online | Election::Unclean => {
            if valid(partition.leader) {
                (partition.leader, false)
            } else if let Some(r) = replicas.iter().copied().find(|r| valid(*r)) {
                (r, false)
            } else if let Some(r) =
                replicas.iter().copied().find(|r| election == Election::Unclean && is_acceptable(*r))
            {
                (r, true)
            } else {
                (NO_LEADER, false)
            }
        }
    };
    let mut change =
        PartitionChange { topic_id: tp.topic_id, partition: tp.partition, isr: None, leader: None, replicas: None };
    if leader != partition.leader {
        change.leader = Some(leader);
        if unclean {
            // The new leader may miss committed records: it alone is in sync now.
            change.isr = Some(vec![leader]);
        }
    }
    // Without ELR the ISR never becomes empty: its last member stays, though it cannot lead.
    if change.isr.is_none() && !target_isr.is_empty() && target_isr != partition.isr {
        change.isr = Some(target_isr);
    }
    if change.isr.is_none() && change.leader.is_none() {
        None
    } else {
        Some(change)
    }
}
