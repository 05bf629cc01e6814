//! OffsetCommit / OffsetFetch / OffsetDelete, DeleteGroups, List/DescribeGroups, offset
//! expiry and loading from `__consumer_offsets`, asserting the exact commands returned.

mod common;

use bytes::Bytes;
use common::*;
use tern_group::records::{self, OffsetCommitValue, OffsetsRecordKey, OffsetsRecordValue};
use tern_group::*;

fn offset_record(group: &str, topic: &str, partition: i32, offset: i64, commit_ts: i64) -> (Bytes, Option<Bytes>) {
    let key =
        records::encode_key(&OffsetsRecordKey::OffsetCommit { group: group.into(), topic: topic.into(), partition });
    let value = OffsetCommitValue {
        offset,
        leader_epoch: 3,
        metadata: "meta".into(),
        commit_timestamp: commit_ts,
        expire_timestamp: -1,
    };
    (key, Some(records::encode_value(&OffsetsRecordValue::OffsetCommit(value), 3).unwrap()))
}

fn tombstone(group: &str, topic: &str, partition: i32) -> (Bytes, Option<Bytes>) {
    (records::encode_key(&OffsetsRecordKey::OffsetCommit { group: group.into(), topic: topic.into(), partition }), None)
}

fn group_tombstone(group: &str) -> (Bytes, Option<Bytes>) {
    (records::encode_key(&OffsetsRecordKey::GroupMetadata { group: group.into() }), None)
}

fn commit_ok(topic: &str, partitions: &[i32], code: i16) -> Response {
    Response::OffsetCommit(OffsetCommitResponse {
        topics: vec![TopicPartitionErrors {
            name: topic.into(),
            partitions: partitions.iter().map(|&p| PartitionError { partition_index: p, error_code: code }).collect(),
        }],
    })
}

fn fetched(partition: i32, offset: i64, epoch: i32, metadata: &str, code: i16) -> OffsetFetchPartition {
    OffsetFetchPartition {
        partition_index: partition,
        committed_offset: offset,
        committed_leader_epoch: epoch,
        metadata: metadata.into(),
        error_code: code,
    }
}

fn fetch_one(
    c: &GroupCoordinator,
    group: &str,
    topic: &str,
    partition: i32,
    require_stable: bool,
) -> OffsetFetchPartition {
    let mut req = fetch_req(group, Some(&[(topic, &[partition])]));
    req.require_stable = require_stable;
    let r = c.offset_fetch(&req);
    assert_eq!(r.error_code, errors::NONE);
    r.topics[0].partitions[0].clone()
}

