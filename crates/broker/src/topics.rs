//! The topics this broker hosts: names, ids, partition logs and per-topic config overrides.
//!
//! Topic metadata lives in `<data-dir>/.topics/<topic>.properties` (written atomically); partition
//! logs live in `<data-dir>/<topic>-<partition>/` as in Kafka. A topic exists once its metadata file
//! exists; partition directories without one are leftovers of an interrupted create/delete.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tern_storage::{Log, LogConfig, StorageError};
use uuid::Uuid;

use crate::config::parse_properties;

/// One partition of a topic on this broker (always its leader while Tern is single-node).
pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub log: Log,
    pub leader_epoch: i32,
}

/// A topic: immutable snapshot; changes replace the `Arc<Topic>` in the registry.
pub struct Topic {
    pub name: String,
    pub id: Uuid,
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<Arc<Partition>>,
    pub internal: bool,
}

impl Topic {
    pub fn partition(&self, index: i32) -> Option<&Arc<Partition>> {
        usize::try_from(index).ok().and_then(|i| self.partitions.get(i))
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
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
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

pub struct TopicRegistry {
    data_dir: PathBuf,
    by_name: RwLock<HashMap<String, Arc<Topic>>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl TopicRegistry {
    /// Loads every topic under `data_dir`, recovering each partition log. Blocking.
    pub fn load(
        data_dir: &Path,
        log_config: impl Fn(&BTreeMap<String, String>) -> LogConfig,
    ) -> Result<Self, TopicError> {
        let meta_dir = data_dir.join(".topics");
        fs::create_dir_all(&meta_dir)?;
        let mut by_name = HashMap::new();
        for entry in fs::read_dir(&meta_dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".properties"))
            else {
                continue;
            };
            let props = parse_properties(&fs::read_to_string(&path)?);
            let id = props.get("topic.id").and_then(|s| Uuid::parse_str(s).ok()).unwrap_or_else(Uuid::new_v4);
            let count: i32 = props.get("partitions").and_then(|s| s.parse().ok()).unwrap_or(1);
            let configs: BTreeMap<String, String> = props
                .iter()
                .filter_map(|(k, v)| k.strip_prefix("config.").map(|k| (k.to_string(), v.clone())))
                .collect();
            let lc = log_config(&configs);
            let mut partitions = Vec::new();
            for index in 0..count {
                partitions.push(Arc::new(open_partition(data_dir, name, index, &lc)?));
            }
            tracing::info!(topic = name, partitions = count, "loaded topic");
            by_name.insert(
                name.to_string(),
                Arc::new(Topic { name: name.to_string(), id, configs, partitions, internal: name.starts_with("__") }),
            );
        }
        // Remove partition directories that no topic owns (interrupted create or delete).
        for entry in fs::read_dir(data_dir)? {
            let entry = entry?;
            let Some(dir_name) = entry.file_name().to_str().map(str::to_string) else { continue };
            if !entry.file_type()?.is_dir() || dir_name.starts_with('.') {
                continue;
            }
            let owned = dir_name.rsplit_once('-').is_some_and(|(t, p)| {
                p.parse::<i32>()
                    .is_ok_and(|p| by_name.get(t).is_some_and(|t: &Arc<Topic>| (p as usize) < t.partitions.len()))
            });
            if !owned {
                tracing::warn!(dir = dir_name, "removing partition directory of no topic");
                fs::remove_dir_all(entry.path())?;
            }
        }
        Ok(TopicRegistry { data_dir: data_dir.to_path_buf(), by_name: RwLock::new(by_name) })
    }

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

    /// Creates a topic. Blocking; callers serialise admin operations.
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
        if partitions < 1 {
            return Err(TopicError::InvalidPartitions("Number of partitions must be larger than 0.".into()));
        }
        let id = Uuid::new_v4();
        let mut parts = Vec::new();
        for index in 0..partitions {
            parts.push(Arc::new(open_partition(&self.data_dir, name, index, log_config)?));
        }
        let topic = Arc::new(Topic {
            name: name.to_string(),
            id,
            configs,
            partitions: parts,
            internal: name.starts_with("__"),
        });
        self.persist(&topic)?;
        self.by_name.write().unwrap().insert(name.to_string(), topic.clone());
        Ok(topic)
    }

    /// Grows a topic to `total` partitions (never shrinks).
    pub fn add_partitions(&self, name: &str, total: i32, log_config: &LogConfig) -> Result<Arc<Topic>, TopicError> {
        let topic = self.get(name).ok_or_else(|| TopicError::UnknownTopic(name.into()))?;
        let current = topic.partitions.len() as i32;
        if total <= current {
            return Err(TopicError::InvalidPartitions(format!(
                "Topic currently has {current} partitions, which is higher than the requested {total}."
            )));
        }
        let mut parts = topic.partitions.clone();
        for index in current..total {
            parts.push(Arc::new(open_partition(&self.data_dir, name, index, log_config)?));
        }
        let topic = Arc::new(Topic {
            name: topic.name.clone(),
            id: topic.id,
            configs: topic.configs.clone(),
            partitions: parts,
            internal: topic.internal,
        });
        self.persist(&topic)?;
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
        let topic = Arc::new(Topic {
            name: topic.name.clone(),
            id: topic.id,
            configs,
            partitions: topic.partitions.clone(),
            internal: topic.internal,
        });
        self.persist(&topic)?;
        for p in &topic.partitions {
            p.log.update_config(log_config.clone());
        }
        self.by_name.write().unwrap().insert(name.to_string(), topic);
        Ok(())
    }

    /// Deletes a topic: its metadata first (so a crash cannot resurrect it), then its logs.
    pub fn delete(&self, name: &str) -> Result<(), TopicError> {
        let topic = self.by_name.write().unwrap().remove(name).ok_or_else(|| TopicError::UnknownTopic(name.into()))?;
        fs::remove_file(self.meta_path(name))?;
        for p in &topic.partitions {
            let dir = partition_dir(&self.data_dir, name, p.index);
            if let Err(e) = fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove partition directory");
            }
        }
        Ok(())
    }

    /// Flushes and closes every log (graceful shutdown).
    pub fn close_all(&self) {
        for topic in self.all() {
            for p in &topic.partitions {
                if let Err(e) = p.log.close() {
                    tracing::error!(topic = topic.name, partition = p.index, error = %e, "close failed");
                }
            }
        }
    }

    fn meta_path(&self, name: &str) -> PathBuf {
        self.data_dir.join(".topics").join(format!("{name}.properties"))
    }

    fn persist(&self, topic: &Topic) -> Result<(), TopicError> {
        let mut text = format!("topic.id={}\npartitions={}\n", topic.id, topic.partitions.len());
        for (k, v) in &topic.configs {
            text.push_str(&format!("config.{k}={v}\n"));
        }
        write_atomically(&self.meta_path(&topic.name), text.as_bytes())?;
        Ok(())
    }
}

fn partition_dir(data_dir: &Path, topic: &str, index: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{index}"))
}

fn open_partition(data_dir: &Path, topic: &str, index: i32, config: &LogConfig) -> Result<Partition, TopicError> {
    let log = Log::open(&partition_dir(data_dir, topic, index), config.clone(), now_ms())?;
    Ok(Partition { topic: topic.to_string(), index, log, leader_epoch: 0 })
}

/// Writes `path` so that a crash leaves either the old or the new content.
pub fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
