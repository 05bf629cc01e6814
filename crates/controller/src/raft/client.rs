//! [`ControllerClient`]: how a broker sends requests to the active controller over the
//! quorum port (see [`super::rpc`]), wherever the active controller is.
//!
//! The client keeps one lazily (re)connected connection per voter, shared by every task (one
//! request at a time on each), and remembers the last voter that answered as the active
//! controller. A request goes there first (to the lowest voter id before any answered); on
//! NOT_CONTROLLER it goes to the leader the voter names, or else to the next voter, as it does
//! after a connection error, with a short backoff, until the client's request timeout has
//! passed since the request began. A request that timed out or lost its connection may still
//! have been committed: as with Kafka, a retried CreateTopics may answer TOPIC_ALREADY_EXISTS.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{
    alter_partition_request, broker_registration_request, create_partitions_request, create_topics_request,
    delete_topics_request, elect_leaders_request, incremental_alter_configs_request, AllocateProducerIdsRequest,
    AllocateProducerIdsResponse, AlterPartitionRequest, AlterPartitionResponse, ApiKey, BrokerHeartbeatRequest,
    BrokerHeartbeatResponse, BrokerRegistrationRequest, BrokerRegistrationResponse, CreatePartitionsRequest,
    CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    ElectLeadersRequest, ElectLeadersResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable};
use tern_metadata::{ConfigResourceType, Uuid};
use tokio::time::Instant;

use super::codec;
use super::rpc::{self, leader_hint, str_bytes, topic_name};
use super::tcp::Peer;
use super::{NodeId, MAX_FRAME_BYTES};
use crate::api;
use crate::errors::{NONE, NOT_CONTROLLER};

/// The pause before the next attempt after NOT_CONTROLLER or a connection error.
pub const RETRY_BACKOFF: Duration = Duration::from_millis(50);

/// How long one attempt at a voter may take for the requests a broker's liveness hangs on
/// (registration, heartbeats, AlterPartition, producer ids), as Kafka's
/// `controller.quorum.request.timeout.ms` (2000): a voter that accepted the request but
/// does not answer (frozen, or a deposed leader cut off from the quorum) must not hold them
/// past a broker session, or healthy brokers get fenced while the client waits.
pub const LIVENESS_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// No single attempt at an admin request (CreateTopics, ...) waits longer than half the
/// request timeout, nor less than this, nor longer than the time left.
const MIN_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControllerClientError {
    /// No voter answered as the active controller within the request timeout.
    #[error("could not reach the active controller within {timeout:?}: {last_error}")]
    Unreachable { timeout: Duration, last_error: String },
    /// The request could not be encoded (a value out of the protocol's range), or is larger
    /// than a frame may be.
    #[error("cannot encode the {api:?} request: {reason}")]
    Encode { api: ApiKey, reason: String },
}

/// A client of the active controller; `Send + Sync`, for every task of a broker.
pub struct ControllerClient {
    voters: BTreeMap<NodeId, Arc<Peer>>,
    /// The voter that last answered as the active controller.
    leader: Mutex<Option<NodeId>>,
    request_timeout: Duration,
}

/// What makes a response a redirection.
trait ControllerResponse: Decodable {
    fn is_not_controller(&self) -> bool;
    fn tagged_fields(&self) -> &BTreeMap<i32, Bytes>;
}

macro_rules! top_level_error {
    ($($t:ty),*) => {$(
        impl ControllerResponse for $t {
            fn is_not_controller(&self) -> bool {
                self.error_code == NOT_CONTROLLER
            }
            fn tagged_fields(&self) -> &BTreeMap<i32, Bytes> {
                &self.unknown_tagged_fields
            }
        }
    )*};
}
top_level_error!(
    BrokerRegistrationResponse,
    BrokerHeartbeatResponse,
    AlterPartitionResponse,
    ElectLeadersResponse,
    AllocateProducerIdsResponse
);

macro_rules! per_item_error {
    ($($t:ty => $items:ident),*) => {$(
        impl ControllerResponse for $t {
            fn is_not_controller(&self) -> bool {
                self.$items.iter().any(|item| item.error_code == NOT_CONTROLLER)
            }
            fn tagged_fields(&self) -> &BTreeMap<i32, Bytes> {
                &self.unknown_tagged_fields
            }
        }
    )*};
}
per_item_error!(
    CreateTopicsResponse => topics,
    CreatePartitionsResponse => results,
    DeleteTopicsResponse => responses,
    IncrementalAlterConfigsResponse => responses
);

