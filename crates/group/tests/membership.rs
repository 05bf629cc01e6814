//! JoinGroup / SyncGroup / Heartbeat / LeaveGroup and the rebalance timers, asserting the
//! exact commands the coordinator returns.

mod common;

use bytes::Bytes;
use common::*;
use tern_group::records::{self, GroupMetadataValue, MemberMetadata, OffsetsRecordKey, OffsetsRecordValue};
use tern_group::*;

#[test]
fn three_members_join_sync_heartbeat() {
    let mut c = coordinator(config());
    // JoinGroup v3: new members get an id at once and wait for the rebalance.
    assert_eq!(c.join_group(join_req(3, "g", "", None), 1, T0), vec![]);
    assert_eq!(c.join_group(join_req(3, "g", "", None), 2, T0), vec![]);
    assert_eq!(c.join_group(join_req(3, "g", "", None), 3, T0), vec![]);
    assert_eq!(c.group_state("g"), Some(GroupState::PreparingRebalance));

    let cmds = tick_all(&mut c, T0);
    let ids: Vec<String> = cmds.iter().map(|cmd| join_resp(cmd).1.member_id.clone()).collect();
    assert!(ids.iter().all(|id| id.starts_with("client-") && id.len() == "client-".len() + 36));
    let (a, b, m3) = (&ids[0], &ids[1], &ids[2]);
    assert_eq!(
        cmds,
        vec![
            Command::Reply(
                1,
                Response::JoinGroup(join_ok(1, a, a, vec![member(a, None), member(b, None), member(m3, None)]))
            ),
            Command::Reply(2, Response::JoinGroup(join_ok(1, b, a, vec![]))),
            Command::Reply(3, Response::JoinGroup(join_ok(1, m3, a, vec![]))),
        ]
    );
    assert_eq!(c.group_state("g"), Some(GroupState::CompletingRebalance));

    // Followers wait for the leader's assignment.
    assert_eq!(c.sync_group(sync_req("g", b, 1, vec![]), 12, T0 + 10), vec![]);
    assert_eq!(c.sync_group(sync_req("g", m3, 1, vec![]), 13, T0 + 10), vec![]);
    let (xa, xb, xc) = (Bytes::from_static(b"A"), Bytes::from_static(b"B"), Bytes::from_static(b"C"));
    let assignments = vec![(a.clone(), xa.clone()), (b.clone(), xb.clone()), (m3.clone(), xc.clone())];
    let cmds = c.sync_group(sync_req("g", a, 1, assignments), 11, T0 + 20);

    // The generation is stored before anyone learns its assignment.
    let mut expected_members = Vec::new();
    for (id, asg) in [(a, &xa), (b, &xb), (m3, &xc)] {
        expected_members.push(MemberMetadata {
            member_id: id.clone(),
            group_instance_id: None,
            client_id: "client".into(),
            client_host: "/127.0.0.1".into(),
            rebalance_timeout: REBALANCE,
            session_timeout: SESSION,
            subscription: subscription(&["t"]),
            assignment: asg.clone(),
        });
    }
    let value = GroupMetadataValue {
        protocol_type: "consumer".into(),
        generation: 1,
        protocol: Some("range".into()),
        leader: Some(a.clone()),
        current_state_timestamp: T0,
        members: expected_members,
    };
    let key = records::encode_key(&OffsetsRecordKey::GroupMetadata { group: "g".into() });
    let value = records::encode_value(&OffsetsRecordValue::GroupMetadata(value), 3).unwrap();
    let token = append_token(&cmds);
    assert_eq!(
        cmds,
        vec![Command::Append { partition: c.partition_for("g"), records: vec![(key, Some(value))], token }]
    );
    assert_eq!(c.group_state("g"), Some(GroupState::CompletingRebalance));

    let cmds = c.append_completed(token, Ok(()), T0 + 30);
    assert_eq!(
        cmds,
        vec![
            Command::Reply(11, Response::SyncGroup(sync_ok(&xa))),
            Command::Reply(12, Response::SyncGroup(sync_ok(&xb))),
            Command::Reply(13, Response::SyncGroup(sync_ok(&xc))),
        ]
    );
    assert_eq!(c.group_state("g"), Some(GroupState::Stable));

    // Heartbeats keep the members alive well past their session timeout.
    for step in 1..=5 {
        let now = T0 + 30 + step * (SESSION as i64 / 2);
        for id in &ids {
            assert_eq!(c.heartbeat(&heartbeat_req("g", id, 1), now).error_code, errors::NONE);
        }
        assert_eq!(tick_all(&mut c, now), vec![]);
    }
    assert_eq!(c.group_state("g"), Some(GroupState::Stable));

    // A SyncGroup in a Stable group returns the member's current assignment at once.
    let cmds = c.sync_group(sync_req("g", b, 1, vec![]), 20, T0 + 40_000);
    assert_eq!(cmds, vec![Command::Reply(20, Response::SyncGroup(sync_ok(&xb)))]);
}

