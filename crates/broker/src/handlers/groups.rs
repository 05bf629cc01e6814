//! Consumer-group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, OffsetDelete, ListGroups, DescribeGroups, DeleteGroups.
//! Each handler turns the wire message into `tern-group`'s request, runs it through the
//! coordinator driver (`crate::groups`) and turns the answer back into the wire message for the
//! request's version. Fields a version lacks are left at their defaults: kafka-protocol refuses
//! to encode a non-default value in a version that has no such field.

use std::net::SocketAddr;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use tern_group::{self as group, errors, Response};

use super::metadata::{str_bytes, topic_name, GROUP_OPERATIONS};
use crate::cluster::ClusterRuntime;
use crate::log_limit::LogLimiter;
use crate::offsets_topic::OFFSETS_TOPIC;
use crate::Broker;

/// FindCoordinator `key_type`s (Kafka's `CoordinatorType`).
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// Why a transactional client is refused, as it is told.
const NO_TRANSACTIONS: &str = "transactions are not supported by this broker";

/// Refused transactional clients, logged at WARN at most once a second.
static TRANSACTIONAL_REFUSED: LogLimiter = LogLimiter::new();

/// Logs that a transactional client was refused (`what`: the transactional id or request).
pub(crate) fn log_transactional_refusal(what: &str, client_id: &str, peer: SocketAddr) {
    if let Some(suppressed) = TRANSACTIONAL_REFUSED.allow() {
        tracing::warn!(client_id, %peer, suppressed, "{what} refused: {NO_TRANSACTIONS}");
    }
}

fn string(s: &StrBytes) -> String {
    s.as_str().to_string()
}

fn opt_string(s: &Option<StrBytes>) -> Option<String> {
    s.as_ref().map(string)
}

fn opt_str_bytes(s: &Option<String>) -> Option<StrBytes> {
    s.as_deref().map(str_bytes)
}

/// The answer of a coordinator call that was dropped (the broker is shutting down), or of a
/// group whose `__consumer_offsets` partition is offline.
const GONE: i16 = errors::COORDINATOR_NOT_AVAILABLE;

/// A coordinator's (node, host, port), or why there is none (error code, message).
type Located = Result<(BrokerId, StrBytes, i32), (i16, String)>;

pub(crate) async fn find_coordinator(
    broker: &Arc<Broker>,
    request: FindCoordinatorRequest,
    version: i16,
    client_id: &str,
    peer: SocketAddr,
) -> FindCoordinatorResponse {
    // Where a group's coordinator is: this broker, on a single node, while the group's
    // `__consumer_offsets` partition is online; on a cluster node, the leader of that partition.
    let locate: Box<dyn Fn(&str) -> Located + Send> = match broker.cluster() {
        None => {
            let b = broker.clone();
            Box::new(move |group: &str| {
                if b.groups.coordinator_unavailable(group) {
                    return Err((
                        errors::COORDINATOR_NOT_AVAILABLE,
                        "the __consumer_offsets partition of this group is offline".into(),
                    ));
                }
                Ok((BrokerId(b.config.node_id()), str_bytes(&b.config.advertised_host), b.config.advertised_port))
            })
        }
        Some(cluster) => {
            let image = cluster.image();
            if request.key_type == KEY_TYPE_GROUP && image.topic_by_name(OFFSETS_TOPIC).is_none() {
                create_offsets_topic(broker, cluster).await;
            }
            let (b, cluster) = (broker.clone(), cluster.clone());
            Box::new(move |group: &str| {
                let index = b.groups.partition_for(group);
                let unavailable = |why: String| (errors::COORDINATOR_NOT_AVAILABLE, why);
                let topic = image
                    .topic_by_name(OFFSETS_TOPIC)
                    .ok_or_else(|| unavailable(format!("{OFFSETS_TOPIC} is being created")))?;
                let leader = topic.partitions.get(&index).map_or(-1, |p| p.leader);
                cluster
                    .alive_brokers(&image)
                    .into_iter()
                    .find(|a| a.id == leader)
                    .map(|a| (BrokerId(a.id), str_bytes(&a.host), i32::from(a.port)))
                    .ok_or_else(|| unavailable(format!("{OFFSETS_TOPIC}-{index} has no leader")))
            })
        }
    };
    // Transactions are not implemented yet: a transactional id gets
    // TRANSACTIONAL_ID_AUTHORIZATION_FAILED, which the Java client, librdkafka and kafka-python
    // treat as fatal, so `init_transactions()` fails at once with the message instead of
    // retrying until its timeout.
    let find = |key_type: i8, key: &str| match key_type {
        KEY_TYPE_GROUP => locate(key),
        KEY_TYPE_TRANSACTION => {
            log_transactional_refusal(&format!("transactional id {key}"), client_id, peer);
            Err((ResponseError::TransactionalIdAuthorizationFailed.code(), NO_TRANSACTIONS.to_string()))
        }
        other => Err((ResponseError::InvalidRequest.code(), format!("unknown coordinator key type {other}"))),
    };
    let mut response = FindCoordinatorResponse::default();
    if version < 4 {
        match find(request.key_type, request.key.as_str()) {
            Ok((node, host, port)) => {
                response.node_id = node;
                response.host = host;
                response.port = port;
            }
            Err((error, message)) => {
                response.error_code = error;
                response.node_id = BrokerId(-1);
                response.port = -1;
                if version >= 1 {
                    response.error_message = Some(str_bytes(&message));
                }
            }
        }
        return response;
    }
    response.coordinators = request
        .coordinator_keys
        .into_iter()
        .map(|key| {
            let found = find(request.key_type, key.as_str());
            let c = Coordinator::default().with_key(key);
            match found {
                Ok((node, host, port)) => c.with_node_id(node).with_host(host).with_port(port),
                Err((error, message)) => c
                    .with_error_code(error)
                    .with_node_id(BrokerId(-1))
                    .with_port(-1)
                    .with_error_message(Some(str_bytes(&message))),
            }
        })
        .collect();
    response
}

