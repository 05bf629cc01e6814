//! Tern's Kafka-protocol broker: the listener, the per-connection request loop, and one
//! handler per Kafka API (`handlers/`). Storage I/O never runs on the tasks that serve
//! sockets: handlers move it to tokio's blocking pool.

pub mod config;
mod connection_limits;
mod errors;
mod groups;
mod handlers;
mod log_limit;
mod mutation_quota;
pub mod offsets_topic;
pub mod open_files;
mod producer_ids;
mod server;
pub mod topics;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use config::{BrokerConfig, ConfigError};
pub use server::{decode_frame, serve, DecodedFrame};
use tokio::sync::{watch, Mutex};

use crate::groups::GroupService;
use crate::topics::TopicRegistry;

/// Shared state of one broker process.
pub struct Broker {
    pub config: BrokerConfig,
    pub topics: TopicRegistry,
    pub cluster_id: String,
    /// Bumped after every append so that long-polling fetches wake up.
    appended: watch::Sender<u64>,
    /// Serialises topic creation, deletion and config changes.
    admin_lock: Mutex<()>,
    /// The consumer-group coordinator (this broker coordinates every group while single-node).
    groups: Arc<GroupService>,
    /// Ids for idempotent producers (InitProducerId).
    producer_ids: producer_ids::ProducerIdAllocator,
    /// KIP-599: partitions created, added or deleted per second and client id.
    mutation_quota: mutation_quota::MutationQuota,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("data directory: {0}")]
    Topics(#[from] topics::TopicError),
    #[error("data directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("loading __consumer_offsets: {0}")]
    Groups(#[from] tern_storage::StorageError),
}

impl Broker {
    /// Opens the data directory and recovers every partition log. Blocking.
    pub fn open(config: BrokerConfig) -> Result<Arc<Broker>, StartError> {
        std::fs::create_dir_all(&config.data_dir)?;
        let cluster_id = load_or_create_cluster_id(&config.data_dir, config.node_id())?;
        let topics = TopicRegistry::load(&config.data_dir, |overrides| config.log_config(overrides))?;
        let offsets = offsets_topic::ensure_offsets_topic(&topics, &config)?;
        let producer_ids = producer_ids::ProducerIdAllocator::load(&config.data_dir);
        let stored = offsets.partitions.iter().map(|p| offsets_topic::read_all(&p.log)).collect::<Result<_, _>>()?;
        Ok(Arc::new_cyclic(|broker| {
            let group_config = groups::group_config(&config);
            let groups = Arc::new(GroupService::new(group_config, offsets.partitions.clone(), stored, broker.clone()));
            let (appended, _) = watch::channel(0);
            let mutation_quota = mutation_quota::MutationQuota::new(&config);
            Broker {
                config,
                topics,
                cluster_id,
                appended,
                admin_lock: Mutex::new(()),
                groups,
                producer_ids,
                mutation_quota,
            }
        }))
    }

    fn notify_appended(&self) {
        self.appended.send_modify(|n| *n = n.wrapping_add(1));
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
            for p in &topic.partitions {
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
            for p in &topic.partitions {
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
            for p in &topic.partitions {
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

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Kafka keeps the cluster id in `meta.properties`; so do we.
fn load_or_create_cluster_id(data_dir: &Path, node_id: i32) -> std::io::Result<String> {
    let path = data_dir.join("meta.properties");
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Some(id) = config::parse_properties(&text).remove("cluster.id") {
            return Ok(id);
        }
    }
    use std::fmt::Write;
    // Kafka's cluster ids are a UUID in URL-safe base64 without padding (22 chars).
    let uuid = uuid::Uuid::new_v4();
    let mut id = String::new();
    for chunk in uuid.as_bytes().chunks(3) {
        let n = chunk.iter().fold(0u32, |acc, b| acc << 8 | *b as u32) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            let c =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[(n >> (18 - 6 * i) & 63) as usize];
            let _ = write!(id, "{}", c as char);
        }
    }
    let text = format!("version=1\ncluster.id={id}\nnode.id={node_id}\n");
    topics::write_atomically(&path, text.as_bytes())?;
    Ok(id)
}
