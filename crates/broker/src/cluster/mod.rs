//! A broker in a replicated cluster (KRaft mode, `process.roles=broker,controller`): this node's
//! controller voter, its registration and heartbeats, the reconciliation of local replicas with
//! the committed metadata image, the replica fetchers, and the AlterPartition requests of the
//! partitions it leads.
//!
//! # How metadata reaches the broker
//! Every node is a voter, so its own Raft state machine holds the committed image. Each time it
//! applies a batch, [`ClusterRuntime::reconcile`] compares the image with the local replicas and
//! acts: create or open the logs of partitions assigned here, tell each replica state machine
//! its leader, epoch and ISR (only when the partition epoch moved, so an in-flight AlterPartition
//! is not cancelled by unrelated changes), and drop the replicas of deleted topics.
//!
//! # Invariants
//! - Admin requests (create, delete, grow topics) are controller operations; the broker never
//!   creates a topic on its own in a cluster. It answers once its own image holds the change (or
//!   after a bounded wait).
//! - A partition directory is created only for a replica the image assigns to this broker, and
//!   opened only if its `partition.metadata` names the image's topic id; a mismatch takes that
//!   replica offline and names the file; nothing is deleted except replicas of topics the image
//!   removed (renamed `-delete` first, as on a single node).

mod fetcher;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tern_controller::raft::{ControllerClient, ControllerNode, NodeId};
use tern_controller::{
    AlterPartitionData, AlterPartitionRequest, AlterPartitionTopic, BrokerHeartbeatRequest, BrokerRegistrationRequest,
    IsrMember,
};
use tern_metadata::{ConfigResourceType, Endpoint, MetadataImage, PartitionRegistration};
use tern_partition::LeaderAndIsr;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::now_ms;
use crate::topics::{Partition, ReplicaEvent};
use crate::Broker;

pub(crate) use fetcher::Fetchers;

/// How long an admin request waits for this broker's image to show its outcome.
const APPLY_WAIT: Duration = Duration::from_secs(10);

/// A broker clients may use, as Metadata and DescribeCluster list it.
pub(crate) struct AliveBroker {
    pub id: i32,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
}

pub struct ClusterRuntime {
    node_id: i32,
    pub(crate) controller: Arc<ControllerNode>,
    pub(crate) client: ControllerClient,
    broker_epoch: AtomicI64,
    incarnation_id: Uuid,
    /// The image the broker last reconciled with.
    image: RwLock<Arc<MetadataImage>>,
    /// The partition epoch last applied to each local replica.
    applied_epochs: Mutex<HashMap<(Uuid, i32), i32>>,
    pub(crate) events: mpsc::UnboundedSender<ReplicaEvent>,
    pub(crate) fetchers: Fetchers,
    listener: Endpoint,
    rack: Option<String>,
    /// The producer id block this broker hands out from (next, end), from the controller.
    producer_ids: tokio::sync::Mutex<(i64, i64)>,
    /// Serves the quorum for the node's lifetime (dropping it stops serving).
    quorum_server: Mutex<Option<tern_controller::raft::QuorumServer>>,
    /// When the controller last answered this broker as registered and unfenced (ms); 0
    /// before that.
    last_unfenced_ms: AtomicI64,
    /// `broker.session.timeout.ms`.
    session_timeout_ms: i64,
}