/// Asks the controller for `__consumer_offsets` (Kafka creates it at the first FindCoordinator):
/// `offsets.topic.num.partitions`, `offsets.topic.replication.factor`, compacted. Until it has
/// leaders groups are answered COORDINATOR_NOT_AVAILABLE, which clients retry.
async fn create_offsets_topic(broker: &Broker, cluster: &Arc<ClusterRuntime>) {
    static REFUSED: LogLimiter = LogLimiter::new();
    let config = &broker.config;
    let topic = tern_controller::CreatableTopic {
        name: OFFSETS_TOPIC.to_string(),
        num_partitions: config.offsets_topic_num_partitions(),
        replication_factor: config.get_i64("offsets.topic.replication.factor").unwrap_or(3) as i16,
        assignments: Vec::new(),
        configs: vec![
            ("cleanup.policy".into(), Some("compact".into())),
            ("segment.bytes".into(), Some(config.offsets_topic_segment_bytes().to_string())),
        ],
    };
    let refused = match cluster.client.create_topics(vec![topic], false).await {
        Ok(results) => results
            .into_iter()
            .find(|r| r.error_code != 0 && r.error_code != ResponseError::TopicAlreadyExists.code())
            .map(|r| format!("{}: {}", crate::errors::error_name(r.error_code), r.error_message.unwrap_or_default())),
        Err(e) => Some(e.to_string()),
    };
    match refused {
        None => tracing::info!("created {OFFSETS_TOPIC} through the controller"),
        Some(why) => {
            if let Some(suppressed) = REFUSED.allow() {
                tracing::warn!(
                    suppressed,
                    "cannot create {OFFSETS_TOPIC} (offsets.topic.replication.factor needs that many brokers): {why}"
                );
            }
        }
    }
}

