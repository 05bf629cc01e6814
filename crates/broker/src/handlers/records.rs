//! DeleteRecords and OffsetForLeaderEpoch.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
};

use super::{blocking, requested_partition};
use crate::errors::storage_error_code;
use crate::Broker;

pub(crate) async fn delete_records(broker: &Arc<Broker>, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let b = broker.clone();
    blocking(move || {
        let mut response = DeleteRecordsResponse::default();
        for t in request.topics {
            let topic = b.topics.get(t.name.0.as_str());
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let r = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index)
                        .with_low_watermark(-1);
                    let partition = match requested_partition(topic.as_ref(), p.partition_index, -1) {
                        Ok(partition) => partition,
                        Err(e) => return r.with_error_code(e.code()),
                    };
                    // Kafka refuses to delete records of a topic that is compacted but not deleted.
                    let policy = partition.log.config().cleanup_policy;
                    if policy.compact && !policy.delete {
                        return r.with_error_code(ResponseError::PolicyViolation.code());
                    }
                    // -1 means "up to the high watermark".
                    let offset = if p.offset == -1 { partition.log.high_watermark() } else { p.offset };
                    if offset < 0 {
                        return r.with_error_code(ResponseError::OffsetOutOfRange.code());
                    }
                    match partition.log.delete_records_before(offset) {
                        Ok(low) => r.with_low_watermark(low),
                        Err(e) => r.with_error_code(storage_error_code(&e).code()),
                    }
                })
                .collect();
            response.topics.push(DeleteRecordsTopicResult::default().with_name(t.name).with_partitions(partitions));
        }
        response
    })
    .await
}

pub(crate) fn offset_for_leader_epoch(
    broker: &Arc<Broker>,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut response = OffsetForLeaderEpochResponse::default();
    for t in request.topics {
        let topic = broker.topics.get(t.topic.0.as_str());
        let partitions = t
            .partitions
            .iter()
            .map(|p| {
                let r = EpochEndOffset::default().with_partition(p.partition).with_leader_epoch(-1).with_end_offset(-1);
                let partition = match requested_partition(topic.as_ref(), p.partition, p.current_leader_epoch) {
                    Ok(partition) => partition,
                    Err(e) => return r.with_error_code(e.code()),
                };
                match partition.log.end_offset_for_epoch(p.leader_epoch) {
                    Some((epoch, end)) => r.with_leader_epoch(epoch).with_end_offset(end),
                    None => r,
                }
            })
            .collect();
        response.topics.push(OffsetForLeaderTopicResult::default().with_topic(t.topic).with_partitions(partitions));
    }
    response
}
