//! One module per Kafka API. `SUPPORTED` is the single source of truth for ApiVersions.

pub(crate) mod admin;
pub(crate) mod api_versions;
mod cluster_admin;
pub(crate) mod configs;
pub(crate) mod fetch;
pub(crate) mod groups;
pub(crate) mod init_producer_id;
pub(crate) mod list_offsets;
pub(crate) mod metadata;
pub(crate) mod produce;
pub(crate) mod records;

use std::net::SocketAddr;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};

use crate::topics::{Partition, Topic};
use crate::Broker;

/// What the connection loop does after a request.
// One per request, moved once: boxing the large variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Outcome {
    Respond(ResponseKind),
    /// Produce with acks=0 gets no response.
    NoResponse,
    /// Close the connection (e.g. an acks=0 produce failed: the only way to tell the client).
    Close(String),
}

/// The APIs and version ranges Tern implements.
pub(crate) const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    // Kafka 3.9's ranges, and newer where kafka-protocol and the handlers have them (Produce v12).
    // Produce v0-2 with message format v0/v1 and every Fetch v0-3 are answered with errors: Tern
    // neither up- nor down-converts record formats (see produce.rs and fetch.rs).
    (ApiKey::Produce, 0, 12),
    (ApiKey::Fetch, 0, 17),
    (ApiKey::ListOffsets, 0, 9),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 0, 7),
    (ApiKey::DeleteTopics, 0, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::OffsetForLeaderEpoch, 0, 4),
    (ApiKey::DescribeConfigs, 0, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::DescribeQuorum, 0, 1),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 0, 9),
    (ApiKey::OffsetFetch, 0, 9),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::InitProducerId, 0, 5),
];

pub(crate) fn is_supported(key: ApiKey, version: i16) -> bool {
    SUPPORTED.iter().any(|&(k, min, max)| k == key && (min..=max).contains(&version))
}

pub(crate) async fn handle(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    request: RequestKind,
    peer: SocketAddr,
) -> Outcome {
    let v = header.request_api_version;
    let client_id = header.client_id.as_ref().map_or("", |c| c.as_str());
    let response = match request {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions::handle()),
        RequestKind::Metadata(r) => ResponseKind::Metadata(metadata::handle(broker, r, v, client_id).await),
        RequestKind::Produce(r) => {
            return produce::handle(broker, r, v, produce::Client { id: client_id, peer }).await;
        }
        RequestKind::Fetch(r) => ResponseKind::Fetch(fetch::handle(broker, r, v, client_id).await),
        RequestKind::ListOffsets(r) => ResponseKind::ListOffsets(list_offsets::handle(broker, r, v).await),
        RequestKind::CreateTopics(r) => ResponseKind::CreateTopics(admin::create_topics(broker, r, v, client_id).await),
        RequestKind::DeleteTopics(r) => ResponseKind::DeleteTopics(admin::delete_topics(broker, r, v, client_id).await),
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(admin::create_partitions(broker, r, v, client_id).await)
        }
        RequestKind::DescribeCluster(r) => ResponseKind::DescribeCluster(admin::describe_cluster(broker, r)),
        RequestKind::ElectLeaders(r) => ResponseKind::ElectLeaders(admin::elect_leaders(broker, r, v).await),
        RequestKind::DescribeQuorum(r) => ResponseKind::DescribeQuorum(admin::describe_quorum(broker, r).await),
        RequestKind::DescribeConfigs(r) => ResponseKind::DescribeConfigs(configs::describe(broker, r, v)),
        RequestKind::AlterConfigs(r) => ResponseKind::AlterConfigs(configs::alter(broker, r).await),
        RequestKind::IncrementalAlterConfigs(r) => {
            ResponseKind::IncrementalAlterConfigs(configs::incremental_alter(broker, r).await)
        }
        RequestKind::DeleteRecords(r) => ResponseKind::DeleteRecords(records::delete_records(broker, r).await),
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(records::offset_for_leader_epoch(broker, r))
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(groups::find_coordinator(broker, r, v, client_id, peer).await)
        }
        RequestKind::JoinGroup(r) => ResponseKind::JoinGroup(groups::join_group(broker, r, v, client_id, peer).await),
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(groups::sync_group(broker, r, v).await),
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(groups::heartbeat(broker, r)),
        RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(groups::leave_group(broker, r, v).await),
        RequestKind::OffsetCommit(r) => ResponseKind::OffsetCommit(groups::offset_commit(broker, r, v).await),
        RequestKind::OffsetFetch(r) => ResponseKind::OffsetFetch(groups::offset_fetch(broker, r, v)),
        RequestKind::OffsetDelete(r) => ResponseKind::OffsetDelete(groups::offset_delete(broker, r).await),
        RequestKind::ListGroups(r) => ResponseKind::ListGroups(groups::list_groups(broker, r, v)),
        RequestKind::DescribeGroups(r) => ResponseKind::DescribeGroups(groups::describe_groups(broker, r, v)),
        RequestKind::DeleteGroups(r) => ResponseKind::DeleteGroups(groups::delete_groups(broker, r).await),
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(init_producer_id::handle(broker, r, client_id, peer).await)
        }
        other => return Outcome::Close(format!("no handler for {:?}", std::mem::discriminant(&other))),
    };
    Outcome::Respond(response)
}

/// The partition a request names, checked the way every partition-level API checks it:
/// UNKNOWN_TOPIC_OR_PARTITION if it does not exist here, KAFKA_STORAGE_ERROR if its log is
/// offline, then Kafka's check of the client's `current_leader_epoch` (-1: the client does not
/// know it, or the API has none).
pub(crate) fn requested_partition(
    topic: Option<&Arc<Topic>>,
    index: i32,
    current_leader_epoch: i32,
) -> Result<&Arc<Partition>, ResponseError> {
    let partition = topic.and_then(|t| t.partition(index)).ok_or(ResponseError::UnknownTopicOrPartition)?;
    if partition.log.is_deleted() {
        // A request that looked the topic up just before it was deleted.
        Err(ResponseError::UnknownTopicOrPartition)
    } else if partition.offline_reason().is_some() {
        Err(ResponseError::KafkaStorageError)
    } else {
        let current = (current_leader_epoch >= 0).then_some(current_leader_epoch);
        partition
            .check_leader_epoch(current, true)
            .map_err(|code| ResponseError::try_from_code(code).unwrap_or(ResponseError::UnknownServerError))?;
        Ok(partition)
    }
}

/// Runs blocking storage work off the socket-serving tasks.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Cancelled: the runtime is shutting down and this task goes with it.
        Err(_) => std::future::pending().await,
    }
}
