//! A small in-memory group coordinator for the fake broker: Kafka's classic protocol reduced to
//! what the client relies on (member ids, join barrier, leader assignment, generations, session
//! expiry, offsets). Timers run from [`FakeGroups::tick`], called by the fake broker every 10 ms.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use tokio::sync::oneshot;

const UNKNOWN_MEMBER_ID: i16 = 25;
const ILLEGAL_GENERATION: i16 = 22;
const REBALANCE_IN_PROGRESS: i16 = 27;
const MEMBER_ID_REQUIRED: i16 = 79;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
const NON_EMPTY_GROUP: i16 = 68;
const GROUP_ID_NOT_FOUND: i16 = 69;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

struct Member {
    instance_id: Option<String>,
    client_id: String,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    join: Option<(i16, oneshot::Sender<JoinGroupResponse>)>,
    sync: Option<oneshot::Sender<SyncGroupResponse>>,
    last_seen: Instant,
    session_timeout: Duration,
    rebalance_timeout: Duration,
}

struct Group {
    state: State,
    generation: i32,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    pending: HashSet<String>,
    rebalance_started: Instant,
    offsets: BTreeMap<(String, i32), i64>,
}

impl Group {
    fn new() -> Self {
        Group {
            state: State::Empty,
            generation: 0,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashSet::new(),
            rebalance_started: Instant::now(),
            offsets: BTreeMap::new(),
        }
    }

    fn prepare_rebalance(&mut self) {
        if self.state != State::PreparingRebalance {
            self.state = State::PreparingRebalance;
            self.rebalance_started = Instant::now();
            // Followers waiting for the leader's SyncGroup must rejoin.
            for m in self.members.values_mut() {
                if let Some(tx) = m.sync.take() {
                    let _ = tx.send(SyncGroupResponse::default().with_error_code(REBALANCE_IN_PROGRESS));
                }
            }
        }
    }

    fn remove_member(&mut self, id: &str) {
        self.members.remove(id);
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
        if self.members.is_empty() {
            self.state = State::Empty;
            self.generation += 1;
            self.protocol = None;
        } else {
            self.prepare_rebalance();
        }
    }

    /// Completes the join phase once every member rejoined (after a short delay so that members
    /// joining together land in one generation), or drops the stragglers at the rebalance timeout.
    fn maybe_complete_join(&mut self, delay: Duration) {
        if self.state != State::PreparingRebalance || self.rebalance_started.elapsed() < delay {
            return;
        }
        let all_joined = self.members.values().all(|m| m.join.is_some());
        let timeout = self.members.values().map(|m| m.rebalance_timeout).max().unwrap_or_default();
        if !all_joined && self.rebalance_started.elapsed() < timeout {
            return;
        }
        let stragglers: Vec<String> =
            self.members.iter().filter(|(_, m)| m.join.is_none()).map(|(k, _)| k.clone()).collect();
        for id in stragglers {
            self.members.remove(&id);
        }
        if self.members.is_empty() {
            self.state = State::Empty;
            return;
        }
        self.generation += 1;
        // The protocol every member supports, in the first member's order of preference.
        let first = self.members.values().next().expect("non-empty");
        let protocol = first
            .protocols
            .iter()
            .map(|(n, _)| n.clone())
            .find(|n| self.members.values().all(|m| m.protocols.iter().any(|(p, _)| p == n)));
        self.protocol = protocol.clone();
        if !self.leader.as_ref().is_some_and(|l| self.members.contains_key(l)) {
            self.leader = self.members.keys().next().cloned();
        }
        let leader = self.leader.clone().expect("leader");
        let listing: Vec<JoinGroupResponseMember> = self
            .members
            .iter()
            .map(|(id, m)| {
                let metadata = m.protocols.iter().find(|(n, _)| Some(n) == protocol.as_ref()).map(|(_, b)| b.clone());
                JoinGroupResponseMember::default()
                    .with_member_id(s(id))
                    .with_group_instance_id(m.instance_id.as_deref().map(s))
                    .with_metadata(metadata.unwrap_or_default())
            })
            .collect();
        self.state = State::CompletingRebalance;
        let generation = self.generation;
        for (id, m) in self.members.iter_mut() {
            m.last_seen = Instant::now();
            let (version, tx) = m.join.take().expect("all joined");
            let mut resp = JoinGroupResponse::default()
                .with_generation_id(generation)
                .with_protocol_name(Some(s(protocol.as_deref().unwrap_or_default())))
                .with_leader(s(&leader))
                .with_member_id(s(id));
            if version >= 7 {
                resp = resp.with_protocol_type(Some(s("consumer")));
            }
            if *id == leader {
                resp = resp.with_members(
                    listing
                        .iter()
                        .cloned()
                        .map(|mut m| {
                            if version < 5 {
                                m.group_instance_id = None;
                            }
                            m
                        })
                        .collect(),
                );
            }
            let _ = tx.send(resp);
        }
    }

