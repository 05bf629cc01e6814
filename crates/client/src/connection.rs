//! One framed TCP connection to a broker, with pipelined requests.
//!
//! Callers enqueue fully encoded frames; a writer task stamps correlation ids and writes them in
//! order, a reader task matches responses to requests in the same order (Kafka answers requests on
//! one connection in the order it received them).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, Message, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::error::{Error, Result};

/// Maps a request type to its API key and response type, within the versions this client implements.
pub trait ClientRequest: Encodable + Message {
    /// The API key of this request.
    const KEY: ApiKey;
    /// Highest version this client knows how to fill in correctly.
    const MAX_VERSION: i16 = <Self as Message>::VERSIONS.max;
    /// The matching response.
    type Response: Decodable;
}

macro_rules! client_requests {
    ($($req:ident => $resp:ident, $key:ident $(, max $max:literal)?;)*) => {$(
        impl ClientRequest for $req {
            const KEY: ApiKey = ApiKey::$key;
            $(const MAX_VERSION: i16 = $max;)?
            type Response = $resp;
        }
    )*};
}

client_requests! {
    ApiVersionsRequest => ApiVersionsResponse, ApiVersions;
    MetadataRequest => MetadataResponse, Metadata;
    // v13 identifies topics by id only; batches are addressed by name here.
    ProduceRequest => ProduceResponse, Produce, max 12;
    FetchRequest => FetchResponse, Fetch;
    ListOffsetsRequest => ListOffsetsResponse, ListOffsets;
    CreateTopicsRequest => CreateTopicsResponse, CreateTopics;
    DeleteTopicsRequest => DeleteTopicsResponse, DeleteTopics;
    CreatePartitionsRequest => CreatePartitionsResponse, CreatePartitions;
    DescribeConfigsRequest => DescribeConfigsResponse, DescribeConfigs;
    IncrementalAlterConfigsRequest => IncrementalAlterConfigsResponse, IncrementalAlterConfigs;
    DescribeClusterRequest => DescribeClusterResponse, DescribeCluster;
    DescribeQuorumRequest => DescribeQuorumResponse, DescribeQuorum;
    ElectLeadersRequest => ElectLeadersResponse, ElectLeaders;
    DeleteRecordsRequest => DeleteRecordsResponse, DeleteRecords;
    FindCoordinatorRequest => FindCoordinatorResponse, FindCoordinator;
    JoinGroupRequest => JoinGroupResponse, JoinGroup;
    SyncGroupRequest => SyncGroupResponse, SyncGroup;
    HeartbeatRequest => HeartbeatResponse, Heartbeat;
    LeaveGroupRequest => LeaveGroupResponse, LeaveGroup;
    OffsetCommitRequest => OffsetCommitResponse, OffsetCommit;
    OffsetFetchRequest => OffsetFetchResponse, OffsetFetch;
    OffsetDeleteRequest => OffsetDeleteResponse, OffsetDelete;
    ListGroupsRequest => ListGroupsResponse, ListGroups;
    DescribeGroupsRequest => DescribeGroupsResponse, DescribeGroups;
    DeleteGroupsRequest => DeleteGroupsResponse, DeleteGroups;
    // v6 adds keep_prepared_txn (transactions, KIP-939).
    InitProducerIdRequest => InitProducerIdResponse, InitProducerId, max 5;
}

const CLIENT_SOFTWARE_NAME: &str = "tern-client";

/// Encodes `req` as a complete frame (length prefix, header, body). The correlation id is left 0
/// and stamped by the writer task.
pub fn encode_frame<R: ClientRequest>(req: &R, version: i16, client_id: &str) -> Result<BytesMut> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY as i16)
        .with_request_api_version(version)
        .with_client_id(Some(StrBytes::from_string(client_id.to_owned())));
    let header_version = R::KEY.request_header_version(version);
    let size = header
        .compute_size(header_version)
        .and_then(|h| Ok(h + req.compute_size(version)?))
        .map_err(Error::protocol)?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(size as i32);
    header.encode(&mut buf, header_version).map_err(Error::protocol)?;
    req.encode(&mut buf, version).map_err(Error::protocol)?;
    debug_assert_eq!(buf.len(), 4 + size);
    Ok(buf)
}

