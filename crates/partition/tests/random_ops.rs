//! Random sequences of follower fetches (at random offsets, with current, stale or missing
//! broker epochs and leader epochs), local appends with acks=all, ticks, AlterPartition
//! answers, broker fencing and restarts, and leadership changes. After every step:
//! - a leader's high watermark never decreases while it stays leader;
//! - when the high watermark advances, every member of the maximal ISR has reached it
//!   (followers may later report less, e.g. after losing unflushed data: Kafka does not lower
//!   the HW for that, the ISR shrink deals with it);
//! - an acks=all produce succeeds only once the leader and every committed-ISR member have
//!   its offset;
//! - every produce is answered exactly once, and none is left waiting after leadership is lost;
//! - a proposal adds at most one broker, only one eligible (registered, unfenced, not shutting
//!   down, last fetched with its registered broker epoch), and never while another is in
//!   flight; so an accepted proposal never brings an ineligible broker into the ISR.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use proptest::prelude::*;
use tern_partition::errors::*;
use tern_partition::*;

const FOLLOWERS: [BrokerId; 3] = [2, 3, 4];

#[derive(Debug, Clone)]
enum Op {
    Append { records: u8, acks_all: bool },
    Fetch { follower: u8, pick: u16, broker_epoch: u8, leader_epoch_off: i8 },
    Tick { ms: u16 },
    Answer { kind: u8, older: bool },
    Leadership { local: bool, epoch_bump: u8, partition_delta: i8, isr_mask: u8, with_4: bool },
    Broker { follower: u8, change: u8 },
    FetchedFromLeader { records: u8, hw_pick: u16 },
    Truncate { pick: u16 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1..4u8, any::<bool>()).prop_map(|(records, acks_all)| Op::Append { records, acks_all }),
        8 => (0..3u8, any::<u16>(), prop_oneof![8 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
              prop_oneof![10 => Just(0i8), 1 => Just(-1i8), 1 => Just(1i8)])
            .prop_map(|(follower, pick, broker_epoch, leader_epoch_off)| Op::Fetch { follower, pick, broker_epoch, leader_epoch_off }),
        3 => (0..15_000u16).prop_map(|ms| Op::Tick { ms }),
        3 => (0..6u8, prop_oneof![4 => Just(false), 1 => Just(true)]).prop_map(|(kind, older)| Op::Answer { kind, older }),
        1 => (any::<bool>(), 0..3u8, -1..3i8, any::<u8>(), any::<bool>())
            .prop_map(|(local, epoch_bump, partition_delta, isr_mask, with_4)| Op::Leadership { local, epoch_bump, partition_delta, isr_mask, with_4 }),
        1 => (0..3u8, 0..5u8).prop_map(|(follower, change)| Op::Broker { follower, change }),
        2 => (0..4u8, any::<u16>()).prop_map(|(records, hw_pick)| Op::FetchedFromLeader { records, hw_pick }),
        1 => any::<u16>().prop_map(|pick| Op::Truncate { pick }),
    ]
}

struct World {
    p: Partition,
    now: i64,
    brokers: BTreeMap<BrokerId, BrokerRegistration>,
    next_request: RequestId,
    /// Required offset of every request issued.
    required: BTreeMap<RequestId, i64>,
    answered: BTreeMap<RequestId, usize>,
    /// Every proposal seen, in order.
    proposals: Vec<AlterPartitionProposal>,
    /// The broker epoch of each follower's last accepted fetch.
    fetch_epochs: BTreeMap<BrokerId, i64>,
}

impl World {
    fn new() -> Self {
        let brokers = registered(&[1, 2, 3, 4]);
        let mut p = partition(0, 2);
        p.update_brokers(brokers.clone());
        World {
            p,
            now: T0,
            brokers,
            next_request: 0,
            required: BTreeMap::new(),
            answered: BTreeMap::new(),
            proposals: Vec::new(),
            fetch_epochs: BTreeMap::new(),
        }
    }

