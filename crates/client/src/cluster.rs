//! Bootstrap, the metadata cache, and one connection per broker.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use crate::connection::Connection;
use crate::error::{Error, Result};

/// A broker as advertised in metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

impl BrokerInfo {
    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// One partition as seen in metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub id: i32,
    /// -1 when there is no leader.
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline_replicas: Vec<i32>,
    pub error_code: i16,
}

/// One topic as seen in metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    /// Nil when the broker does not report topic ids (Metadata < v10).
    pub id: Uuid,
    pub internal: bool,
    /// Sorted by partition id.
    pub partitions: Vec<PartitionInfo>,
    pub error_code: i16,
}

impl TopicInfo {
    /// Leader of `partition`, if known.
    pub fn leader(&self, partition: i32) -> Option<i32> {
        self.partitions.iter().find(|p| p.id == partition).map(|p| p.leader).filter(|&l| l >= 0)
    }
}

/// A snapshot of cluster metadata.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    pub cluster_id: Option<String>,
    pub controller_id: i32,
    pub brokers: HashMap<i32, BrokerInfo>,
    pub topics: HashMap<String, Arc<TopicInfo>>,
}

/// Settings shared by everything that talks to the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Comma-separated `host:port` list.
    pub bootstrap: String,
    pub client_id: String,
    pub request_timeout: Duration,
}

/// Shared view of the cluster: metadata plus a connection per broker.
pub struct Cluster {
    config: ClusterConfig,
    metadata: RwLock<Metadata>,
    conns: tokio::sync::Mutex<HashMap<i32, Connection>>,
    bootstrap_conn: tokio::sync::Mutex<Option<Connection>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("bootstrap", &self.config.bootstrap).finish()
    }
}

impl Cluster {
    /// Connects to a bootstrap server and loads the broker list.
    pub async fn connect(config: ClusterConfig) -> Result<Arc<Self>> {
        if config.bootstrap.split(',').all(|s| s.trim().is_empty()) {
            return Err(Error::Config("bootstrap servers are empty".into()));
        }
        let cluster = Arc::new(Cluster {
            config,
            metadata: RwLock::new(Metadata::default()),
            conns: tokio::sync::Mutex::new(HashMap::new()),
            bootstrap_conn: tokio::sync::Mutex::new(None),
        });
        cluster.refresh_metadata(Some(&[])).await?;
        Ok(cluster)
    }

    /// The configuration this cluster handle was built with.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// A clone of the current metadata snapshot.
    pub fn metadata(&self) -> Metadata {
        self.metadata.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Cached metadata for `topic`.
    pub fn topic(&self, topic: &str) -> Option<Arc<TopicInfo>> {
        self.metadata.read().unwrap_or_else(|e| e.into_inner()).topics.get(topic).cloned()
    }

    /// Runs `f` over the cached metadata without cloning it.
    pub fn with_metadata<T>(&self, f: impl FnOnce(&Metadata) -> T) -> T {
        f(&self.metadata.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// A connection to any broker: a known one if possible, else a bootstrap server.
    pub async fn any_connection(&self) -> Result<Connection> {
        let mut boot = self.bootstrap_conn.lock().await;
        if let Some(c) = boot.as_ref().filter(|c| c.is_alive()) {
            return Ok(c.clone());
        }
        let mut last_err = None;
        let known: Vec<String> = self.with_metadata(|m| m.brokers.values().map(|b| b.addr()).collect());
        let candidates =
            self.config.bootstrap.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).chain(known);
        for addr in candidates {
            match Connection::connect(&addr, &self.config.client_id, self.config.request_timeout).await {
                Ok(c) => {
                    *boot = Some(c.clone());
                    return Ok(c);
                }
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "bootstrap connect failed");
                    last_err = Some(e);
                }
            }
        }
        Err(Error::NoBroker(match last_err {
            Some(e) => format!("could not reach {}: {e}", self.config.bootstrap),
            None => "no bootstrap servers".into(),
        }))
    }

