//! The leader-epoch cache against the cases of Kafka's `LeaderEpochFileCacheTest`.

use tern_partition::epochs::{UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET};
use tern_partition::{EpochEndOffset, EpochEntry, LeaderEpochCache};

fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
    let mut cache = LeaderEpochCache::new();
    for &(epoch, start_offset) in entries {
        cache.assign(epoch, start_offset);
    }
    cache
}

fn entries(cache: &LeaderEpochCache) -> Vec<(i32, i64)> {
    cache.entries().iter().map(|e| (e.epoch, e.start_offset)).collect()
}

fn end(leader_epoch: i32, end_offset: i64) -> EpochEndOffset {
    EpochEndOffset { leader_epoch, end_offset }
}

#[test]
fn latest_epoch_ends_at_the_log_end_offset() {
    // shouldAddEpochAndMessageOffsetToCache / shouldReturnLogEndOffsetIfLatestEpochRequested
    let c = cache(&[(2, 10)]);
    assert_eq!(c.latest_epoch(), Some(2));
    assert_eq!(c.end_offset_for(2, 11), end(2, 11));
}

#[test]
fn undefined_epoch_or_empty_cache_is_undefined() {
    // shouldReturnUndefinedOffsetIfUndefinedEpochRequested / shouldReturnUnsupportedIfNoEpochRecorded
    assert_eq!(cache(&[(2, 10)]).end_offset_for(UNDEFINED_EPOCH, 73), EpochEndOffset::UNDEFINED);
    assert_eq!(LeaderEpochCache::new().end_offset_for(0, 0), end(UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET));
    assert_eq!(LeaderEpochCache::new().latest_epoch(), None);
}

#[test]
fn an_epoch_keeps_its_first_start_offset() {
    // shouldNotOverwriteLogEndOffsetForALeaderEpochOnceItHasBeenAssigned
    let mut c = cache(&[(2, 9)]);
    assert!(!c.assign(2, 10));
    assert_eq!(entries(&c), vec![(2, 9)]);
}

#[test]
fn a_new_epoch_at_the_same_offset_replaces_the_old_one() {
    // shouldEnforceMonotonicallyIncreasingStartOffsets
    assert_eq!(entries(&cache(&[(2, 9), (3, 9)])), vec![(3, 9)]);
    // shouldEnforceOffsetsIncreaseMonotonically: epoch forward, offset backwards
    assert_eq!(entries(&cache(&[(2, 6), (3, 5)])), vec![(3, 5)]);
}

#[test]
fn an_epoch_older_than_the_cache_ends_where_the_cache_begins() {
    // shouldReturnFirstEpochIfRequestedEpochLessThanFirstEpoch
    assert_eq!(cache(&[(5, 11), (6, 12), (7, 13)]).end_offset_for(4, 0), end(4, 11));
}

#[test]
fn same_epoch_at_an_earlier_offset_truncates_the_later_entries() {
    // shouldTruncateIfMatchingEpochButEarlierStartingOffset
    let c = cache(&[(5, 11), (6, 12), (7, 13), (7, 12)]);
    assert_eq!(entries(&c), vec![(5, 11), (7, 12)]);
    assert_eq!(c.end_offset_for(5, 0), end(5, 12));
    assert_eq!(c.end_offset_for(6, 0), end(5, 12));
}

#[test]
fn an_epoch_ends_where_the_next_one_starts() {
    // shouldGetFirstOffsetOfSubsequentEpochWhenOffsetRequestedForPreviousEpoch
    let c = cache(&[(1, 11), (1, 12), (2, 13), (2, 14), (3, 15), (3, 16)]);
    assert_eq!(c.end_offset_for(2, 17), end(2, 15));
    // shouldReturnNextAvailableEpochIfThereIsNoExactEpochForTheOneRequested
    let c = cache(&[(0, 10), (2, 13), (4, 17)]);
    assert_eq!(c.end_offset_for(1, 0), end(0, 13));
    assert_eq!(c.end_offset_for(2, 0), end(2, 17));
    assert_eq!(c.end_offset_for(3, 0), end(2, 17));
}

