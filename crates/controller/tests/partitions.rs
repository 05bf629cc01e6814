//! AlterPartition validation (Kafka's `validateAlterPartitionData`) and ElectLeaders.

mod common;

use common::{alter_partition_data as data, alter_partition_request as request, Harness};
use tern_controller::errors::*;
use tern_controller::*;
use tern_metadata::*;

/// Brokers 1, 2, 3 (epochs 0, 1, 2) and topic "t" with partition 0 on [1, 2, 3], led by 1.
fn setup() -> (Harness, Uuid) {
    let mut h = Harness::new();
    h.brokers([1, 2, 3], &[]);
    let t = h.create_manual("t", vec![vec![1, 2, 3]]);
    (h, t)
}

fn code(h: &mut Harness, version: i16, broker: BrokerId, epoch: i64, t: Uuid, d: AlterPartitionData) -> i16 {
    let before = h.image().offset();
    let response = h.alter_partition(request(version, broker, epoch, t, d));
    let code = response.topics[0].partitions[0].error_code;
    if code != NONE {
        assert_eq!(h.image().offset(), before, "a rejected change records nothing");
    }
    code
}

#[test]
fn an_accepted_shrink_and_expand_bump_only_the_partition_epoch() {
    let (mut h, t) = setup();
    let response = h.alter_partition(request(3, 1, 0, t, data(0, 0, &[(1, 0), (2, 1)])));
    let r = &response.topics[0].partitions[0];
    assert_eq!((r.error_code, r.leader, r.leader_epoch, r.isr.clone(), r.partition_epoch), (NONE, 1, 0, vec![1, 2], 1));
    let response = h.alter_partition(request(3, 1, 0, t, data(0, 1, &[(1, 0), (2, 1), (3, -1)])));
    let r = &response.topics[0].partitions[0];
    assert_eq!((r.isr.clone(), r.leader_epoch, r.partition_epoch), (vec![1, 2, 3], 0, 2));
    // The same ISR again changes nothing and still answers with the state.
    let response = h.alter_partition(request(3, 1, 0, t, data(0, 2, &[(1, 0), (2, 1), (3, -1)])));
    assert_eq!(response.topics[0].partitions[0].partition_epoch, 2);
}

#[test]
fn epochs_are_checked_in_kafkas_order() {
    let (mut h, t) = setup();
    let isr = [(1, 0), (2, 1)];
    assert_eq!(code(&mut h, 3, 1, 0, t, data(1, 0, &isr)), NOT_CONTROLLER);
    assert_eq!(code(&mut h, 3, 1, 0, t, data(0, 1, &isr)), NOT_CONTROLLER);
    // Move the partition to leader epoch 1, partition epoch 2.
    h.alter_partition(request(3, 1, 0, t, data(0, 0, &isr)));
    let elected = h.controller.elect_leaders(ElectionType::Preferred, Some(vec![("t".into(), vec![0])]));
    assert_eq!(elected.response[0].partitions, vec![(0, ELECTION_NOT_NEEDED)]);
    h.heartbeat_with(1, true, false); // fence 1: leader 2, epochs (1, 2)
    h.heartbeat(1); // unfence 1
    let p = h.partition(t, 0);
    assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (2, 1, 2));
    assert_eq!(code(&mut h, 3, 2, 1, t, data(0, 2, &[(2, 1)])), FENCED_LEADER_EPOCH);
    assert_eq!(code(&mut h, 3, 1, 0, t, data(1, 2, &[(1, 0)])), INVALID_REQUEST, "not the leader");
    assert_eq!(code(&mut h, 3, 2, 1, t, data(1, 1, &[(2, 1)])), INVALID_UPDATE_VERSION);
    assert_eq!(code(&mut h, 3, 2, 1, t, data(1, 2, &[(2, 1)])), NONE);
}

