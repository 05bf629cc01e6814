//! The controller state machine: Kafka's `QuorumController` request handling with
//! `ClusterControlManager`, `BrokerHeartbeatManager` and `ReplicationControlManager`, over one
//! [`MetadataImage`].
//!
//! The image here is the active controller's *working* image: every record a request
//! produces is applied to it at once (as Kafka's timeline structures are), so the next request
//! sees it, and a record's offset is known when it is made (a broker's epoch is the offset of
//! its registration record). The driver commits the records in the order they were returned;
//! if a commit fails, the working image is ahead of the log and the driver must build a new
//! `Controller` from the committed image.

use std::collections::HashMap;

use tern_metadata::{
    BrokerId, BrokerRegistrationChange, ConfigRecord, ConfigResourceType, MetadataImage, MetadataRecord,
    PartitionRecord, RegisterBroker, RemoveTopic, TopicIdPartition, TopicRecord, UnregisterBroker, Uuid, NO_LEADER,
};

use crate::api::*;
use crate::errors::*;
use crate::partition_change::{self, Election};
use crate::placement::{Placer, UsableBroker};
use crate::rng::Rng;

/// Settings with Kafka's names and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerConfig {
    /// `broker.session.timeout.ms`
    pub broker_session_timeout_ms: i64,
    /// `num.partitions`
    pub num_partitions: i32,
    /// `default.replication.factor`
    pub default_replication_factor: i16,
    /// `unclean.leader.election.enable`, the cluster default; a topic config overrides it.
    pub unclean_leader_election_enable: bool,
    /// Seeds placement and topic ids. The driver passes a random seed; tests a fixed one.
    pub seed: u64,
    /// `auto.leader.rebalance.enable`: move leadership back to each partition's preferred
    /// replica (the first) when it is in the ISR and active again.
    pub auto_leader_rebalance_enable: bool,
    /// `leader.imbalance.check.interval.seconds`, in ms: how often that is checked.
    pub leader_imbalance_check_interval_ms: i64,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            broker_session_timeout_ms: 9000,
            num_partitions: 1,
            default_replication_factor: 1,
            unclean_leader_election_enable: false,
            seed: 0,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval_ms: 300_000,
        }
    }
}

pub const UNCLEAN_LEADER_ELECTION_ENABLE: &str = "unclean.leader.election.enable";

/// Producer ids handed to a broker at a time (Kafka's `ProducerIdsBlock.PRODUCER_ID_BLOCK_SIZE`).
pub const PRODUCER_ID_BLOCK_SIZE: i32 = 1000;

/// At most this many preferred-leader elections per balancing round (Kafka's
/// `ReplicationControlManager` bounds them the same way), so one round's records stay small.
pub const MAX_ELECTIONS_PER_IMBALANCE: usize = 1000;

/// The active controller's view of one broker's session. Not replicated: a newly active
/// controller starts every registered broker with a fresh session, as Kafka does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BrokerSession {
    last_contact_ms: i64,
    /// Whether this controller has heard from the broker (a registration or heartbeat), or
    /// only started its session on becoming active.
    heard: bool,
    metadata_offset: i64,
    /// Set while the broker is in controlled shutdown: the offset of the last record of its
    /// shutdown. It may stop once every active broker has applied it.
    controlled_shutdown_offset: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BrokerState {
    Fenced,
    Unfenced,
    ControlledShutdown,
    ShutdownNow,
}

pub struct Controller {
    config: ControllerConfig,
    image: MetadataImage,
    sessions: HashMap<BrokerId, BrokerSession>,
    rng: Rng,
    /// When the next preferred-leader balancing round is due (if enabled).
    next_balance_ms: i64,
}

