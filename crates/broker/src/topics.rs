//! The topics this broker hosts: names, ids, partition logs and per-topic config overrides.
//!
//! On disk (see ARCHITECTURE.md, "The data directory"):
//! - `<data-dir>/.topics/<topic>.properties` (`<topic id>.properties` for names too long for
//!   that): a topic's name, id, partition count and config overrides, written atomically. While an operation is under way it also records it
//!   (`pending.operation`), so that a crash halfway is rolled back (create, add partitions) or
//!   finished (delete) at the next start, touching only what that operation created.
//! - `<data-dir>/<topic>-<partition>/`: a partition log, with Kafka's `partition.metadata`
//!   marker naming its topic id. The directories and their markers are the truth: metadata that
//!   disagrees with them makes the topic offline (`Topic::offline`), never deletes a partition.
//!
//! Loading at start-up is in `topic_load.rs`.

use std::collections::BTreeSet;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tern_partition::{Effect, LeaderAndIsr, LocalLog, Partition as ReplicaState, PartitionConfig, RequestId};
use tern_storage::{Log, LogConfig, StorageError};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::datadir::{self, DataDirError};
use crate::now_ms;
use crate::waiters::Waiters;

pub use crate::datadir::write_atomically;

/// Kafka's internal topics (`Topic.isInternal`): clients may not produce to them.
const INTERNAL_TOPICS: &[&str] = &["__consumer_offsets", "__transaction_state", "__share_group_state"];
/// Kafka's UNKNOWN_TOPIC_OR_PARTITION.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
/// Where topic metadata files live, inside the data directory.
pub(crate) const TOPICS_DIR: &str = ".topics";

/// Effects of a partition's replica state machine that need the network: carried out by the
/// cluster runtime (`cluster/`). A single node has none.
#[derive(Debug)]
pub(crate) enum ReplicaEvent {
    AlterPartition { topic: String, index: i32, proposal: tern_partition::AlterPartitionProposal },
    FetchFrom { topic: String, index: i32, leader_id: i32, leader_epoch: i32 },
    StopFetching { topic: String, index: i32 },
}

/// One replica of a partition on this broker: its log and its replica state machine (leader or
/// follower, ISR, high watermark). On a single node it leads alone.
pub struct Partition {
    pub topic: String,
    pub topic_id: Uuid,
    pub index: i32,
    pub log: Log,
    /// Fetches long-polling this partition, woken by its appends and high-watermark moves.
    pub(crate) waiters: Waiters,
    /// This replica's state (role, ISR, high watermark): the only writer of the log's HW.
    replica: Mutex<ReplicaState>,
    /// acks=all produces waiting for the ISR (Kafka's DelayedProduce), by request id.
    produce_waiters: Mutex<HashMap<RequestId, oneshot::Sender<i16>>>,
    next_request_id: AtomicU64,
    /// Where network effects go in a cluster; `None` on a single node.
    events: Option<mpsc::UnboundedSender<ReplicaEvent>>,
}

impl Partition {
    /// A partition led by this broker alone: replicas and ISR are `[node_id]`. Opening it
    /// commits what the log holds (with no followers the leader's log end is the HW).
    pub fn new(topic: &str, topic_id: Uuid, index: i32, log: Log, node_id: i32) -> Partition {
        let partition =
            Partition::new_replica(topic, topic_id, index, log, node_id, -1, PartitionConfig::default(), None);
        let alone = LeaderAndIsr {
            leader: node_id,
            leader_epoch: 0,
            partition_epoch: 0,
            replicas: vec![node_id],
            isr: BTreeSet::from([node_id]),
        };
        partition.apply_leader_and_isr(&alone);
        partition
    }

