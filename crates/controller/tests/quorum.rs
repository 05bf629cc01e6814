//! The controller quorum in process: three voters on the in-process router, with the
//! metadata records replicated by openraft.

mod quorum_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use openraft::BasicNode;
use quorum_common::raft_config;
use tern_controller::raft::{ControllerNode, LogStore, NodeError, NodeId, Router, StateMachineStore};
use tern_controller::*;
use tern_metadata::*;

const WAIT: Option<Duration> = Some(Duration::from_secs(15));

struct Cluster {
    router: Router,
    nodes: BTreeMap<NodeId, ControllerNode>,
    dirs: BTreeMap<NodeId, PathBuf>,
    snapshot_every: u64,
}

impl Cluster {
    /// Three voters, in memory or (with `root`) persisted under `root/<id>`.
    async fn start(root: Option<&Path>, snapshot_every: u64) -> Cluster {
        let mut cluster =
            Cluster { router: Router::new(), nodes: BTreeMap::new(), dirs: BTreeMap::new(), snapshot_every };
        for id in 1..=3 {
            if let Some(root) = root {
                cluster.dirs.insert(id, root.join(id.to_string()));
            }
            cluster.start_node(id).await;
        }
        let members: BTreeMap<NodeId, BasicNode> = (1..=3).map(|id| (id, BasicNode { addr: String::new() })).collect();
        cluster.nodes[&1].raft().initialize(members).await.unwrap();
        cluster
    }

    async fn start_node(&mut self, id: NodeId) {
        let (log, sm) = match self.dirs.get(&id) {
            Some(dir) => (LogStore::open(dir).unwrap(), StateMachineStore::open(dir).unwrap()),
            None => (LogStore::in_memory(), StateMachineStore::in_memory()),
        };
        let config = ControllerConfig { seed: id, ..Default::default() };
        let node = ControllerNode::start(
            id,
            raft_config(self.snapshot_every, None),
            self.router.for_node(id),
            log,
            sm,
            config,
        )
        .await
        .unwrap();
        self.router.add(id, node.raft().clone());
        self.router.reconnect(id);
        self.nodes.insert(id, node);
    }

    async fn stop_node(&mut self, id: NodeId) {
        self.router.isolate(id);
        self.router.remove(id);
        let node = self.nodes.remove(&id).unwrap();
        node.shutdown().await.unwrap();
    }