#[test]
fn member_id_required_round_trip() {
    let mut c = coordinator(config());
    let cmds = c.join_group(join_req(4, "g", "", None), 1, T0);
    let (_, r) = join_resp(&cmds[0]);
    assert_eq!(cmds.len(), 1);
    let id = r.member_id.clone();
    assert_eq!(r, &JoinGroupResponse { member_id: id.clone(), ..join_error(errors::MEMBER_ID_REQUIRED) });
    // Still Empty: the pending member is not a member yet.
    assert_eq!(c.group_state("g"), Some(GroupState::Empty));

    assert_eq!(c.join_group(join_req(4, "g", &id, None), 2, T0 + 5), vec![]);
    let cmds = tick_all(&mut c, T0 + 5);
    assert_eq!(cmds, vec![Command::Reply(2, Response::JoinGroup(join_ok(1, &id, &id, vec![member(&id, None)])))]);
}

#[test]
fn pending_member_expires_after_session_timeout() {
    let mut c = coordinator(config());
    let cmds = c.join_group(join_req(4, "g", "", None), 1, T0);
    let id = join_resp(&cmds[0]).1.member_id.clone();
    assert_eq!(c.next_deadline(), Some(T0 + SESSION as i64));
    assert_eq!(tick_all(&mut c, T0 + SESSION as i64), vec![]);
    // The id is forgotten: rejoining with it is an unknown member.
    let cmds = c.join_group(join_req(4, "g", &id, None), 2, T0 + SESSION as i64 + 1);
    assert_eq!(join_resp(&cmds[0]).1.error_code, errors::UNKNOWN_MEMBER_ID);
}

fn join_error(code: i16) -> JoinGroupResponse {
    JoinGroupResponse {
        error_code: code,
        generation_id: -1,
        protocol_type: None,
        protocol_name: None,
        leader: String::new(),
        skip_assignment: false,
        member_id: String::new(),
        members: vec![],
    }
}

#[test]
fn initial_rebalance_delay_waits_for_more_members() {
    let mut c = coordinator(GroupConfig::default()); // group.initial.rebalance.delay.ms = 3000
    assert_eq!(c.join_group(join_req(3, "g", "", None), 1, T0), vec![]);
    assert_eq!(c.next_deadline(), Some(T0 + 3000));
    assert_eq!(c.tick(T0 + 2999), vec![]);
    // A second member arrives during the delay: the delay is extended once it expires.
    assert_eq!(c.join_group(join_req(3, "g", "", None), 2, T0 + 1000), vec![]);
    assert_eq!(c.tick(T0 + 3000), vec![]);
    assert_eq!(c.next_deadline(), Some(T0 + 6000));
    let cmds = c.tick(T0 + 6000);
    assert_eq!(cmds.len(), 2);
    assert_eq!(join_resp(&cmds[0]).1.generation_id, 1);
    assert_eq!(join_resp(&cmds[0]).1.members.len(), 2);
}

#[test]
fn initial_rebalance_delay_is_capped_by_the_rebalance_timeout() {
    let mut c = coordinator(GroupConfig::default());
    let short = |member_id: &str| JoinGroupRequest { rebalance_timeout_ms: 5000, ..join_req(3, "g", member_id, None) };
    assert_eq!(c.join_group(short(""), 1, T0), vec![]);
    assert_eq!(c.join_group(short(""), 2, T0 + 100), vec![]);
    assert_eq!(c.tick(T0 + 3000), vec![]);
    // Only 2000 ms of the 5000 ms rebalance timeout are left.
    assert_eq!(c.next_deadline(), Some(T0 + 5000));
    assert_eq!(c.join_group(short(""), 3, T0 + 4000), vec![]);
    let cmds = c.tick(T0 + 5000);
    assert_eq!(cmds.len(), 3, "no further extension once the rebalance timeout is used up");
}

