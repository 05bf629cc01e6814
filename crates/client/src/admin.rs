//! Admin operations: topics, configs, partitions, offsets, records, cluster.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use crate::cluster::{BrokerInfo, Cluster, ClusterConfig, TopicInfo};
use crate::consumer::{list_offsets, OffsetSpec};
use crate::error::{Error, Result};

const RESOURCE_TOPIC: i8 = 2;

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

/// Cluster description from DescribeCluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    pub cluster_id: String,
    pub controller_id: i32,
    pub brokers: Vec<BrokerInfo>,
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
}