    /// A replica whose role the controller has yet to give ([`Partition::apply_leader_and_isr`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new_replica(
        topic: &str,
        topic_id: Uuid,
        index: i32,
        log: Log,
        node_id: i32,
        broker_epoch: i64,
        config: PartitionConfig,
        events: Option<mpsc::UnboundedSender<ReplicaEvent>>,
    ) -> Partition {
        let epochs = tern_partition::LeaderEpochCache::from_entries(
            log.epoch_entries()
                .into_iter()
                .map(|(epoch, start_offset)| tern_partition::EpochEntry { epoch, start_offset }),
        );
        let local = LocalLog {
            log_start_offset: log.log_start_offset(),
            log_end_offset: log.log_end_offset(),
            high_watermark: log.high_watermark(),
            epochs,
        };
        Partition {
            topic: topic.to_string(),
            topic_id,
            index,
            log,
            waiters: Waiters::default(),
            replica: Mutex::new(ReplicaState::new(node_id, broker_epoch, config, local)),
            produce_waiters: Mutex::new(HashMap::new()),
            next_request_id: AtomicU64::new(0),
            events,
        }
    }

    /// The controller's state of this partition: become (or stay) leader or follower.
    pub(crate) fn apply_leader_and_isr(&self, state: &LeaderAndIsr) {
        let mut replica = self.replica();
        let effects = replica.apply_leader_and_isr(state, now_ms());
        self.execute(effects);
    }

    pub(crate) fn update_brokers(&self, brokers: BTreeMap<i32, tern_partition::BrokerRegistration>) {
        self.replica().update_brokers(brokers);
    }

    pub(crate) fn alter_partition_completed(
        &self,
        proposal_id: tern_partition::ProposalId,
        result: Result<LeaderAndIsr, i16>,
    ) {
        let mut replica = self.replica();
        let effects = replica.alter_partition_completed(proposal_id, result, now_ms());
        self.execute(effects);
    }

    /// Timers: ISR shrink, acks=all deadlines.
    pub(crate) fn tick(&self) {
        let mut replica = self.replica();
        let effects = replica.tick(now_ms());
        self.execute(effects);
    }

    /// The leader epoch this replica knows (stamped on appends when it leads).
    pub fn leader_epoch(&self) -> i32 {
        self.replica().leader_epoch()
    }

    /// The leader epoch to stamp on the broker's own appends (`__consumer_offsets`), or
    /// NOT_LEADER_OR_FOLLOWER.
    pub(crate) fn leading_epoch(&self) -> Result<i32, i16> {
        let replica = self.replica();
        replica.check_leader_epoch(None, true).map(|()| replica.leader_epoch())
    }

    pub(crate) fn is_leader(&self) -> bool {
        self.replica().is_leader()
    }

    /// (leader id, leader epoch, replicas, ISR) as this replica knows them.
    pub(crate) fn leadership(&self) -> (Option<i32>, i32, Vec<i32>, Vec<i32>) {
        let r = self.replica();
        (r.leader_id(), r.leader_epoch(), r.replicas().to_vec(), r.isr().iter().copied().collect())
    }

    /// Kafka's leader-epoch check of a request (see [`ReplicaState::check_leader_epoch`]).
    pub(crate) fn check_leader_epoch(
        &self,
        current_leader_epoch: Option<i32>,
        require_leader: bool,
    ) -> Result<(), i16> {
        self.replica().check_leader_epoch(current_leader_epoch, require_leader)
    }

    /// OffsetForLeaderEpoch on this replica.
    pub(crate) fn last_offset_for_leader_epoch(
        &self,
        current_leader_epoch: Option<i32>,
        leader_epoch: i32,
        fetch_only_from_leader: bool,
    ) -> Result<tern_partition::EpochEndOffset, i16> {
        self.replica().last_offset_for_leader_epoch(current_leader_epoch, leader_epoch, fetch_only_from_leader)
    }

    /// Records were appended as leader: the replica state machine decides how far they are
    /// committed; fetches waiting on this partition (followers among them) read again.
    pub(crate) fn appended(&self) {
        let mut replica = self.replica();
        let effects = replica.leader_appended(self.log.log_end_offset(), now_ms());
        self.execute(effects);
        drop(replica);
        self.wake_fetches();
    }

    /// An acks=all produce whose records end before `required_offset` waits for the ISR: the
    /// receiver gets its error code (NONE once the high watermark passes it).
    pub(crate) fn await_replication(&self, required_offset: i64, timeout_ms: i64) -> oneshot::Receiver<i16> {
        let (tx, rx) = oneshot::channel();
        let request_id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        self.produce_waiters.lock().unwrap_or_else(|e| e.into_inner()).insert(request_id, tx);
        let mut replica = self.replica();
        let effects = replica.await_replication(request_id, required_offset, now_ms().saturating_add(timeout_ms));
        self.execute(effects);
        rx
    }

    /// Answers every acks=all produce still waiting on this replica with `error_code` (its
    /// topic is gone: they need not wait for their timeout).
    pub(crate) fn fail_waiting_produces(&self, error_code: i16) {
        let waiting = std::mem::take(&mut *self.produce_waiters.lock().unwrap_or_else(|e| e.into_inner()));
        for (_, tx) in waiting {
            let _ = tx.send(error_code);
        }
    }

    /// A follower's Fetch of this partition, on the leader.
    pub(crate) fn follower_fetch(
        &self,
        fetch: &tern_partition::FollowerFetch,
    ) -> Result<tern_partition::FollowerFetchAnswer, i16> {
        let mut replica = self.replica();
        let (answer, effects) = replica.follower_fetch(fetch, now_ms());
        self.execute(effects);
        answer
    }

    /// A follower's fetcher appended what the leader sent.
    pub(crate) fn fetched_from_leader(&self, fetched: &tern_partition::FetchedFromLeader) {
        let mut replica = self.replica();
        let effects = replica.apply_fetch_response(fetched);
        self.execute(effects);
    }

    /// A follower truncated its log (diverging epoch), or restarted it at `offset` (`fully`).
    pub(crate) fn truncated(&self, offset: i64, fully: bool) {
        let mut replica = self.replica();
        let effects = if fully { replica.truncate_fully_and_start_at(offset) } else { replica.truncate_to(offset) };
        self.execute(effects);
    }

    /// The latest leader epoch in this replica's log, and its log end offset (a follower's
    /// fetch position).
    pub(crate) fn fetch_position(&self) -> (Option<i32>, i64) {
        let replica = self.replica();
        (replica.epochs().latest_epoch(), replica.log_end_offset())
    }

    /// Kafka's checks before a leader appends (NOT_LEADER_OR_FOLLOWER, NOT_ENOUGH_REPLICAS for
    /// acks=all under the effective `min.insync.replicas`, which is capped by the replication
    /// factor as in Kafka 3.7+). The topic's current setting is applied first.
    /// Returns the leader epoch to stamp on the append.
    pub(crate) fn check_append(&self, acks: i16, min_insync_replicas: i32) -> Result<i32, i16> {
        let mut replica = self.replica();
        if replica.config().min_insync_replicas != min_insync_replicas {
            let config = PartitionConfig { min_insync_replicas, ..*replica.config() };
            let effects = replica.update_config(config, now_ms());
            self.execute(effects);
        }
        replica.check_append(acks).map(|()| replica.leader_epoch())
    }

    fn replica(&self) -> std::sync::MutexGuard<'_, ReplicaState> {
        self.replica.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Carries out the replica state machine's effects; called with its lock held, so HW
    /// changes reach the log in the order they were decided.
    fn execute(&self, effects: Vec<Effect>) {
        for effect in effects {
            let event = match effect {
                Effect::HighWatermarkChanged { high_watermark } => {
                    self.log.set_high_watermark(high_watermark);
                    self.wake_fetches();
                    continue;
                }
                Effect::CompleteProduce { request_id, error_code } => {
                    let waiter = self.produce_waiters.lock().unwrap_or_else(|e| e.into_inner()).remove(&request_id);
                    // The produce may have stopped waiting (its connection closed).
                    if let Some(tx) = waiter {
                        let _ = tx.send(error_code);
                    }
                    continue;
                }
                Effect::AlterPartition(proposal) => {
                    ReplicaEvent::AlterPartition { topic: self.topic.clone(), index: self.index, proposal }
                }
                Effect::FetchFrom { leader_id, leader_epoch } => {
                    ReplicaEvent::FetchFrom { topic: self.topic.clone(), index: self.index, leader_id, leader_epoch }
                }
                Effect::StopFetching => ReplicaEvent::StopFetching { topic: self.topic.clone(), index: self.index },
            };
            match &self.events {
                Some(events) => {
                    if events.send(event).is_err() {
                        tracing::debug!(topic = %self.topic, partition = self.index, "replica event after the cluster runtime stopped");
                    }
                }
                None => {
                    tracing::debug!(topic = %self.topic, partition = self.index, ?event, "replica effect not used by a single node")
                }
            }
        }
    }

    /// Why this partition does not serve (its log is offline), `None` while it does.
    pub fn offline_reason(&self) -> Option<String> {
        self.log.offline_reason()
    }

    /// Wakes the fetches waiting for this partition: call after it has new records or is gone.
    pub(crate) fn wake_fetches(&self) {
        self.waiters.wake();
    }
}