    fn check_member(&self, member_id: &str, generation: i32) -> i16 {
        if !self.members.contains_key(member_id) {
            UNKNOWN_MEMBER_ID
        } else if generation != self.generation {
            ILLEGAL_GENERATION
        } else {
            0
        }
    }
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

/// The groups of one fake broker.
pub struct FakeGroups {
    groups: Mutex<HashMap<String, Group>>,
    next_member: AtomicUsize,
    /// Minimum time a rebalance stays open for more members to join.
    pub rebalance_delay: Duration,
    /// JoinGroup requests answered (including MEMBER_ID_REQUIRED ones).
    pub joins: AtomicUsize,
}

pub enum Reply<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

impl FakeGroups {
    pub fn new() -> Self {
        FakeGroups {
            groups: Mutex::new(HashMap::new()),
            next_member: AtomicUsize::new(0),
            rebalance_delay: Duration::from_millis(100),
            joins: AtomicUsize::new(0),
        }
    }

    pub fn tick(&self) {
        let mut groups = self.groups.lock().unwrap();
        for g in groups.values_mut() {
            let expired: Vec<String> = g
                .members
                .iter()
                .filter(|(_, m)| m.join.is_none() && m.last_seen.elapsed() > m.session_timeout)
                .map(|(k, _)| k.clone())
                .collect();
            for id in expired {
                g.remove_member(&id);
            }
            g.maybe_complete_join(self.rebalance_delay);
        }
    }

    /// (state, members, generation) of a group.
    pub fn describe(&self, group: &str) -> Option<(&'static str, usize, i32)> {
        let groups = self.groups.lock().unwrap();
        groups.get(group).map(|g| (g.state.name(), g.members.len(), g.generation))
    }

