//! The TCP transport between controller voters: [`QuorumServer`] serves openraft's RPCs for
//! a local [`Raft`] (and controller requests, see [`super::rpc`]), and [`TcpNetwork`] is the
//! [`RaftNetworkFactory`] that sends them over one lazily (re)connected stream per peer, one
//! request at a time (no pipelining). [`super::ControllerClient`] uses the same per-peer
//! connections.
//!
//! Every frame is `[u32 big-endian length][u8 kind][u32 correlation id][body]`, the length
//! counting the bytes after it (as Kafka frames) and the rest being the [`codec`] wire
//! encoding. A frame longer than [`MAX_FRAME_BYTES`], or one that does not decode, closes the
//! connection. Snapshots travel in openraft's chunks (`Config::snapshot_max_chunk_size`, 3 MiB
//! by default), which must stay below that bound.

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use tokio::sync::Mutex;
use tokio::task::{JoinHandle, JoinSet};

use super::codec::{self, RaftReply, RaftRequest, RemoteFailure};
use super::{rpc, ControllerNode, NodeId, Raft, TypeConfig};

/// The largest frame either side reads or writes, after the length prefix (Kafka's
/// `socket.request.max.bytes` for the quorum listener): above openraft's default snapshot
/// chunk of 3 MiB and any AppendEntries of its default 300 entries of metadata records.
pub const MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;

/// How long a request may wait for its answer when openraft allows longer.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

// ---- controller.quorum.voters ----

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad controller.quorum.voters entry {entry:?}: {reason}")]
pub struct VotersError {
    pub entry: String,
    pub reason: String,
}

/// Parses Kafka's `controller.quorum.voters`, `id@host:port,...`, into each voter's address;
/// host names are resolved now, to their first address.
pub fn parse_quorum_voters(voters: &str) -> Result<BTreeMap<NodeId, SocketAddr>, VotersError> {
    let mut parsed = BTreeMap::new();
    for entry in voters.split(',') {
        let entry = entry.trim();
        let bad = |reason: &str| VotersError { entry: entry.to_string(), reason: reason.to_string() };
        let (id, host_port) = entry.split_once('@').ok_or_else(|| bad("expected id@host:port"))?;
        let id: NodeId = id.parse().map_err(|_| bad("the id is not a non-negative integer"))?;
        let (host, port) = host_port.rsplit_once(':').ok_or_else(|| bad("expected host:port after '@'"))?;
        let port: u16 = port.parse().map_err(|_| bad("the port is not a number from 0 to 65535"))?;
        // Brackets of an IPv6 host, as in `1@[::1]:9093`.
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        let addr = (host, port)
            .to_socket_addrs()
            .map_err(|e| bad(&format!("cannot resolve the host: {e}")))?
            .next()
            .ok_or_else(|| bad("the host has no address"))?;
        if parsed.insert(id, addr).is_some() {
            return Err(bad("the id appears twice"));
        }
    }
    Ok(parsed)
}

// ---- frames ----

/// Reads one frame's payload; `Ok(None)` at a clean end of stream before a frame starts.
async fn read_frame(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is over the limit of {MAX_FRAME_BYTES}"),
        ));
    }
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await?;
    Ok(Some(payload))
}

