//! OffsetCommit, OffsetFetch, OffsetDelete and offset expiry, after Kafka's
//! `GroupCoordinator` / `GroupMetadataManager` (3.x).

use bytes::Bytes;

use crate::api::*;
use crate::coordinator::{
    group_tombstone, offset_commit_record, offset_tombstone, AppendPurpose, CommitAppend, GroupCoordinator,
    PartitionBatches,
};
use crate::errors::{self, map_commit_error};
use crate::group::{CommittedOffset, Group, GroupState};
use crate::membership::validate_current_member;
use crate::{records, Command, ReplyTo};

fn commit_reply(out: &mut Vec<Command>, reply_to: ReplyTo, topics: &[OffsetCommitTopic], code: i16) {
    let topics = topics
        .iter()
        .map(|t| TopicPartitionErrors {
            name: t.name.clone(),
            partitions: t
                .partitions
                .iter()
                .map(|p| PartitionError { partition_index: p.partition_index, error_code: code })
                .collect(),
        })
        .collect();
    out.push(Command::Reply(reply_to, Response::OffsetCommit(OffsetCommitResponse { topics })));
}

impl GroupCoordinator {
    /// OffsetCommit. Acknowledged once the records are appended; until then the new offsets
    /// are invisible to OffsetFetch (which reports UNSTABLE_OFFSET_COMMIT if asked to).
    pub fn offset_commit(&mut self, req: OffsetCommitRequest, reply_to: ReplyTo, now_ms: i64) -> Vec<Command> {
        let mut out = Vec::new();
        if let Err(code) = self.check_group(&req.group_id, true) {
            commit_reply(&mut out, reply_to, &req.topics, code);
            return out;
        }
        let mut group = match self.groups.remove(&req.group_id) {
            Some(g) => g,
            // A consumer that only stores offsets here (no group management).
            None if req.generation_id < 0 => {
                Group::new(req.group_id.clone(), self.partition_for(&req.group_id), now_ms)
            }
            // Or a member of a generation this coordinator no longer knows.
            None => {
                commit_reply(&mut out, reply_to, &req.topics, errors::ILLEGAL_GENERATION);
                return out;
            }
        };
        match validate_offset_commit(&group, &req) {
            Some(code) => commit_reply(&mut out, reply_to, &req.topics, code),
            None => match group.state {
                GroupState::Empty => self.store_offsets(&mut group, req, reply_to, now_ms, &mut out),
                // Commits go on during a rebalance; the heartbeat answer tells the member to
                // rejoin.
                GroupState::Stable | GroupState::PreparingRebalance => {
                    if let Some(member) = group.members.get_mut(&req.member_id) {
                        let timeout = member.session_timeout_ms as i64;
                        self.timers.reschedule_heartbeat(&group.id, member, timeout, now_ms);
                    }
                    self.store_offsets(&mut group, req, reply_to, now_ms, &mut out);
                }
                GroupState::CompletingRebalance | GroupState::Dead => {
                    commit_reply(&mut out, reply_to, &req.topics, errors::REBALANCE_IN_PROGRESS)
                }
            },
        }
        self.put_back(group);
        out
    }

    fn store_offsets(
        &mut self,
        group: &mut Group,
        req: OffsetCommitRequest,
        reply_to: ReplyTo,
        now_ms: i64,
        out: &mut Vec<Command>,
    ) {
        let expire_timestamp = ((2..=4).contains(&req.version) && req.retention_time_ms != -1)
            .then(|| now_ms.saturating_add(req.retention_time_ms));
        let max_metadata = self.config.offset_metadata_max_bytes.max(0) as usize;
        let seq = self.next_seq();
        let mut records = Vec::new();
        let mut topics = Vec::with_capacity(req.topics.len());
        for topic in req.topics {
            let mut partitions = Vec::with_capacity(topic.partitions.len());
            if topic.name.len() > records::MAX_STRING_LEN {
                // No such topic can exist, and the key could not hold it.
                let failed =
                    topic.partitions.iter().map(|p| (p.partition_index, Err(errors::UNKNOWN_TOPIC_OR_PARTITION)));
                topics.push((topic.name, failed.collect()));
                continue;
            }
            for p in topic.partitions {
                let metadata = p.committed_metadata.unwrap_or_default();
                // Kafka compares the Java string length (UTF-16 units), never more than bytes.
                if (metadata.len() > max_metadata && metadata.encode_utf16().count() > max_metadata)
                    || metadata.len() > records::MAX_STRING_LEN
                {
                    partitions.push((p.partition_index, Err(errors::OFFSET_METADATA_TOO_LARGE)));
                    continue;
                }
                let value = CommittedOffset {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata,
                    commit_timestamp: if req.version == 1 && p.commit_timestamp != -1 {
                        p.commit_timestamp
                    } else {
                        now_ms
                    },
                    expire_timestamp,
                    seq,
                };
                records.push(offset_commit_record(&group.id, &topic.name, p.partition_index, &value));
                group.prepare_commit(&topic.name, p.partition_index, seq);
                partitions.push((p.partition_index, Ok(value)));
            }
            topics.push((topic.name, partitions));
        }
        let commit = CommitAppend { reply_to, group_id: group.id.clone(), seq, topics };
        if records.is_empty() {
            // Nothing to write (no partitions, or all metadata too large).
            self.complete_commit_with(None, commit, errors::NONE, out);
        } else {
            self.append(group.partition, records, AppendPurpose::Commit(commit), out);
        }
    }