#[test]
fn commit_is_visible_only_after_its_append_succeeds() {
    let mut c = coordinator(config());
    let (ids, _) = stable_group(&mut c, "g", 1, T0);
    let a = &ids[0];
    let p = c.partition_for("g");

    let cmds = c.offset_commit(commit_req("g", a, 1, &[("t", 0, 42), ("t", 1, 43)]), 7, T0 + 100);
    let token = append_token(&cmds);
    assert_eq!(
        cmds,
        vec![Command::Append {
            partition: p,
            records: vec![offset_record("g", "t", 0, 42, T0 + 100), offset_record("g", "t", 1, 43, T0 + 100)],
            token,
        }]
    );
    assert_eq!(fetch_one(&c, "g", "t", 0, false), fetched(0, -1, -1, "", errors::NONE));
    assert_eq!(fetch_one(&c, "g", "t", 0, true), fetched(0, -1, -1, "", errors::UNSTABLE_OFFSET_COMMIT));

    let cmds = c.append_completed(token, Ok(()), T0 + 110);
    assert_eq!(cmds, vec![Command::Reply(7, commit_ok("t", &[0, 1], errors::NONE))]);
    assert_eq!(fetch_one(&c, "g", "t", 0, true), fetched(0, 42, 3, "meta", errors::NONE));
    assert_eq!(fetch_one(&c, "g", "t", 1, false), fetched(1, 43, 3, "meta", errors::NONE));
    assert_eq!(fetch_one(&c, "g", "t", 2, false), fetched(2, -1, -1, "", errors::NONE));

    // A failed append: the client gets the mapped error, the old offset stays.
    let cmds = c.offset_commit(commit_req("g", a, 1, &[("t", 0, 50)]), 8, T0 + 200);
    let cmds = c.append_completed(append_token(&cmds), Err(errors::NOT_LEADER_OR_FOLLOWER), T0 + 210);
    assert_eq!(cmds, vec![Command::Reply(8, commit_ok("t", &[0], errors::NOT_COORDINATOR))]);
    assert_eq!(fetch_one(&c, "g", "t", 0, true), fetched(0, 42, 3, "meta", errors::NONE));
    let cmds = c.offset_commit(commit_req("g", a, 1, &[("t", 0, 51)]), 9, T0 + 300);
    let cmds = c.append_completed(append_token(&cmds), Err(errors::UNKNOWN_TOPIC_OR_PARTITION), T0 + 310);
    assert_eq!(cmds, vec![Command::Reply(9, commit_ok("t", &[0], errors::COORDINATOR_NOT_AVAILABLE))]);
    let cmds = c.offset_commit(commit_req("g", a, 1, &[("t", 0, 52)]), 10, T0 + 400);
    let cmds = c.append_completed(append_token(&cmds), Err(errors::MESSAGE_TOO_LARGE), T0 + 410);
    assert_eq!(cmds, vec![Command::Reply(10, commit_ok("t", &[0], errors::INVALID_COMMIT_OFFSET_SIZE))]);
    assert_eq!(fetch_one(&c, "g", "t", 0, false).committed_offset, 42);
}

#[test]
fn later_append_wins_even_if_completions_arrive_out_of_order() {
    let mut c = coordinator(config());
    let first = c.offset_commit(commit_req("s", "", -1, &[("t", 0, 1)]), 1, T0);
    let second = c.offset_commit(commit_req("s", "", -1, &[("t", 0, 2)]), 2, T0 + 1);
    c.append_completed(append_token(&second), Ok(()), T0 + 2);
    assert_eq!(fetch_one(&c, "s", "t", 0, true).error_code, errors::UNSTABLE_OFFSET_COMMIT);
    c.append_completed(append_token(&first), Ok(()), T0 + 3);
    assert_eq!(fetch_one(&c, "s", "t", 0, true), fetched(0, 2, 3, "meta", errors::NONE));
}

#[test]
fn oversized_metadata_is_rejected_per_partition() {
    let mut c = coordinator(GroupConfig { offset_metadata_max_bytes: 4, ..config() });
    let mut req = commit_req("s", "", -1, &[("t", 0, 1), ("t", 1, 1)]);
    req.topics[0].partitions[1].committed_metadata = Some("too long".into());
    let cmds = c.offset_commit(req, 1, T0);
    let token = append_token(&cmds);
    let cmds = c.append_completed(token, Ok(()), T0);
    let expected = Response::OffsetCommit(OffsetCommitResponse {
        topics: vec![TopicPartitionErrors {
            name: "t".into(),
            partitions: vec![
                PartitionError { partition_index: 0, error_code: errors::NONE },
                PartitionError { partition_index: 1, error_code: errors::OFFSET_METADATA_TOO_LARGE },
            ],
        }],
    });
    assert_eq!(cmds, vec![Command::Reply(1, expected)]);
}

