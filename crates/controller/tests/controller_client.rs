//! The broker→controller path on loopback: `ControllerClient` sending Kafka requests over the
//! quorum port to whichever voter is the active controller, and each voter's committed image
//! (read after `applied()` moves) showing what was committed.

mod quorum_common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use quorum_common::{bounded, expect_closed, raft_config, WAIT};
use tern_controller::errors;
use tern_controller::raft::{
    codec, ControllerClient, ControllerClientError, ControllerNode, LogStore, NodeId, QuorumServer, StateMachineStore,
    TcpNetwork,
};
use tern_controller::*;
use tern_metadata::*;
use tokio::net::TcpListener;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

struct Voter {
    node: Arc<ControllerNode>,
    server: QuorumServer,
}

struct Cluster {
    addrs: BTreeMap<NodeId, SocketAddr>,
    voters: BTreeMap<NodeId, Voter>,
}

impl Cluster {
    /// `n` in-memory voters, each serving the quorum port and running its ticker.
    async fn start(n: u64) -> Cluster {
        Cluster::start_with(n, ControllerConfig::default()).await
    }

    async fn start_with(n: u64, config: ControllerConfig) -> Cluster {
        let mut listeners = BTreeMap::new();
        for id in 1..=n {
            listeners.insert(id, TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let addrs: BTreeMap<NodeId, SocketAddr> =
            listeners.iter().map(|(id, l)| (*id, l.local_addr().unwrap())).collect();
        let mut voters = BTreeMap::new();
        for (id, listener) in listeners {
            let network = TcpNetwork::new(addrs.clone()).with_request_timeout(Duration::from_secs(2));
            let config = ControllerConfig { seed: id, ..config.clone() };
            let (log, sm) = (LogStore::in_memory(), StateMachineStore::in_memory());
            let node = ControllerNode::start(id, raft_config(1000, None), network, log, sm, config).await.unwrap();
            let node = Arc::new(node);
            tokio::spawn(node.clone().run_ticker());
            let server = QuorumServer::serve(listener, node.clone()).unwrap();
            voters.insert(id, Voter { node, server });
        }
        let members: BTreeMap<NodeId, BasicNode> =
            addrs.iter().map(|(id, addr)| (*id, BasicNode { addr: addr.to_string() })).collect();
        voters[&1].node.raft().initialize(members).await.unwrap();
        Cluster { addrs, voters }
    }

    fn client(&self) -> ControllerClient {
        ControllerClient::new(self.addrs.clone(), CLIENT_TIMEOUT)
    }

    /// Waits until every running voter names the same running leader.
    async fn leader(&self) -> NodeId {
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::time::Instant::now() < deadline {
            let named: Vec<_> = self.voters.values().map(|v| v.node.leader()).collect();
            if let Some(Some(leader)) = named.first() {
                if named.iter().all(|n| *n == Some(*leader)) && self.voters.contains_key(leader) {
                    return *leader;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the voters did not agree on a leader");
    }

    async fn stop_voter(&mut self, id: NodeId) {
        let voter = self.voters.remove(&id).unwrap();
        voter.server.stop();
        voter.node.shutdown().await.unwrap();
    }

    async fn shutdown(self) {
        for voter in self.voters.values() {
            voter.server.stop();
            voter.node.shutdown().await.unwrap();
        }
    }
}

/// Waits, on the node's `applied()` watch, until its committed image satisfies `ready`.
async fn committed_when<T>(node: &ControllerNode, ready: impl Fn(&MetadataImage) -> Option<T>) -> T {
    let mut applied = node.applied();
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(found) = node.with_committed(|s| ready(&s.image)) {
                return found;
            }
            applied.changed().await.expect("the state machine is running");
        }
    })
    .await
    .expect("the committed image got there in time")
}

/// Registers brokers 1..=n and heartbeats each until it is unfenced; returns their epochs.
async fn register_brokers(client: &ControllerClient, node: &ControllerNode, n: i32) -> BTreeMap<BrokerId, i64> {
    let mut epochs = BTreeMap::new();
    for id in 1..=n {
        let request = BrokerRegistrationRequest {
            broker_id: id,
            incarnation_id: Uuid::from_u128(id as u128),
            listeners: vec![Endpoint {
                name: "PLAINTEXT".into(),
                host: "127.0.0.1".into(),
                port: 9092 + id as u16,
                security_protocol: 0,
            }],
            rack: None,
        };
        let reply = client.register_broker(request).await.unwrap();
        assert_eq!(reply.error_code, errors::NONE);
        epochs.insert(id, reply.broker_epoch);
    }
    for (&id, &epoch) in &epochs {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            // A broker reports what it has applied: here, what `node` has.
            let offset = committed_when(node, |image| Some(image.offset()).filter(|o| *o >= epoch)).await;
            let heartbeat = BrokerHeartbeatRequest {
                broker_id: id,
                broker_epoch: epoch,
                current_metadata_offset: offset,
                want_fence: false,
                want_shutdown: false,
            };
            let reply = client.heartbeat(heartbeat).await.unwrap();
            assert_eq!(reply.error_code, errors::NONE);
            if !reply.is_fenced {
                assert!(reply.is_caught_up);
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "broker {id} was unfenced in time");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    epochs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reaches_the_active_controller_and_follows_it_to_a_new_leader() {
    bounded(async {
        let mut cluster = Cluster::start(3).await;
        let client = cluster.client();
        let leader = cluster.leader().await;
        let epochs = register_brokers(&client, &cluster.voters[&leader].node, 3).await;
        assert_eq!(client.last_known_leader(), Some(leader));

        let created = client.create_topics(vec![CreatableTopic::new("orders", 3, 3)], false).await.unwrap();
        assert_eq!(created.len(), 1);
        assert_eq!(created[0].error_code, errors::NONE, "{:?}", created[0].error_message);
        assert_eq!((created[0].num_partitions, created[0].replication_factor), (3, 3));
        let topic_id = created[0].topic_id;
        assert!(!topic_id.is_nil());

        // Every voter's committed image has the topic, once its applied offset moves.
        for (id, voter) in &cluster.voters {
            let topic = committed_when(&voter.node, |image| image.topic(topic_id).cloned()).await;
            assert_eq!(topic.name, "orders", "voter {id}");
            assert_eq!(topic.partitions.len(), 3, "voter {id}");
            for p in topic.partitions.values() {
                assert_eq!(p.replicas.len(), 3, "voter {id}");
                assert!(p.has_leader(), "voter {id}");
            }
        }

        // AlterPartition: the leader of partition 0 shrinks its ISR by one follower.
        let image = cluster.voters[&leader].node.committed_image();
        let p0 = image.partition(TopicIdPartition::new(topic_id, 0)).unwrap().clone();
        let dropped = *p0.isr.iter().find(|b| **b != p0.leader).unwrap();
        let new_isr: Vec<IsrMember> = p0
            .isr
            .iter()
            .filter(|b| **b != dropped)
            .map(|b| IsrMember { broker_id: *b, broker_epoch: epochs[b] })
            .collect();
        let request = AlterPartitionRequest {
            version: 3,
            broker_id: p0.leader,
            broker_epoch: epochs[&p0.leader],
            topics: vec![AlterPartitionTopic {
                topic_id,
                topic_name: "orders".into(),
                partitions: vec![AlterPartitionData {
                    partition: 0,
                    leader_epoch: p0.leader_epoch,
                    partition_epoch: p0.partition_epoch,
                    new_isr,
                }],
            }],
        };
        let response = client.alter_partition(request).await.unwrap();
        assert_eq!(response.error_code, errors::NONE);
        assert_eq!(response.topics.len(), 1);
        assert_eq!((response.topics[0].topic_id, response.topics[0].topic_name.as_str()), (topic_id, "orders"));
        let result = &response.topics[0].partitions[0];
        assert_eq!(result.error_code, errors::NONE);
        assert_eq!(result.leader, p0.leader);
        assert_eq!(result.partition_epoch, p0.partition_epoch + 1);
        assert!(!result.isr.contains(&dropped) && result.isr.len() == p0.isr.len() - 1, "{result:?}");
        for voter in cluster.voters.values() {
            let isr = committed_when(&voter.node, |image| {
                let p = image.partition(TopicIdPartition::new(topic_id, 0))?;
                (p.partition_epoch == result.partition_epoch).then(|| p.isr.clone())
            })
            .await;
            assert_eq!(isr, result.isr);
        }

        // The leader describes the quorum: every voter matched up to the commit index.
        let info = cluster.voters[&leader].node.quorum_info().await;
        assert_eq!(info.leader_id, Some(leader));
        assert!(info.leader_epoch >= 1);
        assert!(info.high_watermark > 0);
        assert_eq!(info.voters.iter().map(|v| v.id).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(info.voters.iter().any(|v| v.id == leader && v.log_end_offset >= info.high_watermark), "{info:?}");
        let follower = *cluster.voters.keys().find(|id| **id != leader).unwrap();
        let follower_info = cluster.voters[&follower].node.quorum_info().await;
        assert_eq!(follower_info.leader_id, Some(leader));
        assert_eq!(follower_info.leader_epoch, info.leader_epoch);

        // A client that knows only a follower is told NOT_CONTROLLER, with the leader named.
        let follower_only =
            ControllerClient::new([(follower, cluster.addrs[&follower])].into(), Duration::from_millis(400));
        match follower_only.create_topics(vec![CreatableTopic::new("nope", 1, 1)], false).await {
            Err(ControllerClientError::Unreachable { last_error, .. }) => {
                assert!(last_error.contains(&format!("names Some({leader})")), "{last_error}")
            }
            other => panic!("a follower answered {other:?}"),
        }

        // The leader goes; the same client finds the new one within its timeout.
        cluster.stop_voter(leader).await;
        let created = client.create_topics(vec![CreatableTopic::new("after", 1, 3)], false).await.unwrap();
        assert_eq!(created[0].error_code, errors::NONE, "{:?}", created[0].error_message);
        let new_leader = client.last_known_leader().unwrap();
        assert_ne!(new_leader, leader);
        let after = created[0].topic_id;
        for voter in cluster.voters.values() {
            committed_when(&voter.node, |image| image.topic(after).map(|_| ())).await;
        }
        assert!(cluster.voters[&new_leader].node.committed_image().topic(topic_id).is_some());
        cluster.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_controller_api_round_trips_on_one_voter() {
    bounded(async {
        let cluster = Cluster::start(1).await;
        let client = cluster.client();
        let node = cluster.voters[&1].node.clone();
        cluster.leader().await;
        let epochs = register_brokers(&client, &node, 2).await;

        // AllocateProducerIds: consecutive blocks; a stale broker epoch gets none.
        let block = PRODUCER_ID_BLOCK_SIZE;
        assert_eq!(client.allocate_producer_ids(1, epochs[&1]).await.unwrap(), Ok((0, block)));
        assert_eq!(client.allocate_producer_ids(2, epochs[&2]).await.unwrap(), Ok((i64::from(block), block)));
        assert_eq!(client.allocate_producer_ids(2, epochs[&2] + 1).await.unwrap(), Err(errors::STALE_BROKER_EPOCH));

        // A second registration of a live broker with another incarnation is refused.
        let duplicate = BrokerRegistrationRequest {
            broker_id: 1,
            incarnation_id: Uuid::from_u128(99),
            listeners: vec![],
            rack: None,
        };
        assert_eq!(client.register_broker(duplicate).await.unwrap().error_code, errors::DUPLICATE_BROKER_REGISTRATION);
        let stale = BrokerHeartbeatRequest {
            broker_id: 1,
            broker_epoch: epochs[&1] + 1000,
            current_metadata_offset: 0,
            want_fence: false,
            want_shutdown: false,
        };
        assert_eq!(client.heartbeat(stale).await.unwrap().error_code, errors::STALE_BROKER_EPOCH);

        // Manual assignment, configs and validate-only.
        let mut manual = CreatableTopic::new("manual", -1, -1);
        manual.assignments = vec![vec![1, 2], vec![2, 1]];
        manual.configs = vec![("retention.ms".into(), Some("1000".into()))];
        let validated = client.create_topics(vec![manual.clone()], true).await.unwrap();
        assert_eq!(validated[0].error_code, errors::NONE);
        assert!(node.committed_image().topic_by_name("manual").is_none());
        let created = client
            .create_topics(vec![manual, CreatableTopic::new("manual", 1, 1), CreatableTopic::new("big", 1, 3)], false)
            .await
            .unwrap();
        let codes: Vec<_> = created.iter().map(|r| r.error_code).collect();
        // The duplicate name fails both; three replicas need three brokers.
        assert_eq!(codes, vec![errors::INVALID_REQUEST, errors::INVALID_REQUEST, errors::INVALID_REPLICATION_FACTOR]);
        let mut manual = CreatableTopic::new("manual", -1, -1);
        manual.assignments = vec![vec![1, 2], vec![2, 1]];
        let created = client.create_topics(vec![manual], false).await.unwrap();
        assert_eq!(created[0].error_code, errors::NONE, "{:?}", created[0].error_message);
        let manual_id = created[0].topic_id;
        let topic = committed_when(&node, |image| image.topic(manual_id).cloned()).await;
        assert_eq!(topic.partitions[&0].replicas, vec![1, 2]);
        assert_eq!(topic.partitions[&1].replicas, vec![2, 1]);

        let grown = client
            .create_partitions(
                vec![
                    CreatePartitionsTopic { name: "manual".into(), count: 4, assignments: None },
                    CreatePartitionsTopic { name: "missing".into(), count: 2, assignments: None },
                ],
                false,
            )
            .await
            .unwrap();
        assert_eq!(grown[0].error_code, errors::NONE);
        assert_eq!(grown[1].error_code, errors::UNKNOWN_TOPIC_OR_PARTITION);
        committed_when(&node, |image| image.topic(manual_id).filter(|t| t.partitions.len() == 4).map(|_| ())).await;

        // Preferred election where the preferred replica already leads: nothing to do.
        let elected =
            client.elect_leaders(ElectionType::Preferred, Some(vec![("manual".into(), vec![0])])).await.unwrap();
        assert_eq!(
            elected,
            vec![ElectLeadersTopicResult {
                topic: "manual".into(),
                partitions: vec![(0, errors::ELECTION_NOT_NEEDED)]
            }]
        );
        let all = client.elect_leaders(ElectionType::Preferred, None).await.unwrap();
        assert!(all.iter().all(|t| t.partitions.is_empty()), "{all:?}");

        let set = vec![("retention.ms".to_string(), Some("5000".to_string()))];
        assert_eq!(client.alter_configs(ConfigResourceType::TOPIC, "manual", set.clone()).await.unwrap(), errors::NONE);
        assert_eq!(
            client.alter_configs(ConfigResourceType::TOPIC, "missing", set).await.unwrap(),
            errors::UNKNOWN_TOPIC_OR_PARTITION
        );
        committed_when(&node, |image| {
            let config = image.config(ConfigResourceType::TOPIC, "manual", "retention.ms")?;
            (config == "5000").then_some(())
        })
        .await;

        let deleted = client
            .delete_topics(vec![
                TopicRef::Id(manual_id),
                TopicRef::Name("missing".into()),
                TopicRef::Id(Uuid::from_u128(7)),
            ])
            .await
            .unwrap();
        assert_eq!(
            deleted,
            vec![
                DeletableTopicResult { topic: TopicRef::Id(manual_id), topic_id: manual_id, error_code: errors::NONE },
                DeletableTopicResult {
                    topic: TopicRef::Name("missing".into()),
                    topic_id: Uuid::nil(),
                    error_code: errors::UNKNOWN_TOPIC_OR_PARTITION
                },
                DeletableTopicResult {
                    topic: TopicRef::Id(Uuid::from_u128(7)),
                    topic_id: Uuid::nil(),
                    error_code: errors::UNKNOWN_TOPIC_ID
                },
            ]
        );
        committed_when(&node, |image| image.topic(manual_id).is_none().then_some(())).await;
        cluster.shutdown().await;
    })
    .await
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_controller_requests_close_the_connection_and_the_controller_keeps_serving() {
    bounded(async {
        let cluster = Cluster::start(1).await;
        cluster.leader().await;
        let addr = cluster.addrs[&1];
        const BROKER_HEARTBEAT: i16 = 63;
        for payload in [
            // An unknown api key.
            codec::encode_controller_request(1, 0x7fff, 0, &[]),
            // An api the controller does not serve (Produce).
            codec::encode_controller_request(1, 0, 9, &[0; 16]),
            // An unsupported version.
            codec::encode_controller_request(1, BROKER_HEARTBEAT, 99, &[0; 32]),
            // A body cut short, and garbage.
            codec::encode_controller_request(1, BROKER_HEARTBEAT, 1, &[0, 0, 0, 1, 0, 0]),
            codec::encode_controller_request(1, BROKER_HEARTBEAT, 1, &[0xff; 64]),
            // A whole body and a byte after it.
            {
                let mut body = vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0];
                body.push(0x42);
                codec::encode_controller_request(1, BROKER_HEARTBEAT, 1, &body)
            },
            // No api key at all.
            vec![codec::KIND_CONTROLLER, 0, 0, 0, 1, 0],
        ] {
            expect_closed(addr, &frame(&payload)).await;
        }
        let created = cluster.client().create_topics(vec![CreatableTopic::new("still", 1, 1)], true).await.unwrap();
        // No broker is registered: the request was served, and refused.
        assert_eq!(created[0].error_code, errors::INVALID_REPLICATION_FACTOR);
        cluster.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ticker_fences_a_broker_whose_session_expired() {
    bounded(async {
        let config = ControllerConfig { broker_session_timeout_ms: 300, ..Default::default() };
        let cluster = Cluster::start_with(3, config).await;
        let client = cluster.client();
        let leader = cluster.leader().await;
        register_brokers(&client, &cluster.voters[&leader].node, 1).await;
        // No more heartbeats: every voter sees broker 1 fenced, by the leader's ticker alone.
        for voter in cluster.voters.values() {
            committed_when(&voter.node, |image| image.broker(1).filter(|b| b.fenced).map(|_| ())).await;
        }
        cluster.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_serves_many_tasks_at_once() {
    bounded(async {
        let cluster = Cluster::start(1).await;
        cluster.leader().await;
        let client = Arc::new(cluster.client());
        register_brokers(&client, &cluster.voters[&1].node, 1).await;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..16 {
            let client = client.clone();
            tasks.spawn(async move {
                let created = client.create_topics(vec![CreatableTopic::new(&format!("t{i}"), 2, 1)], false).await;
                created.unwrap().remove(0).error_code
            });
        }
        while let Some(code) = tasks.join_next().await {
            assert_eq!(code.unwrap(), errors::NONE);
        }
        let count = committed_when(&cluster.voters[&1].node, |image| Some(image.topics().count()).filter(|n| *n == 16));
        assert_eq!(count.await, 16);
        cluster.shutdown().await;
    })
    .await
}
