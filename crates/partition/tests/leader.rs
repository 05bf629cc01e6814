//! The leader's rules, each checked against the Kafka code it comes from (`Partition.scala`,
//! `Replica.scala`): high watermark, last-caught-up time, ISR shrink and expand, AlterPartition
//! answers, and becoming leader or follower.

mod common;

use common::*;
use tern_partition::errors::*;
use tern_partition::*;

#[test]
fn hw_is_the_smallest_log_end_offset_over_the_isr_including_the_leader() {
    // maybeIncrementLeaderHW
    let mut p = leader(&[1, 2, 3], 10, 1);
    assert_eq!(p.high_watermark(), 0);
    // Follower 3 has not fetched in this leadership (unknown offset): nothing advances.
    assert_eq!(fetch_ok(&mut p, 2, 10, T0 + 1), vec![]);
    assert_eq!(p.high_watermark(), 0);
    assert_eq!(fetch_ok(&mut p, 3, 6, T0 + 2), vec![hw_changed(6)]);
    assert_eq!(fetch_ok(&mut p, 3, 10, T0 + 3), vec![hw_changed(10)]);
    // The leader's own log end offset bounds it too.
    assert_eq!(p.leader_appended(12, T0 + 4), vec![]);
    assert_eq!(p.high_watermark(), 10);
}

#[test]
fn hw_never_goes_backwards_on_a_leader() {
    // UnifiedLog.maybeIncrementHighWatermark only moves forward.
    let mut p = leader(&[1, 2], 10, 1);
    fetch_ok(&mut p, 2, 10, T0 + 1);
    assert_eq!(p.high_watermark(), 10);
    // A follower that lost unflushed data reports less: the HW stays.
    assert_eq!(fetch_ok(&mut p, 2, 4, T0 + 2), vec![]);
    assert_eq!(p.high_watermark(), 10);
}

#[test]
fn hw_does_not_advance_while_the_committed_isr_is_under_min_insync_replicas() {
    // KAFKA-15583: maybeIncrementLeaderHW returns early when isUnderMinIsr.
    let mut p = leader(&[1], 10, 2);
    assert!(p.is_under_min_isr());
    let effects = fetch_ok(&mut p, 2, 10, T0 + 1);
    let proposal = proposals(&effects).pop().expect("expansion proposed");
    // The follower is in the maximal ISR but the committed ISR is still {1}.
    assert_eq!(p.maximal_isr(), set(&[1, 2]));
    assert_eq!(p.high_watermark(), 0);
    let effects = p.alter_partition_completed(proposal.proposal_id, Ok(accepted(&proposal, &[1, 2, 3])), T0 + 2);
    assert_eq!(effects, vec![hw_changed(10)]);
    assert!(!p.is_under_min_isr());
}

#[test]
fn effective_min_isr_is_capped_by_the_replication_factor() {
    // effectiveMinIsr = min(min.insync.replicas, replicas)
    let p = leader(&[1, 2, 3], 10, 5);
    assert_eq!(p.effective_min_isr(), 3);
    assert!(!p.is_under_min_isr());
}

#[test]
fn a_caught_up_eligible_follower_outside_the_isr_holds_back_the_hw() {
    // maybeIncrementLeaderHW's shouldWaitForReplicaToJoinIsr: a follower about to join must
    // not fall behind a HW computed without it.
    let mut p = leader(&[1], 10, 1);
    let effects = fetch_ok(&mut p, 2, 10, T0 + 1);
    assert_eq!(proposals(&effects).len(), 1);
    // Expansion of 2 in flight: 3 is caught up but cannot be proposed yet.
    assert_eq!(proposals(&fetch_ok(&mut p, 3, 10, T0 + 2)), vec![]);
    assert_eq!(p.high_watermark(), 10);
    p.leader_appended(20, T0 + 3);
    assert_eq!(fetch_ok(&mut p, 2, 20, T0 + 4), vec![]);
    assert_eq!(p.high_watermark(), 10, "held back by follower 3 at 10");
    // Once 3 has not caught up for replica.lag.time.max.ms it stops counting.
    assert_eq!(p.tick(T0 + 2 + LAG + 1), vec![hw_changed(20)]);
}