#[test]
fn session_timeout_removes_member_and_rebalances() {
    let mut c = coordinator(config());
    let (ids, _) = stable_group(&mut c, "g", 2, T0);
    let (a, b) = (&ids[0], &ids[1]);
    // Only `a` heartbeats.
    let half = SESSION as i64 / 2;
    assert_eq!(c.heartbeat(&heartbeat_req("g", a, 1), T0 + half).error_code, errors::NONE);
    assert_eq!(tick_all(&mut c, T0 + SESSION as i64 - 1), vec![]);
    assert_eq!(tick_all(&mut c, T0 + SESSION as i64), vec![]);
    assert_eq!(c.group_state("g"), Some(GroupState::PreparingRebalance));
    assert_eq!(c.heartbeat(&heartbeat_req("g", b, 1), T0 + SESSION as i64).error_code, errors::UNKNOWN_MEMBER_ID);
    assert_eq!(
        c.heartbeat(&heartbeat_req("g", a, 1), T0 + SESSION as i64 + 1).error_code,
        errors::REBALANCE_IN_PROGRESS
    );
    // `a` rejoins; it is the only member left, so the join completes at once.
    let cmds = c.join_group(join_req(3, "g", a, None), 7, T0 + SESSION as i64 + 2);
    assert_eq!(cmds, vec![Command::Reply(7, Response::JoinGroup(join_ok(2, a, a, vec![member(a, None)])))]);
}

#[test]
fn rebalance_timeout_kicks_a_member_that_does_not_rejoin() {
    let mut c = coordinator(config());
    let (ids, _) = stable_group(&mut c, "g", 2, T0);
    let (a, b) = (&ids[0], &ids[1]);
    // The leader rejoins (e.g. topic metadata changed): rebalance.
    assert_eq!(c.join_group(join_req(3, "g", a, None), 5, T0 + 100), vec![]);
    // `b` keeps heartbeating but never rejoins.
    let mut now = T0 + 100;
    while now < T0 + 100 + REBALANCE as i64 - 3000 {
        now += 3000;
        assert_eq!(c.heartbeat(&heartbeat_req("g", b, 1), now).error_code, errors::REBALANCE_IN_PROGRESS);
        assert_eq!(c.heartbeat(&heartbeat_req("g", a, 1), now).error_code, errors::REBALANCE_IN_PROGRESS);
        assert_eq!(tick_all(&mut c, now), vec![]);
    }
    let cmds = tick_all(&mut c, T0 + 100 + REBALANCE as i64);
    assert_eq!(cmds, vec![Command::Reply(5, Response::JoinGroup(join_ok(2, a, a, vec![member(a, None)])))]);
    assert_eq!(c.heartbeat(&heartbeat_req("g", b, 1), now + 1).error_code, errors::UNKNOWN_MEMBER_ID);
}

#[test]
fn follower_that_never_syncs_is_removed_after_the_rebalance_timeout() {
    let mut c = coordinator(config());
    let (a, b) = two_members_joined(&mut c, None);
    let cmds = c.sync_group(sync_req("g", &a, 1, vec![(a.clone(), Bytes::from_static(b"x"))]), 3, T0 + 1);
    let cmds = c.append_completed(append_token(&cmds), Ok(()), T0 + 2);
    assert_eq!(cmds.len(), 1);
    // `b` heartbeats but never sends SyncGroup.
    for i in 1..6 {
        assert_eq!(c.heartbeat(&heartbeat_req("g", &a, 1), T0 + i * 5000).error_code, errors::NONE);
        assert_eq!(c.heartbeat(&heartbeat_req("g", &b, 1), T0 + i * 5000).error_code, errors::NONE);
        tick_all(&mut c, T0 + i * 5000);
    }
    assert_eq!(tick_all(&mut c, T0 + REBALANCE as i64), vec![]);
    assert_eq!(c.group_state("g"), Some(GroupState::PreparingRebalance));
    assert_eq!(
        c.heartbeat(&heartbeat_req("g", &b, 1), T0 + REBALANCE as i64 + 1).error_code,
        errors::UNKNOWN_MEMBER_ID
    );
}

