//! A tiny in-memory fake broker on 127.0.0.1:0 speaking just enough Kafka for client tests.

#![allow(dead_code)]

pub mod consumers;
pub mod group;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicI16, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{decode_request_header_from_buffer, Decodable, Encodable, Message, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use uuid::Uuid;

use group::{FakeGroups, Reply};

#[derive(Default)]
pub struct Log {
    /// (base offset, batch bytes with the base offset rewritten)
    pub batches: Vec<(i64, Bytes)>,
    pub end: i64,
}

/// An idempotent producer's state in one partition, as a Kafka broker keeps it.
struct ProducerSeq {
    epoch: i16,
    last_seq: i32,
    /// (first sequence, base offset) of the last five batches, for duplicate detection.
    recent: VecDeque<(i32, i64)>,
}

pub struct FakeBroker {
    pub port: u16,
    pub topics: HashMap<String, (Uuid, i32)>,
    pub logs: Mutex<HashMap<(String, i32), Log>>,
    /// Produce partition responses still to fail with `fail_code`.
    pub fail_produce: AtomicUsize,
    /// The error code of `fail_produce` (default NOT_LEADER_OR_FOLLOWER).
    pub fail_code: AtomicI16,
    /// Produce partitions (numbered from 0 over the broker's life) to fail with `fail_code`.
    pub fail_nth_partition: Mutex<HashSet<usize>>,
    pub partition_produces: AtomicUsize,
    /// Produce requests (numbered from 0) that are written but whose response is lost: the
    /// broker closes the connection instead of answering.
    pub lose_response_of: Mutex<HashSet<usize>>,
    /// While true, Produce requests wait before they are handled.
    pub stall: watch::Sender<bool>,
    /// Topics deleted since start: unknown to Metadata and Produce.
    pub deleted: Mutex<HashSet<String>>,
    /// Non-zero: InitProducerId fails with this code.
    pub init_producer_id_error: AtomicI16,
    pub init_producer_id_calls: AtomicUsize,
    next_producer_id: AtomicI64,
    producers: Mutex<HashMap<(String, i32, i64), ProducerSeq>>,
    /// Highest ApiVersions version accepted; above it the v0 UNSUPPORTED_VERSION dance happens.
    pub api_versions_max: i16,
    pub produce_requests: AtomicUsize,
    pub groups: FakeGroups,
}

impl FakeBroker {
    pub async fn start(topics: &[(&str, i32)]) -> Arc<FakeBroker> {
        Self::start_with(topics, 3).await
    }

