//! Simple consumer: manual assignment, no groups, one fetch in flight per leader (prefetched).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use crate::cluster::{Cluster, ClusterConfig};
use crate::connection::PendingResponse;
use crate::error::{Error, Result};
use crate::records::{decode_batch, split_batches};

/// Pause after a failed fetch before the next attempt.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// Where to start reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    Earliest,
    Latest,
    Offset(i64),
    /// First offset whose timestamp is >= this (ms); the end of the log if there is none.
    Timestamp(i64),
}

impl OffsetSpec {
    /// The ListOffsets timestamp for this spec; `None` for an explicit offset.
    pub fn list_offsets_timestamp(self) -> Option<i64> {
        match self {
            OffsetSpec::Earliest => Some(-2),
            OffsetSpec::Latest => Some(-1),
            OffsetSpec::Timestamp(ts) => Some(ts),
            OffsetSpec::Offset(_) => None,
        }
    }
}

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub bootstrap: String,
    pub client_id: String,
    pub fetch_max_wait: Duration,
    pub fetch_min_bytes: i32,
    pub fetch_max_bytes: i32,
    pub max_partition_fetch_bytes: i32,
    /// 0 = read uncommitted, 1 = read committed.
    pub isolation_level: i8,
    pub request_timeout: Duration,
    /// Where to go after OFFSET_OUT_OF_RANGE.
    pub auto_offset_reset: OffsetSpec,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            bootstrap: "127.0.0.1:9092".into(),
            client_id: "tern-consumer".into(),
            fetch_max_wait: Duration::from_millis(500),
            fetch_min_bytes: 1,
            fetch_max_bytes: 50 * 1024 * 1024,
            max_partition_fetch_bytes: 1024 * 1024,
            isolation_level: 0,
            request_timeout: Duration::from_secs(30),
            auto_offset_reset: OffsetSpec::Earliest,
        }
    }
}

/// A consumed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

struct PartState {
    topic: Arc<str>,
    partition: i32,
    /// `None` until `spec` is resolved through ListOffsets.
    position: Option<i64>,
    spec: OffsetSpec,
    high_watermark: i64,
}

impl PartState {
    /// A newly assigned partition; its position is resolved lazily unless `spec` is an offset.
    fn new(topic: String, partition: i32, spec: OffsetSpec) -> Self {
        let position = match spec {
            OffsetSpec::Offset(o) => Some(o),
            _ => None,
        };
        PartState { topic: Arc::from(topic), partition, position, spec, high_watermark: -1 }
    }
}

struct InflightFetch {
    node: i32,
    pending: PendingResponse<FetchResponse>,
    /// (index into `parts`, offset fetched from)
    partitions: Vec<(usize, i64)>,
    ids: HashMap<Uuid, Arc<str>>,
}

/// A consumer of explicitly assigned partitions.
pub struct Consumer {
    cluster: Arc<Cluster>,
    config: ConsumerConfig,
    parts: Vec<PartState>,
    inflight: Vec<InflightFetch>,
    refresh: bool,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").field("config", &self.config).finish()
    }
}

impl Consumer {
    /// Connects to the cluster.
    pub async fn new(config: ConsumerConfig) -> Result<Self> {
        let cluster = Cluster::connect(ClusterConfig {
            bootstrap: config.bootstrap.clone(),
            client_id: config.client_id.clone(),
            request_timeout: config.request_timeout + config.fetch_max_wait,
        })
        .await?;
        Ok(Self::with_cluster(cluster, config))
    }

    /// A consumer on an existing cluster handle (its bootstrap and client id are not used).
    pub fn with_cluster(cluster: Arc<Cluster>, config: ConsumerConfig) -> Self {
        Consumer { cluster, config, parts: Vec::new(), inflight: Vec::new(), refresh: true }
    }

    /// The cluster handle this consumer uses.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Replaces the assignment. Offsets are resolved lazily on the next `poll`.
    pub fn assign(&mut self, partitions: Vec<(String, i32, OffsetSpec)>) {
        self.inflight.clear();
        self.parts = partitions.into_iter().map(|(t, p, spec)| PartState::new(t, p, spec)).collect();
        self.refresh = true;
    }