/// Two members that joined group "g" together (replies 1 and 2) and got generation 1, as
/// static members with these instance ids (JoinGroup v5) or dynamic ones (v3).
fn two_members_joined(c: &mut GroupCoordinator, instance_ids: Option<(&str, &str)>) -> (String, String) {
    let (version, ia, ib) = match instance_ids {
        Some((ia, ib)) => (5, Some(ia), Some(ib)),
        None => (3, None, None),
    };
    assert_eq!(c.join_group(join_req(version, "g", "", ia), 1, T0), vec![]);
    assert_eq!(c.join_group(join_req(version, "g", "", ib), 2, T0), vec![]);
    let cmds = tick_all(c, T0);
    (join_resp(&cmds[0]).1.member_id.clone(), join_resp(&cmds[1]).1.member_id.clone())
}

/// Two static members (instance ids "ia", "ib") in a Stable group via JoinGroup v5.
fn static_group(c: &mut GroupCoordinator) -> (String, String, Bytes, Bytes) {
    let (a, b) = two_members_joined(c, Some(("ia", "ib")));
    assert!(a.starts_with("ia-") && b.starts_with("ib-"));
    let (xa, xb) = (Bytes::from_static(b"assign-a"), Bytes::from_static(b"assign-b"));
    assert_eq!(c.sync_group(sync_req("g", &b, 1, vec![]), 4, T0), vec![]);
    let cmds = c.sync_group(sync_req("g", &a, 1, vec![(a.clone(), xa.clone()), (b.clone(), xb.clone())]), 3, T0);
    assert_eq!(c.append_completed(append_token(&cmds), Ok(()), T0).len(), 2);
    (a, b, xa, xb)
}

#[test]
fn static_member_rejoin_keeps_assignment_without_rebalance() {
    let mut c = coordinator(config());
    let (a, b, _xa, xb) = static_group(&mut c);
    // `b` restarts: it has lost its member id but keeps its instance id and protocols.
    let cmds = c.join_group(join_req(5, "g", "", Some("ib")), 10, T0 + 1000);
    let token = append_token(&cmds);
    assert_eq!(cmds.len(), 1, "only the group record is written: {cmds:?}");
    assert_eq!(c.group_state("g"), Some(GroupState::Stable));
    let cmds = c.append_completed(token, Ok(()), T0 + 1001);
    let (reply_to, r) = join_resp(&cmds[0]);
    assert_eq!(cmds.len(), 1);
    assert_eq!(reply_to, 10);
    let new_b = r.member_id.clone();
    assert!(new_b.starts_with("ib-") && new_b != b);
    assert_eq!(r, &join_ok(1, &new_b, &a, vec![]));
    // Same generation: its SyncGroup returns the assignment it had.
    let cmds = c.sync_group(sync_req("g", &new_b, 1, vec![]), 11, T0 + 1002);
    assert_eq!(cmds, vec![Command::Reply(11, Response::SyncGroup(sync_ok(&xb)))]);
    assert_eq!(c.group_state("g"), Some(GroupState::Stable));

    // The old member id is fenced.
    let stale = HeartbeatRequest { group_instance_id: Some("ib".into()), ..heartbeat_req("g", &b, 1) };
    assert_eq!(c.heartbeat(&stale, T0 + 1003).error_code, errors::FENCED_INSTANCE_ID);
    let cmds = c.join_group(join_req(5, "g", &b, Some("ib")), 12, T0 + 1004);
    assert_eq!(
        cmds,
        vec![Command::Reply(
            12,
            Response::JoinGroup(JoinGroupResponse { member_id: b.clone(), ..join_error(errors::FENCED_INSTANCE_ID) })
        )]
    );
    let current = HeartbeatRequest { group_instance_id: Some("ib".into()), ..heartbeat_req("g", &new_b, 1) };
    assert_eq!(c.heartbeat(&current, T0 + 1005).error_code, errors::NONE);
}

#[test]
fn static_leader_rejoin_v9_is_told_to_skip_assignment() {
    let mut c = coordinator(config());
    let (a, b, _, _) = static_group(&mut c);
    let cmds = c.join_group(join_req(9, "g", "", Some("ia")), 10, T0 + 1000);
    let cmds = c.append_completed(append_token(&cmds), Ok(()), T0 + 1001);
    let (_, r) = join_resp(&cmds[0]);
    let new_a = r.member_id.clone();
    assert_ne!(new_a, a);
    let mut expected = join_ok(1, &new_a, &new_a, vec![member(&new_a, Some("ia")), member(&b, Some("ib"))]);
    expected.skip_assignment = true;
    assert_eq!(r, &expected);
}

