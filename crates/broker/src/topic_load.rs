//! Loading the topics at start-up. The metadata files in `.topics` are reconciled with the
//! partition directories and their `partition.metadata` markers, which are the truth:
//! - agreement: the topic is served; a partition whose log cannot be opened is offline (named at
//!   ERROR) while the rest serves;
//! - disagreement (a missing or extra partition directory, another topic id, an unreadable
//!   file): the whole topic is offline, named at ERROR with the files involved; nothing changes;
//! - partition directories without a marker, from a version before the marker existed, are
//!   adopted when a metadata file of that older layout (no `topic.name`) names them: the marker
//!   is written and the metadata file is rewritten in the current layout;
//! - an operation interrupted by a crash is rolled back (create, add partitions: only the
//!   directories carrying the new topic id are removed) or finished (delete);
//! - `-delete` directories carrying the marker are removed; anything else the broker did not
//!   create is left alone and reported once at WARN.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tern_storage::{Log, LogConfig};
use uuid::Uuid;

use crate::config::parse_properties;
use crate::datadir::{self, kafka_uuid_string, Marker};
use crate::now_ms;
use crate::topics::{
    is_internal, partition_dir, validate_topic_name, DirRemover, Partition, Pending, Topic, TopicError, TopicMeta,
    TopicRegistry, TOPICS_DIR,
};

/// Entries of the data directory that belong to the broker but are no topic.
const OWN_ENTRIES: &[&str] = &[
    TOPICS_DIR,
    datadir::LOCK_FILE,
    "meta.properties",
    "producer-id-block",
    // Temporary names of earlier versions.
    "meta.tmp",
];

/// A metadata file as read.
enum MetaRead {
    Good {
        path: PathBuf,
        meta: TopicMeta,
        legacy: bool,
    },
    /// Unreadable or inconsistent; `name`/`id` are what can still be told about it.
    Bad {
        path: PathBuf,
        name: Option<String>,
        id: Option<Uuid>,
        message: String,
    },
}

impl MetaRead {
    fn path(&self) -> &Path {
        match self {
            MetaRead::Good { path, .. } | MetaRead::Bad { path, .. } => path,
        }
    }
}

/// What the data directory holds, by kind.
#[derive(Default)]
struct Scan {
    /// Partition directories by topic name and index, with their markers.
    partitions: BTreeMap<String, BTreeMap<i32, Marker>>,
    /// `-delete` directories the broker may remove.
    deleted: Vec<PathBuf>,
    /// Entries the broker did not create.
    unknown: Vec<String>,
}

impl TopicRegistry {
    /// A registry with no topics (a cluster node fills it from the metadata image).
    pub fn empty(data_dir: &Path, node_id: i32) -> Self {
        TopicRegistry {
            data_dir: data_dir.to_path_buf(),
            node_id,
            by_name: RwLock::new(HashMap::new()),
            remover: DirRemover::new(),
        }
    }

