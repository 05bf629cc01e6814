//! Metadata: brokers, topics and partition leadership (this broker leads everything it serves).
//! A partition whose log is offline is shown as Kafka shows a partition whose only replica is
//! on a failed log directory: LEADER_NOT_AVAILABLE, leader -1, the node in `offline_replicas`.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::admin::create_topic;
use crate::cluster::ClusterRuntime;
use crate::topics::Topic;
use crate::Broker;

/// Kafka's `AclOperation` codes, as bits of the `*_authorized_operations` fields
/// (`Utils.to32BitField`).
const READ: i32 = 1 << 3;
const WRITE: i32 = 1 << 4;
const CREATE: i32 = 1 << 5;
const DELETE: i32 = 1 << 6;
const ALTER: i32 = 1 << 7;
const DESCRIBE: i32 = 1 << 8;
const CLUSTER_ACTION: i32 = 1 << 9;
const DESCRIBE_CONFIGS: i32 = 1 << 10;
const ALTER_CONFIGS: i32 = 1 << 11;
const IDEMPOTENT_WRITE: i32 = 1 << 12;

/// Without an authorizer Kafka allows every operation a resource supports
/// (`AclEntry.supportedOperations`, Kafka 3.9), and says so when asked.
pub(crate) const TOPIC_OPERATIONS: i32 =
    READ | WRITE | CREATE | DESCRIBE | DELETE | ALTER | DESCRIBE_CONFIGS | ALTER_CONFIGS;
pub(crate) const GROUP_OPERATIONS: i32 = READ | DESCRIBE | DELETE;
pub(crate) const CLUSTER_OPERATIONS: i32 =
    CREATE | CLUSTER_ACTION | DESCRIBE_CONFIGS | ALTER_CONFIGS | IDEMPOTENT_WRITE | ALTER | DESCRIBE;

pub(crate) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub(crate) fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}

pub(crate) async fn handle(
    broker: &Arc<Broker>,
    request: MetadataRequest,
    version: i16,
    client_id: &str,
) -> MetadataResponse {
    let mut response = MetadataResponse::default();
    response.cluster_id = Some(str_bytes(&broker.cluster_id));
    // Not asked for: the schema's default (i32::MIN), which clients read as "not sent".
    if (8..=10).contains(&version) && request.include_cluster_authorized_operations {
        response.cluster_authorized_operations = CLUSTER_OPERATIONS;
    }
    let topic_operations = version >= 8 && request.include_topic_authorized_operations;
    let auto_create = broker.config.auto_create_topics() && (version < 4 || request.allow_auto_topic_creation);
    // v0: an empty list means all topics; v1+: null means all topics.
    let requested = match request.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(t),
    };
    if let Some(cluster) = broker.cluster() {
        return cluster_metadata(cluster, response, requested, auto_create, version, topic_operations).await;
    }
    let node = BrokerId(broker.config.node_id());
    response.brokers = vec![MetadataResponseBroker::default()
        .with_node_id(node)
        .with_host(str_bytes(&broker.config.advertised_host))
        .with_port(broker.config.advertised_port)];
    response.controller_id = node;
    let Some(requested) = requested else {
        response.topics =
            broker.topics.all().iter().map(|t| describe_topic(broker, t, version, topic_operations)).collect();
        return response;
    };
    // Kafka counts auto-created partitions against the mutation quota without refusing them.
    let mut quota = broker.mutation_quota.for_request(client_id, false);
    for wanted in requested {
        let entry = match wanted.name {
            Some(name) => {
                let name = name.0.as_str().to_string();
                match broker.topics.get(&name) {
                    Some(t) => describe_topic(broker, &t, version, topic_operations),
                    None if auto_create => {
                        let partitions = broker.config.num_partitions();
                        match create_topic(broker, &name, partitions, Default::default(), false, &mut quota).await {
                            Ok(Some(t)) => describe_topic(broker, &t, version, topic_operations),
                            Ok(None) => error_topic(Some(&name), Uuid::nil(), ResponseError::UnknownTopicOrPartition),
                            Err((code, _)) => error_topic(Some(&name), Uuid::nil(), code),
                        }
                    }
                    None => error_topic(Some(&name), Uuid::nil(), ResponseError::UnknownTopicOrPartition),
                }
            }
            None => match broker.topics.get_by_id(wanted.topic_id) {
                Some(t) => describe_topic(broker, &t, version, topic_operations),
                None => error_topic(None, wanted.topic_id, ResponseError::UnknownTopicId),
            },
        };
        response.topics.push(entry);
    }
    response
}

fn error_topic(name: Option<&str>, id: Uuid, error: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default().with_name(name.map(topic_name)).with_topic_id(id).with_error_code(error.code())
}

