//! Random sequences of requests, timer ticks and append completions: the coordinator never
//! panics, and every request is answered exactly once.

mod common;

use std::collections::HashMap;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use tern_group::*;

#[derive(Debug, Clone)]
enum Op {
    Join { group: u8, member: u8, version: i16, instance: Option<u8>, protocol: u8 },
    Sync { group: u8, member: u8, assign: bool, generation_off: i8 },
    Heartbeat { group: u8, member: u8 },
    Leave { group: u8, member: u8, by_instance: Option<u8> },
    Commit { group: u8, member: u8, partition: u8, simple: bool },
    Fetch { group: u8 },
    CompleteAppend { pick: u8, ok: bool },
    Advance { ms: u16 },
    DeleteGroup { group: u8 },
    OffsetDelete { group: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2u8, 0..6u8, 0..10i16, proptest::option::of(0..3u8), 0..3u8)
            .prop_map(|(group, member, version, instance, protocol)| Op::Join { group, member, version, instance, protocol }),
        3 => (0..2u8, 0..6u8, any::<bool>(), prop_oneof![8 => Just(0i8), 1 => Just(-1i8), 1 => Just(1i8)])
            .prop_map(|(group, member, assign, generation_off)| Op::Sync { group, member, assign, generation_off }),
        3 => (0..2u8, 0..6u8).prop_map(|(group, member)| Op::Heartbeat { group, member }),
        1 => (0..2u8, 0..6u8, proptest::option::of(0..3u8))
            .prop_map(|(group, member, by_instance)| Op::Leave { group, member, by_instance }),
        2 => (0..3u8, 0..6u8, 0..4u8, any::<bool>())
            .prop_map(|(group, member, partition, simple)| Op::Commit { group, member, partition, simple }),
        1 => (0..3u8).prop_map(|group| Op::Fetch { group }),
        3 => (any::<u8>(), any::<bool>()).prop_map(|(pick, ok)| Op::CompleteAppend { pick, ok }),
        3 => (0..40_000u16).prop_map(|ms| Op::Advance { ms }),
        1 => (0..3u8).prop_map(|group| Op::DeleteGroup { group }),
        1 => (0..3u8).prop_map(|group| Op::OffsetDelete { group }),
    ]
}

#[derive(Default)]
struct World {
    next_reply: ReplyTo,
    issued: Vec<ReplyTo>,
    answered: HashMap<ReplyTo, usize>,
    appends: Vec<AppendToken>,
    /// Member ids seen per group.
    members: HashMap<String, Vec<String>>,
    generations: HashMap<String, i32>,
    /// The group each JoinGroup was for, to learn ids and generations from late answers.
    join_groups: HashMap<ReplyTo, String>,
    leaders: HashMap<String, String>,
}

impl World {
    fn reply_to(&mut self) -> ReplyTo {
        self.next_reply += 1;
        self.issued.push(self.next_reply);
        self.next_reply
    }

    fn absorb(&mut self, cmds: Vec<Command>) {
        for cmd in cmds {
            match cmd {
                Command::Reply(r, response) => {
                    *self.answered.entry(r).or_default() += 1;
                    let group = self.join_groups.get(&r).cloned();
                    if let (Some(group), Response::JoinGroup(j)) = (group.as_deref(), &response) {
                        if !j.member_id.is_empty() {
                            let ids = self.members.entry(group.to_owned()).or_default();
                            if !ids.contains(&j.member_id) {
                                ids.push(j.member_id.clone());
                            }
                        }
                        if j.generation_id >= 0 {
                            self.generations.insert(group.to_owned(), j.generation_id);
                            self.leaders.insert(group.to_owned(), j.leader.clone());
                        }
                    }
                }
                Command::Append { token, .. } => self.appends.push(token),
            }
        }
    }

