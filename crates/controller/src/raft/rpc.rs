//! Requests for the active controller on the quorum port: how a broker (co-located or not)
//! reaches the controller, as Kafka brokers do on `controller.listener.names`.
//!
//! A controller request is a frame of the quorum's connection protocol (see
//! [`QuorumServer`](super::QuorumServer)) of kind [`KIND_CONTROLLER`](super::codec::KIND_CONTROLLER),
//! whose body is `[i16 api key][i16 api version][the Kafka request body]`, encoded with
//! kafka-protocol without a request header; the reply's body is the response body in the same
//! version. The
//! APIs are BrokerRegistration, BrokerHeartbeat, AlterPartition, CreateTopics,
//! CreatePartitions, DeleteTopics, ElectLeaders, IncrementalAlterConfigs and
//! AllocateProducerIds, in every version
//! kafka-protocol decodes; [`ControllerClient`](super::ControllerClient) sends the versions
//! named here.
//!
//! A voter that is not the active controller answers Kafka's NOT_CONTROLLER where the
//! response has an error code (top level for BrokerRegistration, BrokerHeartbeat,
//! AlterPartition and ElectLeaders from v1; per topic or resource for the others), and, in the
//! flexible versions, names the leader it knows of in the tagged field [`LEADER_HINT_TAG`]
//! of the response (Kafka clients skip unknown tags). A Raft error of the voter (it is
//! shutting down, its storage failed) is logged and answered NOT_CONTROLLER too, so that the
//! client tries another voter. An unknown api key, an unsupported version or a body that does
//! not decode (or has bytes after the request) closes the connection.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::{
    alter_partition_request, alter_partition_response, create_partitions_response, create_topics_response,
    delete_topics_response, elect_leaders_response, incremental_alter_configs_response, AllocateProducerIdsRequest,
    AllocateProducerIdsResponse, AlterPartitionRequest, AlterPartitionResponse, ApiKey, BrokerHeartbeatRequest,
    BrokerHeartbeatResponse, BrokerRegistrationRequest, BrokerRegistrationResponse, CreatePartitionsRequest,
    CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    ElectLeadersRequest, ElectLeadersResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tern_metadata::{ConfigResourceType, Endpoint, MetadataRecord, Uuid};

use super::node::now_ms;
use super::{ControllerNode, NodeError, NodeId};
use crate::errors::{INVALID_REPLICA_ASSIGNMENT, INVALID_REQUEST, NONE, NOT_CONTROLLER, UNKNOWN_TOPIC_OR_PARTITION};
use crate::{api, Controller, ControllerResult, ElectionType};

/// The tagged field of a NOT_CONTROLLER response naming the leader the voter knows of: its
/// node id as a big-endian u64. Far above the tags Kafka assigns.
pub const LEADER_HINT_TAG: i32 = 10_000;

/// The versions [`ControllerClient`](super::ControllerClient) sends: the highest
/// kafka-protocol has, all flexible (so a NOT_CONTROLLER can carry the leader hint).
pub const BROKER_REGISTRATION_VERSION: i16 = 4;
pub const BROKER_HEARTBEAT_VERSION: i16 = 1;
/// v3: topics by id, ISR members with their broker epochs.
pub const ALTER_PARTITION_VERSION: i16 = 3;
/// v7: topic ids in the answer.
pub const CREATE_TOPICS_VERSION: i16 = 7;
pub const CREATE_PARTITIONS_VERSION: i16 = 3;
/// v6: topics by name or id.
pub const DELETE_TOPICS_VERSION: i16 = 6;
pub const ELECT_LEADERS_VERSION: i16 = 2;
pub const INCREMENTAL_ALTER_CONFIGS_VERSION: i16 = 1;
pub const ALLOCATE_PRODUCER_IDS_VERSION: i16 = 0;

/// The leader hint of a response's tagged fields, if it has one.
pub fn leader_hint(tagged: &BTreeMap<i32, Bytes>) -> Option<NodeId> {
    let bytes = tagged.get(&LEADER_HINT_TAG)?;
    Some(u64::from_be_bytes(bytes.as_ref().try_into().ok()?))
}

fn hint_fields(leader: Option<NodeId>) -> BTreeMap<i32, Bytes> {
    leader.map(|id| (LEADER_HINT_TAG, Bytes::copy_from_slice(&id.to_be_bytes()))).into_iter().collect()
}

pub(super) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub(super) fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}