pub(crate) async fn join_group(
    broker: &Arc<Broker>,
    request: JoinGroupRequest,
    version: i16,
    client_id: &str,
    peer: SocketAddr,
) -> JoinGroupResponse {
    let req = group::JoinGroupRequest {
        version,
        group_id: string(&request.group_id.0),
        session_timeout_ms: request.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 { request.rebalance_timeout_ms } else { request.session_timeout_ms },
        member_id: string(&request.member_id),
        group_instance_id: opt_string(&request.group_instance_id),
        protocol_type: string(&request.protocol_type),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| group::JoinProtocol { name: string(&p.name), metadata: p.metadata })
            .collect(),
        client_id: client_id.to_string(),
        client_host: format!("/{}", peer.ip()),
    };
    let member_id = req.member_id.clone();
    let unavailable = broker.groups.coordinator_unavailable(&req.group_id);
    let answer =
        if unavailable { None } else { broker.groups.call(|c, reply, now| c.join_group(req, reply, now)).await };
    let r = match answer {
        Some(Response::JoinGroup(r)) => r,
        _ => group::JoinGroupResponse {
            error_code: GONE,
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            skip_assignment: false,
            member_id,
            members: Vec::new(),
        },
    };
    let mut response = JoinGroupResponse::default()
        .with_error_code(r.error_code)
        .with_generation_id(r.generation_id)
        .with_leader(str_bytes(&r.leader))
        .with_member_id(str_bytes(&r.member_id))
        .with_members(
            r.members
                .into_iter()
                .map(|m| {
                    let member = JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(&m.member_id))
                        .with_metadata(m.metadata);
                    if version >= 5 {
                        member.with_group_instance_id(opt_str_bytes(&m.group_instance_id))
                    } else {
                        member
                    }
                })
                .collect(),
        );
    // v7+ has a nullable protocol name; before, "" stands for none.
    response.protocol_name = match (version >= 7, r.protocol_name) {
        (true, name) => name.as_deref().map(str_bytes),
        (false, name) => Some(str_bytes(name.as_deref().unwrap_or(""))),
    };
    if version >= 7 {
        response.protocol_type = opt_str_bytes(&r.protocol_type);
    }
    if version >= 9 {
        response.skip_assignment = r.skip_assignment;
    }
    response
}

pub(crate) async fn sync_group(broker: &Arc<Broker>, request: SyncGroupRequest, version: i16) -> SyncGroupResponse {
    let req = group::SyncGroupRequest {
        version,
        group_id: string(&request.group_id.0),
        generation_id: request.generation_id,
        member_id: string(&request.member_id),
        group_instance_id: opt_string(&request.group_instance_id),
        protocol_type: opt_string(&request.protocol_type),
        protocol_name: opt_string(&request.protocol_name),
        assignments: request.assignments.into_iter().map(|a| (string(&a.member_id), a.assignment)).collect(),
    };
    let unavailable = broker.groups.coordinator_unavailable(&req.group_id);
    let answer =
        if unavailable { None } else { broker.groups.call(|c, reply, now| c.sync_group(req, reply, now)).await };
    let r = match answer {
        Some(Response::SyncGroup(r)) => r,
        _ => group::SyncGroupResponse {
            error_code: GONE,
            protocol_type: None,
            protocol_name: None,
            assignment: Default::default(),
        },
    };
    let mut response = SyncGroupResponse::default().with_error_code(r.error_code).with_assignment(r.assignment);
    if version >= 5 {
        response.protocol_type = opt_str_bytes(&r.protocol_type);
        response.protocol_name = opt_str_bytes(&r.protocol_name);
    }
    response
}

pub(crate) fn heartbeat(broker: &Arc<Broker>, request: HeartbeatRequest) -> HeartbeatResponse {
    let req = group::HeartbeatRequest {
        group_id: string(&request.group_id.0),
        generation_id: request.generation_id,
        member_id: string(&request.member_id),
        group_instance_id: opt_string(&request.group_instance_id),
    };
    if broker.groups.coordinator_unavailable(&req.group_id) {
        return HeartbeatResponse::default().with_error_code(GONE);
    }
    let r = broker.groups.query(|c, now| c.heartbeat(&req, now));
    HeartbeatResponse::default().with_error_code(r.error_code)
}

pub(crate) async fn leave_group(broker: &Arc<Broker>, request: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let members = if version < 3 {
        vec![group::LeaveMember { member_id: string(&request.member_id), group_instance_id: None }]
    } else {
        request
            .members
            .iter()
            .map(|m| group::LeaveMember {
                member_id: string(&m.member_id),
                group_instance_id: opt_string(&m.group_instance_id),
            })
            .collect()
    };
    let req = group::LeaveGroupRequest { group_id: string(&request.group_id.0), members };
    let unavailable = broker.groups.coordinator_unavailable(&req.group_id);
    let answer =
        if unavailable { None } else { broker.groups.call(|c, reply, now| c.leave_group(req, reply, now)).await };
    let r = match answer {
        Some(Response::LeaveGroup(r)) => r,
        _ => group::LeaveGroupResponse { error_code: GONE, members: Vec::new() },
    };
    if version < 3 {
        return LeaveGroupResponse::default().with_error_code(r.legacy_error_code());
    }
    LeaveGroupResponse::default().with_error_code(r.error_code).with_members(
        r.members
            .into_iter()
            .map(|m| {
                MemberResponse::default()
                    .with_member_id(str_bytes(&m.member_id))
                    .with_group_instance_id(opt_str_bytes(&m.group_instance_id))
                    .with_error_code(m.error_code)
            })
            .collect(),
    )
}

