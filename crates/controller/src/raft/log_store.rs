//! The Raft log and vote: in memory, and optionally persisted under a directory as
//! `log` (append-only frames, one per entry, fsynced on append) and `log-meta` (vote, purge
//! point and commit point, written atomically). Truncation and purging rewrite `log` atomically; both
//! are rare (a conflicting suffix, a compaction after a snapshot). File writes and fsyncs run on
//! tokio's blocking pool, never on the async workers that also serve the network.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, RaftLogReader, StorageIOError};
use tern_metadata::codec::{Reader, Writer};
use tokio::sync::Mutex;

use super::codec::{self, decode_entry, encode_entry, frame, unframe};
use super::{Entry, LogId, StorageError, TypeConfig, Vote};

#[derive(Clone, Default)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    log: BTreeMap<u64, Entry>,
    last_purged: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    files: Option<Files>,
}

struct Files {
    dir: PathBuf,
    log: File,
}

fn io_err(e: std::io::Error) -> StorageError {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

impl LogStore {
    /// A log kept only in memory.
    pub fn in_memory() -> Self {
        LogStore::default()
    }

    /// A log persisted under `dir`, recovering what is there. A torn or corrupt tail of the
    /// log file (a crash mid-append) is cut off.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut inner = Inner::default();
        if let Some(meta) = codec::read_file(&dir.join("log-meta"))? {
            let mut r = Reader(&meta);
            let invalid = |e| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
            inner.vote = match r.u8().map_err(invalid)? {
                0 => None,
                _ => Some(codec::read_vote(&mut r).map_err(invalid)?),
            };
            inner.last_purged = codec::read_log_id(&mut r).map_err(invalid)?;
            inner.committed = codec::read_log_id(&mut r).map_err(invalid)?;
        }
        let path = dir.join("log");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut at = 0;
        while let Some((payload, used)) = unframe(&bytes[at..]) {
            let Ok(entry) = decode_entry(payload) else { break };
            inner.log.insert(entry.log_id.index, entry);
            at += used;
        }
        let log = OpenOptions::new().create(true).append(true).open(&path)?;
        if at < bytes.len() {
            // Destructive recovery is never silent: say what is dropped.
            tracing::error!(
                file = %path.display(),
                kept_entries = inner.log.len(),
                last_kept_index = inner.log.keys().next_back().copied(),
                dropped_bytes = bytes.len() - at,
                position = at,
                "controller log: cutting a torn or corrupt tail (a crash mid-append)"
            );
            log.set_len(at as u64)?;
            log.sync_all()?;
        }
        inner.files = Some(Files { dir: dir.to_path_buf(), log });
        Ok(LogStore { inner: Arc::new(Mutex::new(inner)) })
    }
}

/// Runs file I/O on the blocking pool. A write slower than [`SLOW_IO`] is logged: every Raft
/// RPC waits for it, and the leader gives an AppendEntries one heartbeat interval.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let started = std::time::Instant::now();
    let result = tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| Err(std::io::Error::other(e)));
    let took = started.elapsed();
    if took > SLOW_IO {
        tracing::warn!(what, took_ms = took.as_millis() as u64, "slow controller log write");
    }
    result
}

const SLOW_IO: std::time::Duration = std::time::Duration::from_millis(50);

impl Inner {
    async fn write_meta(&self) -> Result<(), StorageError> {
        let Some(files) = &self.files else { return Ok(()) };
        let mut out = Vec::new();
        let mut w = Writer(&mut out);
        match &self.vote {
            None => w.u8(0),
            Some(v) => {
                w.u8(1);
                codec::write_vote(&mut w, v);
            }
        }
        codec::write_log_id(&mut w, &self.last_purged);
        codec::write_log_id(&mut w, &self.committed);
        let path = files.dir.join("log-meta");
        blocking("log-meta", move || codec::write_file_atomically(&path, &out)).await.map_err(io_err)
    }

    async fn rewrite_log(&mut self) -> Result<(), StorageError> {
        let Some(files) = &mut self.files else { return Ok(()) };
        let mut out = Vec::new();
        for entry in self.log.values() {
            frame(&encode_entry(entry), &mut out);
        }
        let dir = files.dir.clone();
        let write = move || -> std::io::Result<File> {
            let path = dir.join("log");
            let tmp = path.with_extension("tmp");
            let mut f = File::create(&tmp)?;
            f.write_all(&out)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            File::open(&dir)?.sync_all()?;
            OpenOptions::new().append(true).open(&path)
        };
        files.log = blocking("log rewrite", write).await.map_err(io_err)?;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let inner = self.inner.lock().await;
        Ok(inner.log.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let inner = self.inner.lock().await;
        let last = inner.log.values().next_back().map(|e| e.log_id).or(inner.last_purged);
        Ok(LogState { last_purged_log_id: inner.last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let mut inner = self.inner.lock().await;
        inner.vote = Some(*vote);
        inner.write_meta().await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.inner.lock().await.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Persisted: a node that restarts as leader of its own (committed) term, as openraft
        // lets it, would otherwise serve an image that lacks committed entries.
        let mut inner = self.inner.lock().await;
        inner.committed = committed;
        inner.write_meta().await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.inner.lock().await.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry>,
    {
        let mut inner = self.inner.lock().await;
        let mut out = Vec::new();
        for entry in entries {
            if inner.files.is_some() {
                frame(&encode_entry(&entry), &mut out);
            }
            inner.log.insert(entry.log_id.index, entry);
        }
        let result = match &inner.files {
            Some(files) => match files.log.try_clone() {
                Ok(mut log) => blocking("log append", move || log.write_all(&out).and_then(|_| log.sync_data())).await,
                Err(e) => Err(e),
            },
            None => Ok(()),
        };
        let failed = result.as_ref().err().map(|e| std::io::Error::new(e.kind(), e.to_string()));
        callback.log_io_completed(result);
        match failed {
            Some(e) => Err(io_err(e)),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut inner = self.inner.lock().await;
        inner.log.split_off(&log_id.index);
        inner.rewrite_log().await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut inner = self.inner.lock().await;
        inner.last_purged = Some(log_id);
        inner.log = inner.log.split_off(&(log_id.index + 1));
        // The purge point first: a crash between the two leaves extra entries, never a gap.
        inner.write_meta().await?;
        inner.rewrite_log().await
    }
}