#[test]
fn static_rejoin_store_failure_restores_the_old_member_id() {
    let mut c = coordinator(config());
    let (_a, b, _, _) = static_group(&mut c);
    let cmds = c.join_group(join_req(5, "g", "", Some("ib")), 10, T0 + 1000);
    let cmds = c.append_completed(append_token(&cmds), Err(errors::NOT_LEADER_OR_FOLLOWER), T0 + 1001);
    assert_eq!(join_resp(&cmds[0]).1.error_code, errors::NOT_COORDINATOR);
    assert_eq!(join_resp(&cmds[0]).1.member_id, "");
    let old = HeartbeatRequest { group_instance_id: Some("ib".into()), ..heartbeat_req("g", &b, 1) };
    assert_eq!(c.heartbeat(&old, T0 + 1002).error_code, errors::NONE);
}

#[test]
fn static_member_with_changed_protocols_triggers_rebalance() {
    let mut c = coordinator(config());
    let (a, _b, _, _) = static_group(&mut c);
    let mut req = join_req(5, "g", "", Some("ib"));
    req.protocols = vec![JoinProtocol { name: "roundrobin".into(), metadata: subscription(&["t"]) }];
    // "roundrobin" is not supported by `a`: inconsistent.
    let cmds = c.join_group(req, 10, T0 + 1000);
    assert_eq!(join_resp(&cmds[0]).1.error_code, errors::INCONSISTENT_GROUP_PROTOCOL);
    let mut req = join_req(5, "g", "", Some("ib"));
    req.protocols[0].metadata = subscription(&["t", "u"]);
    // New subscription, same protocol: no rebalance is needed for the selection, the id is
    // just persisted (Kafka compares the selected protocol only).
    let cmds = c.join_group(req, 11, T0 + 1000);
    assert!(matches!(cmds[..], [Command::Append { .. }]));
    let _ = a;
}

#[test]
fn generation_is_checked_on_heartbeat_sync_and_commit() {
    let mut c = coordinator(config());
    let (ids, _) = stable_group(&mut c, "g", 2, T0);
    let a = &ids[0];
    assert_eq!(c.heartbeat(&heartbeat_req("g", a, 0), T0 + 1).error_code, errors::ILLEGAL_GENERATION);
    assert_eq!(c.heartbeat(&heartbeat_req("g", "nobody", 1), T0 + 1).error_code, errors::UNKNOWN_MEMBER_ID);
    let cmds = c.sync_group(sync_req("g", a, 2, vec![]), 5, T0 + 1);
    assert_eq!(cmds, vec![Command::Reply(5, Response::SyncGroup(sync_error(errors::ILLEGAL_GENERATION)))]);
    let mut wrong_protocol = sync_req("g", a, 1, vec![]);
    wrong_protocol.protocol_name = Some("roundrobin".into());
    let cmds = c.sync_group(wrong_protocol, 6, T0 + 1);
    assert_eq!(cmds, vec![Command::Reply(6, Response::SyncGroup(sync_error(errors::INCONSISTENT_GROUP_PROTOCOL)))]);
    let cmds = c.offset_commit(commit_req("g", a, 7, &[("t", 0, 5), ("t", 1, 6)]), 7, T0 + 1);
    let expected = OffsetCommitResponse {
        topics: vec![TopicPartitionErrors {
            name: "t".into(),
            partitions: vec![
                PartitionError { partition_index: 0, error_code: errors::ILLEGAL_GENERATION },
                PartitionError { partition_index: 1, error_code: errors::ILLEGAL_GENERATION },
            ],
        }],
    };
    assert_eq!(cmds, vec![Command::Reply(7, Response::OffsetCommit(expected))]);
}

fn sync_error(code: i16) -> SyncGroupResponse {
    SyncGroupResponse { error_code: code, protocol_type: None, protocol_name: None, assignment: Bytes::new() }
}

