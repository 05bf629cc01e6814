#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use tern_partition::*;

pub const LOCAL: BrokerId = 1;
pub const LOCAL_EPOCH: i64 = 101;
pub const T0: i64 = 1_000_000;
pub const LAG: i64 = 10_000;

pub fn config(min_insync_replicas: i32) -> PartitionConfig {
    PartitionConfig { replica_lag_time_max_ms: LAG, min_insync_replicas }
}

/// The broker epoch each test broker registered with.
pub fn epoch_of(id: BrokerId) -> i64 {
    100 + id as i64
}

pub fn registered(ids: &[BrokerId]) -> BTreeMap<BrokerId, BrokerRegistration> {
    ids.iter()
        .map(|&id| {
            (id, BrokerRegistration { broker_epoch: epoch_of(id), fenced: false, in_controlled_shutdown: false })
        })
        .collect()
}

pub fn set(ids: &[BrokerId]) -> BTreeSet<BrokerId> {
    ids.iter().copied().collect()
}

pub fn state(
    leader: BrokerId,
    leader_epoch: i32,
    partition_epoch: i32,
    replicas: &[BrokerId],
    isr: &[BrokerId],
) -> LeaderAndIsr {
    LeaderAndIsr { leader, leader_epoch, partition_epoch, replicas: replicas.to_vec(), isr: set(isr) }
}

/// A replica on broker 1 with `log_end_offset` records, none committed, no leader yet.
pub fn partition(log_end_offset: i64, min_insync_replicas: i32) -> Partition {
    let log = LocalLog { log_start_offset: 0, log_end_offset, high_watermark: 0, epochs: LeaderEpochCache::new() };
    let mut p = Partition::new(LOCAL, LOCAL_EPOCH, config(min_insync_replicas), log);
    p.update_brokers(registered(&[1, 2, 3, 4]));
    p
}

/// Broker 1 leading epoch 1 (partition epoch 1) of replicas 1, 2, 3 with this ISR.
pub fn leader(isr: &[BrokerId], log_end_offset: i64, min_insync_replicas: i32) -> Partition {
    let mut p = partition(log_end_offset, min_insync_replicas);
    p.apply_leader_and_isr(&state(LOCAL, 1, 1, &[1, 2, 3], isr), T0);
    p
}

/// A v15 follower fetch in leader epoch 1 with the broker's registered epoch.
pub fn fetch(id: BrokerId, fetch_offset: i64) -> FollowerFetch {
    FollowerFetch {
        replica_id: id,
        broker_epoch: epoch_of(id),
        current_leader_epoch: Some(1),
        fetch_offset,
        last_fetched_epoch: None,
        log_start_offset: 0,
    }
}

/// Fetches and asserts it was accepted; returns the effects.
pub fn fetch_ok(p: &mut Partition, id: BrokerId, fetch_offset: i64, now_ms: i64) -> Vec<Effect> {
    let (answer, effects) = p.follower_fetch(&fetch(id, fetch_offset), now_ms);
    let answer = answer.expect("fetch accepted");
    assert_eq!(answer.diverging_epoch, None);
    effects
}

pub fn proposals(effects: &[Effect]) -> Vec<AlterPartitionProposal> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::AlterPartition(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

pub fn completions(effects: &[Effect]) -> Vec<(RequestId, i16)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::CompleteProduce { request_id, error_code } => Some((*request_id, *error_code)),
            _ => None,
        })
        .collect()
}

/// The controller's acceptance of `proposal`: its ISR, the next partition epoch.
pub fn accepted(proposal: &AlterPartitionProposal, replicas: &[BrokerId]) -> LeaderAndIsr {
    LeaderAndIsr {
        leader: proposal.leader_id,
        leader_epoch: proposal.leader_epoch,
        partition_epoch: proposal.partition_epoch + 1,
        replicas: replicas.to_vec(),
        isr: proposal.isr(),
    }
}

pub fn hw_changed(high_watermark: i64) -> Effect {
    Effect::HighWatermarkChanged { high_watermark }
}
