//! The controller quorum over TCP on loopback: three voters, each with a `QuorumServer` and a
//! `TcpNetwork` to the others, persisted under a temp dir so a stopped voter can restart.

mod quorum_common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use quorum_common::{bounded, expect_closed, raft_config, WAIT};
use tern_controller::raft::{
    parse_quorum_voters, ControllerNode, LogStore, NodeId, QuorumServer, StateMachineStore, TcpNetwork, MAX_FRAME_BYTES,
};
use tern_controller::*;
use tern_metadata::*;
use tokio::net::TcpListener;

/// Binds `addr` again once a stopped voter's listener let go of it: its aborted task is dropped
/// a moment later.
async fn rebind(addr: SocketAddr) -> TcpListener {
    let mut listener = TcpListener::bind(addr).await;
    for _ in 0..100 {
        if listener.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        listener = TcpListener::bind(addr).await;
    }
    listener.unwrap()
}

struct Voter {
    node: Arc<ControllerNode>,
    server: QuorumServer,
}

struct TcpCluster {
    root: tempfile::TempDir,
    addrs: BTreeMap<NodeId, SocketAddr>,
    voters: BTreeMap<NodeId, Voter>,
    snapshot_every: u64,
}

impl TcpCluster {
    async fn start() -> TcpCluster {
        TcpCluster::start_with_snapshots_every(1000).await
    }