    pub fn join(&self, req: JoinGroupRequest, version: i16, client_id: &str) -> Reply<JoinGroupResponse> {
        self.joins.fetch_add(1, Ordering::SeqCst);
        let mut groups = self.groups.lock().unwrap();
        let g = groups.entry(req.group_id.0.to_string()).or_insert_with(Group::new);
        let mut member_id = req.member_id.to_string();
        let instance = req.group_instance_id.as_ref().map(|i| i.to_string());
        let fail = |code| Reply::Now(JoinGroupResponse::default().with_error_code(code).with_member_id(s("")));
        if let Some(current) = &g.protocol {
            if !g.members.is_empty() && !req.protocols.iter().any(|p| p.name.as_str() == current) {
                return fail(INCONSISTENT_GROUP_PROTOCOL);
            }
        }
        if member_id.is_empty() {
            let id = format!("{client_id}-{}", self.next_member.fetch_add(1, Ordering::SeqCst));
            // A static member with a new member id replaces the one that had its instance id.
            if let Some(inst) = &instance {
                let old: Option<String> =
                    g.members.iter().find(|(_, m)| m.instance_id.as_ref() == Some(inst)).map(|(k, _)| k.clone());
                if let Some(old) = old {
                    g.members.remove(&old);
                    if g.leader.as_deref() == Some(old.as_str()) {
                        g.leader = None;
                    }
                }
            } else if version >= 4 {
                g.pending.insert(id.clone());
                return Reply::Now(
                    JoinGroupResponse::default().with_error_code(MEMBER_ID_REQUIRED).with_member_id(s(&id)),
                );
            }
            member_id = id;
        } else if !g.members.contains_key(&member_id) && !g.pending.remove(&member_id) {
            return fail(UNKNOWN_MEMBER_ID);
        }
        let (tx, rx) = oneshot::channel();
        let protocols: Vec<(String, Bytes)> =
            req.protocols.iter().map(|p| (p.name.to_string(), p.metadata.clone())).collect();
        let rebalance_timeout =
            Duration::from_millis(if version >= 1 { req.rebalance_timeout_ms } else { req.session_timeout_ms } as u64);
        let m = g.members.entry(member_id.clone()).or_insert_with(|| Member {
            instance_id: instance.clone(),
            client_id: client_id.to_owned(),
            protocols: Vec::new(),
            assignment: Bytes::new(),
            join: None,
            sync: None,
            last_seen: Instant::now(),
            session_timeout: Duration::ZERO,
            rebalance_timeout,
        });
        m.protocols = protocols;
        m.session_timeout = Duration::from_millis(req.session_timeout_ms as u64);
        m.rebalance_timeout = rebalance_timeout;
        m.last_seen = Instant::now();
        if let Some((_, old)) = m.join.replace((version, tx)) {
            drop(old);
        }
        g.prepare_rebalance();
        Reply::Later(rx)
    }

    pub fn sync(&self, req: SyncGroupRequest, version: i16) -> Reply<SyncGroupResponse> {
        let mut groups = self.groups.lock().unwrap();
        let Some(g) = groups.get_mut(req.group_id.0.as_str()) else {
            return Reply::Now(SyncGroupResponse::default().with_error_code(UNKNOWN_MEMBER_ID));
        };
        let member_id = req.member_id.to_string();
        let code = g.check_member(&member_id, req.generation_id);
        if code != 0 {
            return Reply::Now(SyncGroupResponse::default().with_error_code(code));
        }
        if g.state == State::PreparingRebalance {
            return Reply::Now(SyncGroupResponse::default().with_error_code(REBALANCE_IN_PROGRESS));
        }
        let protocol = g.protocol.clone().unwrap_or_default();
        let respond = |assignment: Bytes| {
            let mut r = SyncGroupResponse::default().with_assignment(assignment);
            if version >= 5 {
                r = r.with_protocol_type(Some(s("consumer"))).with_protocol_name(Some(s(&protocol)));
            }
            r
        };
        g.members.get_mut(&member_id).unwrap().last_seen = Instant::now();
        if g.state == State::Stable {
            return Reply::Now(respond(g.members[&member_id].assignment.clone()));
        }
        let (tx, rx) = oneshot::channel();
        g.members.get_mut(&member_id).unwrap().sync = Some(tx);
        if g.leader.as_deref() == Some(member_id.as_str()) {
            let given: HashMap<String, Bytes> =
                req.assignments.into_iter().map(|a| (a.member_id.to_string(), a.assignment)).collect();
            for (id, m) in g.members.iter_mut() {
                m.assignment = given.get(id).cloned().unwrap_or_default();
            }
            g.state = State::Stable;
            for m in g.members.values_mut() {
                if let Some(tx) = m.sync.take() {
                    let _ = tx.send(respond(m.assignment.clone()));
                }
            }
        }
        Reply::Later(rx)
    }