#[test]
fn an_epoch_above_every_entry_is_undefined() {
    // shouldReturnInvalidOffsetIfEpochIsRequestedWhichIsNotCurrentlyTracked
    assert_eq!(cache(&[(2, 6)]).end_offset_for(3, 100), EpochEndOffset::UNDEFINED);
}

#[test]
fn reassigning_an_older_epoch_drops_the_later_ones() {
    // shouldEnforceMonotonicallyIncreasingEpochs
    let c = cache(&[(1, 5), (2, 6), (1, 7)]);
    assert_eq!(c.latest_epoch(), Some(1));
    assert_eq!(c.end_offset_for(1, 8), end(1, 8));
    assert_eq!(c.end_offset_for(2, 8), EpochEndOffset::UNDEFINED);
    assert_eq!(entries(&c), vec![(1, 7)]);
}

#[test]
fn negative_values_are_not_recorded() {
    let mut c = cache(&[(2, 6)]);
    assert!(!c.assign(-1, 7));
    assert!(!c.assign(3, -1));
    assert_eq!(entries(&c), vec![(2, 6)]);
}

#[test]
fn truncate_from_end_removes_entries_starting_at_or_after_the_offset() {
    // shouldDropEntriesOnEpochBoundaryWhenRemovingLatestEntries
    let mut c = cache(&[(2, 6), (3, 8), (4, 11)]);
    c.truncate_from_end(8);
    assert_eq!(entries(&c), vec![(2, 6)]);
    // shouldDropEntriesBetweenEpochBoundaryWhenRemovingNewest
    let mut c = cache(&[(2, 6), (3, 8), (4, 11)]);
    c.truncate_from_end(9);
    assert_eq!(entries(&c), vec![(2, 6), (3, 8)]);
    // shouldNotResetEpochHistoryTailIfUndefinedPassed
    let mut c = cache(&[(2, 6), (3, 8), (4, 11)]);
    c.truncate_from_end(UNDEFINED_EPOCH_OFFSET);
    assert_eq!(c.entries().len(), 3);
}

#[test]
fn truncate_from_start_keeps_the_epoch_covering_the_new_start() {
    let base = [(2, 6), (3, 8), (4, 11)];
    let truncated = |offset| {
        let mut c = cache(&base);
        c.truncate_from_start(offset);
        entries(&c)
    };
    // shouldPreserveResetOffsetOnClearEarliestIfOneExists
    assert_eq!(truncated(8), vec![(3, 8), (4, 11)]);
    // shouldUpdateSavedOffsetWhenOffsetToClearToIsBetweenEpochs
    assert_eq!(truncated(9), vec![(3, 9), (4, 11)]);
    // shouldNotClearAnythingIfOffsetToEarly / shouldNotClearAnythingIfOffsetToFirstOffset
    assert_eq!(truncated(1), base.to_vec());
    assert_eq!(truncated(6), base.to_vec());
    // shouldRetainLatestEpochOnClearAllEarliest / ...AndUpdateItsOffset
    assert_eq!(truncated(11), vec![(4, 11)]);
    assert_eq!(truncated(15), vec![(4, 15)]);
    // shouldUpdateOffsetBetweenEpochBoundariesOnClearEarliest2
    let mut c = cache(&[(0, 0), (1, 7), (2, 10)]);
    c.truncate_from_start(5);
    assert_eq!(entries(&c), vec![(0, 5), (1, 7), (2, 10)]);
}

#[test]
fn from_entries_rebuilds_and_clear_empties() {
    let c = LeaderEpochCache::from_entries([
        EpochEntry { epoch: 2, start_offset: 6 },
        EpochEntry { epoch: 3, start_offset: 8 },
    ]);
    assert_eq!(entries(&c), vec![(2, 6), (3, 8)]);
    let mut c = c;
    c.clear();
    assert!(c.entries().is_empty());
}
