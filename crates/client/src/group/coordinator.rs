//! The group's requests to its coordinator, one function per API, each filling the fields of the
//! negotiated version; and [`Coordinator`], a consumer's own connection to the coordinator.
//!
//! A consumer talks to the coordinator on a dedicated connection (as the Java client does):
//! brokers answer one request per connection at a time, and a JoinGroup can wait for the whole
//! rebalance, which must not hold up fetches to the same broker.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::{TopicPartition, CONSUMER_PROTOCOL_TYPE};
use crate::cluster::{BrokerInfo, Cluster};
use crate::connection::Connection;
use crate::error::{Error, Result};

/// FindCoordinator key type of consumer groups.
const KEY_TYPE_GROUP: i8 = 0;

pub(crate) fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

fn group(id: &str) -> GroupId {
    GroupId(s(id))
}

fn topic(name: &str) -> TopicName {
    TopicName(s(name))
}

fn kafka_error(code: i16, group_id: &str, message: Option<&StrBytes>) -> Option<Error> {
    let message = match message.map(|m| m.as_str()).filter(|m| !m.is_empty()) {
        Some(m) => format!("group {group_id}: {m}"),
        None => format!("group {group_id}"),
    };
    Error::from_code(code, None, None, Some(&message))
}

/// Whether `e` means the coordinator moved or is unreachable: look it up again.
pub(crate) fn coordinator_lost(e: &Error) -> bool {
    match e.kafka_code() {
        Some(code) => matches!(
            code,
            ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable | ResponseError::RequestTimedOut
        ),
        None => {
            matches!(e, Error::Io { .. } | Error::ConnectionClosed { .. } | Error::Timeout { .. } | Error::NoBroker(_))
        }
    }
}

/// Looks up the coordinator of `group_id` (FindCoordinator, key type 0).
pub(crate) async fn find_coordinator(cluster: &Cluster, group_id: &str) -> Result<BrokerInfo> {
    let conn = cluster.any_connection().await?;
    let version = conn.version_of::<FindCoordinatorRequest>()?;
    let req = if version >= 4 {
        FindCoordinatorRequest::default().with_key_type(KEY_TYPE_GROUP).with_coordinator_keys(vec![s(group_id)])
    } else {
        FindCoordinatorRequest::default().with_key_type(KEY_TYPE_GROUP).with_key(s(group_id))
    };
    let resp = conn.enqueue(&req, version)?.wait().await?;
    let (code, message, id, host, port) = if version >= 4 {
        let c = resp
            .coordinators
            .into_iter()
            .find(|c| c.key.as_str() == group_id)
            .ok_or_else(|| Error::Protocol(format!("FindCoordinator response lacks group {group_id}")))?;
        (c.error_code, c.error_message, c.node_id, c.host, c.port)
    } else {
        (resp.error_code, resp.error_message, resp.node_id, resp.host, resp.port)
    };
    if let Some(e) = kafka_error(code, group_id, message.as_ref()) {
        return Err(e);
    }
    Ok(BrokerInfo { id: id.0, host: host.to_string(), port, rack: None })
}

/// A connection to the coordinator of `group_id` for one-off admin requests: the cluster's
/// connection to that broker when it is in metadata, else a new one.
pub(crate) async fn admin_connection(cluster: &Cluster, group_id: &str) -> Result<Connection> {
    let info = find_coordinator(cluster, group_id).await?;
    let known = cluster.with_metadata(|m| m.brokers.get(&info.id).map(|b| b.addr() == info.addr()));
    if known == Some(true) {
        return cluster.broker(info.id).await;
    }
    let config = cluster.config();
    Connection::connect(&info.addr(), &config.client_id, config.request_timeout).await
}

/// A consumer's connection to its group coordinator, found on first use and again after
/// [`Coordinator::mark_unknown`].
pub(crate) struct Coordinator {
    cluster: Arc<Cluster>,
    group_id: String,
    conn: tokio::sync::Mutex<Option<Connection>>,
}

impl Coordinator {
    pub fn new(cluster: Arc<Cluster>, group_id: String) -> Self {
        Coordinator { cluster, group_id, conn: tokio::sync::Mutex::new(None) }
    }

    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    pub async fn connection(&self) -> Result<Connection> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref().filter(|c| c.is_alive()) {
            return Ok(c.clone());
        }
        let info = find_coordinator(&self.cluster, &self.group_id).await?;
        let config = self.cluster.config();
        let c = Connection::connect(&info.addr(), &config.client_id, config.request_timeout).await?;
        tracing::debug!(group = %self.group_id, coordinator = %info.addr(), "found group coordinator");
        *conn = Some(c.clone());
        Ok(c)
    }

    /// Forgets the connection; the next request looks the coordinator up again.
    pub async fn mark_unknown(&self) {
        *self.conn.lock().await = None;
    }
}