    /// Loads every topic under `data_dir`, recovering each partition log. Blocking. Fails only
    /// if the data directory itself cannot be read or changed (the error names the path).
    pub fn load(
        data_dir: &Path,
        node_id: i32,
        log_config: impl Fn(&BTreeMap<String, String>) -> LogConfig,
    ) -> Result<Self, TopicError> {
        let meta_dir = data_dir.join(TOPICS_DIR);
        match fs::create_dir(&meta_dir) {
            Ok(()) => datadir::sync_dir(data_dir).map_err(TopicError::io(data_dir))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(TopicError::io(&meta_dir)(e)),
        }
        let registry = TopicRegistry {
            data_dir: data_dir.to_path_buf(),
            node_id,
            by_name: RwLock::new(HashMap::new()),
            remover: DirRemover::new(),
        };
        let mut scan = scan_data_dir(data_dir)?;
        let mut files = Vec::new();
        for read in read_meta_dir(&meta_dir)? {
            match read {
                MetaRead::Good { path, meta, legacy } if meta.pending.is_some() => {
                    if let Some(meta) = registry.finish_interrupted(&path, meta, &mut scan)? {
                        files.push(MetaRead::Good { path, meta, legacy });
                    }
                }
                read => files.push(read),
            }
        }
        // Which files describe which topic.
        let mut claims: BTreeMap<String, Vec<MetaRead>> = BTreeMap::new();
        for read in files {
            let name = match &read {
                MetaRead::Good { meta, .. } => Some(meta.name.clone()),
                MetaRead::Bad { name: Some(name), .. } => Some(name.clone()),
                MetaRead::Bad { id: Some(id), .. } => scan
                    .partitions
                    .iter()
                    .find(|(_, dirs)| dirs.values().any(|m| *m == Marker::Topic(*id)))
                    .map(|(name, _)| name.clone()),
                MetaRead::Bad { .. } => None,
            };
            match name {
                Some(name) => claims.entry(name).or_default().push(read),
                None => tracing::error!(file = %read.path().display(), problem = %bad_message(&read),
                    "cannot tell which topic this metadata file describes; left as it is"),
            }
        }
        let mut names: Vec<String> = claims.keys().chain(scan.partitions.keys()).cloned().collect();
        names.sort();
        names.dedup();
        let mut by_name = HashMap::new();
        for name in names {
            let dirs = scan.partitions.remove(&name).unwrap_or_default();
            let reads = claims.remove(&name).unwrap_or_default();
            if let Some(topic) = registry.load_topic(&name, reads, dirs, &log_config, &mut scan.unknown)? {
                by_name.insert(name, Arc::new(topic));
            }
        }
        if !scan.unknown.is_empty() {
            scan.unknown.sort();
            tracing::warn!(dir = %data_dir.display(), entries = ?scan.unknown,
                "the data directory holds entries the broker did not create; they are left alone");
        }
        *registry.by_name.write().unwrap() = by_name;
        registry.remover.remove_after(std::mem::take(&mut scan.deleted), Duration::ZERO);
        Ok(registry)
    }

    /// Rolls back (create, add partitions) or finishes (delete) an operation a crash
    /// interrupted. Returns the topic's metadata afterwards, `None` if the topic is gone.
    fn finish_interrupted(
        &self,
        path: &Path,
        mut meta: TopicMeta,
        scan: &mut Scan,
    ) -> Result<Option<TopicMeta>, TopicError> {
        let dirs = scan.partitions.entry(meta.name.clone()).or_default();
        let topics_dir = self.data_dir.join(TOPICS_DIR);
        let remove_file = |path: &Path| -> Result<(), TopicError> {
            fs::remove_file(path).map_err(TopicError::io(path))?;
            datadir::sync_dir(&topics_dir).map_err(TopicError::io(&topics_dir))
        };
        match meta.pending {
            Some(Pending::Create(target) | Pending::AddPartitions(target)) => {
                let mut removed = Vec::new();
                for index in meta.partitions..target {
                    let dir = partition_dir(&self.data_dir, &meta.name, index);
                    let ours = match dirs.get(&index) {
                        Some(Marker::Topic(id)) => *id == meta.id,
                        // Created, then the crash came before the marker was written.
                        Some(Marker::Absent) => datadir::removable(&dir),
                        _ => false,
                    };
                    if ours {
                        datadir::remove_partition_dir(&dir).map_err(TopicError::io(&dir))?;
                        dirs.remove(&index);
                        removed.push(dir.display().to_string());
                    }
                }
                datadir::sync_dir(&self.data_dir).map_err(TopicError::io(&self.data_dir))?;
                tracing::warn!(topic = meta.name, file = %path.display(), ?removed,
                    "rolled back a topic operation interrupted by a crash");
                meta.pending = None;
                if meta.partitions == 0 {
                    remove_file(path)?;
                    return Ok(None);
                }
                self.write_meta(&meta)?;
                Ok(Some(meta))
            }
            Some(Pending::Delete) => {
                let mine: Vec<i32> =
                    dirs.iter().filter(|(_, m)| **m == Marker::Topic(meta.id)).map(|(i, _)| *i).collect();
                for index in mine {
                    let from = partition_dir(&self.data_dir, &meta.name, index);
                    let to = self.data_dir.join(datadir::delete_dir_name(&meta.name, index));
                    fs::rename(&from, &to).map_err(TopicError::io(&from))?;
                    dirs.remove(&index);
                    scan.deleted.push(to);
                }
                datadir::sync_dir(&self.data_dir).map_err(TopicError::io(&self.data_dir))?;
                remove_file(path)?;
                tracing::info!(topic = meta.name, "finished deleting a topic whose deletion a crash interrupted");
                Ok(None)
            }
            None => Ok(Some(meta)),
        }
    }

