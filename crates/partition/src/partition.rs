//! The replica state machine. Kafka's names are kept where the rule is Kafka's, so each rule can
//! be checked against `Partition.scala`.

use std::collections::{BTreeMap, BTreeSet};

use crate::api::*;
use crate::epochs::{EpochEndOffset, LeaderEpochCache};
use crate::errors;
use crate::follower::FollowerState;
use crate::Effect;

/// One replica of one partition, on the local broker.
#[derive(Debug, Clone)]
pub struct Partition {
    config: PartitionConfig,
    local_broker_id: BrokerId,
    local_broker_epoch: i64,
    leader_id: Option<BrokerId>,
    /// -1 until the first leader or follower command (Kafka's `INITIAL_LEADER_EPOCH - 1`).
    leader_epoch: i32,
    partition_epoch: i32,
    replicas: Vec<BrokerId>,
    /// The committed ISR. Empty on a follower, as in Kafka: only the leader tracks it.
    isr: BTreeSet<BrokerId>,
    high_watermark: i64,
    log_end_offset: i64,
    log_start_offset: i64,
    epochs: LeaderEpochCache,
    brokers: BTreeMap<BrokerId, BrokerRegistration>,
    /// Everything that only a leader has; dropped whole when leadership is lost.
    leader: Option<LeaderState>,
    next_proposal_id: ProposalId,
}

#[derive(Debug, Clone, Default)]
struct LeaderState {
    /// The local log end offset when this leader epoch began: a follower must reach it to
    /// join the ISR, or committed data between the high watermark and this offset could be lost
    /// if it became leader. `None` when this broker became leader without a new epoch.
    epoch_start_offset: Option<i64>,
    followers: BTreeMap<BrokerId, FollowerState>,
    pending: Option<PendingIsrChange>,
    /// acks=all produces in registration order.
    waiting: Vec<WaitingProduce>,
}

#[derive(Debug, Clone)]
struct PendingIsrChange {
    proposal: AlterPartitionProposal,
    /// The replica an expansion adds. It already counts for the high watermark (a larger ISR
    /// only makes advancing stricter); the replicas a shrink removes still count until the
    /// controller accepts, since a rejected shrink must not have advanced the high watermark.
    adding: Option<BrokerId>,
}

#[derive(Debug, Clone, Copy)]
struct WaitingProduce {
    request_id: RequestId,
    required_offset: i64,
    deadline_ms: i64,
}

impl Partition {
    /// A replica that is neither leader nor following anyone until the first
    /// [`Partition::apply_leader_and_isr`].
    pub fn new(local_broker_id: BrokerId, local_broker_epoch: i64, config: PartitionConfig, log: LocalLog) -> Self {
        let log_end_offset = log.log_end_offset.max(0);
        let log_start_offset = log.log_start_offset.clamp(0, log_end_offset);
        Partition {
            config,
            local_broker_id,
            local_broker_epoch,
            leader_id: None,
            leader_epoch: -1,
            partition_epoch: 0,
            replicas: Vec::new(),
            isr: BTreeSet::new(),
            high_watermark: log.high_watermark.clamp(log_start_offset, log_end_offset),
            log_end_offset,
            log_start_offset,
            epochs: log.epochs,
            brokers: BTreeMap::new(),
            leader: None,
            next_proposal_id: 1,
        }
    }

    // ---- state ----

    pub fn local_broker_id(&self) -> BrokerId {
        self.local_broker_id
    }

    pub fn config(&self) -> &PartitionConfig {
        &self.config
    }

    pub fn role(&self) -> Role {
        if self.leader.is_some() {
            Role::Leader
        } else {
            Role::Follower
        }
    }

    pub fn is_leader(&self) -> bool {
        self.leader.is_some()
    }