struct Outgoing {
    frame: BytesMut,
    reply: Option<Reply>,
}

struct Reply {
    api: ApiKey,
    version: i16,
    tx: oneshot::Sender<Result<Bytes>>,
}

struct Pending {
    correlation_id: i32,
    reply: Reply,
}

struct Inner {
    addr: String,
    client_id: String,
    tx: mpsc::UnboundedSender<Outgoing>,
    versions: HashMap<i16, i16>,
    dead: Arc<AtomicBool>,
    request_timeout: Duration,
    reader: AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A cheaply clonable handle to one broker connection.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("addr", &self.inner.addr).finish()
    }
}

/// A response that will arrive later; obtained from [`Connection::enqueue`].
pub struct PendingResponse<T> {
    rx: oneshot::Receiver<Result<Bytes>>,
    api: ApiKey,
    version: i16,
    broker: String,
    timeout: Duration,
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<T: Decodable> PendingResponse<T> {
    /// Replaces the connection's request timeout for this response (JoinGroup may legitimately
    /// wait for the whole rebalance timeout).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Waits for the response and decodes it.
    pub async fn wait(self) -> Result<T> {
        let body = match tokio::time::timeout(self.timeout, self.rx).await {
            Err(_) => return Err(Error::Timeout { api: self.api, broker: self.broker }),
            Ok(Err(_)) => return Err(Error::ConnectionClosed { broker: self.broker }),
            Ok(Ok(r)) => r?,
        };
        let mut body = body;
        T::decode(&mut body, self.version).map_err(|e| {
            Error::Protocol(format!("decoding {:?} v{} response from {}: {e}", self.api, self.version, self.broker))
        })
    }
}

impl Connection {
    /// Connects to `addr` and negotiates API versions.
    pub async fn connect(addr: &str, client_id: &str, request_timeout: Duration) -> Result<Self> {
        let stream = tokio::time::timeout(request_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::Timeout { api: ApiKey::ApiVersions, broker: addr.to_owned() })?
            .map_err(|e| Error::io(addr, e))?;
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        let (ptx, prx) = mpsc::unbounded_channel();
        let dead = Arc::new(AtomicBool::new(false));
        let reader = tokio::spawn(read_loop(rd, prx, dead.clone(), addr.to_owned()));
        tokio::spawn(write_loop(wr, rx, ptx, dead.clone(), addr.to_owned()));
        let mut conn = Connection {
            inner: Arc::new(Inner {
                addr: addr.to_owned(),
                client_id: client_id.to_owned(),
                tx,
                versions: HashMap::new(),
                dead,
                request_timeout,
                reader: reader.abort_handle(),
            }),
        };
        let versions = conn.negotiate().await?;
        Arc::get_mut(&mut conn.inner).expect("connection not shared during setup").versions = versions;
        Ok(conn)
    }

    async fn negotiate(&self) -> Result<HashMap<i16, i16>> {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(CLIENT_SOFTWARE_NAME))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut resp = self.enqueue(&req, 3)?.wait().await;
        // Brokers that do not know v3 answer with a v0 body and UNSUPPORTED_VERSION.
        if !matches!(&resp, Ok(r) if r.error_code == 0) {
            resp = self.enqueue(&req, 0)?.wait().await;
        }
        let resp = resp?;
        if let Some(e) = Error::from_code(resp.error_code, None, None, None) {
            return Err(e);
        }
        let mut versions = HashMap::new();
        for k in &resp.api_keys {
            let Ok(key) = ApiKey::try_from(k.api_key) else {
                continue;
            };
            if let Some(max) = client_max_version(key) {
                let v = max.min(k.max_version);
                if v >= k.min_version && v >= client_min_version(key) {
                    versions.insert(k.api_key, v);
                }
            }
        }
        Ok(versions)
    }

    /// The broker address this connection was opened to.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// False once the socket failed or closed.
    pub fn is_alive(&self) -> bool {
        !self.inner.dead.load(Ordering::Acquire)
    }

