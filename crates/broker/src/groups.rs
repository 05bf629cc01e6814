//! The driver of the sans-io group coordinator (`tern-group`): it feeds requests and the clock
//! into the state machine and carries out the commands it returns: replies go to the waiting
//! handler, appends go to the `__consumer_offsets` partition logs.
//!
//! Invariants:
//! - The coordinator sits behind a plain mutex that is never held across an `.await` or any I/O;
//!   executing commands under it only sends on channels.
//! - Appends to `__consumer_offsets` happen in command order: one writer thread, fed by a
//!   channel, writes everything queued at once (one storage append of several batches per
//!   partition, one fsync where the flush policy asks for it) and only then reports each
//!   append's outcome back to the coordinator. It is not a socket-serving thread, so its disk
//!   I/O never delays other clients.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tern_group::{AppendToken, Command, GroupConfig, GroupCoordinator, ReplyTo, Response};
use tokio::sync::{oneshot, Notify};

use crate::offsets_topic::{self, KeyValue};
use crate::topics::Partition;
use crate::{now_ms, BrokerConfig};

/// Kafka's error for an append that failed on the coordinator's own log.
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
/// Kafka's error when the coordinator's partition is no longer led here.
const NOT_COORDINATOR: i16 = 16;
/// Kafka's NOT_LEADER_OR_FOLLOWER, as the replica state machine answers a lost leadership.
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
/// How long a write to `__consumer_offsets` waits for the ISR (`offsets.commit.timeout.ms`).
const OFFSETS_COMMIT_TIMEOUT_MS: i64 = 5000;
/// Upper bound on appends written in one go by a partition's appender.
const MAX_APPENDS_PER_WRITE: usize = 1024;
static OFFLINE_REFUSALS: crate::log_limit::LogLimiter = crate::log_limit::LogLimiter::new();

pub struct GroupService {
    state: Mutex<State>,
    /// The `__consumer_offsets` partitions whose groups this broker coordinates, by index
    /// (`None`: not led here). On a single node every one.
    partitions: RwLock<Vec<Option<Arc<Partition>>>>,
    /// Where a write waits for the ISR without holding the writer thread.
    runtime: Option<tokio::runtime::Handle>,
    /// Woken whenever the coordinator's next deadline may have moved earlier.
    timers_changed: Notify,
}

struct State {
    coordinator: GroupCoordinator,
    next_reply: ReplyTo,
    waiting: HashMap<ReplyTo, oneshot::Sender<Response>>,
    /// The `__consumer_offsets` writer thread, started on first use.
    writer: Option<std::sync::mpsc::Sender<PendingAppend>>,
}

/// The coordinator's settings. Groups are placed by the real partition count of
/// `__consumer_offsets`, never by `offsets.topic.num.partitions` (which only applies when the
/// topic is created), as in Kafka: otherwise changing the setting would move groups away from
/// their offsets.
pub(crate) fn group_config(config: &BrokerConfig, offsets_partitions: i32) -> GroupConfig {
    let get = |key: &str, default: i64| config.get_i64(key).unwrap_or(default);
    let defaults = GroupConfig::default();
    GroupConfig {
        group_min_session_timeout_ms: get("group.min.session.timeout.ms", 6000) as i32,
        group_max_session_timeout_ms: get("group.max.session.timeout.ms", 1_800_000) as i32,
        group_initial_rebalance_delay_ms: get("group.initial.rebalance.delay.ms", 3000) as i32,
        group_max_size: get("group.max.size", i32::MAX as i64) as i32,
        offsets_retention_minutes: get("offsets.retention.minutes", 10080) as i32,
        offsets_retention_check_interval_ms: get("offsets.retention.check.interval.ms", 600_000),
        offsets_topic_num_partitions: offsets_partitions,
        ..defaults
    }
}

