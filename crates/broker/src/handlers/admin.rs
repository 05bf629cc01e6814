//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions, DescribeCluster.
//!
//! Creating partitions is bounded twice: by the KIP-599 controller mutation quota per client id
//! (`mutation_quota`), and by the open-file limit, checked before anything is created
//! (`open_files`), so that an operation that cannot complete is refused whole (POLICY_VIOLATION,
//! as Kafka's controller refuses an excessively large operation).

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, DescribeClusterRequest, DescribeClusterResponse, DescribeQuorumRequest,
    DescribeQuorumResponse, ElectLeadersRequest, ElectLeadersResponse,
};

use super::blocking;
use super::metadata::{str_bytes, topic_name, CLUSTER_OPERATIONS};
use crate::config::validate_topic_config;
use crate::errors::topic_error_code;
use crate::log_limit::LogLimiter;
use crate::mutation_quota::RequestQuota;
use crate::offsets_topic::OFFSETS_TOPIC;
use crate::open_files;
use crate::topics::{validate_topic_name, Topic};
use crate::Broker;

type AdminError = (ResponseError, String);

static REFUSED_LOG: LogLimiter = LogLimiter::new();

/// Logs a refused creation, deletion or growth (rate-limited: a client can repeat it at will).
fn refused(topic: &str, partitions: u64, error: ResponseError, message: String) -> AdminError {
    if let Some(suppressed) = REFUSED_LOG.allow() {
        tracing::warn!(topic, partitions, error = ?error, suppressed, "refused: {message}");
    }
    (error, message)
}

/// Creates a topic after validating everything a client could get wrong; with `validate_only`
/// it stops before writing and returns `None`.
pub(crate) async fn create_topic(
    broker: &Arc<Broker>,
    name: &str,
    partitions: i32,
    configs: BTreeMap<String, String>,
    validate_only: bool,
    quota: &mut RequestQuota<'_>,
) -> Result<Option<Arc<Topic>>, AdminError> {
    validate_topic_name(name).map_err(|e| (ResponseError::InvalidTopicException, e.to_string()))?;
    if partitions < 1 {
        return Err((ResponseError::InvalidPartitions, "Number of partitions must be larger than 0.".into()));
    }
    for (k, v) in &configs {
        validate_topic_config(k, v).map_err(|e| (ResponseError::InvalidConfig, e.0))?;
    }
    let _guard = broker.admin_lock.lock().await;
    if let Some(existing) = broker.topics.get(name) {
        return Err((ResponseError::TopicAlreadyExists, format!("Topic '{}' already exists.", existing.name)));
    }
    broker.topics.check_collision(name).map_err(|e| (ResponseError::InvalidTopicException, e.to_string()))?;
    let count = partitions as u64;
    open_files::check_room_for(count).map_err(|m| refused(name, count, ResponseError::PolicyViolation, m))?;
    if validate_only {
        return Ok(None);
    }
    quota.record(count).map_err(|m| refused(name, count, ResponseError::ThrottlingQuotaExceeded, m))?;
    let log_config = broker.config.log_config(&configs);
    let b = broker.clone();
    let name = name.to_string();
    let topic = blocking(move || b.topics.create(&name, partitions, configs, &log_config))
        .await
        .map_err(|e| (topic_error_code(&e), e.to_string()))?;
    tracing::info!(topic = topic.name, partitions, "created topic");
    Ok(Some(topic))
}

pub(crate) async fn create_topics(
    broker: &Arc<Broker>,
    request: CreateTopicsRequest,
    version: i16,
    client_id: &str,
) -> CreateTopicsResponse {
    if let Some(cluster) = broker.cluster() {
        return super::cluster_admin::create_topics(cluster, request).await;
    }
    let mut response = CreateTopicsResponse::default();
    let mut quota = broker.mutation_quota.for_request(client_id, version >= 6);
    for t in request.topics {
        let name = t.name.0.as_str().to_string();
        let partitions = if t.num_partitions == -1 { broker.config.num_partitions() } else { t.num_partitions };
        let mut result = CreatableTopicResult::default().with_name(t.name.clone()).with_replication_factor(1);
        let outcome = if !t.assignments.is_empty() {
            // Manual assignment: every partition on this broker only.
            let node = broker.config.node_id();
            if t.assignments.iter().any(|a| a.broker_ids.iter().any(|b| b.0 != node)) {
                Err((ResponseError::InvalidReplicaAssignment, format!("Only broker {node} exists in this cluster.")))
            } else {
                Ok(t.assignments.len() as i32)
            }
        } else if t.replication_factor != -1 && t.replication_factor != 1 {
            Err((
                ResponseError::InvalidReplicationFactor,
                format!("Replication factor: {} larger than available brokers: 1.", t.replication_factor),
            ))
        } else {
            Ok(partitions)
        };
        let mut configs = BTreeMap::new();
        for c in &t.configs {
            if let Some(v) = &c.value {
                configs.insert(c.name.as_str().to_string(), v.as_str().to_string());
            }
        }
        let created = match outcome {
            Ok(partitions) => {
                create_topic(broker, &name, partitions, configs.clone(), request.validate_only, &mut quota)
                    .await
                    .map(|t| t.map_or((uuid::Uuid::nil(), partitions), |t| (t.id, t.partition_count)))
            }
            Err(e) => Err(e),
        };
        match created {
            Ok((id, n)) => {
                result.topic_id = id;
                result.num_partitions = n;
            }
            Err((code, message)) => {
                result.error_code = code.code();
                result.error_message = Some(str_bytes(&message));
                result.num_partitions = -1;
                result.replication_factor = -1;
            }
        }
        if version >= 5 && result.error_code == 0 {
            result.configs = Some(
                broker
                    .config
                    .effective_topic_configs(&configs)
                    .into_iter()
                    .map(|(def, value, source)| {
                        CreatableTopicConfigs::default()
                            .with_name(str_bytes(def.name))
                            .with_value(Some(str_bytes(&value)))
                            .with_config_source(source as i8)
                    })
                    .collect(),
            );
        }
        response.topics.push(result);
    }
    response.throttle_time_ms = quota.throttle_time_ms;
    response
}