    /// The connection to broker `node_id`, opened on first use and reopened if it died.
    pub async fn broker(&self, node_id: i32) -> Result<Connection> {
        let mut conns = self.conns.lock().await;
        if let Some(c) = conns.get(&node_id) {
            if c.is_alive() {
                return Ok(c.clone());
            }
            conns.remove(&node_id);
        }
        let addr = self
            .with_metadata(|m| m.brokers.get(&node_id).map(|b| b.addr()))
            .ok_or_else(|| Error::NoBroker(format!("broker {node_id} is not in metadata")))?;
        let c = Connection::connect(&addr, &self.config.client_id, self.config.request_timeout).await?;
        conns.insert(node_id, c.clone());
        Ok(c)
    }

    /// The connection to the active controller if known, else any broker.
    pub async fn controller(&self) -> Result<Connection> {
        let id = self.with_metadata(|m| m.controller_id);
        if id >= 0 {
            if let Ok(c) = self.broker(id).await {
                return Ok(c);
            }
        }
        self.any_connection().await
    }

    /// Fetches metadata for `topics` (`None` = all topics, `Some(&[])` = brokers only) and merges
    /// it into the cache. Returns the raw response for callers that need per-topic errors.
    pub async fn refresh_metadata(&self, topics: Option<&[String]>) -> Result<MetadataResponse> {
        self.fetch_metadata(topics, false).await
    }

    /// Like [`Cluster::refresh_metadata`], optionally letting the broker auto-create topics.
    pub async fn fetch_metadata(&self, topics: Option<&[String]>, allow_auto_create: bool) -> Result<MetadataResponse> {
        let req = MetadataRequest::default()
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|t| {
                        MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                    })
                    .collect()
            }))
            .with_allow_auto_topic_creation(allow_auto_create);
        let conn = self.any_connection().await?;
        // Before v4 the field does not exist and brokers always auto-create.
        let req = match conn.version(kafka_protocol::messages::ApiKey::Metadata) {
            Some(v) if v < 4 => req.with_allow_auto_topic_creation(true),
            _ => req,
        };
        let resp = match conn.send(&req).await {
            Ok(r) => r,
            Err(e) => {
                // Drop the bootstrap connection so the next attempt picks a fresh one.
                *self.bootstrap_conn.lock().await = None;
                return Err(e);
            }
        };
        if let Some(e) = Error::from_code(resp.error_code, None, None, None) {
            return Err(e);
        }
        self.merge(&resp, topics.is_none());
        Ok(resp)
    }

    fn merge(&self, resp: &MetadataResponse, all_topics: bool) {
        let mut md = self.metadata.write().unwrap_or_else(|e| e.into_inner());
        md.cluster_id = resp.cluster_id.as_ref().map(|s| s.to_string());
        md.controller_id = resp.controller_id.0;
        md.brokers = resp
            .brokers
            .iter()
            .map(|b| {
                (
                    b.node_id.0,
                    BrokerInfo {
                        id: b.node_id.0,
                        host: b.host.to_string(),
                        port: b.port,
                        rack: b.rack.as_ref().map(|r| r.to_string()),
                    },
                )
            })
            .collect();
        if all_topics {
            md.topics.clear();
        }
        for t in &resp.topics {
            let Some(name) = t.name.as_ref().map(|n| n.0.to_string()) else {
                continue;
            };
            if t.error_code != 0 {
                md.topics.remove(&name);
                continue;
            }
            let mut partitions: Vec<PartitionInfo> = t
                .partitions
                .iter()
                .map(|p| PartitionInfo {
                    id: p.partition_index,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: ids(&p.replica_nodes),
                    isr: ids(&p.isr_nodes),
                    offline_replicas: ids(&p.offline_replicas),
                    error_code: p.error_code,
                })
                .collect();
            partitions.sort_by_key(|p| p.id);
            md.topics.insert(
                name.clone(),
                Arc::new(TopicInfo {
                    name,
                    id: t.topic_id,
                    internal: t.is_internal,
                    partitions,
                    error_code: t.error_code,
                }),
            );
        }
    }

    /// Forgets a cached connection (after it failed) so the next use reconnects.
    pub async fn drop_connection(&self, node_id: i32) {
        self.conns.lock().await.remove(&node_id);
    }
}

fn ids(v: &[BrokerId]) -> Vec<i32> {
    v.iter().map(|b| b.0).collect()
}
