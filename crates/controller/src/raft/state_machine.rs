//! The Raft state machine: the committed metadata image, applied from committed entries.
//! Snapshots are the encoded image; with a directory, the current snapshot is persisted as
//! `snapshot` (meta and image, written atomically) and loaded again on restart, after which
//! openraft re-applies the log from there.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, StorageIOError};
use tern_metadata::codec::{Reader, Writer};
use tern_metadata::MetadataImage;
use tokio::sync::watch;

use super::codec;
use super::{BatchApplied, Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

/// What the state machine has applied; shared with the [`super::ControllerNode`] that reads
/// the committed image.
#[derive(Debug, Clone, Default)]
pub struct CommittedState {
    pub image: MetadataImage,
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
    /// Records that did not apply (the same on every voter), counted for observability.
    pub apply_errors: u64,
}

type StoredSnapshot = (SnapshotMeta, Vec<u8>);

#[derive(Clone)]
pub struct StateMachineStore {
    state: Arc<RwLock<CommittedState>>,
    /// The current snapshot: its meta and the encoded image.
    snapshot: Arc<RwLock<Option<StoredSnapshot>>>,
    dir: Option<PathBuf>,
    /// The image's offset, sent after every applied batch and installed snapshot.
    applied: Arc<watch::Sender<i64>>,
}

fn sm_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(AnyError::new(&e)).into()
}

impl StateMachineStore {
    pub fn in_memory() -> Self {
        StateMachineStore {
            state: Default::default(),
            snapshot: Default::default(),
            dir: None,
            applied: Arc::new(watch::channel(MetadataImage::new().offset()).0),
        }
    }

    /// A state machine whose snapshots are persisted under `dir`, starting from the last one.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let store = StateMachineStore { dir: Some(dir.to_path_buf()), ..Self::in_memory() };
        if let Some(bytes) = codec::read_file(&dir.join("snapshot"))? {
            let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
            let mut r = Reader(&bytes);
            let meta = codec::decode_snapshot_meta(&mut r).map_err(|e| invalid(e.to_string()))?;
            let data = r.bytes().map_err(|e| invalid(e.to_string()))?.to_vec();
            store.install(&meta, &data).map_err(|e| invalid(e.to_string()))?;
            *store.snapshot.write().unwrap() = Some((meta, data));
        }
        Ok(store)
    }

    /// The committed state; readers hold the lock only while they look.
    pub fn state(&self) -> Arc<RwLock<CommittedState>> {
        self.state.clone()
    }

    /// The committed image's offset ([`MetadataImage::offset`]), sent after every batch of
    /// entries the state machine applies and every snapshot it installs (even when the offset
    /// stays the same, as for a blank entry), after the new state is readable.
    pub fn applied(&self) -> watch::Receiver<i64> {
        self.applied.subscribe()
    }

    fn install(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), tern_metadata::SnapshotError> {
        let image = MetadataImage::decode_snapshot(data)?;
        let offset = image.offset();
        {
            let mut state = self.state.write().unwrap();
            state.image = image;
            state.last_applied = meta.last_log_id;
            state.last_membership = meta.last_membership.clone();
        }
        self.applied.send_replace(offset);
        Ok(())
    }

    /// Writes the snapshot file on the blocking pool (it can be tens of MB, fsynced).
    async fn persist(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let mut out = Vec::with_capacity(data.len() + 128);
        let mut w = Writer(&mut out);
        codec::encode_snapshot_meta(meta, &mut w);
        w.bytes(data);
        let path = dir.join("snapshot");
        tokio::task::spawn_blocking(move || codec::write_file_atomically(&path, &out))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), AnyError::new(&e)).into())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (data, last_applied, last_membership) = {
            let state = self.state.read().unwrap();
            (state.image.encode_snapshot(), state.last_applied, state.last_membership.clone())
        };
        let snapshot_id = match last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id.term, id.leader_id.node_id, id.index),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta { last_log_id: last_applied, last_membership, snapshot_id };
        self.persist(&meta, &data).await?;
        *self.snapshot.write().unwrap() = Some((meta.clone(), data.clone()));
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let state = self.state.read().unwrap();
        Ok((state.last_applied, state.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchApplied>, StorageError>
    where
        I: IntoIterator<Item = Entry>,
    {
        let mut state = self.state.write().unwrap();
        let mut answers = Vec::new();
        let mut applied_any = false;
        for entry in entries {
            state.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(batch) => {
                    for record in &batch.0 {
                        if state.image.apply(record).is_err() {
                            state.apply_errors += 1;
                        }
                    }
                }
                EntryPayload::Membership(m) => {
                    state.last_membership = StoredMembership::new(Some(entry.log_id), m);
                }
            }
            answers.push(BatchApplied { last_offset: state.image.offset() });
            applied_any = true;
        }
        let offset = state.image.offset();
        drop(state);
        if applied_any {
            self.applied.send_replace(offset);
        }
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        self.install(meta, &data).map_err(sm_err)?;
        self.persist(meta, &data).await?;
        *self.snapshot.write().unwrap() = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self
            .snapshot
            .read()
            .unwrap()
            .as_ref()
            .map(|(meta, data)| Snapshot { meta: meta.clone(), snapshot: Box::new(Cursor::new(data.clone())) }))
    }
}