/// What a member says about itself in JoinGroup.
pub(crate) struct JoinParams {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    /// (assignor name, subscription bytes), most preferred first.
    pub protocols: Vec<(String, Bytes)>,
    pub reason: Option<String>,
}

fn millis(d: Duration) -> i32 {
    d.as_millis().min(i32::MAX as u128) as i32
}

/// Static membership needs JoinGroup v5, SyncGroup and Heartbeat v3, OffsetCommit v7.
fn check_static(conn: &Connection, api: ApiKey, version: i16, min: i16, instance: &Option<String>) -> Result<()> {
    if instance.is_some() && version < min {
        return Err(Error::UnsupportedVersion {
            api,
            broker: format!("{} (group.instance.id needs v{min})", conn.addr()),
        });
    }
    Ok(())
}

pub(crate) async fn join_group(conn: &Connection, p: &JoinParams) -> Result<JoinGroupResponse> {
    let version = conn.version_of::<JoinGroupRequest>()?;
    check_static(conn, ApiKey::JoinGroup, version, 5, &p.group_instance_id)?;
    let mut req = JoinGroupRequest::default()
        .with_group_id(group(&p.group_id))
        .with_session_timeout_ms(millis(p.session_timeout))
        .with_member_id(s(&p.member_id))
        .with_protocol_type(s(CONSUMER_PROTOCOL_TYPE))
        .with_protocols(
            p.protocols
                .iter()
                .map(|(name, metadata)| {
                    JoinGroupRequestProtocol::default().with_name(s(name)).with_metadata(metadata.clone())
                })
                .collect(),
        );
    if version >= 1 {
        req = req.with_rebalance_timeout_ms(millis(p.rebalance_timeout));
    }
    if version >= 5 {
        req = req.with_group_instance_id(p.group_instance_id.as_deref().map(s));
    }
    if version >= 8 {
        req = req.with_reason(p.reason.as_deref().map(s));
    }
    // The coordinator answers once every member rejoined or the rebalance timed out.
    let timeout = p.rebalance_timeout.max(p.session_timeout) + Duration::from_secs(5);
    conn.enqueue(&req, version)?.with_timeout(timeout).wait().await
}

pub(crate) struct SyncParams<'a> {
    pub group_id: &'a str,
    pub generation: i32,
    pub member_id: &'a str,
    pub group_instance_id: &'a Option<String>,
    pub protocol_name: &'a str,
    /// Empty unless this member leads.
    pub assignments: Vec<(String, Bytes)>,
    pub timeout: Duration,
}

pub(crate) async fn sync_group(conn: &Connection, p: SyncParams<'_>) -> Result<SyncGroupResponse> {
    let version = conn.version_of::<SyncGroupRequest>()?;
    check_static(conn, ApiKey::SyncGroup, version, 3, p.group_instance_id)?;
    let mut req = SyncGroupRequest::default()
        .with_group_id(group(p.group_id))
        .with_generation_id(p.generation)
        .with_member_id(s(p.member_id))
        .with_assignments(
            p.assignments
                .into_iter()
                .map(|(m, a)| SyncGroupRequestAssignment::default().with_member_id(s(&m)).with_assignment(a))
                .collect(),
        );
    if version >= 3 {
        req = req.with_group_instance_id(p.group_instance_id.as_deref().map(s));
    }
    if version >= 5 {
        req = req.with_protocol_type(Some(s(CONSUMER_PROTOCOL_TYPE))).with_protocol_name(Some(s(p.protocol_name)));
    }
    // A follower's SyncGroup waits for the leader's.
    conn.enqueue(&req, version)?.with_timeout(p.timeout).wait().await
}

/// Sends one heartbeat; returns the response's error code.
pub(crate) async fn heartbeat(
    conn: &Connection,
    group_id: &str,
    generation: i32,
    member_id: &str,
    group_instance_id: &Option<String>,
) -> Result<i16> {
    let version = conn.version_of::<HeartbeatRequest>()?;
    check_static(conn, ApiKey::Heartbeat, version, 3, group_instance_id)?;
    let mut req = HeartbeatRequest::default()
        .with_group_id(group(group_id))
        .with_generation_id(generation)
        .with_member_id(s(member_id));
    if version >= 3 {
        req = req.with_group_instance_id(group_instance_id.as_deref().map(s));
    }
    Ok(conn.enqueue(&req, version)?.wait().await?.error_code)
}

pub(crate) async fn leave_group(
    conn: &Connection,
    group_id: &str,
    member_id: &str,
    group_instance_id: &Option<String>,
    reason: &str,
) -> Result<()> {
    let version = conn.version_of::<LeaveGroupRequest>()?;
    let req = if version >= 3 {
        let mut member = MemberIdentity::default()
            .with_member_id(s(member_id))
            .with_group_instance_id(group_instance_id.as_deref().map(s));
        if version >= 5 {
            member = member.with_reason(Some(s(reason)));
        }
        LeaveGroupRequest::default().with_group_id(group(group_id)).with_members(vec![member])
    } else {
        LeaveGroupRequest::default().with_group_id(group(group_id)).with_member_id(s(member_id))
    };
    let resp = conn.enqueue(&req, version)?.wait().await?;
    let code = match resp.members.first() {
        Some(m) if resp.error_code == 0 => m.error_code,
        _ => resp.error_code,
    };
    match kafka_error(code, group_id, None) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The member an OffsetCommit is made as: `generation` -1 with an empty member id commits for a
/// group without active members (how admin tools reset offsets).
pub(crate) struct CommitAs<'a> {
    pub generation: i32,
    pub member_id: &'a str,
    pub group_instance_id: &'a Option<String>,
}

