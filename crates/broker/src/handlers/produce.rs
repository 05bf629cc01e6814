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
use crate::log_limit::LogLimiter;
use crate::{now_ms, Broker};

/// Magic byte of the only record format Tern stores (Kafka 0.11+ record batches).
const MAGIC_V2: u8 = 2;
/// Where the magic byte sits: the same place in v0/v1 messages and v2 batches.
const MAGIC_POSITION: usize = 16;
/// Where every format's entry length (of the bytes after it) sits.
const LENGTH_POSITION: usize = 8;

static OLD_FORMAT_LOG: LogLimiter = LogLimiter::new();

pub(crate) async fn handle(broker: &Arc<Broker>, request: ProduceRequest, version: i16, client_id: &str) -> Outcome {
    let acks = request.acks;
    if request.transactional_id.is_some() {
        // Transactions are not implemented yet; say so instead of writing unfenced data.
        return respond_all(request, ResponseError::TransactionalIdAuthorizationFailed, acks);
    }
    if !(-1..=1).contains(&acks) {
        return respond_all(request, ResponseError::InvalidRequiredAcks, acks);
    }
    let b = broker.clone();
    let responses = blocking(move || append_all(&b, request, version)).await;
    broker.notify_appended();
    let old_format = ResponseError::UnsupportedForMessageFormat.code();
    if responses.iter().flat_map(|t| &t.partition_responses).any(|p| p.error_code == old_format) {
        if let Some(suppressed) = OLD_FORMAT_LOG.allow() {
            tracing::info!(
                client_id,
                version,
                suppressed,
                "refused Produce of message format v0/v1 (UNSUPPORTED_FOR_MESSAGE_FORMAT): Tern stores only format v2"
            );
        }
    }
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

fn append_all(broker: &Broker, request: ProduceRequest, version: i16) -> Vec<TopicProduceResponse> {
    let now = now_ms();
    let acks = request.acks;
    request
        .topic_data
        .into_iter()
        .map(|t| {
            let topic = broker.topics.get(t.name.0.as_str());
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
                    // Produce v0-2 come from clients that write message format v0/v1, which Tern
                    // does not convert (Kafka 3.x up-converts it); format v2 in them is fine.
                    if version < 3 && !only_format_v2(&records) {
                        return r.with_error_code(ResponseError::UnsupportedForMessageFormat.code());
                    }
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

/// Whether every entry of a produced record set is a v2 record batch (a malformed set passes, for
/// the append's validation to refuse with its own error).
fn only_format_v2(records: &[u8]) -> bool {
    let mut at = 0;
    while let Some(entry) = records.get(at..) {
        if entry.len() <= MAGIC_POSITION {
            return true;
        }
        if entry[MAGIC_POSITION] != MAGIC_V2 {
            return false;
        }
        let length = &entry[LENGTH_POSITION..LENGTH_POSITION + 4];
        let length = i32::from_be_bytes([length[0], length[1], length[2], length[3]]);
        let Ok(length) = usize::try_from(length) else { return true };
        at = at.saturating_add(LENGTH_POSITION + 4 + length);
    }
    true
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