pub(crate) async fn offset_commit(
    broker: &Arc<Broker>,
    request: OffsetCommitRequest,
    version: i16,
) -> OffsetCommitResponse {
    // Partitions that do not exist are answered here, like Kafka; the rest go to the coordinator.
    let exists = |name: &StrBytes, partition: i32| {
        broker.topics.get(name.as_str()).is_some_and(|t| t.partition(partition).is_some())
    };
    let unknown: Vec<(String, i32)> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .filter(|p| !exists(&t.name.0, p.partition_index))
                .map(|p| (string(&t.name.0), p.partition_index))
        })
        .collect();
    let topics: Vec<group::OffsetCommitTopic> = request
        .topics
        .iter()
        .map(|t| group::OffsetCommitTopic {
            name: string(&t.name.0),
            partitions: t
                .partitions
                .iter()
                .filter(|p| exists(&t.name.0, p.partition_index))
                .map(|p| group::OffsetCommitPartition {
                    partition_index: p.partition_index,
                    committed_offset: p.committed_offset,
                    committed_leader_epoch: if version >= 6 { p.committed_leader_epoch } else { -1 },
                    // v1 only: the client's commit time (-1: now).
                    commit_timestamp: if version == 1 { p.commit_timestamp } else { -1 },
                    committed_metadata: opt_string(&p.committed_metadata),
                })
                .collect(),
        })
        .filter(|t| !t.partitions.is_empty())
        .collect();
    let req = group::OffsetCommitRequest {
        version,
        group_id: string(&request.group_id.0),
        generation_id: request.generation_id_or_member_epoch,
        member_id: string(&request.member_id),
        group_instance_id: if version >= 7 { opt_string(&request.group_instance_id) } else { None },
        retention_time_ms: if (2..=4).contains(&version) { request.retention_time_ms } else { -1 },
        topics: topics.clone(),
    };
    let unavailable = broker.groups.coordinator_unavailable(&req.group_id);
    let answer =
        if unavailable { None } else { broker.groups.call(|c, reply, now| c.offset_commit(req, reply, now)).await };
    let r = match answer {
        Some(Response::OffsetCommit(r)) => r,
        _ => group::OffsetCommitResponse {
            topics: topics
                .into_iter()
                .map(|t| group::TopicPartitionErrors {
                    name: t.name,
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| group::PartitionError { partition_index: p.partition_index, error_code: GONE })
                        .collect(),
                })
                .collect(),
        },
    };
    let mut results = r.topics;
    for (name, partition_index) in unknown {
        let error = group::PartitionError { partition_index, error_code: errors::UNKNOWN_TOPIC_OR_PARTITION };
        match results.iter_mut().find(|t| t.name == name) {
            Some(t) => t.partitions.push(error),
            None => results.push(group::TopicPartitionErrors { name, partitions: vec![error] }),
        }
    }
    OffsetCommitResponse::default().with_topics(
        results
            .into_iter()
            .map(|t| {
                OffsetCommitResponseTopic::default().with_name(topic_name(&t.name)).with_partitions(
                    t.partitions
                        .into_iter()
                        .map(|p| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(p.error_code)
                        })
                        .collect(),
                )
            })
            .collect(),
    )
}

fn fetch_one(
    broker: &Arc<Broker>,
    group_id: String,
    topics: Option<Vec<group::TopicPartitions>>,
    require_stable: bool,
) -> group::OffsetFetchResponse {
    if broker.groups.coordinator_unavailable(&group_id) {
        // Versions before 2 have no group-level error: each partition asked for carries it.
        let topics = legacy_group_error(topics.unwrap_or_default(), GONE);
        return group::OffsetFetchResponse { error_code: GONE, topics };
    }
    // A cluster node out of touch with the controller for a session (frozen, cut off) may no
    // longer be the coordinator: its cached offsets may be older than commits the new one took.
    if broker.cluster().is_some_and(|c| !c.in_session()) {
        let topics = legacy_group_error(topics.unwrap_or_default(), errors::NOT_COORDINATOR);
        return group::OffsetFetchResponse { error_code: errors::NOT_COORDINATOR, topics };
    }
    let req = group::OffsetFetchRequest { group_id, topics, require_stable };
    broker.groups.query(|c, _| c.offset_fetch(&req))
}