/// Answers one controller request, or says why the connection must close.
pub(super) async fn serve(node: &ControllerNode, api_key: i16, version: i16, body: &[u8]) -> Result<Vec<u8>, String> {
    let api = ApiKey::try_from(api_key).map_err(|_| format!("unknown api key {api_key} in a controller request"))?;
    match api {
        ApiKey::BrokerRegistration => {
            let response = broker_registration(node, decode(api, version, body)?).await;
            encode(api, version, &response)
        }
        ApiKey::BrokerHeartbeat => {
            let response = broker_heartbeat(node, decode(api, version, body)?).await;
            encode(api, version, &response)
        }
        ApiKey::AlterPartition => {
            let response = alter_partition(node, version, decode(api, version, body)?).await;
            encode(api, version, &response)
        }
        ApiKey::CreateTopics => {
            let response = create_topics(node, decode(api, version, body)?).await;
            encode(api, version, &response)
        }
        ApiKey::CreatePartitions => {
            let response = create_partitions(node, decode(api, version, body)?).await;
            encode(api, version, &response)
        }
        ApiKey::DeleteTopics => {
            let response = delete_topics(node, version, decode(api, version, body)?).await;
            encode(api, version, &response)
        }
        ApiKey::ElectLeaders => {
            let response = elect_leaders(node, version, decode(api, version, body)?).await;
            encode(api, version, &response)
        }
        ApiKey::IncrementalAlterConfigs => {
            let response = incremental_alter_configs(node, decode(api, version, body)?).await;
            encode(api, version, &response)
        }
        ApiKey::AllocateProducerIds => {
            let response = allocate_producer_ids(node, decode(api, version, body)?).await;
            encode(api, version, &response)
        }
        other => Err(format!("{other:?} is not a controller request")),
    }
}

fn decode<T: Decodable>(api: ApiKey, version: i16, body: &[u8]) -> Result<T, String> {
    let mut buf = body;
    let request = T::decode(&mut buf, version).map_err(|e| format!("bad {api:?} v{version} request: {e:#}"))?;
    if !buf.is_empty() {
        return Err(format!("{} bytes after the {api:?} v{version} request", buf.len()));
    }
    Ok(request)
}

fn encode<T: Encodable>(api: ApiKey, version: i16, response: &T) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    response.encode(&mut out, version).map_err(|e| {
        // Our bug: nothing to answer but to close.
        tracing::error!(?api, version, error = %e, "cannot encode a controller response");
        format!("cannot encode the {api:?} v{version} response: {e:#}")
    })?;
    Ok(out)
}

/// Runs a request on the active controller; `Err` is NOT_CONTROLLER with the leader hint.
async fn run<T>(
    node: &ControllerNode,
    now: i64,
    request: impl FnOnce(&mut Controller) -> ControllerResult<T>,
) -> Result<T, Option<NodeId>> {
    match node.handle(now, request).await {
        Ok(answer) => Ok(answer),
        Err(NodeError::NotController { leader }) => Err(leader),
        Err(e) => {
            tracing::warn!(node = node.id(), error = %e, "controller request failed; answering NOT_CONTROLLER");
            Err(None)
        }
    }
}

async fn allocate_producer_ids(
    node: &ControllerNode,
    request: AllocateProducerIdsRequest,
) -> AllocateProducerIdsResponse {
    let (broker_id, broker_epoch) = (request.broker_id.0, request.broker_epoch);
    let response = AllocateProducerIdsResponse::default().with_producer_id_start((-1).into()).with_producer_id_len(0);
    match run(node, now_ms(), |c| c.allocate_producer_ids(broker_id, broker_epoch)).await {
        Ok(Ok((start, len))) => response.with_producer_id_start(start.into()).with_producer_id_len(len),
        Ok(Err(error_code)) => response.with_error_code(error_code),
        Err(leader) => response.with_error_code(NOT_CONTROLLER).with_unknown_tagged_fields(hint_fields(leader)),
    }
}

async fn broker_registration(node: &ControllerNode, request: BrokerRegistrationRequest) -> BrokerRegistrationResponse {
    let request = api::BrokerRegistrationRequest {
        broker_id: request.broker_id.0,
        incarnation_id: request.incarnation_id,
        listeners: request
            .listeners
            .iter()
            .map(|l| Endpoint {
                name: l.name.to_string(),
                host: l.host.to_string(),
                port: l.port,
                security_protocol: l.security_protocol,
            })
            .collect(),
        rack: request.rack.map(|r| r.to_string()),
    };
    let now = now_ms();
    match run(node, now, |c| c.register_broker(request, now)).await {
        Ok(reply) => BrokerRegistrationResponse::default()
            .with_error_code(reply.error_code)
            .with_broker_epoch(reply.broker_epoch),
        Err(leader) => BrokerRegistrationResponse::default()
            .with_error_code(NOT_CONTROLLER)
            .with_broker_epoch(-1)
            .with_unknown_tagged_fields(hint_fields(leader)),
    }
}