    /// The negotiated version for `api`, if both sides support one.
    pub fn version(&self, api: ApiKey) -> Option<i16> {
        self.inner.versions.get(&(api as i16)).copied()
    }

    /// The negotiated version for `R`, or an `UnsupportedVersion` error.
    pub fn version_of<R: ClientRequest>(&self) -> Result<i16> {
        self.version(R::KEY).ok_or_else(|| Error::UnsupportedVersion { api: R::KEY, broker: self.inner.addr.clone() })
    }

    /// Queues `req` at `version` for sending now and returns a handle to await its response.
    /// Requests queued on one connection are written in call order.
    pub fn enqueue<R: ClientRequest>(&self, req: &R, version: i16) -> Result<PendingResponse<R::Response>> {
        let frame = encode_frame(req, version, &self.inner.client_id)?;
        let (tx, rx) = oneshot::channel();
        let reply = Reply { api: R::KEY, version, tx };
        self.push(Outgoing { frame, reply: Some(reply) })?;
        Ok(PendingResponse {
            rx,
            api: R::KEY,
            version,
            broker: self.inner.addr.clone(),
            timeout: self.inner.request_timeout,
            _t: std::marker::PhantomData,
        })
    }

    /// Queues a request whose response the broker will not send (Produce with acks=0).
    pub fn enqueue_no_response<R: ClientRequest>(&self, req: &R, version: i16) -> Result<()> {
        let frame = encode_frame(req, version, &self.inner.client_id)?;
        self.push(Outgoing { frame, reply: None })
    }

    fn push(&self, out: Outgoing) -> Result<()> {
        if !self.is_alive() {
            return Err(Error::ConnectionClosed { broker: self.inner.addr.clone() });
        }
        self.inner.tx.send(out).map_err(|_| Error::ConnectionClosed { broker: self.inner.addr.clone() })
    }

    /// Sends `req` at the negotiated version and waits for the response.
    pub async fn send<R: ClientRequest>(&self, req: &R) -> Result<R::Response> {
        let v = self.version_of::<R>()?;
        self.enqueue(req, v)?.wait().await
    }
}

fn client_min_version(key: ApiKey) -> i16 {
    match key {
        ApiKey::Metadata => 1,
        // The oldest versions this client fills in (OffsetCommit v0/v1 and OffsetFetch v0 are
        // Kafka 0.8's ZooKeeper-era forms; the codecs accept them for old clients of the broker).
        ApiKey::OffsetCommit => 2,
        ApiKey::OffsetFetch => 1,
        _ => 0,
    }
}

fn client_max_version(key: ApiKey) -> Option<i16> {
    Some(match key {
        ApiKey::ApiVersions => ApiVersionsRequest::MAX_VERSION,
        ApiKey::Metadata => MetadataRequest::MAX_VERSION,
        ApiKey::Produce => ProduceRequest::MAX_VERSION,
        ApiKey::Fetch => FetchRequest::MAX_VERSION,
        ApiKey::ListOffsets => ListOffsetsRequest::MAX_VERSION,
        ApiKey::CreateTopics => CreateTopicsRequest::MAX_VERSION,
        ApiKey::DeleteTopics => DeleteTopicsRequest::MAX_VERSION,
        ApiKey::CreatePartitions => CreatePartitionsRequest::MAX_VERSION,
        ApiKey::DescribeConfigs => DescribeConfigsRequest::MAX_VERSION,
        ApiKey::IncrementalAlterConfigs => IncrementalAlterConfigsRequest::MAX_VERSION,
        ApiKey::DescribeCluster => DescribeClusterRequest::MAX_VERSION,
        ApiKey::DescribeQuorum => DescribeQuorumRequest::MAX_VERSION,
        ApiKey::ElectLeaders => ElectLeadersRequest::MAX_VERSION,
        ApiKey::DeleteRecords => DeleteRecordsRequest::MAX_VERSION,
        ApiKey::FindCoordinator => FindCoordinatorRequest::MAX_VERSION,
        ApiKey::JoinGroup => JoinGroupRequest::MAX_VERSION,
        ApiKey::SyncGroup => SyncGroupRequest::MAX_VERSION,
        ApiKey::Heartbeat => HeartbeatRequest::MAX_VERSION,
        ApiKey::LeaveGroup => LeaveGroupRequest::MAX_VERSION,
        ApiKey::OffsetCommit => OffsetCommitRequest::MAX_VERSION,
        ApiKey::OffsetFetch => OffsetFetchRequest::MAX_VERSION,
        ApiKey::OffsetDelete => OffsetDeleteRequest::MAX_VERSION,
        ApiKey::ListGroups => ListGroupsRequest::MAX_VERSION,
        ApiKey::DescribeGroups => DescribeGroupsRequest::MAX_VERSION,
        ApiKey::DeleteGroups => DeleteGroupsRequest::MAX_VERSION,
        ApiKey::InitProducerId => InitProducerIdRequest::MAX_VERSION,
        _ => return None,
    })
}