    /// One topic: served if its metadata and its directories agree, else offline.
    fn load_topic(
        &self,
        name: &str,
        mut reads: Vec<MetaRead>,
        dirs: BTreeMap<i32, Marker>,
        log_config: &impl Fn(&BTreeMap<String, String>) -> LogConfig,
        unknown: &mut Vec<String>,
    ) -> Result<Option<Topic>, TopicError> {
        let dir_of = |index: i32| partition_dir(&self.data_dir, name, index).display().to_string();
        let dir_count = dirs.keys().next_back().map_or(0, |&i| i + 1);
        let read = match reads.len() {
            0 => {
                // Only directories carrying the marker are the broker's.
                let marked: BTreeMap<i32, &Marker> =
                    dirs.iter().filter(|(_, m)| **m != Marker::Absent).map(|(i, m)| (*i, m)).collect();
                unknown.extend(
                    dirs.iter()
                        .filter(|(_, m)| **m == Marker::Absent)
                        .map(|(i, _)| datadir::partition_dir_name(name, *i)),
                );
                if marked.is_empty() {
                    return Ok(None);
                }
                let listed: Vec<String> = marked.keys().map(|&i| dir_of(i)).collect();
                let reason = format!(
                    "no metadata file in {} describes topic {name}, whose partition directories {} exist",
                    self.data_dir.join(TOPICS_DIR).display(),
                    listed.join(", ")
                );
                let id = single_id(marked.values().copied());
                return Ok(Some(self.offline_topic(name, id, dir_count, BTreeMap::new(), reason, log_config)));
            }
            1 => reads.pop().expect("one read"),
            _ => {
                let listed: Vec<String> = reads.iter().map(|r| r.path().display().to_string()).collect();
                let reason = format!("several metadata files describe topic {name}: {}", listed.join(", "));
                return Ok(Some(self.offline_topic(name, None, dir_count, BTreeMap::new(), reason, log_config)));
            }
        };
        let (path, meta, legacy) = match read {
            MetaRead::Good { path, meta, legacy } => (path, meta, legacy),
            bad @ MetaRead::Bad { .. } => {
                let id = match &bad {
                    MetaRead::Bad { id: Some(id), .. } => Some(*id),
                    _ => single_id(dirs.values()),
                };
                let reason = bad_message(&bad);
                return Ok(Some(self.offline_topic(name, id, dir_count, BTreeMap::new(), reason, log_config)));
            }
        };
        let file = path.display().to_string();
        let mut problems = Vec::new();
        let mut adopt = Vec::new();
        for index in 0..meta.partitions {
            match dirs.get(&index) {
                None => problems.push(format!("partition directory {} is missing", dir_of(index))),
                Some(Marker::Topic(id)) if *id == meta.id => {}
                Some(Marker::Topic(id)) => problems.push(format!(
                    "{} belongs to topic id {} but {file} names topic id {}",
                    dir_of(index),
                    kafka_uuid_string(*id),
                    kafka_uuid_string(meta.id)
                )),
                Some(Marker::Absent) if legacy => adopt.push(index),
                Some(Marker::Absent) => {
                    problems.push(format!("{} has no {}", dir_of(index), datadir::PARTITION_METADATA))
                }
                Some(Marker::Unreadable(message)) => problems.push(message.clone()),
            }
        }
        for (&index, marker) in dirs.range(meta.partitions..) {
            match marker {
                Marker::Topic(id) if *id == meta.id => problems.push(format!(
                    "{} belongs to the topic but {file} says it has {} partitions",
                    dir_of(index),
                    meta.partitions
                )),
                Marker::Absent if legacy => problems.push(format!(
                    "{} is not one of the {} partitions {file} names",
                    dir_of(index),
                    meta.partitions
                )),
                Marker::Absent => unknown.push(datadir::partition_dir_name(name, index)),
                Marker::Topic(id) => tracing::error!(
                    dir = dir_of(index),
                    topic_id = kafka_uuid_string(*id),
                    "partition directory of a topic id no metadata file names; left as it is"
                ),
                Marker::Unreadable(message) => {
                    tracing::error!(
                        dir = dir_of(index),
                        problem = message,
                        "unreadable partition marker; left as it is"
                    )
                }
            }
        }
        if !problems.is_empty() {
            let reason = format!("{file} and the partition directories disagree: {}", problems.join("; "));
            let count = meta.partitions.max(dir_count);
            return Ok(Some(self.offline_topic(name, Some(meta.id), count, meta.configs, reason, log_config)));
        }
        for &index in &adopt {
            let dir = partition_dir(&self.data_dir, name, index);
            datadir::write_partition_metadata(&dir, meta.id)
                .map_err(TopicError::io(&dir.join(datadir::PARTITION_METADATA)))?;
        }
        if !adopt.is_empty() {
            tracing::info!(
                topic = name,
                partitions = adopt.len(),
                "adopted partition directories of an earlier version (marker written)"
            );
        }
        if legacy {
            self.write_meta(&meta)?;
            tracing::info!(topic = name, file = %path.display(), "rewrote topic metadata in the current layout");
        }
        let lc = log_config(&meta.configs);
        let partitions = (0..meta.partitions)
            .map(|index| {
                let dir = partition_dir(&self.data_dir, name, index);
                let log = Log::open(&dir, lc.clone(), now_ms()).unwrap_or_else(|e| {
                    tracing::error!(dir = %dir.display(), error = %e,
                        "partition cannot be opened: it is offline until repaired (see `tern log check`)");
                    Log::offline(&dir, lc.clone(), format!("cannot be opened: {e}"))
                });
                Arc::new(Partition::new(name, meta.id, index, log, self.node_id))
            })
            .collect();
        tracing::info!(topic = name, partitions = meta.partitions, "loaded topic");
        Ok(Some(Topic {
            name: name.to_string(),
            id: meta.id,
            configs: meta.configs,
            partitions,
            partition_count: meta.partitions,
            internal: is_internal(name),
            offline: None,
        }))
    }

