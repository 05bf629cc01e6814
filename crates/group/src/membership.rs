//! JoinGroup, SyncGroup, Heartbeat, LeaveGroup and the rebalance state machine, after Kafka's
//! `GroupCoordinator.scala` (3.x). A group is taken out of the map while a request works on it
//! and put back after (`put_back` drops it if it went Dead).

use std::collections::HashMap;

use bytes::Bytes;

use crate::api::*;
use crate::coordinator::{
    group_record, AppendPurpose, GroupCoordinator, StaticRejoin, Timer, NEW_MEMBER_JOIN_TIMEOUT_MS,
};
use crate::errors::{self, map_store_group_error};
use crate::group::{Group, GroupState, JoinTimer, Member};
use crate::{records, Command, ReplyTo};

fn join_reply(out: &mut Vec<Command>, reply_to: ReplyTo, response: JoinGroupResponse) {
    out.push(Command::Reply(reply_to, Response::JoinGroup(response)));
}

fn sync_reply(out: &mut Vec<Command>, reply_to: ReplyTo, response: SyncGroupResponse) {
    out.push(Command::Reply(reply_to, Response::SyncGroup(response)));
}

/// The fields of a JoinGroup that shape the member, after version defaults.
struct Joiner {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    rebalance_timeout_ms: i32,
    session_timeout_ms: i32,
    protocol_type: String,
    protocols: Vec<JoinProtocol>,
    require_known_member_id: bool,
    supports_skip_assignment: bool,
}

impl GroupCoordinator {
    /// JoinGroup. The answer may come now or when the rebalance completes.
    pub fn join_group(&mut self, req: JoinGroupRequest, reply_to: ReplyTo, now_ms: i64) -> Vec<Command> {
        let mut out = Vec::new();
        if let Err(code) = self.check_group(&req.group_id, false) {
            join_reply(&mut out, reply_to, JoinGroupResponse::error(&req.member_id, code));
            return out;
        }
        if req.session_timeout_ms < self.config.group_min_session_timeout_ms
            || req.session_timeout_ms > self.config.group_max_session_timeout_ms
        {
            join_reply(&mut out, reply_to, JoinGroupResponse::error(&req.member_id, errors::INVALID_SESSION_TIMEOUT));
            return out;
        }
        let too_long = |s: &str| s.len() > records::MAX_STRING_LEN;
        if req.group_instance_id.as_deref().is_some_and(too_long)
            || too_long(&req.protocol_type)
            || req.protocols.iter().any(|p| too_long(&p.name))
        {
            // Could not be stored in the group record.
            join_reply(&mut out, reply_to, JoinGroupResponse::error(&req.member_id, errors::INVALID_REQUEST));
            return out;
        }
        let is_unknown = req.member_id.is_empty();
        let mut group = match self.groups.remove(&req.group_id) {
            Some(g) => g,
            None if is_unknown => Group::new(req.group_id.clone(), self.partition_for(&req.group_id), now_ms),
            None => {
                join_reply(&mut out, reply_to, JoinGroupResponse::error(&req.member_id, errors::UNKNOWN_MEMBER_ID));
                return out;
            }
        };
        let member_id = req.member_id;
        let joiner = Joiner {
            instance_id: if req.version >= 5 { req.group_instance_id } else { None },
            client_id: req.client_id,
            client_host: req.client_host,
            rebalance_timeout_ms: if req.version == 0 { req.session_timeout_ms } else { req.rebalance_timeout_ms },
            session_timeout_ms: req.session_timeout_ms,
            protocol_type: req.protocol_type,
            protocols: req.protocols,
            require_known_member_id: req.version >= 4,
            supports_skip_assignment: req.version >= 9,
        };

        if !self.accept_joining_member(&group, &member_id) {
            if let Some(member) = group.remove(&member_id) {
                self.drop_member(&group.id, member, &mut out);
            }
            join_reply(&mut out, reply_to, JoinGroupResponse::error("", errors::GROUP_MAX_SIZE_REACHED));
        } else if is_unknown {
            self.join_new_member(&mut group, joiner, reply_to, now_ms, &mut out);
        } else {
            self.join_current_member(&mut group, member_id, joiner, reply_to, now_ms, &mut out);
        }
        if group.is(GroupState::PreparingRebalance) {
            self.try_complete_join(&mut group, now_ms, &mut out);
        }
        self.put_back(group);
        out
    }