impl GroupService {
    /// A coordinator that starts from `stored[i]`, the records of `__consumer_offsets`
    /// partition `partitions[i]`, oldest first (`None`: the partition is offline and its
    /// groups are not served).
    pub(crate) fn new(
        config: GroupConfig,
        partitions: Vec<Arc<Partition>>,
        stored: Vec<Option<Vec<KeyValue>>>,
    ) -> GroupService {
        let mut coordinator = GroupCoordinator::new(config);
        let now = now_ms();
        for (p, records) in partitions.iter().zip(stored) {
            let Some(records) = records else { continue };
            coordinator.begin_loading(p.index);
            let summary = coordinator.load_partition(p.index, records.into_iter(), now);
            if summary.groups + summary.offsets + summary.skipped_corrupt > 0 {
                tracing::info!(partition = p.index, ?summary, "loaded {}", offsets_topic::OFFSETS_TOPIC);
            }
        }
        let state = State { coordinator, next_reply: 0, waiting: HashMap::new(), writer: None };
        GroupService {
            state: Mutex::new(state),
            partitions: RwLock::new(partitions.into_iter().map(Some).collect()),
            runtime: tokio::runtime::Handle::try_current().ok(),
            timers_changed: Notify::new(),
        }
    }

    /// A cluster node's coordinator: it serves the groups of a `__consumer_offsets` partition
    /// while this broker leads it ([`GroupService::became_leader`]).
    pub(crate) fn for_cluster(config: GroupConfig) -> GroupService {
        let count = config.offsets_topic_num_partitions.max(1) as usize;
        let service = GroupService::new(config, Vec::new(), Vec::new());
        *service.partitions.write().unwrap_or_else(|e| e.into_inner()) = vec![None; count];
        service
    }

    /// The `__consumer_offsets` partition that holds `group_id`.
    pub(crate) fn partition_for(&self, group_id: &str) -> i32 {
        self.lock().coordinator.partition_for(group_id)
    }

    fn partition(&self, index: i32) -> Option<Arc<Partition>> {
        let partitions = self.partitions.read().unwrap_or_else(|e| e.into_inner());
        usize::try_from(index).ok().and_then(|i| partitions.get(i).cloned().flatten())
    }

    /// This broker now leads `partition` of `__consumer_offsets`: load its groups from the log
    /// (they answer COORDINATOR_LOAD_IN_PROGRESS meanwhile). Blocking.
    pub(crate) fn became_leader(self: &Arc<Self>, partition: Arc<Partition>) {
        let index = partition.index;
        {
            let mut partitions = self.partitions.write().unwrap_or_else(|e| e.into_inner());
            match usize::try_from(index).ok().and_then(|i| partitions.get_mut(i)) {
                Some(slot) => *slot = Some(partition.clone()),
                None => {
                    tracing::error!(partition = index, count = partitions.len(),
                        "{} has more partitions than offsets.topic.num.partitions on this broker: its groups are not served here", offsets_topic::OFFSETS_TOPIC);
                    return;
                }
            }
        }
        self.lock().coordinator.begin_loading(index);
        let records = offsets_topic::load_partition(&partition);
        let mut state = self.lock();
        let commands = state.coordinator.unload_partition(index);
        self.execute(&mut state, commands);
        if let Some(records) = records {
            let summary = state.coordinator.load_partition(index, records.into_iter(), now_ms());
            tracing::info!(
                partition = index,
                ?summary,
                "became the coordinator of a {} partition",
                offsets_topic::OFFSETS_TOPIC
            );
        }
        drop(state);
        self.timers_changed.notify_one();
    }

    /// This broker no longer leads `index` of `__consumer_offsets`: its groups move with it.
    pub(crate) fn resigned(self: &Arc<Self>, index: i32) {
        if let Some(slot) = self.partitions.write().unwrap_or_else(|e| e.into_inner()).get_mut(index as usize) {
            *slot = None;
        }
        let mut state = self.lock();
        let commands = state.coordinator.unload_partition(index);
        self.execute(&mut state, commands);
        tracing::info!(partition = index, "no longer the coordinator of a {} partition", offsets_topic::OFFSETS_TOPIC);
    }