    /// Keeps the assigned partitions `keep` accepts, with their positions, drops the others and
    /// adds `add` (resolved lazily, as in [`Consumer::assign`]).
    pub fn update_assignment(&mut self, keep: impl Fn(&str, i32) -> bool, add: Vec<(String, i32, OffsetSpec)>) {
        self.inflight.clear();
        self.parts.retain(|p| keep(&p.topic, p.partition));
        for (t, p, spec) in add {
            self.parts.retain(|x| !(*x.topic == *t && x.partition == p));
            self.parts.push(PartState::new(t, p, spec));
        }
        self.refresh = true;
    }

    /// The assigned partitions.
    pub fn assignment(&self) -> Vec<(String, i32)> {
        self.parts.iter().map(|p| (p.topic.to_string(), p.partition)).collect()
    }

    /// Moves one assigned partition to `spec`.
    pub fn seek(&mut self, topic: &str, partition: i32, spec: OffsetSpec) -> Result<()> {
        let p = self
            .parts
            .iter_mut()
            .find(|p| &*p.topic == topic && p.partition == partition)
            .ok_or_else(|| Error::Config(format!("{topic}-{partition} is not assigned")))?;
        p.spec = spec;
        p.position = match spec {
            OffsetSpec::Offset(o) => Some(o),
            _ => None,
        };
        self.inflight.clear();
        Ok(())
    }

    /// The next offset to be returned for a partition, once resolved.
    pub fn position(&self, topic: &str, partition: i32) -> Option<i64> {
        self.parts.iter().find(|p| &*p.topic == topic && p.partition == partition).and_then(|p| p.position)
    }

    /// The high watermark seen in the last fetch for a partition (-1 before any).
    pub fn high_watermark(&self, topic: &str, partition: i32) -> Option<i64> {
        self.parts.iter().find(|p| &*p.topic == topic && p.partition == partition).map(|p| p.high_watermark)
    }

    /// Fetches the next records from all assigned partitions. May return an empty batch when
    /// nothing arrived within `fetch_max_wait`; retriable failures (a broker restarting or
    /// unreachable, a leader moving) also yield an empty batch, after a short pause, and the
    /// next poll reconnects and goes on from the same positions.
    pub async fn poll(&mut self) -> Result<Vec<ConsumerRecord>> {
        if self.parts.is_empty() {
            return Ok(Vec::new());
        }
        if let Err(e) = self.prepare_fetches().await {
            if !e.is_retriable() {
                return Err(e);
            }
            tracing::debug!(error = %e, "preparing fetches failed; will retry");
            self.refresh = true;
            if self.inflight.is_empty() {
                tokio::time::sleep(RETRY_BACKOFF).await;
                return Ok(Vec::new());
            }
        }
        let mut out = Vec::new();
        let mut first_err = None;
        for f in std::mem::take(&mut self.inflight) {
            let node = f.node;
            match f.pending.wait().await {
                Ok(resp) => {
                    if let Err(e) = self.handle(resp, &f.partitions, &f.ids, &mut out) {
                        first_err.get_or_insert(e);
                    }
                }
                Err(e) => {
                    self.cluster.drop_connection(node).await;
                    self.refresh = true;
                    first_err.get_or_insert(e);
                }
            }
        }
        // Prefetch while the caller processes this batch.
        if !self.refresh && self.parts.iter().all(|p| p.position.is_some()) {
            if let Err(e) = self.issue_fetches().await {
                tracing::debug!(error = %e, "prefetch failed");
                self.inflight.clear();
            }
        }
        match first_err {
            Some(e) if out.is_empty() && !e.is_retriable() => Err(e),
            Some(e) if out.is_empty() => {
                tracing::debug!(error = %e, "fetch failed; will retry");
                tokio::time::sleep(RETRY_BACKOFF).await;
                Ok(out)
            }
            _ => Ok(out),
        }
    }

    /// Metadata, start offsets and the next fetch requests, as far as each is needed.
    async fn prepare_fetches(&mut self) -> Result<()> {
        if self.refresh {
            self.refresh_metadata().await?;
        }
        self.resolve_offsets().await?;
        if self.inflight.is_empty() {
            self.issue_fetches().await?;
        }
        Ok(())
    }