impl ClusterRuntime {
    pub(crate) fn new(
        node_id: i32,
        controller: Arc<ControllerNode>,
        voters: BTreeMap<NodeId, SocketAddr>,
        advertised: (String, u16),
        rack: Option<String>,
        fetcher_config: fetcher::FetcherConfig,
        session_timeout_ms: i64,
    ) -> (Arc<ClusterRuntime>, mpsc::UnboundedReceiver<ReplicaEvent>) {
        let (events, rx) = mpsc::unbounded_channel();
        let runtime = ClusterRuntime {
            node_id,
            controller,
            client: ControllerClient::new(voters, Duration::from_secs(30)),
            broker_epoch: AtomicI64::new(-1),
            incarnation_id: Uuid::new_v4(),
            image: RwLock::new(Arc::new(MetadataImage::new())),
            applied_epochs: Mutex::new(HashMap::new()),
            events,
            fetchers: Fetchers::new(node_id, fetcher_config),
            listener: Endpoint {
                name: "PLAINTEXT".into(),
                host: advertised.0,
                port: advertised.1,
                security_protocol: 0,
            },
            rack,
            quorum_server: Mutex::new(None),
            producer_ids: tokio::sync::Mutex::new((0, 0)),
            last_unfenced_ms: AtomicI64::new(0),
            session_timeout_ms,
        };
        (Arc::new(runtime), rx)
    }

    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    /// The image this broker serves from.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn broker_epoch(&self) -> i64 {
        self.broker_epoch.load(Ordering::Acquire)
    }

    /// The unfenced brokers of `image` with their client listener: what Metadata and
    /// DescribeCluster list.
    pub(crate) fn alive_brokers(&self, image: &MetadataImage) -> Vec<AliveBroker> {
        image
            .unfenced_brokers()
            .filter_map(|b| {
                let endpoint = b.endpoints.first()?;
                Some(AliveBroker { id: b.id, host: endpoint.host.clone(), port: endpoint.port, rack: b.rack.clone() })
            })
            .collect()
    }

    /// The next producer id for InitProducerId, from a block the controller allocated to this
    /// broker (AllocateProducerIds), so ids are unique across the cluster and survive any
    /// broker's loss. COORDINATOR_LOAD_IN_PROGRESS (retriable) while no block can be had.
    pub(crate) async fn next_producer_id(&self) -> Result<i64, i16> {
        let mut block = self.producer_ids.lock().await;
        if block.0 >= block.1 {
            match self.client.allocate_producer_ids(self.node_id, self.broker_epoch()).await {
                Ok(Ok((start, len))) => *block = (start, start + i64::from(len)),
                Ok(Err(code)) => {
                    tracing::warn!(
                        error = crate::errors::error_name(code),
                        "the controller refused a producer id block"
                    );
                    return Err(kafka_protocol::error::ResponseError::CoordinatorLoadInProgress.code());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot get a producer id block from the controller");
                    return Err(kafka_protocol::error::ResponseError::CoordinatorLoadInProgress.code());
                }
            }
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }

    /// Every producer id below this was handed out by the controller; none at or above it
    /// ever was. Waits (bounded) for this broker's image to cover `producer_id`, which a
    /// producer may have got from another broker an instant ago.
    pub(crate) async fn producer_ids_below(&self, producer_id: i64) -> i64 {
        if producer_id >= 0 {
            self.wait_for_image(|image| image.next_producer_id() > producer_id).await;
        }
        self.image().next_producer_id()
    }

    /// The controller quorum's leader, if known (DescribeCluster's and Metadata's controller).
    pub fn controller_leader(&self) -> Option<i32> {
        self.controller.leader().map(|id| id as i32)
    }

    /// Whether the controller answered this broker as unfenced within the last
    /// `broker.session.timeout.ms`. Past that it may have been fenced without knowing (frozen,
    /// cut off): what it holds in memory as a coordinator may be stale, so it answers as one
    /// only once a heartbeat goes through again.
    pub(crate) fn in_session(&self) -> bool {
        now_ms() - self.last_unfenced_ms.load(Ordering::Acquire) <= self.session_timeout_ms
    }

    /// The `controller_id` of Metadata and DescribeCluster. As in Kafka's KRaft mode, clients
    /// never talk to the controller: brokers forward admin requests to it. So the answer names
    /// a live broker (this one if it is in the broker list, else the first that is), never the
    /// active controller: an admin client that waited for a dead controller's id to change
    /// would stall for its whole timeout after the controller failed. DescribeQuorum names
    /// the active controller.
    pub(crate) fn controller_id_for_clients(&self, image: &MetadataImage) -> i32 {
        let alive = self.alive_brokers(image);
        if alive.iter().any(|b| b.id == self.node_id) {
            self.node_id
        } else {
            alive.first().map_or(-1, |b| b.id)
        }
    }

    /// Waits (bounded) until this broker's image satisfies `done`.
    pub(crate) async fn wait_for_image(&self, done: impl Fn(&MetadataImage) -> bool) -> bool {
        let mut applied = self.controller.applied();
        let deadline = tokio::time::Instant::now() + APPLY_WAIT;
        loop {
            if done(&self.image()) {
                return true;
            }
            // The reconciler updates `image` after `applied` moves: poll briefly as well.
            let _ = tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + Duration::from_millis(50)),
                applied.changed(),
            )
            .await;
            if tokio::time::Instant::now() >= deadline {
                return done(&self.image());
            }
        }
    }

    /// Registers with the controller, then heartbeats every `broker.heartbeat.interval.ms`
    /// with the offset of the image applied; re-registers when the controller forgot it.
    pub(crate) async fn run_lifecycle(self: Arc<Self>, heartbeat_every: Duration) {
        loop {
            let request = BrokerRegistrationRequest {
                broker_id: self.node_id,
                incarnation_id: self.incarnation_id,
                listeners: vec![self.listener.clone()],
                rack: self.rack.clone(),
            };
            match self.client.register_broker(request).await {
                Ok(reply) if reply.error_code == 0 => {
                    self.broker_epoch.store(reply.broker_epoch, Ordering::Release);
                    tracing::info!(broker_epoch = reply.broker_epoch, "registered with the controller");
                }
                Ok(reply) => {
                    tracing::warn!(
                        error = crate::errors::error_name(reply.error_code),
                        "broker registration refused; retrying"
                    );
                    tokio::time::sleep(heartbeat_every).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reach the controller to register; retrying");
                    tokio::time::sleep(heartbeat_every).await;
                    continue;
                }
            }
            let mut fenced = true;
            loop {
                let request = self.heartbeat_request(false);
                match self.client.heartbeat(request).await {
                    Ok(reply) if reply.error_code == 0 => {
                        if !reply.is_fenced {
                            self.last_unfenced_ms.store(now_ms(), Ordering::Release);
                        }
                        if fenced != reply.is_fenced {
                            fenced = reply.is_fenced;
                            tracing::info!(fenced, "broker state changed at the controller");
                        }
                    }
                    Ok(reply) => {
                        tracing::warn!(
                            error = crate::errors::error_name(reply.error_code),
                            "heartbeat refused; registering again"
                        );
                        break;
                    }
                    Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                }
                tokio::time::sleep(heartbeat_every).await;
            }
        }
    }

    /// A heartbeat with the image offset this broker applied.
    fn heartbeat_request(&self, want_shutdown: bool) -> BrokerHeartbeatRequest {
        BrokerHeartbeatRequest {
            broker_id: self.node_id,
            broker_epoch: self.broker_epoch(),
            current_metadata_offset: self.image().offset(),
            want_fence: false,
            want_shutdown,
        }
    }

    /// Kafka's controlled shutdown: ask the controller to move leadership away, bounded.
    pub async fn controlled_shutdown(&self, bound: Duration) {
        let deadline = tokio::time::Instant::now() + bound;
        while tokio::time::Instant::now() < deadline {
            let request = self.heartbeat_request(true);
            match tokio::time::timeout_at(deadline, self.client.heartbeat(request)).await {
                Ok(Ok(reply)) if reply.should_shutdown => {
                    tracing::info!("controlled shutdown: the controller moved leadership away");
                    return;
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "controlled shutdown heartbeat failed"),
                Err(_) => break,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tracing::warn!("controlled shutdown did not complete in time; stopping anyway");
    }

    /// Follows the committed image: reconciles after every applied batch.
    pub(crate) async fn run_reconciler(self: Arc<Self>, broker: Arc<Broker>) {
        let mut applied = self.controller.applied();
        loop {
            let image = Arc::new(self.controller.committed_image());
            let (runtime, b) = (self.clone(), broker.clone());
            let reconciled = tokio::task::spawn_blocking(move || runtime.reconcile(&b, image)).await;
            if let Err(e) = reconciled {
                tracing::error!(error = %e, "metadata reconciliation failed");
            }
            if applied.changed().await.is_err() {
                return;
            }
        }
    }

    /// Makes the local replicas match `image`. Blocking (creates and opens logs).
    fn reconcile(&self, broker: &Broker, image: Arc<MetadataImage>) {
        let brokers: BTreeMap<i32, tern_partition::BrokerRegistration> = image
            .brokers()
            .map(|b| {
                let reg = tern_partition::BrokerRegistration {
                    broker_epoch: b.epoch,
                    fenced: b.fenced,
                    in_controlled_shutdown: b.in_controlled_shutdown,
                };
                (b.id, reg)
            })
            .collect();
        // Topics gone from the image (or re-created under a new id): drop their replicas here.
        for topic in broker.topics.all() {
            let current = image.topic_by_name(&topic.name);
            if current.is_none_or(|t| t.id != topic.id) {
                for p in &topic.partitions {
                    self.fetchers.remove(&p.topic, p.index);
                }
                broker
                    .topics
                    .drop_cluster_topic(&topic.name, broker.config.log_config(&topic.configs).file_delete_delay_ms);
                tracing::info!(topic = topic.name, "deleted the topic's local replicas: the controller removed it");
            }
        }
        // Published first: the effects of applying it (FetchFrom) look leaders' addresses up in it.
        *self.image.write().unwrap_or_else(|e| e.into_inner()) = image.clone();
        let mut applied = self.applied_epochs.lock().unwrap_or_else(|e| e.into_inner());
        for topic in image.topics() {
            let configs = image.configs(ConfigResourceType::TOPIC, &topic.name).cloned().unwrap_or_default();
            let count = topic.partitions.keys().next_back().map_or(0, |&last| last + 1);
            for (&index, registration) in &topic.partitions {
                if !registration.replicas.contains(&self.node_id) {
                    continue;
                }
                let partition = match broker.topics.ensure_cluster_replica(
                    &topic.name,
                    topic.id,
                    index,
                    count,
                    &configs,
                    &broker.config,
                    self,
                ) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!(topic = topic.name, partition = index, error = %e, "cannot open a replica assigned to this broker");
                        continue;
                    }
                };
                partition.update_brokers(brokers.clone());
                let key = (topic.id, index);
                if applied.get(&key).is_some_and(|&e| e >= registration.partition_epoch) {
                    continue;
                }
                applied.insert(key, registration.partition_epoch);
                let was_leader = partition.is_leader();
                partition.apply_leader_and_isr(&leader_and_isr(registration));
                // The group coordinator follows leadership of `__consumer_offsets`.
                if topic.name == crate::offsets_topic::OFFSETS_TOPIC && was_leader != partition.is_leader() {
                    match was_leader {
                        false => broker.groups.became_leader(partition.clone()),
                        true => broker.groups.resigned(index),
                    }
                }
            }
        }
    }

    /// Carries out the replica effects that need the network.
    pub(crate) async fn run_events(
        self: Arc<Self>,
        broker: Arc<Broker>,
        mut events: mpsc::UnboundedReceiver<ReplicaEvent>,
    ) {
        while let Some(event) = events.recv().await {
            match event {
                ReplicaEvent::AlterPartition { topic, index, proposal } => {
                    let Some(partition) = broker.topics.get(&topic).and_then(|t| t.partition(index).cloned()) else {
                        continue;
                    };
                    tokio::spawn(self.clone().alter_partition(partition, proposal));
                }
                ReplicaEvent::FetchFrom { topic, index, leader_id, leader_epoch } => {
                    let address = self
                        .image()
                        .broker(leader_id)
                        .and_then(|b| b.endpoints.first().map(|e| format!("{}:{}", e.host, e.port)));
                    match address {
                        Some(address) => self.fetchers.add(&broker, leader_id, address, &topic, index, leader_epoch),
                        None => {
                            // Not registered in this image yet: ask again shortly.
                            tracing::info!(
                                topic,
                                partition = index,
                                leader_id,
                                "the leader to fetch from has no address in the metadata yet; retrying"
                            );
                            let events = self.events.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(Duration::from_millis(500)).await;
                                let _ = events.send(ReplicaEvent::FetchFrom { topic, index, leader_id, leader_epoch });
                            });
                        }
                    }
                }
                ReplicaEvent::StopFetching { topic, index } => self.fetchers.remove(&topic, index),
            }
        }
    }

    async fn alter_partition(
        self: Arc<Self>,
        partition: Arc<Partition>,
        proposal: tern_partition::AlterPartitionProposal,
    ) {
        let request = AlterPartitionRequest {
            version: 3,
            broker_id: self.node_id,
            broker_epoch: self.broker_epoch(),
            topics: vec![AlterPartitionTopic {
                topic_id: partition.topic_id,
                topic_name: partition.topic.clone(),
                partitions: vec![AlterPartitionData {
                    partition: partition.index,
                    leader_epoch: proposal.leader_epoch,
                    partition_epoch: proposal.partition_epoch,
                    new_isr: proposal
                        .new_isr
                        .iter()
                        .map(|m| IsrMember { broker_id: m.broker_id, broker_epoch: m.broker_epoch })
                        .collect(),
                }],
            }],
        };
        let result = match self.client.alter_partition(request).await {
            Ok(response) if response.error_code != 0 => Err(response.error_code),
            Ok(response) => match response.topics.first().and_then(|t| t.partitions.first()) {
                Some(p) if p.error_code != 0 => Err(p.error_code),
                Some(p) => {
                    let (_, _, replicas, _) = partition.leadership();
                    Ok(LeaderAndIsr {
                        leader: p.leader,
                        leader_epoch: p.leader_epoch,
                        partition_epoch: p.partition_epoch,
                        replicas,
                        isr: p.isr.iter().copied().collect(),
                    })
                }
                None => Err(kafka_protocol::error::ResponseError::UnknownServerError.code()),
            },
            Err(e) => {
                tracing::warn!(topic = partition.topic, partition = partition.index, error = %e, "AlterPartition failed");
                Err(kafka_protocol::error::ResponseError::RequestTimedOut.code())
            }
        };
        if let Err(code) = result {
            tracing::info!(
                topic = partition.topic,
                partition = partition.index,
                error = crate::errors::error_name(code),
                "ISR change refused by the controller"
            );
        }
        partition.alter_partition_completed(proposal.proposal_id, result);
    }

    /// Timers of the local replicas (ISR shrink, acks=all deadlines).
    pub(crate) async fn run_ticks(self: Arc<Self>, broker: Arc<Broker>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for topic in broker.topics.all() {
                for p in &topic.partitions {
                    p.tick();
                }
            }
        }
    }
}