#[test]
fn standalone_commit_to_an_empty_group() {
    let mut c = coordinator(config());
    let cmds = c.offset_commit(commit_req("simple", "", -1, &[("t", 3, 7)]), 1, T0);
    let token = append_token(&cmds);
    assert_eq!(c.group_state("simple"), Some(GroupState::Empty));
    assert_eq!(c.append_completed(token, Ok(()), T0), vec![Command::Reply(1, commit_ok("t", &[3], errors::NONE))]);
    // All partitions of the group when no topics are named.
    let r = c.offset_fetch(&fetch_req("simple", None));
    assert_eq!(
        r,
        OffsetFetchResponse {
            error_code: errors::NONE,
            topics: vec![OffsetFetchTopic {
                name: "t".into(),
                partitions: vec![fetched(3, 7, 3, "meta", errors::NONE)]
            }]
        }
    );
    // A member-less commit with a generation is refused for an unknown group.
    let cmds = c.offset_commit(commit_req("other", "m", 3, &[("t", 0, 1)]), 2, T0);
    assert_eq!(cmds, vec![Command::Reply(2, commit_ok("t", &[0], errors::ILLEGAL_GENERATION))]);
    // A group with members refuses member-less commits.
    let (_ids, _) = stable_group(&mut c, "g", 1, T0);
    let cmds = c.offset_commit(commit_req("g", "", -1, &[("t", 0, 1)]), 3, T0);
    assert_eq!(cmds, vec![Command::Reply(3, commit_ok("t", &[0], errors::UNKNOWN_MEMBER_ID))]);
    // Unknown group: nothing committed.
    assert_eq!(c.offset_fetch(&fetch_req("nobody", None)).topics, vec![]);
}

#[test]
fn commit_during_completing_rebalance_is_refused() {
    let mut c = coordinator(config());
    assert_eq!(c.join_group(join_req(3, "g", "", None), 1, T0), vec![]);
    let cmds = tick_all(&mut c, T0);
    let a = join_resp(&cmds[0]).1.member_id.clone();
    let cmds = c.offset_commit(commit_req("g", &a, 1, &[("t", 0, 1)]), 2, T0);
    assert_eq!(cmds, vec![Command::Reply(2, commit_ok("t", &[0], errors::REBALANCE_IN_PROGRESS))]);
}

#[test]
fn delete_groups_only_deletes_empty_groups() {
    let mut c = coordinator(config());
    stable_group(&mut c, "busy", 1, T0);
    let cmds = c.offset_commit(commit_req("idle", "", -1, &[("t", 0, 1), ("u", 2, 5)]), 1, T0);
    c.append_completed(append_token(&cmds), Ok(()), T0);

    let req = DeleteGroupsRequest { groups: vec!["busy".into(), "idle".into(), "nobody".into()] };
    let cmds = c.delete_groups(req, 9, T0 + 1);
    let token = append_token(&cmds);
    // Generation 0 (offsets only): no metadata tombstone.
    assert_eq!(
        cmds,
        vec![Command::Append {
            partition: c.partition_for("idle"),
            records: vec![tombstone("idle", "t", 0), tombstone("idle", "u", 2)],
            token,
        }]
    );
    assert_eq!(c.group_state("idle"), None);
    let cmds = c.append_completed(token, Ok(()), T0 + 2);
    let expected = DeleteGroupsResponse {
        results: vec![
            DeleteGroupResult { group_id: "busy".into(), error_code: errors::NON_EMPTY_GROUP },
            DeleteGroupResult { group_id: "idle".into(), error_code: errors::NONE },
            DeleteGroupResult { group_id: "nobody".into(), error_code: errors::GROUP_ID_NOT_FOUND },
        ],
    };
    assert_eq!(cmds, vec![Command::Reply(9, Response::DeleteGroups(expected))]);
    assert_eq!(c.offset_fetch(&fetch_req("idle", None)).topics, vec![]);
}

#[test]
fn deleting_a_group_that_had_members_writes_a_metadata_tombstone() {
    let mut c = coordinator(config());
    let (ids, _) = stable_group(&mut c, "g", 1, T0);
    let leave = LeaveGroupRequest {
        group_id: "g".into(),
        members: vec![LeaveMember { member_id: ids[0].clone(), group_instance_id: None }],
    };
    let cmds = c.leave_group(leave, 1, T0 + 1);
    c.append_completed(append_token(&cmds), Ok(()), T0 + 1);
    assert_eq!(c.group_state("g"), Some(GroupState::Empty));
    let cmds = c.delete_groups(DeleteGroupsRequest { groups: vec!["g".into()] }, 2, T0 + 2);
    let token = append_token(&cmds);
    assert_eq!(
        cmds,
        vec![Command::Append { partition: c.partition_for("g"), records: vec![group_tombstone("g")], token }]
    );
    // A failed append is reported for the group.
    let cmds = c.append_completed(token, Err(errors::NOT_LEADER_OR_FOLLOWER), T0 + 3);
    let expected = DeleteGroupsResponse {
        results: vec![DeleteGroupResult { group_id: "g".into(), error_code: errors::NOT_COORDINATOR }],
    };
    assert_eq!(cmds, vec![Command::Reply(2, Response::DeleteGroups(expected))]);
}