    /// Waits until one of the running nodes leads and sees itself as leader.
    async fn leader(&self) -> NodeId {
        for _ in 0..300 {
            for (id, node) in &self.nodes {
                if node.raft().metrics().borrow().current_leader == Some(*id) {
                    return *id;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no leader elected");
    }

    async fn on_leader<T>(&self, request: impl FnOnce(&mut Controller) -> ControllerResult<T>) -> T {
        let leader = self.leader().await;
        self.nodes[&leader].handle(0, request).await.unwrap()
    }

    /// Waits until every running node has applied what the leader has, then returns the
    /// leader's image after checking that all images are equal.
    async fn converged_image(&self) -> MetadataImage {
        let leader = self.leader().await;
        let applied = self.nodes[&leader].with_committed(|s| s.last_applied.map(|l| l.index));
        for node in self.nodes.values() {
            node.raft().wait(WAIT).applied_index_at_least(applied, "catch up").await.unwrap();
        }
        let image = self.nodes[&leader].committed_image();
        for (id, node) in &self.nodes {
            assert_eq!(node.committed_image(), image, "node {id} has the leader's image");
        }
        image
    }

    async fn register_brokers(&self, ids: impl IntoIterator<Item = BrokerId>) {
        for id in ids {
            let reply = self
                .on_leader(|c| {
                    c.register_broker(
                        BrokerRegistrationRequest {
                            broker_id: id,
                            incarnation_id: Uuid::from_u128(id as u128),
                            listeners: vec![],
                            rack: None,
                        },
                        0,
                    )
                })
                .await;
            assert_eq!(reply.error_code, 0);
            let reply = self
                .on_leader(|c| {
                    let offset = c.image().offset();
                    c.heartbeat(
                        BrokerHeartbeatRequest {
                            broker_id: id,
                            broker_epoch: reply.broker_epoch,
                            current_metadata_offset: offset,
                            want_fence: false,
                            want_shutdown: false,
                        },
                        0,
                    )
                })
                .await;
            assert!(!reply.is_fenced);
        }
    }

    async fn create_topic(&self, name: &str, partitions: i32, rf: i16) -> Uuid {
        let result = self.on_leader(|c| c.create_topics(vec![CreatableTopic::new(name, partitions, rf)], false)).await;
        assert_eq!(result[0].error_code, 0, "{:?}", result[0].error_message);
        result[0].topic_id
    }

    async fn shutdown(self) {
        for node in self.nodes.values() {
            node.shutdown().await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_elect_a_leader_and_apply_the_same_records() {
    let cluster = Cluster::start(None, 1000).await;
    let leader = cluster.leader().await;
    cluster.register_brokers([1, 2, 3]).await;
    let t = cluster.create_topic("orders", 6, 3).await;
    let image = cluster.converged_image().await;
    assert_eq!(image.brokers().filter(|b| !b.fenced).count(), 3);
    assert_eq!(image.topic_by_name("orders").unwrap().id, t);
    assert_eq!(image.topic(t).unwrap().partitions.len(), 6);

    // A follower is not the active controller and says who is.
    let follower = cluster.nodes.keys().copied().find(|id| *id != leader).unwrap();
    let refused = cluster.nodes[&follower].handle(0, |c| c.tick(0).into_result()).await;
    assert_eq!(refused.err(), Some(NodeError::NotController { leader: Some(leader) }));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_keeps_the_committed_metadata_and_serves_requests() {
    let mut cluster = Cluster::start(None, 1000).await;
    cluster.register_brokers([1, 2, 3]).await;
    cluster.create_topic("before", 3, 3).await;
    let before = cluster.converged_image().await;

    let old = cluster.leader().await;
    cluster.stop_node(old).await;
    let new = cluster.leader().await;
    assert_ne!(new, old);
    assert_eq!(cluster.nodes[&new].committed_image().topic_by_name("before").unwrap().partitions.len(), 3);

    // The new active controller starts from the committed image and goes on from there.
    cluster.create_topic("after", 2, 3).await;
    let after = cluster.converged_image().await;
    assert_eq!(after.topic_by_name("before"), before.topic_by_name("before"));
    assert!(after.topic_by_name("after").is_some());
    assert!(after.offset() > before.offset());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_catches_up_from_a_snapshot_after_compaction() {
    let root = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(Some(root.path()), 5).await;
    cluster.register_brokers([1, 2, 3]).await;
    let leader = cluster.leader().await;
    let lagging = cluster.nodes.keys().copied().find(|id| *id != leader).unwrap();
    cluster.stop_node(lagging).await;
    let applied_when_stopped = cluster.nodes[&leader].with_committed(|s| s.last_applied.unwrap().index);

    for i in 0..20 {
        cluster.create_topic(&format!("t{i}"), 2, 2).await;
    }
    // Snapshots were built and the log compacted past what the stopped node has.
    let leader_node = &cluster.nodes[&leader];
    leader_node.raft().trigger().snapshot().await.unwrap();
    let applied = leader_node.with_committed(|s| s.last_applied);
    leader_node.raft().wait(WAIT).snapshot(applied.unwrap(), "snapshot").await.unwrap();
    leader_node
        .raft()
        .wait(WAIT)
        .metrics(|m| m.purged.is_some_and(|p| p.index > applied_when_stopped), "purged")
        .await
        .unwrap();

    cluster.start_node(lagging).await;
    let image = cluster.converged_image().await;
    assert_eq!(image.topics().count(), 20);
    let metrics = cluster.nodes[&lagging].raft().metrics().borrow().clone();
    assert!(
        metrics.snapshot.is_some_and(|s| s.index > applied_when_stopped),
        "the restarted node installed a snapshot: {:?}",
        metrics.snapshot
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_quorum_restarts_from_its_files() {
    let root = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(Some(root.path()), 8).await;
    cluster.register_brokers([1, 2, 3]).await;
    for i in 0..6 {
        cluster.create_topic(&format!("t{i}"), 3, 3).await;
    }
    let before = cluster.converged_image().await;
    for id in 1..=3 {
        cluster.stop_node(id).await;
    }
    for id in 1..=3 {
        cluster.start_node(id).await;
    }
    // The blank entry of the new leader's term commits, and replays, everything before it.
    cluster.leader().await;
    cluster.on_leader(|_| ControllerResult { records: vec![], response: () }).await;
    let after = cluster.converged_image().await;
    assert_eq!(after, before);
    cluster.create_topic("more", 1, 3).await;
    cluster.shutdown().await;
}

trait IntoResult {
    fn into_result(self) -> ControllerResult<()>;
}

impl IntoResult for Vec<MetadataRecord> {
    fn into_result(self) -> ControllerResult<()> {
        ControllerResult { records: self, response: () }
    }
}
