//! Admin operations: topics, configs, partitions, offsets, records, cluster, consumer groups.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::offset_delete_request::{OffsetDeleteRequestPartition, OffsetDeleteRequestTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use crate::cluster::{BrokerInfo, Cluster, ClusterConfig, TopicInfo};
use crate::consumer::{list_offsets, OffsetSpec};
use crate::error::{Error, Result};
use crate::group::coordinator::{self as group_requests, admin_connection, CommitAs};
use crate::group::metadata::{decode_assignment, decode_subscription};
use crate::group::{TopicPartition, CONSUMER_PROTOCOL_TYPE};

const RESOURCE_TOPIC: i8 = 2;
/// Pause between retries of retriable group errors (e.g. COORDINATOR_LOAD_IN_PROGRESS).
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// One topic config entry as described by the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    /// Kafka's ConfigSource: 1 dynamic topic, 4 static broker, 5 default, ...
    pub source: i8,
    pub is_default: bool,
    pub read_only: bool,
    pub sensitive: bool,
}

/// An incremental config change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOp {
    Set(String, String),
    Delete(String),
}

/// The controller quorum from DescribeQuorum: `leader_id` -1 while there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumDescription {
    pub leader_id: i32,
    pub leader_epoch: i32,
    pub high_watermark: i64,
    /// (voter id, log end offset; -1 where the answering voter does not know it).
    pub voters: Vec<(i32, i64)>,
}

/// Cluster description from DescribeCluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    pub cluster_id: String,
    pub controller_id: i32,
    pub brokers: Vec<BrokerInfo>,
}

/// A group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    /// `consumer` for consumer groups; empty for groups that only store offsets.
    pub protocol_type: String,
    /// `Stable`, `Empty`, `PreparingRebalance`, ...; `None` from brokers before ListGroups v4.
    pub state: Option<String>,
}

/// A group member as DescribeGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    /// Subscribed topics (consumer groups only).
    pub subscription: Vec<String>,
    /// Assigned partitions (consumer groups only).
    pub assignment: Vec<TopicPartition>,
}

/// A group as DescribeGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    /// `Dead` for a group that does not exist.
    pub state: String,
    pub protocol_type: String,
    /// The assignment strategy of consumer groups, e.g. `range`.
    pub protocol: String,
    pub members: Vec<MemberDescription>,
    pub coordinator: BrokerInfo,
}

/// One row of [`Admin::group_lag`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset, if any.
    pub committed: Option<i64>,
    /// `None` when the partition's end offset could not be listed (e.g. its topic is gone).
    pub log_end_offset: Option<i64>,
    /// Log end offset minus committed offset, when both are known.
    pub lag: Option<i64>,
    /// The member the partition is assigned to, if any.
    pub member: Option<LagMember>,
}

/// The member of a [`PartitionLag`] row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LagMember {
    pub member_id: String,
    pub host: String,
    pub client_id: String,
}

/// Committed offsets against log end offsets for every partition a group commits to or is
/// assigned, like `kafka-consumer-groups.sh --describe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupLag {
    pub group_id: String,
    pub state: String,
    pub members: usize,
    /// Sorted by topic and partition.
    pub partitions: Vec<PartitionLag>,
}

impl GroupLag {
    /// The sum of the known lags.
    pub fn total_lag(&self) -> i64 {
        self.partitions.iter().filter_map(|p| p.lag).sum()
    }
}

/// Admin client.
#[derive(Debug, Clone)]
pub struct Admin {
    cluster: Arc<Cluster>,
    timeout: Duration,
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_owned()))
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