#[test]
fn offset_delete_respects_subscriptions() {
    let mut c = coordinator(config());
    let (ids, _) = stable_group(&mut c, "g", 1, T0); // subscribed to "t"
    let cmds = c.offset_commit(commit_req("g", &ids[0], 1, &[("t", 0, 1), ("old", 0, 9)]), 1, T0);
    c.append_completed(append_token(&cmds), Ok(()), T0);
    let req = OffsetDeleteRequest {
        group_id: "g".into(),
        topics: vec![
            TopicPartitions { name: "t".into(), partitions: vec![0] },
            TopicPartitions { name: "old".into(), partitions: vec![0] },
        ],
    };
    let cmds = c.offset_delete(req, 2, T0 + 1);
    let token = append_token(&cmds);
    assert_eq!(
        cmds,
        vec![Command::Append { partition: c.partition_for("g"), records: vec![tombstone("g", "old", 0)], token }]
    );
    let cmds = c.append_completed(token, Ok(()), T0 + 2);
    let expected = OffsetDeleteResponse {
        error_code: errors::NONE,
        topics: vec![
            TopicPartitionErrors {
                name: "t".into(),
                partitions: vec![PartitionError { partition_index: 0, error_code: errors::GROUP_SUBSCRIBED_TO_TOPIC }],
            },
            TopicPartitionErrors {
                name: "old".into(),
                partitions: vec![PartitionError { partition_index: 0, error_code: errors::NONE }],
            },
        ],
    };
    assert_eq!(cmds, vec![Command::Reply(2, Response::OffsetDelete(expected))]);
    assert_eq!(fetch_one(&c, "g", "old", 0, false).committed_offset, -1);
    assert_eq!(fetch_one(&c, "g", "t", 0, false).committed_offset, 1);

    let req = OffsetDeleteRequest { group_id: "nobody".into(), topics: vec![] };
    let cmds = c.offset_delete(req, 3, T0);
    let expected = OffsetDeleteResponse { error_code: errors::GROUP_ID_NOT_FOUND, topics: vec![] };
    assert_eq!(cmds, vec![Command::Reply(3, Response::OffsetDelete(expected))]);
}

