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
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tern_group::{AppendToken, Command, GroupConfig, GroupCoordinator, ReplyTo, Response};
use tokio::sync::{oneshot, Notify};

use crate::offsets_topic::{self, KeyValue};
use crate::topics::Partition;
use crate::{now_ms, BrokerConfig};

/// Kafka's error for an append that failed on the coordinator's own log.
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
/// Upper bound on appends written in one go by a partition's appender.
const MAX_APPENDS_PER_WRITE: usize = 1024;
static OFFLINE_REFUSALS: crate::log_limit::LogLimiter = crate::log_limit::LogLimiter::new();

pub struct GroupService {
    state: Mutex<State>,
    /// The `__consumer_offsets` partitions, by index.
    partitions: Vec<Arc<Partition>>,
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
        GroupService { state: Mutex::new(state), partitions, timers_changed: Notify::new() }
    }

    /// Whether the `__consumer_offsets` partition that owns `group_id` is offline: the group
    /// is then answered COORDINATOR_NOT_AVAILABLE, as Kafka answers for a coordinator partition
    /// without a leader.
    pub(crate) fn coordinator_unavailable(&self, group_id: &str) -> bool {
        let index = tern_group::partition_for(group_id, self.partitions.len() as i32);
        let offline = self.partitions.get(index as usize).is_none_or(|p| p.offline_reason().is_some());
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
                    let result = match service.partitions.get(partition as usize) {
                        Some(p) => append_batches(p, &appends).inspect(|()| p.appended()),
                        None => Err(COORDINATOR_NOT_AVAILABLE),
                    };
                    outcomes.extend(appends.iter().map(|a| (a.token, result)));
                }
                let mut state = service.lock();
                let now = now_ms();
                for (token, result) in outcomes {
                    let commands = state.coordinator.append_completed(token, result, now);
                    service.execute(&mut state, commands);
                }
                drop(state);
                service.timers_changed.notify_one();
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the {} writer thread", offsets_topic::OFFSETS_TOPIC);
        }
        tx
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

/// Writes several appends as consecutive batches in one storage append.
fn append_batches(partition: &Partition, appends: &[PendingAppend]) -> Result<(), i16> {
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
        return Ok(());
    }
    let input: Bytes = input.freeze();
    partition.log.append(&input, partition.leader_epoch(), now).map(|_| ()).map_err(|e| {
        tracing::error!(partition = partition.index, error = %e, "append to {} failed", offsets_topic::OFFSETS_TOPIC);
        COORDINATOR_NOT_AVAILABLE
    })
}
