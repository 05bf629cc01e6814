//! acks=all produces: Kafka's `appendRecordsToLeader` min.insync check and `DelayedProduce`
//! completion (`checkEnoughReplicasReachOffset`).

mod common;

use common::*;
use tern_partition::errors::*;
use tern_partition::*;

const DEADLINE: i64 = T0 + 30_000;

#[test]
fn check_append_rejects_a_follower_and_acks_all_under_min_isr() {
    let follower = partition(10, 1);
    assert_eq!(follower.check_append(1), Err(NOT_LEADER_OR_FOLLOWER));
    let mut p = leader(&[1], 10, 2);
    // Kafka answers NOT_ENOUGH_REPLICAS before writing anything.
    assert_eq!(p.check_append(-1), Err(NOT_ENOUGH_REPLICAS));
    // Only acks=all is bound by min.insync.replicas.
    assert_eq!(p.check_append(1), Ok(()));
    assert_eq!(p.check_append(0), Ok(()));
    p.apply_leader_and_isr(&state(1, 1, 2, &[1, 2, 3], &[1, 2]), T0);
    assert_eq!(p.check_append(-1), Ok(()));
}

#[test]
fn acks_all_completes_when_the_hw_reaches_the_required_offset() {
    let mut p = leader(&[1, 2, 3], 10, 2);
    p.leader_appended(12, T0 + 1);
    assert_eq!(p.await_replication(7, 12, DEADLINE), vec![]);
    p.leader_appended(15, T0 + 2);
    assert_eq!(p.await_replication(8, 15, DEADLINE), vec![]);
    fetch_ok(&mut p, 2, 15, T0 + 3);
    assert_eq!(fetch_ok(&mut p, 3, 11, T0 + 4), vec![hw_changed(11)], "11 < 12: not yet");
    assert_eq!(p.waiting_requests(), vec![7, 8]);
    assert_eq!(
        fetch_ok(&mut p, 3, 12, T0 + 5),
        vec![hw_changed(12), Effect::CompleteProduce { request_id: 7, error_code: NONE }]
    );
    assert_eq!(
        fetch_ok(&mut p, 3, 15, T0 + 6),
        vec![hw_changed(15), Effect::CompleteProduce { request_id: 8, error_code: NONE }]
    );
    assert_eq!(p.waiting_requests(), Vec::<RequestId>::new());
}

#[test]
fn acks_all_with_the_leader_alone_in_the_isr_completes_at_once() {
    // tryCompleteElseWatch: the append itself moved the HW.
    let mut p = leader(&[1], 10, 1);
    assert_eq!(p.leader_appended(13, T0 + 1), vec![hw_changed(13)]);
    assert_eq!(p.await_replication(1, 13, DEADLINE), vec![Effect::CompleteProduce { request_id: 1, error_code: NONE }]);
}

#[test]
fn acks_all_times_out_at_its_deadline() {
    // DelayedProduce.onExpiration: REQUEST_TIMED_OUT.
    let mut p = leader(&[1, 2], 10, 1);
    p.leader_appended(12, T0 + 1);
    p.await_replication(1, 12, T0 + 100);
    p.await_replication(2, 12, T0 + 200);
    assert_eq!(p.tick(T0 + 99), vec![]);
    assert_eq!(completions(&p.tick(T0 + 100)), vec![(1, REQUEST_TIMED_OUT)]);
    assert_eq!(p.waiting_requests(), vec![2]);
}

#[test]
fn acks_all_waits_while_the_isr_is_under_min_insync() {
    // KAFKA-15583: with the committed ISR below min.insync.replicas the HW is frozen, so a
    // waiting produce is not acknowledged even if the remaining replicas have it.
    let mut p = leader(&[1, 2, 3], 10, 3);
    p.leader_appended(12, T0 + 1);
    p.await_replication(1, 12, DEADLINE);
    fetch_ok(&mut p, 2, 12, T0 + 2);
    let shrink = proposals(&p.tick(T0 + LAG + 1)).pop().expect("3 never fetched");
    p.alter_partition_completed(shrink.proposal_id, Ok(accepted(&shrink, &[1, 2, 3])), T0 + LAG + 2);
    assert_eq!(p.isr(), &set(&[1, 2]));
    assert_eq!(p.high_watermark(), 0);
    assert_eq!(p.waiting_requests(), vec![1]);
    assert_eq!(completions(&p.tick(DEADLINE)), vec![(1, REQUEST_TIMED_OUT)]);
}

#[test]
fn acks_all_for_an_offset_already_committed_reports_a_shrunk_isr() {
    // checkEnoughReplicasReachOffset: HW passed the offset but the ISR is now below
    // min.insync.replicas: NOT_ENOUGH_REPLICAS_AFTER_APPEND.
    let mut p = leader(&[1, 2], 10, 2);
    fetch_ok(&mut p, 2, 10, T0 + 1);
    assert_eq!(p.high_watermark(), 10);
    p.apply_leader_and_isr(&state(1, 1, 2, &[1, 2, 3], &[1]), T0 + 2);
    assert_eq!(
        p.await_replication(1, 10, DEADLINE),
        vec![Effect::CompleteProduce { request_id: 1, error_code: NOT_ENOUGH_REPLICAS_AFTER_APPEND }]
    );
}

#[test]
fn losing_leadership_fails_waiting_produces() {
    // ReplicaManager completes delayed produces of a partition no longer led here.
    let mut p = leader(&[1, 2], 10, 1);
    p.leader_appended(12, T0 + 1);
    p.await_replication(1, 11, DEADLINE);
    p.await_replication(2, 12, DEADLINE);
    let effects = p.apply_leader_and_isr(&state(2, 2, 2, &[1, 2], &[1, 2]), T0 + 2);
    assert_eq!(completions(&effects), vec![(1, NOT_LEADER_OR_FOLLOWER), (2, NOT_LEADER_OR_FOLLOWER)]);
    assert_eq!(p.waiting_requests(), Vec::<RequestId>::new());
    assert_eq!(
        p.await_replication(3, 12, DEADLINE),
        vec![Effect::CompleteProduce { request_id: 3, error_code: NOT_LEADER_OR_FOLLOWER }]
    );
    // Nothing left to expire.
    assert_eq!(p.tick(DEADLINE), vec![]);
}

#[test]
fn re_election_keeps_waiting_produces() {
    // The records are still in the leader's log: makeLeader does not touch the purgatory.
    let mut p = leader(&[1, 2], 10, 1);
    p.leader_appended(12, T0 + 1);
    p.await_replication(1, 12, DEADLINE);
    assert_eq!(completions(&p.apply_leader_and_isr(&state(1, 2, 2, &[1, 2], &[1, 2]), T0 + 2)), vec![]);
    assert_eq!(p.waiting_requests(), vec![1]);
    let f = FollowerFetch { current_leader_epoch: Some(2), ..fetch(2, 12) };
    let (_, effects) = p.follower_fetch(&f, T0 + 3);
    assert_eq!(completions(&effects), vec![(1, NONE)]);
}

#[test]
fn a_stale_append_report_is_ignored() {
    let mut p = leader(&[1], 10, 1);
    p.leader_appended(12, T0 + 1);
    assert_eq!(p.leader_appended(11, T0 + 2), vec![]);
    assert_eq!(p.log_end_offset(), 12);
}