/// A topic: immutable snapshot; changes replace the `Arc<Topic>` in the registry.
pub struct Topic {
    pub name: String,
    pub id: Uuid,
    pub configs: BTreeMap<String, String>,
    /// The replicas this broker hosts, sorted by index: every partition on a single node,
    /// those assigned to it in a cluster.
    pub partitions: Vec<Arc<Partition>>,
    /// How many partitions the topic has (on every broker).
    pub partition_count: i32,
    pub internal: bool,
    /// Why the whole topic is offline: its metadata file and its partition directories
    /// disagree (the reason names the files). Its partitions are then offline placeholders,
    /// and it can be neither changed nor deleted until an operator repairs the files.
    pub offline: Option<String>,
}

impl Topic {
    /// The local replica of partition `index`, if this broker hosts it.
    pub fn partition(&self, index: i32) -> Option<&Arc<Partition>> {
        self.partitions.binary_search_by_key(&index, |p| p.index).ok().map(|i| &self.partitions[i])
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("Topic '{0}' already exists.")]
    AlreadyExists(String),
    #[error("Topic '{0}' does not exist.")]
    UnknownTopic(String),
    #[error("{0}")]
    InvalidName(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("Topic '{topic}' is offline: {reason}")]
    Offline { topic: String, reason: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    DataDir(#[from] DataDirError),
}

impl TopicError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(io::Error) -> TopicError + '_ {
        move |source| TopicError::DataDir(DataDirError::Io { path: path.to_path_buf(), source })
    }
}