    pub fn heartbeat(&self, req: HeartbeatRequest) -> HeartbeatResponse {
        let mut groups = self.groups.lock().unwrap();
        let Some(g) = groups.get_mut(req.group_id.0.as_str()) else {
            return HeartbeatResponse::default().with_error_code(UNKNOWN_MEMBER_ID);
        };
        let code = g.check_member(req.member_id.as_str(), req.generation_id);
        if code == 0 || code == ILLEGAL_GENERATION {
            g.members.get_mut(req.member_id.as_str()).unwrap().last_seen = Instant::now();
        }
        let code = match code {
            0 if g.state == State::PreparingRebalance => REBALANCE_IN_PROGRESS,
            c => c,
        };
        HeartbeatResponse::default().with_error_code(code)
    }

    pub fn leave(&self, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
        let mut groups = self.groups.lock().unwrap();
        let Some(g) = groups.get_mut(req.group_id.0.as_str()) else {
            return LeaveGroupResponse::default().with_error_code(UNKNOWN_MEMBER_ID);
        };
        let ids: Vec<String> = if version >= 3 {
            req.members.iter().map(|m| m.member_id.to_string()).collect()
        } else {
            vec![req.member_id.to_string()]
        };
        let mut resp = LeaveGroupResponse::default();
        for id in ids {
            let code = if g.members.contains_key(&id) { 0 } else { UNKNOWN_MEMBER_ID };
            if code == 0 {
                g.remove_member(&id);
            }
            if version >= 3 {
                resp.members.push(
                    kafka_protocol::messages::leave_group_response::MemberResponse::default()
                        .with_member_id(s(&id))
                        .with_error_code(code),
                );
            } else {
                resp.error_code = code;
            }
        }
        resp
    }

    pub fn commit(&self, req: OffsetCommitRequest) -> OffsetCommitResponse {
        let mut groups = self.groups.lock().unwrap();
        let g = groups.entry(req.group_id.0.to_string()).or_insert_with(Group::new);
        let code = if req.generation_id_or_member_epoch < 0 && req.member_id.is_empty() {
            if g.members.is_empty() {
                0
            } else {
                UNKNOWN_MEMBER_ID
            }
        } else {
            match g.check_member(req.member_id.as_str(), req.generation_id_or_member_epoch) {
                0 if g.state == State::CompletingRebalance => REBALANCE_IN_PROGRESS,
                c => c,
            }
        };
        let topics = req
            .topics
            .into_iter()
            .map(|t| {
                let parts = t
                    .partitions
                    .iter()
                    .map(|p| {
                        if code == 0 {
                            g.offsets.insert((t.name.0.to_string(), p.partition_index), p.committed_offset);
                        }
                        OffsetCommitResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(code)
                    })
                    .collect();
                OffsetCommitResponseTopic::default().with_name(t.name).with_partitions(parts)
            })
            .collect();
        OffsetCommitResponse::default().with_topics(topics)
    }

    pub fn fetch_offsets(&self, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
        let groups = self.groups.lock().unwrap();
        type Wanted = Option<Vec<(String, Vec<i32>)>>;
        let (group_id, wanted): (String, Wanted) = if version >= 8 {
            let g = &req.groups[0];
            (
                g.group_id.0.to_string(),
                g.topics
                    .as_ref()
                    .map(|ts| ts.iter().map(|t| (t.name.0.to_string(), t.partition_indexes.clone())).collect()),
            )
        } else {
            (
                req.group_id.0.to_string(),
                req.topics
                    .as_ref()
                    .map(|ts| ts.iter().map(|t| (t.name.0.to_string(), t.partition_indexes.clone())).collect()),
            )
        };
        let offsets = groups.get(&group_id).map(|g| g.offsets.clone()).unwrap_or_default();
        let rows: Vec<(String, Vec<(i32, i64)>)> = match wanted {
            Some(ts) => ts
                .into_iter()
                .map(|(t, ps)| {
                    let parts = ps.iter().map(|p| (*p, offsets.get(&(t.clone(), *p)).copied().unwrap_or(-1))).collect();
                    (t, parts)
                })
                .collect(),
            None => {
                let mut by_topic: BTreeMap<String, Vec<(i32, i64)>> = BTreeMap::new();
                for ((t, p), o) in &offsets {
                    by_topic.entry(t.clone()).or_default().push((*p, *o));
                }
                by_topic.into_iter().collect()
            }
        };
        let name = |t: &str| TopicName(s(t));
        if version >= 8 {
            let topics = rows
                .into_iter()
                .map(|(t, ps)| {
                    OffsetFetchResponseTopics::default().with_name(name(&t)).with_partitions(
                        ps.into_iter()
                            .map(|(p, o)| {
                                OffsetFetchResponsePartitions::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(o)
                            })
                            .collect(),
                    )
                })
                .collect();
            OffsetFetchResponse::default().with_groups(vec![OffsetFetchResponseGroup::default()
                .with_group_id(GroupId(s(&group_id)))
                .with_topics(topics)])
        } else {
            let topics = rows
                .into_iter()
                .map(|(t, ps)| {
                    OffsetFetchResponseTopic::default().with_name(name(&t)).with_partitions(
                        ps.into_iter()
                            .map(|(p, o)| {
                                OffsetFetchResponsePartition::default().with_partition_index(p).with_committed_offset(o)
                            })
                            .collect(),
                    )
                })
                .collect();
            OffsetFetchResponse::default().with_topics(topics)
        }
    }