#[test]
fn leave_group_batched_by_member_and_instance_id() {
    let mut c = coordinator(config());
    // a, b dynamic; s static.
    assert_eq!(c.join_group(join_req(5, "g", "", Some("is")), 1, T0), vec![]);
    assert_eq!(c.join_group(join_req(3, "g", "", None), 2, T0), vec![]);
    assert_eq!(c.join_group(join_req(3, "g", "", None), 3, T0), vec![]);
    let cmds = tick_all(&mut c, T0);
    let ids: Vec<String> = cmds.iter().map(|cmd| join_resp(cmd).1.member_id.clone()).collect();
    let (s, a, b) = (&ids[0], &ids[1], &ids[2]);
    for id in [a, b] {
        assert_eq!(c.sync_group(sync_req("g", id, 1, vec![]), 9, T0), vec![]);
    }
    let cmds = c.sync_group(sync_req("g", s, 1, vec![]), 9, T0);
    assert_eq!(c.append_completed(append_token(&cmds), Ok(()), T0).len(), 3);

    let leave = LeaveGroupRequest {
        group_id: "g".into(),
        members: vec![
            LeaveMember { member_id: a.clone(), group_instance_id: None },
            LeaveMember { member_id: String::new(), group_instance_id: Some("is".into()) },
            LeaveMember { member_id: "ghost".into(), group_instance_id: None },
        ],
    };
    let cmds = c.leave_group(leave, 20, T0 + 10);
    let expected = LeaveGroupResponse {
        error_code: errors::NONE,
        members: vec![
            LeaveMemberResponse { member_id: a.clone(), group_instance_id: None, error_code: errors::NONE },
            LeaveMemberResponse {
                member_id: String::new(),
                group_instance_id: Some("is".into()),
                error_code: errors::NONE,
            },
            LeaveMemberResponse {
                member_id: "ghost".into(),
                group_instance_id: None,
                error_code: errors::UNKNOWN_MEMBER_ID,
            },
        ],
    };
    assert_eq!(cmds, vec![Command::Reply(20, Response::LeaveGroup(expected))]);
    assert_eq!(c.group_state("g"), Some(GroupState::PreparingRebalance));
    // The remaining member rejoins and forms generation 2 alone.
    let cmds = c.join_group(join_req(3, "g", b, None), 21, T0 + 20);
    assert_eq!(cmds, vec![Command::Reply(21, Response::JoinGroup(join_ok(2, b, b, vec![member(b, None)])))]);

    // v0-v2 style: one member; the last one leaving empties the group, which is stored.
    let leave = LeaveGroupRequest {
        group_id: "g".into(),
        members: vec![LeaveMember { member_id: b.clone(), group_instance_id: None }],
    };
    let cmds = c.leave_group(leave, 22, T0 + 30);
    assert!(matches!(cmds[0], Command::Append { .. }), "{cmds:?}");
    match &cmds[1] {
        Command::Reply(22, Response::LeaveGroup(r)) => assert_eq!(r.legacy_error_code(), errors::NONE),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.group_state("g"), Some(GroupState::Empty));
}

#[test]
fn leader_leaving_during_completing_rebalance_answers_waiting_syncs() {
    let mut c = coordinator(config());
    let (a, b) = two_members_joined(&mut c, None);
    assert_eq!(c.sync_group(sync_req("g", &b, 1, vec![]), 3, T0), vec![]);
    let leave = LeaveGroupRequest {
        group_id: "g".into(),
        members: vec![LeaveMember { member_id: a, group_instance_id: None }],
    };
    let cmds = c.leave_group(leave, 4, T0 + 1);
    assert_eq!(cmds[0], Command::Reply(3, Response::SyncGroup(sync_error(errors::REBALANCE_IN_PROGRESS))));
    assert_eq!(cmds.len(), 2);
}

#[test]
fn requests_for_partitions_not_loaded() {
    let mut c = GroupCoordinator::with_seed(config(), 1);
    let cmds = c.join_group(join_req(4, "g", "", None), 1, T0);
    assert_eq!(join_resp(&cmds[0]).1.error_code, errors::NOT_COORDINATOR);
    c.begin_loading(c.partition_for("g"));
    let cmds = c.join_group(join_req(4, "g", "", None), 1, T0);
    assert_eq!(join_resp(&cmds[0]).1.error_code, errors::COORDINATOR_LOAD_IN_PROGRESS);
    // SyncGroup turns a load in progress into REBALANCE_IN_PROGRESS, Heartbeat into NONE.
    let cmds = c.sync_group(sync_req("g", "m", 1, vec![]), 2, T0);
    assert_eq!(sync_resp(&cmds[0]).1.error_code, errors::REBALANCE_IN_PROGRESS);
    assert_eq!(c.heartbeat(&heartbeat_req("g", "m", 1), T0).error_code, errors::NONE);
    assert_eq!(c.list_groups(&ListGroupsRequest::default()).error_code, errors::COORDINATOR_LOAD_IN_PROGRESS);
    let cmds = c.join_group(join_req(4, "", "", None), 1, T0);
    assert_eq!(join_resp(&cmds[0]).1.error_code, errors::INVALID_GROUP_ID);
}