fn describe_topic(broker: &Broker, topic: &Topic, version: i16, with_operations: bool) -> MetadataResponseTopic {
    let node = BrokerId(broker.config.node_id());
    let error = if topic.offline.is_some() && topic.partitions.is_empty() {
        ResponseError::LeaderNotAvailable.code()
    } else {
        0
    };
    let operations = if with_operations { TOPIC_OPERATIONS } else { i32::MIN };
    MetadataResponseTopic::default()
        .with_error_code(error)
        .with_topic_authorized_operations(operations)
        .with_name(Some(topic_name(&topic.name)))
        .with_topic_id(topic.id)
        .with_is_internal(topic.internal)
        .with_partitions(
            topic
                .partitions
                .iter()
                .map(|p| {
                    let partition = MetadataResponsePartition::default()
                        .with_partition_index(p.index)
                        .with_leader_epoch(p.leader_epoch())
                        .with_replica_nodes(vec![node])
                        .with_isr_nodes(vec![node]);
                    if p.offline_reason().is_none() {
                        return partition.with_leader_id(node);
                    }
                    let partition = partition
                        .with_error_code(ResponseError::LeaderNotAvailable.code())
                        .with_leader_id(BrokerId(-1));
                    if version >= 5 {
                        partition.with_offline_replicas(vec![node])
                    } else {
                        partition
                    }
                })
                .collect(),
        )
}

/// Metadata on a cluster node: everything from the committed image this broker applied, so every
/// broker answers alike. A topic that does not exist is created through the controller when
/// auto-creation is on, and answered LEADER_NOT_AVAILABLE until its leaders are elected (the
/// client asks again), as Kafka does.
async fn cluster_metadata(
    cluster: &Arc<ClusterRuntime>,
    mut response: MetadataResponse,
    requested: Option<Vec<MetadataRequestTopic>>,
    auto_create: bool,
    version: i16,
    topic_operations: bool,
) -> MetadataResponse {
    let image = cluster.image();
    response.brokers = cluster
        .alive_brokers(&image)
        .into_iter()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.id))
                .with_host(str_bytes(&b.host))
                .with_port(i32::from(b.port))
                .with_rack(b.rack.as_deref().map(str_bytes))
        })
        .collect();
    response.controller_id = BrokerId(cluster.controller_id_for_clients(&image));
    let Some(requested) = requested else {
        response.topics = image.topics().map(|t| describe_image_topic(&image, t, version, topic_operations)).collect();
        response.topics.sort_by(|a, b| a.name.cmp(&b.name));
        return response;
    };
    let mut to_create = Vec::new();
    for wanted in requested {
        let entry = match wanted.name {
            Some(name) => match image.topic_by_name(name.0.as_str()) {
                Some(t) => describe_image_topic(&image, t, version, topic_operations),
                None if auto_create && crate::topics::validate_topic_name(name.0.as_str()).is_ok() => {
                    to_create.push(name.0.as_str().to_string());
                    error_topic(Some(name.0.as_str()), Uuid::nil(), ResponseError::LeaderNotAvailable)
                }
                None => error_topic(Some(name.0.as_str()), Uuid::nil(), ResponseError::UnknownTopicOrPartition),
            },
            None => match image.topic(wanted.topic_id) {
                Some(t) => describe_image_topic(&image, t, version, topic_operations),
                None => error_topic(None, wanted.topic_id, ResponseError::UnknownTopicId),
            },
        };
        response.topics.push(entry);
    }
    if !to_create.is_empty() {
        let topics = to_create.iter().map(|n| tern_controller::CreatableTopic::new(n, -1, -1)).collect();
        match cluster.client.create_topics(topics, false).await {
            Ok(results) => {
                for r in results.iter().filter(|r| r.error_code != 0 && r.error_code != 36) {
                    tracing::warn!(
                        topic = r.name,
                        error = crate::errors::error_name(r.error_code),
                        "auto-creation refused by the controller"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "auto-creation failed: the controller cannot be reached"),
        }
    }
    response
}

fn describe_image_topic(
    image: &tern_metadata::MetadataImage,
    topic: &tern_metadata::TopicImage,
    version: i16,
    with_operations: bool,
) -> MetadataResponseTopic {
    let operations = if with_operations { TOPIC_OPERATIONS } else { i32::MIN };
    let ids = |v: &[i32]| v.iter().map(|&id| BrokerId(id)).collect::<Vec<_>>();
    MetadataResponseTopic::default()
        .with_topic_authorized_operations(operations)
        .with_name(Some(topic_name(&topic.name)))
        .with_topic_id(topic.id)
        .with_is_internal(crate::topics::is_internal(&topic.name))
        .with_partitions(
            topic
                .partitions
                .iter()
                .map(|(&index, p)| {
                    let offline: Vec<i32> =
                        p.replicas.iter().copied().filter(|&r| image.broker(r).is_none_or(|b| b.fenced)).collect();
                    let partition = MetadataResponsePartition::default()
                        .with_partition_index(index)
                        .with_leader_id(BrokerId(p.leader))
                        .with_leader_epoch(p.leader_epoch)
                        .with_replica_nodes(ids(&p.replicas))
                        .with_isr_nodes(ids(&p.isr))
                        .with_offline_replicas(if version >= 5 { ids(&offline) } else { Vec::new() });
                    if p.has_leader() {
                        partition
                    } else {
                        partition.with_error_code(ResponseError::LeaderNotAvailable.code())
                    }
                })
                .collect(),
        )
}