    fn step(&mut self, op: &Op) -> Vec<Effect> {
        let p = &mut self.p;
        match *op {
            Op::Append { records, acks_all } => {
                if p.check_append(if acks_all { -1 } else { 1 }).is_err() {
                    return Vec::new();
                }
                let log_end_offset = p.log_end_offset() + records as i64;
                let mut effects = p.leader_appended(log_end_offset, self.now);
                if acks_all {
                    self.next_request += 1;
                    self.required.insert(self.next_request, log_end_offset);
                    effects.extend(self.p.await_replication(self.next_request, log_end_offset, self.now + 20_000));
                }
                effects
            }
            Op::Fetch { follower, pick, broker_epoch, leader_epoch_off } => {
                let id = FOLLOWERS[follower as usize];
                let registered_epoch = self.brokers.get(&id).map_or(epoch_of(id), |b| b.broker_epoch);
                let broker_epoch = match broker_epoch {
                    0 => registered_epoch,
                    1 => registered_epoch - 1,
                    _ => -1,
                };
                let fetch = FollowerFetch {
                    replica_id: id,
                    broker_epoch,
                    current_leader_epoch: Some(p.leader_epoch() + leader_epoch_off as i32),
                    fetch_offset: pick as i64 % (p.log_end_offset() + 2),
                    last_fetched_epoch: None,
                    log_start_offset: 0,
                };
                let (answer, effects) = p.follower_fetch(&fetch, self.now);
                if answer.is_ok() {
                    self.fetch_epochs.insert(id, broker_epoch);
                }
                effects
            }
            Op::Tick { ms } => {
                self.now += ms as i64;
                p.tick(self.now)
            }
            Op::Answer { kind, older } => {
                let proposal = match (older, p.pending_proposal()) {
                    (false, Some(pending)) => pending.clone(),
                    _ => match self.proposals.first() {
                        Some(first) => first.clone(),
                        None => return Vec::new(),
                    },
                };
                let accepted = LeaderAndIsr {
                    leader: proposal.leader_id,
                    leader_epoch: proposal.leader_epoch,
                    partition_epoch: proposal.partition_epoch + 1,
                    replicas: p.replicas().to_vec(),
                    isr: proposal.isr(),
                };
                let answer = match kind {
                    0 | 1 => Ok(accepted),
                    2 => Err(OPERATION_NOT_ATTEMPTED),
                    3 => Err(FENCED_LEADER_EPOCH),
                    4 => Err(REQUEST_TIMED_OUT),
                    _ => Ok(LeaderAndIsr { leader_epoch: proposal.leader_epoch + 1, ..accepted }),
                };
                p.alter_partition_completed(proposal.proposal_id, answer, self.now)
            }
            Op::Leadership { local, epoch_bump, partition_delta, isr_mask, with_4 } => {
                let replicas: Vec<BrokerId> = if with_4 { vec![1, 2, 3, 4] } else { vec![1, 2, 3] };
                let leader = if local { LOCAL } else { 2 };
                let mut isr: BTreeSet<BrokerId> =
                    replicas.iter().enumerate().filter(|(i, _)| isr_mask & (1 << i) != 0).map(|(_, &id)| id).collect();
                isr.insert(leader);
                let state = LeaderAndIsr {
                    leader,
                    leader_epoch: p.leader_epoch() + epoch_bump as i32,
                    partition_epoch: p.partition_epoch() + partition_delta as i32,
                    replicas,
                    isr,
                };
                p.apply_leader_and_isr(&state, self.now)
            }
            Op::Broker { follower, change } => {
                let id = FOLLOWERS[follower as usize];
                let b = self.brokers.get_mut(&id).expect("registered");
                match change {
                    0 => b.fenced = true,
                    1 => b.fenced = false,
                    2 => b.in_controlled_shutdown = true,
                    3 => b.in_controlled_shutdown = false,
                    _ => b.broker_epoch += 1,
                }
                p.update_brokers(self.brokers.clone());
                Vec::new()
            }
            Op::FetchedFromLeader { records, hw_pick } => {
                let start = p.log_end_offset();
                let log_end_offset = start + records as i64;
                let batches = if records > 0 { vec![(p.leader_epoch().max(0), start)] } else { Vec::new() };
                let fetched = FetchedFromLeader {
                    batches,
                    log_end_offset,
                    leader_high_watermark: hw_pick as i64 % (log_end_offset + 3),
                    leader_log_start_offset: 0,
                };
                p.apply_fetch_response(&fetched)
            }
            Op::Truncate { pick } => {
                let offset = pick as i64 % (p.log_end_offset() + 1);
                p.truncate_to(offset)
            }
        }
    }

    fn leo_of(&self, id: BrokerId) -> i64 {
        if id == LOCAL {
            self.p.log_end_offset()
        } else {
            self.p.follower(id).map_or(i64::MIN, |f| f.log_end_offset)
        }
    }