    pub fn leader_id(&self) -> Option<BrokerId> {
        self.leader_id
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    pub fn partition_epoch(&self) -> i32 {
        self.partition_epoch
    }

    pub fn replicas(&self) -> &[BrokerId] {
        &self.replicas
    }

    /// The committed ISR (what `min.insync.replicas` is checked against).
    pub fn isr(&self) -> &BTreeSet<BrokerId> {
        &self.isr
    }

    /// The committed ISR plus a replica whose addition is in flight (what the high watermark
    /// and acks=all wait for).
    pub fn maximal_isr(&self) -> BTreeSet<BrokerId> {
        let mut isr = self.isr.clone();
        if let Some(id) = self.leader.as_ref().and_then(|l| l.pending.as_ref()).and_then(|p| p.adding) {
            isr.insert(id);
        }
        isr
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    pub fn epochs(&self) -> &LeaderEpochCache {
        &self.epochs
    }

    /// On a leader: what it knows of follower `id`.
    pub fn follower(&self, id: BrokerId) -> Option<&FollowerState> {
        self.leader.as_ref()?.followers.get(&id)
    }

    /// On a leader: the offset where its current leader epoch began.
    pub fn leader_epoch_start_offset(&self) -> Option<i64> {
        self.leader.as_ref()?.epoch_start_offset
    }

    /// The AlterPartition proposal in flight, if any.
    pub fn pending_proposal(&self) -> Option<&AlterPartitionProposal> {
        self.leader.as_ref()?.pending.as_ref().map(|p| &p.proposal)
    }

    /// The acks=all produces waiting, in registration order.
    pub fn waiting_requests(&self) -> Vec<RequestId> {
        self.leader.as_ref().map_or_else(Vec::new, |l| l.waiting.iter().map(|w| w.request_id).collect())
    }

    /// `min.insync.replicas`, capped by the replication factor (Kafka's `effectiveMinIsr`).
    pub fn effective_min_isr(&self) -> usize {
        let remote = self.replicas.iter().filter(|&&id| id != self.local_broker_id).count();
        (self.config.min_insync_replicas.max(0) as usize).min(remote + 1)
    }

    /// A leader whose committed ISR is smaller than the effective `min.insync.replicas`.
    pub fn is_under_min_isr(&self) -> bool {
        self.is_leader() && self.isr.len() < self.effective_min_isr()
    }

    /// Kafka's `isReplicaIsrEligible` (KRaft): registered, not fenced, not in controlled
    /// shutdown, and its last fetch carried its current broker epoch (or none, -1). False for a
    /// broker that has not fetched from this leader.
    pub fn is_isr_eligible(&self, id: BrokerId) -> bool {
        self.follower(id).is_some_and(|f| self.eligible(id, f))
    }

    fn eligible(&self, id: BrokerId, follower: &FollowerState) -> bool {
        let Some(registration) = self.brokers.get(&id) else { return false };
        let Some(fetch_epoch) = follower.broker_epoch else { return false };
        !registration.fenced
            && !registration.in_controlled_shutdown
            && (fetch_epoch == -1 || fetch_epoch == registration.broker_epoch)
    }

    /// Kafka's `getAliveBrokerEpoch`: the epoch of a registered, unfenced broker.
    fn alive_broker_epoch(&self, id: BrokerId) -> Option<i64> {
        self.brokers.get(&id).filter(|b| !b.fenced).map(|b| b.broker_epoch)
    }

    // ---- controller and metadata ----

    /// The controller's current state of the partition: this broker leads it if
    /// `state.leader` is the local id, and follows otherwise. Ignored when its partition epoch
    /// is older than the one already applied (equal is applied: an AlterPartition answer may
    /// have brought that epoch first).
    pub fn apply_leader_and_isr(&mut self, state: &LeaderAndIsr, now_ms: i64) -> Vec<Effect> {
        if state.partition_epoch < self.partition_epoch {
            return Vec::new();
        }
        if state.leader == self.local_broker_id {
            self.make_leader(state, now_ms)
        } else {
            self.make_follower(state)
        }
    }

    /// Kafka's `makeLeader`.
    fn make_leader(&mut self, state: &LeaderAndIsr, now_ms: i64) -> Vec<Effect> {
        let mut effects = Vec::new();
        let is_new_leader = self.leader.is_none();
        let is_new_leader_epoch = state.leader_epoch > self.leader_epoch;
        let local = self.local_broker_id;
        let log_end_offset = self.log_end_offset;

        let leader = self.leader.get_or_insert_with(LeaderState::default);
        leader.followers.retain(|id, _| *id != local && state.replicas.contains(id));
        for &id in state.replicas.iter().filter(|&&id| id != local) {
            leader.followers.entry(id).or_insert(FollowerState::EMPTY);
        }
        // The controller's state replaces any proposal in flight; its answer will be ignored.
        leader.pending = None;
        if is_new_leader_epoch {
            // A follower may hold entries from an epoch later than any in this log; caching this
            // epoch now lets it find where to truncate.
            self.epochs.assign(state.leader_epoch, log_end_offset);
            for (id, follower) in &mut leader.followers {
                follower.reset(now_ms, log_end_offset, is_new_leader, state.isr.contains(id));
            }
            leader.epoch_start_offset = Some(log_end_offset);
            self.leader_epoch = state.leader_epoch;
        }
        self.replicas = state.replicas.clone();
        self.isr = state.isr.clone();
        self.partition_epoch = state.partition_epoch;
        self.leader_id = Some(local);
        if is_new_leader {
            effects.push(Effect::StopFetching);
        }
        // The ISR may now be down to the leader alone.
        self.maybe_increment_leader_hw(now_ms, &mut effects);
        effects
    }

    /// Kafka's `makeFollower`, plus the failing of waiting produces that ReplicaManager does
    /// when a partition stops being led here.
    fn make_follower(&mut self, state: &LeaderAndIsr) -> Vec<Effect> {
        let mut effects = Vec::new();
        let is_new_leader_epoch = state.leader_epoch > self.leader_epoch;
        self.leader_id = (state.leader != NO_LEADER).then_some(state.leader);
        self.leader_epoch = state.leader_epoch;
        self.partition_epoch = state.partition_epoch;
        self.replicas = state.replicas.clone();
        self.isr.clear();
        if let Some(old) = self.leader.take() {
            effects.extend(old.waiting.iter().map(|w| Effect::CompleteProduce {
                request_id: w.request_id,
                error_code: errors::NOT_LEADER_OR_FOLLOWER,
            }));
        }
        if let (true, Some(leader_id)) = (is_new_leader_epoch, self.leader_id) {
            effects.push(Effect::FetchFrom { leader_id, leader_epoch: self.leader_epoch });
        }
        effects
    }

    /// The brokers of the metadata image. Only brokers listed here can join the ISR.
    pub fn update_brokers(&mut self, brokers: BTreeMap<BrokerId, BrokerRegistration>) {
        self.brokers = brokers;
    }

    /// A config change (e.g. `min.insync.replicas` altered).
    pub fn update_config(&mut self, config: PartitionConfig, now_ms: i64) -> Vec<Effect> {
        self.config = config;
        let mut effects = Vec::new();
        self.maybe_increment_leader_hw(now_ms, &mut effects);
        effects
    }

    /// The controller's answer to proposal `proposal_id`: the partition as it recorded it, or
    /// an error code. Kafka's `submitAlterPartition` completion.
    pub fn alter_partition_completed(
        &mut self,
        proposal_id: ProposalId,
        answer: Result<LeaderAndIsr, i16>,
        now_ms: i64,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        let Some(leader) = self.leader.as_mut() else { return effects };
        let Some(pending) = leader.pending.as_ref().filter(|p| p.proposal.proposal_id == proposal_id) else {
            // Leadership or the ISR changed since: this answer is out of date.
            return effects;
        };
        match answer {
            Ok(state) => {
                // A stale answer leaves the proposal pending: only new metadata clears it.
                if state.leader_epoch != self.leader_epoch || state.partition_epoch < self.partition_epoch {
                    return effects;
                }
                leader.pending = None;
                self.isr = state.isr;
                self.partition_epoch = state.partition_epoch;
                self.maybe_increment_leader_hw(now_ms, &mut effects);
            }
            // The controller says the partition epoch is right and nothing was applied: safe to
            // return to the committed ISR (and propose again later).
            Err(errors::OPERATION_NOT_ATTEMPTED | errors::INELIGIBLE_REPLICA) => leader.pending = None,
            // Our view is out of date: stay pending until new metadata arrives.
            Err(
                errors::UNKNOWN_TOPIC_OR_PARTITION
                | errors::UNKNOWN_TOPIC_ID
                | errors::FENCED_LEADER_EPOCH
                | errors::INVALID_UPDATE_VERSION
                | errors::INVALID_REQUEST
                | errors::NEW_LEADER_ELECTED,
            ) => {}
            Err(_) => effects.push(Effect::AlterPartition(pending.proposal.clone())),
        }
        effects
    }

    // ---- request validation ----

    /// Kafka's `getLocalLog` check for a request carrying `current_leader_epoch` (Fetch v9+,
    /// ListOffsets v4+, OffsetForLeaderEpoch v2+): an older epoch is FENCED_LEADER_EPOCH (the
    /// client is behind), a newer one UNKNOWN_LEADER_EPOCH (this broker is behind), then
    /// NOT_LEADER_OR_FOLLOWER if the request needs the leader and this broker is not.
    pub fn check_leader_epoch(&self, current_leader_epoch: Option<i32>, require_leader: bool) -> Result<(), i16> {
        match current_leader_epoch {
            Some(epoch) if epoch < self.leader_epoch => return Err(errors::FENCED_LEADER_EPOCH),
            Some(epoch) if epoch > self.leader_epoch => return Err(errors::UNKNOWN_LEADER_EPOCH),
            _ => {}
        }
        if require_leader && !self.is_leader() {
            return Err(errors::NOT_LEADER_OR_FOLLOWER);
        }
        Ok(())
    }

    /// Kafka's `LeaderEpochFileCache.endOffsetFor` on this log.
    pub fn end_offset_for_epoch(&self, leader_epoch: i32) -> EpochEndOffset {
        self.epochs.end_offset_for(leader_epoch, self.log_end_offset)
    }

    /// OffsetForLeaderEpoch for this partition (Kafka's `lastOffsetForLeaderEpoch`). An epoch
    /// the cache cannot place answers [`EpochEndOffset::UNDEFINED`] with no error.
    pub fn last_offset_for_leader_epoch(
        &self,
        current_leader_epoch: Option<i32>,
        leader_epoch: i32,
        fetch_only_from_leader: bool,
    ) -> Result<EpochEndOffset, i16> {
        self.check_leader_epoch(current_leader_epoch, fetch_only_from_leader)?;
        Ok(self.end_offset_for_epoch(leader_epoch))
    }

    // ---- produce ----

    /// Before appending a produce: NOT_LEADER_OR_FOLLOWER on a non-leader, and for acks=all
    /// (-1) NOT_ENOUGH_REPLICAS while the committed ISR is smaller than the effective
    /// `min.insync.replicas` (Kafka's `appendRecordsToLeader`, which rejects before writing).
    pub fn check_append(&self, required_acks: i16) -> Result<(), i16> {
        if !self.is_leader() {
            return Err(errors::NOT_LEADER_OR_FOLLOWER);
        }
        if required_acks == -1 && self.isr.len() < self.effective_min_isr() {
            return Err(errors::NOT_ENOUGH_REPLICAS);
        }
        Ok(())
    }

    /// The leader's log grew to `log_end_offset` (a produce was appended). With the ISR down to
    /// the leader this alone can advance the high watermark.
    pub fn leader_appended(&mut self, log_end_offset: i64, now_ms: i64) -> Vec<Effect> {
        let mut effects = Vec::new();
        // A leader's log only grows; anything else is a stale report.
        if !self.is_leader() || log_end_offset < self.log_end_offset {
            return effects;
        }
        self.log_end_offset = log_end_offset;
        self.maybe_increment_leader_hw(now_ms, &mut effects);
        effects
    }

    /// Registers an acks=all produce whose last record is at `required_offset - 1` (Kafka's
    /// `requiredOffset`: the log end offset after the append). It is answered when the high
    /// watermark reaches `required_offset`, at `deadline_ms` with REQUEST_TIMED_OUT, or with
    /// NOT_LEADER_OR_FOLLOWER when leadership is lost; possibly at once.
    pub fn await_replication(&mut self, request_id: RequestId, required_offset: i64, deadline_ms: i64) -> Vec<Effect> {
        if !self.is_leader() {
            return vec![Effect::CompleteProduce { request_id, error_code: errors::NOT_LEADER_OR_FOLLOWER }];
        }
        if let Some(error_code) = self.replication_outcome(required_offset) {
            return vec![Effect::CompleteProduce { request_id, error_code }];
        }
        if let Some(leader) = self.leader.as_mut() {
            leader.waiting.push(WaitingProduce { request_id, required_offset, deadline_ms });
        }
        Vec::new()
    }

    /// Kafka's `checkEnoughReplicasReachOffset` on a leader: `None` while waiting.
    fn replication_outcome(&self, required_offset: i64) -> Option<i16> {
        if self.high_watermark < required_offset {
            return None;
        }
        // Written, but the ISR shrank below min.insync.replicas while it waited.
        Some(if self.effective_min_isr() <= self.maximal_isr().len() {
            errors::NONE
        } else {
            errors::NOT_ENOUGH_REPLICAS_AFTER_APPEND
        })
    }

    fn complete_satisfied(&mut self, effects: &mut Vec<Effect>) {
        let Some(mut waiting) = self.leader.as_mut().map(|l| std::mem::take(&mut l.waiting)) else { return };
        waiting.retain(|w| match self.replication_outcome(w.required_offset) {
            Some(error_code) => {
                effects.push(Effect::CompleteProduce { request_id: w.request_id, error_code });
                false
            }
            None => true,
        });
        if let Some(leader) = self.leader.as_mut() {
            leader.waiting = waiting;
        }
    }

    // ---- timers ----

    /// Periodic work on a leader: time out waiting produces, and propose removing followers
    /// that have not caught up within `replica.lag.time.max.ms`. The high watermark is also
    /// re-evaluated first, because whether a follower outside the ISR holds it back depends on
    /// the time.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Effect> {
        let mut effects = Vec::new();
        if !self.is_leader() {
            return effects;
        }
        self.maybe_increment_leader_hw(now_ms, &mut effects);
        if let Some(leader) = self.leader.as_mut() {
            leader.waiting.retain(|w| {
                let expired = w.deadline_ms <= now_ms;
                if expired {
                    effects.push(Effect::CompleteProduce {
                        request_id: w.request_id,
                        error_code: errors::REQUEST_TIMED_OUT,
                    });
                }
                !expired
            });
        }
        self.maybe_shrink_isr(now_ms, &mut effects);
        effects
    }

    // ---- leader: follower fetches, ISR, high watermark ----

    /// A follower's Fetch for this partition, on the leader (Kafka's `fetchRecords` for a
    /// follower, minus the read itself). On success the driver reads from `fetch_offset`, unless
    /// the answer carries a diverging epoch. Errors: the leader-epoch checks of
    /// [`Partition::check_leader_epoch`]; UNKNOWN_LEADER_EPOCH (NOT_LEADER_OR_FOLLOWER without a
    /// current leader epoch) from a broker not among the replicas; OFFSET_OUT_OF_RANGE;
    /// NOT_LEADER_OR_FOLLOWER for a broker epoch older than the registered one.
    pub fn follower_fetch(
        &mut self,
        fetch: &FollowerFetch,
        now_ms: i64,
    ) -> (Result<FollowerFetchAnswer, i16>, Vec<Effect>) {
        let mut effects = Vec::new();
        let answer = self.record_follower_fetch(fetch, now_ms, &mut effects);
        (answer, effects)
    }

    fn record_follower_fetch(
        &mut self,
        fetch: &FollowerFetch,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) -> Result<FollowerFetchAnswer, i16> {
        self.check_leader_epoch(fetch.current_leader_epoch, true)?;
        let id = fetch.replica_id;
        let Some(&before) = self.follower(id) else {
            // With a matching epoch, the replica set is what is not known yet (e.g. a
            // reassignment adding it): the follower retries.
            return Err(if fetch.current_leader_epoch.is_some() {
                errors::UNKNOWN_LEADER_EPOCH
            } else {
                errors::NOT_LEADER_OR_FOLLOWER
            });
        };
        let mut answer = FollowerFetchAnswer {
            high_watermark: self.high_watermark,
            log_start_offset: self.log_start_offset,
            log_end_offset: self.log_end_offset,
            diverging_epoch: None,
        };
        if let Some(last_fetched_epoch) = fetch.last_fetched_epoch {
            let epoch_end = self.last_offset_for_leader_epoch(fetch.current_leader_epoch, last_fetched_epoch, false)?;
            if epoch_end.is_undefined() || fetch.fetch_offset < self.log_start_offset {
                return Err(errors::OFFSET_OUT_OF_RANGE);
            }
            if epoch_end.leader_epoch < last_fetched_epoch || epoch_end.end_offset < fetch.fetch_offset {
                // The follower must truncate first; its position is not recorded.
                answer.diverging_epoch = Some(epoch_end);
                return Ok(answer);
            }
        }
        if fetch.fetch_offset < self.log_start_offset || fetch.fetch_offset > self.log_end_offset {
            return Err(errors::OFFSET_OUT_OF_RANGE);
        }
        // A fetch from an earlier incarnation of the broker (KIP-903).
        if fetch.broker_epoch != -1 && self.alive_broker_epoch(id).is_some_and(|epoch| epoch > fetch.broker_epoch) {
            return Err(errors::NOT_LEADER_OR_FOLLOWER);
        }
        let log_end_offset = self.log_end_offset;
        if let Some(follower) = self.leader.as_mut().and_then(|l| l.followers.get_mut(&id)) {
            follower.record_fetch(
                fetch.fetch_offset,
                fetch.log_start_offset,
                now_ms,
                log_end_offset,
                fetch.broker_epoch,
            );
        }
        self.maybe_expand_isr(id, effects);
        if before.log_end_offset != fetch.fetch_offset {
            self.maybe_increment_leader_hw(now_ms, effects);
        }
        Ok(answer)
    }

    /// Kafka's `maybeIncrementLeaderHW`: the new high watermark is the smallest log end offset
    /// among the leader, the maximal ISR, and the followers outside it that are caught up and
    /// eligible (so a follower about to join is not left behind a high watermark set without
    /// it). Frozen while the committed ISR is under `min.insync.replicas`. Never decreases.
    fn maybe_increment_leader_hw(&mut self, now_ms: i64, effects: &mut Vec<Effect>) -> bool {
        let Some(leader) = self.leader.as_ref() else { return false };
        if self.is_under_min_isr() {
            return false;
        }
        let maximal_isr = self.maximal_isr();
        let mut new_high_watermark = self.log_end_offset;
        for (&id, follower) in &leader.followers {
            let holds_back = maximal_isr.contains(&id)
                || (follower.is_caught_up(self.log_end_offset, now_ms, self.config.replica_lag_time_max_ms)
                    && self.eligible(id, follower));
            if holds_back && follower.log_end_offset < new_high_watermark {
                new_high_watermark = follower.log_end_offset;
            }
        }
        if new_high_watermark <= self.high_watermark {
            return false;
        }
        self.high_watermark = new_high_watermark;
        effects.push(Effect::HighWatermarkChanged { high_watermark: new_high_watermark });
        self.complete_satisfied(effects);
        true
    }

    /// Kafka's `maybeExpandIsr`: propose adding an eligible follower that has reached both the
    /// high watermark and the start of this leader epoch. Not while a proposal is in flight.
    fn maybe_expand_isr(&mut self, id: BrokerId, effects: &mut Vec<Effect>) {
        let Some(leader) = self.leader.as_ref() else { return };
        let Some(follower) = leader.followers.get(&id) else { return };
        let in_sync = follower.log_end_offset >= self.high_watermark
            && leader.epoch_start_offset.is_some_and(|start| follower.log_end_offset >= start);
        if leader.pending.is_some() || self.isr.contains(&id) || !self.eligible(id, follower) || !in_sync {
            return;
        }
        let mut new_isr = self.isr.clone();
        new_isr.insert(id);
        self.propose(new_isr, Some(id), effects);
    }

    /// Kafka's `maybeShrinkIsr`: propose removing ISR followers that are not caught up.
    fn maybe_shrink_isr(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        let Some(leader) = self.leader.as_ref() else { return };
        if leader.pending.is_some() {
            return;
        }
        let lag = self.config.replica_lag_time_max_ms;
        let out_of_sync: BTreeSet<BrokerId> = self
            .isr
            .iter()
            .copied()
            .filter(|&id| id != self.local_broker_id)
            .filter(|id| leader.followers.get(id).is_none_or(|f| !f.is_caught_up(self.log_end_offset, now_ms, lag)))
            .collect();
        if !out_of_sync.is_empty() {
            let new_isr = self.isr.difference(&out_of_sync).copied().collect();
            self.propose(new_isr, None, effects);
        }
    }

    fn propose(&mut self, new_isr: BTreeSet<BrokerId>, adding: Option<BrokerId>, effects: &mut Vec<Effect>) {
        let Some(leader) = self.leader.as_mut() else { return };
        let new_isr = new_isr
            .into_iter()
            .map(|broker_id| IsrMember {
                broker_id,
                // A member with no fetch yet is sent as -1: if it restarted meanwhile, the
                // controller has bumped the partition epoch and rejects this proposal anyway.
                broker_epoch: if broker_id == self.local_broker_id {
                    self.local_broker_epoch
                } else {
                    leader.followers.get(&broker_id).and_then(|f| f.broker_epoch).unwrap_or(-1)
                },
            })
            .collect();
        let proposal = AlterPartitionProposal {
            proposal_id: self.next_proposal_id,
            leader_id: self.local_broker_id,
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            new_isr,
        };
        self.next_proposal_id += 1;
        effects.push(Effect::AlterPartition(proposal.clone()));
        leader.pending = Some(PendingIsrChange { proposal, adding });
    }

    // ---- the local log (follower replication, retention) ----

    /// A follower's fetcher appended what the leader sent: record the batches' epochs, adopt
    /// the leader's high watermark capped by the local log end offset (it may go down on a
    /// follower), and follow the leader's log start offset.
    pub fn apply_fetch_response(&mut self, fetched: &FetchedFromLeader) -> Vec<Effect> {
        let mut effects = Vec::new();
        // A late response to a fetcher this broker stopped when it became leader.
        if self.is_leader() {
            return effects;
        }
        for &(epoch, base_offset) in &fetched.batches {
            self.epochs.assign(epoch, base_offset);
        }
        self.log_end_offset = fetched.log_end_offset.max(0);
        self.set_follower_high_watermark(fetched.leader_high_watermark, &mut effects);
        // Kafka refuses a log start offset above the high watermark (OffsetOutOfRange).
        let _ = self.log_start_advanced(fetched.leader_log_start_offset);
        effects
    }

    /// Kafka's `UnifiedLog.updateHighWatermark`: clamped into [log start, log end].
    fn set_follower_high_watermark(&mut self, high_watermark: i64, effects: &mut Vec<Effect>) {
        let high_watermark = high_watermark.clamp(self.log_start_offset, self.log_end_offset);
        if high_watermark != self.high_watermark {
            self.high_watermark = high_watermark;
            effects.push(Effect::HighWatermarkChanged { high_watermark });
        }
    }

    /// A follower truncated its log to `offset` (a diverging epoch or an OffsetForLeaderEpoch
    /// answer). Kafka's `UnifiedLog.truncateTo`: the epoch cache is truncated even when the log
    /// is not, since this broker may have cached an epoch it led without writing to it.
    pub fn truncate_to(&mut self, offset: i64) -> Vec<Effect> {
        let mut effects = Vec::new();
        // A leader's log is the reference; it never truncates.
        if self.is_leader() || offset < 0 {
            return effects;
        }
        if offset >= self.log_end_offset {
            self.epochs.truncate_from_end(self.log_end_offset);
            return effects;
        }
        self.log_end_offset = offset;
        self.epochs.truncate_from_end(offset);
        self.log_start_offset = self.log_start_offset.min(offset);
        if self.high_watermark >= offset {
            self.set_follower_high_watermark(offset, &mut effects);
        }
        effects
    }

    /// A follower replaced its whole log with an empty one starting at `offset` (its fetch
    /// offset was out of the leader's range).
    pub fn truncate_fully_and_start_at(&mut self, offset: i64) -> Vec<Effect> {
        let mut effects = Vec::new();
        if self.is_leader() || offset < 0 {
            return effects;
        }
        self.epochs.clear();
        self.log_end_offset = offset;
        self.log_start_offset = offset;
        if self.high_watermark != offset {
            self.high_watermark = offset;
            effects.push(Effect::HighWatermarkChanged { high_watermark: offset });
        }
        effects
    }

    /// The log start offset moved forward (retention, DeleteRecords, or the leader's).
    /// OFFSET_OUT_OF_RANGE above the high watermark: uncommitted data is never deleted.
    pub fn log_start_advanced(&mut self, offset: i64) -> Result<(), i16> {
        if offset > self.high_watermark {
            return Err(errors::OFFSET_OUT_OF_RANGE);
        }
        if offset > self.log_start_offset {
            self.log_start_offset = offset;
            self.epochs.truncate_from_start(offset);
        }
        Ok(())
    }
}
