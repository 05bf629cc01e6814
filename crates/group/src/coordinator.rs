//! The coordinator: configuration, partition ownership, timers, append bookkeeping, and the
//! group-level admin APIs. Membership lives in `membership.rs`, offsets in `offsets.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};

use bytes::Bytes;

use crate::api::*;
use crate::errors::{self, map_store_group_error};
use crate::group::{CommittedOffset, Group, GroupState, JoinTimer, Member};
use crate::records::{self, OffsetsRecordKey, OffsetsRecordValue, RecordError};
use crate::{AppendToken, Command, ReplyTo};

/// A new member's JoinGroup waits at most this long (Kafka's `NewMemberJoinTimeoutMs`).
pub(crate) const NEW_MEMBER_JOIN_TIMEOUT_MS: i64 = 5 * 60 * 1000;

/// Broker settings the coordinator uses, with Kafka's names and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms`
    pub group_min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`
    pub group_max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`
    pub group_initial_rebalance_delay_ms: i32,
    /// `group.max.size`
    pub group_max_size: i32,
    /// `offsets.retention.minutes`
    pub offsets_retention_minutes: i32,
    /// `offsets.retention.check.interval.ms`
    pub offsets_retention_check_interval_ms: i64,
    /// `offsets.topic.num.partitions`
    pub offsets_topic_num_partitions: i32,
    /// `offset.metadata.max.bytes`
    pub offset_metadata_max_bytes: i32,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            group_min_session_timeout_ms: 6000,
            group_max_session_timeout_ms: 1_800_000,
            group_initial_rebalance_delay_ms: 3000,
            group_max_size: i32::MAX,
            offsets_retention_minutes: 10080,
            offsets_retention_check_interval_ms: 600_000,
            offsets_topic_num_partitions: 50,
            offset_metadata_max_bytes: 4096,
        }
    }
}

impl GroupConfig {
    pub fn offsets_retention_ms(&self) -> i64 {
        self.offsets_retention_minutes as i64 * 60_000
    }
}

/// What [`GroupCoordinator::load_partition`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadSummary {
    pub groups: usize,
    pub offsets: usize,
    /// Records of types this crate does not handle (other key versions), skipped.
    pub skipped_unknown: usize,
    /// Records that failed to decode, skipped; the first error is kept.
    pub skipped_corrupt: usize,
    pub first_error: Option<RecordError>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    OffsetExpiry,
    Join(String),
    Sync(String),
    Heartbeat(String, String),
    PendingMember(String, String),
}

/// Deadlines ordered by time; every entry mirrors a deadline stored in the group state, so
/// cancelling is an exact removal.
#[derive(Default)]
pub(crate) struct Timers(BTreeSet<(i64, Timer)>);

impl Timers {
    pub fn insert(&mut self, deadline: i64, timer: Timer) {
        self.0.insert((deadline, timer));
    }

    pub fn remove(&mut self, deadline: i64, timer: Timer) {
        self.0.remove(&(deadline, timer));
    }

    pub fn reschedule_heartbeat(&mut self, group_id: &str, member: &mut Member, timeout_ms: i64, now_ms: i64) {
        let timer = Timer::Heartbeat(group_id.to_owned(), member.id.clone());
        if let Some(old) = member.heartbeat_deadline {
            self.0.remove(&(old, timer.clone()));
        }
        let deadline = now_ms.saturating_add(timeout_ms);
        member.heartbeat_deadline = Some(deadline);
        self.0.insert((deadline, timer));
    }

    pub fn cancel_heartbeat(&mut self, group_id: &str, member: &mut Member) {
        if let Some(old) = member.heartbeat_deadline.take() {
            self.0.remove(&(old, Timer::Heartbeat(group_id.to_owned(), member.id.clone())));
        }
    }
}

/// A `__consumer_offsets` record: key, and value (`None` for a tombstone).
pub(crate) type Record = (Bytes, Option<Bytes>);