pub(crate) fn offset_fetch(broker: &Arc<Broker>, request: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    let require_stable = version >= 7 && request.require_stable;
    if version >= 8 {
        let groups = request
            .groups
            .into_iter()
            .map(|g| {
                let topics = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| group::TopicPartitions { name: string(&t.name.0), partitions: t.partition_indexes })
                        .collect()
                });
                let r = fetch_one(broker, string(&g.group_id.0), topics, require_stable);
                OffsetFetchResponseGroup::default().with_group_id(g.group_id).with_error_code(r.error_code).with_topics(
                    r.topics
                        .into_iter()
                        .map(|t| {
                            OffsetFetchResponseTopics::default().with_name(topic_name(&t.name)).with_partitions(
                                t.partitions
                                    .into_iter()
                                    .map(|p| {
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(p.partition_index)
                                            .with_committed_offset(p.committed_offset)
                                            .with_committed_leader_epoch(p.committed_leader_epoch)
                                            .with_metadata(Some(str_bytes(&p.metadata)))
                                            .with_error_code(p.error_code)
                                    })
                                    .collect(),
                            )
                        })
                        .collect(),
                )
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    // v0/v1: a topic list is required; v2+: null asks for every committed partition.
    let topics = request.topics.map(|ts| {
        ts.into_iter()
            .map(|t| group::TopicPartitions { name: string(&t.name.0), partitions: t.partition_indexes })
            .collect()
    });
    let mut r = fetch_one(broker, string(&request.group_id.0), topics.clone(), require_stable);
    if version < 2 && r.error_code != errors::NONE {
        // v0/v1 have no group-level error: Kafka puts it on every requested partition.
        r.topics = legacy_group_error(topics.unwrap_or_default(), r.error_code);
    }
    let mut response = OffsetFetchResponse::default().with_topics(
        r.topics
            .into_iter()
            .map(|t| {
                OffsetFetchResponseTopic::default().with_name(topic_name(&t.name)).with_partitions(
                    t.partitions
                        .into_iter()
                        .map(|p| {
                            let partition = OffsetFetchResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_committed_offset(p.committed_offset)
                                .with_metadata(Some(str_bytes(&p.metadata)))
                                .with_error_code(p.error_code);
                            if version >= 5 {
                                partition.with_committed_leader_epoch(p.committed_leader_epoch)
                            } else {
                                partition
                            }
                        })
                        .collect(),
                )
            })
            .collect(),
    );
    if version >= 2 {
        response.error_code = r.error_code;
    }
    response
}

fn legacy_group_error(topics: Vec<group::TopicPartitions>, error_code: i16) -> Vec<group::OffsetFetchTopic> {
    topics
        .into_iter()
        .map(|t| group::OffsetFetchTopic {
            name: t.name,
            partitions: t
                .partitions
                .into_iter()
                .map(|partition_index| group::OffsetFetchPartition {
                    partition_index,
                    committed_offset: -1,
                    committed_leader_epoch: -1,
                    metadata: String::new(),
                    error_code,
                })
                .collect(),
        })
        .collect()
}

pub(crate) async fn offset_delete(broker: &Arc<Broker>, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let req = group::OffsetDeleteRequest {
        group_id: string(&request.group_id.0),
        topics: request
            .topics
            .iter()
            .map(|t| group::TopicPartitions {
                name: string(&t.name.0),
                partitions: t.partitions.iter().map(|p| p.partition_index).collect(),
            })
            .collect(),
    };
    let unavailable = broker.groups.coordinator_unavailable(&req.group_id);
    let answer =
        if unavailable { None } else { broker.groups.call(|c, reply, now| c.offset_delete(req, reply, now)).await };
    let r = match answer {
        Some(Response::OffsetDelete(r)) => r,
        _ => group::OffsetDeleteResponse { error_code: GONE, topics: Vec::new() },
    };
    OffsetDeleteResponse::default().with_error_code(r.error_code).with_topics(
        r.topics
            .into_iter()
            .map(|t| {
                OffsetDeleteResponseTopic::default().with_name(topic_name(&t.name)).with_partitions(
                    t.partitions
                        .into_iter()
                        .map(|p| {
                            OffsetDeleteResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(p.error_code)
                        })
                        .collect(),
                )
            })
            .collect(),
    )
}

