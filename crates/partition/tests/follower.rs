//! The follower side: ReplicaFetcherThread's handling of fetch responses and UnifiedLog's
//! truncation, as they change the replica's offsets and epoch cache.

mod common;

use common::*;
use tern_partition::errors::*;
use tern_partition::*;

fn follower(log_end_offset: i64) -> Partition {
    let mut p = partition(log_end_offset, 1);
    assert_eq!(
        p.apply_leader_and_isr(&state(2, 1, 1, &[1, 2, 3], &[1, 2, 3]), T0),
        vec![Effect::FetchFrom { leader_id: 2, leader_epoch: 1 }]
    );
    p
}

fn response(batches: &[(i32, i64)], log_end_offset: i64, leader_high_watermark: i64) -> FetchedFromLeader {
    FetchedFromLeader { batches: batches.to_vec(), log_end_offset, leader_high_watermark, leader_log_start_offset: 0 }
}

#[test]
fn the_follower_hw_is_the_leader_hw_capped_by_the_local_log_end() {
    // UnifiedLog.updateHighWatermark
    let mut p = follower(0);
    assert_eq!(p.apply_fetch_response(&response(&[(1, 0)], 5, 8)), vec![hw_changed(5)]);
    assert_eq!(p.apply_fetch_response(&response(&[(1, 5)], 10, 8)), vec![hw_changed(8)]);
    // On a follower it follows the leader's, even down.
    assert_eq!(p.apply_fetch_response(&response(&[], 10, 7)), vec![hw_changed(7)]);
    assert_eq!(p.apply_fetch_response(&response(&[], 10, 7)), vec![]);
}

#[test]
fn appended_batches_record_their_epochs() {
    // UnifiedLog.append assigns each batch's partition leader epoch at its base offset.
    let mut p = follower(0);
    p.apply_fetch_response(&response(&[(0, 0), (0, 3), (1, 5), (1, 7)], 9, 0));
    assert_eq!(
        p.epochs().entries(),
        &[EpochEntry { epoch: 0, start_offset: 0 }, EpochEntry { epoch: 1, start_offset: 5 }]
    );
    assert_eq!(p.end_offset_for_epoch(0), EpochEndOffset { leader_epoch: 0, end_offset: 5 });
    assert_eq!(p.end_offset_for_epoch(1), EpochEndOffset { leader_epoch: 1, end_offset: 9 });
}

#[test]
fn the_follower_log_start_follows_the_leader_up_to_its_hw() {
    // maybeIncrementLogStartOffset refuses an offset above the HW.
    let mut p = follower(0);
    let fetched = FetchedFromLeader { leader_log_start_offset: 4, ..response(&[(1, 0)], 10, 6) };
    p.apply_fetch_response(&fetched);
    assert_eq!(p.log_start_offset(), 4);
    assert_eq!(p.epochs().entries(), &[EpochEntry { epoch: 1, start_offset: 4 }]);
    let fetched = FetchedFromLeader { leader_log_start_offset: 9, ..response(&[], 10, 6) };
    p.apply_fetch_response(&fetched);
    assert_eq!(p.log_start_offset(), 4);
    assert_eq!(p.log_start_advanced(7), Err(OFFSET_OUT_OF_RANGE));
    assert_eq!(p.log_start_advanced(6), Ok(()));
    assert_eq!(p.log_start_offset(), 6);
}

#[test]
fn truncation_lowers_the_log_end_the_hw_and_the_epoch_cache() {
    // UnifiedLog.truncateTo
    let mut p = follower(0);
    p.apply_fetch_response(&response(&[(0, 0), (1, 5), (2, 8)], 10, 9));
    assert_eq!(p.truncate_to(6), vec![hw_changed(6)]);
    assert_eq!((p.log_end_offset(), p.high_watermark()), (6, 6));
    assert_eq!(
        p.epochs().entries(),
        &[EpochEntry { epoch: 0, start_offset: 0 }, EpochEntry { epoch: 1, start_offset: 5 }]
    );
    // At or past the end: the log stays, an epoch cached at the end is dropped.
    let mut p = partition(10, 1);
    p.apply_leader_and_isr(&state(1, 4, 1, &[1, 2], &[1, 2]), T0);
    p.apply_leader_and_isr(&state(2, 5, 2, &[1, 2], &[1, 2]), T0);
    assert_eq!(p.epochs().entries(), &[EpochEntry { epoch: 4, start_offset: 10 }]);
    assert_eq!(p.truncate_to(12), vec![]);
    assert_eq!(p.log_end_offset(), 10);
    assert!(p.epochs().entries().is_empty());
}

#[test]
fn truncating_fully_restarts_the_log_at_the_offset() {
    // UnifiedLog.truncateFullyAndStartAt
    let mut p = follower(0);
    p.apply_fetch_response(&response(&[(0, 0)], 10, 9));
    assert_eq!(p.truncate_fully_and_start_at(50), vec![hw_changed(50)]);
    assert_eq!((p.log_start_offset(), p.log_end_offset(), p.high_watermark()), (50, 50, 50));
    assert!(p.epochs().entries().is_empty());
}

#[test]
fn a_leader_ignores_follower_only_commands() {
    let mut p = leader(&[1, 2], 10, 1);
    assert_eq!(p.apply_fetch_response(&response(&[(7, 10)], 20, 20)), vec![]);
    assert_eq!(p.truncate_to(3), vec![]);
    assert_eq!(p.truncate_fully_and_start_at(3), vec![]);
    assert_eq!((p.log_end_offset(), p.high_watermark()), (10, 0));
}

#[test]
fn a_follower_has_no_leader_duties() {
    let mut p = follower(10);
    assert_eq!(p.leader_appended(20, T0), vec![]);
    assert_eq!(p.tick(T0 + 10 * LAG), vec![]);
    assert_eq!(p.follower_fetch(&fetch(3, 0), T0).0, Err(NOT_LEADER_OR_FOLLOWER));
}

#[test]
fn the_checkpointed_hw_is_clamped_into_the_log() {
    let log = LocalLog { log_start_offset: 5, log_end_offset: 10, high_watermark: 40, epochs: LeaderEpochCache::new() };
    let p = Partition::new(1, 1, PartitionConfig::default(), log);
    assert_eq!((p.log_start_offset(), p.high_watermark(), p.log_end_offset()), (5, 10, 10));
    assert_eq!((p.role(), p.leader_id(), p.leader_epoch()), (Role::Follower, None, -1));
}