#[test]
fn the_new_isr_must_be_replicas_including_the_leader() {
    let (mut h, t) = setup();
    assert_eq!(code(&mut h, 3, 1, 0, t, data(0, 0, &[(2, 1), (3, 2)])), INVALID_REQUEST);
    assert_eq!(code(&mut h, 3, 1, 0, t, data(0, 0, &[(1, 0), (4, -1)])), INVALID_REQUEST);
    assert_eq!(code(&mut h, 3, 1, 0, t, data(0, 0, &[(1, 0), (1, 0)])), INVALID_REQUEST);
}

#[test]
fn ineligible_replicas_are_refused_kip_841_and_kip_903() {
    let (mut h, t) = setup();
    // Shrink first, so that adding back is an expansion.
    h.alter_partition(request(3, 1, 0, t, data(0, 0, &[(1, 0)])));
    // A stale broker epoch (a previous incarnation): INELIGIBLE_REPLICA, or
    // OPERATION_NOT_ATTEMPTED before v2.
    assert_eq!(code(&mut h, 3, 1, 0, t, data(0, 1, &[(1, 0), (2, 0)])), INELIGIBLE_REPLICA);
    assert_eq!(code(&mut h, 1, 1, 0, t, data(0, 1, &[(1, 0), (2, 0)])), OPERATION_NOT_ATTEMPTED);
    // A fenced broker.
    h.heartbeat_with(3, true, false);
    assert_eq!(code(&mut h, 3, 1, 0, t, data(0, 1, &[(1, 0), (3, 2)])), INELIGIBLE_REPLICA);
    // A broker in controlled shutdown.
    h.heartbeat_with(2, false, true);
    assert_eq!(code(&mut h, 3, 1, 0, t, data(0, 1, &[(1, 0), (2, 1)])), INELIGIBLE_REPLICA);
}

#[test]
fn requests_with_a_stale_broker_epoch_or_unknown_topics_are_refused() {
    let (mut h, t) = setup();
    let response = h.alter_partition(request(3, 1, 99, t, data(0, 0, &[(1, 0)])));
    assert_eq!((response.error_code, response.topics.len()), (STALE_BROKER_EPOCH, 0));
    let unknown = Uuid::from_u128(77);
    assert_eq!(code(&mut h, 3, 1, 0, unknown, data(0, 0, &[(1, 0)])), UNKNOWN_TOPIC_ID);
    let mut by_name = request(1, 1, 0, unknown, data(0, 0, &[(1, 0)]));
    by_name.topics[0].topic_name = "nope".into();
    assert_eq!(h.alter_partition(by_name).topics[0].partitions[0].error_code, UNKNOWN_TOPIC_OR_PARTITION);
    let mut no_partition = data(0, 0, &[(1, 0)]);
    no_partition.partition = 5;
    assert_eq!(code(&mut h, 3, 1, 0, t, no_partition), UNKNOWN_TOPIC_OR_PARTITION);
    // v1 finds the topic by name.
    assert_eq!(code(&mut h, 1, 1, 0, unknown, data(0, 0, &[(1, 0), (2, 1)])), NONE);
}

#[test]
fn preferred_leader_election_moves_leadership_back() {
    let (mut h, t) = setup();
    h.heartbeat_with(1, true, false);
    assert_eq!(h.partition(t, 0).leader, 2);
    let result = h.controller.elect_leaders(ElectionType::Preferred, Some(vec![("t".into(), vec![0, 9])]));
    assert_eq!(
        result.response[0].partitions,
        vec![(0, PREFERRED_LEADER_NOT_AVAILABLE), (9, UNKNOWN_TOPIC_OR_PARTITION)]
    );
    h.heartbeat(1);
    // Broker 1 is back but not in the ISR: its leader must first add it.
    let p = h.partition(t, 0);
    let isr = [(2, 1), (3, 2), (1, 0)];
    assert_eq!(code(&mut h, 3, 2, 1, t, data(p.leader_epoch, p.partition_epoch, &isr)), NONE);
    let result = h.controller.elect_leaders(ElectionType::Preferred, None);
    h.commit(&result.records);
    assert_eq!(result.response[0].partitions, vec![(0, NONE)]);
    let p = h.partition(t, 0);
    assert_eq!((p.leader, p.leader_epoch), (1, 2));
    // Everything balanced: an election over all partitions reports nothing.
    let result = h.controller.elect_leaders(ElectionType::Preferred, None);
    assert!(result.records.is_empty() && result.response[0].partitions.is_empty());
}