#[test]
fn list_and_describe() {
    let mut c = coordinator(config());
    let (ids, assignments) = stable_group(&mut c, "g", 2, T0);
    let cmds = c.offset_commit(commit_req("simple", "", -1, &[("t", 0, 1)]), 1, T0);
    c.append_completed(append_token(&cmds), Ok(()), T0);

    let all = c.list_groups(&ListGroupsRequest::default());
    let listed = |id: &str, protocol_type: &str, state: &str| ListedGroup {
        group_id: id.into(),
        protocol_type: protocol_type.into(),
        group_state: state.into(),
        group_type: "classic".into(),
    };
    assert_eq!(
        all,
        ListGroupsResponse {
            error_code: errors::NONE,
            groups: vec![listed("g", "consumer", "Stable"), listed("simple", "", "Empty")]
        }
    );
    let stable_only = ListGroupsRequest { states_filter: vec!["stable".into()], types_filter: vec![] };
    assert_eq!(c.list_groups(&stable_only).groups, vec![listed("g", "consumer", "Stable")]);
    let consumer_type = ListGroupsRequest { states_filter: vec![], types_filter: vec!["consumer".into()] };
    assert_eq!(c.list_groups(&consumer_type).groups, vec![]);
    let classic_type = ListGroupsRequest { states_filter: vec![], types_filter: vec!["Classic".into()] };
    assert_eq!(c.list_groups(&classic_type).groups.len(), 2);

    let r = c.describe_groups(&DescribeGroupsRequest { version: 5, groups: vec!["g".into(), "missing".into()] });
    let described_member = |i: usize| DescribedMember {
        member_id: ids[i].clone(),
        group_instance_id: None,
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        member_metadata: subscription(&["t"]),
        member_assignment: assignments[i].clone(),
    };
    assert_eq!(
        r.groups,
        vec![
            DescribedGroup {
                error_code: errors::NONE,
                error_message: None,
                group_id: "g".into(),
                group_state: "Stable".into(),
                protocol_type: "consumer".into(),
                protocol_data: "range".into(),
                members: vec![described_member(0), described_member(1)],
            },
            DescribedGroup {
                error_code: errors::NONE,
                error_message: None,
                group_id: "missing".into(),
                group_state: "Dead".into(),
                protocol_type: String::new(),
                protocol_data: String::new(),
                members: vec![],
            },
        ]
    );
    let r = c.describe_groups(&DescribeGroupsRequest { version: 6, groups: vec!["missing".into()] });
    assert_eq!(r.groups[0].error_code, errors::GROUP_ID_NOT_FOUND);
    assert_eq!(r.groups[0].group_state, "Dead");

    // During a rebalance members are listed without metadata or assignment.
    assert_eq!(c.join_group(join_req(3, "g", &ids[0], None), 5, T0 + 1), vec![]);
    let r = c.describe_groups(&DescribeGroupsRequest { version: 5, groups: vec!["g".into()] });
    assert_eq!(r.groups[0].group_state, "PreparingRebalance");
    assert_eq!(r.groups[0].protocol_data, "");
    assert!(r.groups[0].members.iter().all(|m| m.member_metadata.is_empty() && m.member_assignment.is_empty()));
}

fn expiry_config() -> GroupConfig {
    GroupConfig { offsets_retention_minutes: 1, offsets_retention_check_interval_ms: 1000, ..config() }
}

#[test]
fn offsets_of_a_standalone_group_expire_after_retention() {
    let mut c = coordinator(expiry_config());
    let cmds = c.offset_commit(commit_req("simple", "", -1, &[("t", 0, 1)]), 1, T0 + 500);
    c.append_completed(append_token(&cmds), Ok(()), T0 + 500);
    // Checks run every second; the offset is 60 s old at T0 + 60_500.
    assert_eq!(tick_all(&mut c, T0 + 60_000), vec![]);
    assert_eq!(c.next_deadline(), Some(T0 + 61_000));
    let cmds = tick_all(&mut c, T0 + 61_000);
    let token = append_token(&cmds);
    assert_eq!(
        cmds,
        vec![Command::Append {
            partition: c.partition_for("simple"),
            records: vec![tombstone("simple", "t", 0)],
            token
        }]
    );
    assert_eq!(c.group_state("simple"), None);
}

#[test]
fn offsets_of_an_empty_consumer_group_expire_from_when_it_emptied() {
    let mut c = coordinator(expiry_config());
    let (ids, _) = stable_group(&mut c, "g", 1, T0);
    let cmds = c.offset_commit(commit_req("g", &ids[0], 1, &[("t", 0, 1)]), 1, T0);
    c.append_completed(append_token(&cmds), Ok(()), T0);
    // Members keep their offsets alive: at T0 + 60 s the group is Stable and subscribed to "t".
    for s in 1..=60 {
        c.heartbeat(&heartbeat_req("g", &ids[0], 1), T0 + s * 1000);
        assert_eq!(tick_all(&mut c, T0 + s * 1000), vec![]);
    }
    let leave = LeaveGroupRequest {
        group_id: "g".into(),
        members: vec![LeaveMember { member_id: ids[0].clone(), group_instance_id: None }],
    };
    let left_at = T0 + 60_500;
    let cmds = c.leave_group(leave, 2, left_at);
    c.append_completed(append_token(&cmds), Ok(()), left_at);
    assert_eq!(c.group_state("g"), Some(GroupState::Empty));
    // Retention counts from when the group became Empty, not from the commit.
    assert_eq!(tick_all(&mut c, T0 + 120_000), vec![]);
    let cmds = tick_all(&mut c, T0 + 121_000);
    let token = append_token(&cmds);
    assert_eq!(
        cmds,
        vec![Command::Append {
            partition: c.partition_for("g"),
            records: vec![tombstone("g", "t", 0), group_tombstone("g")],
            token,
        }]
    );
    assert_eq!(c.group_state("g"), None);
}

