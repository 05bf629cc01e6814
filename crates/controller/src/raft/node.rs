//! One controller of the quorum: its Raft instance and stores, and, while it leads, the
//! active [`Controller`] (Kafka's active controller) whose records it proposes.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::RaftNetworkFactory;
use tern_metadata::MetadataImage;
use tokio::sync::{watch, Mutex};

use super::{CommittedState, LogStore, NodeId, Raft, RecordBatch, StateMachineStore, TypeConfig};
use crate::{Controller, ControllerConfig, ControllerResult};

/// How long a new leader waits to apply its log before it serves requests.
const ACTIVATION_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest [`ControllerNode::run_ticker`] waits between ticks while it leads.
pub const MAX_TICK_INTERVAL: Duration = Duration::from_millis(500);

/// The system clock in milliseconds since the Unix epoch, as the controller's `now_ms`.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The quorum as this voter sees it, for Kafka's DescribeQuorum and DescribeCluster. Offsets
/// are Raft log indexes (not metadata offsets), -1 for none or unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumInfo {
    /// The leader this voter knows of; `None` during an election.
    pub leader_id: Option<NodeId>,
    /// The Raft term, as Kafka's leader epoch.
    pub leader_epoch: u64,
    /// The committed log index this voter knows of (on the leader, the quorum's).
    pub high_watermark: i64,
    /// Every voter of the membership, by id.
    pub voters: Vec<ReplicaState>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaState {
    pub id: NodeId,
    /// On the leader: the last index known to match the leader's log. On a follower: its own
    /// last log index, and -1 for the others.
    pub log_end_offset: i64,
    /// When the voter last fetched (Kafka's `LastFetchTimestamp`): openraft 0.9 does not
    /// report it, so always `None` for now.
    pub last_fetch_ms: Option<i64>,
    /// When the voter was last caught up (`LastCaughtUpTimestamp`): not reported either.
    pub last_caught_up_ms: Option<i64>,
}

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
    applied: watch::Receiver<i64>,
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
        let applied = state_machine.applied();
        let raft = Raft::new(id, raft_config, network, log, state_machine)
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        Ok(ControllerNode { id, raft, committed, config, active: Mutex::new(None), applied })
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

    /// The committed image's offset, updated after every batch the state machine applies and
    /// every snapshot it installs: a co-located broker waits on it, then reads
    /// [`ControllerNode::with_committed`]. `changed()` fails once the Raft has shut down.
    pub fn applied(&self) -> watch::Receiver<i64> {
        self.applied.clone()
    }

    /// The leader this voter knows of (the active controller when it has activated).
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// The quorum from openraft's metrics: the leader, the term, the commit index and, on the
    /// leader, how far each voter's log matches its own.
    pub async fn quorum_info(&self) -> QuorumInfo {
        let metrics = self.raft.metrics().borrow().clone();
        let high_watermark = match self.raft.with_raft_state(|st| st.committed).await {
            Ok(committed) => committed,
            // The Raft has stopped: what it applied is committed.
            Err(_) => metrics.last_applied,
        };
        let index = |id: Option<openraft::LogId<NodeId>>| id.map_or(-1, |id| id.index as i64);
        let voters = metrics
            .membership_config
            .membership()
            .voter_ids()
            .map(|id| {
                let log_end_offset = match &metrics.replication {
                    Some(replication) => replication.get(&id).map_or(-1, |matched| index(*matched)),
                    None if id == self.id => metrics.last_log_index.map_or(-1, |i| i as i64),
                    None => -1,
                };
                ReplicaState { id, log_end_offset, last_fetch_ms: None, last_caught_up_ms: None }
            })
            .collect();
        QuorumInfo {
            leader_id: metrics.current_leader,
            leader_epoch: metrics.current_term,
            high_watermark: index(high_watermark),
            voters,
        }
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

    /// Drives [`Controller::tick`] with the system clock: while this voter leads, at the
    /// controller's [`Controller::next_deadline`] and at least every [`MAX_TICK_INTERVAL`], so
    /// that brokers whose sessions expired are fenced. Losing the leadership is not an error
    /// (logged at DEBUG); other errors are logged at WARN and retried. Returns once the Raft has
    /// shut down; spawn it next to the node.
    pub async fn run_ticker(self: Arc<Self>) {
        let mut metrics = self.raft.metrics();
        loop {
            let leading = {
                let m = metrics.borrow_and_update();
                if m.running_state.is_err() {
                    return;
                }
                m.current_leader == Some(self.id)
            };
            if !leading {
                if metrics.changed().await.is_err() {
                    return;
                }
                continue;
            }
            let now = now_ms();
            let wait = match self
                .handle(now, |c| {
                    let records = c.tick(now);
                    ControllerResult { records, response: c.next_deadline() }
                })
                .await
            {
                Ok(deadline) => {
                    let until = deadline.map_or(MAX_TICK_INTERVAL, |d| Duration::from_millis((d - now).max(0) as u64));
                    until.clamp(Duration::from_millis(1), MAX_TICK_INTERVAL)
                }
                Err(NodeError::NotController { leader }) => {
                    tracing::debug!(node = self.id, ?leader, "controller tick: no longer the active controller");
                    // The metrics may not show the change yet: do not spin on them.
                    Duration::from_millis(50)
                }
                Err(e) => {
                    tracing::warn!(node = self.id, error = %e, "controller tick failed");
                    MAX_TICK_INTERVAL
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    pub async fn shutdown(&self) -> Result<(), NodeError> {
        self.raft.shutdown().await.map_err(|e| NodeError::Raft(e.to_string()))
    }
}