async fn write_loop(
    wr: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    pending: mpsc::UnboundedSender<Pending>,
    dead: Arc<AtomicBool>,
    addr: String,
) {
    let mut wr = BufWriter::with_capacity(64 * 1024, wr);
    let mut next_id: i32 = 1;
    while let Some(mut out) = rx.recv().await {
        loop {
            let id = next_id;
            next_id = next_id.wrapping_add(1).max(1);
            // length(4) + api_key(2) + api_version(2), then the correlation id.
            out.frame[8..12].copy_from_slice(&id.to_be_bytes());
            if let Some(reply) = out.reply.take() {
                // Registered before writing, so the reader always knows what it is waiting for.
                let _ = pending.send(Pending { correlation_id: id, reply });
            }
            if let Err(e) = wr.write_all(&out.frame).await {
                tracing::debug!(broker = %addr, error = %e, "write failed");
                dead.store(true, Ordering::Release);
                return;
            }
            match rx.try_recv() {
                Ok(next) => out = next,
                Err(_) => break,
            }
        }
        if let Err(e) = wr.flush().await {
            tracing::debug!(broker = %addr, error = %e, "flush failed");
            dead.store(true, Ordering::Release);
            return;
        }
    }
}

async fn read_loop(
    rd: tokio::net::tcp::OwnedReadHalf,
    mut pending: mpsc::UnboundedReceiver<Pending>,
    dead: Arc<AtomicBool>,
    addr: String,
) {
    let mut rd = tokio::io::BufReader::with_capacity(64 * 1024, rd);
    let err = loop {
        let len = match rd.read_i32().await {
            Ok(n) if n >= 4 => n as usize,
            Ok(n) => break Error::Protocol(format!("bad frame length {n} from {addr}")),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break Error::ConnectionClosed { broker: addr.clone() }
            }
            Err(e) => break Error::io(&addr, e),
        };
        let mut body = BytesMut::zeroed(len);
        if let Err(e) = rd.read_exact(&mut body).await {
            break Error::io(&addr, e);
        }
        let mut body = body.freeze();
        let Some(p) = pending.recv().await else {
            break Error::Protocol(format!("unsolicited response from {addr}"));
        };
        let hv = p.reply.api.response_header_version(p.reply.version);
        match ResponseHeader::decode(&mut body, hv) {
            Ok(h) if h.correlation_id == p.correlation_id => {
                let _ = p.reply.tx.send(Ok(body));
            }
            Ok(h) => {
                let e = Error::Protocol(format!(
                    "correlation id mismatch from {addr}: expected {}, got {}",
                    p.correlation_id, h.correlation_id
                ));
                let _ = p.reply.tx.send(Err(e.clone()));
                break e;
            }
            Err(e) => {
                let e = Error::protocol(e);
                let _ = p.reply.tx.send(Err(e.clone()));
                break e;
            }
        }
    };
    tracing::debug!(broker = %addr, error = %err, "connection reader stopped");
    dead.store(true, Ordering::Release);
    pending.close();
    while let Ok(p) = pending.try_recv() {
        let _ = p.reply.tx.send(Err(err.clone()));
    }
}
