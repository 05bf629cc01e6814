//! Topic administration on a cluster node: CreateTopics, DeleteTopics and CreatePartitions are
//! controller operations (Kafka forwards them to the active controller); names and configs are
//! checked here first, and the answer waits (bounded) until this broker's image shows the
//! change, so a client's next Metadata to this broker sees it.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_quorum_response::{PartitionData, ReplicaState, TopicData};
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, DescribeClusterRequest, DescribeClusterResponse, DescribeQuorumRequest,
    DescribeQuorumResponse, ElectLeadersRequest, ElectLeadersResponse, TopicName,
};
use tern_controller::{CreatableTopic, CreatePartitionsTopic, TopicRef};

use super::metadata::{str_bytes, topic_name, CLUSTER_OPERATIONS};
use crate::cluster::ClusterRuntime;
use crate::config::validate_topic_config;
use crate::topics::validate_topic_name;

/// The controller could not be reached: Kafka's answer when forwarding times out.
fn unreachable(e: impl std::fmt::Display) -> (i16, String) {
    tracing::warn!(error = %e, "admin request failed: the controller cannot be reached");
    (ResponseError::RequestTimedOut.code(), format!("the controller cannot be reached: {e}"))
}

pub(crate) async fn create_topics(cluster: &Arc<ClusterRuntime>, request: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut response = CreateTopicsResponse::default();
    let mut forwarded = Vec::new();
    for t in request.topics {
        let name = t.name.0.as_str().to_string();
        let mut configs = Vec::new();
        let mut invalid =
            validate_topic_name(&name).err().map(|e| (ResponseError::InvalidTopicException, e.to_string()));
        for c in &t.configs {
            if let Some(v) = &c.value {
                if let Err(e) = validate_topic_config(c.name.as_str(), v.as_str()) {
                    invalid.get_or_insert((ResponseError::InvalidConfig, e.0));
                }
            }
            configs.push((c.name.as_str().to_string(), c.value.as_ref().map(|v| v.as_str().to_string())));
        }
        if let Some((error, message)) = invalid {
            response.topics.push(
                CreatableTopicResult::default()
                    .with_name(t.name)
                    .with_error_code(error.code())
                    .with_error_message(Some(str_bytes(&message)))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1),
            );
            continue;
        }
        forwarded.push(CreatableTopic {
            name,
            num_partitions: t.num_partitions,
            replication_factor: t.replication_factor,
            assignments: t.assignments.iter().map(|a| a.broker_ids.iter().map(|b| b.0).collect()).collect(),
            configs,
        });
    }
    if forwarded.is_empty() {
        return response;
    }
    let names: Vec<String> = forwarded.iter().map(|t| t.name.clone()).collect();
    match cluster.client.create_topics(forwarded, request.validate_only).await {
        Ok(results) => {
            let created: Vec<_> = results.iter().filter(|r| r.error_code == 0).map(|r| r.topic_id).collect();
            if !request.validate_only {
                cluster.wait_for_image(|image| created.iter().all(|id| image.topic(*id).is_some())).await;
            }
            for r in results {
                tracing::info!(
                    topic = r.name,
                    partitions = r.num_partitions,
                    error = crate::errors::error_name(r.error_code),
                    "CreateTopics through the controller"
                );
                response.topics.push(
                    CreatableTopicResult::default()
                        .with_name(topic_name(&r.name))
                        .with_topic_id(r.topic_id)
                        .with_error_code(r.error_code)
                        .with_error_message(r.error_message.as_deref().map(str_bytes))
                        .with_num_partitions(if r.error_code == 0 { r.num_partitions } else { -1 })
                        .with_replication_factor(if r.error_code == 0 { r.replication_factor } else { -1 }),
                );
            }
        }
        Err(e) => {
            let (code, message) = unreachable(e);
            for name in names {
                response.topics.push(
                    CreatableTopicResult::default()
                        .with_name(topic_name(&name))
                        .with_error_code(code)
                        .with_error_message(Some(str_bytes(&message)))
                        .with_num_partitions(-1)
                        .with_replication_factor(-1),
                );
            }
        }
    }
    response
}