#[test]
fn load_replays_records_and_tombstones() {
    let p = coordinator(config()).partition_for("g");
    let assignments = [Bytes::from_static(b"one"), Bytes::from_static(b"two")];
    // Capture everything the coordinator appends to the group's partition, as a log would.
    let mut log: Vec<(Bytes, Option<Bytes>)> = Vec::new();
    let run = |c: &mut GroupCoordinator, cmds: Vec<Command>, log: &mut Vec<(Bytes, Option<Bytes>)>| {
        for cmd in cmds {
            if let Command::Append { partition, records, token } = cmd {
                if partition == p {
                    log.extend(records);
                }
                c.append_completed(token, Ok(()), T0);
            }
        }
    };
    let mut c2 = coordinator(config());
    for i in 0..2 {
        assert_eq!(c2.join_group(join_req(3, "g", "", None), i, T0), vec![]);
    }
    let cmds = tick_all(&mut c2, T0);
    let g_ids: Vec<String> = cmds.iter().map(|cmd| join_resp(cmd).1.member_id.clone()).collect();
    assert_eq!(c2.sync_group(sync_req("g", &g_ids[1], 1, vec![]), 10, T0), vec![]);
    let sync = sync_req("g", &g_ids[0], 1, g_ids.iter().cloned().zip(assignments.iter().cloned()).collect());
    let cmds = c2.sync_group(sync, 11, T0);
    run(&mut c2, cmds, &mut log);
    let cmds = c2.offset_commit(commit_req("g", &g_ids[0], 1, &[("t", 0, 10), ("t", 1, 11), ("u", 0, 12)]), 12, T0);
    run(&mut c2, cmds, &mut log);
    // Offsets of a group in the same partition that is later deleted.
    let other = (0..1000).map(|i| format!("other-{i}")).find(|g| c2.partition_for(g) == p).unwrap();
    let cmds = c2.offset_commit(commit_req(&other, "", -1, &[("t", 0, 1)]), 13, T0);
    run(&mut c2, cmds, &mut log);
    let cmds = c2.delete_groups(DeleteGroupsRequest { groups: vec![other.clone()] }, 14, T0);
    run(&mut c2, cmds, &mut log);
    let del = OffsetDeleteRequest {
        group_id: "g".into(),
        topics: vec![TopicPartitions { name: "u".into(), partitions: vec![0] }],
    };
    let cmds = c2.offset_delete(del, 15, T0);
    run(&mut c2, cmds, &mut log);
    // Something this crate does not know (a KIP-848 record, key version 3) is skipped.
    log.push((Bytes::from_static(&[0, 3, 0, 1, b'x']), Some(Bytes::from_static(&[0, 0]))));

    let mut fresh = GroupCoordinator::with_seed(config(), 7);
    fresh.begin_loading(p);
    let summary = fresh.load_partition(p, log.into_iter(), T0 + 5000);
    assert_eq!(summary.groups, 1);
    assert_eq!(summary.offsets, 2);
    assert_eq!(summary.skipped_unknown, 1);
    assert_eq!(summary.skipped_corrupt, 0);

    let describe = |c: &GroupCoordinator| {
        c.describe_groups(&DescribeGroupsRequest { version: 5, groups: vec!["g".into(), other.clone()] })
    };
    assert_eq!(describe(&fresh), describe(&c2));
    assert_eq!(fresh.offset_fetch(&fetch_req("g", None)), c2.offset_fetch(&fetch_req("g", None)));
    assert_eq!(fresh.offset_fetch(&fetch_req(&other, None)).topics, vec![]);
    assert_eq!(fresh.group_state("g"), Some(GroupState::Stable));

    // Loaded members have fresh session timers: one heartbeats, the other times out.
    let session = SESSION as i64;
    assert_eq!(fresh.heartbeat(&heartbeat_req("g", &g_ids[0], 1), T0 + 5000 + session / 2).error_code, errors::NONE);
    assert_eq!(tick_all(&mut fresh, T0 + 5000 + session), vec![]);
    assert_eq!(fresh.group_state("g"), Some(GroupState::PreparingRebalance));
    let cmds = fresh.join_group(join_req(3, "g", &g_ids[0], None), 20, T0 + 5000 + session);
    assert_eq!(join_resp(&cmds[0]).1.generation_id, 2);
}