    pub(crate) fn complete_commit(&mut self, commit: CommitAppend, result: Result<(), i16>, out: &mut Vec<Command>) {
        let code = match result {
            Ok(()) => errors::NONE,
            Err(e) => map_commit_error(e),
        };
        let mut group = self.groups.remove(&commit.group_id);
        self.complete_commit_with(group.as_mut(), commit, code, out);
        if let Some(group) = group {
            self.put_back(group);
        }
    }

    fn complete_commit_with(
        &mut self,
        mut group: Option<&mut Group>,
        commit: CommitAppend,
        code: i16,
        out: &mut Vec<Command>,
    ) {
        let mut topics = Vec::with_capacity(commit.topics.len());
        for (name, partitions) in commit.topics {
            let mut errors_out = Vec::with_capacity(partitions.len());
            for (partition_index, value) in partitions {
                let error_code = match value {
                    Err(rejected) => rejected,
                    Ok(value) => {
                        if let Some(g) = group.as_deref_mut().filter(|g| !g.is(GroupState::Dead)) {
                            let visible = (code == errors::NONE).then_some(value);
                            g.complete_commit(&name, partition_index, visible, commit.seq);
                        }
                        code
                    }
                };
                errors_out.push(PartitionError { partition_index, error_code });
            }
            topics.push(TopicPartitionErrors { name, partitions: errors_out });
        }
        out.push(Command::Reply(commit.reply_to, Response::OffsetCommit(OffsetCommitResponse { topics })));
    }