    /// Kafka's `acceptJoiningMember`, enforcing `group.max.size`.
    fn accept_joining_member(&self, group: &Group, member_id: &str) -> bool {
        let max = self.config.group_max_size.max(0) as usize;
        match group.state {
            GroupState::Empty | GroupState::Dead => true,
            GroupState::PreparingRebalance => {
                group.members.get(member_id).is_some_and(|m| m.awaiting_join.is_some())
                    || group.num_awaiting_join() < max
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                group.members.contains_key(member_id) || group.members.len() < max
            }
        }
    }

    fn join_new_member(
        &mut self,
        group: &mut Group,
        joiner: Joiner,
        reply_to: ReplyTo,
        now_ms: i64,
        out: &mut Vec<Command>,
    ) {
        if group.is(GroupState::Dead) {
            join_reply(out, reply_to, JoinGroupResponse::error("", errors::COORDINATOR_NOT_AVAILABLE));
            return;
        }
        if !group.supports_protocols(&joiner.protocol_type, &joiner.protocols) {
            join_reply(out, reply_to, JoinGroupResponse::error("", errors::INCONSISTENT_GROUP_PROTOCOL));
            return;
        }
        let prefix = joiner.instance_id.as_deref().unwrap_or(&joiner.client_id).to_owned();
        let new_id = self.new_member_id(&prefix);
        match joiner.instance_id.clone() {
            Some(instance_id) => match group.static_members.get(&instance_id).cloned() {
                Some(old_id) => self.update_static_member_and_rebalance(
                    group,
                    old_id,
                    new_id,
                    instance_id,
                    joiner,
                    reply_to,
                    now_ms,
                    out,
                ),
                None => self.add_member_and_rebalance(group, new_id, joiner, reply_to, now_ms, out),
            },
            None if joiner.require_known_member_id => {
                // Hand out an id and make the member come back with it, so that a client that
                // retries after a timeout does not leave ghost members behind.
                let deadline = now_ms + joiner.session_timeout_ms as i64;
                group.pending_members.insert(new_id.clone(), deadline);
                self.timers.insert(deadline, Timer::PendingMember(group.id.clone(), new_id.clone()));
                join_reply(out, reply_to, JoinGroupResponse::error(&new_id, errors::MEMBER_ID_REQUIRED));
            }
            None => self.add_member_and_rebalance(group, new_id, joiner, reply_to, now_ms, out),
        }
    }

    fn join_current_member(
        &mut self,
        group: &mut Group,
        member_id: String,
        joiner: Joiner,
        reply_to: ReplyTo,
        now_ms: i64,
        out: &mut Vec<Command>,
    ) {
        if group.is(GroupState::Dead) {
            join_reply(out, reply_to, JoinGroupResponse::error(&member_id, errors::COORDINATOR_NOT_AVAILABLE));
            return;
        }
        if !group.supports_protocols(&joiner.protocol_type, &joiner.protocols) {
            join_reply(out, reply_to, JoinGroupResponse::error(&member_id, errors::INCONSISTENT_GROUP_PROTOCOL));
            return;
        }
        if let Some(&deadline) = group.pending_members.get(&member_id) {
            if joiner.instance_id.is_some() {
                // Pending ids are only handed to dynamic members (Kafka throws here).
                join_reply(out, reply_to, JoinGroupResponse::error(&member_id, errors::UNKNOWN_SERVER_ERROR));
                return;
            }
            self.timers.remove(deadline, Timer::PendingMember(group.id.clone(), member_id.clone()));
            self.add_member_and_rebalance(group, member_id, joiner, reply_to, now_ms, out);
            return;
        }
        if let Some(code) = validate_current_member(group, &member_id, joiner.instance_id.as_deref()) {
            join_reply(out, reply_to, JoinGroupResponse::error(&member_id, code));
            return;
        }
        let matches = group.members.get(&member_id).is_some_and(|m| m.matches(&joiner.protocols));
        match group.state {
            GroupState::PreparingRebalance => {
                self.update_member_and_rebalance(group, &member_id, joiner, reply_to, now_ms, out)
            }
            GroupState::CompletingRebalance if matches => {
                // Same metadata: the member probably lost our JoinGroup answer; resend it.
                let members = if group.is_leader(&member_id) { group.current_member_metadata() } else { Vec::new() };
                join_reply(out, reply_to, current_generation(group, &member_id, members));
            }
            GroupState::Stable if matches && !group.is_leader(&member_id) => {
                join_reply(out, reply_to, current_generation(group, &member_id, Vec::new()));
            }
            // Changed metadata, or the leader asking for a rebalance (e.g. topic metadata
            // changed).
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.update_member_and_rebalance(group, &member_id, joiner, reply_to, now_ms, out)
            }
            GroupState::Empty | GroupState::Dead => {
                join_reply(out, reply_to, JoinGroupResponse::error(&member_id, errors::UNKNOWN_MEMBER_ID));
            }
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        group: &mut Group,
        member_id: String,
        joiner: Joiner,
        reply_to: ReplyTo,
        now_ms: i64,
        out: &mut Vec<Command>,
    ) {
        let member = Member {
            id: member_id.clone(),
            instance_id: joiner.instance_id,
            client_id: joiner.client_id,
            client_host: joiner.client_host,
            rebalance_timeout_ms: joiner.rebalance_timeout_ms,
            session_timeout_ms: joiner.session_timeout_ms,
            protocols: joiner.protocols,
            assignment: Bytes::new(),
            awaiting_join: None,
            awaiting_sync: None,
            is_new: true,
            heartbeat_deadline: None,
        };
        if group.is(GroupState::PreparingRebalance) && group.generation == 0 {
            group.new_member_added = true;
        }
        group.add(member, &joiner.protocol_type, Some(reply_to));
        // A new member cannot heartbeat before its JoinGroup returns; bound the wait instead.
        if let Some(member) = group.members.get_mut(&member_id) {
            self.timers.reschedule_heartbeat(&group.id, member, NEW_MEMBER_JOIN_TIMEOUT_MS, now_ms);
        }
        self.maybe_prepare_rebalance(group, now_ms, out);
    }