/// Kafka's topic name rule: 1..=249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    let invalid = |why: &str| Err(TopicError::InvalidName(format!("Topic name \"{name}\" is illegal, {why}")));
    if name.is_empty() {
        return invalid("it can't be empty");
    }
    if name == "." || name == ".." {
        return invalid("it can't be '.' or '..'");
    }
    if name.len() > 249 {
        return invalid("it can't be longer than 249 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') {
        return invalid("it contains a character other than ASCII alphanumerics, '.', '_' and '-'");
    }
    Ok(())
}

/// Whether `name` is one of Kafka's internal topics.
pub fn is_internal(name: &str) -> bool {
    INTERNAL_TOPICS.contains(&name)
}

/// An operation recorded in a topic's metadata file while it is under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pending {
    /// Creating the topic with this many partitions (`partitions` is still 0).
    Create(i32),
    /// Growing the topic to this many partitions.
    AddPartitions(i32),
    /// Deleting the topic.
    Delete,
}

/// The content of a topic's metadata file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    pub configs: BTreeMap<String, String>,
    pub pending: Option<Pending>,
}

impl TopicMeta {
    pub(crate) fn encode(&self) -> String {
        let mut text = format!(
            "# Tern topic metadata. The partition directories' partition.metadata files must agree with it.\n\
             topic.name={}\ntopic.id={}\npartitions={}\n",
            self.name, self.id, self.partitions
        );
        match self.pending {
            None => {}
            Some(Pending::Create(n)) => text.push_str(&format!("pending.operation=create\npending.partitions={n}\n")),
            Some(Pending::AddPartitions(n)) => {
                text.push_str(&format!("pending.operation=add-partitions\npending.partitions={n}\n"))
            }
            Some(Pending::Delete) => text.push_str("pending.operation=delete\n"),
        }
        for (k, v) in &self.configs {
            text.push_str(&format!("config.{k}={v}\n"));
        }
        text
    }
}

/// The metadata file of a topic: named after the topic, or after its id when the name is too
/// long for that (with `.properties.tmp`, Kafka's longest names exceed 255 bytes).
pub(crate) fn meta_path(data_dir: &Path, name: &str, id: Uuid) -> PathBuf {
    let file =
        if name.len() <= MAX_NAME_FOR_META_FILE { format!("{name}.properties") } else { format!("{id}.properties") };
    data_dir.join(TOPICS_DIR).join(file)
}

/// The longest topic name whose metadata file (and its temporary twin) fit in 255 bytes.
const MAX_NAME_FOR_META_FILE: usize = 255 - ".properties.tmp".len();

pub(crate) fn partition_dir(data_dir: &Path, topic: &str, index: i32) -> PathBuf {
    data_dir.join(datadir::partition_dir_name(topic, index))
}

pub struct TopicRegistry {
    pub(crate) data_dir: PathBuf,
    /// This broker's `node.id`: the one replica of every partition.
    pub(crate) node_id: i32,
    pub(crate) by_name: RwLock<HashMap<String, Arc<Topic>>>,
    /// Removes renamed (`-delete`) partition directories in the background.
    pub(crate) remover: DirRemover,
}