#[test]
fn an_ineligible_follower_outside_the_isr_does_not_hold_back_the_hw() {
    let mut p = leader(&[1, 2], 10, 1);
    fetch_ok(&mut p, 2, 10, T0 + 1);
    let mut brokers = registered(&[1, 2, 3]);
    brokers.get_mut(&3).unwrap().fenced = true;
    p.update_brokers(brokers);
    assert_eq!(proposals(&fetch_ok(&mut p, 3, 10, T0 + 2)), vec![], "a fenced broker is not proposed");
    p.leader_appended(20, T0 + 3);
    assert_eq!(fetch_ok(&mut p, 2, 20, T0 + 4), vec![hw_changed(20)]);
}

#[test]
fn last_caught_up_time_uses_the_leader_end_offset_at_the_previous_fetch() {
    // Replica.updateFetchStateOrThrow
    let mut p = leader(&[1, 2, 3], 10, 1);
    // New leader: an ISR follower starts caught up "now", with the leader's previous end unknown.
    assert_eq!(p.follower(2).unwrap().last_caught_up_time_ms, T0);
    fetch_ok(&mut p, 2, 5, T0 + 100);
    assert_eq!(p.follower(2).unwrap().last_caught_up_time_ms, T0);
    assert_eq!(p.follower(2).unwrap().last_fetch_leader_log_end_offset, 10);
    p.leader_appended(15, T0 + 200);
    // Reached what the leader had at the previous fetch: caught up as of that fetch.
    fetch_ok(&mut p, 2, 10, T0 + 300);
    assert_eq!(p.follower(2).unwrap().last_caught_up_time_ms, T0 + 100);
    // Short of both the current and the previous leader end: unchanged.
    fetch_ok(&mut p, 2, 12, T0 + 400);
    assert_eq!(p.follower(2).unwrap().last_caught_up_time_ms, T0 + 100);
    // Reached the leader's current end: caught up now.
    fetch_ok(&mut p, 2, 15, T0 + 500);
    assert_eq!(p.follower(2).unwrap().last_caught_up_time_ms, T0 + 500);
}

#[test]
fn isr_shrink_proposes_removing_followers_not_caught_up_within_the_lag() {
    // maybeShrinkIsr / getOutOfSyncReplicas
    let mut p = leader(&[1, 2, 3], 10, 1);
    fetch_ok(&mut p, 2, 10, T0 + 1);
    // Follower 3 has not fetched: its caught-up time is the leadership start, T0.
    assert_eq!(p.tick(T0 + LAG), vec![]);
    let effects = p.tick(T0 + 5 * LAG);
    // Follower 2 last fetched long ago but has the leader's end offset: still in sync.
    assert_eq!(
        effects,
        vec![Effect::AlterPartition(AlterPartitionProposal {
            proposal_id: 1,
            leader_id: 1,
            leader_epoch: 1,
            partition_epoch: 1,
            new_isr: vec![
                IsrMember { broker_id: 1, broker_epoch: LOCAL_EPOCH },
                IsrMember { broker_id: 2, broker_epoch: epoch_of(2) },
            ],
        })]
    );
    assert_eq!(p.isr(), &set(&[1, 2, 3]), "not applied before the controller answers");
    // One proposal at a time.
    assert_eq!(p.tick(T0 + 6 * LAG), vec![]);
}

#[test]
fn a_pending_shrink_does_not_advance_the_hw_until_accepted() {
    // PendingShrinkIsr.maximalIsr is the committed ISR: a rejected shrink must not have moved it.
    let mut p = leader(&[1, 2, 3], 10, 1);
    fetch_ok(&mut p, 2, 10, T0 + 1);
    fetch_ok(&mut p, 3, 0, T0 + 1);
    let proposal = proposals(&p.tick(T0 + LAG + 2)).pop().expect("shrink proposed");
    assert_eq!(proposal.isr(), set(&[1, 2]));
    assert_eq!(p.maximal_isr(), set(&[1, 2, 3]));
    assert_eq!(p.high_watermark(), 0);
    let effects = p.alter_partition_completed(proposal.proposal_id, Ok(accepted(&proposal, &[1, 2, 3])), T0 + LAG + 3);
    assert_eq!(effects, vec![hw_changed(10)]);
    assert_eq!(p.isr(), &set(&[1, 2]));
    assert_eq!(p.partition_epoch(), 2);
}