    /// A topic whose files disagree: listed, but every partition offline; nothing is changed.
    fn offline_topic(
        &self,
        name: &str,
        id: Option<Uuid>,
        partitions: i32,
        configs: BTreeMap<String, String>,
        reason: String,
        log_config: &impl Fn(&BTreeMap<String, String>) -> LogConfig,
    ) -> Topic {
        tracing::error!(topic = name, %reason, "topic is offline until its files are repaired; nothing was changed");
        let lc = log_config(&configs);
        let partitions_count = partitions;
        let partitions = (0..partitions)
            .map(|index| {
                let log = Log::offline(&partition_dir(&self.data_dir, name, index), lc.clone(), reason.clone());
                Arc::new(Partition::new(name, id.unwrap_or_else(Uuid::nil), index, log, self.node_id))
            })
            .collect();
        Topic {
            name: name.to_string(),
            id: id.unwrap_or_else(Uuid::nil),
            configs,
            partitions,
            partition_count: partitions_count,
            internal: is_internal(name),
            offline: Some(reason),
        }
    }
}

/// The topic id all these markers name, if they name exactly one.
fn single_id<'a>(markers: impl Iterator<Item = &'a Marker>) -> Option<Uuid> {
    let mut ids: Vec<Uuid> = markers.filter_map(|m| if let Marker::Topic(id) = m { Some(*id) } else { None }).collect();
    ids.dedup();
    (ids.len() == 1).then(|| ids[0])
}

fn bad_message(read: &MetaRead) -> String {
    match read {
        MetaRead::Bad { message, .. } => message.clone(),
        MetaRead::Good { path, .. } => path.display().to_string(),
    }
}