pub(crate) fn list_groups(broker: &Arc<Broker>, request: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let req = group::ListGroupsRequest {
        states_filter: request.states_filter.iter().map(string).collect(),
        types_filter: request.types_filter.iter().map(string).collect(),
    };
    let r = broker.groups.query(|c, _| c.list_groups(&req));
    ListGroupsResponse::default().with_error_code(r.error_code).with_groups(
        r.groups
            .into_iter()
            .map(|g| {
                let mut listed = ListedGroup::default()
                    .with_group_id(GroupId(str_bytes(&g.group_id)))
                    .with_protocol_type(str_bytes(&g.protocol_type));
                if version >= 4 {
                    listed.group_state = str_bytes(&g.group_state);
                }
                if version >= 5 {
                    listed.group_type = str_bytes(&g.group_type);
                }
                listed
            })
            .collect(),
    )
}

pub(crate) fn describe_groups(
    broker: &Arc<Broker>,
    request: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let names: Vec<String> = request.groups.iter().map(|g| string(&g.0)).collect();
    let (offline, online): (Vec<String>, Vec<String>) =
        names.iter().cloned().partition(|g| broker.groups.coordinator_unavailable(g));
    let req = group::DescribeGroupsRequest { version, groups: online };
    let mut described = broker.groups.query(|c, _| c.describe_groups(&req)).groups;
    described.extend(offline.into_iter().map(|group_id| group::DescribedGroup {
        error_code: GONE,
        error_message: Some("the __consumer_offsets partition of this group is offline".into()),
        group_id,
        group_state: String::new(),
        protocol_type: String::new(),
        protocol_data: String::new(),
        members: Vec::new(),
    }));
    // In the order asked for.
    described.sort_by_key(|g| names.iter().position(|n| *n == g.group_id));
    DescribeGroupsResponse::default().with_groups(
        described
            .into_iter()
            .map(|g| {
                let mut described = DescribedGroup::default()
                    .with_error_code(g.error_code)
                    .with_group_id(GroupId(str_bytes(&g.group_id)))
                    .with_group_state(str_bytes(&g.group_state))
                    .with_protocol_type(str_bytes(&g.protocol_type))
                    .with_protocol_data(str_bytes(&g.protocol_data))
                    .with_members(
                        g.members
                            .into_iter()
                            .map(|m| {
                                let member = DescribedGroupMember::default()
                                    .with_member_id(str_bytes(&m.member_id))
                                    .with_client_id(str_bytes(&m.client_id))
                                    .with_client_host(str_bytes(&m.client_host))
                                    .with_member_metadata(m.member_metadata)
                                    .with_member_assignment(m.member_assignment);
                                if version >= 4 {
                                    member.with_group_instance_id(opt_str_bytes(&m.group_instance_id))
                                } else {
                                    member
                                }
                            })
                            .collect(),
                    );
                if version >= 6 {
                    described.error_message = opt_str_bytes(&g.error_message);
                }
                // As Kafka: only for groups described without error.
                if version >= 3 && request.include_authorized_operations && g.error_code == errors::NONE {
                    described.authorized_operations = GROUP_OPERATIONS;
                }
                described
            })
            .collect(),
    )
}

pub(crate) async fn delete_groups(broker: &Arc<Broker>, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let names: Vec<String> = request.groups_names.iter().map(|g| string(&g.0)).collect();
    let (offline, online): (Vec<String>, Vec<String>) =
        names.iter().cloned().partition(|g| broker.groups.coordinator_unavailable(g));
    let gone = |groups: Vec<String>| -> Vec<group::DeleteGroupResult> {
        groups.into_iter().map(|group_id| group::DeleteGroupResult { group_id, error_code: GONE }).collect()
    };
    let mut results = if online.is_empty() {
        Vec::new()
    } else {
        let req = group::DeleteGroupsRequest { groups: online.clone() };
        match broker.groups.call(|c, reply, now| c.delete_groups(req, reply, now)).await {
            Some(Response::DeleteGroups(r)) => r.results,
            _ => gone(online),
        }
    };
    results.extend(gone(offline));
    results.sort_by_key(|g| names.iter().position(|n| *n == g.group_id));
    DeleteGroupsResponse::default().with_results(
        results
            .into_iter()
            .map(|g| {
                DeletableGroupResult::default()
                    .with_group_id(GroupId(str_bytes(&g.group_id)))
                    .with_error_code(g.error_code)
            })
            .collect(),
    )
}
