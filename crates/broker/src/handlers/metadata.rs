//! Metadata: brokers, topics and partition leadership (this broker leads everything).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::admin::create_topic;
use crate::topics::Topic;
use crate::Broker;

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
    let node = BrokerId(broker.config.node_id());
    let mut response = MetadataResponse::default();
    response.brokers = vec![MetadataResponseBroker::default()
        .with_node_id(node)
        .with_host(str_bytes(&broker.config.advertised_host))
        .with_port(broker.config.advertised_port)];
    response.cluster_id = Some(str_bytes(&broker.cluster_id));
    response.controller_id = node;
    // v0: an empty list means all topics; v1+: null means all topics.
    let requested = match request.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(t),
    };
    let Some(requested) = requested else {
        response.topics = broker.topics.all().iter().map(|t| describe_topic(broker, t)).collect();
        return response;
    };
    let auto_create = broker.config.auto_create_topics() && (version < 4 || request.allow_auto_topic_creation);
    // Kafka counts auto-created partitions against the mutation quota without refusing them.
    let mut quota = broker.mutation_quota.for_request(client_id, false);
    for wanted in requested {
        let entry = match wanted.name {
            Some(name) => {
                let name = name.0.as_str().to_string();
                match broker.topics.get(&name) {
                    Some(t) => describe_topic(broker, &t),
                    None if auto_create => {
                        let partitions = broker.config.num_partitions();
                        match create_topic(broker, &name, partitions, Default::default(), false, &mut quota).await {
                            Ok(Some(t)) => describe_topic(broker, &t),
                            Ok(None) => error_topic(Some(&name), Uuid::nil(), ResponseError::UnknownTopicOrPartition),
                            Err((code, _)) => error_topic(Some(&name), Uuid::nil(), code),
                        }
                    }
                    None => error_topic(Some(&name), Uuid::nil(), ResponseError::UnknownTopicOrPartition),
                }
            }
            None => match broker.topics.get_by_id(wanted.topic_id) {
                Some(t) => describe_topic(broker, &t),
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

fn describe_topic(broker: &Broker, topic: &Topic) -> MetadataResponseTopic {
    let node = BrokerId(broker.config.node_id());
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&topic.name)))
        .with_topic_id(topic.id)
        .with_is_internal(topic.internal)
        .with_partitions(
            topic
                .partitions
                .iter()
                .map(|p| {
                    MetadataResponsePartition::default()
                        .with_partition_index(p.index)
                        .with_leader_id(node)
                        .with_leader_epoch(p.leader_epoch)
                        .with_replica_nodes(vec![node])
                        .with_isr_nodes(vec![node])
                })
                .collect(),
        )
}
