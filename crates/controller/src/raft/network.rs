//! The in-process transport: every node's [`Raft`] handle in one map, called directly. Tests
//! cut nodes off with [`Router::isolate`]. The TCP transport ([`super::TcpNetwork`]) implements
//! the same openraft traits (`RaftNetworkFactory`, `RaftNetwork`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;

use super::{NodeId, Raft, TypeConfig};

#[derive(Default)]
struct Nodes {
    rafts: BTreeMap<NodeId, Raft>,
    isolated: BTreeSet<NodeId>,
}

/// Shared by every node of an in-process quorum; each node gets its own [`Router::for_node`].
#[derive(Clone, Default)]
pub struct Router {
    nodes: Arc<Mutex<Nodes>>,
    from: Option<NodeId>,
}

impl Router {
    pub fn new() -> Self {
        Router::default()
    }

    /// The transport that node `id` sends with.
    pub fn for_node(&self, id: NodeId) -> Router {
        Router { nodes: self.nodes.clone(), from: Some(id) }
    }

    pub fn add(&self, id: NodeId, raft: Raft) {
        self.nodes.lock().unwrap().rafts.insert(id, raft);
    }

    pub fn remove(&self, id: NodeId) {
        self.nodes.lock().unwrap().rafts.remove(&id);
    }

    /// Cuts `id` off: nothing it sends or is sent arrives.
    pub fn isolate(&self, id: NodeId) {
        self.nodes.lock().unwrap().isolated.insert(id);
    }

    pub fn reconnect(&self, id: NodeId) {
        self.nodes.lock().unwrap().isolated.remove(&id);
    }

    fn target<E: std::error::Error>(&self, to: NodeId) -> Result<Raft, RPCError<NodeId, BasicNode, E>> {
        let nodes = self.nodes.lock().unwrap();
        let cut = |id| nodes.isolated.contains(&id);
        if self.from.is_some_and(cut) || cut(to) {
            let e = std::io::Error::new(std::io::ErrorKind::NotConnected, format!("node {to} is unreachable"));
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        }
        match nodes.rafts.get(&to) {
            Some(raft) => Ok(raft.clone()),
            None => {
                let e = std::io::Error::new(std::io::ErrorKind::NotFound, format!("node {to} is not running"));
                Err(RPCError::Network(NetworkError::new(&e)))
            }
        }
    }
}

pub struct Connection {
    router: Router,
    target: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for Router {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Connection {
        Connection { router: self.clone(), target }
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let raft = self.router.target(self.target)?;
        raft.append_entries(rpc).await.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        let raft = self.router.target(self.target)?;
        raft.install_snapshot(rpc).await.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let raft = self.router.target(self.target)?;
        raft.vote(rpc).await.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}