async fn write_frame(stream: &mut TcpStream, payload: &[u8]) -> io::Result<()> {
    let mut frame = Vec::with_capacity(4 + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    stream.write_all(&frame).await
}

// ---- server ----

/// Serves the quorum's RPCs for one voter on a listener until dropped (or stopped): openraft's
/// RPCs for its [`Raft`], and requests for the active controller (see [`super::rpc`]) for its
/// [`ControllerNode`]. Its connections close with it.
pub struct QuorumServer {
    local_addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl QuorumServer {
    /// Serves on an already bound listener, so that every voter's address is known before
    /// any Raft starts.
    pub fn serve(listener: TcpListener, node: Arc<ControllerNode>) -> io::Result<QuorumServer> {
        let local_addr = listener.local_addr()?;
        let accept = tokio::spawn(async move {
            // Owned by this task: aborting it drops the set, which aborts every connection.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, peer)) => {
                            let _ = stream.set_nodelay(true);
                            connections.spawn(serve_connection(stream, peer, node.clone()));
                        }
                        Err(e) => {
                            tracing::warn!(%local_addr, error = %e, "quorum listener failed to accept");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    },
                    // Reaps finished connections so the set does not grow.
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Ok(QuorumServer { local_addr, accept })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and closes every connection.
    pub fn stop(&self) {
        self.accept.abort();
    }
}

impl Drop for QuorumServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn serve_connection(mut stream: TcpStream, peer: SocketAddr, node: Arc<ControllerNode>) {
    loop {
        let payload = match read_frame(&mut stream).await {
            Ok(Some(payload)) => payload,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(%peer, reason = %e, "closing quorum connection");
                return;
            }
        };
        let payload = if codec::is_controller_message(&payload) {
            let (correlation_id, api_key, api_version, body) = match codec::decode_controller_request(&payload) {
                Ok(decoded) => decoded,
                Err(e) => {
                    tracing::warn!(%peer, reason = %e, "closing quorum connection: undecodable controller request");
                    return;
                }
            };
            match rpc::serve(&node, api_key, api_version, body).await {
                Ok(body) => codec::encode_controller_reply(correlation_id, &body),
                Err(reason) => {
                    tracing::warn!(%peer, %reason, "closing quorum connection");
                    return;
                }
            }
        } else {
            let (correlation_id, request) = match codec::decode_request(&payload) {
                Ok(decoded) => decoded,
                Err(e) => {
                    tracing::warn!(%peer, reason = %e, "closing quorum connection: undecodable request");
                    return;
                }
            };
            let started = std::time::Instant::now();
            let kind = request.kind();
            let reply = dispatch(node.raft(), request).await;
            let took = started.elapsed();
            if took > std::time::Duration::from_millis(100) {
                tracing::warn!(%peer, kind, took_ms = took.as_millis() as u64, "slow Raft request");
            }
            codec::encode_reply(correlation_id, &reply)
        };
        if payload.len() > MAX_FRAME_BYTES {
            // Cannot happen with openraft's replies nor the controller's; refuse rather than
            // send what the peer would refuse.
            tracing::warn!(%peer, bytes = payload.len(), "closing quorum connection: reply over the frame limit");
            return;
        }
        if let Err(e) = write_frame(&mut stream, &payload).await {
            tracing::warn!(%peer, reason = %e, "closing quorum connection: write failed");
            return;
        }
    }
}

async fn dispatch(raft: &Raft, request: RaftRequest) -> RaftReply {
    match request {
        RaftRequest::AppendEntries(rpc) => match raft.append_entries(rpc).await {
            Ok(resp) => RaftReply::AppendEntries(resp),
            Err(e) => RaftReply::Failed(failure(e, |never| match never {})),
        },
        RaftRequest::Vote(rpc) => match raft.vote(rpc).await {
            Ok(resp) => RaftReply::Vote(resp),
            Err(e) => RaftReply::Failed(failure(e, |never| match never {})),
        },
        RaftRequest::InstallSnapshot(rpc) => match raft.install_snapshot(rpc).await {
            Ok(resp) => RaftReply::InstallSnapshot(resp),
            Err(e) => RaftReply::Failed(failure(e, |InstallSnapshotError::SnapshotMismatch(m)| {
                RemoteFailure::SnapshotMismatch(m)
            })),
        },
    }
}

fn failure<E: std::error::Error>(e: RaftError<NodeId, E>, api: impl FnOnce(E) -> RemoteFailure) -> RemoteFailure {
    match e {
        RaftError::APIError(e) => api(e),
        RaftError::Fatal(Fatal::Stopped) => RemoteFailure::Stopped,
        RaftError::Fatal(Fatal::Panicked) => RemoteFailure::Panicked,
        RaftError::Fatal(fatal) => RemoteFailure::Fatal(fatal.to_string()),
    }
}

// ---- client ----

/// The transport a voter sends with: one connection per peer, at the address
/// `controller.quorum.voters` gives it.
#[derive(Clone)]
pub struct TcpNetwork {
    peers: Arc<BTreeMap<NodeId, Arc<Peer>>>,
    request_timeout: Duration,
}

impl TcpNetwork {
    pub fn new(voters: BTreeMap<NodeId, SocketAddr>) -> Self {
        let peers = voters.into_iter().map(|(id, addr)| (id, Arc::new(Peer::new(addr))));
        TcpNetwork { peers: Arc::new(peers.collect()), request_timeout: DEFAULT_REQUEST_TIMEOUT }
    }

    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }
}

/// One peer's connection, shared by every client openraft makes for it (one per replication
/// stream and per election), so that they take turns on one stream instead of each
/// connecting anew.
pub(super) struct Peer {
    addr: SocketAddr,
    link: Mutex<Link>,
    /// Whether the last exchange failed (for logging changes only).
    failing: AtomicBool,
}

#[derive(Default)]
struct Link {
    /// Connected on first use; dropped on any failure, to reconnect on the next request.
    stream: Option<TcpStream>,
    next_correlation_id: u32,
}

impl RaftNetworkFactory<TypeConfig> for TcpNetwork {
    type Network = TcpConnection;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> TcpConnection {
        TcpConnection { target, peer: self.peers.get(&target).cloned(), request_timeout: self.request_timeout }
    }
}

/// openraft's client for one peer.
pub struct TcpConnection {
    target: NodeId,
    /// `None` for a node missing from the voters.
    peer: Option<Arc<Peer>>,
    request_timeout: Duration,
}

/// Why a request got no reply; openraft retries either.
#[derive(Debug)]
pub(super) enum SendError {
    /// No connection could be made: openraft backs off before trying again.
    Unreachable(io::Error),
    Network(io::Error),
    /// The request encodes to more than [`MAX_FRAME_BYTES`]; it was not sent.
    TooLarge(usize),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Unreachable(e) => write!(f, "cannot connect: {e}"),
            SendError::Network(e) => write!(f, "{e}"),
            SendError::TooLarge(bytes) => write!(f, "request of {bytes} bytes is over the limit of {MAX_FRAME_BYTES}"),
        }
    }
}