fn leader_and_isr(r: &PartitionRegistration) -> LeaderAndIsr {
    LeaderAndIsr {
        leader: r.leader,
        leader_epoch: r.leader_epoch,
        partition_epoch: r.partition_epoch,
        replicas: r.replicas.clone(),
        isr: r.isr.iter().copied().collect(),
    }
}

/// Starts everything a cluster node runs besides the Kafka listener.
pub(crate) fn spawn_tasks(
    runtime: &Arc<ClusterRuntime>,
    broker: &Arc<Broker>,
    events: mpsc::UnboundedReceiver<ReplicaEvent>,
    heartbeat_every: Duration,
) {
    tokio::spawn(runtime.clone().run_reconciler(broker.clone()));
    tokio::spawn(runtime.clone().run_events(broker.clone(), events));
    tokio::spawn(runtime.clone().run_ticks(broker.clone()));
    tokio::spawn(runtime.clone().run_lifecycle(heartbeat_every));
    tokio::spawn(runtime.controller.clone().run_ticker());
}

/// Starts this node's controller voter (serving the quorum on the controller listener) and the
/// broker's cluster runtime. The broker must have been opened as a cluster node.
pub async fn start(broker: &Arc<Broker>) -> Result<Arc<ClusterRuntime>, String> {
    let settings = broker.config.cluster.clone().ok_or("not a cluster node: process.roles is not set")?;
    let node_id = broker.config.node_id();
    let voters = tern_controller::raft::parse_quorum_voters(&settings.quorum_voters).map_err(|e| e.to_string())?;
    if !voters.contains_key(&(node_id as NodeId)) {
        return Err(format!(
            "node.id {node_id} is not among controller.quorum.voters ({}): every node is a voter (combined mode)",
            settings.quorum_voters
        ));
    }
    let config = &broker.config;
    let session_timeout_ms = config.get_i64("broker.session.timeout.ms").unwrap_or(9000);
    let controller_config = tern_controller::ControllerConfig {
        broker_session_timeout_ms: session_timeout_ms,
        num_partitions: config.num_partitions(),
        default_replication_factor: config.get_i64("default.replication.factor").unwrap_or(1) as i16,
        unclean_leader_election_enable: config.get_i64("unclean.leader.election.enable").unwrap_or(0) != 0,
        seed: rand_seed(),
        auto_leader_rebalance_enable: config.get_i64("auto.leader.rebalance.enable").unwrap_or(1) != 0,
        leader_imbalance_check_interval_ms: config
            .get_i64("leader.imbalance.check.interval.seconds")
            .unwrap_or(300)
            .saturating_mul(1000),
    };
    let listener = tokio::net::TcpListener::bind(settings.controller_listen)
        .await
        .map_err(|e| format!("binding the controller listener {}: {e}", settings.controller_listen))?;
    let dir = config.data_dir.join(METADATA_DIR);
    let node = ControllerNode::open(node_id as NodeId, &dir, voters.clone(), controller_config)
        .await
        .map_err(|e| format!("starting the controller: {e}"))?;
    let node = Arc::new(node);
    let quorum_server = tern_controller::raft::QuorumServer::serve(listener, node.clone())
        .map_err(|e| format!("serving the controller listener {}: {e}", settings.controller_listen))?;
    let fetcher_config = fetcher::FetcherConfig {
        max_wait_ms: config.get_i64("replica.fetch.wait.max.ms").unwrap_or(500) as i32,
        min_bytes: config.get_i64("replica.fetch.min.bytes").unwrap_or(1) as i32,
        max_bytes: config.get_i64("replica.fetch.max.bytes").unwrap_or(1_048_576) as i32,
        response_max_bytes: config.get_i64("replica.fetch.response.max.bytes").unwrap_or(10_485_760) as i32,
        backoff_ms: config.get_i64("replica.fetch.backoff.ms").unwrap_or(1000) as u64,
    };
    let advertised = (config.advertised_host.clone(), config.advertised_port as u16);
    let (runtime, events) = ClusterRuntime::new(
        node_id,
        node,
        voters,
        advertised,
        settings.rack.clone(),
        fetcher_config,
        session_timeout_ms,
    );
    *runtime.quorum_server.lock().unwrap_or_else(|e| e.into_inner()) = Some(quorum_server);
    broker.set_cluster(runtime.clone());
    let heartbeat_every = Duration::from_millis(config.get_i64("broker.heartbeat.interval.ms").unwrap_or(2000) as u64);
    spawn_tasks(&runtime, broker, events, heartbeat_every);
    tracing::info!(node_id, controller_listener = %settings.controller_listen, "cluster node started");
    Ok(runtime)
}

/// Where a node keeps the controller's Raft log and snapshots (Kafka: `__cluster_metadata-0`).
pub const METADATA_DIR: &str = "__cluster_metadata-0";

fn rand_seed() -> u64 {
    let id = Uuid::new_v4();
    let (hi, lo) = id.as_u64_pair();
    hi ^ lo
}