    /// Whether the `__consumer_offsets` partition that owns `group_id` is offline: the group
    /// is then answered COORDINATOR_NOT_AVAILABLE, as Kafka answers for a coordinator partition
    /// without a leader.
    pub(crate) fn coordinator_unavailable(&self, group_id: &str) -> bool {
        let index = self.partition_for(group_id);
        // A partition not led here is the coordinator's to answer (NOT_COORDINATOR).
        let offline = self.partition(index).is_some_and(|p| p.offline_reason().is_some());
        if offline {
            if let Some(suppressed) = OFFLINE_REFUSALS.allow() {
                tracing::warn!(
                    group = group_id,
                    partition = index,
                    suppressed,
                    "group request refused: its {} partition is offline",
                    offsets_topic::OFFSETS_TOPIC
                );
            }
        }
        offline
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs a coordinator call whose answer may come later (JoinGroup, SyncGroup, OffsetCommit, ...).
    pub(crate) async fn call(
        self: &Arc<Self>,
        f: impl FnOnce(&mut GroupCoordinator, ReplyTo, i64) -> Vec<Command>,
    ) -> Option<Response> {
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.lock();
            let reply_to = state.next_reply;
            state.next_reply += 1;
            state.waiting.insert(reply_to, tx);
            let commands = f(&mut state.coordinator, reply_to, now_ms());
            self.execute(&mut state, commands);
        }
        self.timers_changed.notify_one();
        rx.await.ok()
    }

    /// Runs a coordinator call that answers at once (Heartbeat, OffsetFetch, ListGroups, ...).
    pub(crate) fn query<T>(&self, f: impl FnOnce(&mut GroupCoordinator, i64) -> T) -> T {
        let result = f(&mut self.lock().coordinator, now_ms());
        self.timers_changed.notify_one();
        result
    }

    fn execute(self: &Arc<Self>, state: &mut State, commands: Vec<Command>) {
        for command in commands {
            match command {
                Command::Reply(reply_to, response) => {
                    if let Some(tx) = state.waiting.remove(&reply_to) {
                        let _ = tx.send(response); // the client may have gone
                    }
                }
                Command::Append { partition, records, token } => {
                    let writer = state.writer.get_or_insert_with(|| self.start_writer());
                    if let Err(failed) = writer.send(PendingAppend { partition, token, records }) {
                        state.writer = None;
                        let token = failed.0.token;
                        let commands =
                            state.coordinator.append_completed(token, Err(COORDINATOR_NOT_AVAILABLE), now_ms());
                        self.execute(state, commands);
                    }
                }
            }
        }
    }