type RpcResult<T, E = openraft::error::Infallible> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl TcpConnection {
    /// Sends `request` and waits for its reply, within the request timeout and openraft's
    /// deadline for the RPC (waiting for the peer's stream included).
    async fn call(&self, request: &RaftRequest, option: &RPCOption) -> Result<RaftReply, SendError> {
        let Some(peer) = &self.peer else {
            let e = io::Error::new(io::ErrorKind::NotFound, format!("node {} is not a voter", self.target));
            return Err(SendError::Unreachable(e));
        };
        let timeout = self.request_timeout.min(option.hard_ttl());
        let reply = peer.round_trip(|correlation_id| codec::encode_request(correlation_id, request), timeout).await?;
        codec::decode_reply(&reply).map(|(_, reply)| reply).map_err(|e| invalid(format!("bad reply: {e}")))
    }

    /// Maps a reply other than the expected one to openraft's errors.
    fn unexpected<E: std::error::Error>(&self, reply: RaftReply) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
        let fatal = |f| RPCError::RemoteError(RemoteError::new(self.target, RaftError::Fatal(f)));
        match reply {
            RaftReply::Failed(RemoteFailure::Stopped) => fatal(Fatal::Stopped),
            RaftReply::Failed(RemoteFailure::Panicked) => fatal(Fatal::Panicked),
            other => {
                let e = io::Error::other(format!("node {} answered {other:?}", self.target));
                RPCError::Network(NetworkError::new(&e))
            }
        }
    }
}

fn invalid(reason: String) -> SendError {
    SendError::Network(io::Error::new(io::ErrorKind::InvalidData, reason))
}

impl Peer {
    pub(super) fn new(addr: SocketAddr) -> Self {
        Peer { addr, link: Mutex::default(), failing: AtomicBool::new(false) }
    }

