//! Produce: validate and append record batches; acks 0, 1 and -1.
//!
//! Each partition's replica state machine (`tern_partition`) checks the append (leadership,
//! `min.insync.replicas` capped by the replication factor as Kafka 3.7+ does) and moves the high
//! watermark. acks=-1 waits until every ISR member has the records (on a single node, the ISR is
//! this broker alone and the local append satisfies it), or answers REQUEST_TIMED_OUT after the
//! request's `timeout_ms`, or NOT_LEADER_OR_FOLLOWER if leadership moves meanwhile.
//! Batches are validated as Kafka's LogValidator does (`tern_storage`'s `validate.rs`); refused
//! ones are answered with Kafka's error code, message and KIP-467 record errors (v8+), and logged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind};
use tern_storage::{inspect_produced, AppendOrigin, StorageError};
use tokio::sync::oneshot;

use super::metadata::str_bytes;
use super::{blocking, requested_partition, Outcome};
use crate::errors::storage_error_code;
use crate::log_limit::LogLimiter;
use crate::{now_ms, Broker};

/// Refused produce requests, logged at WARN (rate-limited).
static REFUSED: LogLimiter = LogLimiter::new();

/// Who sent a request, for the log.
pub(crate) struct Client<'a> {
    pub id: &'a str,
    pub peer: SocketAddr,
}

/// Magic byte of the only record format Tern stores (Kafka 0.11+ record batches).
const MAGIC_V2: u8 = 2;
/// Where the magic byte sits: the same place in v0/v1 messages and v2 batches.
const MAGIC_POSITION: usize = 16;
/// Where every format's entry length (of the bytes after it) sits.
const LENGTH_POSITION: usize = 8;

pub(crate) async fn handle(broker: &Arc<Broker>, request: ProduceRequest, version: i16, client: Client<'_>) -> Outcome {
    let acks = request.acks;
    if let Some(id) = &request.transactional_id {
        // Transactions are not implemented yet; say so instead of writing unfenced data.
        let reason = format!("transactional id {} refused: transactions are not supported by this broker", id.as_str());
        log_refusal(&client, &reason);
        return respond_all(request, ResponseError::TransactionalIdAuthorizationFailed, acks);
    }
    // Kafka's KafkaApis.handleProduceRequest: transactional batches need a transactional id.
    let transactional = request
        .topic_data
        .iter()
        .flat_map(|t| &t.partition_data)
        .any(|p| p.records.as_ref().is_some_and(|r| inspect_produced(r).transactional));
    if transactional {
        log_refusal(&client, "transactional record batches without a transactional id");
        return respond_all(request, ResponseError::TransactionalIdAuthorizationFailed, acks);
    }
    if !(-1..=1).contains(&acks) {
        log_refusal(&client, &format!("acks={acks} is not one of -1, 0, 1"));
        return respond_all(request, ResponseError::InvalidRequiredAcks, acks);
    }
    let timeout_ms = i64::from(request.timeout_ms.max(0));
    // Ids at or above this were never issued; read before the append, so an id handed out
    // meanwhile is not refused.
    let producer_ids_below = match broker.cluster() {
        Some(cluster) => {
            let max_producer_id = request
                .topic_data
                .iter()
                .flat_map(|t| &t.partition_data)
                .filter_map(|p| p.records.as_ref().map(|r| inspect_produced(r).max_producer_id))
                .max()
                .unwrap_or(-1);
            cluster.producer_ids_below(max_producer_id).await
        }
        None => broker.producer_ids.issued_below(),
    };
    let b = broker.clone();
    let (mut responses, waiting) = blocking(move || append_all(&b, request, version, producer_ids_below)).await;
    // acks=all: each appended partition answers once the ISR has its records (Kafka's
    // DelayedProduce); the replica state machine times it out at `timeout_ms`.
    for (topic, partition, replicated) in waiting {
        let code = match tokio::time::timeout(Duration::from_millis(timeout_ms as u64 + 1000), replicated).await {
            Ok(Ok(code)) => code,
            // The partition went away (deleted, or no longer hosted here) while it waited.
            Ok(Err(_)) => ResponseError::NotLeaderOrFollower.code(),
            Err(_) => ResponseError::RequestTimedOut.code(),
        };
        if code != 0 {
            let r = &mut responses[topic].partition_responses[partition];
            r.error_code = code;
            r.base_offset = -1;
        }
    }
    let refused: Vec<String> = responses
        .iter()
        .flat_map(|t| t.partition_responses.iter().map(move |p| (t, p)))
        .filter(|(_, p)| p.error_code != 0)
        .map(|(t, p)| {
            let message = p.error_message.as_ref().map_or("", |m| m.as_str());
            format!("{}-{}: {} {message}", t.name.0.as_str(), p.index, crate::errors::error_name(p.error_code))
        })
        .collect();
    if !refused.is_empty() {
        log_refusal(&client, &refused.join("; "));
    }
    if acks == 0 {
        return match refused.first() {
            Some(first) => Outcome::Close(format!("acks=0 produce failed: {first}")),
            None => Outcome::NoResponse,
        };
    }
    let mut response = ProduceResponse::default();
    response.responses = responses;
    Outcome::Respond(ResponseKind::Produce(response))
}