#[test]
fn session_timeout_out_of_bounds_is_rejected() {
    let mut c = coordinator(config());
    let mut req = join_req(4, "g", "", None);
    req.session_timeout_ms = 5999;
    let cmds = c.join_group(req, 1, T0);
    assert_eq!(join_resp(&cmds[0]).1.error_code, errors::INVALID_SESSION_TIMEOUT);
}

#[test]
fn group_max_size_is_enforced() {
    let mut c = coordinator(GroupConfig { group_max_size: 1, ..config() });
    assert_eq!(c.join_group(join_req(3, "g", "", None), 1, T0), vec![]);
    let cmds = c.join_group(join_req(3, "g", "", None), 2, T0);
    assert_eq!(cmds, vec![Command::Reply(2, Response::JoinGroup(join_error(errors::GROUP_MAX_SIZE_REACHED)))]);
}

#[test]
fn unload_answers_parked_requests() {
    let mut c = coordinator(config());
    assert_eq!(c.join_group(join_req(3, "g", "", None), 1, T0), vec![]);
    let cmds = c.unload_partition(c.partition_for("g"));
    let (reply_to, r) = join_resp(&cmds[0]);
    assert_eq!((reply_to, r.error_code), (1, errors::NOT_COORDINATOR));
    assert_eq!(c.group_state("g"), None);
    assert_eq!(c.next_deadline(), Some(T0 + c.config().offsets_retention_check_interval_ms));
}

#[test]
/// Twenty rebalances of a 10-member group with 1,000-partition assignments: every generation
/// completes. (Speed is measured by `tern bench`, not asserted here.)
fn ten_members_over_a_thousand_partitions_rebalance_repeatedly() {
    let mut c = coordinator(config());
    let topics: Vec<String> = (0..10).map(|i| format!("topic-{i}")).collect();
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    for round in 0..20 {
        let now = T0 + round * 1000;
        let mut ids = Vec::new();
        if round == 0 {
            for i in 0..10 {
                let mut req = join_req(3, "big", "", None);
                req.protocols[0].metadata = subscription(&topic_refs);
                assert_eq!(c.join_group(req, i, now), vec![]);
            }
            for cmd in tick_all(&mut c, now) {
                ids.push(join_resp(&cmd).1.member_id.clone());
            }
        } else {
            let members = c.describe_groups(&DescribeGroupsRequest { version: 5, groups: vec!["big".into()] });
            let existing: Vec<String> = members.groups[0].members.iter().map(|m| m.member_id.clone()).collect();
            for (i, id) in existing.iter().enumerate() {
                let mut req = join_req(3, "big", id, None);
                req.protocols[0].metadata = subscription(&topic_refs);
                let cmds = c.join_group(req, i as u64, now);
                if i + 1 == existing.len() {
                    assert_eq!(cmds.len(), 10);
                    ids = cmds.iter().map(|cmd| join_resp(cmd).1.member_id.clone()).collect();
                }
            }
        }
        let generation = round as i32 + 1;
        // 10 topics x 100 partitions, 100 partitions per member.
        let assignments: Vec<(String, Bytes)> =
            ids.iter().enumerate().map(|(i, id)| (id.clone(), Bytes::from(vec![i as u8; 100 * 8]))).collect();
        for id in &ids[1..] {
            assert_eq!(c.sync_group(sync_req("big", id, generation, vec![]), 50, now), vec![]);
        }
        let cmds = c.sync_group(sync_req("big", &ids[0], generation, assignments), 51, now);
        assert_eq!(c.append_completed(append_token(&cmds), Ok(()), now).len(), 10);
    }
    assert_eq!(c.group_state("big"), Some(tern_group::GroupState::Stable));
}

#[test]
fn a_repeated_join_supersedes_the_parked_one() {
    let mut c = coordinator(config());
    let (ids, _) = stable_group(&mut c, "g", 2, T0);
    let (a, b) = (&ids[0], &ids[1]);
    assert_eq!(c.join_group(join_req(3, "g", a, None), 1, T0 + 1), vec![]);
    // The client timed out and retried: the first request is answered, the second waits.
    let cmds = c.join_group(join_req(3, "g", a, None), 2, T0 + 2);
    assert_eq!(
        cmds,
        vec![Command::Reply(
            1,
            Response::JoinGroup(JoinGroupResponse {
                member_id: a.clone(),
                ..join_error(errors::REBALANCE_IN_PROGRESS)
            })
        )]
    );
    let cmds = c.join_group(join_req(3, "g", b, None), 3, T0 + 3);
    assert_eq!(cmds.len(), 2);
    assert_eq!(join_resp(&cmds[0]).0, 2);
    assert_eq!(join_resp(&cmds[1]).0, 3);
}