    fn update_member_and_rebalance(
        &mut self,
        group: &mut Group,
        member_id: &str,
        joiner: Joiner,
        reply_to: ReplyTo,
        now_ms: i64,
        out: &mut Vec<Command>,
    ) {
        let superseded = group.update_member(
            member_id,
            joiner.protocols,
            joiner.rebalance_timeout_ms,
            joiner.session_timeout_ms,
            Some(reply_to),
        );
        if let Some(old) = superseded.filter(|&old| old != reply_to) {
            // The client sent another JoinGroup; it no longer waits for the first one.
            join_reply(out, old, JoinGroupResponse::error(member_id, errors::REBALANCE_IN_PROGRESS));
        }
        self.maybe_prepare_rebalance(group, now_ms, out);
    }

    /// A known static member came back without its member id (a restart): it takes over its
    /// old place under a new id, and the old id is fenced.
    #[allow(clippy::too_many_arguments)]
    fn update_static_member_and_rebalance(
        &mut self,
        group: &mut Group,
        old_id: String,
        new_id: String,
        instance_id: String,
        joiner: Joiner,
        reply_to: ReplyTo,
        now_ms: i64,
        out: &mut Vec<Command>,
    ) {
        let previous_leader = group.leader.clone();
        if let Some(member) = group.members.get_mut(&old_id) {
            self.timers.cancel_heartbeat(&group.id, member);
        }
        let (old_join, old_sync) = group.replace_static_member(&instance_id, &old_id, &new_id);
        if let Some(r) = old_join {
            join_reply(out, r, JoinGroupResponse::error(&old_id, errors::FENCED_INSTANCE_ID));
        }
        if let Some(r) = old_sync {
            sync_reply(out, r, SyncGroupResponse::error(errors::FENCED_INSTANCE_ID));
        }
        let Some(member) = group.members.get_mut(&new_id) else { return };
        let timeout = member.session_timeout_ms as i64;
        self.timers.reschedule_heartbeat(&group.id, member, timeout, now_ms);
        let old_protocols = member.protocols.clone();
        let old_rebalance_timeout_ms = member.rebalance_timeout_ms;
        let old_session_timeout_ms = member.session_timeout_ms;
        group.update_member(
            &new_id,
            joiner.protocols,
            joiner.rebalance_timeout_ms,
            joiner.session_timeout_ms,
            Some(reply_to),
        );
        match group.state {
            GroupState::Stable => {
                if group.select_protocol() == group.protocol_name {
                    // Nothing the assignment depends on changed: persist the new member id and
                    // answer without a rebalance once it is durable.
                    let record = group_record(group, None);
                    let rejoin = StaticRejoin {
                        group_id: group.id.clone(),
                        instance_id,
                        old_member_id: old_id,
                        new_member_id: new_id,
                        reply_to,
                        old_protocols,
                        old_rebalance_timeout_ms,
                        old_session_timeout_ms,
                        previous_leader,
                        supports_skip_assignment: joiner.supports_skip_assignment,
                    };
                    self.append(group.partition, vec![record], AppendPurpose::StaticRejoin(Box::new(rejoin)), out);
                } else {
                    self.maybe_prepare_rebalance(group, now_ms, out);
                }
            }
            // The leader may be assigning to the old id: start over.
            GroupState::CompletingRebalance => self.prepare_rebalance(group, now_ms, out),
            GroupState::PreparingRebalance | GroupState::Empty | GroupState::Dead => {}
        }
    }

