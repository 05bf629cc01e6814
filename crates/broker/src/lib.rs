//! Tern's Kafka-protocol broker: the listener, the per-connection request loop, and one
//! handler per Kafka API (`handlers/`). Storage I/O never runs on the tasks that serve
//! sockets: handlers move it to tokio's blocking pool.

pub mod cluster;
pub mod config;
mod connection_limits;
pub mod datadir;
mod errors;
mod groups;
mod handlers;
mod log_limit;
mod mutation_quota;
pub mod offsets_topic;
pub mod open_files;
mod producer_ids;
mod server;
mod topic_load;
pub mod topics;
mod waiters;

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use config::{BrokerConfig, ConfigError};
pub use server::{decode_frame, serve, DecodedFrame};
use tokio::sync::Mutex;

use crate::groups::GroupService;
use crate::topics::TopicRegistry;

/// Shared state of one broker process.
pub struct Broker {
    pub config: BrokerConfig,
    pub topics: TopicRegistry,
    pub cluster_id: String,
    /// Serialises topic creation, deletion and config changes.
    admin_lock: Mutex<()>,
    /// The consumer-group coordinator (this broker coordinates every group while single-node).
    groups: Arc<GroupService>,
    /// Ids for idempotent producers (InitProducerId).
    producer_ids: producer_ids::ProducerIdAllocator,
    /// Held for the broker's lifetime: no other process writes this data directory.
    _data_dir_lock: datadir::DataDirLock,
    /// KIP-599: partitions created, added or deleted per second and client id.
    mutation_quota: mutation_quota::MutationQuota,
    /// Set once on a cluster node (`process.roles`), before it serves.
    cluster: OnceLock<Arc<cluster::ClusterRuntime>>,
}

/// Why the broker cannot start; every message names the file or directory involved.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    DataDir(#[from] datadir::DataDirError),
    #[error("data directory: {0}")]
    Topics(#[from] topics::TopicError),
}

impl Broker {
    /// Locks the data directory and recovers every partition log. Blocking. A partition that
    /// cannot be opened or loaded is offline (named at ERROR) while the rest serves. A cluster
    /// node starts with no topics: the metadata image assigns its replicas
    /// ([`cluster::ClusterRuntime`]).
    pub fn open(config: BrokerConfig) -> Result<Arc<Broker>, StartError> {
        let lock = datadir::DataDirLock::acquire(&config.data_dir)?;
        let cluster_id = load_or_create_cluster_id(&config.data_dir, config.node_id())?;
        let (topics, offsets_partitions) = if config.cluster.is_some() {
            refuse_single_node_data_dir(&config.data_dir)?;
            (TopicRegistry::empty(&config.data_dir, config.node_id()), Vec::new())
        } else {
            let topics =
                TopicRegistry::load(&config.data_dir, config.node_id(), |overrides| config.log_config(overrides))?;
            let offsets = offsets_topic::ensure_offsets_topic(&topics, &config)?;
            (topics, offsets.partitions.clone())
        };
        // Ids stay above every producer id in the logs, even if the block file was lost.
        let floor = topics.all().iter().flat_map(|t| t.partitions.iter()).map(|p| p.log.max_producer_id()).max();
        let producer_ids = producer_ids::ProducerIdAllocator::load(&config.data_dir, floor.unwrap_or(-1) + 1);
        let stored: Vec<_> = offsets_partitions.iter().map(|p| offsets_topic::load_partition(p)).collect();
        let groups = Arc::new(if config.cluster.is_some() {
            // Placed by the setting: every node creates `__consumer_offsets` with it.
            GroupService::for_cluster(groups::group_config(&config, config.offsets_topic_num_partitions()))
        } else {
            GroupService::new(
                groups::group_config(&config, offsets_partitions.len() as i32),
                offsets_partitions,
                stored,
            )
        });
        let mutation_quota = mutation_quota::MutationQuota::new(&config);
        Ok(Arc::new(Broker {
            config,
            topics,
            cluster_id,
            admin_lock: Mutex::new(()),
            groups,
            producer_ids,
            _data_dir_lock: lock,
            mutation_quota,
            cluster: OnceLock::new(),
        }))
    }

    /// This node's cluster runtime, `None` on a single node.
    pub fn cluster(&self) -> Option<&Arc<cluster::ClusterRuntime>> {
        self.cluster.get()
    }

    /// Attaches the cluster runtime (once, before serving).
    pub fn set_cluster(&self, runtime: Arc<cluster::ClusterRuntime>) {
        let _ = self.cluster.set(runtime);
    }