fn check(code: i16, topic: &str, partition: Option<i32>, msg: &Option<StrBytes>) -> Result<()> {
    match Error::from_code(code, Some(topic), partition, msg.as_ref().map(|m| m.as_str())) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

impl Admin {
    /// Connects to `bootstrap` (comma-separated `host:port`).
    pub async fn new(bootstrap: &str) -> Result<Self> {
        Self::with_config(ClusterConfig {
            bootstrap: bootstrap.to_owned(),
            client_id: "tern-admin".into(),
            request_timeout: Duration::from_secs(30),
        })
        .await
    }

    /// Connects with explicit settings.
    pub async fn with_config(config: ClusterConfig) -> Result<Self> {
        let timeout = config.request_timeout;
        Ok(Admin { cluster: Cluster::connect(config).await?, timeout })
    }

    /// The underlying cluster handle.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    fn timeout_ms(&self) -> i32 {
        self.timeout.as_millis().min(i32::MAX as u128) as i32
    }

    /// Creates a topic; returns its id (nil if the broker does not report one).
    /// `partitions`/`replication_factor` of -1 use the broker defaults.
    pub async fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &HashMap<String, String>,
        validate_only: bool,
    ) -> Result<Uuid> {
        let t = CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| CreatableTopicConfig::default().with_name(s(k)).with_value(Some(s(v))))
                    .collect(),
            );
        let req = CreateTopicsRequest::default()
            .with_topics(vec![t])
            .with_timeout_ms(self.timeout_ms())
            .with_validate_only(validate_only);
        let resp = self.cluster.controller().await?.send(&req).await?;
        let r = resp
            .topics
            .iter()
            .find(|r| r.name.0.as_str() == topic)
            .ok_or_else(|| Error::Protocol(format!("CreateTopics response lacks {topic}")))?;
        check(r.error_code, topic, None, &r.error_message)?;
        Ok(r.topic_id)
    }

    /// Deletes topics by name.
    pub async fn delete_topics(&self, topics: &[&str]) -> Result<()> {
        let conn = self.cluster.controller().await?;
        let version = conn.version_of::<DeleteTopicsRequest>()?;
        // v6 names topics in `topics`, older versions in `topic_names`; the other must stay empty.
        let req = if version >= 6 {
            DeleteTopicsRequest::default()
                .with_topics(topics.iter().map(|t| DeleteTopicState::default().with_name(Some(name(t)))).collect())
        } else {
            DeleteTopicsRequest::default().with_topic_names(topics.iter().map(|t| name(t)).collect())
        }
        .with_timeout_ms(self.timeout_ms());
        let resp = conn.enqueue(&req, version)?.wait().await?;
        for r in &resp.responses {
            let n = r.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
            check(r.error_code, &n, None, &r.error_message)?;
        }
        Ok(())
    }

    /// All topics with partitions, leaders, replicas, ISR and ids.
    pub async fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        self.cluster.refresh_metadata(None).await?;
        let mut v: Vec<TopicInfo> = self.cluster.with_metadata(|m| m.topics.values().map(|t| (**t).clone()).collect());
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// The named topics; an unknown topic is an UNKNOWN_TOPIC_OR_PARTITION error.
    pub async fn describe_topics(&self, topics: &[&str]) -> Result<Vec<TopicInfo>> {
        let names: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        let resp = self.cluster.refresh_metadata(Some(&names)).await?;
        for t in &resp.topics {
            let n = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
            check(t.error_code, &n, None, &None)?;
        }
        names
            .iter()
            .map(|n| {
                self.cluster
                    .topic(n)
                    .map(|t| (*t).clone())
                    .ok_or_else(|| Error::from_code(3, Some(n), None, None).expect("non-zero"))
            })
            .collect()
    }

    /// The configs of a topic.
    pub async fn describe_configs(&self, topic: &str) -> Result<Vec<ConfigEntry>> {
        let req = DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(s(topic))
            .with_configuration_keys(None)]);
        let resp = self.cluster.any_connection().await?.send(&req).await?;
        let r = resp
            .results
            .into_iter()
            .find(|r| r.resource_name.as_str() == topic)
            .ok_or_else(|| Error::Protocol(format!("DescribeConfigs response lacks {topic}")))?;
        check(r.error_code, topic, None, &r.error_message)?;
        Ok(r.configs
            .into_iter()
            .map(|c| ConfigEntry {
                name: c.name.to_string(),
                value: c.value.map(|v| v.to_string()),
                source: c.config_source,
                is_default: c.config_source == 5,
                read_only: c.read_only,
                sensitive: c.is_sensitive,
            })
            .collect())
    }

    /// Sets or deletes topic configs (IncrementalAlterConfigs).
    pub async fn alter_configs(&self, topic: &str, ops: &[ConfigOp], validate_only: bool) -> Result<()> {
        let configs = ops
            .iter()
            .map(|op| match op {
                ConfigOp::Set(k, v) => {
                    AlterableConfig::default().with_name(s(k)).with_config_operation(0).with_value(Some(s(v)))
                }
                ConfigOp::Delete(k) => {
                    AlterableConfig::default().with_name(s(k)).with_config_operation(1).with_value(None)
                }
            })
            .collect();
        let req = IncrementalAlterConfigsRequest::default()
            .with_resources(vec![AlterConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(s(topic))
                .with_configs(configs)])
            .with_validate_only(validate_only);
        let resp = self.cluster.controller().await?.send(&req).await?;
        for r in &resp.responses {
            check(r.error_code, topic, None, &r.error_message)?;
        }
        Ok(())
    }

    /// Grows a topic to `new_total` partitions.
    pub async fn create_partitions(&self, topic: &str, new_total: i32, validate_only: bool) -> Result<()> {
        let req = CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(name(topic))
                .with_count(new_total)
                .with_assignments(None)])
            .with_timeout_ms(self.timeout_ms())
            .with_validate_only(validate_only);
        let resp = self.cluster.controller().await?.send(&req).await?;
        for r in &resp.results {
            check(r.error_code, topic, None, &r.error_message)?;
        }
        Ok(())
    }

    /// Offset and timestamp for `spec` (-1 timestamp when the broker does not give one).
    pub async fn list_offsets(&self, topic: &str, partition: i32, spec: OffsetSpec) -> Result<(i64, i64)> {
        let ts = match spec.list_offsets_timestamp() {
            Some(ts) => ts,
            None => return Err(Error::Config("list_offsets needs earliest, latest or a timestamp".into())),
        };
        let mut r = list_offsets(&self.cluster, vec![(topic.to_owned(), partition, ts)], 0).await?;
        r.pop().map(|(_, _, r)| r).unwrap_or_else(|| Err(Error::Protocol("empty ListOffsets result".into())))
    }

    /// Deletes records before `before_offset` (-1 = high watermark); returns the new low watermark.
    pub async fn delete_records(&self, topic: &str, partition: i32, before_offset: i64) -> Result<i64> {
        let mut leader = self.cluster.topic(topic).and_then(|t| t.leader(partition));
        if leader.is_none() {
            self.cluster.refresh_metadata(Some(&[topic.to_owned()])).await?;
            leader = self.cluster.topic(topic).and_then(|t| t.leader(partition));
        }
        let leader =
            leader.ok_or_else(|| Error::from_code(3, Some(topic), Some(partition), None).expect("non-zero"))?;
        let req = DeleteRecordsRequest::default()
            .with_topics(vec![DeleteRecordsTopic::default().with_name(name(topic)).with_partitions(vec![
                DeleteRecordsPartition::default().with_partition_index(partition).with_offset(before_offset),
            ])])
            .with_timeout_ms(self.timeout_ms());
        let resp = self.cluster.broker(leader).await?.send(&req).await?;
        let p = resp
            .topics
            .iter()
            .filter(|t| t.name.0.as_str() == topic)
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition_index == partition)
            .ok_or_else(|| Error::Protocol(format!("DeleteRecords response lacks {topic}-{partition}")))?;
        check(p.error_code, topic, Some(partition), &None)?;
        Ok(p.low_watermark)
    }

    /// Cluster id, controller and brokers.
    pub async fn describe_cluster(&self) -> Result<ClusterDescription> {
        let resp = self.cluster.any_connection().await?.send(&DescribeClusterRequest::default()).await?;
        if let Some(e) = Error::from_code(resp.error_code, None, None, resp.error_message.as_ref().map(|m| m.as_str()))
        {
            return Err(e);
        }
        Ok(ClusterDescription {
            cluster_id: resp.cluster_id.to_string(),
            controller_id: resp.controller_id.0,
            brokers: resp
                .brokers
                .iter()
                .map(|b| BrokerInfo {
                    id: b.broker_id.0,
                    host: b.host.to_string(),
                    port: b.port,
                    rack: b.rack.as_ref().map(|r| r.to_string()),
                })
                .collect(),
        })
    }

    /// ElectLeaders (v1+: `unclean` false is a preferred election): `partitions` of `None`
    /// asks for every partition, and the answer then leaves out those that need no election.
    /// Returns (topic, partition, error code) per partition answered; 0 is elected, 84
    /// (ELECTION_NOT_NEEDED) means the right leader was already there.
    pub async fn elect_leaders(
        &self,
        unclean: bool,
        partitions: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<Vec<(String, i32, i16)>> {
        use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
        let topic_partitions = partitions.map(|topics| {
            topics
                .into_iter()
                .map(|(t, ps)| {
                    TopicPartitions::default().with_topic(TopicName(StrBytes::from_string(t))).with_partitions(ps)
                })
                .collect()
        });
        let request = ElectLeadersRequest::default()
            .with_election_type(i8::from(unclean))
            .with_topic_partitions(topic_partitions)
            .with_timeout_ms(30_000);
        let resp = self.cluster.controller().await?.send(&request).await?;
        if let Some(e) = Error::from_code(resp.error_code, None, None, None) {
            return Err(e);
        }
        Ok(resp
            .replica_election_results
            .iter()
            .flat_map(|r| r.partition_result.iter().map(|p| (r.topic.0.to_string(), p.partition_id, p.error_code)))
            .collect())
    }

    /// DescribeQuorum of the metadata log (`__cluster_metadata` partition 0), asked of any
    /// broker: the active controller and the voters, as that broker sees them.
    pub async fn describe_quorum(&self) -> Result<QuorumDescription> {
        use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
        let request = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
            .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
            .with_partitions(vec![PartitionData::default().with_partition_index(0)])]);
        let resp = self.cluster.any_connection().await?.send(&request).await?;
        let message = resp.error_message.as_ref().map(|m| m.as_str());
        if let Some(e) = Error::from_code(resp.error_code, None, None, message) {
            return Err(e);
        }
        let Some(p) = resp.topics.first().and_then(|t| t.partitions.first()) else {
            return Err(Error::Protocol("DescribeQuorum answered no partition".into()));
        };
        if let Some(e) = Error::from_code(p.error_code, None, None, p.error_message.as_ref().map(|m| m.as_str())) {
            return Err(e);
        }
        Ok(QuorumDescription {
            leader_id: p.leader_id.0,
            leader_epoch: p.leader_epoch,
            high_watermark: p.high_watermark,
            voters: p.current_voters.iter().map(|v| (v.replica_id.0, v.log_end_offset)).collect(),
        })
    }

    /// Runs `attempt` until it succeeds, fails with a non-retriable error, or the timeout passes.
    async fn retrying<T, F, Fut>(&self, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let deadline = Instant::now() + self.timeout;
        loop {
            match attempt().await {
                Err(e) if e.is_retriable() && Instant::now() + RETRY_BACKOFF < deadline => {
                    tracing::debug!(error = %e, "retrying group request");
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
                r => return r,
            }
        }
    }

    /// Groups on every broker, sorted by id; `states` (e.g. `Stable`, `Empty`) filters, all
    /// when empty.
    pub async fn list_groups(&self, states: &[&str]) -> Result<Vec<GroupListing>> {
        self.cluster.refresh_metadata(Some(&[])).await?;
        let brokers: BTreeSet<i32> = self.cluster.with_metadata(|m| m.brokers.keys().copied().collect());
        let mut groups: BTreeMap<String, GroupListing> = BTreeMap::new();
        let mut need_states = false;
        for id in brokers {
            let conn = self.cluster.broker(id).await?;
            let version = conn.version_of::<ListGroupsRequest>()?;
            let mut req = ListGroupsRequest::default();
            if version >= 4 {
                req = req.with_states_filter(states.iter().map(|st| s(st)).collect());
            } else {
                need_states = !states.is_empty();
            }
            let resp = self.retrying(|| async { conn.enqueue(&req, version)?.wait().await }).await?;
            if let Some(e) = Error::from_code(resp.error_code, None, None, None) {
                return Err(e);
            }
            for g in resp.groups {
                let listing = GroupListing {
                    group_id: g.group_id.0.to_string(),
                    protocol_type: g.protocol_type.to_string(),
                    state: Some(g.group_state.to_string()).filter(|st| version >= 4 && !st.is_empty()),
                };
                groups.insert(listing.group_id.clone(), listing);
            }
        }
        let mut out: Vec<GroupListing> = groups.into_values().collect();
        if need_states {
            // Old brokers cannot filter by state: ask each group for it.
            let ids: Vec<&str> = out.iter().map(|g| g.group_id.as_str()).collect();
            let described = self.describe_groups(&ids).await?;
            for (g, d) in out.iter_mut().zip(described) {
                g.state = Some(d.state);
            }
            out.retain(|g| g.state.as_deref().is_some_and(|st| states.iter().any(|w| w.eq_ignore_ascii_case(st))));
        }
        Ok(out)
    }

    /// State, protocol and members of each group, in the order asked. A group that does not
    /// exist is reported in state `Dead` (or fails with GROUP_ID_NOT_FOUND, depending on the broker).
    pub async fn describe_groups(&self, groups: &[&str]) -> Result<Vec<GroupDescription>> {
        let mut out = Vec::with_capacity(groups.len());
        for &group_id in groups {
            let (conn, resp) = self
                .retrying(|| async {
                    let conn = admin_connection(&self.cluster, group_id).await?;
                    let req = DescribeGroupsRequest::default().with_groups(vec![GroupId(s(group_id))]);
                    let resp = conn.send(&req).await?;
                    if let Some(g) = resp.groups.iter().find(|g| g.group_id.0.as_str() == group_id) {
                        let msg = g.error_message.as_ref().map(|m| format!("group {group_id}: {m}"));
                        let msg = msg.unwrap_or_else(|| format!("group {group_id}"));
                        if let Some(e) = Error::from_code(g.error_code, None, None, Some(&msg)) {
                            return Err(e);
                        }
                    }
                    Ok((conn, resp))
                })
                .await?;
            let g = resp
                .groups
                .into_iter()
                .find(|g| g.group_id.0.as_str() == group_id)
                .ok_or_else(|| Error::Protocol(format!("DescribeGroups response lacks group {group_id}")))?;
            let consumer = g.protocol_type.as_str() == CONSUMER_PROTOCOL_TYPE;
            let members = g
                .members
                .into_iter()
                .map(|m| {
                    let (subscription, assignment) = if consumer {
                        let sub = decode_subscription(m.member_metadata.clone()).map(|s| s.topics).unwrap_or_default();
                        (sub, decode_assignment(m.member_assignment.clone()).unwrap_or_default())
                    } else {
                        (Vec::new(), Vec::new())
                    };
                    MemberDescription {
                        member_id: m.member_id.to_string(),
                        group_instance_id: m.group_instance_id.map(|i| i.to_string()),
                        client_id: m.client_id.to_string(),
                        host: m.client_host.to_string(),
                        subscription,
                        assignment,
                    }
                })
                .collect();
            let coordinator = self
                .cluster
                .with_metadata(|md| md.brokers.values().find(|b| b.addr() == conn.addr()).cloned())
                .unwrap_or_else(|| {
                    let (host, port) = conn.addr().rsplit_once(':').unwrap_or((conn.addr(), "0"));
                    BrokerInfo { id: -1, host: host.to_owned(), port: port.parse().unwrap_or(0), rack: None }
                });
            out.push(GroupDescription {
                group_id: group_id.to_owned(),
                state: g.group_state.to_string(),
                protocol_type: g.protocol_type.to_string(),
                protocol: g.protocol_data.to_string(),
                members,
                coordinator,
            });
        }
        Ok(out)
    }

    /// Deletes groups (they must have no members); the outcome per group, in the order asked.
    pub async fn delete_groups(&self, groups: &[&str]) -> Result<Vec<(String, Result<()>)>> {
        let mut out = Vec::with_capacity(groups.len());
        for &group_id in groups {
            let r = self
                .retrying(|| async {
                    let conn = admin_connection(&self.cluster, group_id).await?;
                    let req = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(group_id))]);
                    let resp = conn.send(&req).await?;
                    let code = resp
                        .results
                        .iter()
                        .find(|r| r.group_id.0.as_str() == group_id)
                        .map(|r| r.error_code)
                        .ok_or_else(|| Error::Protocol(format!("DeleteGroups response lacks group {group_id}")))?;
                    let msg = format!("group {group_id}");
                    Error::from_code(code, None, None, Some(&msg)).map_or(Ok(()), Err)
                })
                .await;
            match r {
                // Connection-level failures are not about one group.
                Err(e) if e.kafka_code().is_none() => return Err(e),
                r => out.push((group_id.to_owned(), r)),
            }
        }
        Ok(out)
    }

    /// The group's committed offsets, all partitions.
    pub async fn list_group_offsets(&self, group_id: &str) -> Result<BTreeMap<TopicPartition, i64>> {
        self.retrying(|| async {
            let conn = admin_connection(&self.cluster, group_id).await?;
            group_requests::fetch_offsets(&conn, group_id, None).await
        })
        .await
    }

    /// Sets committed offsets of a group without active members (Kafka accepts an OffsetCommit
    /// with generation -1 and no member id only then; otherwise UNKNOWN_MEMBER_ID).
    pub async fn alter_group_offsets(&self, group_id: &str, offsets: &[(TopicPartition, i64)]) -> Result<()> {
        self.retrying(|| async {
            let conn = admin_connection(&self.cluster, group_id).await?;
            let who = CommitAs { generation: -1, member_id: "", group_instance_id: &None };
            let results = group_requests::commit_offsets(&conn, group_id, who, offsets).await?;
            match results
                .iter()
                .find_map(|(tp, code)| Error::from_code(*code, Some(&tp.topic), Some(tp.partition), None))
            {
                Some(e) => Err(e),
                None => Ok(()),
            }
        })
        .await
    }

    /// Deletes committed offsets of partitions the group does not consume (OffsetDelete).
    pub async fn delete_group_offsets(&self, group_id: &str, partitions: &[TopicPartition]) -> Result<()> {
        let mut topics: BTreeMap<&str, Vec<OffsetDeleteRequestPartition>> = BTreeMap::new();
        for tp in partitions {
            topics
                .entry(&tp.topic)
                .or_default()
                .push(OffsetDeleteRequestPartition::default().with_partition_index(tp.partition));
        }
        let req = OffsetDeleteRequest::default().with_group_id(GroupId(s(group_id))).with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| OffsetDeleteRequestTopic::default().with_name(name(t)).with_partitions(ps))
                .collect(),
        );
        self.retrying(|| async {
            let conn = admin_connection(&self.cluster, group_id).await?;
            let resp = conn.send(&req).await?;
            let msg = format!("group {group_id}");
            if let Some(e) = Error::from_code(resp.error_code, None, None, Some(&msg)) {
                return Err(e);
            }
            for t in &resp.topics {
                for p in &t.partitions {
                    check(p.error_code, t.name.0.as_str(), Some(p.partition_index), &None)?;
                }
            }
            Ok(())
        })
        .await
    }

    /// Per partition the group commits to or is assigned: committed offset, log end offset, lag
    /// and the member it is assigned to.
    pub async fn group_lag(&self, group_id: &str) -> Result<GroupLag> {
        let description = match self.describe_groups(&[group_id]).await {
            Ok(mut d) => d.pop(),
            Err(e) if e.kafka_code() == Some(kafka_protocol::error::ResponseError::GroupIdNotFound) => None,
            Err(e) => return Err(e),
        };
        let committed = self.list_group_offsets(group_id).await?;
        let mut rows: BTreeMap<TopicPartition, (Option<i64>, Option<LagMember>)> =
            committed.iter().map(|(tp, &o)| (tp.clone(), (Some(o), None))).collect();
        for m in description.iter().flat_map(|d| d.members.iter()) {
            for tp in &m.assignment {
                rows.entry(tp.clone()).or_default().1 = Some(LagMember {
                    member_id: m.member_id.clone(),
                    host: m.host.clone(),
                    client_id: m.client_id.clone(),
                });
            }
        }
        let todo: Vec<(String, i32, i64)> = rows.keys().map(|tp| (tp.topic.clone(), tp.partition, -1)).collect();
        let mut ends: HashMap<TopicPartition, i64> = HashMap::new();
        if !todo.is_empty() {
            for (t, p, r) in list_offsets(&self.cluster, todo, 0).await? {
                match r {
                    Ok((offset, _)) => {
                        ends.insert(TopicPartition::new(t, p), offset);
                    }
                    Err(e) => tracing::debug!(topic = %t, partition = p, error = %e, "no log end offset"),
                }
            }
        }
        let partitions = rows
            .into_iter()
            .map(|(tp, (committed, member))| {
                let log_end_offset = ends.get(&tp).copied();
                PartitionLag {
                    lag: committed.zip(log_end_offset).map(|(c, e)| (e - c).max(0)),
                    topic: tp.topic,
                    partition: tp.partition,
                    committed,
                    log_end_offset,
                    member,
                }
            })
            .collect();
        Ok(GroupLag {
            group_id: group_id.to_owned(),
            state: description.as_ref().map_or_else(|| "Dead".to_owned(), |d| d.state.clone()),
            members: description.as_ref().map_or(0, |d| d.members.len()),
            partitions,
        })
    }
}
