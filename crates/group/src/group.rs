//! Per-group state: membership, protocol votes, committed offsets. Pure data and bookkeeping;
//! the coordinator drives the state machine and owns the timers.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use indexmap::IndexMap;

use crate::api::{JoinGroupMember, JoinProtocol};
use crate::records::Reader;
use crate::ReplyTo;

/// A classic group's state, as Kafka names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name DescribeGroups and ListGroups report.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }

    /// States a rebalance may start from (Kafka's `PreparingRebalance.validPreviousStates`).
    pub(crate) fn can_rebalance(self) -> bool {
        matches!(self, GroupState::Stable | GroupState::CompletingRebalance | GroupState::Empty)
    }
}

pub(crate) struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// In the member's order of preference.
    pub protocols: Vec<JoinProtocol>,
    pub assignment: Bytes,
    pub awaiting_join: Option<ReplyTo>,
    pub awaiting_sync: Option<ReplyTo>,
    /// Joined but not yet part of a generation: its timer is the new-member join timeout.
    pub is_new: bool,
    pub heartbeat_deadline: Option<i64>,
}

impl Member {
    pub fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols.iter().find(|p| p.name == protocol).map(|p| p.metadata.clone()).unwrap_or_default()
    }

    pub fn matches(&self, protocols: &[JoinProtocol]) -> bool {
        self.protocols == protocols
    }

    /// Kafka's `hasSatisfiedHeartbeat` once the heartbeat deadline passed: members parked in
    /// a JoinGroup or SyncGroup are alive, except new members, whose join may time out.
    pub fn survives_heartbeat_expiry(&self) -> bool {
        !self.is_new && (self.awaiting_join.is_some() || self.awaiting_sync.is_some())
    }
}

/// A committed offset as the group holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
    pub expire_timestamp: Option<i64>,
    /// Order of the append that wrote it; a late completion of an older append must not win.
    pub seq: u64,
}

/// Commits of one partition whose append has not completed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PendingCommit {
    pub count: u32,
    /// Appends older than this were issued before the offset was deleted and must not apply.
    pub since_seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JoinTimer {
    /// Complete the join when everyone rejoined, or at the deadline.
    Regular,
    /// Kafka's `InitialDelayedJoin`: an Empty group waits for more members.
    Initial { delay_ms: i64, remaining_ms: i64 },
}

pub(crate) struct Group {
    pub id: String,
    pub partition: i32,
    pub state: GroupState,
    /// When the group entered its state (`currentStateTimestamp`); `None` if loaded from an
    /// old record without it.
    pub state_timestamp: Option<i64>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub generation: i32,
    pub leader: Option<String>,
    pub members: IndexMap<String, Member>,
    /// group.instance.id -> member id
    pub static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED -> expiry deadline.
    pub pending_members: HashMap<String, i64>,
    /// Members of the new generation that have not sent SyncGroup yet.
    pub pending_sync: HashSet<String>,
    num_awaiting_join: usize,
    /// protocol name -> number of members supporting it
    supported_protocols: HashMap<String, usize>,
    /// For consumer groups: the topics members subscribe to; `None` when unknown.
    pub subscribed_topics: Option<HashSet<String>>,
    pub new_member_added: bool,
    pub join_timer: Option<(i64, JoinTimer)>,
    /// (deadline, generation) of the wait for all members' SyncGroup.
    pub sync_timer: Option<(i64, i32)>,
    pub offsets: HashMap<String, HashMap<i32, CommittedOffset>>,
    pub pending_commits: HashMap<String, HashMap<i32, PendingCommit>>,
}

impl Group {
    pub fn new(id: String, partition: i32, now_ms: i64) -> Self {
        Group {
            id,
            partition,
            state: GroupState::Empty,
            state_timestamp: Some(now_ms),
            protocol_type: None,
            protocol_name: None,
            generation: 0,
            leader: None,
            members: IndexMap::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            pending_sync: HashSet::new(),
            num_awaiting_join: 0,
            supported_protocols: HashMap::new(),
            subscribed_topics: None,
            new_member_added: false,
            join_timer: None,
            sync_timer: None,
            offsets: HashMap::new(),
            pending_commits: HashMap::new(),
        }
    }

    pub fn is(&self, state: GroupState) -> bool {
        self.state == state
    }

    pub fn transition(&mut self, state: GroupState, now_ms: i64) {
        self.state = state;
        self.state_timestamp = Some(now_ms);
    }

    pub fn is_leader(&self, member_id: &str) -> bool {
        self.leader.as_deref() == Some(member_id)
    }

    pub fn is_consumer_group(&self) -> bool {
        self.protocol_type.as_deref() == Some("consumer")
    }

