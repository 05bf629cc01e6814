//! Request validation: Kafka's `checkCurrentLeaderEpoch`/`getLocalLog` (KIP-320), a follower
//! fetch's checks and diverging epoch (`fetchRecords`/`readRecords`, KIP-595), and
//! OffsetForLeaderEpoch (`lastOffsetForLeaderEpoch`).

mod common;

use common::*;
use tern_partition::errors::*;
use tern_partition::*;

#[test]
fn current_leader_epoch_older_is_fenced_newer_is_unknown() {
    let mut p = partition(10, 1);
    p.apply_leader_and_isr(&state(1, 5, 1, &[1, 2], &[1, 2]), T0);
    assert_eq!(p.check_leader_epoch(Some(4), true), Err(FENCED_LEADER_EPOCH));
    assert_eq!(p.check_leader_epoch(Some(6), true), Err(UNKNOWN_LEADER_EPOCH));
    assert_eq!(p.check_leader_epoch(Some(5), true), Ok(()));
    // Requests before the field existed are not checked.
    assert_eq!(p.check_leader_epoch(None, true), Ok(()));
}

#[test]
fn a_follower_answers_not_leader_only_when_the_leader_is_required() {
    let mut p = partition(10, 1);
    p.apply_leader_and_isr(&state(2, 5, 1, &[1, 2], &[1, 2]), T0);
    assert_eq!(p.check_leader_epoch(Some(5), true), Err(NOT_LEADER_OR_FOLLOWER));
    assert_eq!(p.check_leader_epoch(Some(5), false), Ok(()));
    // The epoch is checked first.
    assert_eq!(p.check_leader_epoch(Some(4), true), Err(FENCED_LEADER_EPOCH));
}

#[test]
fn a_fetch_from_a_broker_outside_the_replicas_is_retried() {
    // followerReplicaOrThrow: UNKNOWN_LEADER_EPOCH with a current leader epoch, else NOT_LEADER_OR_FOLLOWER.
    let mut p = leader(&[1, 2], 10, 1);
    assert_eq!(p.follower_fetch(&fetch(4, 0), T0).0, Err(UNKNOWN_LEADER_EPOCH));
    let old = FollowerFetch { current_leader_epoch: None, ..fetch(4, 0) };
    assert_eq!(p.follower_fetch(&old, T0).0, Err(NOT_LEADER_OR_FOLLOWER));
}

#[test]
fn a_fetch_with_a_wrong_leader_epoch_is_rejected_before_anything_is_recorded() {
    let mut p = leader(&[1, 2], 10, 1);
    let stale = FollowerFetch { current_leader_epoch: Some(0), ..fetch(2, 10) };
    assert_eq!(p.follower_fetch(&stale, T0 + 1), (Err(FENCED_LEADER_EPOCH), vec![]));
    let ahead = FollowerFetch { current_leader_epoch: Some(2), ..fetch(2, 10) };
    assert_eq!(p.follower_fetch(&ahead, T0 + 1), (Err(UNKNOWN_LEADER_EPOCH), vec![]));
    assert_eq!(p.follower(2).unwrap().log_end_offset, UNKNOWN_OFFSET);
}

#[test]
fn a_fetch_outside_the_log_is_out_of_range() {
    let mut p = leader(&[1, 2], 10, 1);
    assert_eq!(p.follower_fetch(&fetch(2, 11), T0).0, Err(OFFSET_OUT_OF_RANGE));
    fetch_ok(&mut p, 2, 10, T0);
    p.log_start_advanced(5).unwrap();
    assert_eq!(p.follower_fetch(&fetch(2, 4), T0).0, Err(OFFSET_OUT_OF_RANGE));
    assert_eq!(p.follower(2).unwrap().log_end_offset, 10);
}

#[test]
fn a_fetch_from_an_earlier_incarnation_of_the_broker_is_fenced() {
    // Replica.updateFetchStateOrThrow (KIP-903): a broker epoch older than the registered one.
    let mut p = leader(&[1, 2], 10, 1);
    let old = FollowerFetch { broker_epoch: epoch_of(2) - 1, ..fetch(2, 10) };
    assert_eq!(p.follower_fetch(&old, T0).0, Err(NOT_LEADER_OR_FOLLOWER));
    assert_eq!(p.follower(2).unwrap().log_end_offset, UNKNOWN_OFFSET);
    assert_eq!(p.high_watermark(), 0);
}

#[test]
fn the_answer_carries_the_leader_offsets_as_the_fetch_arrived() {
    // readRecords captures HW, log start and end before the fetch moves anything.
    let mut p = leader(&[1, 2], 10, 1);
    let (answer, effects) = p.follower_fetch(&fetch(2, 10), T0);
    assert_eq!(
        answer,
        Ok(FollowerFetchAnswer { high_watermark: 0, log_start_offset: 0, log_end_offset: 10, diverging_epoch: None })
    );
    assert_eq!(effects, vec![hw_changed(10)]);
}