    pub fn list(&self, req: ListGroupsRequest, version: i16) -> ListGroupsResponse {
        let groups = self.groups.lock().unwrap();
        let mut listed: Vec<ListedGroup> = groups
            .iter()
            .filter(|(_, g)| {
                req.states_filter.is_empty() || req.states_filter.iter().any(|f| f.as_str() == g.state.name())
            })
            .map(|(id, g)| {
                let mut l = ListedGroup::default().with_group_id(GroupId(s(id))).with_protocol_type(s("consumer"));
                if version >= 4 {
                    l = l.with_group_state(s(g.state.name()));
                }
                l
            })
            .collect();
        listed.sort_by(|a, b| a.group_id.0.cmp(&b.group_id.0));
        ListGroupsResponse::default().with_groups(listed)
    }

    pub fn describe_groups(&self, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
        let groups = self.groups.lock().unwrap();
        let described = req
            .groups
            .iter()
            .map(|id| match groups.get(id.0.as_str()) {
                None => DescribedGroup::default().with_group_id(id.clone()).with_group_state(s("Dead")),
                Some(g) => DescribedGroup::default()
                    .with_group_id(id.clone())
                    .with_group_state(s(g.state.name()))
                    .with_protocol_type(s("consumer"))
                    .with_protocol_data(s(g.protocol.as_deref().unwrap_or_default()))
                    .with_members(
                        g.members
                            .iter()
                            .map(|(mid, m)| {
                                let metadata = m
                                    .protocols
                                    .iter()
                                    .find(|(n, _)| Some(n) == g.protocol.as_ref())
                                    .map(|(_, b)| b.clone())
                                    .unwrap_or_default();
                                DescribedGroupMember::default()
                                    .with_member_id(s(mid))
                                    .with_client_id(s(&m.client_id))
                                    .with_client_host(s("/127.0.0.1"))
                                    .with_member_metadata(metadata)
                                    .with_member_assignment(m.assignment.clone())
                            })
                            .collect(),
                    ),
            })
            .collect();
        DescribeGroupsResponse::default().with_groups(described)
    }

    pub fn delete(&self, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
        let mut groups = self.groups.lock().unwrap();
        let results = req
            .groups_names
            .iter()
            .map(|id| {
                let code = match groups.get(id.0.as_str()) {
                    None => GROUP_ID_NOT_FOUND,
                    Some(g) if !g.members.is_empty() => NON_EMPTY_GROUP,
                    Some(_) => {
                        groups.remove(id.0.as_str());
                        0
                    }
                };
                kafka_protocol::messages::delete_groups_response::DeletableGroupResult::default()
                    .with_group_id(id.clone())
                    .with_error_code(code)
            })
            .collect();
        DeleteGroupsResponse::default().with_results(results)
    }
}