#[test]
fn isr_expand_needs_the_hw_and_the_start_of_the_leader_epoch() {
    // maybeExpandIsr / isFollowerInSync
    let mut p = leader(&[1, 2], 10, 1);
    assert_eq!(p.leader_epoch_start_offset(), Some(10));
    // At the HW (0) but before this epoch's first offset: a new leader could lose 0..10.
    assert_eq!(proposals(&fetch_ok(&mut p, 3, 5, T0 + 1)), vec![]);
    let effects = fetch_ok(&mut p, 3, 10, T0 + 2);
    let proposal = proposals(&effects).pop().expect("expansion proposed");
    assert_eq!(
        proposal.new_isr,
        vec![
            IsrMember { broker_id: 1, broker_epoch: LOCAL_EPOCH },
            // Follower 2 has not fetched in this leadership: sent without an epoch.
            IsrMember { broker_id: 2, broker_epoch: -1 },
            IsrMember { broker_id: 3, broker_epoch: epoch_of(3) },
        ]
    );
    // PendingExpandIsr: counted for the HW at once, not for min.insync.replicas.
    assert_eq!(p.maximal_isr(), set(&[1, 2, 3]));
    assert_eq!(p.isr(), &set(&[1, 2]));
}

#[test]
fn fenced_shutting_down_unregistered_or_other_incarnation_brokers_are_not_added() {
    // KIP-841 (fenced, controlled shutdown) and KIP-903 (fetch broker epoch must match).
    type Setup = Box<dyn Fn(&mut Partition, &mut FollowerFetch)>;
    let cases: Vec<(&str, Setup)> = vec![
        (
            "fenced",
            Box::new(|p, _| {
                let mut b = registered(&[1, 2, 3]);
                b.get_mut(&3).unwrap().fenced = true;
                p.update_brokers(b);
            }),
        ),
        (
            "shutting down",
            Box::new(|p, _| {
                let mut b = registered(&[1, 2, 3]);
                b.get_mut(&3).unwrap().in_controlled_shutdown = true;
                p.update_brokers(b);
            }),
        ),
        ("unregistered", Box::new(|p, _| p.update_brokers(registered(&[1, 2])))),
        ("newer broker epoch than registered", Box::new(|_, f| f.broker_epoch = epoch_of(3) + 1)),
    ];
    for (name, setup) in cases {
        let mut p = leader(&[1, 2], 10, 1);
        let mut f = fetch(3, 10);
        setup(&mut p, &mut f);
        let (answer, effects) = p.follower_fetch(&f, T0 + 1);
        assert!(answer.is_ok(), "{name}");
        assert_eq!(proposals(&effects), vec![], "{name}");
        assert!(!p.is_isr_eligible(3), "{name}");
    }
    // A fetch without a broker epoch (-1, before v15) does not block eligibility.
    let mut p = leader(&[1, 2], 10, 1);
    let (_, effects) = p.follower_fetch(&FollowerFetch { broker_epoch: -1, ..fetch(3, 10) }, T0 + 1);
    assert_eq!(proposals(&effects).len(), 1);
}

#[test]
fn a_rejected_proposal_returns_to_the_committed_isr_and_can_be_proposed_again() {
    // handleAlterPartitionError: OPERATION_NOT_ATTEMPTED and INELIGIBLE_REPLICA reset the state.
    for error in [OPERATION_NOT_ATTEMPTED, INELIGIBLE_REPLICA] {
        let mut p = leader(&[1, 2], 10, 1);
        let proposal = proposals(&fetch_ok(&mut p, 3, 10, T0 + 1)).pop().unwrap();
        assert_eq!(p.alter_partition_completed(proposal.proposal_id, Err(error), T0 + 2), vec![]);
        assert_eq!(p.pending_proposal(), None);
        assert_eq!(p.maximal_isr(), set(&[1, 2]));
        let again = proposals(&fetch_ok(&mut p, 3, 10, T0 + 3)).pop().expect("proposed again");
        assert_ne!(again.proposal_id, proposal.proposal_id);
    }
}

#[test]
fn an_answer_showing_our_view_is_stale_keeps_the_proposal_pending() {
    // handleAlterPartitionError: these wait for new metadata.
    for error in [
        FENCED_LEADER_EPOCH,
        INVALID_UPDATE_VERSION,
        UNKNOWN_TOPIC_OR_PARTITION,
        UNKNOWN_TOPIC_ID,
        INVALID_REQUEST,
        NEW_LEADER_ELECTED,
    ] {
        let mut p = leader(&[1, 2], 10, 1);
        let proposal = proposals(&fetch_ok(&mut p, 3, 10, T0 + 1)).pop().unwrap();
        assert_eq!(p.alter_partition_completed(proposal.proposal_id, Err(error), T0 + 2), vec![]);
        assert_eq!(p.pending_proposal(), Some(&proposal), "error {error}");
        // New metadata replaces it.
        p.apply_leader_and_isr(&state(1, 1, 2, &[1, 2, 3], &[1, 2]), T0 + 3);
        assert_eq!(p.pending_proposal(), None);
    }
}