    pub async fn start_with(topics: &[(&str, i32)], api_versions_max: i16) -> Arc<FakeBroker> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let broker = Arc::new(FakeBroker {
            port,
            topics: topics.iter().map(|(t, n)| (t.to_string(), (Uuid::new_v4(), *n))).collect(),
            logs: Mutex::new(HashMap::new()),
            fail_produce: AtomicUsize::new(0),
            fail_code: AtomicI16::new(6),
            fail_nth_partition: Mutex::new(HashSet::new()),
            partition_produces: AtomicUsize::new(0),
            lose_response_of: Mutex::new(HashSet::new()),
            stall: watch::Sender::new(false),
            deleted: Mutex::new(HashSet::new()),
            init_producer_id_error: AtomicI16::new(0),
            init_producer_id_calls: AtomicUsize::new(0),
            next_producer_id: AtomicI64::new(1000),
            producers: Mutex::new(HashMap::new()),
            api_versions_max,
            produce_requests: AtomicUsize::new(0),
            groups: FakeGroups::new(),
        });
        let weak = Arc::downgrade(&broker);
        tokio::spawn(async move {
            while let Some(b) = weak.upgrade() {
                b.groups.tick();
                drop(b);
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        });
        let b = broker.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(b.clone().serve(sock));
            }
        });
        broker
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn serve(self: Arc<Self>, mut sock: TcpStream) {
        loop {
            let Ok(len) = sock.read_i32().await else { return };
            let mut buf = vec![0u8; len as usize];
            if sock.read_exact(&mut buf).await.is_err() {
                return;
            }
            let mut buf = Bytes::from(buf);
            let header = decode_request_header_from_buffer(&mut buf).unwrap();
            let key = ApiKey::try_from(header.request_api_key).unwrap();
            let v = header.request_api_version;
            let mut body = BytesMut::new();
            let mut resp_version = v;
            match key {
                ApiKey::ApiVersions => {
                    let mut r = ApiVersionsResponse::default().with_api_keys(vec![
                        av::<ProduceRequest>(ApiKey::Produce),
                        av::<FetchRequest>(ApiKey::Fetch),
                        av::<ListOffsetsRequest>(ApiKey::ListOffsets),
                        av::<MetadataRequest>(ApiKey::Metadata),
                        av::<FindCoordinatorRequest>(ApiKey::FindCoordinator),
                        av::<JoinGroupRequest>(ApiKey::JoinGroup),
                        av::<SyncGroupRequest>(ApiKey::SyncGroup),
                        av::<HeartbeatRequest>(ApiKey::Heartbeat),
                        av::<LeaveGroupRequest>(ApiKey::LeaveGroup),
                        av::<OffsetCommitRequest>(ApiKey::OffsetCommit),
                        av::<OffsetFetchRequest>(ApiKey::OffsetFetch),
                        av::<ListGroupsRequest>(ApiKey::ListGroups),
                        av::<DescribeGroupsRequest>(ApiKey::DescribeGroups),
                        av::<DeleteGroupsRequest>(ApiKey::DeleteGroups),
                        av::<InitProducerIdRequest>(ApiKey::InitProducerId),
                        ApiVersion::default()
                            .with_api_key(ApiKey::ApiVersions as i16)
                            .with_min_version(0)
                            .with_max_version(self.api_versions_max),
                    ]);
                    if v > self.api_versions_max {
                        r.error_code = 35;
                        resp_version = 0;
                    }
                    r.encode(&mut body, resp_version).unwrap();
                }
                ApiKey::Metadata => {
                    let req = MetadataRequest::decode(&mut buf, v).unwrap();
                    self.metadata(req).encode(&mut body, v).unwrap();
                }
                ApiKey::Produce => {
                    let req = ProduceRequest::decode(&mut buf, v).unwrap();
                    let _ = self.stall.subscribe().wait_for(|stalled| !*stalled).await;
                    let n = self.produce_requests.fetch_add(1, Ordering::SeqCst);
                    let acks = req.acks;
                    let resp = self.produce(req);
                    if self.lose_response_of.lock().unwrap().remove(&n) {
                        return;
                    }
                    if acks == 0 {
                        continue;
                    }
                    resp.encode(&mut body, v).unwrap();
                }
                ApiKey::InitProducerId => {
                    let _req = InitProducerIdRequest::decode(&mut buf, v).unwrap();
                    self.init_producer_id_calls.fetch_add(1, Ordering::SeqCst);
                    let code = self.init_producer_id_error.load(Ordering::SeqCst);
                    let resp = if code != 0 {
                        InitProducerIdResponse::default()
                            .with_error_code(code)
                            .with_producer_id(ProducerId(-1))
                            .with_producer_epoch(-1)
                    } else {
                        let id = self.next_producer_id.fetch_add(1, Ordering::SeqCst);
                        InitProducerIdResponse::default().with_producer_id(ProducerId(id)).with_producer_epoch(0)
                    };
                    resp.encode(&mut body, v).unwrap();
                }
                ApiKey::Fetch => {
                    let req = FetchRequest::decode(&mut buf, v).unwrap();
                    let resp = self.fetch(&req, v);
                    let empty = resp
                        .responses
                        .iter()
                        .all(|t| t.partitions.iter().all(|p| p.records.as_ref().is_none_or(|r| r.is_empty())));
                    if empty {
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    }
                    resp.encode(&mut body, v).unwrap();
                }
                ApiKey::ListOffsets => {
                    let req = ListOffsetsRequest::decode(&mut buf, v).unwrap();
                    self.list_offsets(req).encode(&mut body, v).unwrap();
                }
                ApiKey::FindCoordinator => {
                    let req = FindCoordinatorRequest::decode(&mut buf, v).unwrap();
                    let mut resp = FindCoordinatorResponse::default();
                    if v >= 4 {
                        resp.coordinators = req
                            .coordinator_keys
                            .iter()
                            .map(|k| {
                                find_coordinator_response::Coordinator::default()
                                    .with_key(k.clone())
                                    .with_node_id(BrokerId(0))
                                    .with_host(StrBytes::from_static_str("127.0.0.1"))
                                    .with_port(self.port as i32)
                            })
                            .collect();
                    } else {
                        resp = resp
                            .with_node_id(BrokerId(0))
                            .with_host(StrBytes::from_static_str("127.0.0.1"))
                            .with_port(self.port as i32);
                    }
                    resp.encode(&mut body, v).unwrap();
                }
                ApiKey::JoinGroup => {
                    let req = JoinGroupRequest::decode(&mut buf, v).unwrap();
                    let client_id = header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default();
                    let resp = match self.groups.join(req, v, &client_id) {
                        Reply::Now(r) => r,
                        Reply::Later(rx) => match rx.await {
                            Ok(r) => r,
                            // Replaced by a newer JoinGroup of the same member.
                            Err(_) => JoinGroupResponse::default().with_error_code(79),
                        },
                    };
                    resp.encode(&mut body, v).unwrap();
                }
                ApiKey::SyncGroup => {
                    let req = SyncGroupRequest::decode(&mut buf, v).unwrap();
                    let resp = match self.groups.sync(req, v) {
                        Reply::Now(r) => r,
                        Reply::Later(rx) => {
                            rx.await.unwrap_or_else(|_| SyncGroupResponse::default().with_error_code(27))
                        }
                    };
                    resp.encode(&mut body, v).unwrap();
                }
                ApiKey::Heartbeat => {
                    let req = HeartbeatRequest::decode(&mut buf, v).unwrap();
                    self.groups.heartbeat(req).encode(&mut body, v).unwrap();
                }
                ApiKey::LeaveGroup => {
                    let req = LeaveGroupRequest::decode(&mut buf, v).unwrap();
                    self.groups.leave(req, v).encode(&mut body, v).unwrap();
                }
                ApiKey::OffsetCommit => {
                    let req = OffsetCommitRequest::decode(&mut buf, v).unwrap();
                    self.groups.commit(req).encode(&mut body, v).unwrap();
                }
                ApiKey::OffsetFetch => {
                    let req = OffsetFetchRequest::decode(&mut buf, v).unwrap();
                    self.groups.fetch_offsets(req, v).encode(&mut body, v).unwrap();
                }
                ApiKey::ListGroups => {
                    let req = ListGroupsRequest::decode(&mut buf, v).unwrap();
                    self.groups.list(req, v).encode(&mut body, v).unwrap();
                }
                ApiKey::DescribeGroups => {
                    let req = DescribeGroupsRequest::decode(&mut buf, v).unwrap();
                    self.groups.describe_groups(req).encode(&mut body, v).unwrap();
                }
                ApiKey::DeleteGroups => {
                    let req = DeleteGroupsRequest::decode(&mut buf, v).unwrap();
                    self.groups.delete(req).encode(&mut body, v).unwrap();
                }
                other => panic!("fake broker does not serve {other:?}"),
            }
            let mut frame = BytesMut::new();
            let h = ResponseHeader::default().with_correlation_id(header.correlation_id);
            let mut hb = BytesMut::new();
            h.encode(&mut hb, key.response_header_version(resp_version)).unwrap();
            frame.put_i32((hb.len() + body.len()) as i32);
            frame.extend_from_slice(&hb);
            frame.extend_from_slice(&body);
            if sock.write_all(&frame).await.is_err() {
                return;
            }
        }
    }

    fn metadata(&self, req: MetadataRequest) -> MetadataResponse {
        let wanted: Option<Vec<String>> =
            req.topics.map(|ts| ts.into_iter().filter_map(|t| t.name.map(|n| n.0.to_string())).collect());
        let mut topics = Vec::new();
        let names: Vec<String> = match &wanted {
            Some(w) => w.clone(),
            None => self.topics.keys().filter(|t| !self.deleted.lock().unwrap().contains(*t)).cloned().collect(),
        };
        let deleted = self.deleted.lock().unwrap().clone();
        for n in names {
            let t = match self.topics.get(&n).filter(|_| !deleted.contains(&n)) {
                Some((id, parts)) => MetadataResponseTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_string(n.clone()))))
                    .with_topic_id(*id)
                    .with_partitions(
                        (0..*parts)
                            .map(|p| {
                                MetadataResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_leader_id(BrokerId(0))
                                    .with_replica_nodes(vec![BrokerId(0)])
                                    .with_isr_nodes(vec![BrokerId(0)])
                            })
                            .collect(),
                    ),
                None => MetadataResponseTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_string(n.clone()))))
                    .with_error_code(3),
            };
            topics.push(t);
        }
        MetadataResponse::default()
            .with_brokers(vec![MetadataResponseBroker::default()
                .with_node_id(BrokerId(0))
                .with_host(StrBytes::from_static_str("127.0.0.1"))
                .with_port(self.port as i32)])
            .with_cluster_id(Some(StrBytes::from_static_str("fake")))
            .with_controller_id(BrokerId(0))
            .with_topics(topics)
    }

    fn produce(&self, req: ProduceRequest) -> ProduceResponse {
        let mut logs = self.logs.lock().unwrap();
        let mut out = Vec::new();
        for t in req.topic_data {
            let name = t.name.0.to_string();
            let mut parts = Vec::new();
            for p in t.partition_data {
                let nth = self.partition_produces.fetch_add(1, Ordering::SeqCst);
                let fail = self.fail_nth_partition.lock().unwrap().remove(&nth)
                    || self.fail_produce.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
                let code = if self.deleted.lock().unwrap().contains(&name) {
                    3
                } else if fail {
                    self.fail_code.load(Ordering::SeqCst)
                } else {
                    0
                };
                if code != 0 {
                    parts.push(PartitionProduceResponse::default().with_index(p.index).with_error_code(code));
                    continue;
                }
                let records = p.records.unwrap();
                let log = logs.entry((name.clone(), p.index)).or_default();
                let mut b = BytesMut::from(&records[..]);
                let base = log.end;
                let last_delta = i32::from_be_bytes(b[23..27].try_into().unwrap());
                let response = PartitionProduceResponse::default().with_index(p.index).with_log_append_time_ms(-1);
                match self.check_sequence(&name, p.index, &b, base) {
                    Ok(None) => {}
                    Ok(Some(original)) => {
                        parts.push(response.with_base_offset(original));
                        continue;
                    }
                    Err(code) => {
                        parts.push(response.with_error_code(code));
                        continue;
                    }
                }
                b[0..8].copy_from_slice(&base.to_be_bytes());
                log.end = base + last_delta as i64 + 1;
                log.batches.push((base, b.freeze()));
                parts.push(response.with_base_offset(base));
            }
            out.push(
                TopicProduceResponse::default()
                    .with_name(TopicName(StrBytes::from_string(name)))
                    .with_partition_responses(parts),
            );
        }
        ProduceResponse::default().with_responses(out)
    }

    /// Kafka's idempotence check for a batch about to be written at `base`: `Ok(None)` to
    /// append, `Ok(Some(offset))` for a duplicate already written there, or an error code.
    fn check_sequence(&self, topic: &str, partition: i32, b: &[u8], base: i64) -> Result<Option<i64>, i16> {
        let producer_id = i64::from_be_bytes(b[43..51].try_into().unwrap());
        let epoch = i16::from_be_bytes(b[51..53].try_into().unwrap());
        let first = i32::from_be_bytes(b[53..57].try_into().unwrap());
        let last_delta = i32::from_be_bytes(b[23..27].try_into().unwrap());
        if producer_id < 0 {
            return Ok(None);
        }
        let mut producers = self.producers.lock().unwrap();
        let key = (topic.to_owned(), partition, producer_id);
        let fresh = || ProducerSeq { epoch, last_seq: first + last_delta, recent: VecDeque::from([(first, base)]) };
        let Some(state) = producers.get_mut(&key) else {
            // An unknown producer must start at sequence 0.
            return if first == 0 {
                producers.insert(key, fresh());
                Ok(None)
            } else {
                Err(45)
            };
        };
        if epoch < state.epoch {
            return Err(47);
        }
        if epoch > state.epoch {
            return if first == 0 {
                *state = fresh();
                Ok(None)
            } else {
                Err(45)
            };
        }
        if let Some(&(_, offset)) = state.recent.iter().find(|(s, _)| *s == first) {
            return Ok(Some(offset));
        }
        if first != state.last_seq + 1 {
            return Err(45);
        }
        state.last_seq = first + last_delta;
        state.recent.push_back((first, base));
        if state.recent.len() > 5 {
            state.recent.pop_front();
        }
        Ok(None)
    }

    /// Forgets every producer's sequence numbers, as a broker that lost its producer state.
    pub fn forget_producers(&self) {
        self.producers.lock().unwrap().clear();
    }

    pub fn delete_topic(&self, topic: &str) {
        self.deleted.lock().unwrap().insert(topic.to_owned());
    }

    /// The values of a partition's records in log order.
    pub fn values(&self, topic: &str, partition: i32) -> Vec<String> {
        let logs = self.logs.lock().unwrap();
        let Some(log) = logs.get(&(topic.to_owned(), partition)) else { return Vec::new() };
        let mut out = Vec::new();
        for (_, b) in &log.batches {
            let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut b.clone()).unwrap();
            for r in set.records {
                out.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
            }
        }
        out
    }

    /// The producer id of every batch of a partition, in log order.
    pub fn producer_ids(&self, topic: &str, partition: i32) -> Vec<i64> {
        let logs = self.logs.lock().unwrap();
        let Some(log) = logs.get(&(topic.to_owned(), partition)) else { return Vec::new() };
        log.batches.iter().map(|(_, b)| i64::from_be_bytes(b[43..51].try_into().unwrap())).collect()
    }

    fn fetch(&self, req: &FetchRequest, v: i16) -> FetchResponse {
        let logs = self.logs.lock().unwrap();
        let mut out = Vec::new();
        for t in &req.topics {
            let name = if v >= 13 {
                self.topics.iter().find(|(_, (id, _))| *id == t.topic_id).map(|(n, _)| n.clone()).unwrap()
            } else {
                t.topic.0.to_string()
            };
            let mut parts = Vec::new();
            for p in &t.partitions {
                let empty = Log::default();
                let log = logs.get(&(name.clone(), p.partition)).unwrap_or(&empty);
                let mut pd = PartitionData::default().with_partition_index(p.partition).with_high_watermark(log.end);
                if p.fetch_offset > log.end || p.fetch_offset < 0 {
                    pd = pd.with_error_code(1);
                } else {
                    let mut data = BytesMut::new();
                    for (base, b) in &log.batches {
                        let last = base + i32::from_be_bytes(b[23..27].try_into().unwrap()) as i64;
                        if last < p.fetch_offset {
                            continue;
                        }
                        if !data.is_empty() && data.len() + b.len() > p.partition_max_bytes as usize {
                            // Cut the last batch short, as a real broker's max_bytes does.
                            let room = (p.partition_max_bytes as usize).saturating_sub(data.len());
                            data.extend_from_slice(&b[..room.min(b.len())]);
                            break;
                        }
                        data.extend_from_slice(b);
                    }
                    pd = pd.with_records(Some(data.freeze()));
                }
                parts.push(pd);
            }
            out.push(
                FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_string(name.clone())))
                    .with_topic_id(self.topics.get(&name).map(|t| t.0).unwrap_or_default())
                    .with_partitions(parts),
            );
        }
        FetchResponse::default().with_responses(out)
    }

    fn list_offsets(&self, req: ListOffsetsRequest) -> ListOffsetsResponse {
        let logs = self.logs.lock().unwrap();
        let topics = req
            .topics
            .into_iter()
            .map(|t| {
                let name = t.name.0.to_string();
                let parts = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let end = logs.get(&(name.clone(), p.partition_index)).map_or(0, |l| l.end);
                        let offset = if p.timestamp == -2 { 0 } else { end };
                        ListOffsetsPartitionResponse::default()
                            .with_partition_index(p.partition_index)
                            .with_offset(offset)
                            .with_timestamp(-1)
                    })
                    .collect();
                ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(parts)
            })
            .collect();
        ListOffsetsResponse::default().with_topics(topics)
    }

    pub fn record_count(&self, topic: &str, partition: i32) -> i64 {
        self.logs.lock().unwrap().get(&(topic.to_owned(), partition)).map_or(0, |l| l.end)
    }
}

fn av<M: Message>(key: ApiKey) -> ApiVersion {
    ApiVersion::default().with_api_key(key as i16).with_min_version(M::VERSIONS.min).with_max_version(M::VERSIONS.max)
}