    async fn refresh_metadata(&mut self) -> Result<()> {
        let mut topics: Vec<String> = self.parts.iter().map(|p| p.topic.to_string()).collect();
        topics.sort();
        topics.dedup();
        self.cluster.refresh_metadata(Some(&topics)).await?;
        self.refresh = false;
        Ok(())
    }

    fn leader(&self, topic: &str, partition: i32) -> Option<i32> {
        self.cluster.topic(topic).and_then(|t| t.leader(partition))
    }

    async fn resolve_offsets(&mut self) -> Result<()> {
        let todo: Vec<(String, i32, i64)> = self
            .parts
            .iter()
            .filter(|p| p.position.is_none())
            .filter_map(|p| Some((p.topic.to_string(), p.partition, p.spec.list_offsets_timestamp()?)))
            .collect();
        if todo.is_empty() {
            return Ok(());
        }
        let results = list_offsets(&self.cluster, todo, self.config.isolation_level).await?;
        for (topic, partition, r) in results {
            let Some(p) = self.parts.iter_mut().find(|p| *p.topic == *topic && p.partition == partition) else {
                continue;
            };
            match r {
                Ok((offset, _)) if offset >= 0 => p.position = Some(offset),
                // No record at or after the timestamp: start at the end.
                Ok(_) => p.spec = OffsetSpec::Latest,
                Err(e) if e.invalidates_metadata() => self.refresh = true,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn issue_fetches(&mut self) -> Result<()> {
        let mut by_node: HashMap<i32, Vec<usize>> = HashMap::new();
        for (i, p) in self.parts.iter().enumerate() {
            if p.position.is_none() {
                continue;
            }
            match self.leader(&p.topic, p.partition) {
                Some(l) => by_node.entry(l).or_default().push(i),
                None => self.refresh = true,
            }
        }
        for (node, idxs) in by_node {
            let conn = match self.cluster.broker(node).await {
                Ok(c) => c,
                Err(e) => {
                    self.refresh = true;
                    return Err(e);
                }
            };
            let mut version = conn.version_of::<FetchRequest>()?;
            let mut topics: Vec<FetchTopic> = Vec::new();
            let mut ids = HashMap::new();
            let mut partitions = Vec::new();
            let mut index: HashMap<Arc<str>, usize> = HashMap::new();
            for &i in &idxs {
                let p = &self.parts[i];
                let id = self.cluster.topic(&p.topic).map(|t| t.id).unwrap_or_default();
                if id.is_nil() {
                    // Topic ids are required from Fetch v13 on.
                    version = version.min(12);
                }
                ids.insert(id, p.topic.clone());
                let ti = *index.entry(p.topic.clone()).or_insert_with(|| {
                    topics.push(
                        FetchTopic::default()
                            .with_topic(TopicName(StrBytes::from_string(p.topic.to_string())))
                            .with_topic_id(id),
                    );
                    topics.len() - 1
                });
                let offset = p.position.expect("filtered above");
                topics[ti].partitions.push(
                    FetchPartition::default()
                        .with_partition(p.partition)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(self.config.max_partition_fetch_bytes),
                );
                partitions.push((i, offset));
            }
            let req = FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(self.config.fetch_max_wait.as_millis().min(i32::MAX as u128) as i32)
                .with_min_bytes(self.config.fetch_min_bytes)
                .with_max_bytes(self.config.fetch_max_bytes)
                .with_isolation_level(self.config.isolation_level)
                .with_session_id(0)
                .with_session_epoch(-1)
                .with_topics(topics);
            let pending = conn.enqueue(&req, version)?;
            self.inflight.push(InflightFetch { node, pending, partitions, ids });
        }
        Ok(())
    }

    fn handle(
        &mut self,
        resp: FetchResponse,
        fetched: &[(usize, i64)],
        ids: &HashMap<Uuid, Arc<str>>,
        out: &mut Vec<ConsumerRecord>,
    ) -> Result<()> {
        if let Some(e) = Error::from_code(resp.error_code, None, None, None) {
            return Err(e);
        }
        let mut first_err = None;
        for t in resp.responses {
            let name: Arc<str> = match ids.get(&t.topic_id).filter(|_| !t.topic_id.is_nil()) {
                Some(n) => n.clone(),
                None => Arc::from(t.topic.0.as_str()),
            };
            for pd in t.partitions {
                let Some(&(idx, fetch_offset)) = fetched.iter().find(|(i, _)| {
                    let p = &self.parts[*i];
                    p.topic == name && p.partition == pd.partition_index
                }) else {
                    continue;
                };
                let state = &mut self.parts[idx];
                // A seek since the request makes this data stale.
                if state.position != Some(fetch_offset) {
                    continue;
                }
                if let Some(e) = Error::from_code(pd.error_code, Some(&name), Some(pd.partition_index), None) {
                    match e.kafka_code() {
                        Some(ResponseError::OffsetOutOfRange) => {
                            tracing::info!(topic = %name, partition = pd.partition_index, offset = fetch_offset, "offset out of range; resetting");
                            state.position = None;
                            state.spec = self.config.auto_offset_reset;
                        }
                        _ if e.invalidates_metadata() => self.refresh = true,
                        _ => {
                            first_err.get_or_insert(e);
                        }
                    }
                    continue;
                }
                state.high_watermark = pd.high_watermark;
                let Some(records) = pd.records else { continue };
                let mut position = fetch_offset;
                for batch in split_batches(records) {
                    if batch.next_offset <= position {
                        continue;
                    }
                    if !batch.is_control {
                        for r in decode_batch(&batch)? {
                            if r.offset < position || r.control {
                                continue;
                            }
                            out.push(ConsumerRecord {
                                topic: name.clone(),
                                partition: pd.partition_index,
                                offset: r.offset,
                                timestamp: r.timestamp,
                                key: r.key,
                                value: r.value,
                                headers: r.headers.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                            });
                        }
                    }
                    position = batch.next_offset;
                }
                state.position = Some(position);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Looks up offsets for `(topic, partition, timestamp)` triples (timestamp -2 = earliest,
/// -1 = latest), one request per leader. Per-partition errors are returned per entry.
pub(crate) async fn list_offsets(
    cluster: &Cluster,
    todo: Vec<(String, i32, i64)>,
    isolation_level: i8,
) -> Result<Vec<(String, i32, Result<(i64, i64)>)>> {
    let mut missing: Vec<String> = todo
        .iter()
        .filter(|(t, p, _)| cluster.topic(t).and_then(|i| i.leader(*p)).is_none())
        .map(|(t, _, _)| t.clone())
        .collect();
    if !missing.is_empty() {
        missing.sort();
        missing.dedup();
        cluster.refresh_metadata(Some(&missing)).await?;
    }
    let mut by_node: HashMap<i32, Vec<(String, i32, i64)>> = HashMap::new();
    let mut out = Vec::new();
    for (t, p, ts) in todo {
        match cluster.topic(&t).and_then(|i| i.leader(p)) {
            Some(l) => by_node.entry(l).or_default().push((t, p, ts)),
            None => {
                let e = Error::from_code(ResponseError::UnknownTopicOrPartition.code(), Some(&t), Some(p), None)
                    .expect("non-zero");
                out.push((t, p, Err(e)));
            }
        }
    }
    for (node, items) in by_node {
        let conn = cluster.broker(node).await?;
        let mut topics: Vec<ListOffsetsTopic> = Vec::new();
        for (t, p, ts) in &items {
            let part = ListOffsetsPartition::default().with_partition_index(*p).with_timestamp(*ts);
            match topics.iter_mut().find(|x| x.name.0.as_str() == t) {
                Some(x) => x.partitions.push(part),
                None => topics.push(
                    ListOffsetsTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t.clone())))
                        .with_partitions(vec![part]),
                ),
            }
        }
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_isolation_level(isolation_level)
            .with_timeout_ms(cluster.config().request_timeout.as_millis().min(i32::MAX as u128) as i32)
            .with_topics(topics);
        let resp = conn.send(&req).await?;
        for (t, p, _) in items {
            let r = resp
                .topics
                .iter()
                .filter(|x| x.name.0.as_str() == t)
                .flat_map(|x| x.partitions.iter())
                .find(|x| x.partition_index == p);
            let r = match r {
                None => Err(Error::Protocol(format!("ListOffsets response lacks {t}-{p}"))),
                Some(x) => match Error::from_code(x.error_code, Some(&t), Some(p), None) {
                    Some(e) => Err(e),
                    None => Ok((x.offset, x.timestamp)),
                },
            };
            out.push((t, p, r));
        }
    }
    Ok(out)
}
