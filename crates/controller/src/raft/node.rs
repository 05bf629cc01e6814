//! One controller of the quorum: its Raft instance and stores, and, while it leads, the
//! active [`Controller`] (Kafka's active controller) whose records it proposes.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::RaftNetworkFactory;
use tern_metadata::MetadataImage;
use tokio::sync::Mutex;

use super::{CommittedState, LogStore, NodeId, Raft, RecordBatch, StateMachineStore, TypeConfig};
use crate::{Controller, ControllerConfig, ControllerResult};

/// How long a new leader waits to apply its log before it serves requests.
const ACTIVATION_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// Kafka's NOT_CONTROLLER: send the request to `leader`.
    #[error("not the active controller (leader: {leader:?})")]
    NotController { leader: Option<NodeId> },
    #[error("raft: {0}")]
    Raft(String),
}

pub struct ControllerNode {
    id: NodeId,
    raft: Raft,
    committed: Arc<RwLock<CommittedState>>,
    config: ControllerConfig,
    /// The working controller and the term it was built in; `None` when not leading, or
    /// after a failed proposal left its image ahead of the log.
    active: Mutex<Option<(u64, Controller)>>,
}

impl ControllerNode {
    pub async fn start<N>(
        id: NodeId,
        raft_config: Arc<openraft::Config>,
        network: N,
        log: LogStore,
        state_machine: StateMachineStore,
        config: ControllerConfig,
    ) -> Result<Self, NodeError>
    where
        N: RaftNetworkFactory<TypeConfig>,
    {
        let committed = state_machine.state();
        let raft = Raft::new(id, raft_config, network, log, state_machine)
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        Ok(ControllerNode { id, raft, committed, config, active: Mutex::new(None) })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Reads the committed state (image, last applied entry) without copying it.
    pub fn with_committed<R>(&self, f: impl FnOnce(&CommittedState) -> R) -> R {
        f(&self.committed.read().unwrap())
    }

    pub fn committed_image(&self) -> MetadataImage {
        self.with_committed(|s| s.image.clone())
    }

    /// Runs one request on the active controller and commits its records; answers once they
    /// are committed. Requests are handled one at a time, in order.
    pub async fn handle<T>(
        &self,
        now_ms: i64,
        request: impl FnOnce(&mut Controller) -> ControllerResult<T>,
    ) -> Result<T, NodeError> {
        let mut active = self.active.lock().await;
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.current_leader != Some(self.id) {
            *active = None;
            return Err(NodeError::NotController { leader: metrics.current_leader });
        }
        if active.as_ref().map(|(term, _)| *term) != Some(metrics.current_term) {
            *active = None;
            // Every entry of earlier terms is committed and applied once this returns, so the
            // new controller starts from all the metadata there is.
            self.raft.ensure_linearizable().await.map_err(|e| match e.forward_to_leader() {
                Some(f) => NodeError::NotController { leader: f.leader_id },
                None => NodeError::Raft(e.to_string()),
            })?;
            // A leader that resumed its own term after a restart may hold entries it proposed
            // and did not commit: they too must be in the image before new records get
            // offsets after them.
            self.raft
                .wait(Some(ACTIVATION_TIMEOUT))
                .applied_index_at_least(metrics.last_log_index, "the leader applied its whole log")
                .await
                .map_err(|e| NodeError::Raft(e.to_string()))?;
            let image = self.committed_image();
            *active = Some((metrics.current_term, Controller::new(self.config.clone(), image, now_ms)));
        }
        let (_, controller) = active.as_mut().expect("set above");
        let result = request(controller);
        if !result.records.is_empty() {
            if let Err(e) = self.raft.client_write(RecordBatch(result.records)).await {
                *active = None;
                return Err(match e.forward_to_leader() {
                    Some(f) => NodeError::NotController { leader: f.leader_id },
                    None => NodeError::Raft(e.to_string()),
                });
            }
        }
        Ok(result.response)
    }

    /// Fences brokers whose sessions expired; the driver calls it at
    /// [`Controller::next_deadline`], or periodically.
    pub async fn tick(&self, now_ms: i64) -> Result<(), NodeError> {
        self.handle(now_ms, |c| ControllerResult { records: c.tick(now_ms), response: () }).await
    }

    pub async fn shutdown(&self) -> Result<(), NodeError> {
        self.raft.shutdown().await.map_err(|e| NodeError::Raft(e.to_string()))
    }
}