impl TopicRegistry {
    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.by_name.read().unwrap().get(name).cloned()
    }

    pub fn get_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.by_name.read().unwrap().values().find(|t| t.id == id).cloned()
    }

    /// All topics, sorted by name.
    pub fn all(&self) -> Vec<Arc<Topic>> {
        let mut v: Vec<_> = self.by_name.read().unwrap().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Creates a topic. Blocking; callers serialise admin operations. If it cannot complete,
    /// everything it created is removed again (and a crash halfway is rolled back at the next
    /// start).
    pub fn create(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
        log_config: &LogConfig,
    ) -> Result<Arc<Topic>, TopicError> {
        validate_topic_name(name)?;
        if self.get(name).is_some() {
            return Err(TopicError::AlreadyExists(name.to_string()));
        }
        self.check_collision(name)?;
        if partitions < 1 {
            return Err(TopicError::InvalidPartitions("Number of partitions must be larger than 0.".into()));
        }
        let mut meta = TopicMeta {
            name: name.to_string(),
            id: Uuid::new_v4(),
            partitions: 0,
            configs,
            pending: Some(Pending::Create(partitions)),
        };
        let path = meta_path(&self.data_dir, name, meta.id);
        if path.exists() {
            // Left by a deletion that could not finish; the next start finishes it.
            return Err(TopicError::DataDir(DataDirError::Invalid {
                path,
                message: "exists already: an earlier deletion of this topic is unfinished (a restart finishes it)"
                    .into(),
            }));
        }
        self.write_meta(&meta)?;
        let parts = self.create_partitions(&meta, 0..partitions, log_config)?;
        meta.partitions = partitions;
        meta.pending = None;
        if let Err(e) = self.write_meta(&meta) {
            let mut before = meta.clone();
            before.partitions = 0;
            self.roll_back(&before, parts, &e);
            return Err(e);
        }
        let topic = Arc::new(Topic {
            name: meta.name,
            id: meta.id,
            configs: meta.configs,
            partitions: parts,
            partition_count: partitions,
            internal: is_internal(name),
            offline: None,
        });
        self.by_name.write().unwrap().insert(name.to_string(), topic.clone());
        Ok(topic)
    }

    /// Grows a topic to `total` partitions (never shrinks); all or nothing, like `create`.
    pub fn add_partitions(&self, name: &str, total: i32, log_config: &LogConfig) -> Result<Arc<Topic>, TopicError> {
        let topic = self.get(name).ok_or_else(|| TopicError::UnknownTopic(name.into()))?;
        check_online(&topic)?;
        let current = topic.partition_count;
        if total <= current {
            return Err(TopicError::InvalidPartitions(format!(
                "Topic currently has {current} partitions, which is higher than the requested {total}."
            )));
        }
        let mut meta = meta_of(&topic);
        meta.pending = Some(Pending::AddPartitions(total));
        self.write_meta(&meta)?;
        let added = self.create_partitions(&meta, current..total, log_config)?;
        meta.partitions = total;
        meta.pending = None;
        if let Err(e) = self.write_meta(&meta) {
            let mut before = meta.clone();
            before.partitions = current;
            self.roll_back(&before, added, &e);
            return Err(e);
        }
        let mut parts = topic.partitions.clone();
        parts.extend(added);
        let topic = Arc::new(Topic {
            name: topic.name.clone(),
            id: topic.id,
            configs: topic.configs.clone(),
            partitions: parts,
            partition_count: total,
            internal: topic.internal,
            offline: None,
        });
        self.by_name.write().unwrap().insert(name.to_string(), topic.clone());
        Ok(topic)
    }

    /// Replaces a topic's config overrides and applies them to its logs.
    pub fn set_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
        log_config: &LogConfig,
    ) -> Result<(), TopicError> {
        let topic = self.get(name).ok_or_else(|| TopicError::UnknownTopic(name.into()))?;
        check_online(&topic)?;
        let topic = Arc::new(Topic {
            name: topic.name.clone(),
            id: topic.id,
            configs,
            partitions: topic.partitions.clone(),
            partition_count: topic.partition_count,
            internal: topic.internal,
            offline: None,
        });
        self.write_meta(&meta_of(&topic))?;
        for p in &topic.partitions {
            p.log.update_config(log_config.clone());
        }
        self.by_name.write().unwrap().insert(name.to_string(), topic);
        Ok(())
    }

    /// Deletes a topic. Once its metadata records the deletion (the commit point), the topic
    /// is gone: every log is marked deleted under its writer lock (in-flight appends and
    /// cleaning finish first, nothing starts after), each directory is renamed to Kafka's
    /// delete name and removed in the background after `file.delete.delay.ms`. A re-created
    /// topic gets a new id and new directories, so it can never open the old files.
    pub fn delete(&self, name: &str, file_delete_delay_ms: i64) -> Result<(), TopicError> {
        let topic = self.get(name).ok_or_else(|| TopicError::UnknownTopic(name.into()))?;
        check_online(&topic)?;
        let mut meta = meta_of(&topic);
        meta.pending = Some(Pending::Delete);
        self.write_meta(&meta)?;
        self.by_name.write().unwrap().remove(name);
        for p in &topic.partitions {
            p.log.mark_deleted();
            // Fetches waiting on it answer now (UNKNOWN_TOPIC_OR_PARTITION), not at their timeout.
            p.wake_fetches();
        }
        let mut renamed = Vec::new();
        let mut complete = true;
        for p in &topic.partitions {
            let from = partition_dir(&self.data_dir, name, p.index);
            let to = self.data_dir.join(datadir::delete_dir_name(name, p.index));
            match fs::rename(&from, &to) {
                Ok(()) => renamed.push(to),
                Err(e) => {
                    complete = false;
                    tracing::error!(dir = %from.display(), error = %e,
                        "cannot rename a deleted partition's directory; the deletion is finished at the next start");
                }
            }
        }
        if let Err(e) = datadir::sync_dir(&self.data_dir) {
            complete = false;
            tracing::error!(dir = %self.data_dir.display(), error = %e, "cannot fsync the data directory");
        }
        if complete {
            let path = meta_path(&self.data_dir, name, topic.id);
            if let Err(e) = fs::remove_file(&path).and_then(|()| datadir::sync_dir(&self.data_dir.join(TOPICS_DIR))) {
                tracing::error!(file = %path.display(), error = %e, "cannot remove a deleted topic's metadata file");
            }
        }
        self.remover.remove_after(renamed, Duration::from_millis(file_delete_delay_ms.max(0) as u64));
        Ok(())
    }

    /// A cluster node's replica of `topic`-`index` as the metadata image assigns it: the local
    /// replica if open, else its directory opened (if its `partition.metadata` names `id`) or
    /// created. A directory naming another topic id makes the replica offline, naming the file;
    /// it is never removed. Blocking.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn ensure_cluster_replica(
        &self,
        name: &str,
        id: Uuid,
        index: i32,
        partition_count: i32,
        configs: &BTreeMap<String, String>,
        config: &crate::BrokerConfig,
        cluster: &crate::cluster::ClusterRuntime,
    ) -> Result<Arc<Partition>, TopicError> {
        let existing = self.get(name).filter(|t| t.id == id);
        if let Some(p) = existing.as_ref().and_then(|t| t.partition(index)) {
            if existing.as_ref().is_some_and(|t| t.partition_count == partition_count && &t.configs == configs) {
                return Ok(p.clone());
            }
        }
        let log_config = config.log_config(configs);
        let partition = match existing.as_ref().and_then(|t| t.partition(index)) {
            Some(p) => {
                p.log.update_config(log_config.clone());
                p.clone()
            }
            None => {
                let dir = partition_dir(&self.data_dir, name, index);
                let log = match datadir::read_partition_metadata(&dir) {
                    datadir::Marker::Topic(found) if found == id => Log::open(&dir, log_config.clone(), now_ms())
                        .unwrap_or_else(|e| {
                            tracing::error!(dir = %dir.display(), error = %e,
                                "partition cannot be opened: it is offline until repaired (see `tern log check`)");
                            Log::offline(&dir, log_config.clone(), format!("cannot be opened: {e}"))
                        }),
                    datadir::Marker::Topic(found) => {
                        let reason = format!(
                            "{} names topic id {found}, but the metadata gives topic {name} the id {id}; left as it is",
                            dir.join("partition.metadata").display()
                        );
                        tracing::error!(%reason, "replica offline");
                        Log::offline(&dir, log_config.clone(), reason)
                    }
                    datadir::Marker::Unreadable(reason) => {
                        tracing::error!(%reason, "replica offline");
                        Log::offline(&dir, log_config.clone(), reason)
                    }
                    // An empty directory is one a crash left between its creation and its
                    // marker: it is ours to finish.
                    datadir::Marker::Absent if dir.exists() && !datadir::removable(&dir) => {
                        let reason =
                            format!("{} exists without a partition.metadata file; left as it is", dir.display());
                        tracing::error!(%reason, "replica offline");
                        Log::offline(&dir, log_config.clone(), reason)
                    }
                    datadir::Marker::Absent => {
                        if dir.exists() {
                            datadir::write_partition_metadata(&dir, id)
                                .map_err(TopicError::io(&dir.join("partition.metadata")))?;
                        } else {
                            datadir::create_partition_dir(&dir, id).map_err(|(e, _)| TopicError::from(e))?;
                        }
                        datadir::sync_dir(&self.data_dir).map_err(TopicError::io(&self.data_dir))?;
                        Log::open(&dir, log_config.clone(), now_ms())?
                    }
                };
                let replica_config = PartitionConfig {
                    replica_lag_time_max_ms: config.get_i64("replica.lag.time.max.ms").unwrap_or(30_000),
                    min_insync_replicas: 1,
                };
                Arc::new(Partition::new_replica(
                    name,
                    id,
                    index,
                    log,
                    self.node_id,
                    cluster.broker_epoch(),
                    replica_config,
                    Some(cluster.events.clone()),
                ))
            }
        };
        let mut partitions: Vec<Arc<Partition>> = existing.as_ref().map(|t| t.partitions.clone()).unwrap_or_default();
        if let Err(at) = partitions.binary_search_by_key(&index, |p| p.index) {
            partitions.insert(at, partition.clone());
        }
        let topic = Arc::new(Topic {
            name: name.to_string(),
            id,
            configs: configs.clone(),
            partitions,
            partition_count,
            internal: is_internal(name),
            offline: None,
        });
        self.by_name.write().unwrap().insert(name.to_string(), topic);
        Ok(partition)
    }

    /// A cluster node drops its replicas of a topic the controller removed: each log is marked
    /// deleted, its directory renamed to Kafka's delete name and removed after
    /// `file.delete.delay.ms`.
    pub(crate) fn drop_cluster_topic(&self, name: &str, file_delete_delay_ms: i64) {
        let Some(topic) = self.by_name.write().unwrap().remove(name) else { return };
        let mut renamed = Vec::new();
        for p in &topic.partitions {
            p.log.mark_deleted();
            p.wake_fetches();
            p.fail_waiting_produces(UNKNOWN_TOPIC_OR_PARTITION);
            let from = partition_dir(&self.data_dir, name, p.index);
            let to = self.data_dir.join(datadir::delete_dir_name(name, p.index));
            match fs::rename(&from, &to) {
                Ok(()) => renamed.push(to),
                Err(e) => {
                    tracing::error!(dir = %from.display(), error = %e, "cannot rename a deleted partition's directory; left in place")
                }
            }
        }
        if let Err(e) = datadir::sync_dir(&self.data_dir) {
            tracing::error!(dir = %self.data_dir.display(), error = %e, "cannot fsync the data directory");
        }
        self.remover.remove_after(renamed, Duration::from_millis(file_delete_delay_ms.max(0) as u64));
    }

    /// Flushes and closes every log (graceful shutdown). Offline logs are left as they are.
    pub fn close_all(&self) {
        for topic in self.all() {
            for p in topic.partitions.iter().filter(|p| p.offline_reason().is_none()) {
                if let Err(e) = p.log.close() {
                    tracing::error!(topic = topic.name, partition = p.index, error = %e, "close failed");
                }
            }
        }
    }

    /// Refuses a new topic whose name differs from an existing one's only in `.` versus `_`, as
    /// Kafka does (metric names cannot tell them apart).
    pub fn check_collision(&self, name: &str) -> Result<(), TopicError> {
        if !name.contains(['.', '_']) {
            return Ok(());
        }
        let unified = name.replace('.', "_");
        match self.by_name.read().unwrap().keys().find(|other| other.replace('.', "_") == unified) {
            Some(other) => {
                Err(TopicError::InvalidName(format!("Topic '{name}' collides with existing topic: {other}")))
            }
            None => Ok(()),
        }
    }

    pub(crate) fn write_meta(&self, meta: &TopicMeta) -> Result<(), TopicError> {
        let path = meta_path(&self.data_dir, &meta.name, meta.id);
        write_atomically(&path, meta.encode().as_bytes()).map_err(TopicError::io(&path))
    }

    /// Creates partition directories `range` of a topic (marker first, then the log) and
    /// fsyncs the data directory. On failure everything created here is removed again.
    fn create_partitions(
        &self,
        meta: &TopicMeta,
        range: std::ops::Range<i32>,
        log_config: &LogConfig,
    ) -> Result<Vec<Arc<Partition>>, TopicError> {
        let first = range.start;
        let mut parts = Vec::new();
        let mut result = Ok(());
        for index in range {
            let dir = partition_dir(&self.data_dir, &meta.name, index);
            if let Err((e, created)) = datadir::create_partition_dir(&dir, meta.id) {
                // A directory that existed before is not ours to remove.
                result = Err((TopicError::from(e), created.then_some(index)));
                break;
            }
            match Log::open(&dir, log_config.clone(), now_ms()) {
                Ok(log) => parts.push(Arc::new(Partition::new(&meta.name, meta.id, index, log, self.node_id))),
                Err(e) => {
                    result = Err((TopicError::from(e), Some(index)));
                    break;
                }
            }
        }
        if result.is_ok() {
            if let Err(e) = datadir::sync_dir(&self.data_dir) {
                result = Err((TopicError::io(&self.data_dir)(e), None));
            }
        }
        match result {
            Ok(()) => Ok(parts),
            Err((error, extra)) => {
                let mut before = meta.clone();
                before.partitions = first;
                let mut created: Vec<i32> = parts.iter().map(|p| p.index).collect();
                created.extend(extra);
                drop(parts); // closes their files before the directories go
                self.remove_created(&before, &created, &error);
                Err(error)
            }
        }
    }

    /// Undoes an operation whose partitions were all created but whose metadata could not be
    /// written.
    fn roll_back(&self, before: &TopicMeta, parts: Vec<Arc<Partition>>, error: &TopicError) {
        let created: Vec<i32> = parts.iter().map(|p| p.index).collect();
        drop(parts);
        self.remove_created(before, &created, error);
    }

    /// Removes the partition directories an operation created and restores the metadata file
    /// to `before` (removed if the operation was the topic's creation). What cannot be undone
    /// now stays recorded in the metadata file and is undone at the next start.
    fn remove_created(&self, before: &TopicMeta, created: &[i32], error: &TopicError) {
        let mut removed = Vec::new();
        let mut complete = true;
        for &index in created {
            let dir = partition_dir(&self.data_dir, &before.name, index);
            match datadir::remove_partition_dir(&dir) {
                Ok(()) => removed.push(dir.display().to_string()),
                Err(e) => {
                    complete = false;
                    tracing::error!(dir = %dir.display(), error = %e, "cannot remove a partition directory while rolling back");
                }
            }
        }
        complete &= datadir::sync_dir(&self.data_dir).is_ok();
        if complete {
            let restored = if before.partitions == 0 {
                let path = meta_path(&self.data_dir, &before.name, before.id);
                fs::remove_file(&path)
                    .and_then(|()| datadir::sync_dir(&self.data_dir.join(TOPICS_DIR)))
                    .map_err(TopicError::io(&path))
            } else {
                let mut meta = before.clone();
                meta.pending = None;
                self.write_meta(&meta)
            };
            if let Err(e) = restored {
                complete = false;
                tracing::error!(error = %e, "cannot restore a topic's metadata file while rolling back");
            }
        }
        if complete {
            tracing::warn!(topic = before.name, %error, ?removed, "topic operation failed; rolled back what it created");
        } else {
            tracing::error!(topic = before.name, %error, ?removed,
                "topic operation failed and could not be rolled back completely; the rest is rolled back at the next start");
        }
    }
}

