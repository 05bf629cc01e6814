//! ListOffsets: earliest, latest, max-timestamp and by-timestamp lookups.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::{blocking, requested_partition};
use crate::errors::storage_error_code;
use crate::Broker;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

pub(crate) async fn handle(broker: &Arc<Broker>, request: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let b = broker.clone();
    blocking(move || {
        let mut response = ListOffsetsResponse::default();
        for t in request.topics {
            let topic = b.topics.get(t.name.0.as_str());
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let r = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1)
                        .with_leader_epoch(-1);
                    let partition = match requested_partition(topic.as_ref(), p.partition_index, p.current_leader_epoch)
                    {
                        Ok(partition) => partition,
                        Err(e) => return r.with_error_code(e.code()),
                    };
                    let log = &partition.log;
                    let found = match p.timestamp {
                        LATEST => Ok(Some((log.high_watermark(), -1))),
                        EARLIEST | EARLIEST_LOCAL => Ok(Some((log.log_start_offset(), -1))),
                        LATEST_TIERED => Ok(None),
                        MAX_TIMESTAMP => Ok(log.max_timestamp()),
                        ts if ts < 0 => return r.with_error_code(ResponseError::InvalidRequest.code()),
                        ts => log.offset_for_timestamp(ts),
                    };
                    match found {
                        Ok(Some((offset, timestamp))) => {
                            // leader_epoch exists from v4; older versions must leave it at its default.
                            let epoch = if version >= 4 { partition.leader_epoch } else { -1 };
                            r.with_offset(offset).with_timestamp(timestamp).with_leader_epoch(epoch)
                        }
                        Ok(None) => r,
                        Err(e) => r.with_error_code(storage_error_code(&e).code()),
                    }
                })
                .collect();
            response.topics.push(ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(partitions));
        }
        response
    })
    .await
}