    pub fn num_awaiting_join(&self) -> usize {
        self.num_awaiting_join
    }

    pub fn rebalance_timeout_ms(&self) -> i64 {
        self.members.values().map(|m| m.rebalance_timeout_ms.max(0) as i64).max().unwrap_or(0)
    }

    pub fn has_all_members_joined(&self) -> bool {
        self.members.len() == self.num_awaiting_join && self.pending_members.is_empty()
    }

    pub fn has_offsets(&self) -> bool {
        !self.offsets.is_empty() || !self.pending_commits.is_empty()
    }

    pub fn add(&mut self, mut member: Member, protocol_type: &str, reply_to: Option<ReplyTo>) {
        if let Some(instance_id) = &member.instance_id {
            self.static_members.insert(instance_id.clone(), member.id.clone());
        }
        if self.members.is_empty() {
            self.protocol_type = Some(protocol_type.to_owned());
        }
        if self.leader.is_none() {
            self.leader = Some(member.id.clone());
        }
        for p in &member.protocols {
            *self.supported_protocols.entry(p.name.clone()).or_default() += 1;
        }
        member.awaiting_join = reply_to;
        if reply_to.is_some() {
            self.num_awaiting_join += 1;
        }
        self.pending_members.remove(&member.id);
        self.members.insert(member.id.clone(), member);
    }

    /// Removes a member and returns it so the caller can cancel its timer and answer any
    /// request it left parked.
    pub fn remove(&mut self, member_id: &str) -> Option<Member> {
        let member = self.members.shift_remove(member_id);
        if let Some(m) = &member {
            self.dec_protocols(&m.protocols);
            if m.awaiting_join.is_some() {
                self.num_awaiting_join = self.num_awaiting_join.saturating_sub(1);
            }
            if let Some(instance_id) = &m.instance_id {
                self.static_members.remove(instance_id);
            }
        }
        if self.is_leader(member_id) {
            self.leader = self.members.keys().next().cloned();
        }
        self.pending_members.remove(member_id);
        self.pending_sync.remove(member_id);
        member
    }

    fn dec_protocols(&mut self, protocols: &[JoinProtocol]) {
        for p in protocols {
            if let Some(n) = self.supported_protocols.get_mut(&p.name) {
                *n -= 1;
                if *n == 0 {
                    self.supported_protocols.remove(&p.name);
                }
            }
        }
    }

    /// Replaces a member's protocols and timeouts and sets (or clears) its parked JoinGroup.
    /// Returns a JoinGroup that was parked before and is now superseded.
    pub fn update_member(
        &mut self,
        member_id: &str,
        protocols: Vec<JoinProtocol>,
        rebalance_timeout_ms: i32,
        session_timeout_ms: i32,
        reply_to: Option<ReplyTo>,
    ) -> Option<ReplyTo> {
        let member = self.members.get_mut(member_id)?;
        let old = std::mem::replace(&mut member.protocols, protocols);
        member.rebalance_timeout_ms = rebalance_timeout_ms;
        member.session_timeout_ms = session_timeout_ms;
        let previous = std::mem::replace(&mut member.awaiting_join, reply_to);
        let new_protocols: Vec<String> = member.protocols.iter().map(|p| p.name.clone()).collect();
        match (previous.is_some(), reply_to.is_some()) {
            (false, true) => self.num_awaiting_join += 1,
            (true, false) => self.num_awaiting_join = self.num_awaiting_join.saturating_sub(1),
            _ => {}
        }
        self.dec_protocols(&old);
        for name in new_protocols {
            *self.supported_protocols.entry(name).or_default() += 1;
        }
        previous
    }

    /// Takes a member's parked JoinGroup (Kafka's `maybeInvokeJoinCallback`).
    pub fn take_awaiting_join(&mut self, member_id: &str) -> Option<ReplyTo> {
        let member = self.members.get_mut(member_id)?;
        let reply_to = member.awaiting_join.take();
        if reply_to.is_some() {
            self.num_awaiting_join = self.num_awaiting_join.saturating_sub(1);
        }
        reply_to
    }

    /// Static membership: the member keeps its place and data under a new member id.
    /// Returns the old id's parked JoinGroup and SyncGroup, which the caller fences.
    pub fn replace_static_member(
        &mut self,
        instance_id: &str,
        old_id: &str,
        new_id: &str,
    ) -> (Option<ReplyTo>, Option<ReplyTo>) {
        let Some((index, _, mut member)) = self.members.shift_remove_full(old_id) else { return (None, None) };
        let join = member.awaiting_join.take();
        if join.is_some() {
            self.num_awaiting_join = self.num_awaiting_join.saturating_sub(1);
        }
        let sync = member.awaiting_sync.take();
        member.id = new_id.to_owned();
        self.members.insert(new_id.to_owned(), member);
        let last = self.members.len() - 1;
        self.members.move_index(last, index);
        if self.is_leader(old_id) {
            self.leader = Some(new_id.to_owned());
        }
        if self.pending_sync.remove(old_id) {
            self.pending_sync.insert(new_id.to_owned());
        }
        self.static_members.insert(instance_id.to_owned(), new_id.to_owned());
        (join, sync)
    }