/// Commits `offsets`; returns each partition's error code (0 = committed).
pub(crate) async fn commit_offsets(
    conn: &Connection,
    group_id: &str,
    who: CommitAs<'_>,
    offsets: &[(TopicPartition, i64)],
) -> Result<Vec<(TopicPartition, i16)>> {
    let version = conn.version_of::<OffsetCommitRequest>()?;
    check_static(conn, ApiKey::OffsetCommit, version, 7, who.group_instance_id)?;
    let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for (tp, offset) in offsets {
        topics.entry(&tp.topic).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(tp.partition)
                .with_committed_offset(*offset)
                .with_committed_metadata(Some(StrBytes::default())),
        );
    }
    let mut req = OffsetCommitRequest::default()
        .with_group_id(group(group_id))
        .with_generation_id_or_member_epoch(who.generation)
        .with_member_id(s(who.member_id))
        .with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| OffsetCommitRequestTopic::default().with_name(topic(t)).with_partitions(ps))
                .collect(),
        );
    if version >= 7 {
        req = req.with_group_instance_id(who.group_instance_id.as_deref().map(s));
    }
    let resp = conn.enqueue(&req, version)?.wait().await?;
    let mut out = Vec::with_capacity(offsets.len());
    for t in resp.topics {
        for p in t.partitions {
            out.push((TopicPartition::new(t.name.0.as_str(), p.partition_index), p.error_code));
        }
    }
    Ok(out)
}

/// Fetches committed offsets of `partitions` (`None`: every partition with a committed offset).
/// Partitions without one are absent from the result.
pub(crate) async fn fetch_offsets(
    conn: &Connection,
    group_id: &str,
    partitions: Option<&[TopicPartition]>,
) -> Result<BTreeMap<TopicPartition, i64>> {
    let version = conn.version_of::<OffsetFetchRequest>()?;
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in partitions.unwrap_or_default() {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    let req = if version >= 8 {
        let topics = partitions.map(|_| {
            by_topic
                .iter()
                .map(|(t, ps)| {
                    OffsetFetchRequestTopics::default().with_name(topic(t)).with_partition_indexes(ps.clone())
                })
                .collect()
        });
        OffsetFetchRequest::default()
            .with_groups(vec![OffsetFetchRequestGroup::default().with_group_id(group(group_id)).with_topics(topics)])
            .with_require_stable(true)
    } else {
        if partitions.is_none() && version < 2 {
            return Err(Error::UnsupportedVersion {
                api: ApiKey::OffsetFetch,
                broker: format!("{} (all partitions needs v2)", conn.addr()),
            });
        }
        let topics = partitions.map(|_| {
            by_topic
                .iter()
                .map(|(t, ps)| {
                    OffsetFetchRequestTopic::default().with_name(topic(t)).with_partition_indexes(ps.clone())
                })
                .collect()
        });
        let req = OffsetFetchRequest::default().with_group_id(group(group_id)).with_topics(topics);
        if version >= 7 {
            req.with_require_stable(true)
        } else {
            req
        }
    };
    let resp = conn.enqueue(&req, version)?.wait().await?;
    let mut out = BTreeMap::new();
    let mut add = |t: &TopicName, p: i32, offset: i64, code: i16| -> Result<()> {
        if let Some(e) = Error::from_code(code, Some(t.0.as_str()), Some(p), None) {
            return Err(e);
        }
        if offset >= 0 {
            out.insert(TopicPartition::new(t.0.as_str(), p), offset);
        }
        Ok(())
    };
    if version >= 8 {
        let g = resp
            .groups
            .into_iter()
            .find(|g| g.group_id.0.as_str() == group_id)
            .ok_or_else(|| Error::Protocol(format!("OffsetFetch response lacks group {group_id}")))?;
        if let Some(e) = kafka_error(g.error_code, group_id, None) {
            return Err(e);
        }
        for t in &g.topics {
            for p in &t.partitions {
                add(&t.name, p.partition_index, p.committed_offset, p.error_code)?;
            }
        }
    } else {
        if let Some(e) = kafka_error(resp.error_code, group_id, None) {
            return Err(e);
        }
        for t in &resp.topics {
            for p in &t.partitions {
                add(&t.name, p.partition_index, p.committed_offset, p.error_code)?;
            }
        }
    }
    Ok(out)
}