impl ControllerClient {
    /// A client of the quorum whose voters listen at `voters` (`controller.quorum.voters`);
    /// each request gives up after `request_timeout`.
    pub fn new(voters: BTreeMap<NodeId, SocketAddr>, request_timeout: Duration) -> Self {
        ControllerClient {
            voters: voters.into_iter().map(|(id, addr)| (id, Arc::new(Peer::new(addr)))).collect(),
            leader: Mutex::new(None),
            request_timeout,
        }
    }

    /// The voter that last answered as the active controller.
    pub fn last_known_leader(&self) -> Option<NodeId> {
        *self.leader.lock().unwrap()
    }

    /// The voter after `id`, in id order, wrapping around.
    fn next_voter(&self, id: NodeId) -> Option<NodeId> {
        let mut after = self.voters.range(id + 1..).chain(self.voters.range(..=id));
        after.next().map(|(id, _)| *id)
    }

    /// Sends `request` to the active controller and returns its response.
    async fn call<Req: Encodable, Resp: ControllerResponse>(
        &self,
        api: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<Resp, ControllerClientError> {
        let mut body = Vec::new();
        request
            .encode(&mut body, version)
            .map_err(|e| ControllerClientError::Encode { api, reason: format!("{e:#}") })?;
        // The frame's kind, correlation id, api key and version come before the body.
        if body.len() + 9 > MAX_FRAME_BYTES {
            let reason = format!("{} bytes are over the frame limit of {MAX_FRAME_BYTES}", body.len());
            return Err(ControllerClientError::Encode { api, reason });
        }
        let deadline = Instant::now() + self.request_timeout;
        let first = self.last_known_leader().filter(|id| self.voters.contains_key(id));
        let mut target = first.or_else(|| self.voters.keys().next().copied());
        let mut last_error = "there are no voters".to_string();
        while let Some(id) = target {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let attempt_timeout = match api {
                ApiKey::BrokerRegistration
                | ApiKey::BrokerHeartbeat
                | ApiKey::AlterPartition
                | ApiKey::AllocateProducerIds => LIVENESS_ATTEMPT_TIMEOUT,
                _ => (self.request_timeout / 2).max(MIN_ATTEMPT_TIMEOUT),
            };
            let attempt_timeout = (deadline - now).min(attempt_timeout);
            let peer = &self.voters[&id];
            let reply = peer
                .round_trip(
                    |correlation_id| codec::encode_controller_request(correlation_id, api as i16, version, &body),
                    attempt_timeout,
                )
                .await;
            let mut hint = None;
            match reply {
                Err(e) => last_error = format!("voter {id}: {e}"),
                Ok(reply) => match decode_reply::<Resp>(&reply, version) {
                    Err(reason) => {
                        // The stream is in step (the reply was whole), but this voter speaks
                        // something else: say so and try another.
                        tracing::warn!(voter = id, ?api, version, %reason, "bad reply from a controller");
                        last_error = format!("voter {id}: {reason}");
                    }
                    Ok(response) if response.is_not_controller() => {
                        let named = leader_hint(response.tagged_fields());
                        last_error =
                            format!("voter {id} is not the active controller (it names {named:?} as the leader)");
                        hint = named.filter(|h| *h != id && self.voters.contains_key(h));
                    }
                    Ok(response) => {
                        *self.leader.lock().unwrap() = Some(id);
                        return Ok(response);
                    }
                },
            }
            tracing::debug!(?api, %last_error, "controller request: trying another voter");
            {
                let mut leader = self.leader.lock().unwrap();
                if *leader == Some(id) {
                    *leader = hint;
                }
            }
            target = hint.or_else(|| self.next_voter(id));
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(RETRY_BACKOFF.min(left)).await;
        }
        Err(ControllerClientError::Unreachable { timeout: self.request_timeout, last_error })
    }

    /// AllocateProducerIds (v0): the next block of producer ids for this broker, as
    /// `Ok((first id, length))`, or the controller's error code (STALE_BROKER_EPOCH).
    pub async fn allocate_producer_ids(
        &self,
        broker_id: i32,
        broker_epoch: i64,
    ) -> Result<Result<(i64, i32), i16>, ControllerClientError> {
        let wire =
            AllocateProducerIdsRequest::default().with_broker_id(broker_id.into()).with_broker_epoch(broker_epoch);
        let response: AllocateProducerIdsResponse =
            self.call(ApiKey::AllocateProducerIds, rpc::ALLOCATE_PRODUCER_IDS_VERSION, &wire).await?;
        Ok(match response.error_code {
            NONE => Ok((response.producer_id_start.0, response.producer_id_len)),
            code => Err(code),
        })
    }

    /// BrokerRegistration (v4). The cluster id is left empty: the controller does not check it.
    pub async fn register_broker(
        &self,
        request: api::BrokerRegistrationRequest,
    ) -> Result<api::BrokerRegistrationReply, ControllerClientError> {
        let listeners = request.listeners.iter().map(|l| {
            broker_registration_request::Listener::default()
                .with_name(str_bytes(&l.name))
                .with_host(str_bytes(&l.host))
                .with_port(l.port)
                .with_security_protocol(l.security_protocol)
        });
        let wire = BrokerRegistrationRequest::default()
            .with_broker_id(request.broker_id.into())
            .with_incarnation_id(request.incarnation_id)
            .with_listeners(listeners.collect())
            .with_rack(request.rack.as_deref().map(str_bytes));
        let response: BrokerRegistrationResponse =
            self.call(ApiKey::BrokerRegistration, rpc::BROKER_REGISTRATION_VERSION, &wire).await?;
        Ok(api::BrokerRegistrationReply { error_code: response.error_code, broker_epoch: response.broker_epoch })
    }

    /// BrokerHeartbeat (v1). Kafka's response does not say whether the broker is in
    /// controlled shutdown: `in_controlled_shutdown` is derived as "asked to shut down, not
    /// yet told to".
    pub async fn heartbeat(
        &self,
        request: api::BrokerHeartbeatRequest,
    ) -> Result<api::BrokerHeartbeatReply, ControllerClientError> {
        let wire = BrokerHeartbeatRequest::default()
            .with_broker_id(request.broker_id.into())
            .with_broker_epoch(request.broker_epoch)
            .with_current_metadata_offset(request.current_metadata_offset)
            .with_want_fence(request.want_fence)
            .with_want_shut_down(request.want_shutdown);
        let response: BrokerHeartbeatResponse =
            self.call(ApiKey::BrokerHeartbeat, rpc::BROKER_HEARTBEAT_VERSION, &wire).await?;
        Ok(api::BrokerHeartbeatReply {
            error_code: response.error_code,
            is_caught_up: response.is_caught_up,
            is_fenced: response.is_fenced,
            in_controlled_shutdown: response.error_code == NONE
                && request.want_shutdown
                && !response.should_shut_down
                && !response.is_fenced,
            should_shutdown: response.should_shut_down,
        })
    }

    /// AlterPartition, always sent as v3 (topics by id, ISR members with broker epochs)
    /// whatever `request.version` says; the answer's topic names are the request's.
    pub async fn alter_partition(
        &self,
        request: api::AlterPartitionRequest,
    ) -> Result<api::AlterPartitionResponse, ControllerClientError> {
        let topics = request.topics.iter().map(|t| {
            let partitions = t.partitions.iter().map(|p| {
                let isr = p.new_isr.iter().map(|m| {
                    alter_partition_request::BrokerState::default()
                        .with_broker_id(m.broker_id.into())
                        .with_broker_epoch(m.broker_epoch)
                });
                alter_partition_request::PartitionData::default()
                    .with_partition_index(p.partition)
                    .with_leader_epoch(p.leader_epoch)
                    .with_new_isr_with_epochs(isr.collect())
                    .with_partition_epoch(p.partition_epoch)
            });
            alter_partition_request::TopicData::default()
                .with_topic_id(t.topic_id)
                .with_partitions(partitions.collect())
        });
        let wire = AlterPartitionRequest::default()
            .with_broker_id(request.broker_id.into())
            .with_broker_epoch(request.broker_epoch)
            .with_topics(topics.collect());
        let response: AlterPartitionResponse =
            self.call(ApiKey::AlterPartition, rpc::ALTER_PARTITION_VERSION, &wire).await?;
        let name_of = |id: Uuid| {
            request.topics.iter().find(|t| t.topic_id == id).map(|t| t.topic_name.clone()).unwrap_or_default()
        };
        Ok(api::AlterPartitionResponse {
            error_code: response.error_code,
            topics: response
                .topics
                .into_iter()
                .map(|t| api::AlterPartitionTopicResult {
                    topic_id: t.topic_id,
                    topic_name: name_of(t.topic_id),
                    partitions: t
                        .partitions
                        .into_iter()
                        .map(|p| api::AlterPartitionResult {
                            partition: p.partition_index,
                            error_code: p.error_code,
                            leader: p.leader_id.0,
                            leader_epoch: p.leader_epoch,
                            isr: p.isr.into_iter().map(|id| id.0).collect(),
                            partition_epoch: p.partition_epoch,
                        })
                        .collect(),
                })
                .collect(),
        })
    }

    /// CreateTopics (v7).
    pub async fn create_topics(
        &self,
        topics: Vec<api::CreatableTopic>,
        validate_only: bool,
    ) -> Result<Vec<api::CreatableTopicResult>, ControllerClientError> {
        let topics = topics.iter().map(|t| {
            let assignments = t.assignments.iter().enumerate().map(|(partition, replicas)| {
                create_topics_request::CreatableReplicaAssignment::default()
                    .with_partition_index(partition as i32)
                    .with_broker_ids(replicas.iter().map(|id| (*id).into()).collect())
            });
            let configs = t.configs.iter().map(|(name, value)| {
                create_topics_request::CreatableTopicConfig::default()
                    .with_name(str_bytes(name))
                    .with_value(value.as_deref().map(str_bytes))
            });
            create_topics_request::CreatableTopic::default()
                .with_name(topic_name(&t.name))
                .with_num_partitions(t.num_partitions)
                .with_replication_factor(t.replication_factor)
                .with_assignments(assignments.collect())
                .with_configs(configs.collect())
        });
        let wire = CreateTopicsRequest::default()
            .with_topics(topics.collect())
            .with_timeout_ms(self.timeout_ms())
            .with_validate_only(validate_only);
        let response: CreateTopicsResponse = self.call(ApiKey::CreateTopics, rpc::CREATE_TOPICS_VERSION, &wire).await?;
        Ok(response
            .topics
            .into_iter()
            .map(|t| api::CreatableTopicResult {
                name: t.name.to_string(),
                topic_id: t.topic_id,
                error_code: t.error_code,
                error_message: t.error_message.map(|m| m.to_string()),
                num_partitions: t.num_partitions,
                replication_factor: t.replication_factor,
            })
            .collect())
    }

    /// CreatePartitions (v3).
    pub async fn create_partitions(
        &self,
        topics: Vec<api::CreatePartitionsTopic>,
        validate_only: bool,
    ) -> Result<Vec<api::TopicError>, ControllerClientError> {
        let topics = topics.iter().map(|t| {
            let assignments = t.assignments.as_ref().map(|assignments| {
                let each = assignments.iter().map(|replicas| {
                    create_partitions_request::CreatePartitionsAssignment::default()
                        .with_broker_ids(replicas.iter().map(|id| (*id).into()).collect())
                });
                each.collect()
            });
            create_partitions_request::CreatePartitionsTopic::default()
                .with_name(topic_name(&t.name))
                .with_count(t.count)
                .with_assignments(assignments)
        });
        let wire = CreatePartitionsRequest::default()
            .with_topics(topics.collect())
            .with_timeout_ms(self.timeout_ms())
            .with_validate_only(validate_only);
        let response: CreatePartitionsResponse =
            self.call(ApiKey::CreatePartitions, rpc::CREATE_PARTITIONS_VERSION, &wire).await?;
        Ok(response
            .results
            .into_iter()
            .map(|r| api::TopicError {
                name: r.name.to_string(),
                error_code: r.error_code,
                error_message: r.error_message.map(|m| m.to_string()),
            })
            .collect())
    }

    /// DeleteTopics (v6), by name or id. A topic's id in the answer is nil on error, as the
    /// controller answers.
    pub async fn delete_topics(
        &self,
        topics: Vec<api::TopicRef>,
    ) -> Result<Vec<api::DeletableTopicResult>, ControllerClientError> {
        let states = topics.iter().map(|t| match t {
            api::TopicRef::Name(name) => delete_topics_request::DeleteTopicState::default()
                .with_name(Some(topic_name(name)))
                .with_topic_id(Uuid::nil()),
            api::TopicRef::Id(id) => {
                delete_topics_request::DeleteTopicState::default().with_name(None).with_topic_id(*id)
            }
        });
        let wire = DeleteTopicsRequest::default().with_topics(states.collect()).with_timeout_ms(self.timeout_ms());
        let response: DeleteTopicsResponse = self.call(ApiKey::DeleteTopics, rpc::DELETE_TOPICS_VERSION, &wire).await?;
        Ok(response
            .responses
            .into_iter()
            .map(|r| api::DeletableTopicResult {
                topic: match r.name {
                    Some(name) => api::TopicRef::Name(name.to_string()),
                    None => api::TopicRef::Id(r.topic_id),
                },
                topic_id: if r.error_code == NONE { r.topic_id } else { Uuid::nil() },
                error_code: r.error_code,
            })
            .collect())
    }

    /// ElectLeaders (v2); `partitions` of `None` means every partition.
    pub async fn elect_leaders(
        &self,
        election_type: api::ElectionType,
        partitions: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<Vec<api::ElectLeadersTopicResult>, ControllerClientError> {
        let topic_partitions = partitions.map(|topics| {
            let each = topics.iter().map(|(topic, partitions)| {
                elect_leaders_request::TopicPartitions::default()
                    .with_topic(topic_name(topic))
                    .with_partitions(partitions.clone())
            });
            each.collect()
        });
        let wire = ElectLeadersRequest::default()
            .with_election_type(election_type as i8)
            .with_topic_partitions(topic_partitions)
            .with_timeout_ms(self.timeout_ms());
        let response: ElectLeadersResponse = self.call(ApiKey::ElectLeaders, rpc::ELECT_LEADERS_VERSION, &wire).await?;
        Ok(response
            .replica_election_results
            .into_iter()
            .map(|r| api::ElectLeadersTopicResult {
                topic: r.topic.to_string(),
                partitions: r.partition_result.into_iter().map(|p| (p.partition_id, p.error_code)).collect(),
            })
            .collect())
    }

    /// IncrementalAlterConfigs (v1) of one resource: SET for `Some`, DELETE for `None`, as
    /// [`Controller::alter_configs`](crate::Controller::alter_configs). Returns its error code.
    pub async fn alter_configs(
        &self,
        resource_type: ConfigResourceType,
        resource_name: &str,
        entries: Vec<(String, Option<String>)>,
    ) -> Result<i16, ControllerClientError> {
        let configs = entries.iter().map(|(name, value)| {
            incremental_alter_configs_request::AlterableConfig::default()
                .with_name(str_bytes(name))
                .with_config_operation(if value.is_some() { 0 } else { 1 })
                .with_value(value.as_deref().map(str_bytes))
        });
        let resource = incremental_alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(resource_type.0)
            .with_resource_name(str_bytes(resource_name))
            .with_configs(configs.collect());
        let wire = IncrementalAlterConfigsRequest::default().with_resources(vec![resource]);
        let response: IncrementalAlterConfigsResponse =
            self.call(ApiKey::IncrementalAlterConfigs, rpc::INCREMENTAL_ALTER_CONFIGS_VERSION, &wire).await?;
        Ok(response.responses.first().map_or(crate::errors::INVALID_REQUEST, |r| r.error_code))
    }

    fn timeout_ms(&self) -> i32 {
        self.request_timeout.as_millis().min(i32::MAX as u128) as i32
    }
}

/// Decodes a controller reply's response, in full.
fn decode_reply<Resp: Decodable>(reply: &[u8], version: i16) -> Result<Resp, String> {
    let (_, mut body) = codec::decode_controller_reply(reply).map_err(|e| format!("bad reply: {e}"))?;
    let response = Resp::decode(&mut body, version).map_err(|e| format!("bad response: {e:#}"))?;
    if !body.is_empty() {
        return Err(format!("{} bytes after the response", body.len()));
    }
    Ok(response)
}

// The client is shared by a broker's tasks.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ControllerClient>();
};