    /// Runs retention, time-based flushing, the log cleaner and the group coordinator's timers
    /// until the process ends.
    pub async fn run_background_tasks(self: Arc<Self>) {
        tokio::spawn(self.groups.clone().run_timers());
        if self.config.log_cleaner_enable() {
            tokio::spawn(self.clone().run_cleaner());
        }
        let retention_every = Duration::from_millis(self.config.retention_check_interval_ms());
        let flush_every = Duration::from_millis(self.config.flush_scheduler_interval_ms().min(1000));
        let mut retention = tokio::time::interval(retention_every);
        let mut flush = tokio::time::interval(flush_every);
        loop {
            tokio::select! {
                _ = retention.tick() => {
                    let broker = self.clone();
                    let _ = tokio::task::spawn_blocking(move || broker.enforce_retention()).await;
                }
                _ = flush.tick() => {
                    let broker = self.clone();
                    let _ = tokio::task::spawn_blocking(move || broker.flush_due()).await;
                }
            }
        }
    }

    fn enforce_retention(&self) {
        let now = now_ms();
        for topic in self.topics.all() {
            for p in topic.partitions.iter().filter(|p| p.offline_reason().is_none()) {
                match p.log.enforce_retention(now) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        topic = topic.name,
                        partition = p.index,
                        segments = n,
                        "retention deleted segments"
                    ),
                    Err(e) => tracing::error!(topic = topic.name, partition = p.index, error = %e, "retention failed"),
                }
            }
        }
    }

    /// The log cleaner: every `log.cleaner.backoff.ms`, one pass over the compacted partitions
    /// on the blocking pool. Passes never overlap (the next tick waits for this pass), and it runs
    /// apart from retention and flushing so a long compaction delays neither.
    async fn run_cleaner(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.log_cleaner_backoff_ms()));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let broker = self.clone();
            let _ = tokio::task::spawn_blocking(move || broker.clean_logs()).await;
        }
    }

    /// Compacts every partition whose `cleanup.policy` includes `compact` and is due (dirty
    /// ratio, `max.compaction.lag.ms`, expired tombstones); `__consumer_offsets` included.
    fn clean_logs(&self) {
        let options = tern_storage::CleanerOptions {
            map_bytes: self.config.log_cleaner_dedupe_buffer_size(),
            ..tern_storage::CleanerOptions::default()
        };
        for topic in self.topics.all() {
            for p in topic.partitions.iter().filter(|p| p.offline_reason().is_none()) {
                if !p.log.config().cleanup_policy.compact {
                    continue;
                }
                match p.log.clean_with(now_ms(), &options) {
                    Ok(None) => {}
                    Ok(Some(stats)) => tracing::info!(
                        topic = topic.name,
                        partition = p.index,
                        removed = stats.records_removed,
                        bytes_read = stats.bytes_read,
                        bytes_written = stats.bytes_written,
                        "compacted log"
                    ),
                    Err(e) => {
                        tracing::error!(topic = topic.name, partition = p.index, error = %e, "log cleaning failed")
                    }
                }
            }
        }
    }

    fn flush_due(&self) {
        let now = now_ms();
        for topic in self.topics.all() {
            for p in topic.partitions.iter().filter(|p| p.offline_reason().is_none()) {
                if let Err(e) = p.log.maybe_flush(now) {
                    tracing::error!(topic = topic.name, partition = p.index, error = %e, "flush failed");
                }
            }
        }
    }

    /// Flushes and closes all logs; call once at graceful shutdown.
    pub fn shutdown(&self) {
        self.topics.close_all();
    }
}

/// A cluster node refuses a data directory a single-node broker used: its topics are in no
/// cluster's metadata.
fn refuse_single_node_data_dir(data_dir: &Path) -> Result<(), StartError> {
    let topics_dir = data_dir.join(topics::TOPICS_DIR);
    if std::fs::read_dir(&topics_dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(StartError::DataDir(datadir::DataDirError::Invalid {
            path: topics_dir,
            message: "this data directory belongs to a single-node broker (its topics are not in the cluster's metadata); use an empty directory for a cluster node".into(),
        }));
    }
    Ok(())
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Kafka keeps the cluster id in `meta.properties`; so do we. A file that exists but cannot be
/// read is refused (as Kafka does), never replaced.
fn load_or_create_cluster_id(data_dir: &Path, node_id: i32) -> Result<String, datadir::DataDirError> {
    let path = data_dir.join("meta.properties");
    let invalid = |why: &str| datadir::DataDirError::Invalid { path: path.clone(), message: why.to_string() };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes).map_err(|_| invalid("not UTF-8 text"))?;
            return config::parse_properties(&text)
                .remove("cluster.id")
                .filter(|id| !id.is_empty())
                .ok_or_else(|| invalid("no cluster.id"));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(datadir::io_error(&path)(e)),
    }
    // Kafka's cluster ids are a UUID in URL-safe base64 without padding (22 chars).
    let id = datadir::kafka_uuid_string(uuid::Uuid::new_v4());
    let text = format!("version=1\ncluster.id={id}\nnode.id={node_id}\n");
    datadir::write_atomically(&path, text.as_bytes()).map_err(datadir::io_error(&path))?;
    Ok(id)
}