pub(crate) fn meta_of(topic: &Topic) -> TopicMeta {
    TopicMeta {
        name: topic.name.clone(),
        id: topic.id,
        partitions: topic.partition_count,
        configs: topic.configs.clone(),
        pending: None,
    }
}

fn check_online(topic: &Topic) -> Result<(), TopicError> {
    match &topic.offline {
        None => Ok(()),
        Some(reason) => Err(TopicError::Offline { topic: topic.name.clone(), reason: reason.clone() }),
    }
}

/// Removes `-delete` directories on a background thread, each once its delay has passed.
pub(crate) struct DirRemover {
    queue: std::sync::Mutex<Option<std::sync::mpsc::Sender<(PathBuf, std::time::Instant)>>>,
}

impl DirRemover {
    pub(crate) fn new() -> DirRemover {
        DirRemover { queue: std::sync::Mutex::new(None) }
    }

    pub(crate) fn remove_after(&self, dirs: Vec<PathBuf>, delay: Duration) {
        if dirs.is_empty() {
            return;
        }
        let due = std::time::Instant::now() + delay;
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let tx = queue.get_or_insert_with(start_remover);
        for dir in dirs {
            if let Err(e) = tx.send((dir, due)) {
                tracing::error!(dir = %e.0 .0.display(), "the directory remover is gone; the directory is removed at the next start");
            }
        }
    }
}