fn scan_data_dir(data_dir: &Path) -> Result<Scan, TopicError> {
    let mut scan = Scan::default();
    for entry in fs::read_dir(data_dir).map_err(TopicError::io(data_dir))? {
        let entry = entry.map_err(TopicError::io(data_dir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            scan.unknown.push(entry.file_name().to_string_lossy().into_owned());
            continue;
        };
        if OWN_ENTRIES.contains(&name.as_str()) || name.strip_suffix(".tmp").is_some_and(|n| OWN_ENTRIES.contains(&n)) {
            continue;
        }
        let path = entry.path();
        let is_dir = entry.file_type().map_err(TopicError::io(&path))?.is_dir();
        if is_dir && datadir::is_delete_dir_name(&name) && datadir::removable(&path) {
            scan.deleted.push(path);
        } else if let Some((topic, index)) = is_dir.then(|| datadir::parse_partition_dir_name(&name)).flatten() {
            scan.partitions
                .entry(topic.to_string())
                .or_default()
                .insert(index, datadir::read_partition_metadata(&path));
        } else {
            scan.unknown.push(name);
        }
    }
    Ok(scan)
}

fn read_meta_dir(meta_dir: &Path) -> Result<Vec<MetaRead>, TopicError> {
    let mut out = Vec::new();
    let mut unknown = Vec::new();
    for entry in fs::read_dir(meta_dir).map_err(TopicError::io(meta_dir))? {
        let path = entry.map_err(TopicError::io(meta_dir))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.ends_with(".tmp") {
            continue; // an interrupted atomic write; the next write replaces it
        }
        match name.strip_suffix(".properties") {
            Some(stem) => out.push(read_meta(&path, stem)),
            None => unknown.push(name),
        }
    }
    if !unknown.is_empty() {
        tracing::warn!(dir = %meta_dir.display(), entries = ?unknown, "unknown files among the topic metadata; left alone");
    }
    Ok(out)
}

/// Reads a metadata file: the current layout (`topic.name` inside, the file named after the
/// topic or its id) or the older one (no `topic.name`, the file named after the topic).
fn read_meta(path: &Path, stem: &str) -> MetaRead {
    let stem_id = Uuid::parse_str(stem).ok();
    let stem_name = stem_id.is_none().then(|| stem.to_string()).filter(|n| validate_topic_name(n).is_ok());
    let bad = |name: Option<String>, message: String| MetaRead::Bad {
        path: path.to_path_buf(),
        name,
        id: stem_id,
        message: format!("{}: {message}", path.display()),
    };
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) => return bad(stem_name, format!("cannot be read: {e}")),
    };
    let Ok(text) = String::from_utf8(bytes) else {
        return bad(stem_name, "not UTF-8 text".into());
    };
    let props = parse_properties(&text);
    let legacy = !props.contains_key("topic.name");
    let name = match props.get("topic.name") {
        Some(n) if validate_topic_name(n).is_ok() => n.clone(),
        Some(n) => return bad(stem_name, format!("topic.name {n:?} is not a legal topic name")),
        None => match stem_name {
            Some(n) => n,
            None => return bad(None, "no topic.name".into()),
        },
    };
    let id = match props.get("topic.id").map(|s| Uuid::parse_str(s)) {
        Some(Ok(id)) if !id.is_nil() => id,
        _ => return bad(Some(name), "no valid topic.id".into()),
    };
    if stem_id.map_or(stem != name, |s| s != id) {
        return bad(Some(name), "the file is named after neither its topic.name nor its topic.id".into());
    }
    let min = if legacy { 1 } else { 0 };
    let partitions = match props.get("partitions").map(|s| s.parse::<i32>()) {
        Some(Ok(n)) if n >= min => n,
        _ => return bad(Some(name), "no valid partitions count".into()),
    };
    let count = || props.get("pending.partitions").and_then(|s| s.parse::<i32>().ok()).filter(|&n| n > partitions);
    let pending = match props.get("pending.operation").map(String::as_str) {
        None => None,
        Some("create") if partitions == 0 => match count() {
            Some(n) => Some(Pending::Create(n)),
            None => return bad(Some(name), "pending.operation=create without a valid pending.partitions".into()),
        },
        Some("add-partitions") => match count() {
            Some(n) => Some(Pending::AddPartitions(n)),
            None => {
                return bad(Some(name), "pending.operation=add-partitions without a valid pending.partitions".into())
            }
        },
        Some("delete") => Some(Pending::Delete),
        Some(other) => return bad(Some(name), format!("unknown pending.operation {other:?}")),
    };
    if pending.is_none() && partitions == 0 {
        return bad(Some(name), "a topic of 0 partitions".into());
    }
    let configs =
        props.iter().filter_map(|(k, v)| k.strip_prefix("config.").map(|k| (k.to_string(), v.clone()))).collect();
    MetaRead::Good { path: path.to_path_buf(), meta: TopicMeta { name, id, partitions, configs, pending }, legacy }
}
