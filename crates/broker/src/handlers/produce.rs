//! Produce: validate and append record batches; acks 0, 1 and -1.
//!
//! Tern is single-node for now, so the ISR is this broker alone and acks=-1 is satisfied by the
//! local append (plus fsync where `flush.messages` asks for it), unless `min.insync.replicas` > 1.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind};

use super::metadata::str_bytes;
use super::{blocking, requested_partition, Outcome};
use crate::errors::storage_error_code;
use crate::{now_ms, Broker};

pub(crate) async fn handle(broker: &Arc<Broker>, request: ProduceRequest, _version: i16) -> Outcome {
    let acks = request.acks;
    if request.transactional_id.is_some() {
        // Transactions are not implemented yet; say so instead of writing unfenced data.
        return respond_all(request, ResponseError::TransactionalIdAuthorizationFailed, acks);
    }
    if !(-1..=1).contains(&acks) {
        return respond_all(request, ResponseError::InvalidRequiredAcks, acks);
    }
    let b = broker.clone();
    let responses = blocking(move || append_all(&b, request)).await;
    broker.notify_appended();
    if acks == 0 {
        return match responses.iter().flat_map(|t| &t.partition_responses).find(|p| p.error_code != 0) {
            Some(p) => Outcome::Close(format!("acks=0 produce failed with error {}", p.error_code)),
            None => Outcome::NoResponse,
        };
    }
    let mut response = ProduceResponse::default();
    response.responses = responses;
    Outcome::Respond(ResponseKind::Produce(response))
}

fn append_all(broker: &Broker, request: ProduceRequest) -> Vec<TopicProduceResponse> {
    let now = now_ms();
    let acks = request.acks;
    request
        .topic_data
        .into_iter()
        .map(|t| {
            let topic = broker.topics.get(t.name.0.as_str());
            if topic.as_ref().is_some_and(|t| t.internal) {
                return refuse_internal(t);
            }
            let partition_responses = t
                .partition_data
                .into_iter()
                .map(|pd| {
                    let mut r = PartitionProduceResponse::default()
                        .with_index(pd.index)
                        .with_base_offset(-1)
                        .with_log_append_time_ms(-1)
                        .with_log_start_offset(-1);
                    let partition = match requested_partition(topic.as_ref(), pd.index, -1) {
                        Ok(partition) => partition,
                        Err(e) => return r.with_error_code(e.code()),
                    };
                    if acks == -1 && topic.as_ref().is_some_and(|t| min_insync_replicas(broker, t) > 1) {
                        return r.with_error_code(ResponseError::NotEnoughReplicas.code());
                    }
                    let Some(records) = pd.records else {
                        return r.with_error_code(ResponseError::InvalidRecord.code());
                    };
                    match partition.log.append(&records, partition.leader_epoch, now) {
                        Ok(info) => {
                            r.base_offset = info.base_offset;
                            r.log_append_time_ms = info.log_append_time;
                            r.log_start_offset = info.log_start_offset;
                            r
                        }
                        Err(e) => {
                            tracing::debug!(topic = partition.topic, partition = pd.index, error = %e, "append rejected");
                            r.error_code = storage_error_code(&e).code();
                            r.error_message = Some(str_bytes(&e.to_string()));
                            r
                        }
                    }
                })
                .collect();
            TopicProduceResponse::default().with_name(t.name).with_partition_responses(partition_responses)
        })
        .collect()
}

/// Kafka's answer to a client producing to an internal topic (ReplicaManager: only the broker
/// itself writes `__consumer_offsets`, else anyone could forge offsets and group state).
fn refuse_internal(t: kafka_protocol::messages::produce_request::TopicProduceData) -> TopicProduceResponse {
    static LOGGED: crate::rate_limit::Every = crate::rate_limit::Every::new(60_000);
    let message = format!("Cannot append to internal topic {}", t.name.0.as_str());
    if LOGGED.ready() {
        tracing::warn!(
            topic = t.name.0.as_str(),
            "produce refused: internal topic (further ones logged at most once a minute)"
        );
    }
    let partition_responses = t
        .partition_data
        .iter()
        .map(|pd| {
            PartitionProduceResponse::default()
                .with_index(pd.index)
                .with_error_code(ResponseError::InvalidTopicException.code())
                .with_error_message(Some(str_bytes(&message)))
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1)
        })
        .collect();
    TopicProduceResponse::default().with_name(t.name).with_partition_responses(partition_responses)
}

fn min_insync_replicas(broker: &Broker, topic: &crate::topics::Topic) -> i64 {
    let value = match topic.configs.get("min.insync.replicas") {
        Some(v) => Some(v.clone()),
        None => broker.config.get("min.insync.replicas"),
    };
    value.and_then(|v| v.trim().parse().ok()).unwrap_or(1)
}

fn respond_all(request: ProduceRequest, error: ResponseError, acks: i16) -> Outcome {
    if acks == 0 {
        return Outcome::Close(format!("acks=0 produce failed: {error}"));
    }
    let mut response = ProduceResponse::default();
    response.responses = request
        .topic_data
        .into_iter()
        .map(|t| {
            let parts = t
                .partition_data
                .iter()
                .map(|p| {
                    PartitionProduceResponse::default()
                        .with_index(p.index)
                        .with_error_code(error.code())
                        .with_base_offset(-1)
                })
                .collect();
            TopicProduceResponse::default().with_name(t.name).with_partition_responses(parts)
        })
        .collect();
    Outcome::Respond(ResponseKind::Produce(response))
}