    /// Starts the thread that writes `__consumer_offsets`. One thread, fed by a channel: appends
    /// to a partition stay in command order, everything queued is written together (one
    /// storage append per partition), and there is no thread hand-off per append as there
    /// would be with the blocking pool.
    fn start_writer(self: &Arc<Self>) -> std::sync::mpsc::Sender<PendingAppend> {
        let (tx, rx) = std::sync::mpsc::channel::<PendingAppend>();
        let service = Arc::downgrade(self);
        let spawned = std::thread::Builder::new().name("offsets-writer".into()).spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut queued = vec![first];
                queued.extend(rx.try_iter().take(MAX_APPENDS_PER_WRITE));
                let Some(service) = service.upgrade() else { return };
                // Group by partition, keeping each partition's order.
                let mut by_partition: Vec<(i32, Vec<PendingAppend>)> = Vec::new();
                for append in queued {
                    match by_partition.iter_mut().find(|(p, _)| *p == append.partition) {
                        Some((_, list)) => list.push(append),
                        None => by_partition.push((append.partition, vec![append])),
                    }
                }
                let mut outcomes = Vec::new();
                for (partition, appends) in by_partition {
                    let tokens: Vec<AppendToken> = appends.iter().map(|a| a.token).collect();
                    let written = match service.partition(partition) {
                        Some(p) => append_batches(&p, &appends).map(|end| (p, end)),
                        None => Err(NOT_COORDINATOR),
                    };
                    match written {
                        // Complete once the ISR has the records (Kafka's acks=-1 for
                        // `__consumer_offsets`): at once on a single node.
                        Ok((p, end)) => {
                            let mut replicated = p.await_replication(end, OFFSETS_COMMIT_TIMEOUT_MS);
                            match (replicated.try_recv(), &service.runtime) {
                                (Ok(code), _) => outcomes.extend(tokens.iter().map(|t| (*t, replication_result(code)))),
                                (Err(_), Some(runtime)) => {
                                    let service = service.clone();
                                    runtime.spawn(async move {
                                        let code = replicated.await.unwrap_or(NOT_LEADER_OR_FOLLOWER);
                                        service.complete(tokens.into_iter().map(|t| (t, replication_result(code))));
                                    });
                                }
                                (Err(_), None) => {
                                    outcomes.extend(tokens.iter().map(|t| (*t, Err(COORDINATOR_NOT_AVAILABLE))))
                                }
                            }
                        }
                        Err(code) => outcomes.extend(tokens.iter().map(|t| (*t, Err(code)))),
                    }
                }
                service.complete(outcomes.into_iter());
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the {} writer thread", offsets_topic::OFFSETS_TOPIC);
        }
        tx
    }

    /// Reports appends' outcomes to the coordinator.
    fn complete(self: &Arc<Self>, outcomes: impl Iterator<Item = (AppendToken, Result<(), i16>)>) {
        let mut state = self.lock();
        let now = now_ms();
        for (token, result) in outcomes {
            let commands = state.coordinator.append_completed(token, result, now);
            self.execute(&mut state, commands);
        }
        drop(state);
        self.timers_changed.notify_one();
    }

    /// Calls `tick` whenever the coordinator's next deadline passes (session timeouts,
    /// rebalance timeouts, offset expiry). Runs until the process ends.
    pub(crate) async fn run_timers(self: Arc<Self>) {
        loop {
            let deadline = self.lock().coordinator.next_deadline();
            let wait = match deadline {
                Some(d) => Duration::from_millis((d - now_ms()).clamp(0, 60_000) as u64),
                None => Duration::from_secs(60),
            };
            if !wait.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.timers_changed.notified() => continue,
                }
            }
            let mut state = self.lock();
            let commands = state.coordinator.tick(now_ms());
            self.execute(&mut state, commands);
        }
    }
}

/// An append the coordinator asked for, on its way to the writer thread.
struct PendingAppend {
    partition: i32,
    token: AppendToken,
    records: Vec<KeyValue>,
}

/// Kafka's mapping of a `__consumer_offsets` write's replication outcome
/// (GroupMetadataManager): lost leadership is NOT_COORDINATOR, the rest COORDINATOR_NOT_AVAILABLE.
fn replication_result(code: i16) -> Result<(), i16> {
    match code {
        0 => Ok(()),
        NOT_LEADER_OR_FOLLOWER => Err(NOT_COORDINATOR),
        _ => Err(COORDINATOR_NOT_AVAILABLE),
    }
}

/// Writes several appends as consecutive batches in one storage append, as the partition's
/// leader; returns the log end offset after them.
fn append_batches(partition: &Partition, appends: &[PendingAppend]) -> Result<i64, i16> {
    let now = now_ms();
    let mut input = BytesMut::new();
    for PendingAppend { records, .. } in appends {
        let batch = offsets_topic::encode_batch(records, now).map_err(|e| {
            tracing::error!(error = %e, "cannot encode {} records", offsets_topic::OFFSETS_TOPIC);
            COORDINATOR_NOT_AVAILABLE
        })?;
        input.extend_from_slice(&batch);
    }
    if input.is_empty() {
        return Ok(partition.log.log_end_offset());
    }
    let input: Bytes = input.freeze();
    // Only the leader writes: leadership may have moved since the coordinator decided.
    let leader_epoch = partition.leading_epoch().map_err(|_| NOT_COORDINATOR)?;
    let info = partition.log.append(&input, leader_epoch, now).map_err(|e| {
        tracing::error!(partition = partition.index, error = %e, "append to {} failed", offsets_topic::OFFSETS_TOPIC);
        COORDINATOR_NOT_AVAILABLE
    })?;
    partition.appended();
    Ok(info.last_offset + 1)
}