    pub(crate) fn complete_static_rejoin(
        &mut self,
        rejoin: StaticRejoin,
        result: Result<(), i16>,
        now_ms: i64,
        out: &mut Vec<Command>,
    ) {
        let Some(mut group) = self.groups.remove(&rejoin.group_id) else { return };
        let still_waiting =
            group.members.get(&rejoin.new_member_id).is_some_and(|m| m.awaiting_join == Some(rejoin.reply_to));
        if still_waiting {
            match result {
                Ok(()) => {
                    group.take_awaiting_join(&rejoin.new_member_id);
                    let response = if rejoin.supports_skip_assignment {
                        // v9+: the leader learns it leads but keeps the current assignment.
                        let is_leader = group.is_leader(&rejoin.new_member_id);
                        let members = if is_leader { group.current_member_metadata() } else { Vec::new() };
                        let mut r = current_generation(&group, &rejoin.new_member_id, members);
                        r.skip_assignment = is_leader;
                        r
                    } else {
                        // Older clients get the previous leader id, so that even the leader does
                        // not run an assignment a Stable group would not propagate.
                        let mut r = current_generation(&group, &rejoin.new_member_id, Vec::new());
                        r.leader = rejoin.previous_leader.clone().unwrap_or_default();
                        r
                    };
                    join_reply(out, rejoin.reply_to, response);
                }
                Err(code) => {
                    // The new id is not durable: give the instance its old id back.
                    group.update_member(
                        &rejoin.new_member_id,
                        rejoin.old_protocols,
                        rejoin.old_rebalance_timeout_ms,
                        rejoin.old_session_timeout_ms,
                        None,
                    );
                    if let Some(member) = group.members.get_mut(&rejoin.new_member_id) {
                        self.timers.cancel_heartbeat(&group.id, member);
                    }
                    group.replace_static_member(&rejoin.instance_id, &rejoin.new_member_id, &rejoin.old_member_id);
                    if let Some(member) = group.members.get_mut(&rejoin.old_member_id) {
                        let timeout = member.session_timeout_ms as i64;
                        self.timers.reschedule_heartbeat(&group.id, member, timeout, now_ms);
                    }
                    let mut r = current_generation(&group, "", Vec::new());
                    r.error_code = map_store_group_error(code);
                    r.leader = rejoin.previous_leader.unwrap_or_default();
                    join_reply(out, rejoin.reply_to, r);
                }
            }
        }
        self.put_back(group);
    }

    pub(crate) fn maybe_prepare_rebalance(&mut self, group: &mut Group, now_ms: i64, out: &mut Vec<Command>) {
        if group.state.can_rebalance() {
            self.prepare_rebalance(group, now_ms, out);
        }
    }

    pub(crate) fn prepare_rebalance(&mut self, group: &mut Group, now_ms: i64, out: &mut Vec<Command>) {
        if group.is(GroupState::CompletingRebalance) {
            self.reset_and_propagate_assignment_error(group, errors::REBALANCE_IN_PROGRESS, now_ms, out);
        }
        self.cancel_sync_timer(group);
        group.pending_sync.clear();
        let (delay, kind) = if group.is(GroupState::Empty) {
            let initial = self.config.group_initial_rebalance_delay_ms as i64;
            let remaining_ms = (group.rebalance_timeout_ms() - initial).max(0);
            (initial, JoinTimer::Initial { delay_ms: initial, remaining_ms })
        } else {
            (group.rebalance_timeout_ms(), JoinTimer::Regular)
        };
        group.transition(GroupState::PreparingRebalance, now_ms);
        self.set_join_timer(group, now_ms.saturating_add(delay), kind);
        self.try_complete_join(group, now_ms, out);
    }