    /// OffsetFetch for one group. Unknown partitions answer offset -1.
    pub fn offset_fetch(&self, req: &OffsetFetchRequest) -> OffsetFetchResponse {
        if let Err(error_code) = self.check_group(&req.group_id, true) {
            return OffsetFetchResponse { error_code, topics: Vec::new() };
        }
        let group = self.groups.get(&req.group_id).filter(|g| !g.is(GroupState::Dead));
        let fetch = |topic: &str, partition: i32| -> OffsetFetchPartition {
            let mut p = OffsetFetchPartition {
                partition_index: partition,
                committed_offset: -1,
                committed_leader_epoch: -1,
                metadata: String::new(),
                error_code: errors::NONE,
            };
            let Some(group) = group else { return p };
            if req.require_stable && group.has_pending_commit(topic, partition) {
                p.error_code = errors::UNSTABLE_OFFSET_COMMIT;
            } else if let Some(o) = group.offset(topic, partition) {
                p.committed_offset = o.offset;
                p.committed_leader_epoch = o.leader_epoch;
                p.metadata = o.metadata.clone();
            }
            p
        };
        let topics = match &req.topics {
            Some(topics) => topics
                .iter()
                .map(|t| OffsetFetchTopic {
                    name: t.name.clone(),
                    partitions: t.partitions.iter().map(|&p| fetch(&t.name, p)).collect(),
                })
                .collect(),
            None => {
                let mut topics: Vec<OffsetFetchTopic> = group
                    .map(|g| {
                        g.offsets
                            .iter()
                            .map(|(name, partitions)| {
                                let mut partitions: Vec<OffsetFetchPartition> =
                                    partitions.keys().map(|&p| fetch(name, p)).collect();
                                partitions.sort_by_key(|p| p.partition_index);
                                OffsetFetchTopic { name: name.clone(), partitions }
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                topics.sort_by(|a, b| a.name.cmp(&b.name));
                topics
            }
        };
        OffsetFetchResponse { error_code: errors::NONE, topics }
    }

    /// OffsetDelete. A consumer group with members keeps the offsets of topics it subscribes
    /// to (GROUP_SUBSCRIBED_TO_TOPIC): subscriptions are read from the members' consumer-protocol
    /// metadata as Kafka does; if one does not parse, every topic counts as subscribed. Any
    /// other non-empty group answers NON_EMPTY_GROUP. The answer waits for the tombstones.
    pub fn offset_delete(&mut self, req: OffsetDeleteRequest, reply_to: ReplyTo, now_ms: i64) -> Vec<Command> {
        let mut out = Vec::new();
        let fail = |out: &mut Vec<Command>, error_code| {
            let response = OffsetDeleteResponse { error_code, topics: Vec::new() };
            out.push(Command::Reply(reply_to, Response::OffsetDelete(response)));
        };
        if let Err(code) = self.check_group(&req.group_id, false) {
            fail(&mut out, code);
            return out;
        }
        let Some(mut group) = self.groups.remove(&req.group_id) else {
            fail(&mut out, errors::GROUP_ID_NOT_FOUND);
            return out;
        };
        let subscribed_check = match group.state {
            GroupState::Empty => false,
            GroupState::Dead => {
                fail(&mut out, errors::GROUP_ID_NOT_FOUND);
                self.put_back(group);
                return out;
            }
            _ if group.is_consumer_group() => true,
            _ => {
                fail(&mut out, errors::NON_EMPTY_GROUP);
                self.put_back(group);
                return out;
            }
        };
        let mut eligible = Vec::new();
        let mut topics = Vec::with_capacity(req.topics.len());
        for t in req.topics {
            let subscribed = subscribed_check && group.is_subscribed_to_topic(&t.name);
            let code = if subscribed { errors::GROUP_SUBSCRIBED_TO_TOPIC } else { errors::NONE };
            let partitions =
                t.partitions.iter().map(|&p| PartitionError { partition_index: p, error_code: code }).collect();
            if !subscribed {
                eligible.extend(t.partitions.iter().map(|&p| (t.name.clone(), p)));
            }
            topics.push(TopicPartitionErrors { name: t.name, partitions });
        }
        let removed = group.remove_offsets(&eligible);
        let records = self.cleanup_records(&mut group, &removed, now_ms);
        let mut per_partition = PartitionBatches::new();
        if !records.is_empty() {
            per_partition.insert(group.partition, (records, vec![group.id.clone()]));
        }
        let response = Response::OffsetDelete(OffsetDeleteResponse { error_code: errors::NONE, topics });
        self.append_for_waiter(per_partition, reply_to, response, &mut out);
        self.put_back(group);
        out
    }

    /// Tombstones for `removed` offsets; an Empty group left without offsets goes Dead and,
    /// if it ever had a generation, gets a metadata tombstone too (Kafka's
    /// `cleanupGroupMetadata`).
    fn cleanup_records(
        &mut self,
        group: &mut Group,
        removed: &[(String, i32)],
        now_ms: i64,
    ) -> Vec<(Bytes, Option<Bytes>)> {
        let mut records: Vec<(Bytes, Option<Bytes>)> =
            removed.iter().map(|(topic, partition)| offset_tombstone(&group.id, topic, *partition)).collect();
        if group.is(GroupState::Empty) && !group.has_offsets() {
            group.transition(GroupState::Dead, now_ms);
            if group.generation > 0 {
                records.push(group_tombstone(&group.id));
            }
        }
        records
    }

    /// The periodic offset expiry (`offsets.retention.minutes`).
    pub(crate) fn expire_offsets(&mut self, now_ms: i64, out: &mut Vec<Command>) {
        let retention_ms = self.config.offsets_retention_ms();
        let mut ids: Vec<String> = self.groups.keys().cloned().collect();
        ids.sort();
        for id in ids {
            let Some(mut group) = self.groups.remove(&id) else { continue };
            let removed = group.remove_expired_offsets(now_ms, retention_ms);
            let records = self.cleanup_records(&mut group, &removed, now_ms);
            if !records.is_empty() {
                self.append(group.partition, records, AppendPurpose::Fire, out);
            }
            self.put_back(group);
        }
    }
}

/// Kafka's `validateOffsetCommit`.
fn validate_offset_commit(group: &Group, req: &OffsetCommitRequest) -> Option<i16> {
    if group.is(GroupState::Dead) {
        Some(errors::COORDINATOR_NOT_AVAILABLE)
    } else if req.generation_id < 0 && group.is(GroupState::Empty) {
        // Admin client or a consumer without group management.
        None
    } else if req.generation_id >= 0 || !req.member_id.is_empty() || req.group_instance_id.is_some() {
        validate_current_member(group, &req.member_id, req.group_instance_id.as_deref())
            .or((req.generation_id != group.generation).then_some(errors::ILLEGAL_GENERATION))
    } else if !group.is(GroupState::Empty) {
        // Only members commit to a group that has some.
        Some(errors::UNKNOWN_MEMBER_ID)
    } else {
        None
    }
}