    async fn start_with_snapshots_every(snapshot_every: u64) -> TcpCluster {
        // Bind first: every voter needs every address before its Raft starts.
        let mut listeners = BTreeMap::new();
        for id in 1..=3 {
            listeners.insert(id, TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let addrs = listeners.iter().map(|(id, l)| (*id, l.local_addr().unwrap())).collect();
        let mut cluster =
            TcpCluster { root: tempfile::tempdir().unwrap(), addrs, voters: BTreeMap::new(), snapshot_every };
        for (id, listener) in listeners {
            cluster.start_voter(id, listener).await;
        }
        let members: BTreeMap<NodeId, BasicNode> =
            cluster.addrs.iter().map(|(id, addr)| (*id, BasicNode { addr: addr.to_string() })).collect();
        cluster.voters[&1].node.raft().initialize(members).await.unwrap();
        cluster
    }

    async fn start_voter(&mut self, id: NodeId, listener: TcpListener) {
        let dir = self.root.path().join(id.to_string());
        let (log, sm) = (LogStore::open(&dir).unwrap(), StateMachineStore::open(&dir).unwrap());
        let network = TcpNetwork::new(self.addrs.clone()).with_request_timeout(Duration::from_secs(2));
        let config = ControllerConfig { seed: id, ..Default::default() };
        let node = ControllerNode::start(id, raft_config(self.snapshot_every, Some(256)), network, log, sm, config)
            .await
            .unwrap();
        let node = Arc::new(node);
        let server = QuorumServer::serve(listener, node.clone()).unwrap();
        self.voters.insert(id, Voter { node, server });
    }

    /// Stops the voter's server (closing its connections) and its Raft.
    async fn stop_voter(&mut self, id: NodeId) {
        let voter = self.voters.remove(&id).unwrap();
        voter.server.stop();
        voter.node.shutdown().await.unwrap();
    }

    /// Restarts a stopped voter from its files, on its old address.
    async fn restart_voter(&mut self, id: NodeId) {
        let listener = rebind(self.addrs[&id]).await;
        self.start_voter(id, listener).await;
    }

    /// Waits until every running voter names the same running leader. (A restarted leader
    /// names itself, in its old term, until it hears of the newer one.)
    async fn leader(&self) -> NodeId {
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::time::Instant::now() < deadline {
            let named: BTreeSet<_> =
                self.voters.values().map(|v| v.node.raft().metrics().borrow().current_leader).collect();
            if let [Some(leader)] = named.into_iter().collect::<Vec<_>>()[..] {
                if self.voters.contains_key(&leader) {
                    return leader;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the voters did not agree on a leader");
    }

    async fn on_leader<T>(&self, request: impl FnOnce(&mut Controller) -> ControllerResult<T>) -> T {
        let leader = self.leader().await;
        self.voters[&leader].node.handle(0, request).await.unwrap()
    }

    /// Waits until every running voter has applied what the leader has; checks that all
    /// images are equal and returns it.
    async fn converged_image(&self) -> MetadataImage {
        let leader = self.leader().await;
        let applied = self.voters[&leader].node.with_committed(|s| s.last_applied.map(|l| l.index));
        for voter in self.voters.values() {
            voter.node.raft().wait(Some(WAIT)).applied_index_at_least(applied, "catch up").await.unwrap();
        }
        let image = self.voters[&leader].node.committed_image();
        for (id, voter) in &self.voters {
            assert_eq!(voter.node.committed_image(), image, "voter {id} has the leader's image");
        }
        image
    }

    async fn register_brokers(&self) {
        for id in 1..=3 {
            let request = BrokerRegistrationRequest {
                broker_id: id,
                incarnation_id: Uuid::from_u128(id as u128),
                listeners: vec![],
                rack: None,
            };
            let reply = self.on_leader(|c| c.register_broker(request, 0)).await;
            assert_eq!(reply.error_code, 0);
            // The first heartbeat unfences the broker.
            let reply = self
                .on_leader(|c| {
                    let heartbeat = BrokerHeartbeatRequest {
                        broker_id: id,
                        broker_epoch: reply.broker_epoch,
                        current_metadata_offset: c.image().offset(),
                        want_fence: false,
                        want_shutdown: false,
                    };
                    c.heartbeat(heartbeat, 0)
                })
                .await;
            assert!(!reply.is_fenced);
        }
    }

    async fn create_topic(&self, name: &str, partitions: i32) -> Uuid {
        let result = self.on_leader(|c| c.create_topics(vec![CreatableTopic::new(name, partitions, 3)], false)).await;
        assert_eq!(result[0].error_code, 0, "{:?}", result[0].error_message);
        result[0].topic_id
    }

    async fn shutdown(self) {
        for voter in self.voters.values() {
            voter.server.stop();
            voter.node.shutdown().await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_over_tcp_elect_a_leader_and_agree_on_a_topic() {
    bounded(async {
        let cluster = TcpCluster::start().await;
        cluster.register_brokers().await;
        let id = cluster.create_topic("orders", 6).await;
        let image = cluster.converged_image().await;
        assert_eq!(image.topic_by_name("orders").unwrap().id, id);
        assert_eq!(image.topic(id).unwrap().partitions.len(), 6);
        cluster.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_leader_is_replaced_and_catches_up_after_a_restart() {
    bounded(async {
        let mut cluster = TcpCluster::start().await;
        cluster.register_brokers().await;
        cluster.create_topic("before", 3).await;
        cluster.converged_image().await;

        let old = cluster.leader().await;
        cluster.stop_voter(old).await;
        let new = cluster.leader().await;
        assert_ne!(new, old);
        cluster.create_topic("after", 2).await;

        // The others reconnect to the restarted voter and send it what it missed.
        cluster.restart_voter(old).await;
        let image = cluster.converged_image().await;
        assert!(image.topic_by_name("before").is_some());
        assert_eq!(image.topic_by_name("after").unwrap().partitions.len(), 2);
        assert!(cluster.voters[&old].node.committed_image().topic_by_name("after").is_some());
        cluster.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_voter_catches_up_from_a_snapshot_sent_in_chunks() {
    bounded(async {
        let mut cluster = TcpCluster::start_with_snapshots_every(5).await;
        cluster.register_brokers().await;
        let leader = cluster.leader().await;
        let lagging = *cluster.voters.keys().find(|id| **id != leader).unwrap();
        cluster.stop_voter(lagging).await;
        let applied_when_stopped = cluster.voters[&leader].node.with_committed(|s| s.last_applied.unwrap().index);

        for i in 0..12 {
            cluster.create_topic(&format!("t{i}"), 2).await;
        }
        // The leader's log is compacted past what the stopped voter has, so only a snapshot
        // can catch it up.
        let raft = cluster.voters[&leader].node.raft().clone();
        raft.trigger().snapshot().await.unwrap();
        let applied = cluster.voters[&leader].node.with_committed(|s| s.last_applied.unwrap());
        raft.wait(Some(WAIT)).snapshot(applied, "snapshot").await.unwrap();
        raft.wait(Some(WAIT))
            .metrics(|m| m.purged.is_some_and(|p| p.index > applied_when_stopped), "purged")
            .await
            .unwrap();

        cluster.restart_voter(lagging).await;
        let image = cluster.converged_image().await;
        assert_eq!(image.topics().count(), 12);
        let snapshot = cluster.voters[&lagging].node.raft().metrics().borrow().snapshot;
        assert!(snapshot.is_some_and(|s| s.index > applied_when_stopped), "installed a snapshot: {snapshot:?}");
        // The applied-offset watch followed the installed snapshot and what came after it.
        for (id, voter) in &cluster.voters {
            assert_eq!(*voter.node.applied().borrow(), image.offset(), "voter {id}");
        }
        cluster.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_frames_close_the_connection_without_disturbing_the_quorum() {
    bounded(async {
        let cluster = TcpCluster::start().await;
        cluster.register_brokers().await;
        let leader = cluster.leader().await;
        let follower = *cluster.voters.keys().find(|id| **id != leader).unwrap();
        for id in [leader, follower] {
            let addr = cluster.voters[&id].server.local_addr();
            // An unknown request kind.
            expect_closed(addr, &[0, 0, 0, 5, 0x42, 0, 0, 0, 1]).await;
            // A vote request cut short.
            expect_closed(addr, &[0, 0, 0, 7, 2, 0, 0, 0, 1, 0, 0]).await;
            // A length prefix over the bound, with nothing after it.
            expect_closed(addr, &(MAX_FRAME_BYTES as u32 + 1).to_be_bytes()).await;
            expect_closed(addr, &u32::MAX.to_be_bytes()).await;
        }
        cluster.create_topic("still-serving", 1).await;
        let image = cluster.converged_image().await;
        assert!(image.topic_by_name("still-serving").is_some());
        cluster.shutdown().await;
    })
    .await
}

#[test]
fn quorum_voters_parse_and_name_the_bad_entry() {
    let voters = parse_quorum_voters("1@127.0.0.1:9093, 2@[::1]:9094,3@localhost:9095").unwrap();
    assert_eq!(voters.len(), 3);
    assert_eq!(voters[&1], "127.0.0.1:9093".parse().unwrap());
    assert_eq!(voters[&2], "[::1]:9094".parse().unwrap());
    assert_eq!(voters[&3].port(), 9095);
    assert!(voters[&3].ip().is_loopback());

    for (voters, bad) in [
        ("1@127.0.0.1:9093,2@127.0.0.1", "2@127.0.0.1"),
        ("x@127.0.0.1:9093", "x@127.0.0.1:9093"),
        ("1-127.0.0.1:9093", "1-127.0.0.1:9093"),
        ("1@:9093", "1@:9093"),
        ("1@127.0.0.1:99999", "1@127.0.0.1:99999"),
        ("1@127.0.0.1:9093,1@127.0.0.1:9094", "1@127.0.0.1:9094"),
        ("", ""),
    ] {
        let e = parse_quorum_voters(voters).unwrap_err();
        assert_eq!(e.entry, bad, "{voters:?}");
        assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
    }
}

/// A voter frozen as by SIGSTOP: its port still accepts connections (the kernel does that) but
/// nothing is ever read or answered. Holds the accepted sockets until dropped.
fn black_hole(listener: TcpListener) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_voter_does_not_stop_the_other_two() {
    bounded(async {
        for freeze_leader in [false, true] {
            let mut cluster = TcpCluster::start().await;
            cluster.register_brokers().await;
            cluster.create_topic("before", 3).await;
            cluster.converged_image().await;
            let leader = cluster.leader().await;
            let frozen = match freeze_leader {
                true => leader,
                false => *cluster.voters.keys().find(|id| **id != leader).unwrap(),
            };
            let addr = cluster.addrs[&frozen];
            cluster.stop_voter(frozen).await;
            let hole = black_hole(rebind(addr).await);
            for i in 0..5 {
                cluster.create_topic(&format!("while-frozen-{i}"), 2).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            let image = cluster.converged_image().await;
            assert!(image.topic_by_name("while-frozen-4").is_some(), "frozen {frozen} (leader: {freeze_leader})");
            hole.abort();
            cluster.shutdown().await;
        }
    })
    .await
}