/// Records to append per partition, with the groups they belong to (to attribute failures).
pub(crate) type PartitionBatches = BTreeMap<i32, (Vec<Record>, Vec<String>)>;

/// Per topic, per partition, the value a commit writes or the error it was rejected with.
pub(crate) type CommitTopics = Vec<(String, Vec<(i32, Result<CommittedOffset, i16>)>)>;

/// Why an append was issued: decides what its completion does.
pub(crate) enum AppendPurpose {
    Commit(CommitAppend),
    /// The leader's SyncGroup: the generation's assignment, applied on success.
    SyncStore {
        group_id: String,
        generation: i32,
        assignment: HashMap<String, Bytes>,
    },
    /// A known static member rejoined a Stable group under a new member id.
    StaticRejoin(Box<StaticRejoin>),
    /// Records whose outcome changes nothing here (empty-group metadata, expiry tombstones):
    /// if one is lost, the next load or expiry pass redoes the work.
    Fire,
    /// One of the appends a DeleteGroups/OffsetDelete answer waits for.
    Waiter {
        waiter: u64,
        groups: Vec<String>,
    },
}

pub(crate) struct CommitAppend {
    pub reply_to: ReplyTo,
    pub group_id: String,
    pub seq: u64,
    /// Per topic, per partition the value being written, or the error it was rejected with.
    pub topics: CommitTopics,
}

pub(crate) struct StaticRejoin {
    pub group_id: String,
    pub instance_id: String,
    pub old_member_id: String,
    pub new_member_id: String,
    pub reply_to: ReplyTo,
    pub old_protocols: Vec<JoinProtocol>,
    pub old_rebalance_timeout_ms: i32,
    pub old_session_timeout_ms: i32,
    pub previous_leader: Option<String>,
    pub supports_skip_assignment: bool,
}

/// A multi-append answer: sent when `remaining` reaches zero.
pub(crate) struct Waiter {
    pub reply_to: ReplyTo,
    pub remaining: usize,
    pub response: Response,
}

/// The classic group coordinator for the `__consumer_offsets` partitions loaded into it.
pub struct GroupCoordinator {
    pub(crate) config: GroupConfig,
    pub(crate) groups: HashMap<String, Group>,
    loaded: HashSet<i32>,
    loading: HashSet<i32>,
    pub(crate) timers: Timers,
    expiry_deadline: Option<i64>,
    appends: HashMap<AppendToken, AppendPurpose>,
    next_token: AppendToken,
    next_seq: u64,
    waiters: HashMap<u64, Waiter>,
    next_waiter: u64,
    rng: u64,
}