async fn broker_heartbeat(node: &ControllerNode, request: BrokerHeartbeatRequest) -> BrokerHeartbeatResponse {
    let request = api::BrokerHeartbeatRequest {
        broker_id: request.broker_id.0,
        broker_epoch: request.broker_epoch,
        current_metadata_offset: request.current_metadata_offset,
        want_fence: request.want_fence,
        want_shutdown: request.want_shut_down,
    };
    let now = now_ms();
    match run(node, now, |c| c.heartbeat(request, now)).await {
        Ok(reply) => BrokerHeartbeatResponse::default()
            .with_error_code(reply.error_code)
            .with_is_caught_up(reply.is_caught_up)
            .with_is_fenced(reply.is_fenced)
            .with_should_shut_down(reply.should_shutdown),
        Err(leader) => BrokerHeartbeatResponse::default()
            .with_error_code(NOT_CONTROLLER)
            .with_unknown_tagged_fields(hint_fields(leader)),
    }
}

async fn alter_partition(
    node: &ControllerNode,
    version: i16,
    request: AlterPartitionRequest,
) -> AlterPartitionResponse {
    let isr = |p: &alter_partition_request::PartitionData| -> Vec<api::IsrMember> {
        if version >= 3 {
            let members = p.new_isr_with_epochs.iter();
            members.map(|m| api::IsrMember { broker_id: m.broker_id.0, broker_epoch: m.broker_epoch }).collect()
        } else {
            p.new_isr.iter().map(|id| api::IsrMember { broker_id: id.0, broker_epoch: -1 }).collect()
        }
    };
    let request = api::AlterPartitionRequest {
        version,
        broker_id: request.broker_id.0,
        broker_epoch: request.broker_epoch,
        topics: request
            .topics
            .iter()
            .map(|t| api::AlterPartitionTopic {
                topic_id: t.topic_id,
                topic_name: String::new(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| api::AlterPartitionData {
                        partition: p.partition_index,
                        leader_epoch: p.leader_epoch,
                        partition_epoch: p.partition_epoch,
                        new_isr: isr(p),
                    })
                    .collect(),
            })
            .collect(),
    };
    match run(node, now_ms(), |c| c.alter_partition(request)).await {
        Ok(response) => AlterPartitionResponse::default().with_error_code(response.error_code).with_topics(
            response
                .topics
                .into_iter()
                .map(|t| {
                    alter_partition_response::TopicData::default().with_topic_id(t.topic_id).with_partitions(
                        t.partitions
                            .into_iter()
                            .map(|p| {
                                alter_partition_response::PartitionData::default()
                                    .with_partition_index(p.partition)
                                    .with_error_code(p.error_code)
                                    .with_leader_id(p.leader.into())
                                    .with_leader_epoch(p.leader_epoch)
                                    .with_isr(p.isr.into_iter().map(Into::into).collect())
                                    .with_partition_epoch(p.partition_epoch)
                            })
                            .collect(),
                    )
                })
                .collect(),
        ),
        Err(leader) => AlterPartitionResponse::default()
            .with_error_code(NOT_CONTROLLER)
            .with_unknown_tagged_fields(hint_fields(leader)),
    }
}