/// A leader in epoch 5 whose log has epochs 1 at 0, 3 at 20, 5 at 30, ending at 35.
fn leader_with_history() -> Partition {
    let epochs = LeaderEpochCache::from_entries([
        EpochEntry { epoch: 1, start_offset: 0 },
        EpochEntry { epoch: 3, start_offset: 20 },
    ]);
    let log = LocalLog { log_start_offset: 0, log_end_offset: 30, high_watermark: 30, epochs };
    let mut p = Partition::new(LOCAL, LOCAL_EPOCH, config(1), log);
    p.update_brokers(registered(&[1, 2, 3]));
    p.apply_leader_and_isr(&state(LOCAL, 5, 1, &[1, 2], &[1, 2]), T0);
    p.leader_appended(35, T0);
    p
}

fn v12_fetch(fetch_offset: i64, last_fetched_epoch: i32) -> FollowerFetch {
    FollowerFetch {
        current_leader_epoch: Some(5),
        last_fetched_epoch: Some(last_fetched_epoch),
        ..fetch(2, fetch_offset)
    }
}

#[test]
fn a_follower_ahead_of_its_epoch_gets_the_diverging_epoch() {
    // readRecords: diverging when the epoch's end is before the fetch offset, or the leader
    // knows only an older epoch.
    let mut p = leader_with_history();
    // The follower wrote epoch 1 up to 25; on the leader epoch 1 ends at 20.
    let (answer, effects) = p.follower_fetch(&v12_fetch(25, 1), T0 + 1);
    assert_eq!(answer.unwrap().diverging_epoch, Some(EpochEndOffset { leader_epoch: 1, end_offset: 20 }));
    assert_eq!(effects, vec![]);
    assert_eq!(p.follower(2).unwrap().log_end_offset, UNKNOWN_OFFSET, "not recorded while diverging");
    // Epoch 2 never wrote here: the follower must go back to the end of epoch 1.
    let (answer, _) = p.follower_fetch(&v12_fetch(18, 2), T0 + 1);
    assert_eq!(answer.unwrap().diverging_epoch, Some(EpochEndOffset { leader_epoch: 1, end_offset: 20 }));
    // Consistent: epoch 3 ends at 30 on the leader, the follower is at 28.
    let (answer, _) = p.follower_fetch(&v12_fetch(28, 3), T0 + 1);
    assert_eq!(answer.unwrap().diverging_epoch, None);
    assert_eq!(p.follower(2).unwrap().log_end_offset, 28);
    // The current epoch ends at the log end.
    assert_eq!(p.follower_fetch(&v12_fetch(35, 5), T0 + 1).0.unwrap().diverging_epoch, None);
}

#[test]
fn a_last_fetched_epoch_the_leader_cannot_place_is_out_of_range() {
    let mut p = leader_with_history();
    assert_eq!(p.follower_fetch(&v12_fetch(30, 6), T0).0, Err(OFFSET_OUT_OF_RANGE));
    // Below the log start, even when epochs diverge.
    p.log_start_advanced(22).unwrap();
    assert_eq!(p.follower_fetch(&v12_fetch(21, 1), T0).0, Err(OFFSET_OUT_OF_RANGE));
}

#[test]
fn offset_for_leader_epoch_answers_from_the_epoch_cache() {
    let mut p = leader_with_history();
    assert_eq!(
        p.last_offset_for_leader_epoch(Some(5), 1, true),
        Ok(EpochEndOffset { leader_epoch: 1, end_offset: 20 })
    );
    assert_eq!(
        p.last_offset_for_leader_epoch(Some(5), 4, true),
        Ok(EpochEndOffset { leader_epoch: 3, end_offset: 30 })
    );
    assert_eq!(
        p.last_offset_for_leader_epoch(Some(5), 5, true),
        Ok(EpochEndOffset { leader_epoch: 5, end_offset: 35 })
    );
    assert_eq!(p.last_offset_for_leader_epoch(None, 9, true), Ok(EpochEndOffset::UNDEFINED));
    assert_eq!(p.last_offset_for_leader_epoch(Some(4), 1, true), Err(FENCED_LEADER_EPOCH));
    p.apply_leader_and_isr(&state(2, 6, 2, &[1, 2], &[1, 2]), T0);
    assert_eq!(p.last_offset_for_leader_epoch(Some(6), 1, true), Err(NOT_LEADER_OR_FOLLOWER));
    assert_eq!(
        p.last_offset_for_leader_epoch(Some(6), 1, false),
        Ok(EpochEndOffset { leader_epoch: 1, end_offset: 20 })
    );
}