pub(crate) async fn delete_topics(
    broker: &Arc<Broker>,
    request: DeleteTopicsRequest,
    version: i16,
    client_id: &str,
) -> DeleteTopicsResponse {
    if let Some(cluster) = broker.cluster() {
        return super::cluster_admin::delete_topics(cluster, request, version).await;
    }
    let mut response = DeleteTopicsResponse::default();
    let mut quota = broker.mutation_quota.for_request(client_id, version >= 5);
    let targets: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
        request.topics.into_iter().map(|t| (t.name.map(|n| n.0.as_str().to_string()), t.topic_id)).collect()
    } else {
        request.topic_names.into_iter().map(|n| (Some(n.0.as_str().to_string()), uuid::Uuid::nil())).collect()
    };
    for (name, id) in targets {
        let topic = match &name {
            Some(n) => broker.topics.get(n),
            None => broker.topics.get_by_id(id),
        };
        let mut result = DeletableTopicResult::default().with_name(name.as_deref().map(topic_name)).with_topic_id(id);
        match topic {
            None => {
                let error =
                    if name.is_some() { ResponseError::UnknownTopicOrPartition } else { ResponseError::UnknownTopicId };
                result.error_code = error.code();
            }
            Some(topic) if topic.name == OFFSETS_TOPIC => {
                // The group coordinator's state lives there; Kafka refuses this too.
                result.name = Some(topic_name(&topic.name));
                result.topic_id = topic.id;
                result.error_code = ResponseError::InvalidTopicException.code();
                if version >= 5 {
                    result.error_message = Some(str_bytes(&format!("Cannot delete internal topic {OFFSETS_TOPIC}.")));
                }
            }
            Some(topic) => {
                let _guard = broker.admin_lock.lock().await;
                result.name = Some(topic_name(&topic.name));
                result.topic_id = topic.id;
                let count = topic.partition_count as u64;
                if let Err(message) = quota.record(count) {
                    let (error, message) = refused(&topic.name, count, ResponseError::ThrottlingQuotaExceeded, message);
                    result.error_code = error.code();
                    if version >= 5 {
                        result.error_message = Some(str_bytes(&message));
                    }
                    response.responses.push(result);
                    continue;
                }
                let b = broker.clone();
                let n = topic.name.clone();
                drop(topic);
                // Kafka waits `log.segment.delete.delay.ms` before removing a deleted log's files.
                let delay = broker.config.log_config(&BTreeMap::new()).file_delete_delay_ms;
                if let Err(e) = blocking(move || b.topics.delete(&n, delay)).await {
                    tracing::warn!(topic = name.as_deref().unwrap_or(""), error = %e, "topic deletion refused");
                    result.error_code = topic_error_code(&e).code();
                    if version >= 5 {
                        result.error_message = Some(str_bytes(&e.to_string()));
                    }
                } else {
                    tracing::info!(topic = name.as_deref().unwrap_or(""), "deleted topic");
                }
            }
        }
        response.responses.push(result);
    }
    response.throttle_time_ms = quota.throttle_time_ms;
    response
}

pub(crate) async fn create_partitions(
    broker: &Arc<Broker>,
    request: CreatePartitionsRequest,
    version: i16,
    client_id: &str,
) -> CreatePartitionsResponse {
    if let Some(cluster) = broker.cluster() {
        return super::cluster_admin::create_partitions(cluster, request).await;
    }
    let mut response = CreatePartitionsResponse::default();
    let mut quota = broker.mutation_quota.for_request(client_id, version >= 3);
    for t in request.topics {
        let name = t.name.0.as_str().to_string();
        let result = grow_topic(
            broker,
            &name,
            t.count,
            t.assignments
                .is_some_and(|a| a.iter().any(|a| a.broker_ids.iter().any(|b| b.0 != broker.config.node_id()))),
            request.validate_only,
            &mut quota,
        )
        .await;
        let mut r = CreatePartitionsTopicResult::default().with_name(t.name);
        if let Err((code, message)) = result {
            r.error_code = code.code();
            r.error_message = Some(str_bytes(&message));
        }
        response.results.push(r);
    }
    response.throttle_time_ms = quota.throttle_time_ms;
    response
}