#[test]
fn other_errors_retry_the_same_proposal() {
    let mut p = leader(&[1, 2], 10, 1);
    let proposal = proposals(&fetch_ok(&mut p, 3, 10, T0 + 1)).pop().unwrap();
    let effects = p.alter_partition_completed(proposal.proposal_id, Err(REQUEST_TIMED_OUT), T0 + 2);
    assert_eq!(effects, vec![Effect::AlterPartition(proposal.clone())]);
    assert_eq!(p.pending_proposal(), Some(&proposal));
}

#[test]
fn an_accepted_answer_with_another_leader_epoch_or_an_older_partition_epoch_is_ignored() {
    // handleAlterPartitionUpdate
    let mut p = leader(&[1, 2], 10, 1);
    let proposal = proposals(&fetch_ok(&mut p, 3, 10, T0 + 1)).pop().unwrap();
    let other_epoch = LeaderAndIsr { leader_epoch: 2, ..accepted(&proposal, &[1, 2, 3]) };
    assert_eq!(p.alter_partition_completed(proposal.proposal_id, Ok(other_epoch), T0 + 2), vec![]);
    let older = LeaderAndIsr { partition_epoch: 0, ..accepted(&proposal, &[1, 2, 3]) };
    assert_eq!(p.alter_partition_completed(proposal.proposal_id, Ok(older), T0 + 2), vec![]);
    assert_eq!(p.isr(), &set(&[1, 2]));
    assert_eq!(p.pending_proposal(), Some(&proposal));
    // Same partition epoch: the controller found nothing to change; committed as answered.
    let same = LeaderAndIsr { partition_epoch: 1, ..accepted(&proposal, &[1, 2, 3]) };
    p.alter_partition_completed(proposal.proposal_id, Ok(same), T0 + 3);
    assert_eq!(p.isr(), &set(&[1, 2, 3]));
    assert_eq!(p.pending_proposal(), None);
}

#[test]
fn an_answer_to_a_replaced_proposal_is_ignored() {
    // submitAlterPartition: `partitionState != proposedIsrState` means the answer is out of date.
    let mut p = leader(&[1, 2], 10, 1);
    let proposal = proposals(&fetch_ok(&mut p, 3, 10, T0 + 1)).pop().unwrap();
    p.apply_leader_and_isr(&state(1, 1, 2, &[1, 2, 3], &[1, 2]), T0 + 2);
    assert_eq!(p.alter_partition_completed(proposal.proposal_id, Ok(accepted(&proposal, &[1, 2, 3])), T0 + 3), vec![]);
    assert_eq!(p.isr(), &set(&[1, 2]));
    // After losing leadership too.
    let proposal = proposals(&fetch_ok(&mut p, 3, 10, T0 + 4)).pop().unwrap();
    p.apply_leader_and_isr(&state(2, 2, 3, &[1, 2, 3], &[2, 3]), T0 + 5);
    assert_eq!(p.alter_partition_completed(proposal.proposal_id, Ok(accepted(&proposal, &[1, 2, 3])), T0 + 6), vec![]);
    assert_eq!(p.isr(), &set(&[]));
}

#[test]
fn leader_and_isr_with_an_older_partition_epoch_is_ignored() {
    // makeLeader / makeFollower skip a partition epoch below the current one.
    let mut p = leader(&[1, 2], 10, 1);
    p.apply_leader_and_isr(&state(1, 1, 3, &[1, 2, 3], &[1, 2, 3]), T0 + 1);
    assert_eq!(p.apply_leader_and_isr(&state(2, 2, 2, &[1, 2, 3], &[2]), T0 + 2), vec![]);
    assert_eq!(p.role(), Role::Leader);
    assert_eq!(p.apply_leader_and_isr(&state(1, 1, 2, &[1, 2, 3], &[1]), T0 + 2), vec![]);
    assert_eq!(p.isr(), &set(&[1, 2, 3]));
}