pub(crate) async fn delete_topics(
    cluster: &Arc<ClusterRuntime>,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let mut response = DeleteTopicsResponse::default();
    let targets: Vec<TopicRef> = if version >= 6 {
        request
            .topics
            .into_iter()
            .map(|t| match t.name {
                Some(n) => TopicRef::Name(n.0.as_str().to_string()),
                None => TopicRef::Id(t.topic_id),
            })
            .collect()
    } else {
        request.topic_names.into_iter().map(|n| TopicRef::Name(n.0.as_str().to_string())).collect()
    };
    let answer = |topic: &TopicRef, id: uuid::Uuid, code: i16| {
        let name = match topic {
            TopicRef::Name(n) => Some(topic_name(n)),
            TopicRef::Id(_) => None,
        };
        DeletableTopicResult::default().with_name(name).with_topic_id(id).with_error_code(code)
    };
    match cluster.client.delete_topics(targets.clone()).await {
        Ok(results) => {
            let deleted: Vec<_> = results.iter().filter(|r| r.error_code == 0).map(|r| r.topic_id).collect();
            cluster.wait_for_image(|image| deleted.iter().all(|id| image.topic(*id).is_none())).await;
            for r in results {
                tracing::info!(topic = ?r.topic, error = crate::errors::error_name(r.error_code), "DeleteTopics through the controller");
                response.responses.push(answer(&r.topic, r.topic_id, r.error_code));
            }
        }
        Err(e) => {
            let (code, _) = unreachable(e);
            response.responses = targets.iter().map(|t| answer(t, uuid::Uuid::nil(), code)).collect();
        }
    }
    response
}

pub(crate) async fn create_partitions(
    cluster: &Arc<ClusterRuntime>,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut response = CreatePartitionsResponse::default();
    let topics: Vec<CreatePartitionsTopic> = request
        .topics
        .iter()
        .map(|t| CreatePartitionsTopic {
            name: t.name.0.as_str().to_string(),
            count: t.count,
            assignments: t
                .assignments
                .as_ref()
                .map(|a| a.iter().map(|a| a.broker_ids.iter().map(|b| b.0).collect()).collect()),
        })
        .collect();
    let wanted: Vec<(String, i32)> = topics.iter().map(|t| (t.name.clone(), t.count)).collect();
    match cluster.client.create_partitions(topics, request.validate_only).await {
        Ok(results) => {
            if !request.validate_only {
                let grown: Vec<_> = results
                    .iter()
                    .filter(|r| r.error_code == 0)
                    .filter_map(|r| wanted.iter().find(|(n, _)| *n == r.name).cloned())
                    .collect();
                cluster
                    .wait_for_image(|image| {
                        grown.iter().all(|(n, count)| {
                            image.topic_by_name(n).is_some_and(|t| t.partitions.len() as i32 >= *count)
                        })
                    })
                    .await;
            }
            for r in results {
                response.results.push(
                    CreatePartitionsTopicResult::default()
                        .with_name(topic_name(&r.name))
                        .with_error_code(r.error_code)
                        .with_error_message(r.error_message.as_deref().map(str_bytes)),
                );
            }
        }
        Err(e) => {
            let (code, message) = unreachable(e);
            for (name, _) in wanted {
                response.results.push(
                    CreatePartitionsTopicResult::default()
                        .with_name(topic_name(&name))
                        .with_error_code(code)
                        .with_error_message(Some(str_bytes(&message))),
                );
            }
        }
    }
    response
}

pub(crate) fn describe_cluster(
    cluster: &Arc<ClusterRuntime>,
    cluster_id: &str,
    request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let image = cluster.image();
    let mut response = DescribeClusterResponse::default();
    if request.include_cluster_authorized_operations {
        response.cluster_authorized_operations = CLUSTER_OPERATIONS;
    }
    response.cluster_id = str_bytes(cluster_id);
    response.controller_id = BrokerId(cluster.controller_id_for_clients(&image));
    response.brokers = cluster
        .alive_brokers(&image)
        .into_iter()
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.id))
                .with_host(str_bytes(&b.host))
                .with_port(i32::from(b.port))
                .with_rack(b.rack.as_deref().map(str_bytes))
        })
        .collect();
    response
}

/// The metadata log's name and partition in DescribeQuorum, as Kafka's KRaft names them.
pub(crate) const METADATA_TOPIC: &str = "__cluster_metadata";