#[test]
fn unclean_election_is_needed_only_without_a_leader() {
    let (mut h, t) = setup();
    let result = h.controller.elect_leaders(ElectionType::Unclean, Some(vec![("t".into(), vec![0])]));
    assert_eq!(result.response[0].partitions, vec![(0, ELECTION_NOT_NEEDED)]);
    h.alter_partition(request(3, 1, 0, t, data(0, 0, &[(1, 0)])));
    h.heartbeat_with(1, true, false);
    assert_eq!(h.partition(t, 0).leader, NO_LEADER);
    let result = h.controller.elect_leaders(ElectionType::Unclean, Some(vec![("t".into(), vec![0])]));
    h.commit(&result.records);
    assert_eq!(result.response[0].partitions, vec![(0, NONE)]);
    let p = h.partition(t, 0);
    assert_eq!((p.leader, p.isr.clone()), (2, vec![2]));
}

#[test]
fn leadership_moves_back_to_the_preferred_replica_at_the_balancing_interval() {
    let config = ControllerConfig { seed: 42, leader_imbalance_check_interval_ms: 60_000, ..Default::default() };
    let mut h = common::Harness::with_config(config);
    h.brokers(1..=3, &[]);
    let t = h.create_manual("t", vec![vec![1, 2, 3], vec![2, 3, 1]]);
    // Broker 1 leaves (controlled fence): partition 0 moves to 2; then it comes back into the ISR.
    h.heartbeat_with(1, true, false);
    assert_eq!(h.partition(t, 0).leader, 2);
    h.heartbeat(1);
    let p = h.partition(t, 0);
    assert_eq!(code(&mut h, 3, 2, 1, t, data(p.leader_epoch, p.partition_epoch, &[(2, 1), (3, 2), (1, 0)])), NONE);
    assert_eq!(h.controller.next_deadline().map(|d| d <= 60_000), Some(true), "the round is a deadline");
    // Not before the interval...
    h.now_ms = 59_999;
    for id in 1..=3 {
        h.heartbeat(id);
    }
    assert!(h.tick().is_empty());
    assert_eq!(h.partition(t, 0).leader, 2);
    // ...then partition 0 goes back to broker 1, and partition 1 (already balanced) is untouched.
    h.now_ms = 60_000;
    let records = h.tick();
    assert!(!records.is_empty());
    assert_eq!(h.partition(t, 0).leader, 1);
    assert_eq!(h.partition(t, 1).leader, 2);
    // Balanced: the next round, an interval later, records nothing.
    h.now_ms = 120_000;
    for id in 1..=3 {
        h.heartbeat(id);
    }
    assert!(h.tick().is_empty());
}

#[test]
fn no_balancing_when_auto_leader_rebalance_is_off() {
    let config = ControllerConfig { seed: 42, auto_leader_rebalance_enable: false, ..Default::default() };
    let mut h = common::Harness::with_config(config);
    h.brokers(1..=3, &[]);
    let t = h.create_manual("t", vec![vec![1, 2, 3]]);
    h.heartbeat_with(1, true, false);
    h.heartbeat(1);
    let p = h.partition(t, 0);
    assert_eq!(code(&mut h, 3, 2, 1, t, data(p.leader_epoch, p.partition_epoch, &[(2, 1), (3, 2), (1, 0)])), NONE);
    for now in [300_000, 600_000] {
        h.now_ms = now;
        for id in 1..=3 {
            h.heartbeat(id);
        }
        assert!(h.tick().is_empty());
    }
    assert_eq!(h.partition(t, 0).leader, 2);
}
