//! Opening a production voter: its stores under one directory, the TCP network to the other
//! voters, and Raft timings close to Kafka's (`controller.quorum.election.timeout.ms` 1000).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use openraft::BasicNode;

use super::{ControllerNode, LogStore, NodeError, NodeId, StateMachineStore, TcpNetwork};
use crate::ControllerConfig;

/// Metadata records between snapshots of the image.
const SNAPSHOT_EVERY: u64 = 20_000;

fn raft_config() -> Result<Arc<openraft::Config>, NodeError> {
    let config = openraft::Config {
        cluster_name: "tern".into(),
        // A follower campaigns once it has heard nothing for openraft's leader lease (the
        // maximum election timeout) plus a random election timeout: 1.8-2.4 s after a
        // leader dies. The heartbeat interval is also how long an AppendEntries may take.
        heartbeat_interval: 100,
        election_timeout_min: 600,
        election_timeout_max: 1200,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY),
        ..Default::default()
    };
    config.validate().map(Arc::new).map_err(|e| NodeError::Raft(e.to_string()))
}

impl ControllerNode {
    /// Opens (or creates) voter `id`'s stores under `dir` and starts it. On a fresh quorum the
    /// voter with the lowest id initializes the membership to `voters`, once: a quorum formed
    /// by any other rule could have two initial memberships.
    pub async fn open(
        id: NodeId,
        dir: &Path,
        voters: BTreeMap<NodeId, SocketAddr>,
        config: ControllerConfig,
    ) -> Result<ControllerNode, NodeError> {
        let io = |e: std::io::Error| NodeError::Raft(format!("{}: {e}", dir.display()));
        let log = LogStore::open(dir).map_err(io)?;
        let state_machine = StateMachineStore::open(dir).map_err(io)?;
        let network = TcpNetwork::new(voters.clone());
        let node = ControllerNode::start(id, raft_config()?, network, log, state_machine, config).await?;
        let first = voters.keys().next().copied();
        let initialized = node.raft().is_initialized().await.map_err(|e| NodeError::Raft(e.to_string()))?;
        if first == Some(id) && !initialized {
            let members: BTreeMap<NodeId, BasicNode> =
                voters.iter().map(|(id, addr)| (*id, BasicNode { addr: addr.to_string() })).collect();
            node.raft().initialize(members).await.map_err(|e| NodeError::Raft(e.to_string()))?;
            tracing::info!(voters = ?voters.keys().collect::<Vec<_>>(), "initialized the controller quorum");
        }
        Ok(node)
    }
}