fn log_refusal(client: &Client<'_>, reason: &str) {
    if let Some(suppressed) = REFUSED.allow() {
        tracing::warn!(client_id = client.id, peer = %client.peer, suppressed, "produce refused: {reason}");
    }
}

/// A partition's acks=all answer still to come: (topic index, partition index) in the response.
type Waiting = Vec<(usize, usize, oneshot::Receiver<i16>)>;

fn append_all(
    broker: &Broker,
    request: ProduceRequest,
    version: i16,
    producer_ids_below: i64,
) -> (Vec<TopicProduceResponse>, Waiting) {
    let now = now_ms();
    let acks = request.acks;
    let timeout_ms = i64::from(request.timeout_ms.max(0));
    let mut waiting = Vec::new();
    let responses = request
        .topic_data
        .into_iter()
        .enumerate()
        .map(|(topic_index, t)| {
            let topic = broker.topics.get(t.name.0.as_str());
            if topic.as_ref().is_some_and(|t| t.internal) {
                return refuse_internal(t);
            }
            let partition_responses = t
                .partition_data
                .into_iter()
                .enumerate()
                .map(|(partition_index, pd)| {
                    let mut r = PartitionProduceResponse::default()
                        .with_index(pd.index)
                        .with_base_offset(-1)
                        .with_log_append_time_ms(-1)
                        .with_log_start_offset(-1);
                    let partition = match requested_partition(topic.as_ref(), pd.index, -1) {
                        Ok(partition) => partition,
                        Err(e) => return r.with_error_code(e.code()),
                    };
                    let min_insync = topic.as_ref().map_or(1, |t| min_insync_replicas(broker, t));
                    let leader_epoch = match partition.check_append(acks, min_insync) {
                        Ok(epoch) => epoch,
                        Err(code) => return r.with_error_code(code),
                    };
                    let Some(records) = pd.records else {
                        return r.with_error_code(ResponseError::InvalidRecord.code());
                    };
                    // Kafka's ProduceRequest.validateRecords: zstd needs Produce v7 (KIP-110).
                    if version < 7 && inspect_produced(&records).zstd {
                        r.error_message = Some(str_bytes(&format!("Produce v{version} may not use zstd compression")));
                        return r.with_error_code(ResponseError::UnsupportedCompressionType.code());
                    }
                    // Produce v0-2 come from clients that write message format v0/v1, which Tern
                    // does not convert (Kafka 3.x up-converts it); format v2 in them is fine.
                    if version < 3 && !only_format_v2(&records) {
                        r.error_message =
                            Some(str_bytes("message format v0/v1 is not supported: Tern stores only format v2"));
                        return r.with_error_code(ResponseError::UnsupportedForMessageFormat.code());
                    }
                    let origin = AppendOrigin::Client { producer_ids_below };
                    match partition.log.append_as(&records, leader_epoch, now, origin) {
                        Ok(info) => {
                            partition.appended();
                            if acks == -1 {
                                let replicated = partition.await_replication(info.last_offset + 1, timeout_ms);
                                waiting.push((topic_index, partition_index, replicated));
                            }
                            r.base_offset = info.base_offset;
                            r.log_append_time_ms = info.log_append_time;
                            r.log_start_offset = info.log_start_offset;
                            r
                        }
                        Err(e) => {
                            r.error_code = storage_error_code(&e).code();
                            r.error_message = Some(str_bytes(&e.to_string()));
                            r.record_errors = record_errors(&e);
                            r
                        }
                    }
                })
                .collect();
            TopicProduceResponse::default().with_name(t.name).with_partition_responses(partition_responses)
        })
        .collect();
    (responses, waiting)
}

/// Kafka's answer to a client producing to an internal topic (ReplicaManager: only the broker
/// itself writes `__consumer_offsets`, else anyone could forge offsets and group state).
fn refuse_internal(t: kafka_protocol::messages::produce_request::TopicProduceData) -> TopicProduceResponse {
    static LOGGED: LogLimiter = LogLimiter::new();
    let message = format!("Cannot append to internal topic {}", t.name.0.as_str());
    if let Some(suppressed) = LOGGED.allow() {
        tracing::warn!(topic = t.name.0.as_str(), suppressed, "produce refused: internal topic");
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

/// KIP-467's per-record errors of a refused batch (sent from Produce v8 on).
fn record_errors(e: &StorageError) -> Vec<BatchIndexAndErrorMessage> {
    match e {
        StorageError::InvalidRecords { records, .. } | StorageError::InvalidTimestamp { records, .. } => records
            .iter()
            .map(|r| {
                BatchIndexAndErrorMessage::default()
                    .with_batch_index(r.batch_index)
                    .with_batch_index_error_message(Some(str_bytes(&r.message)))
            })
            .collect(),
        _ => Vec::new(),
    }
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

fn min_insync_replicas(broker: &Broker, topic: &crate::topics::Topic) -> i32 {
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