async fn grow_topic(
    broker: &Arc<Broker>,
    name: &str,
    count: i32,
    foreign_assignment: bool,
    validate_only: bool,
    quota: &mut RequestQuota<'_>,
) -> Result<(), AdminError> {
    let _guard = broker.admin_lock.lock().await;
    let topic = broker
        .topics
        .get(name)
        .ok_or_else(|| (ResponseError::UnknownTopicOrPartition, format!("The topic '{name}' does not exist.")))?;
    let current = topic.partition_count;
    if count < current {
        return Err((
            ResponseError::InvalidPartitions,
            format!("Topic currently has {current} partitions, which is higher than the requested {count}."),
        ));
    }
    if count == current {
        return Err((ResponseError::InvalidPartitions, format!("Topic already has {current} partitions.")));
    }
    if foreign_assignment {
        return Err((ResponseError::InvalidReplicaAssignment, "Only this broker exists in the cluster.".into()));
    }
    let added = (count - current) as u64;
    open_files::check_room_for(added).map_err(|m| refused(name, added, ResponseError::PolicyViolation, m))?;
    if validate_only {
        return Ok(());
    }
    quota.record(added).map_err(|m| refused(name, added, ResponseError::ThrottlingQuotaExceeded, m))?;
    let log_config = broker.config.log_config(&topic.configs);
    let b = broker.clone();
    let name = name.to_string();
    blocking(move || b.topics.add_partitions(&name, count, &log_config))
        .await
        .map(|_| ())
        .map_err(|e| (topic_error_code(&e), e.to_string()))
}

/// ElectLeaders: a controller operation on a cluster node. A single node leads every
/// partition alone, so no election is ever needed there.
pub(crate) async fn elect_leaders(
    broker: &Arc<Broker>,
    request: ElectLeadersRequest,
    version: i16,
) -> ElectLeadersResponse {
    use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
    if let Some(cluster) = broker.cluster() {
        return super::cluster_admin::elect_leaders(cluster, request, version).await;
    }
    use tern_controller::errors::ELECTION_NOT_NEEDED;
    let mut response = ElectLeadersResponse::default();
    // All partitions: those that need no election are left out of the answer.
    let Some(topics) = request.topic_partitions else { return response };
    for t in topics {
        let topic = broker.topics.get(t.topic.0.as_str());
        let results = t
            .partitions
            .iter()
            .map(|&p| {
                let exists = topic.as_ref().is_some_and(|topic| p >= 0 && p < topic.partition_count);
                let code = if exists { ELECTION_NOT_NEEDED } else { ResponseError::UnknownTopicOrPartition.code() };
                PartitionResult::default()
                    .with_partition_id(p)
                    .with_error_code(code)
                    .with_error_message(Some(str_bytes(&crate::errors::error_name(code))))
            })
            .collect();
        response
            .replica_election_results
            .push(ReplicaElectionResult::default().with_topic(t.topic).with_partition_result(results));
    }
    response
}

/// DescribeQuorum: answered by a cluster node; a single node runs no controller quorum.
pub(crate) async fn describe_quorum(broker: &Arc<Broker>, request: DescribeQuorumRequest) -> DescribeQuorumResponse {
    if let Some(cluster) = broker.cluster() {
        return super::cluster_admin::describe_quorum(cluster, request).await;
    }
    let mut response = DescribeQuorumResponse::default();
    response.error_code = kafka_protocol::error::ResponseError::InvalidRequest.code();
    response.error_message =
        Some(str_bytes("this broker runs as a single node, without a controller quorum (see process.roles)"));
    response
}

pub(crate) fn describe_cluster(broker: &Arc<Broker>, request: DescribeClusterRequest) -> DescribeClusterResponse {
    if let Some(cluster) = broker.cluster() {
        return super::cluster_admin::describe_cluster(cluster, &broker.cluster_id, request);
    }
    let node = BrokerId(broker.config.node_id());
    let mut response = DescribeClusterResponse::default();
    if request.include_cluster_authorized_operations {
        response.cluster_authorized_operations = CLUSTER_OPERATIONS;
    }
    response.cluster_id = str_bytes(&broker.cluster_id);
    response.controller_id = node;
    response.brokers = vec![DescribeClusterBroker::default()
        .with_broker_id(node)
        .with_host(str_bytes(&broker.config.advertised_host))
        .with_port(broker.config.advertised_port)];
    response
}