#[test]
fn a_new_leader_epoch_starts_at_the_log_end_and_resets_the_followers() {
    // makeLeader (isNewLeaderEpoch) and Replica.resetReplicaState
    let mut p = partition(10, 1);
    let effects = p.apply_leader_and_isr(&state(1, 3, 1, &[1, 2, 3], &[1, 2]), T0);
    assert_eq!(effects, vec![Effect::StopFetching]);
    assert_eq!((p.role(), p.leader_id(), p.leader_epoch()), (Role::Leader, Some(1), 3));
    assert_eq!(p.epochs().entries(), &[EpochEntry { epoch: 3, start_offset: 10 }]);
    assert_eq!(p.leader_epoch_start_offset(), Some(10));
    let f2 = *p.follower(2).unwrap();
    assert_eq!((f2.log_end_offset, f2.last_caught_up_time_ms, f2.broker_epoch), (UNKNOWN_OFFSET, T0, None));
    assert_eq!(p.follower(3).unwrap().last_caught_up_time_ms, 0, "outside the ISR");

    // Re-elected in a new epoch: what it learnt of the followers' logs is kept.
    let in_epoch_3 = |offset| FollowerFetch { current_leader_epoch: Some(3), ..fetch(2, offset) };
    p.follower_fetch(&in_epoch_3(10), T0 + 1).0.unwrap();
    p.leader_appended(14, T0 + 2);
    p.follower_fetch(&in_epoch_3(10), T0 + 3).0.unwrap();
    let effects = p.apply_leader_and_isr(&state(1, 4, 2, &[1, 2, 3], &[1, 2]), T0 + 4);
    assert_eq!(effects, vec![], "already leading: no fetcher to stop");
    let f2 = *p.follower(2).unwrap();
    assert_eq!(
        (f2.log_end_offset, f2.last_fetch_leader_log_end_offset, f2.last_fetch_time_ms, f2.broker_epoch),
        (10, 14, T0 + 4, Some(epoch_of(2)))
    );
    assert_eq!(p.leader_epoch_start_offset(), Some(14));
    assert_eq!(
        p.epochs().entries(),
        &[EpochEntry { epoch: 3, start_offset: 10 }, EpochEntry { epoch: 4, start_offset: 14 }]
    );
}

#[test]
fn same_leader_epoch_updates_replicas_and_isr_only() {
    // makeLeader without a new leader epoch: no reset, the epoch start offset stays.
    let mut p = leader(&[1, 2], 10, 1);
    fetch_ok(&mut p, 2, 7, T0 + 1);
    p.apply_leader_and_isr(&state(1, 1, 2, &[1, 2, 4], &[1, 2, 4]), T0 + 2);
    assert_eq!(p.follower(2).unwrap().log_end_offset, 7);
    assert_eq!(p.follower(3), None, "removed from the replicas");
    assert_eq!(p.follower(4).unwrap().log_end_offset, UNKNOWN_OFFSET);
    assert_eq!(p.leader_epoch_start_offset(), Some(10));
    assert_eq!(p.replicas(), &[1, 2, 4]);
    assert_eq!(p.partition_epoch(), 2);
}

#[test]
fn becoming_follower_clears_the_isr_and_fetches_from_the_new_leader() {
    // makeFollower: the ISR is the leader's business; fetchers restart on a new leader epoch.
    let mut p = leader(&[1, 2], 10, 1);
    let effects = p.apply_leader_and_isr(&state(2, 2, 2, &[1, 2, 3], &[1, 2]), T0 + 1);
    assert_eq!(effects, vec![Effect::FetchFrom { leader_id: 2, leader_epoch: 2 }]);
    assert_eq!((p.role(), p.leader_id(), p.leader_epoch()), (Role::Follower, Some(2), 2));
    assert!(p.isr().is_empty());
    assert_eq!(p.follower(2), None);
    // Same leader epoch (only the ISR changed): the fetcher keeps going.
    assert_eq!(p.apply_leader_and_isr(&state(2, 2, 3, &[1, 2, 3], &[2]), T0 + 2), vec![]);
    // No leader: nothing to fetch from.
    assert_eq!(p.apply_leader_and_isr(&state(NO_LEADER, 3, 4, &[1, 2, 3], &[]), T0 + 3), vec![]);
    assert_eq!(p.leader_id(), None);
}