    /// Eligible as the test sees it (KIP-841, KIP-903).
    fn eligible(&self, id: BrokerId) -> bool {
        let Some(b) = self.brokers.get(&id) else { return false };
        let fetched_with = self.fetch_epochs.get(&id);
        !b.fenced && !b.in_controlled_shutdown && fetched_with.is_some_and(|&e| e == -1 || e == b.broker_epoch)
    }

    fn check(&mut self, before: &Before, effects: &[Effect]) -> Result<(), TestCaseError> {
        let p = &self.p;
        let hw = p.high_watermark();
        prop_assert!(p.log_start_offset() <= hw && hw <= p.log_end_offset(), "offsets out of order");
        if before.was_leader && p.is_leader() {
            prop_assert!(hw >= before.high_watermark, "leader HW went back: {} -> {hw}", before.high_watermark);
        }
        if p.is_leader() && hw > before.high_watermark {
            for id in p.maximal_isr() {
                prop_assert!(self.leo_of(id) >= hw, "HW {hw} advanced past maximal-ISR member {id}");
            }
        }
        if let Some(last) = effects.iter().rev().find_map(|e| match e {
            Effect::HighWatermarkChanged { high_watermark } => Some(*high_watermark),
            _ => None,
        }) {
            prop_assert_eq!(last, hw);
        }

        for (request_id, error_code) in completions(effects) {
            let count = self.answered.entry(request_id).or_default();
            *count += 1;
            prop_assert_eq!(*count, 1, "request {} answered twice", request_id);
            let required = *self.required.get(&request_id).expect("issued");
            if error_code == NONE {
                for &id in p.isr() {
                    prop_assert!(
                        self.leo_of(id) >= required,
                        "request {request_id} for {required} acknowledged before ISR member {id} had it"
                    );
                }
            }
        }
        if before.was_leader && !p.is_leader() {
            prop_assert!(p.waiting_requests().is_empty());
            for request_id in &before.waiting {
                prop_assert!(
                    completions(effects).contains(&(*request_id, NOT_LEADER_OR_FOLLOWER)),
                    "request {request_id} not failed when leadership was lost"
                );
            }
        }

        for proposal in proposals(effects) {
            if self.proposals.iter().any(|seen| seen.proposal_id == proposal.proposal_id) {
                prop_assert_eq!(Some(&proposal), p.pending_proposal(), "only the pending proposal is retried");
                continue;
            }
            prop_assert!(before.pending.is_none(), "a new proposal while one is in flight");
            let isr = proposal.isr();
            prop_assert!(isr.contains(&LOCAL));
            prop_assert_eq!(proposal.leader_epoch, p.leader_epoch());
            let added: Vec<BrokerId> = isr.difference(p.isr()).copied().collect();
            prop_assert!(added.len() <= 1);
            for id in added {
                prop_assert!(self.eligible(id), "proposed adding ineligible broker {id}");
            }
            self.proposals.push(proposal);
        }
        Ok(())
    }
}

struct Before {
    was_leader: bool,
    high_watermark: i64,
    waiting: Vec<RequestId>,
    pending: Option<AlterPartitionProposal>,
}

impl Before {
    fn of(p: &Partition) -> Self {
        Before {
            was_leader: p.is_leader(),
            high_watermark: p.high_watermark(),
            waiting: p.waiting_requests(),
            pending: p.pending_proposal().cloned(),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn replication_invariants_hold(ops in prop::collection::vec(op(), 1..80)) {
        let mut world = World::new();
        // Start as leader of replicas 1, 2, 3 with the full ISR, as a fresh topic would.
        let effects = world.p.apply_leader_and_isr(&state(LOCAL, 0, 0, &[1, 2, 3], &[1, 2, 3]), world.now);
        prop_assert_eq!(effects, vec![Effect::StopFetching]);
        for op in &ops {
            let before = Before::of(&world.p);
            let effects = world.step(op);
            world.check(&before, &effects)?;
        }
        // Every request is answered by the end: the deadline passes, or leadership goes.
        let before = Before::of(&world.p);
        world.now += 20_000;
        let effects = world.p.tick(world.now);
        world.check(&before, &effects)?;
        prop_assert!(world.p.waiting_requests().is_empty());
        for request_id in world.required.keys() {
            prop_assert_eq!(world.answered.get(request_id), Some(&1), "request {} unanswered", request_id);
        }
    }
}