/// A member whose generation completed alone (initial delay 0) and who is waiting to sync when
/// others join keeps its membership: the next generation waits for it to rejoin.
#[test]
fn member_awaiting_sync_is_kept_when_others_join() {
    let mut cfg = config();
    cfg.group_initial_rebalance_delay_ms = 0;
    let mut c = coordinator(cfg);
    let mut ids = Vec::new();
    for i in 0..3u64 {
        let cmds = c.join_group(join_req(5, "g", "", None), 100 + i, T0);
        ids.push(join_resp(&cmds[0]).1.member_id.clone());
    }
    assert!(c.join_group(join_req(5, "g", &ids[0], None), 0, T0).is_empty());
    let gen1 = tick_all(&mut c, T0);
    assert_eq!(join_resp(&gen1[0]).1.members.len(), 1, "generation 1 has only the first member");
    // The others join while the first is about to sync.
    assert!(c.join_group(join_req(5, "g", &ids[1], None), 1, T0 + 1).is_empty());
    let cmds = c.join_group(join_req(5, "g", &ids[2], None), 2, T0 + 1);
    assert!(cmds.is_empty(), "generation 2 must wait for member 0 to rejoin: {cmds:?}");
    let cmds = tick_all(&mut c, T0 + 2);
    assert!(cmds.is_empty(), "generation 2 must wait for member 0 to rejoin: {cmds:?}");
    // Member 0 learns of the rebalance from SyncGroup and rejoins: everyone gets generation 2.
    let sync = c.sync_group(sync_req("g", &ids[0], 1, vec![]), 3, T0 + 3);
    assert_eq!(sync_resp(&sync[0]).1.error_code, tern_group::errors::REBALANCE_IN_PROGRESS);
    let cmds = c.join_group(join_req(5, "g", &ids[0], None), 4, T0 + 3);
    let cmds = if cmds.is_empty() { tick_all(&mut c, T0 + 3) } else { cmds };
    assert_eq!(cmds.len(), 3);
    assert!(cmds.iter().all(|cmd| join_resp(cmd).1.generation_id == 2));
}

/// Groups of other protocol types (Kafka Connect's "connect") are served the same way; a member
/// of another type is refused.
#[test]
fn groups_of_any_protocol_type_are_served_generically() {
    let mut c = coordinator(config());
    let connect_join = |member_id: &str| {
        let mut req = join_req(3, "connect-cluster", member_id, None);
        req.protocol_type = "connect".into();
        req.protocols = vec![JoinProtocol { name: "sessioned".into(), metadata: Bytes::from_static(b"worker-config") }];
        req
    };
    assert!(c.join_group(connect_join(""), 1, T0).is_empty());
    let cmds = tick_all(&mut c, T0);
    let (_, joined) = join_resp(&cmds[0]);
    assert_eq!((joined.error_code, joined.generation_id), (errors::NONE, 1));
    assert_eq!(joined.protocol_name.as_deref(), Some("sessioned"));
    assert_eq!(joined.members[0].metadata, Bytes::from_static(b"worker-config"));
    let leader = joined.member_id.clone();
    let assignment = Bytes::from_static(b"connectors: a, b");
    let mut sync = sync_req("connect-cluster", &leader, 1, vec![(leader.clone(), assignment.clone())]);
    sync.protocol_type = Some("connect".into());
    sync.protocol_name = Some("sessioned".into());
    let cmds = c.sync_group(sync, 2, T0);
    let cmds = c.append_completed(append_token(&cmds), Ok(()), T0);
    assert_eq!(sync_resp(&cmds[0]).1.assignment, assignment);
    assert_eq!(c.group_state("connect-cluster"), Some(GroupState::Stable));
    // A consumer cannot join a connect group.
    let cmds = c.join_group(join_req(3, "connect-cluster", "", None), 3, T0 + 1);
    assert_eq!(join_resp(&cmds[0]).1.error_code, errors::INCONSISTENT_GROUP_PROTOCOL);
}