#[test]
fn load_of_kafka_style_records() {
    // Offsets only (a simple consumer), then an offset tombstone, then a re-commit.
    let mut c = GroupCoordinator::with_seed(config(), 1);
    let p = c.partition_for("s");
    let log = vec![
        offset_record("s", "t", 0, 5, T0),
        offset_record("s", "t", 1, 6, T0),
        tombstone("s", "t", 0),
        offset_record("s", "t", 1, 7, T0 + 1),
        (Bytes::from_static(&[0, 1, 0]), Some(Bytes::from_static(&[1]))), // truncated key
    ];
    let summary = c.load_partition(p, log.into_iter(), T0);
    assert_eq!((summary.groups, summary.offsets, summary.skipped_corrupt), (1, 1, 1));
    assert_eq!(fetch_one(&c, "s", "t", 0, false).committed_offset, -1);
    assert_eq!(fetch_one(&c, "s", "t", 1, false).committed_offset, 7);
    assert_eq!(c.group_state("s"), Some(GroupState::Empty));
}

#[test]
/// 50,000 commits each acknowledged after its append; the last one wins. (Speed is measured by
/// `tern bench`, not asserted here.)
fn fifty_thousand_commits_all_acknowledged() {
    let mut c = coordinator(config());
    let (ids, _) = stable_group(&mut c, "g", 1, T0);
    let n = 50_000;
    for i in 0..n {
        let cmds = c.offset_commit(commit_req("g", &ids[0], 1, &[("topic", (i % 1000) as i32, i)]), i as u64, T0);
        let token = append_token(&cmds);
        let replies = c.append_completed(token, Ok(()), T0);
        assert_eq!(replies.len(), 1);
    }
    assert_eq!(fetch_one(&c, "g", "topic", 999, false).committed_offset, n - 1);
}

#[test]
fn retention_time_of_commit_v2_writes_an_expire_timestamp() {
    let mut c = coordinator(expiry_config());
    let mut req = commit_req("simple", "", -1, &[("t", 0, 9)]);
    req.version = 2;
    req.retention_time_ms = 5000;
    let cmds = c.offset_commit(req, 1, T0);
    let token = append_token(&cmds);
    let value = OffsetCommitValue {
        offset: 9,
        leader_epoch: 3,
        metadata: "meta".into(),
        commit_timestamp: T0,
        expire_timestamp: T0 + 5000,
    };
    let key = records::encode_key(&OffsetsRecordKey::OffsetCommit {
        group: "simple".into(),
        topic: "t".into(),
        partition: 0,
    });
    let value = records::encode_value(&OffsetsRecordValue::OffsetCommit(value), 1).unwrap();
    assert_eq!(
        cmds,
        vec![Command::Append { partition: c.partition_for("simple"), records: vec![(key, Some(value))], token }]
    );
    c.append_completed(token, Ok(()), T0);
    // The explicit expire timestamp wins over offsets.retention.minutes.
    assert_eq!(tick_all(&mut c, T0 + 4000), vec![]);
    let cmds = tick_all(&mut c, T0 + 5000);
    assert!(matches!(&cmds[..], [Command::Append { records, .. }] if records == &vec![tombstone("simple", "t", 0)]));
}
