//! Helpers shared by the coordinator tests: requests with sensible defaults and accessors for
//! the commands the coordinator returns.
#![allow(dead_code)]

use bytes::{BufMut, Bytes, BytesMut};
use tern_group::*;

pub const T0: i64 = 1_700_000_000_000;
pub const SESSION: i32 = 10_000;
pub const REBALANCE: i32 = 30_000;

pub fn config() -> GroupConfig {
    GroupConfig { group_initial_rebalance_delay_ms: 0, ..GroupConfig::default() }
}

/// A coordinator with every `__consumer_offsets` partition loaded (empty) at `T0`.
pub fn coordinator(config: GroupConfig) -> GroupCoordinator {
    let partitions = config.offsets_topic_num_partitions;
    let mut c = GroupCoordinator::with_seed(config, 42);
    for p in 0..partitions {
        c.load_partition(p, std::iter::empty(), T0);
    }
    c
}

/// A consumer-protocol v0 subscription.
pub fn subscription(topics: &[&str]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(topics.len() as i32);
    for t in topics {
        b.put_i16(t.len() as i16);
        b.put_slice(t.as_bytes());
    }
    b.put_i32(-1);
    b.freeze()
}

pub fn join_req(version: i16, group: &str, member_id: &str, instance_id: Option<&str>) -> JoinGroupRequest {
    JoinGroupRequest {
        version,
        group_id: group.into(),
        session_timeout_ms: SESSION,
        rebalance_timeout_ms: REBALANCE,
        member_id: member_id.into(),
        group_instance_id: instance_id.map(Into::into),
        protocol_type: "consumer".into(),
        protocols: vec![JoinProtocol { name: "range".into(), metadata: subscription(&["t"]) }],
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
    }
}

pub fn sync_req(group: &str, member_id: &str, generation: i32, assignments: Vec<(String, Bytes)>) -> SyncGroupRequest {
    SyncGroupRequest {
        version: 5,
        group_id: group.into(),
        generation_id: generation,
        member_id: member_id.into(),
        group_instance_id: None,
        protocol_type: Some("consumer".into()),
        protocol_name: Some("range".into()),
        assignments,
    }
}

pub fn heartbeat_req(group: &str, member_id: &str, generation: i32) -> HeartbeatRequest {
    HeartbeatRequest {
        group_id: group.into(),
        generation_id: generation,
        member_id: member_id.into(),
        group_instance_id: None,
    }
}

pub fn commit_req(group: &str, member_id: &str, generation: i32, offsets: &[(&str, i32, i64)]) -> OffsetCommitRequest {
    let mut topics: Vec<OffsetCommitTopic> = Vec::new();
    for &(topic, partition, offset) in offsets {
        let p = OffsetCommitPartition {
            partition_index: partition,
            committed_offset: offset,
            committed_leader_epoch: 3,
            commit_timestamp: -1,
            committed_metadata: Some("meta".into()),
        };
        match topics.iter_mut().find(|t| t.name == topic) {
            Some(t) => t.partitions.push(p),
            None => topics.push(OffsetCommitTopic { name: topic.into(), partitions: vec![p] }),
        }
    }
    OffsetCommitRequest {
        version: 8,
        group_id: group.into(),
        generation_id: generation,
        member_id: member_id.into(),
        group_instance_id: None,
        retention_time_ms: -1,
        topics,
    }
}

pub fn fetch_req(group: &str, topics: Option<&[(&str, &[i32])]>) -> OffsetFetchRequest {
    OffsetFetchRequest {
        group_id: group.into(),
        topics: topics.map(|ts| {
            ts.iter().map(|(name, ps)| TopicPartitions { name: (*name).into(), partitions: ps.to_vec() }).collect()
        }),
        require_stable: false,
    }
}

pub fn join_resp(cmd: &Command) -> (ReplyTo, &JoinGroupResponse) {
    match cmd {
        Command::Reply(r, Response::JoinGroup(j)) => (*r, j),
        other => panic!("expected a JoinGroup reply, got {other:?}"),
    }
}

pub fn sync_resp(cmd: &Command) -> (ReplyTo, &SyncGroupResponse) {
    match cmd {
        Command::Reply(r, Response::SyncGroup(s)) => (*r, s),
        other => panic!("expected a SyncGroup reply, got {other:?}"),
    }
}

/// The token of the single Append among `cmds`.
pub fn append_token(cmds: &[Command]) -> AppendToken {
    let tokens: Vec<AppendToken> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::Append { token, .. } => Some(*token),
            _ => None,
        })
        .collect();
    assert_eq!(tokens.len(), 1, "expected one Append in {cmds:?}");
    tokens[0]
}

/// Runs every timer due at `now`, including ones the firing timers schedule for `now`.
pub fn tick_all(c: &mut GroupCoordinator, now: i64) -> Vec<Command> {
    let mut out = Vec::new();
    while c.next_deadline().is_some_and(|d| d <= now) {
        out.extend(c.tick(now));
    }
    out
}

pub fn join_ok(generation: i32, member_id: &str, leader: &str, members: Vec<JoinGroupMember>) -> JoinGroupResponse {
    JoinGroupResponse {
        error_code: errors::NONE,
        generation_id: generation,
        protocol_type: Some("consumer".into()),
        protocol_name: Some("range".into()),
        leader: leader.into(),
        skip_assignment: false,
        member_id: member_id.into(),
        members,
    }
}

pub fn member(id: &str, instance_id: Option<&str>) -> JoinGroupMember {
    JoinGroupMember {
        member_id: id.into(),
        group_instance_id: instance_id.map(Into::into),
        metadata: subscription(&["t"]),
    }
}

pub fn sync_ok(assignment: &Bytes) -> SyncGroupResponse {
    SyncGroupResponse {
        error_code: errors::NONE,
        protocol_type: Some("consumer".into()),
        protocol_name: Some("range".into()),
        assignment: assignment.clone(),
    }
}

/// A group of `n` dynamic members (JoinGroup v3, no member-id round trip) brought to Stable at
/// `now`; returns the member ids in join order (the first leads) and their assignments.
pub fn stable_group(c: &mut GroupCoordinator, group: &str, n: usize, now: i64) -> (Vec<String>, Vec<Bytes>) {
    let mut reply = 1000;
    for _ in 0..n {
        reply += 1;
        assert!(c.join_group(join_req(3, group, "", None), reply, now).is_empty());
    }
    let cmds = tick_all(c, now);
    assert_eq!(cmds.len(), n);
    let ids: Vec<String> = cmds.iter().map(|cmd| join_resp(cmd).1.member_id.clone()).collect();
    let generation = join_resp(&cmds[0]).1.generation_id;
    let assignments: Vec<Bytes> = (0..n).map(|i| Bytes::from(vec![i as u8; 4])).collect();
    for id in &ids[1..] {
        assert!(c.sync_group(sync_req(group, id, generation, vec![]), 2000, now).is_empty());
    }
    let leader_sync =
        sync_req(group, &ids[0], generation, ids.iter().cloned().zip(assignments.iter().cloned()).collect());
    let cmds = c.sync_group(leader_sync, 2001, now);
    let token = append_token(&cmds);
    let cmds = c.append_completed(token, Ok(()), now);
    assert_eq!(cmds.len(), n);
    assert_eq!(c.group_state(group), Some(GroupState::Stable));
    (ids, assignments)
}