/// DescribeQuorum (Kafka's `kafka-metadata-quorum describe --status`): the controller quorum
/// as this voter sees it. Every node of a combined cluster is a voter, so it answers itself
/// rather than forwarding: the leader, its epoch (the Raft term) and the committed offset,
/// and every voter's log end offset (known on the leader; on a follower only its own).
/// Openraft does not report fetch times, so those are -1 ("unknown", as Kafka uses).
pub(crate) async fn describe_quorum(
    cluster: &Arc<ClusterRuntime>,
    request: DescribeQuorumRequest,
) -> DescribeQuorumResponse {
    let mut response = DescribeQuorumResponse::default();
    let asks_metadata_log = request
        .topics
        .iter()
        .all(|t| t.topic_name.0.as_str() == METADATA_TOPIC && t.partitions.iter().all(|p| p.partition_index == 0));
    if request.topics.is_empty() || !asks_metadata_log {
        response.error_code = ResponseError::InvalidRequest.code();
        response.error_message = Some(str_bytes(&format!("only {METADATA_TOPIC} partition 0 has a quorum")));
        return response;
    }
    let info = cluster.controller.quorum_info().await;
    let voters = info
        .voters
        .iter()
        .map(|v| {
            ReplicaState::default()
                .with_replica_id(BrokerId(v.id as i32))
                .with_log_end_offset(v.log_end_offset)
                .with_last_fetch_timestamp(v.last_fetch_ms.unwrap_or(-1))
                .with_last_caught_up_timestamp(v.last_caught_up_ms.unwrap_or(-1))
        })
        .collect();
    let partition = PartitionData::default()
        .with_partition_index(0)
        .with_leader_id(BrokerId(info.leader_id.map_or(-1, |id| id as i32)))
        .with_leader_epoch(i32::try_from(info.leader_epoch).unwrap_or(i32::MAX))
        .with_high_watermark(info.high_watermark)
        .with_current_voters(voters);
    response.topics = vec![TopicData::default()
        .with_topic_name(TopicName(str_bytes(METADATA_TOPIC)))
        .with_partitions(vec![partition])];
    response
}

/// ElectLeaders (Kafka's `kafka-leader-election`): a controller operation. The answer waits
/// (bounded) until this broker's image shows the partitions elected here led by their
/// preferred replica, so the client's next Metadata to this broker sees the new leaders.
pub(crate) async fn elect_leaders(
    cluster: &Arc<ClusterRuntime>,
    request: ElectLeadersRequest,
    version: i16,
) -> ElectLeadersResponse {
    use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
    use tern_controller::ElectionType;

    let mut response = ElectLeadersResponse::default();
    // v0 has no election type: preferred.
    let election_type = match (version, request.election_type) {
        (0, _) | (_, 0) => ElectionType::Preferred,
        (_, 1) => ElectionType::Unclean,
        (_, other) => {
            response.error_code = ResponseError::InvalidRequest.code();
            tracing::warn!(election_type = other, "ElectLeaders refused: unknown election type");
            return response;
        }
    };
    let partitions = request
        .topic_partitions
        .map(|topics| topics.into_iter().map(|t| (t.topic.0.as_str().to_string(), t.partitions)).collect());
    let results = match cluster.client.elect_leaders(election_type, partitions).await {
        Ok(results) => results,
        Err(e) => {
            let (code, _) = unreachable(e);
            response.error_code = code;
            return response;
        }
    };
    let elected: Vec<(String, i32)> = results
        .iter()
        .flat_map(|r| r.partitions.iter().filter(|(_, code)| *code == 0).map(|(p, _)| (r.topic.clone(), *p)))
        .collect();
    if election_type == ElectionType::Preferred && !elected.is_empty() {
        cluster
            .wait_for_image(|image| {
                elected.iter().all(|(topic, p)| {
                    image
                        .topic_by_name(topic)
                        .and_then(|t| t.partitions.get(p))
                        .is_none_or(|r| r.has_preferred_leader())
                })
            })
            .await;
    }
    response.replica_election_results = results
        .into_iter()
        .map(|r| {
            ReplicaElectionResult::default().with_topic(topic_name(&r.topic)).with_partition_result(
                r.partitions
                    .into_iter()
                    .map(|(p, code)| {
                        let message = (code != 0).then(|| str_bytes(&crate::errors::error_name(code)));
                        PartitionResult::default()
                            .with_partition_id(p)
                            .with_error_code(code)
                            .with_error_message(message)
                    })
                    .collect(),
            )
        })
        .collect();
    response
}
