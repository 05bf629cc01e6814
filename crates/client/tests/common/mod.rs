//! A tiny in-memory fake broker on 127.0.0.1:0 speaking just enough Kafka for client tests.

#![allow(dead_code)]

pub mod consumers;
pub mod group;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
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
use uuid::Uuid;

use group::{FakeGroups, Reply};

#[derive(Default)]
pub struct Log {
    /// (base offset, batch bytes with the base offset rewritten)
    pub batches: Vec<(i64, Bytes)>,
    pub end: i64,
}

pub struct FakeBroker {
    pub port: u16,
    pub topics: HashMap<String, (Uuid, i32)>,
    pub logs: Mutex<HashMap<(String, i32), Log>>,
    /// Produce partition responses still to fail with NOT_LEADER_OR_FOLLOWER.
    pub fail_produce: AtomicUsize,
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
                    self.produce_requests.fetch_add(1, Ordering::SeqCst);
                    let acks = req.acks;
                    let resp = self.produce(req);
                    if acks == 0 {
                        continue;
                    }
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
            None => self.topics.keys().cloned().collect(),
        };
        for n in names {
            let t = match self.topics.get(&n) {
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
                let fail =
                    self.fail_produce.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
                if fail {
                    parts.push(PartitionProduceResponse::default().with_index(p.index).with_error_code(6));
                    continue;
                }
                let log = logs.entry((name.clone(), p.index)).or_default();
                let records = p.records.unwrap();
                let mut b = BytesMut::from(&records[..]);
                let base = log.end;
                b[0..8].copy_from_slice(&base.to_be_bytes());
                let last_delta = i32::from_be_bytes(b[23..27].try_into().unwrap());
                log.end = base + last_delta as i64 + 1;
                log.batches.push((base, b.freeze()));
                parts.push(
                    PartitionProduceResponse::default()
                        .with_index(p.index)
                        .with_base_offset(base)
                        .with_log_append_time_ms(-1),
                );
            }
            out.push(
                TopicProduceResponse::default()
                    .with_name(TopicName(StrBytes::from_string(name)))
                    .with_partition_responses(parts),
            );
        }
        ProduceResponse::default().with_responses(out)
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