impl Controller {
    /// Becomes the active controller over `image` (the committed metadata) at `now_ms`.
    pub fn new(config: ControllerConfig, image: MetadataImage, now_ms: i64) -> Self {
        let sessions = image
            .brokers()
            .map(|b| {
                let session = BrokerSession {
                    last_contact_ms: now_ms,
                    heard: false,
                    metadata_offset: -1,
                    controlled_shutdown_offset: b.in_controlled_shutdown.then_some(image.offset()),
                };
                (b.id, session)
            })
            .collect();
        // Mixing in the offset keeps a new controller from repeating its predecessor's draws.
        let rng = Rng::new(config.seed ^ (image.offset() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let next_balance_ms = now_ms.saturating_add(config.leader_imbalance_check_interval_ms);
        Controller { config, image, sessions, rng, next_balance_ms }
    }

    /// The working image: the committed metadata plus every record returned since.
    pub fn image(&self) -> &MetadataImage {
        &self.image
    }

    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    fn emit(&mut self, out: &mut Vec<MetadataRecord>, record: MetadataRecord) {
        if let Err(e) = self.image.apply(&record) {
            panic!("the controller made a record its own image rejects: {e}: {record:?}");
        }
        out.push(record);
    }

    // ---- brokers ----

    pub fn register_broker(
        &mut self,
        request: BrokerRegistrationRequest,
        now_ms: i64,
    ) -> ControllerResult<BrokerRegistrationReply> {
        let mut records = Vec::new();
        let existing = self.image.broker(request.broker_id).cloned();
        // Another incarnation is refused while the registered one's session lasts (Kafka's
        // DUPLICATE_BROKER_REGISTRATION), unless that session is only the grace a newly active
        // controller gives every broker and nothing was heard from it since: after every node
        // restarted at once, the restarted brokers would otherwise wait out the sessions of their
        // dead predecessors, and those would all expire in one tick, shrinking ISRs to one
        // member that may then be the broker that does not come back.
        let heard = self.sessions.get(&request.broker_id).is_some_and(|s| s.heard);
        if let Some(existing) = &existing {
            if heard
                && self.has_valid_session(request.broker_id, now_ms)
                && existing.incarnation_id != request.incarnation_id
            {
                return ControllerResult {
                    records,
                    response: BrokerRegistrationReply { error_code: DUPLICATE_BROKER_REGISTRATION, broker_epoch: -1 },
                };
            }
        }
        // The same incarnation amends its registration and keeps its epoch and fencing.
        let (broker_epoch, fenced) = match &existing {
            Some(e) if e.incarnation_id == request.incarnation_id => (e.epoch, e.fenced),
            _ => (self.image.offset() + 1, true),
        };
        self.emit(
            &mut records,
            MetadataRecord::RegisterBroker(RegisterBroker {
                broker_id: request.broker_id,
                incarnation_id: request.incarnation_id,
                broker_epoch,
                endpoints: request.listeners,
                rack: request.rack,
                fenced,
                in_controlled_shutdown: false,
            }),
        );
        self.sessions.insert(
            request.broker_id,
            BrokerSession {
                last_contact_ms: now_ms,
                heard: true,
                metadata_offset: -1,
                controlled_shutdown_offset: None,
            },
        );
        ControllerResult { records, response: BrokerRegistrationReply { error_code: NONE, broker_epoch } }
    }

    fn has_valid_session(&self, broker: BrokerId, now_ms: i64) -> bool {
        self.sessions.get(&broker).is_some_and(|s| s.last_contact_ms + self.config.broker_session_timeout_ms >= now_ms)
    }

    fn check_broker_epoch(&self, broker: BrokerId, epoch: i64) -> Result<(), i16> {
        match self.image.broker(broker) {
            Some(b) if b.epoch == epoch => Ok(()),
            _ => Err(STALE_BROKER_EPOCH),
        }
    }

    /// AllocateProducerIds (Kafka's `ProducerIdControlManager`): the next block of
    /// [`PRODUCER_ID_BLOCK_SIZE`] producer ids for a registered broker, as (first id, length).
    pub fn allocate_producer_ids(
        &mut self,
        broker_id: BrokerId,
        broker_epoch: i64,
    ) -> ControllerResult<Result<(i64, i32), i16>> {
        let mut records = Vec::new();
        if let Err(error_code) = self.check_broker_epoch(broker_id, broker_epoch) {
            return ControllerResult { records, response: Err(error_code) };
        }
        let first = self.image.next_producer_id();
        let Some(next_producer_id) = first.checked_add(i64::from(PRODUCER_ID_BLOCK_SIZE)) else {
            return ControllerResult { records, response: Err(UNKNOWN_SERVER_ERROR) };
        };
        let record = tern_metadata::ProducerIds { broker_id, broker_epoch, next_producer_id };
        self.emit(&mut records, MetadataRecord::ProducerIds(record));
        ControllerResult { records, response: Ok((first, PRODUCER_ID_BLOCK_SIZE)) }
    }

    /// A broker heartbeat (Kafka's `processBrokerHeartbeat`): renews the session and moves the
    /// broker between fenced, unfenced, controlled shutdown and shutdown (KIP-841).
    pub fn heartbeat(
        &mut self,
        request: BrokerHeartbeatRequest,
        now_ms: i64,
    ) -> ControllerResult<BrokerHeartbeatReply> {
        let id = request.broker_id;
        if let Err(error_code) = self.check_broker_epoch(id, request.broker_epoch) {
            return ControllerResult {
                records: Vec::new(),
                response: BrokerHeartbeatReply { error_code, ..Default::default() },
            };
        }
        let registration = self.image.broker(id).expect("epoch checked").clone();
        let session = *self.sessions.entry(id).or_insert(BrokerSession {
            last_contact_ms: now_ms,
            heard: true,
            metadata_offset: -1,
            controlled_shutdown_offset: None,
        });
        let current = if session.controlled_shutdown_offset.is_some() {
            BrokerState::ControlledShutdown
        } else if registration.fenced {
            BrokerState::Fenced
        } else {
            BrokerState::Unfenced
        };
        let caught_up = request.current_metadata_offset >= registration.epoch;
        let next = match current {
            BrokerState::Fenced if request.want_shutdown => BrokerState::ShutdownNow,
            BrokerState::Fenced if !request.want_fence && caught_up => BrokerState::Unfenced,
            BrokerState::Fenced => BrokerState::Fenced,
            BrokerState::Unfenced if request.want_fence && request.want_shutdown => BrokerState::ShutdownNow,
            BrokerState::Unfenced if request.want_fence => BrokerState::Fenced,
            BrokerState::Unfenced if request.want_shutdown => {
                if self.image.leads_any(id) {
                    BrokerState::ControlledShutdown
                } else {
                    BrokerState::ShutdownNow
                }
            }
            BrokerState::Unfenced => BrokerState::Unfenced,
            BrokerState::ControlledShutdown => {
                let shutdown_offset = session.controlled_shutdown_offset.expect("in controlled shutdown");
                if !self.image.leads_any(id) && shutdown_offset <= self.lowest_active_offset() {
                    BrokerState::ShutdownNow
                } else {
                    BrokerState::ControlledShutdown
                }
            }
            BrokerState::ShutdownNow => BrokerState::ShutdownNow,
        };
        let mut records = Vec::new();
        let mut controlled_shutdown_offset = session.controlled_shutdown_offset;
        if next != current {
            match next {
                BrokerState::Fenced | BrokerState::ShutdownNow => {
                    // Only a broker the registration shows unfenced needs fencing.
                    if !registration.fenced {
                        self.fence_broker(id, &mut records);
                    }
                    controlled_shutdown_offset = None;
                }
                BrokerState::Unfenced => self.unfence_broker(id, registration.epoch, &mut records),
                BrokerState::ControlledShutdown => {
                    self.enter_controlled_shutdown(id, registration.epoch, &mut records);
                    controlled_shutdown_offset = Some(self.image.offset());
                }
            }
        }
        self.sessions.insert(
            id,
            BrokerSession {
                last_contact_ms: now_ms,
                heard: true,
                metadata_offset: request.current_metadata_offset,
                controlled_shutdown_offset,
            },
        );
        let response = BrokerHeartbeatReply {
            error_code: NONE,
            is_caught_up: caught_up,
            is_fenced: matches!(next, BrokerState::Fenced | BrokerState::ShutdownNow),
            in_controlled_shutdown: next == BrokerState::ControlledShutdown,
            should_shutdown: next == BrokerState::ShutdownNow,
        };
        ControllerResult { records, response }
    }

    /// The lowest metadata offset an active broker has reported (`i64::MAX` if none).
    fn lowest_active_offset(&self) -> i64 {
        self.sessions
            .iter()
            .filter(|(id, s)| s.controlled_shutdown_offset.is_none() && self.image.is_active(**id))
            .map(|(_, s)| s.metadata_offset)
            .min()
            .unwrap_or(i64::MAX)
    }

    /// Fences every unfenced broker whose session expired (`broker.session.timeout.ms`
    /// without a heartbeat), electing new leaders for what it led.
    pub fn tick(&mut self, now_ms: i64) -> Vec<MetadataRecord> {
        let mut stale: Vec<BrokerId> =
            self.image.unfenced_brokers().map(|b| b.id).filter(|id| !self.has_valid_session(*id, now_ms)).collect();
        stale.sort_unstable();
        let mut records = Vec::new();
        for id in stale {
            self.fence_broker(id, &mut records);
            if let Some(s) = self.sessions.get_mut(&id) {
                s.controlled_shutdown_offset = None;
            }
        }
        if self.config.auto_leader_rebalance_enable && now_ms >= self.next_balance_ms {
            self.next_balance_ms = now_ms.saturating_add(self.config.leader_imbalance_check_interval_ms);
            self.balance_leaders(&mut records);
        }
        records
    }

    /// Kafka's `maybeBalancePartitionLeaders` (`auto.leader.rebalance.enable`): a preferred
    /// election for every partition not led by its first replica, which succeeds where that
    /// replica is in the ISR, unfenced and not shutting down; at most
    /// [`MAX_ELECTIONS_PER_IMBALANCE`] a round.
    fn balance_leaders(&mut self, records: &mut Vec<MetadataRecord>) {
        let imbalanced: Vec<(String, i32)> = self
            .image
            .topics()
            .flat_map(|t| {
                t.partitions.iter().filter(|(_, p)| !p.has_preferred_leader()).map(|(&i, _)| (t.name.clone(), i))
            })
            .collect();
        let mut elected = 0;
        for (topic, partition) in imbalanced {
            if elected == MAX_ELECTIONS_PER_IMBALANCE {
                break;
            }
            if self.elect_leader(&topic, partition, ElectionType::Preferred, records) == NONE {
                elected += 1;
            }
        }
    }

    /// When [`Controller::tick`] next has something to do: the earliest session expiry of an
    /// unfenced broker, or the next leader balancing round.
    pub fn next_deadline(&self) -> Option<i64> {
        let balance = self.config.auto_leader_rebalance_enable.then_some(self.next_balance_ms);
        self.image
            .unfenced_brokers()
            .filter_map(|b| self.sessions.get(&b.id))
            .map(|s| s.last_contact_ms + self.config.broker_session_timeout_ms + 1)
            .chain(balance)
            .min()
    }

    /// Removes a broker: it leaves every ISR, then its registration goes.
    pub fn unregister_broker(&mut self, broker_id: BrokerId) -> ControllerResult<i16> {
        let Some(registration) = self.image.broker(broker_id) else {
            return ControllerResult { records: Vec::new(), response: crate::errors::UNKNOWN_BROKER_ID };
        };
        let epoch = registration.epoch;
        let mut records = Vec::new();
        let in_isr = self.partitions_with_isr_member(broker_id);
        self.update_leaders_and_isrs(Some(broker_id), None, in_isr, &mut records);
        self.emit(&mut records, MetadataRecord::UnregisterBroker(UnregisterBroker { broker_id, broker_epoch: epoch }));
        self.sessions.remove(&broker_id);
        ControllerResult { records, response: NONE }
    }

    /// Kafka's `handleBrokerFenced`: the broker leaves every ISR it is in (but is kept as the
    /// last member of one), new leaders are elected where it led, then it is fenced.
    fn fence_broker(&mut self, id: BrokerId, records: &mut Vec<MetadataRecord>) {
        let epoch = self.image.broker(id).expect("registered").epoch;
        let in_isr = self.partitions_with_isr_member(id);
        self.update_leaders_and_isrs(Some(id), None, in_isr, records);
        self.emit(
            records,
            MetadataRecord::BrokerRegistrationChange(BrokerRegistrationChange {
                broker_id: id,
                broker_epoch: epoch,
                fenced: Some(true),
                in_controlled_shutdown: false,
            }),
        );
    }

    /// Kafka's `handleBrokerUnfenced`: the broker is unfenced, then leads the leaderless
    /// partitions whose ISR it is in.
    fn unfence_broker(&mut self, id: BrokerId, epoch: i64, records: &mut Vec<MetadataRecord>) {
        self.emit(
            records,
            MetadataRecord::BrokerRegistrationChange(BrokerRegistrationChange {
                broker_id: id,
                broker_epoch: epoch,
                fenced: Some(false),
                in_controlled_shutdown: false,
            }),
        );
        let leaderless: Vec<_> = self.image.leaderless_partitions().collect();
        self.update_leaders_and_isrs(None, Some(id), leaderless, records);
    }

    /// Kafka's `handleBrokerInControlledShutdown`: marked as shutting down, then out of every
    /// ISR and leadership it can be moved from.
    fn enter_controlled_shutdown(&mut self, id: BrokerId, epoch: i64, records: &mut Vec<MetadataRecord>) {
        self.emit(
            records,
            MetadataRecord::BrokerRegistrationChange(BrokerRegistrationChange {
                broker_id: id,
                broker_epoch: epoch,
                fenced: None,
                in_controlled_shutdown: true,
            }),
        );
        let in_isr = self.partitions_with_isr_member(id);
        self.update_leaders_and_isrs(Some(id), None, in_isr, records);
    }

    fn partitions_with_isr_member(&self, broker: BrokerId) -> Vec<TopicIdPartition> {
        let mut tps: Vec<_> = self
            .image
            .hosted_partitions(broker)
            .filter(|tp| self.image.partition(*tp).is_some_and(|p| p.isr.contains(&broker)))
            .collect();
        tps.sort_unstable();
        tps
    }

    /// Kafka's `generateLeaderAndIsrUpdates`: for each partition, removes `remove` from the ISR
    /// and from the candidates, counts `add` as active, and elects a leader where needed.
    fn update_leaders_and_isrs(
        &mut self,
        remove: Option<BrokerId>,
        add: Option<BrokerId>,
        partitions: Vec<TopicIdPartition>,
        records: &mut Vec<MetadataRecord>,
    ) {
        let mut unclean_by_topic: HashMap<Uuid, bool> = HashMap::new();
        for tp in partitions {
            let Some(partition) = self.image.partition(tp) else { continue };
            let unclean = *unclean_by_topic.entry(tp.topic_id).or_insert_with(|| self.unclean_enabled(tp.topic_id));
            let target_isr: Vec<BrokerId> = partition.isr.iter().copied().filter(|r| Some(*r) != remove).collect();
            let image = &self.image;
            let acceptable = |r: BrokerId| Some(r) != remove && (Some(r) == add || image.is_active(r));
            let election = if unclean { Election::Unclean } else { Election::Online };
            if let Some(change) = partition_change::build(tp, partition, target_isr, election, acceptable) {
                self.emit(records, MetadataRecord::PartitionChange(change));
            }
        }
    }

    fn unclean_enabled(&self, topic_id: Uuid) -> bool {
        let topic_value = self
            .image
            .topic(topic_id)
            .and_then(|t| self.image.config(ConfigResourceType::TOPIC, &t.name, UNCLEAN_LEADER_ELECTION_ENABLE));
        let value =
            topic_value.or_else(|| self.image.config(ConfigResourceType::BROKER, "", UNCLEAN_LEADER_ELECTION_ENABLE));
        match value {
            Some(v) => v.eq_ignore_ascii_case("true"),
            None => self.config.unclean_leader_election_enable,
        }
    }

    // ---- topics ----

    fn usable_brokers(&self) -> Vec<UsableBroker> {
        self.image
            .brokers()
            .filter(|b| !b.in_controlled_shutdown)
            .map(|b| UsableBroker { id: b.id, rack: b.rack.clone(), fenced: b.fenced })
            .collect()
    }

    /// The partition record for new replicas: the ISR is the active replicas, led by the first.
    fn new_partition(&self, tp: TopicIdPartition, replicas: Vec<BrokerId>) -> Option<PartitionRecord> {
        let isr: Vec<BrokerId> = replicas.iter().copied().filter(|r| self.image.is_active(*r)).collect();
        let leader = *isr.first()?;
        Some(PartitionRecord {
            topic_id: tp.topic_id,
            partition: tp.partition,
            replicas,
            isr,
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
        })
    }

    /// CreateTopics. With `validate_only` nothing is recorded, and the answer is the same.
    pub fn create_topics(
        &mut self,
        topics: Vec<CreatableTopic>,
        validate_only: bool,
    ) -> ControllerResult<Vec<CreatableTopicResult>> {
        let mut records = Vec::new();
        let mut results = Vec::with_capacity(topics.len());
        let mut seen: HashMap<String, usize> = HashMap::new();
        for t in &topics {
            *seen.entry(t.name.clone()).or_default() += 1;
        }
        for topic in topics {
            let result = if seen[&topic.name] > 1 {
                Err((INVALID_REQUEST, "Duplicate topic name.".to_string()))
            } else {
                self.create_topic(&topic, validate_only, &mut records)
            };
            results.push(match result {
                Ok((topic_id, num_partitions, replication_factor)) => CreatableTopicResult {
                    name: topic.name,
                    topic_id,
                    error_code: NONE,
                    error_message: None,
                    num_partitions,
                    replication_factor,
                },
                Err((error_code, message)) => CreatableTopicResult {
                    name: topic.name,
                    topic_id: Uuid::nil(),
                    error_code,
                    error_message: Some(message),
                    num_partitions: -1,
                    replication_factor: -1,
                },
            });
        }
        ControllerResult { records, response: results }
    }

    fn create_topic(
        &mut self,
        topic: &CreatableTopic,
        validate_only: bool,
        records: &mut Vec<MetadataRecord>,
    ) -> Result<(Uuid, i32, i16), (i16, String)> {
        validate_topic_name(&topic.name).map_err(|m| (INVALID_TOPIC_EXCEPTION, m))?;
        if self.image.topic_by_name(&topic.name).is_some() {
            return Err((TOPIC_ALREADY_EXISTS, format!("Topic '{}' already exists.", topic.name)));
        }
        let assignments = if !topic.assignments.is_empty() {
            if topic.num_partitions != -1 || topic.replication_factor != -1 {
                return Err((
                    INVALID_REQUEST,
                    "A manual partition assignment was given, so numPartitions and replicationFactor must be -1."
                        .to_string(),
                ));
            }
            for (p, replicas) in topic.assignments.iter().enumerate() {
                self.validate_manual_assignment(p as i32, replicas)?;
            }
            topic.assignments.clone()
        } else {
            let num_partitions = match topic.num_partitions {
                -1 => self.config.num_partitions,
                n if n <= 0 => {
                    return Err((
                        INVALID_PARTITIONS,
                        "Number of partitions was set to an invalid non-positive value.".into(),
                    ))
                }
                n => n,
            };
            let replication_factor = match topic.replication_factor {
                -1 => self.config.default_replication_factor,
                n if n <= 0 => {
                    return Err((INVALID_REPLICATION_FACTOR, "Replication factor must be larger than 0.".into()))
                }
                n => n,
            };
            self.place(num_partitions, replication_factor as i32).map_err(|m| (INVALID_REPLICATION_FACTOR, m))?
        };
        let topic_id = self.new_topic_id();
        let mut partitions = Vec::with_capacity(assignments.len());
        for (p, replicas) in assignments.iter().enumerate() {
            let tp = TopicIdPartition::new(topic_id, p as i32);
            let record = self.new_partition(tp, replicas.clone()).ok_or_else(|| {
                (
                    INVALID_REPLICATION_FACTOR,
                    format!("Unable to replicate partition {p}: all its replicas are fenced or shutting down."),
                )
            })?;
            partitions.push(record);
        }
        let num_partitions = assignments.len() as i32;
        let replication_factor = assignments.first().map_or(0, |r| r.len() as i16);
        if validate_only {
            return Ok((topic_id, num_partitions, replication_factor));
        }
        self.emit(records, MetadataRecord::Topic(TopicRecord { name: topic.name.clone(), topic_id }));
        for (name, value) in &topic.configs {
            self.emit(
                records,
                MetadataRecord::Config(ConfigRecord {
                    resource_type: ConfigResourceType::TOPIC,
                    resource_name: topic.name.clone(),
                    name: name.clone(),
                    value: value.clone(),
                }),
            );
        }
        for record in partitions {
            self.emit(records, MetadataRecord::Partition(record));
        }
        Ok((topic_id, num_partitions, replication_factor))
    }

    fn validate_manual_assignment(&self, partition: i32, replicas: &[BrokerId]) -> Result<(), (i16, String)> {
        if replicas.is_empty() {
            return Err((
                INVALID_REPLICA_ASSIGNMENT,
                format!("The manual partition assignment of partition {partition} is empty."),
            ));
        }
        for (i, r) in replicas.iter().enumerate() {
            if replicas[..i].contains(r) {
                return Err((
                    INVALID_REPLICA_ASSIGNMENT,
                    format!("The manual partition assignment of partition {partition} contains duplicate replica {r}."),
                ));
            }
            if self.image.broker(*r).is_none() {
                return Err((
                    INVALID_REPLICA_ASSIGNMENT,
                    format!("The manual partition assignment of partition {partition} includes broker {r}, which is not registered."),
                ));
            }
        }
        if !replicas.iter().any(|r| self.image.is_active(*r)) {
            return Err((
                INVALID_REPLICA_ASSIGNMENT,
                format!("All brokers in the manual partition assignment of partition {partition} are fenced or in controlled shutdown."),
            ));
        }
        Ok(())
    }

    fn place(&mut self, num_partitions: i32, replication_factor: i32) -> Result<Vec<Vec<BrokerId>>, String> {
        let usable = self.usable_brokers();
        let mut placer = Placer::new(&mut self.rng, usable);
        placer.check(replication_factor).map_err(|e| e.to_string())?;
        (0..num_partitions).map(|_| placer.place(replication_factor).map_err(|e| e.to_string())).collect()
    }

    fn new_topic_id(&mut self) -> Uuid {
        loop {
            let id = self.rng.topic_id();
            if self.image.topic(id).is_none() {
                return id;
            }
        }
    }

    /// CreatePartitions: grows topics to `count` partitions.
    pub fn create_partitions(
        &mut self,
        topics: Vec<CreatePartitionsTopic>,
        validate_only: bool,
    ) -> ControllerResult<Vec<TopicError>> {
        let mut records = Vec::new();
        let mut results = Vec::with_capacity(topics.len());
        for topic in topics {
            let result = self.create_partitions_of(&topic, validate_only, &mut records);
            let (error_code, error_message) = match result {
                Ok(()) => (NONE, None),
                Err((code, message)) => (code, Some(message)),
            };
            results.push(TopicError { name: topic.name, error_code, error_message });
        }
        ControllerResult { records, response: results }
    }

    fn create_partitions_of(
        &mut self,
        request: &CreatePartitionsTopic,
        validate_only: bool,
        records: &mut Vec<MetadataRecord>,
    ) -> Result<(), (i16, String)> {
        let Some(topic) = self.image.topic_by_name(&request.name) else {
            return Err((UNKNOWN_TOPIC_OR_PARTITION, format!("Unable to locate topic {}.", request.name)));
        };
        let topic_id = topic.id;
        let current = topic.partitions.len() as i32;
        let replication_factor = topic.partitions.values().next().map_or(1, |p| p.replicas.len() as i32);
        if request.count < current {
            return Err((
                INVALID_PARTITIONS,
                format!(
                    "The topic {} currently has {current} partition(s); {} would not be an increase.",
                    request.name, request.count
                ),
            ));
        }
        if request.count == current {
            return Err((INVALID_PARTITIONS, format!("Topic already has {current} partition(s).")));
        }
        let additional = request.count - current;
        let assignments = match &request.assignments {
            Some(assignments) => {
                if assignments.len() as i32 != additional {
                    return Err((
                        INVALID_REPLICA_ASSIGNMENT,
                        format!("Attempted to add {additional} additional partition(s), but only {} assignment(s) were specified.", assignments.len()),
                    ));
                }
                for (i, replicas) in assignments.iter().enumerate() {
                    self.validate_manual_assignment(current + i as i32, replicas)?;
                }
                assignments.clone()
            }
            None => self.place(additional, replication_factor).map_err(|m| (INVALID_REPLICATION_FACTOR, m))?,
        };
        let mut new = Vec::with_capacity(assignments.len());
        for (i, replicas) in assignments.into_iter().enumerate() {
            let tp = TopicIdPartition::new(topic_id, current + i as i32);
            let record = self.new_partition(tp, replicas).ok_or_else(|| {
                (INVALID_REPLICATION_FACTOR, "All replicas of a new partition are fenced or shutting down.".to_string())
            })?;
            new.push(record);
        }
        if !validate_only {
            for record in new {
                self.emit(records, MetadataRecord::Partition(record));
            }
        }
        Ok(())
    }

    /// DeleteTopics, by name or id.
    pub fn delete_topics(&mut self, topics: Vec<TopicRef>) -> ControllerResult<Vec<DeletableTopicResult>> {
        let mut records = Vec::new();
        let mut results = Vec::with_capacity(topics.len());
        for topic in topics {
            let found = match &topic {
                TopicRef::Name(name) => self.image.topic_by_name(name).map(|t| t.id).ok_or(UNKNOWN_TOPIC_OR_PARTITION),
                TopicRef::Id(id) => self.image.topic(*id).map(|t| t.id).ok_or(UNKNOWN_TOPIC_ID),
            };
            match found {
                Ok(topic_id) => {
                    self.emit(&mut records, MetadataRecord::RemoveTopic(RemoveTopic { topic_id }));
                    results.push(DeletableTopicResult { topic, topic_id, error_code: NONE });
                }
                Err(error_code) => results.push(DeletableTopicResult { topic, topic_id: Uuid::nil(), error_code }),
            }
        }
        ControllerResult { records, response: results }
    }

    /// Sets (`Some`) or deletes (`None`) configs of one resource (IncrementalAlterConfigs
    /// SET/DELETE). A topic must exist.
    pub fn alter_configs(
        &mut self,
        resource_type: ConfigResourceType,
        resource_name: &str,
        entries: Vec<(String, Option<String>)>,
    ) -> ControllerResult<i16> {
        let mut records = Vec::new();
        if resource_type == ConfigResourceType::TOPIC && self.image.topic_by_name(resource_name).is_none() {
            return ControllerResult { records, response: UNKNOWN_TOPIC_OR_PARTITION };
        }
        if resource_type != ConfigResourceType::TOPIC && resource_type != ConfigResourceType::BROKER {
            return ControllerResult { records, response: INVALID_REQUEST };
        }
        for (name, value) in entries {
            self.emit(
                &mut records,
                MetadataRecord::Config(ConfigRecord {
                    resource_type,
                    resource_name: resource_name.to_string(),
                    name,
                    value,
                }),
            );
        }
        ControllerResult { records, response: NONE }
    }

    // ---- partitions ----

    /// AlterPartition from a partition leader: an ISR change, checked as Kafka's
    /// `validateAlterPartitionData` does.
    pub fn alter_partition(&mut self, request: AlterPartitionRequest) -> ControllerResult<AlterPartitionResponse> {
        let mut records = Vec::new();
        if let Err(error_code) = self.check_broker_epoch(request.broker_id, request.broker_epoch) {
            return ControllerResult { records, response: AlterPartitionResponse { error_code, topics: Vec::new() } };
        }
        let mut response = AlterPartitionResponse::default();
        for topic in request.topics {
            let topic_id = if request.version > 1 {
                Some(topic.topic_id).filter(|id| self.image.topic(*id).is_some())
            } else {
                self.image.topic_by_name(&topic.topic_name).map(|t| t.id)
            };
            let mut result = AlterPartitionTopicResult {
                topic_id: topic.topic_id,
                topic_name: topic.topic_name,
                partitions: Vec::new(),
            };
            let Some(topic_id) = topic_id else {
                let error_code = if request.version > 1 { UNKNOWN_TOPIC_ID } else { UNKNOWN_TOPIC_OR_PARTITION };
                result.partitions = topic.partitions.iter().map(|p| error_result(p.partition, error_code)).collect();
                response.topics.push(result);
                continue;
            };
            for data in topic.partitions {
                let tp = TopicIdPartition::new(topic_id, data.partition);
                let answer = match self.validate_alter_partition(request.broker_id, request.version, tp, &data) {
                    Err(error_code) => error_result(data.partition, error_code),
                    Ok(()) => self.apply_alter_partition(request.broker_id, request.version, tp, &data, &mut records),
                };
                result.partitions.push(answer);
            }
            response.topics.push(result);
        }
        ControllerResult { records, response }
    }

    fn validate_alter_partition(
        &self,
        broker_id: BrokerId,
        version: i16,
        tp: TopicIdPartition,
        data: &AlterPartitionData,
    ) -> Result<(), i16> {
        let partition = self.image.partition(tp).ok_or(UNKNOWN_TOPIC_OR_PARTITION)?;
        // Epochs ahead of ours mean this controller is behind: let the leader find another.
        if data.leader_epoch > partition.leader_epoch || data.partition_epoch > partition.partition_epoch {
            return Err(NOT_CONTROLLER);
        }
        if data.leader_epoch < partition.leader_epoch {
            return Err(FENCED_LEADER_EPOCH);
        }
        if broker_id != partition.leader {
            return Err(INVALID_REQUEST);
        }
        if data.partition_epoch < partition.partition_epoch {
            return Err(INVALID_UPDATE_VERSION);
        }
        let new_isr: Vec<BrokerId> = data.new_isr.iter().map(|m| m.broker_id).collect();
        let valid_isr =
            new_isr.iter().enumerate().all(|(i, r)| partition.replicas.contains(r) && !new_isr[..i].contains(r));
        if !valid_isr || !new_isr.contains(&partition.leader) {
            return Err(INVALID_REQUEST);
        }
        let ineligible = data.new_isr.iter().any(|m| match self.image.broker(m.broker_id) {
            None => true,
            Some(b) => b.in_controlled_shutdown || b.fenced || (m.broker_epoch != -1 && m.broker_epoch != b.epoch),
        });
        if ineligible {
            return Err(if version > 1 { INELIGIBLE_REPLICA } else { OPERATION_NOT_ATTEMPTED });
        }
        Ok(())
    }

    fn apply_alter_partition(
        &mut self,
        broker_id: BrokerId,
        version: i16,
        tp: TopicIdPartition,
        data: &AlterPartitionData,
        records: &mut Vec<MetadataRecord>,
    ) -> AlterPartitionResult {
        let partition = self.image.partition(tp).expect("validated");
        let target_isr = data.new_isr.iter().map(|m| m.broker_id).collect();
        let election = if self.unclean_enabled(tp.topic_id) { Election::Unclean } else { Election::Online };
        let image = &self.image;
        let change = partition_change::build(tp, partition, target_isr, election, |r| image.is_active(r));
        if let Some(change) = change {
            let leader_moved = change.leader.is_some_and(|l| l != broker_id);
            self.emit(records, MetadataRecord::PartitionChange(change));
            if leader_moved {
                // The requester lost leadership while its change went through (it is shutting
                // down): it must learn the new state before trying again.
                let error_code = if version > 1 { NEW_LEADER_ELECTED } else { FENCED_LEADER_EPOCH };
                return error_result(data.partition, error_code);
            }
        }
        let p = self.image.partition(tp).expect("validated");
        AlterPartitionResult {
            partition: data.partition,
            error_code: NONE,
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            isr: p.isr.clone(),
            partition_epoch: p.partition_epoch,
        }
    }

    /// ElectLeaders: `partitions` of `None` means every partition, and then partitions that
    /// need no election are left out of the answer.
    pub fn elect_leaders(
        &mut self,
        election_type: ElectionType,
        partitions: Option<Vec<(String, Vec<i32>)>>,
    ) -> ControllerResult<Vec<ElectLeadersTopicResult>> {
        let mut records = Vec::new();
        let all = partitions.is_none();
        let requested = partitions.unwrap_or_else(|| {
            self.image.topics().map(|t| (t.name.clone(), t.partitions.keys().copied().collect())).collect()
        });
        let mut results = Vec::with_capacity(requested.len());
        for (topic, partitions) in requested {
            let mut result = ElectLeadersTopicResult { topic: topic.clone(), partitions: Vec::new() };
            for partition in partitions {
                let error_code = self.elect_leader(&topic, partition, election_type, &mut records);
                if !(all && error_code == ELECTION_NOT_NEEDED) {
                    result.partitions.push((partition, error_code));
                }
            }
            results.push(result);
        }
        ControllerResult { records, response: results }
    }

    fn elect_leader(
        &mut self,
        topic: &str,
        partition_id: i32,
        election_type: ElectionType,
        records: &mut Vec<MetadataRecord>,
    ) -> i16 {
        let Some(topic_id) = self.image.topic_by_name(topic).map(|t| t.id) else {
            return UNKNOWN_TOPIC_OR_PARTITION;
        };
        let tp = TopicIdPartition::new(topic_id, partition_id);
        let Some(partition) = self.image.partition(tp) else {
            return UNKNOWN_TOPIC_OR_PARTITION;
        };
        let (election, not_needed) = match election_type {
            ElectionType::Preferred => (Election::Preferred, partition.has_preferred_leader()),
            ElectionType::Unclean => (Election::Unclean, partition.has_leader()),
        };
        if not_needed {
            return ELECTION_NOT_NEEDED;
        }
        let image = &self.image;
        let change = partition_change::build(tp, partition, partition.isr.clone(), election, |r| image.is_active(r));
        match change {
            Some(change) => {
                self.emit(records, MetadataRecord::PartitionChange(change));
                NONE
            }
            None if election_type == ElectionType::Preferred => PREFERRED_LEADER_NOT_AVAILABLE,
            None => ELIGIBLE_LEADERS_NOT_AVAILABLE,
        }
    }
}

fn error_result(partition: i32, error_code: i16) -> AlterPartitionResult {
    AlterPartitionResult {
        partition,
        error_code,
        leader: NO_LEADER,
        leader_epoch: -1,
        isr: Vec::new(),
        partition_epoch: -1,
    }
}

/// Kafka's `Topic.validate`.
fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("Topic name is illegal, it can't be empty".into());
    }
    if name == "." || name == ".." {
        return Err("Topic name cannot be \".\" or \"..\"".into());
    }
    if name.len() > 249 {
        return Err(format!("Topic name is illegal, it can't be longer than 249 characters, topic name: {name}"));
    }
    if !name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || c == b'-') {
        return Err(format!(
            "Topic name {name} is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'"
        ));
    }
    Ok(())
}