fn start_remover() -> std::sync::mpsc::Sender<(PathBuf, std::time::Instant)> {
    let (tx, rx) = std::sync::mpsc::channel::<(PathBuf, std::time::Instant)>();
    let spawned = std::thread::Builder::new().name("delete-dirs".into()).spawn(move || {
        let mut waiting: Vec<(PathBuf, std::time::Instant)> = Vec::new();
        loop {
            let now = std::time::Instant::now();
            let (due, later): (Vec<_>, Vec<_>) = waiting.drain(..).partition(|(_, at)| *at <= now);
            waiting = later;
            for (dir, _) in due {
                match datadir::remove_partition_dir(&dir) {
                    Ok(()) => tracing::info!(dir = %dir.display(), "removed deleted partition directory"),
                    Err(e) => tracing::error!(dir = %dir.display(), error = %e,
                        "cannot remove deleted partition directory; retried at the next start"),
                }
            }
            let next = waiting.iter().map(|(_, at)| *at).min();
            let received = match next {
                Some(at) => rx.recv_timeout(at.saturating_duration_since(std::time::Instant::now())),
                None => rx.recv().map_err(|_| std::sync::mpsc::RecvTimeoutError::Disconnected),
            };
            match (received, next) {
                (Ok(item), _) => waiting.push(item),
                (Err(std::sync::mpsc::RecvTimeoutError::Timeout), _) => {}
                (Err(std::sync::mpsc::RecvTimeoutError::Disconnected), None) => return,
                (Err(std::sync::mpsc::RecvTimeoutError::Disconnected), Some(at)) => {
                    std::thread::sleep(at.saturating_duration_since(std::time::Instant::now()))
                }
            }
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the directory remover; deleted directories are removed at the next start");
    }
    tx
}