    fn member(&self, group: &str, pick: u8) -> String {
        let ids = self.members.get(group).map(Vec::as_slice).unwrap_or(&[]);
        if pick as usize >= ids.len() {
            String::new()
        } else {
            ids[pick as usize].clone()
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn every_request_is_answered_exactly_once(ops in proptest::collection::vec(op(), 1..120)) {
        let mut c = coordinator(GroupConfig { group_initial_rebalance_delay_ms: 100, ..config() });
        let mut w = World::default();
        let mut now = T0;
        let groups = ["g0", "g1", "g2"];
        for op in ops {
            match op {
                Op::Join { group, member, version, instance, protocol } => {
                    let g = groups[group as usize];
                    let mut req = join_req(version, g, &w.member(g, member), instance.map(|i| format!("i{i}")).as_deref());
                    if protocol == 1 {
                        req.protocols[0].metadata = subscription(&["t", "u"]);
                    } else if protocol == 2 {
                        req.protocols.insert(0, JoinProtocol { name: "roundrobin".into(), metadata: Bytes::new() });
                    }
                    let r = w.reply_to();
                    w.join_groups.insert(r, g.to_owned());
                    let cmds = c.join_group(req, r, now);
                    w.absorb(cmds);
                }
                Op::Sync { group, member, assign, generation_off } => {
                    let g = groups[group as usize];
                    let generation = w.generations.get(g).copied().unwrap_or(0) + generation_off as i32;
                    let assignments = if assign {
                        w.members.get(g).cloned().unwrap_or_default().into_iter().map(|id| (id, Bytes::from_static(b"a"))).collect()
                    } else {
                        vec![]
                    };
                    // Member 0 stands for the leader, so that generations get formed.
                    let member_id = match (member, w.leaders.get(g)) {
                        (0, Some(leader)) => leader.clone(),
                        _ => w.member(g, member),
                    };
                    let r = w.reply_to();
                    let cmds = c.sync_group(sync_req(g, &member_id, generation, assignments), r, now);
                    w.absorb(cmds);
                }
                Op::Heartbeat { group, member } => {
                    let g = groups[group as usize];
                    let generation = w.generations.get(g).copied().unwrap_or(0);
                    c.heartbeat(&heartbeat_req(g, &w.member(g, member), generation), now);
                }
                Op::Leave { group, member, by_instance } => {
                    let g = groups[group as usize];
                    let leaving = match by_instance {
                        Some(i) => LeaveMember { member_id: String::new(), group_instance_id: Some(format!("i{i}")) },
                        None => LeaveMember { member_id: w.member(g, member), group_instance_id: None },
                    };
                    let r = w.reply_to();
                    let cmds = c.leave_group(LeaveGroupRequest { group_id: g.into(), members: vec![leaving] }, r, now);
                    w.absorb(cmds);
                }
                Op::Commit { group, member, partition, simple } => {
                    let g = groups[group as usize];
                    let req = if simple {
                        commit_req(g, "", -1, &[("t", partition as i32, now)])
                    } else {
                        let generation = w.generations.get(g).copied().unwrap_or(0);
                        commit_req(g, &w.member(g, member), generation, &[("t", partition as i32, now)])
                    };
                    let r = w.reply_to();
                    let cmds = c.offset_commit(req, r, now);
                    w.absorb(cmds);
                }
                Op::Fetch { group } => {
                    let mut req = fetch_req(groups[group as usize], None);
                    req.require_stable = true;
                    c.offset_fetch(&req);
                }
                Op::CompleteAppend { pick, ok } => {
                    if !w.appends.is_empty() {
                        let token = w.appends.remove(pick as usize % w.appends.len());
                        let result = if ok { Ok(()) } else { Err(errors::NOT_LEADER_OR_FOLLOWER) };
                        let cmds = c.append_completed(token, result, now);
                        w.absorb(cmds);
                    }
                }
                Op::Advance { ms } => {
                    now += ms as i64;
                    let cmds = tick_all(&mut c, now);
                    w.absorb(cmds);
                }
                Op::DeleteGroup { group } => {
                    let r = w.reply_to();
                    let cmds = c.delete_groups(DeleteGroupsRequest { groups: vec![groups[group as usize].into()] }, r, now);
                    w.absorb(cmds);
                }
                Op::OffsetDelete { group } => {
                    let req = OffsetDeleteRequest {
                        group_id: groups[group as usize].into(),
                        topics: vec![TopicPartitions { name: "t".into(), partitions: vec![0, 1] }],
                    };
                    let r = w.reply_to();
                    let cmds = c.offset_delete(req, r, now);
                    w.absorb(cmds);
                }
            }
            prop_assert!(w.answered.values().all(|&n| n == 1), "a request was answered twice");
        }
        // Drain: complete every append, let every timer run, then unload everything.
        for _ in 0..3 {
            while let Some(token) = w.appends.pop() {
                let cmds = c.append_completed(token, Ok(()), now);
                w.absorb(cmds);
            }
            now += 3_600_000;
            let cmds = tick_all(&mut c, now);
            w.absorb(cmds);
        }
        for p in 0..c.config().offsets_topic_num_partitions {
            let cmds = c.unload_partition(p);
            w.absorb(cmds);
        }
        while let Some(token) = w.appends.pop() {
            let cmds = c.append_completed(token, Ok(()), now);
            w.absorb(cmds);
        }
        for r in &w.issued {
            prop_assert_eq!(w.answered.get(r).copied().unwrap_or(0), 1, "request {} answered {:?} times", r, w.answered.get(r));
        }
        prop_assert_eq!(w.answered.len(), w.issued.len());
    }
}