    /// Kafka's `supportsProtocols`.
    pub fn supports_protocols(&self, protocol_type: &str, protocols: &[JoinProtocol]) -> bool {
        if self.is(GroupState::Empty) {
            !protocol_type.is_empty() && !protocols.is_empty()
        } else {
            self.protocol_type.as_deref() == Some(protocol_type)
                && protocols.iter().any(|p| self.supported_protocols.get(&p.name) == Some(&self.members.len()))
        }
    }

    /// Each member votes for its most preferred protocol that every member supports; the most
    /// votes win, ties going to the protocol voted first in member order.
    pub fn select_protocol(&self) -> Option<String> {
        let n = self.members.len();
        let mut votes: IndexMap<&str, usize> = IndexMap::new();
        for member in self.members.values() {
            let vote = member.protocols.iter().find(|p| self.supported_protocols.get(&p.name) == Some(&n))?;
            *votes.entry(vote.name.as_str()).or_default() += 1;
        }
        let mut best: Option<(&str, usize)> = None;
        for (name, count) in votes {
            let better = match best {
                None => true,
                Some((_, c)) => count > c,
            };
            if better {
                best = Some((name, count));
            }
        }
        best.map(|(name, _)| name.to_owned())
    }

    /// Kafka's `maybeElectNewJoinedLeader`: keep a leader that rejoined, else pick any member
    /// that did. False when nobody rejoined.
    pub fn maybe_elect_new_joined_leader(&mut self) -> bool {
        let Some(leader) = self.leader.as_deref() else { return false };
        if self.members.get(leader).is_some_and(|m| m.awaiting_join.is_some()) {
            return true;
        }
        match self.members.values().find(|m| m.awaiting_join.is_some()) {
            Some(m) => {
                self.leader = Some(m.id.clone());
                true
            }
            None => false,
        }
    }

    pub fn init_next_generation(&mut self, now_ms: i64) {
        self.generation += 1;
        if self.members.is_empty() {
            self.protocol_name = None;
            self.subscribed_topics = self.compute_subscribed_topics();
            self.transition(GroupState::Empty, now_ms);
        } else {
            self.protocol_name = self.select_protocol();
            self.subscribed_topics = self.compute_subscribed_topics();
            self.transition(GroupState::CompletingRebalance, now_ms);
        }
        self.pending_sync.clear();
    }

    /// The member list the leader receives.
    pub fn current_member_metadata(&self) -> Vec<JoinGroupMember> {
        let protocol = self.protocol_name.as_deref().unwrap_or("");
        self.members
            .values()
            .map(|m| JoinGroupMember {
                member_id: m.id.clone(),
                group_instance_id: m.instance_id.clone(),
                metadata: m.metadata(protocol),
            })
            .collect()
    }

    /// Kafka's `computeSubscribedTopics`: the union of the members' consumer-protocol
    /// subscriptions; `None` if not a consumer group or a subscription does not parse.
    pub fn compute_subscribed_topics(&self) -> Option<HashSet<String>> {
        if !self.is_consumer_group() {
            return None;
        }
        if self.members.is_empty() {
            return Some(HashSet::new());
        }
        let protocol = self.protocol_name.as_deref()?;
        let mut topics = HashSet::new();
        for m in self.members.values() {
            let metadata = m.protocols.iter().find(|p| p.name == protocol)?.metadata.clone();
            parse_subscription_topics(&metadata, &mut topics)?;
        }
        Some(topics)
    }

    /// When the topics are unknown the group counts as subscribed, to be safe.
    pub fn is_subscribed_to_topic(&self, topic: &str) -> bool {
        match &self.subscribed_topics {
            Some(topics) => topics.contains(topic),
            None => true,
        }
    }

    pub fn offset(&self, topic: &str, partition: i32) -> Option<&CommittedOffset> {
        self.offsets.get(topic)?.get(&partition)
    }

    pub fn has_pending_commit(&self, topic: &str, partition: i32) -> bool {
        self.pending_commits.get(topic).is_some_and(|p| p.contains_key(&partition))
    }