    /// Completes the join phase once every member rejoined (never during the initial delay).
    pub(crate) fn try_complete_join(&mut self, group: &mut Group, now_ms: i64, out: &mut Vec<Command>) {
        if matches!(group.join_timer, Some((_, JoinTimer::Regular))) && group.has_all_members_joined() {
            self.cancel_join_timer(group);
            self.complete_join(group, now_ms, out);
        }
    }

    pub(crate) fn on_join_timer(&mut self, group: &mut Group, kind: JoinTimer, now_ms: i64, out: &mut Vec<Command>) {
        match kind {
            JoinTimer::Initial { delay_ms, remaining_ms } if group.new_member_added && remaining_ms != 0 => {
                // Members are still arriving: wait another delay, within the rebalance timeout.
                group.new_member_added = false;
                let delay = (self.config.group_initial_rebalance_delay_ms as i64).min(remaining_ms);
                let remaining_ms = (remaining_ms - delay_ms).max(0);
                self.set_join_timer(group, now_ms + delay, JoinTimer::Initial { delay_ms: delay, remaining_ms });
            }
            _ => self.complete_join(group, now_ms, out),
        }
    }

    /// Kafka's `onCompleteJoin`: drop dynamic members that did not rejoin, form the next
    /// generation and answer every parked JoinGroup.
    fn complete_join(&mut self, group: &mut Group, now_ms: i64, out: &mut Vec<Command>) {
        let gone: Vec<String> = group
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.instance_id.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            if let Some(member) = group.remove(&id) {
                self.drop_member(&group.id, member, out);
            }
        }
        if group.is(GroupState::Dead) {
            return;
        }
        if !group.maybe_elect_new_joined_leader() && !group.members.is_empty() {
            // Only static members that did not rejoin are left: wait for them (or for their
            // session timeouts) another rebalance timeout.
            // At least 1 ms, so a zero timeout cannot make the driver spin on `tick`.
            let deadline = now_ms.saturating_add(group.rebalance_timeout_ms().max(1));
            self.set_join_timer(group, deadline, JoinTimer::Regular);
            self.try_complete_join(group, now_ms, out);
            return;
        }
        group.init_next_generation(now_ms);
        if group.is(GroupState::Empty) {
            let record = group_record(group, None);
            self.append(group.partition, vec![record], AppendPurpose::Fire, out);
            return;
        }
        let mut leader_members = Some(group.current_member_metadata());
        let ids: Vec<String> = group.members.keys().cloned().collect();
        for id in ids {
            let members = if group.is_leader(&id) { leader_members.take().unwrap_or_default() } else { Vec::new() };
            let response = current_generation(group, &id, members);
            if let Some(reply_to) = group.take_awaiting_join(&id) {
                join_reply(out, reply_to, response);
            }
            if let Some(member) = group.members.get_mut(&id) {
                member.is_new = false;
                let timeout = member.session_timeout_ms as i64;
                self.timers.reschedule_heartbeat(&group.id, member, timeout, now_ms);
            }
            group.pending_sync.insert(id);
        }
        let deadline = now_ms.saturating_add(group.rebalance_timeout_ms());
        self.set_sync_timer(group, deadline);
    }

    /// Members that never sent SyncGroup within the rebalance timeout are removed.
    pub(crate) fn on_sync_timeout(&mut self, group: &mut Group, generation: i32, now_ms: i64, out: &mut Vec<Command>) {
        if generation != group.generation
            || !matches!(group.state, GroupState::CompletingRebalance | GroupState::Stable)
            || group.pending_sync.is_empty()
        {
            return;
        }
        let pending: Vec<String> = group.pending_sync.iter().cloned().collect();
        for id in pending {
            if let Some(member) = group.remove(&id) {
                self.drop_member(&group.id, member, out);
            }
        }
        self.prepare_rebalance(group, now_ms, out);
    }

    pub(crate) fn on_heartbeat_expired(
        &mut self,
        group: &mut Group,
        member_id: &str,
        now_ms: i64,
        out: &mut Vec<Command>,
    ) {
        if group.is(GroupState::Dead) {
            return;
        }
        if group.members.get(member_id).is_some_and(|m| !m.survives_heartbeat_expiry()) {
            self.remove_member_and_update_group(group, member_id, now_ms, out);
        }
    }

    /// Kafka's `removeMemberAndUpdateGroup`.
    fn remove_member_and_update_group(
        &mut self,
        group: &mut Group,
        member_id: &str,
        now_ms: i64,
        out: &mut Vec<Command>,
    ) {
        if let Some(reply_to) = group.take_awaiting_join(member_id) {
            join_reply(out, reply_to, JoinGroupResponse::error("", errors::UNKNOWN_MEMBER_ID));
        }
        if let Some(member) = group.remove(member_id) {
            self.drop_member(&group.id, member, out);
        }
        match group.state {
            GroupState::Dead | GroupState::Empty => {}
            GroupState::Stable | GroupState::CompletingRebalance => self.maybe_prepare_rebalance(group, now_ms, out),
            GroupState::PreparingRebalance => self.try_complete_join(group, now_ms, out),
        }
    }

    /// Cancels a removed member's timer and answers whatever it left parked.
    pub(crate) fn drop_member(&mut self, group_id: &str, mut member: Member, out: &mut Vec<Command>) {
        self.timers.cancel_heartbeat(group_id, &mut member);
        if let Some(reply_to) = member.awaiting_join.take() {
            join_reply(out, reply_to, JoinGroupResponse::error("", errors::UNKNOWN_MEMBER_ID));
        }
        if let Some(reply_to) = member.awaiting_sync.take() {
            sync_reply(out, reply_to, SyncGroupResponse::error(errors::UNKNOWN_MEMBER_ID));
        }
    }

    fn reset_and_propagate_assignment_error(
        &mut self,
        group: &mut Group,
        code: i16,
        now_ms: i64,
        out: &mut Vec<Command>,
    ) {
        for member in group.members.values_mut() {
            member.assignment = Bytes::new();
        }
        self.propagate_assignment(group, code, now_ms, out);
    }

    fn propagate_assignment(&mut self, group: &mut Group, code: i16, now_ms: i64, out: &mut Vec<Command>) {
        let (protocol_type, protocol_name) = if code == errors::NONE {
            (group.protocol_type.clone(), group.protocol_name.clone())
        } else {
            (None, None)
        };
        for member in group.members.values_mut() {
            if let Some(reply_to) = member.awaiting_sync.take() {
                let response = SyncGroupResponse {
                    error_code: code,
                    protocol_type: protocol_type.clone(),
                    protocol_name: protocol_name.clone(),
                    assignment: member.assignment.clone(),
                };
                sync_reply(out, reply_to, response);
                // A session may have lapsed while the member waited; it starts afresh now.
                let timeout = member.session_timeout_ms as i64;
                self.timers.reschedule_heartbeat(&group.id, member, timeout, now_ms);
            }
        }
    }

    /// SyncGroup. The leader's assignment is stored before anyone gets theirs.
    pub fn sync_group(&mut self, req: SyncGroupRequest, reply_to: ReplyTo, now_ms: i64) -> Vec<Command> {
        let mut out = Vec::new();
        if let Err(code) = self.check_group(&req.group_id, false) {
            // While loading, the rebalance state is lost: make the member rejoin.
            let code = if code == errors::COORDINATOR_LOAD_IN_PROGRESS { errors::REBALANCE_IN_PROGRESS } else { code };
            sync_reply(&mut out, reply_to, SyncGroupResponse::error(code));
            return out;
        }
        let Some(mut group) = self.groups.remove(&req.group_id) else {
            sync_reply(&mut out, reply_to, SyncGroupResponse::error(errors::UNKNOWN_MEMBER_ID));
            return out;
        };
        match validate_sync(&group, &req) {
            Some(code) => sync_reply(&mut out, reply_to, SyncGroupResponse::error(code)),
            None => match group.state {
                GroupState::Empty => {
                    sync_reply(&mut out, reply_to, SyncGroupResponse::error(errors::UNKNOWN_MEMBER_ID))
                }
                GroupState::PreparingRebalance | GroupState::Dead => {
                    sync_reply(&mut out, reply_to, SyncGroupResponse::error(errors::REBALANCE_IN_PROGRESS))
                }
                GroupState::CompletingRebalance => {
                    if let Some(member) = group.members.get_mut(&req.member_id) {
                        if let Some(old) = member.awaiting_sync.replace(reply_to) {
                            sync_reply(&mut out, old, SyncGroupResponse::error(errors::REBALANCE_IN_PROGRESS));
                        }
                    }
                    self.remove_pending_sync(&mut group, &req.member_id);
                    if group.is_leader(&req.member_id) {
                        let mut assignment: HashMap<String, Bytes> = HashMap::with_capacity(group.members.len());
                        for (id, a) in req.assignments {
                            if group.members.contains_key(&id) {
                                assignment.insert(id, a);
                            }
                        }
                        let record = group_record(&group, Some(&assignment));
                        let purpose = AppendPurpose::SyncStore {
                            group_id: group.id.clone(),
                            generation: group.generation,
                            assignment,
                        };
                        self.append(group.partition, vec![record], purpose, &mut out);
                    }
                }
                GroupState::Stable => {
                    self.remove_pending_sync(&mut group, &req.member_id);
                    let response = SyncGroupResponse {
                        error_code: errors::NONE,
                        protocol_type: group.protocol_type.clone(),
                        protocol_name: group.protocol_name.clone(),
                        assignment: group.members.get(&req.member_id).map(|m| m.assignment.clone()).unwrap_or_default(),
                    };
                    sync_reply(&mut out, reply_to, response);
                    if let Some(member) = group.members.get_mut(&req.member_id) {
                        let timeout = member.session_timeout_ms as i64;
                        self.timers.reschedule_heartbeat(&group.id, member, timeout, now_ms);
                    }
                }
            },
        }
        self.put_back(group);
        out
    }

    fn remove_pending_sync(&mut self, group: &mut Group, member_id: &str) {
        group.pending_sync.remove(member_id);
        if group.pending_sync.is_empty() {
            self.cancel_sync_timer(group);
        }
    }

    pub(crate) fn complete_sync_store(
        &mut self,
        group_id: &str,
        generation: i32,
        mut assignment: HashMap<String, Bytes>,
        result: Result<(), i16>,
        now_ms: i64,
        out: &mut Vec<Command>,
    ) {
        let Some(mut group) = self.groups.remove(group_id) else { return };
        // The group may have moved on while the append was in flight.
        if group.is(GroupState::CompletingRebalance) && group.generation == generation {
            match result {
                Err(code) => {
                    self.reset_and_propagate_assignment_error(&mut group, map_store_group_error(code), now_ms, out);
                    self.maybe_prepare_rebalance(&mut group, now_ms, out);
                }
                Ok(()) => {
                    for member in group.members.values_mut() {
                        member.assignment = assignment.remove(&member.id).unwrap_or_default();
                    }
                    self.propagate_assignment(&mut group, errors::NONE, now_ms, out);
                    group.transition(GroupState::Stable, now_ms);
                }
            }
        }
        self.put_back(group);
    }

    /// Heartbeat: keeps the session alive; REBALANCE_IN_PROGRESS tells the member to rejoin.
    pub fn heartbeat(&mut self, req: &HeartbeatRequest, now_ms: i64) -> HeartbeatResponse {
        let error_code = match self.check_group(&req.group_id, false) {
            // While loading the coordinator cannot judge; let the member carry on.
            Err(errors::COORDINATOR_LOAD_IN_PROGRESS) => errors::NONE,
            Err(code) => code,
            Ok(()) => match self.groups.get_mut(&req.group_id) {
                None => errors::UNKNOWN_MEMBER_ID,
                Some(group) => {
                    let invalid = if group.is(GroupState::Dead) {
                        Some(errors::COORDINATOR_NOT_AVAILABLE)
                    } else {
                        validate_current_member(group, &req.member_id, req.group_instance_id.as_deref())
                            .or((req.generation_id != group.generation).then_some(errors::ILLEGAL_GENERATION))
                    };
                    match (invalid, group.state) {
                        (Some(code), _) => code,
                        (None, GroupState::Empty | GroupState::Dead) => errors::UNKNOWN_MEMBER_ID,
                        (None, state) => {
                            if let Some(member) = group.members.get_mut(&req.member_id) {
                                let timeout = member.session_timeout_ms as i64;
                                self.timers.reschedule_heartbeat(&group.id, member, timeout, now_ms);
                            }
                            if state == GroupState::PreparingRebalance {
                                errors::REBALANCE_IN_PROGRESS
                            } else {
                                errors::NONE
                            }
                        }
                    }
                }
            },
        };
        HeartbeatResponse { error_code }
    }

    /// LeaveGroup, for one member (v0-v2) or a batch (v3+, by member id or instance id).
    pub fn leave_group(&mut self, req: LeaveGroupRequest, reply_to: ReplyTo, now_ms: i64) -> Vec<Command> {
        let mut out = Vec::new();
        let leave_reply = |out: &mut Vec<Command>, error_code, members| {
            out.push(Command::Reply(reply_to, Response::LeaveGroup(LeaveGroupResponse { error_code, members })));
        };
        let each = |members: Vec<LeaveMember>, code: i16| -> Vec<LeaveMemberResponse> {
            members
                .into_iter()
                .map(|m| LeaveMemberResponse {
                    member_id: m.member_id,
                    group_instance_id: m.group_instance_id,
                    error_code: code,
                })
                .collect()
        };
        if let Err(code) = self.check_group(&req.group_id, false) {
            leave_reply(&mut out, code, Vec::new());
            return out;
        }
        let Some(mut group) = self.groups.remove(&req.group_id) else {
            leave_reply(&mut out, errors::NONE, each(req.members, errors::UNKNOWN_MEMBER_ID));
            return out;
        };
        if group.is(GroupState::Dead) {
            leave_reply(&mut out, errors::COORDINATOR_NOT_AVAILABLE, Vec::new());
            self.put_back(group);
            return out;
        }
        let mut responses = Vec::with_capacity(req.members.len());
        for m in req.members {
            let code = if m.member_id.is_empty() {
                // Administrative removal by instance id.
                match m.group_instance_id.as_ref().and_then(|i| group.static_members.get(i).cloned()) {
                    Some(current) => {
                        self.remove_member_and_update_group(&mut group, &current, now_ms, &mut out);
                        errors::NONE
                    }
                    None => errors::UNKNOWN_MEMBER_ID,
                }
            } else if let Some(deadline) = group.pending_members.remove(&m.member_id) {
                self.timers.remove(deadline, Timer::PendingMember(group.id.clone(), m.member_id.clone()));
                if group.is(GroupState::PreparingRebalance) {
                    self.try_complete_join(&mut group, now_ms, &mut out);
                }
                errors::NONE
            } else {
                match validate_current_member(&group, &m.member_id, m.group_instance_id.as_deref()) {
                    Some(code) => code,
                    None => {
                        self.remove_member_and_update_group(&mut group, &m.member_id, now_ms, &mut out);
                        errors::NONE
                    }
                }
            };
            responses.push(LeaveMemberResponse {
                member_id: m.member_id,
                group_instance_id: m.group_instance_id,
                error_code: code,
            });
        }
        leave_reply(&mut out, errors::NONE, responses);
        self.put_back(group);
        out
    }
}