async fn create_topics(node: &ControllerNode, request: CreateTopicsRequest) -> CreateTopicsResponse {
    let failed = |name: &TopicName, error_code: i16, message: Option<String>| {
        create_topics_response::CreatableTopicResult::default()
            .with_name(name.clone())
            .with_topic_id(Uuid::nil())
            .with_error_code(error_code)
            .with_error_message(message.map(StrBytes::from_string))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
    };
    // Kafka's rule for manual assignments: partitions 0, 1, ... each once.
    let mut invalid = BTreeMap::new();
    let mut topics = Vec::new();
    for (i, t) in request.topics.iter().enumerate() {
        let mut assignments: Vec<_> = t.assignments.iter().map(|a| (a.partition_index, a.broker_ids.clone())).collect();
        assignments.sort_by_key(|(partition, _)| *partition);
        if assignments.iter().enumerate().any(|(i, (partition, _))| *partition != i as i32) {
            let message = "Partitions should be a consecutive 0-based integer sequence.".to_string();
            invalid.insert(i, failed(&t.name, INVALID_REPLICA_ASSIGNMENT, Some(message)));
            continue;
        }
        topics.push(api::CreatableTopic {
            name: t.name.to_string(),
            num_partitions: t.num_partitions,
            replication_factor: t.replication_factor,
            assignments: assignments.into_iter().map(|(_, ids)| ids.into_iter().map(|id| id.0).collect()).collect(),
            configs: t.configs.iter().map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string()))).collect(),
        });
    }
    let validate_only = request.validate_only;
    let answered = run(node, now_ms(), |c| c.create_topics(topics, validate_only)).await;
    let mut results = match &answered {
        Ok(results) => results.iter(),
        Err(_) => [].iter(),
    };
    let topics = request.topics.iter().enumerate().map(|(i, t)| {
        if let Some(result) = invalid.remove(&i) {
            return result;
        }
        match (&answered, results.next()) {
            (Ok(_), Some(r)) => create_topics_response::CreatableTopicResult::default()
                .with_name(t.name.clone())
                .with_topic_id(r.topic_id)
                .with_error_code(r.error_code)
                .with_error_message(r.error_message.clone().map(StrBytes::from_string))
                .with_num_partitions(r.num_partitions)
                .with_replication_factor(r.replication_factor),
            (Err(_), _) => failed(&t.name, NOT_CONTROLLER, None),
            (Ok(_), None) => failed(&t.name, INVALID_REQUEST, Some("No answer for the topic.".to_string())),
        }
    });
    let response = CreateTopicsResponse::default().with_topics(topics.collect());
    match answered {
        Ok(_) => response,
        Err(leader) => response.with_unknown_tagged_fields(hint_fields(leader)),
    }
}

async fn create_partitions(node: &ControllerNode, request: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let topics = request
        .topics
        .iter()
        .map(|t| api::CreatePartitionsTopic {
            name: t.name.to_string(),
            count: t.count,
            assignments: t
                .assignments
                .as_ref()
                .map(|a| a.iter().map(|a| a.broker_ids.iter().map(|id| id.0).collect()).collect()),
        })
        .collect();
    let validate_only = request.validate_only;
    let results = match run(node, now_ms(), |c| c.create_partitions(topics, validate_only)).await {
        Ok(results) => results
            .into_iter()
            .map(|r| {
                create_partitions_response::CreatePartitionsTopicResult::default()
                    .with_name(topic_name(&r.name))
                    .with_error_code(r.error_code)
                    .with_error_message(r.error_message.map(StrBytes::from_string))
            })
            .collect(),
        Err(leader) => {
            return CreatePartitionsResponse::default()
                .with_results(
                    request
                        .topics
                        .iter()
                        .map(|t| {
                            create_partitions_response::CreatePartitionsTopicResult::default()
                                .with_name(t.name.clone())
                                .with_error_code(NOT_CONTROLLER)
                        })
                        .collect(),
                )
                .with_unknown_tagged_fields(hint_fields(leader))
        }
    };
    CreatePartitionsResponse::default().with_results(results)
}

async fn delete_topics(node: &ControllerNode, version: i16, request: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let topics: Vec<api::TopicRef> = if version >= 6 {
        let by_ref = |t: &kafka_protocol::messages::delete_topics_request::DeleteTopicState| match (
            &t.name,
            t.topic_id.is_nil(),
        ) {
            (_, false) => api::TopicRef::Id(t.topic_id),
            (Some(name), true) => api::TopicRef::Name(name.to_string()),
            (None, true) => api::TopicRef::Name(String::new()),
        };
        request.topics.iter().map(by_ref).collect()
    } else {
        request.topic_names.iter().map(|n| api::TopicRef::Name(n.to_string())).collect()
    };
    let answer = |topic: &api::TopicRef, topic_id: Uuid, error_code: i16| {
        let (name, topic_id) = match topic {
            api::TopicRef::Name(name) => (Some(topic_name(name)), topic_id),
            // The id asked for, whether or not it was found.
            api::TopicRef::Id(id) => (None, *id),
        };
        delete_topics_response::DeletableTopicResult::default()
            .with_name(name)
            .with_topic_id(topic_id)
            .with_error_code(error_code)
    };
    match run(node, now_ms(), |c| c.delete_topics(topics.clone())).await {
        Ok(results) => DeleteTopicsResponse::default()
            .with_responses(results.iter().map(|r| answer(&r.topic, r.topic_id, r.error_code)).collect()),
        Err(leader) => DeleteTopicsResponse::default()
            .with_responses(topics.iter().map(|t| answer(t, Uuid::nil(), NOT_CONTROLLER)).collect())
            .with_unknown_tagged_fields(hint_fields(leader)),
    }
}