    pub fn prepare_commit(&mut self, topic: &str, partition: i32, seq: u64) {
        let partitions = match self.pending_commits.get_mut(topic) {
            Some(p) => p,
            None => self.pending_commits.entry(topic.to_owned()).or_default(),
        };
        partitions.entry(partition).or_insert(PendingCommit { count: 0, since_seq: seq }).count += 1;
    }

    /// The append of a commit completed; a successful one becomes visible unless the offset
    /// was deleted meanwhile or a later append already landed.
    pub fn complete_commit(&mut self, topic: &str, partition: i32, value: Option<CommittedOffset>, seq: u64) {
        let Some(partitions) = self.pending_commits.get_mut(topic) else { return };
        let Some(pending) = partitions.get_mut(&partition) else { return };
        if seq < pending.since_seq {
            return;
        }
        pending.count = pending.count.saturating_sub(1);
        if pending.count == 0 {
            partitions.remove(&partition);
            if partitions.is_empty() {
                self.pending_commits.remove(topic);
            }
        }
        if let Some(value) = value {
            let offsets = match self.offsets.get_mut(topic) {
                Some(o) => o,
                None => self.offsets.entry(topic.to_owned()).or_default(),
            };
            match offsets.get(&partition) {
                Some(current) if current.seq > seq => {}
                _ => {
                    offsets.insert(partition, value);
                }
            }
        }
    }

    /// Removes committed (and pending) offsets; returns the partitions that had one.
    pub fn remove_offsets(&mut self, partitions: &[(String, i32)]) -> Vec<(String, i32)> {
        let mut removed = Vec::new();
        for (topic, partition) in partitions {
            if let Some(p) = self.pending_commits.get_mut(topic) {
                p.remove(partition);
                if p.is_empty() {
                    self.pending_commits.remove(topic);
                }
            }
            if let Some(o) = self.offsets.get_mut(topic) {
                if o.remove(partition).is_some() {
                    removed.push((topic.clone(), *partition));
                }
                if o.is_empty() {
                    self.offsets.remove(topic);
                }
            }
        }
        removed
    }

    pub fn remove_all_offsets(&mut self) -> Vec<(String, i32)> {
        self.pending_commits.clear();
        let mut removed = Vec::new();
        for (topic, partitions) in self.offsets.drain() {
            for partition in partitions.into_keys() {
                removed.push((topic.clone(), partition));
            }
        }
        removed.sort();
        removed
    }

    /// Kafka's `GroupMetadata.removeExpiredOffsets` (2.1+ semantics).
    pub fn remove_expired_offsets(&mut self, now_ms: i64, retention_ms: i64) -> Vec<(String, i32)> {
        enum Base {
            StateTimestamp(i64),
            CommitTimestamp,
        }
        let (base, skip_subscribed) = match &self.protocol_type {
            // No members: retention counts from when the group became Empty (or from the commit
            // if the record carried no state timestamp).
            Some(_) if self.is(GroupState::Empty) => {
                (self.state_timestamp.map_or(Base::CommitTimestamp, Base::StateTimestamp), false)
            }
            // A stable consumer group keeps the offsets of topics it subscribes to.
            Some(_) if self.is_consumer_group() && self.subscribed_topics.is_some() && self.is(GroupState::Stable) => {
                (Base::CommitTimestamp, true)
            }
            // Standalone consumers that only store offsets.
            None => (Base::CommitTimestamp, false),
            _ => return Vec::new(),
        };
        let mut expired = Vec::new();
        for (topic, partitions) in &self.offsets {
            if skip_subscribed && self.subscribed_topics.as_ref().is_some_and(|t| t.contains(topic)) {
                continue;
            }
            for (partition, o) in partitions {
                if self.has_pending_commit(topic, *partition) {
                    continue;
                }
                let is_expired = match o.expire_timestamp {
                    Some(expire) => now_ms >= expire,
                    None => {
                        let base = match base {
                            Base::StateTimestamp(t) => t,
                            Base::CommitTimestamp => o.commit_timestamp,
                        };
                        now_ms - base >= retention_ms
                    }
                };
                if is_expired {
                    expired.push((topic.clone(), *partition));
                }
            }
        }
        expired.sort();
        self.remove_offsets(&expired);
        expired
    }
}

/// The topics of a consumer-protocol Subscription, read with the v0 layout that prefixes every
/// version (version int16, topics [string], user_data nullable bytes), as Kafka does.
fn parse_subscription_topics(metadata: &Bytes, into: &mut HashSet<String>) -> Option<()> {
    let mut r = Reader::new(metadata, false);
    if r.i16().ok()? < 0 {
        return None;
    }
    let n = r.array_len().ok()?;
    for _ in 0..n {
        into.insert(r.string().ok()?);
    }
    r.skip_nullable_bytes().ok()?;
    Some(())
}