/// The current generation's JoinGroup answer for `member_id`.
fn current_generation(group: &Group, member_id: &str, members: Vec<JoinGroupMember>) -> JoinGroupResponse {
    JoinGroupResponse {
        error_code: errors::NONE,
        generation_id: group.generation,
        protocol_type: group.protocol_type.clone(),
        protocol_name: group.protocol_name.clone(),
        leader: group.leader.clone().unwrap_or_default(),
        skip_assignment: false,
        member_id: member_id.to_owned(),
        members,
    }
}

/// Kafka's `validateCurrentMember`: a given instance id must map to this member id, and the
/// member must exist.
pub(crate) fn validate_current_member(group: &Group, member_id: &str, instance_id: Option<&str>) -> Option<i16> {
    match instance_id {
        Some(instance_id) => match group.static_members.get(instance_id) {
            Some(current) if current != member_id => Some(errors::FENCED_INSTANCE_ID),
            Some(_) => None,
            None => Some(errors::UNKNOWN_MEMBER_ID),
        },
        None if !group.members.contains_key(member_id) => Some(errors::UNKNOWN_MEMBER_ID),
        None => None,
    }
}

fn validate_sync(group: &Group, req: &SyncGroupRequest) -> Option<i16> {
    if group.is(GroupState::Dead) {
        return Some(errors::COORDINATOR_NOT_AVAILABLE);
    }
    let instance_id = if req.version >= 3 { req.group_instance_id.as_deref() } else { None };
    validate_current_member(group, &req.member_id, instance_id).or_else(|| {
        if req.generation_id != group.generation {
            Some(errors::ILLEGAL_GENERATION)
        } else if req.protocol_type.as_ref().is_some_and(|t| group.protocol_type.as_ref() != Some(t))
            || req.protocol_name.as_ref().is_some_and(|n| group.protocol_name.as_ref() != Some(n))
        {
            Some(errors::INCONSISTENT_GROUP_PROTOCOL)
        } else {
            None
        }
    })
}