impl GroupCoordinator {
    /// Member ids get a random suffix, seeded per process.
    pub fn new(config: GroupConfig) -> Self {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x7465726e);
        Self::with_seed(config, h.finish())
    }

    /// Deterministic member ids, for tests.
    pub fn with_seed(config: GroupConfig, seed: u64) -> Self {
        GroupCoordinator {
            config,
            groups: HashMap::new(),
            loaded: HashSet::new(),
            loading: HashSet::new(),
            timers: Timers::default(),
            expiry_deadline: None,
            appends: HashMap::new(),
            next_token: 1,
            next_seq: 1,
            waiters: HashMap::new(),
            next_waiter: 1,
            rng: seed,
        }
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// The `__consumer_offsets` partition that owns `group_id`.
    pub fn partition_for(&self, group_id: &str) -> i32 {
        records::partition_for(group_id, self.config.offsets_topic_num_partitions)
    }

    /// The state of a group, if this coordinator has it.
    pub fn group_state(&self, group_id: &str) -> Option<GroupState> {
        self.groups.get(group_id).map(|g| g.state)
    }

    /// When [`tick`](Self::tick) must next be called.
    pub fn next_deadline(&self) -> Option<i64> {
        self.timers.0.first().map(|(d, _)| *d)
    }

    /// Marks a partition as loading: its groups answer COORDINATOR_LOAD_IN_PROGRESS until
    /// [`load_partition`](Self::load_partition).
    pub fn begin_loading(&mut self, partition: i32) {
        if !self.loaded.contains(&partition) {
            self.loading.insert(partition);
        }
    }

    /// Replays a `__consumer_offsets` partition from its start (later records win, tombstones
    /// delete) and starts serving its groups. A group with members comes back Stable with
    /// fresh session timers; one without, Empty. Call [`unload_partition`](Self::unload_partition)
    /// before loading a partition again: groups already held for it are replaced and their
    /// parked requests dropped.
    pub fn load_partition(
        &mut self,
        partition: i32,
        records: impl Iterator<Item = (Bytes, Option<Bytes>)>,
        now_ms: i64,
    ) -> LoadSummary {
        let mut summary = LoadSummary::default();
        let stale: Vec<String> =
            self.groups.values().filter(|g| g.partition == partition).map(|g| g.id.clone()).collect();
        for id in stale {
            if let Some(mut g) = self.groups.remove(&id) {
                self.cancel_group_timers(&mut g);
            }
        }

        let mut offsets: HashMap<String, HashMap<String, HashMap<i32, CommittedOffset>>> = HashMap::new();
        let mut metadata: HashMap<String, (i16, records::GroupMetadataValue)> = HashMap::new();
        let skip = |summary: &mut LoadSummary, e: RecordError| match e {
            RecordError::UnknownKeyVersion(_) => summary.skipped_unknown += 1,
            e => {
                summary.skipped_corrupt += 1;
                summary.first_error.get_or_insert(e);
            }
        };
        for (key, value) in records {
            let key = match records::decode_key(&key) {
                Ok(k) => k,
                Err(e) => {
                    skip(&mut summary, e);
                    continue;
                }
            };
            match key {
                OffsetsRecordKey::OffsetCommit { group, topic, partition } => match value {
                    None => {
                        if let Some(topics) = offsets.get_mut(&group) {
                            if let Some(p) = topics.get_mut(&topic) {
                                p.remove(&partition);
                            }
                        }
                    }
                    Some(value) => match records::decode_offset_commit_value(&value) {
                        Ok((_, v)) => {
                            let o = CommittedOffset {
                                offset: v.offset,
                                leader_epoch: v.leader_epoch,
                                metadata: v.metadata,
                                commit_timestamp: v.commit_timestamp,
                                expire_timestamp: (v.expire_timestamp != -1).then_some(v.expire_timestamp),
                                seq: 0,
                            };
                            offsets.entry(group).or_default().entry(topic).or_default().insert(partition, o);
                        }
                        Err(e) => skip(&mut summary, e),
                    },
                },
                OffsetsRecordKey::GroupMetadata { group } => match value {
                    None => {
                        metadata.remove(&group);
                    }
                    Some(value) => match records::decode_group_metadata_value(&value) {
                        Ok(v) => {
                            metadata.insert(group, v);
                        }
                        Err(e) => skip(&mut summary, e),
                    },
                },
            }
        }

        for (id, (version, value)) in metadata {
            let mut group = Group::new(id, partition, now_ms);
            group.generation = value.generation;
            group.protocol_type = (!value.protocol_type.is_empty()).then_some(value.protocol_type);
            group.protocol_name = value.protocol;
            let protocol_type = group.protocol_type.clone().unwrap_or_default();
            let protocol = group.protocol_name.clone().unwrap_or_default();
            for m in value.members {
                let member = Member {
                    id: m.member_id,
                    instance_id: m.group_instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    rebalance_timeout_ms: if version == 0 { m.session_timeout } else { m.rebalance_timeout },
                    session_timeout_ms: m.session_timeout,
                    protocols: vec![JoinProtocol { name: protocol.clone(), metadata: m.subscription }],
                    assignment: m.assignment,
                    awaiting_join: None,
                    awaiting_sync: None,
                    is_new: false,
                    heartbeat_deadline: None,
                };
                group.add(member, &protocol_type, None);
            }
            // `add` adopted the first member's protocol type; "" means none.
            group.protocol_type = (!protocol_type.is_empty()).then_some(protocol_type);
            group.leader = value.leader;
            group.state = if group.members.is_empty() { GroupState::Empty } else { GroupState::Stable };
            group.state_timestamp = (value.current_state_timestamp != -1).then_some(value.current_state_timestamp);
            group.subscribed_topics = group.compute_subscribed_topics();
            self.groups.insert(group.id.clone(), group);
        }
        for (id, topics) in offsets {
            let topics: HashMap<String, HashMap<i32, CommittedOffset>> =
                topics.into_iter().filter(|(_, p)| !p.is_empty()).collect();
            if topics.is_empty() && !self.groups.contains_key(&id) {
                continue;
            }
            summary.offsets += topics.values().map(|p| p.len()).sum::<usize>();
            let group = self.groups.entry(id.clone()).or_insert_with(|| Group::new(id, partition, now_ms));
            group.offsets = topics;
        }

        self.loading.remove(&partition);
        self.loaded.insert(partition);
        let ids: Vec<String> =
            self.groups.values().filter(|g| g.partition == partition).map(|g| g.id.clone()).collect();
        summary.groups = ids.len();
        let mut ignored = Vec::new();
        for id in ids {
            let Some(mut group) = self.groups.remove(&id) else { continue };
            for member in group.members.values_mut() {
                let timeout = member.session_timeout_ms as i64;
                self.timers.reschedule_heartbeat(&id, member, timeout, now_ms);
            }
            if group.members.len() > self.config.group_max_size.max(0) as usize {
                // Give an oversized group's members the chance to commit before they are shed.
                self.prepare_rebalance(&mut group, now_ms, &mut ignored);
            }
            self.put_back(group);
        }
        if self.expiry_deadline.is_none() {
            let deadline = now_ms + self.config.offsets_retention_check_interval_ms;
            self.expiry_deadline = Some(deadline);
            self.timers.insert(deadline, Timer::OffsetExpiry);
        }
        summary
    }

    /// Stops serving a partition's groups: parked JoinGroup/SyncGroup requests get
    /// NOT_COORDINATOR and the groups are dropped (their state lives on in the log).
    pub fn unload_partition(&mut self, partition: i32) -> Vec<Command> {
        let mut out = Vec::new();
        self.loaded.remove(&partition);
        self.loading.remove(&partition);
        let ids: Vec<String> =
            self.groups.values().filter(|g| g.partition == partition).map(|g| g.id.clone()).collect();
        for id in ids {
            let Some(mut group) = self.groups.remove(&id) else { continue };
            for member in group.members.values_mut() {
                if let Some(reply_to) = member.awaiting_join.take() {
                    let response = JoinGroupResponse::error(&member.id, errors::NOT_COORDINATOR);
                    out.push(Command::Reply(reply_to, Response::JoinGroup(response)));
                }
                if let Some(reply_to) = member.awaiting_sync.take() {
                    let response = SyncGroupResponse::error(errors::NOT_COORDINATOR);
                    out.push(Command::Reply(reply_to, Response::SyncGroup(response)));
                }
            }
            self.cancel_group_timers(&mut group);
        }
        out
    }

    /// Fires every timer due at `now_ms`. Timers this schedules for `now_ms` itself (a zero
    /// delay) fire on the next call: call again while `next_deadline() <= now`.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Command> {
        let mut out = Vec::new();
        let mut due = Vec::new();
        while let Some(first) = self.timers.0.first() {
            if first.0 > now_ms {
                break;
            }
            if let Some(entry) = self.timers.0.pop_first() {
                due.push(entry);
            }
        }
        for (deadline, timer) in due {
            match timer {
                Timer::OffsetExpiry => {
                    if self.expiry_deadline == Some(deadline) {
                        self.expire_offsets(now_ms, &mut out);
                        let next = now_ms + self.config.offsets_retention_check_interval_ms.max(1);
                        self.expiry_deadline = Some(next);
                        self.timers.insert(next, Timer::OffsetExpiry);
                    }
                }
                Timer::Join(group_id) => {
                    let Some(mut group) = self.groups.remove(&group_id) else { continue };
                    if let Some((d, kind)) = group.join_timer {
                        if d == deadline {
                            group.join_timer = None;
                            self.on_join_timer(&mut group, kind, now_ms, &mut out);
                        }
                    }
                    self.put_back(group);
                }
                Timer::Sync(group_id) => {
                    let Some(mut group) = self.groups.remove(&group_id) else { continue };
                    if let Some((d, generation)) = group.sync_timer {
                        if d == deadline {
                            group.sync_timer = None;
                            self.on_sync_timeout(&mut group, generation, now_ms, &mut out);
                        }
                    }
                    self.put_back(group);
                }
                Timer::Heartbeat(group_id, member_id) => {
                    let Some(mut group) = self.groups.remove(&group_id) else { continue };
                    if let Some(member) = group.members.get_mut(&member_id) {
                        if member.heartbeat_deadline == Some(deadline) {
                            member.heartbeat_deadline = None;
                            self.on_heartbeat_expired(&mut group, &member_id, now_ms, &mut out);
                        }
                    }
                    self.put_back(group);
                }
                Timer::PendingMember(group_id, member_id) => {
                    let Some(mut group) = self.groups.remove(&group_id) else { continue };
                    if group.pending_members.get(&member_id) == Some(&deadline) {
                        group.pending_members.remove(&member_id);
                        if group.is(GroupState::PreparingRebalance) {
                            self.try_complete_join(&mut group, now_ms, &mut out);
                        }
                    }
                    self.put_back(group);
                }
            }
        }
        out
    }

    /// Reports the outcome of a [`Command::Append`]: `Err` carries the Kafka error code of the
    /// failed append (e.g. NOT_LEADER_OR_FOLLOWER, KAFKA_STORAGE_ERROR, REQUEST_TIMED_OUT).
    pub fn append_completed(&mut self, token: AppendToken, result: Result<(), i16>, now_ms: i64) -> Vec<Command> {
        let mut out = Vec::new();
        let Some(purpose) = self.appends.remove(&token) else { return out };
        match purpose {
            AppendPurpose::Commit(commit) => self.complete_commit(commit, result, &mut out),
            AppendPurpose::SyncStore { group_id, generation, assignment } => {
                self.complete_sync_store(&group_id, generation, assignment, result, now_ms, &mut out)
            }
            AppendPurpose::StaticRejoin(rejoin) => self.complete_static_rejoin(*rejoin, result, now_ms, &mut out),
            AppendPurpose::Fire => {}
            AppendPurpose::Waiter { waiter, groups } => {
                let done = match self.waiters.get_mut(&waiter) {
                    Some(w) => {
                        if let Err(code) = result {
                            fail_waiter(&mut w.response, &groups, map_store_group_error(code));
                        }
                        w.remaining -= 1;
                        w.remaining == 0
                    }
                    None => false,
                };
                if done {
                    if let Some(w) = self.waiters.remove(&waiter) {
                        out.push(Command::Reply(w.reply_to, w.response));
                    }
                }
            }
        }
        out
    }

    /// ListGroups. COORDINATOR_LOAD_IN_PROGRESS while a partition loads (with what is known).
    pub fn list_groups(&self, req: &ListGroupsRequest) -> ListGroupsResponse {
        let states: Vec<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
        let type_ok = req.types_filter.is_empty() || req.types_filter.iter().any(|t| t.eq_ignore_ascii_case("classic"));
        let mut groups: Vec<ListedGroup> = if !type_ok {
            Vec::new()
        } else {
            self.groups
                .values()
                .filter(|g| !g.is(GroupState::Dead))
                .filter(|g| states.is_empty() || states.iter().any(|s| s == &g.state.name().to_lowercase()))
                .map(|g| ListedGroup {
                    group_id: g.id.clone(),
                    protocol_type: g.protocol_type.clone().unwrap_or_default(),
                    group_state: g.state.name().to_owned(),
                    group_type: "classic".to_owned(),
                })
                .collect()
        };
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        let error_code = if self.loading.is_empty() { errors::NONE } else { errors::COORDINATOR_LOAD_IN_PROGRESS };
        ListGroupsResponse { error_code, groups }
    }

    /// DescribeGroups; member metadata and assignments only for a Stable group.
    pub fn describe_groups(&self, req: &DescribeGroupsRequest) -> DescribeGroupsResponse {
        let groups = req.groups.iter().map(|id| self.describe_group(id, req.version)).collect();
        DescribeGroupsResponse { groups }
    }

    fn describe_group(&self, id: &str, version: i16) -> DescribedGroup {
        let mut described = DescribedGroup {
            error_code: errors::NONE,
            error_message: None,
            group_id: id.to_owned(),
            group_state: String::new(),
            protocol_type: String::new(),
            protocol_data: String::new(),
            members: Vec::new(),
        };
        if let Err(code) = self.check_group(id, true) {
            described.error_code = code;
            return described;
        }
        let Some(group) = self.groups.get(id).filter(|g| !g.is(GroupState::Dead)) else {
            described.group_state = GroupState::Dead.name().to_owned();
            if version >= 6 {
                described.error_code = errors::GROUP_ID_NOT_FOUND;
                described.error_message = Some(format!("Group {id} not found."));
            }
            return described;
        };
        let stable = group.is(GroupState::Stable);
        let protocol = group.protocol_name.clone().unwrap_or_default();
        described.group_state = group.state.name().to_owned();
        described.protocol_type = group.protocol_type.clone().unwrap_or_default();
        if stable {
            described.protocol_data = protocol.clone();
        }
        described.members = group
            .members
            .values()
            .map(|m| DescribedMember {
                member_id: m.id.clone(),
                group_instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                member_metadata: if stable { m.metadata(&protocol) } else { Bytes::new() },
                member_assignment: if stable { m.assignment.clone() } else { Bytes::new() },
            })
            .collect();
        described
    }

    /// DeleteGroups: only Empty groups go; their offsets and metadata get tombstones, and the
    /// answer waits for those appends.
    pub fn delete_groups(&mut self, req: DeleteGroupsRequest, reply_to: ReplyTo, now_ms: i64) -> Vec<Command> {
        let mut out = Vec::new();
        let mut results = Vec::with_capacity(req.groups.len());
        let mut per_partition: PartitionBatches = BTreeMap::new();
        for id in req.groups {
            let code = match self.check_group(&id, true) {
                Err(code) => code,
                Ok(()) => match self.groups.get(&id).map(|g| g.state) {
                    None | Some(GroupState::Dead) => errors::GROUP_ID_NOT_FOUND,
                    Some(GroupState::Empty) => {
                        let Some(mut group) = self.groups.remove(&id) else { continue };
                        group.transition(GroupState::Dead, now_ms);
                        self.cancel_group_timers(&mut group);
                        let removed = group.remove_all_offsets();
                        let entry = per_partition.entry(group.partition).or_default();
                        for (topic, partition) in &removed {
                            entry.0.push(offset_tombstone(&id, topic, *partition));
                        }
                        if group.generation > 0 {
                            entry.0.push(group_tombstone(&id));
                        }
                        entry.1.push(id.clone());
                        errors::NONE
                    }
                    Some(_) => errors::NON_EMPTY_GROUP,
                },
            };
            results.push(DeleteGroupResult { group_id: id, error_code: code });
        }
        per_partition.retain(|_, (records, _)| !records.is_empty());
        let response = Response::DeleteGroups(DeleteGroupsResponse { results });
        self.append_for_waiter(per_partition, reply_to, response, &mut out);
        out
    }

    /// Issues the appends a reply waits for; replies at once if there are none.
    pub(crate) fn append_for_waiter(
        &mut self,
        per_partition: PartitionBatches,
        reply_to: ReplyTo,
        response: Response,
        out: &mut Vec<Command>,
    ) {
        if per_partition.is_empty() {
            out.push(Command::Reply(reply_to, response));
            return;
        }
        let waiter = self.next_waiter;
        self.next_waiter += 1;
        self.waiters.insert(waiter, Waiter { reply_to, remaining: per_partition.len(), response });
        for (partition, (records, groups)) in per_partition {
            self.append(partition, records, AppendPurpose::Waiter { waiter, groups }, out);
        }
    }

    pub(crate) fn append(
        &mut self,
        partition: i32,
        records: Vec<(Bytes, Option<Bytes>)>,
        purpose: AppendPurpose,
        out: &mut Vec<Command>,
    ) {
        let token = self.next_token;
        self.next_token += 1;
        self.appends.insert(token, purpose);
        out.push(Command::Append { partition, records, token });
    }

    pub(crate) fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Kafka's `validateGroupStatus`: a valid id whose partition is loaded here.
    /// `allow_empty` admits "" (OffsetCommit, OffsetFetch, DescribeGroups, DeleteGroups).
    pub(crate) fn check_group(&self, group_id: &str, allow_empty: bool) -> Result<(), i16> {
        if (group_id.is_empty() && !allow_empty) || group_id.len() > records::MAX_STRING_LEN {
            return Err(errors::INVALID_GROUP_ID);
        }
        let partition = self.partition_for(group_id);
        if self.loading.contains(&partition) {
            Err(errors::COORDINATOR_LOAD_IN_PROGRESS)
        } else if !self.loaded.contains(&partition) {
            Err(errors::NOT_COORDINATOR)
        } else {
            Ok(())
        }
    }

    /// Returns a group taken out of the map; a Dead group is dropped.
    pub(crate) fn put_back(&mut self, mut group: Group) {
        if group.is(GroupState::Dead) {
            self.cancel_group_timers(&mut group);
        } else {
            self.groups.insert(group.id.clone(), group);
        }
    }

    pub(crate) fn cancel_group_timers(&mut self, group: &mut Group) {
        if let Some((d, _)) = group.join_timer.take() {
            self.timers.remove(d, Timer::Join(group.id.clone()));
        }
        if let Some((d, _)) = group.sync_timer.take() {
            self.timers.remove(d, Timer::Sync(group.id.clone()));
        }
        for member in group.members.values_mut() {
            self.timers.cancel_heartbeat(&group.id, member);
        }
        for (id, d) in group.pending_members.drain() {
            self.timers.remove(d, Timer::PendingMember(group.id.clone(), id));
        }
    }

    pub(crate) fn set_join_timer(&mut self, group: &mut Group, deadline: i64, kind: JoinTimer) {
        if let Some((d, _)) = group.join_timer.take() {
            self.timers.remove(d, Timer::Join(group.id.clone()));
        }
        group.join_timer = Some((deadline, kind));
        self.timers.insert(deadline, Timer::Join(group.id.clone()));
    }

    pub(crate) fn cancel_join_timer(&mut self, group: &mut Group) {
        if let Some((d, _)) = group.join_timer.take() {
            self.timers.remove(d, Timer::Join(group.id.clone()));
        }
    }

    pub(crate) fn set_sync_timer(&mut self, group: &mut Group, deadline: i64) {
        self.cancel_sync_timer(group);
        group.sync_timer = Some((deadline, group.generation));
        self.timers.insert(deadline, Timer::Sync(group.id.clone()));
    }

    pub(crate) fn cancel_sync_timer(&mut self, group: &mut Group) {
        if let Some((d, _)) = group.sync_timer.take() {
            self.timers.remove(d, Timer::Sync(group.id.clone()));
        }
    }

    /// A random member id in Kafka's shape: `<client id or instance id>-<uuid>`.
    pub(crate) fn new_member_id(&mut self, prefix: &str) -> String {
        let prefix = &prefix[..(0..=prefix.len().min(1024)).rev().find(|&i| prefix.is_char_boundary(i)).unwrap_or(0)];
        let hi = (self.next_random() & !0xf000) | 0x4000;
        let lo = (self.next_random() & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
        format!(
            "{prefix}-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            hi >> 32,
            (hi >> 16) & 0xffff,
            hi & 0xffff,
            lo >> 48,
            lo & 0xffff_ffff_ffff
        )
    }

    /// splitmix64
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn fail_waiter(response: &mut Response, groups: &[String], code: i16) {
    match response {
        Response::DeleteGroups(r) => {
            for result in r.results.iter_mut().filter(|r| groups.contains(&r.group_id)) {
                result.error_code = code;
            }
        }
        Response::OffsetDelete(r) => {
            r.error_code = code;
            r.topics.clear();
        }
        _ => {}
    }
}

pub(crate) fn offset_commit_record(
    group: &str,
    topic: &str,
    partition: i32,
    o: &CommittedOffset,
) -> (Bytes, Option<Bytes>) {
    let key = records::encode_key(&OffsetsRecordKey::OffsetCommit {
        group: group.to_owned(),
        topic: topic.to_owned(),
        partition,
    });
    let value = records::OffsetCommitValue {
        offset: o.offset,
        leader_epoch: o.leader_epoch,
        metadata: o.metadata.clone(),
        commit_timestamp: o.commit_timestamp,
        expire_timestamp: o.expire_timestamp.unwrap_or(-1),
    };
    let version = value.writer_version();
    // Versions 1 and 3 always encode.
    let value = records::encode_offset_commit_value(&value, version).unwrap_or_default();
    (key, Some(value))
}

pub(crate) fn offset_tombstone(group: &str, topic: &str, partition: i32) -> (Bytes, Option<Bytes>) {
    let key = records::encode_key(&OffsetsRecordKey::OffsetCommit {
        group: group.to_owned(),
        topic: topic.to_owned(),
        partition,
    });
    (key, None)
}

pub(crate) fn group_tombstone(group: &str) -> (Bytes, Option<Bytes>) {
    (records::encode_key(&OffsetsRecordKey::GroupMetadata { group: group.to_owned() }), None)
}

/// The group's metadata record; `assignment` overrides the members' current assignments.
pub(crate) fn group_record(group: &Group, assignment: Option<&HashMap<String, Bytes>>) -> (Bytes, Option<Bytes>) {
    let protocol = group.protocol_name.as_deref().unwrap_or("");
    let value = records::GroupMetadataValue {
        protocol_type: group.protocol_type.clone().unwrap_or_default(),
        generation: group.generation,
        protocol: group.protocol_name.clone(),
        leader: group.leader.clone(),
        current_state_timestamp: group.state_timestamp.unwrap_or(-1),
        members: group
            .members
            .values()
            .map(|m| records::MemberMetadata {
                member_id: m.id.clone(),
                group_instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout: m.rebalance_timeout_ms,
                session_timeout: m.session_timeout_ms,
                subscription: m.metadata(protocol),
                assignment: match assignment {
                    Some(a) => a.get(&m.id).cloned().unwrap_or_default(),
                    None => m.assignment.clone(),
                },
            })
            .collect(),
    };
    let key = records::encode_key(&OffsetsRecordKey::GroupMetadata { group: group.id.clone() });
    let value = records::encode_value(&OffsetsRecordValue::GroupMetadata(value), records::GROUP_METADATA_VALUE_VERSION)
        .unwrap_or_default();
    (key, Some(value))
}