    /// Sends the message `encode` makes for the next correlation id and returns its reply,
    /// checked to answer it, within `timeout` (waiting for the stream included). Connects
    /// first if not connected; any failure drops the stream, to reconnect on the next call.
    pub(super) async fn round_trip(
        &self,
        encode: impl FnOnce(u32) -> Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, SendError> {
        let exchange = async {
            let mut link = self.link.lock().await;
            let correlation_id = link.next_correlation_id;
            link.next_correlation_id = correlation_id.wrapping_add(1);
            let payload = encode(correlation_id);
            if payload.len() > MAX_FRAME_BYTES {
                return Err(SendError::TooLarge(payload.len()));
            }
            // Taken out while in use: a failed or timed-out exchange drops it, since the
            // stream may hold half a request or an unread reply.
            let mut stream = match link.stream.take() {
                Some(stream) => stream,
                None => {
                    let stream = TcpStream::connect(self.addr).await.map_err(SendError::Unreachable)?;
                    let _ = stream.set_nodelay(true);
                    stream
                }
            };
            let reply = exchange(&mut stream, correlation_id, &payload).await?;
            link.stream = Some(stream);
            Ok(reply)
        };
        let result = match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => {
                let e = io::Error::new(io::ErrorKind::TimedOut, format!("no reply within {timeout:?}"));
                Err(SendError::Network(e))
            }
        };
        // Logged when the state changes, not per request: a voter that is down fails ten
        // requests a second.
        match &result {
            Err(e) if !self.failing.swap(true, Ordering::Relaxed) => {
                tracing::warn!(peer = %self.addr, error = %e, "quorum peer unreachable")
            }
            Ok(_) if self.failing.swap(false, Ordering::Relaxed) => {
                tracing::info!(peer = %self.addr, "quorum peer reachable again")
            }
            _ => {}
        }
        result
    }
}

/// Writes one request frame and reads its reply: `[u8 kind][u32 correlation id][body]`.
async fn exchange(stream: &mut TcpStream, correlation_id: u32, payload: &[u8]) -> Result<Vec<u8>, SendError> {
    write_frame(stream, payload).await.map_err(SendError::Network)?;
    let reply = read_frame(stream)
        .await
        .and_then(|payload| payload.ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof)))
        .map_err(SendError::Network)?;
    let Some(replied_to) = reply.get(1..5) else {
        return Err(invalid(format!("reply of {} bytes", reply.len())));
    };
    let replied_to = u32::from_be_bytes(replied_to.try_into().expect("4 bytes"));
    if replied_to != correlation_id {
        return Err(invalid(format!("reply to request {replied_to}, expected {correlation_id}")));
    }
    Ok(reply)
}

fn send_error<E: std::error::Error>(e: SendError) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
    match e {
        SendError::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
        SendError::Network(e) => RPCError::Network(NetworkError::new(&e)),
        SendError::TooLarge(bytes) => {
            let e = io::Error::other(format!("request of {bytes} bytes is over the limit of {MAX_FRAME_BYTES}"));
            RPCError::Network(NetworkError::new(&e))
        }
    }
}

impl RaftNetwork<TypeConfig> for TcpConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let entries = rpc.entries.len() as u64;
        match self.call(&RaftRequest::AppendEntries(rpc), &option).await {
            Err(SendError::TooLarge(_)) if entries > 1 => {
                // openraft resends fewer entries when told the payload is too large.
                Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(entries / 2)))
            }
            Err(e) => Err(send_error(e)),
            Ok(RaftReply::AppendEntries(resp)) => Ok(resp),
            Ok(other) => Err(self.unexpected(other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        // A chunk over the bound fails as a network error: snapshot_max_chunk_size is too big.
        match self.call(&RaftRequest::InstallSnapshot(rpc), &option).await.map_err(send_error)? {
            RaftReply::InstallSnapshot(resp) => Ok(resp),
            RaftReply::Failed(RemoteFailure::SnapshotMismatch(m)) => Err(RPCError::RemoteError(RemoteError::new(
                self.target,
                RaftError::APIError(InstallSnapshotError::SnapshotMismatch(m)),
            ))),
            other => Err(self.unexpected(other)),
        }
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        match self.call(&RaftRequest::Vote(rpc), &option).await.map_err(send_error)? {
            RaftReply::Vote(resp) => Ok(resp),
            other => Err(self.unexpected(other)),
        }
    }
}