async fn elect_leaders(node: &ControllerNode, version: i16, request: ElectLeadersRequest) -> ElectLeadersResponse {
    let results = |results: Vec<(String, Vec<(i32, i16)>)>| {
        results
            .into_iter()
            .map(|(topic, partitions)| {
                elect_leaders_response::ReplicaElectionResult::default()
                    .with_topic(topic_name(&topic))
                    .with_partition_result(
                        partitions
                            .into_iter()
                            .map(|(partition, error_code)| {
                                elect_leaders_response::PartitionResult::default()
                                    .with_partition_id(partition)
                                    .with_error_code(error_code)
                            })
                            .collect(),
                    )
            })
            .collect()
    };
    let requested: Option<Vec<(String, Vec<i32>)>> = request
        .topic_partitions
        .as_ref()
        .map(|topics| topics.iter().map(|t| (t.topic.to_string(), t.partitions.clone())).collect());
    // Every requested partition with one error, for errors of the whole request in v0 (which
    // has no top-level error code).
    let all_failed = |error_code: i16| {
        let requested = requested.clone().unwrap_or_default();
        let failed = requested.into_iter().map(|(t, ps)| (t, ps.into_iter().map(|p| (p, error_code)).collect()));
        ElectLeadersResponse::default().with_error_code(error_code).with_replica_election_results(if version == 0 {
            results(failed.collect())
        } else {
            Vec::new()
        })
    };
    let election_type = match request.election_type {
        0 => ElectionType::Preferred,
        1 => ElectionType::Unclean,
        _ => return all_failed(INVALID_REQUEST),
    };
    match run(node, now_ms(), |c| c.elect_leaders(election_type, requested.clone())).await {
        Ok(answer) => ElectLeadersResponse::default()
            .with_replica_election_results(results(answer.into_iter().map(|r| (r.topic, r.partitions)).collect())),
        Err(leader) => all_failed(NOT_CONTROLLER).with_unknown_tagged_fields(hint_fields(leader)),
    }
}

const CONFIG_SET: i8 = 0;
const CONFIG_DELETE: i8 = 1;

async fn incremental_alter_configs(
    node: &ControllerNode,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let validate_only = request.validate_only;
    let resources = request.resources.clone();
    let alter = |c: &mut Controller| {
        let mut records: Vec<MetadataRecord> = Vec::new();
        let mut answers = Vec::with_capacity(resources.len());
        for resource in resources {
            let resource_type = ConfigResourceType(resource.resource_type);
            let name = resource.resource_name.to_string();
            let entries: Option<Vec<(String, Option<String>)>> = resource
                .configs
                .iter()
                .map(|c| match c.config_operation {
                    CONFIG_SET => Some((c.name.to_string(), c.value.as_ref().map(|v| v.to_string()))),
                    CONFIG_DELETE => Some((c.name.to_string(), None)),
                    // APPEND and SUBTRACT are for list configs, which the controller has none of.
                    _ => None,
                })
                .collect();
            let error_code = match entries {
                None => INVALID_REQUEST,
                Some(_)
                    if resource_type != ConfigResourceType::TOPIC && resource_type != ConfigResourceType::BROKER =>
                {
                    INVALID_REQUEST
                }
                Some(_) if resource_type == ConfigResourceType::TOPIC && c.image().topic_by_name(&name).is_none() => {
                    UNKNOWN_TOPIC_OR_PARTITION
                }
                Some(_) if validate_only => NONE,
                Some(entries) => {
                    let result = c.alter_configs(resource_type, &name, entries);
                    records.extend(result.records);
                    result.response
                }
            };
            answers.push(error_code);
        }
        ControllerResult { records, response: answers }
    };
    let answered = run(node, now_ms(), alter).await;
    let responses = request.resources.iter().enumerate().map(|(i, resource)| {
        let error_code = match &answered {
            Ok(codes) => codes.get(i).copied().unwrap_or(INVALID_REQUEST),
            Err(_) => NOT_CONTROLLER,
        };
        incremental_alter_configs_response::AlterConfigsResourceResponse::default()
            .with_error_code(error_code)
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone())
    });
    let response = IncrementalAlterConfigsResponse::default().with_responses(responses.collect());
    match answered {
        Ok(_) => response,
        Err(leader) => response.with_unknown_tagged_fields(hint_fields(leader)),
    }
}
