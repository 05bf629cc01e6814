//! Encoding of openraft's values in the controller's files and on the quorum's wire, with
//! the field helpers of [`tern_metadata::codec`]. Every frame the files hold is
//! `[u32 length][u32 CRC-32C of the payload][payload]`; the wire messages
//! ([`encode_request`], [`encode_reply`]) are the payloads of the TCP transport's frames.

use std::collections::{BTreeMap, BTreeSet};

use openraft::error::SnapshotMismatch;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{BasicNode, CommittedLeaderId, EntryPayload, Membership, SnapshotSegmentId};
use tern_metadata::codec::{decode_batch, encode_batch, DecodeError, Reader, Writer};

use super::{Entry, LogId, NodeId, RecordBatch, SnapshotMeta, StoredMembership, TypeConfig, Vote};

pub fn frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    out.extend_from_slice(payload);
}

/// The payload of the first whole frame of `buf` whose CRC matches, and the bytes it took;
/// `None` at a torn or corrupt tail.
pub fn unframe(buf: &[u8]) -> Option<(&[u8], usize)> {
    let len = u32::from_be_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(buf.get(4..8)?.try_into().ok()?);
    let payload = buf.get(8..8 + len)?;
    (crc32c::crc32c(payload) == crc).then_some((payload, 8 + len))
}

pub fn write_log_id(w: &mut Writer, log_id: &Option<LogId>) {
    match log_id {
        None => w.u8(0),
        Some(id) => {
            w.u8(1);
            w.u64(id.leader_id.term);
            w.u64(id.leader_id.node_id);
            w.u64(id.index);
        }
    }
}

pub fn read_log_id(r: &mut Reader) -> Result<Option<LogId>, DecodeError> {
    Ok(match r.u8()? {
        0 => None,
        _ => {
            let term = r.u64()?;
            let node_id = r.u64()?;
            Some(LogId::new(CommittedLeaderId::new(term, node_id), r.u64()?))
        }
    })
}

pub fn write_vote(w: &mut Writer, vote: &Vote) {
    w.u64(vote.leader_id.term);
    w.u64(vote.leader_id.node_id);
    w.bool(vote.committed);
}

pub fn read_vote(r: &mut Reader) -> Result<Vote, DecodeError> {
    let (term, node_id, committed) = (r.u64()?, r.u64()?, r.bool()?);
    Ok(if committed { Vote::new_committed(term, node_id) } else { Vote::new(term, node_id) })
}

pub fn write_membership(w: &mut Writer, m: &Membership<NodeId, BasicNode>) {
    let configs = m.get_joint_config();
    w.u32(configs.len() as u32);
    for config in configs {
        w.u32(config.len() as u32);
        for id in config {
            w.u64(*id);
        }
    }
    let nodes: Vec<_> = m.nodes().collect();
    w.u32(nodes.len() as u32);
    for (id, node) in nodes {
        w.u64(*id);
        w.string(&node.addr);
    }
}

pub fn read_membership(r: &mut Reader) -> Result<Membership<NodeId, BasicNode>, DecodeError> {
    let n = r.count()?;
    let mut configs = Vec::with_capacity(n);
    for _ in 0..n {
        let m = r.count()?;
        let mut config = BTreeSet::new();
        for _ in 0..m {
            config.insert(r.u64()?);
        }
        configs.push(config);
    }
    let n = r.count()?;
    let mut nodes = BTreeMap::new();
    for _ in 0..n {
        let id = r.u64()?;
        nodes.insert(id, BasicNode { addr: r.string()? });
    }
    Ok(Membership::new(configs, nodes))
}

pub fn write_stored_membership(w: &mut Writer, m: &StoredMembership) {
    write_log_id(w, m.log_id());
    write_membership(w, m.membership());
}

pub fn read_stored_membership(r: &mut Reader) -> Result<StoredMembership, DecodeError> {
    let log_id = read_log_id(r)?;
    Ok(StoredMembership::new(log_id, read_membership(r)?))
}

pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = Writer(&mut out);
    write_log_id(&mut w, &Some(entry.log_id));
    match &entry.payload {
        EntryPayload::Blank => w.u8(0),
        EntryPayload::Normal(batch) => {
            w.u8(1);
            w.bytes(&encode_batch(&batch.0));
        }
        EntryPayload::Membership(m) => {
            w.u8(2);
            write_membership(&mut w, m);
        }
    }
    out
}

pub fn decode_entry(payload: &[u8]) -> Result<Entry, DecodeError> {
    let mut r = Reader(payload);
    let log_id = read_log_id(&mut r)?.ok_or(DecodeError::Invalid("entry without log id"))?;
    let payload = match r.u8()? {
        0 => EntryPayload::Blank,
        1 => EntryPayload::Normal(RecordBatch(decode_batch(r.bytes()?)?)),
        2 => EntryPayload::Membership(read_membership(&mut r)?),
        _ => return Err(DecodeError::Invalid("entry payload type")),
    };
    Ok(Entry { log_id, payload })
}

pub fn encode_snapshot_meta(meta: &SnapshotMeta, w: &mut Writer) {
    write_log_id(w, &meta.last_log_id);
    write_stored_membership(w, &meta.last_membership);
    w.string(&meta.snapshot_id);
}

pub fn decode_snapshot_meta(r: &mut Reader) -> Result<SnapshotMeta, DecodeError> {
    Ok(SnapshotMeta {
        last_log_id: read_log_id(r)?,
        last_membership: read_stored_membership(r)?,
        snapshot_id: r.string()?,
    })
}

/// Writes `payload` framed to `path` atomically: a temp file, fsynced, renamed over it, and
/// the directory fsynced.
pub fn write_file_atomically(path: &std::path::Path, payload: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut framed = Vec::with_capacity(payload.len() + 8);
    frame(payload, &mut framed);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&framed)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Reads a file written by [`write_file_atomically`]; `None` if it does not exist.
pub fn read_file(path: &std::path::Path) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => match unframe(&bytes) {
            Some((payload, used)) if used == bytes.len() => Ok(Some(payload.to_vec())),
            _ => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{} is corrupt", path.display()))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A request of the quorum's wire: one of openraft's RPCs.
#[derive(Debug)]
pub enum RaftRequest {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
}

impl RaftRequest {
    /// The RPC's name, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            RaftRequest::AppendEntries(_) => "AppendEntries",
            RaftRequest::Vote(_) => "Vote",
            RaftRequest::InstallSnapshot(_) => "InstallSnapshot",
        }
    }
}

/// The answer to a [`RaftRequest`]: openraft's response, or the error the remote Raft
/// returned.
#[derive(Debug, PartialEq, Eq)]
pub enum RaftReply {
    AppendEntries(AppendEntriesResponse<NodeId>),
    Vote(VoteResponse<NodeId>),
    InstallSnapshot(InstallSnapshotResponse<NodeId>),
    Failed(RemoteFailure),
}

/// An error of the remote Raft, as far as the sender can act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteFailure {
    /// The remote Raft has shut down.
    Stopped,
    Panicked,
    /// Any other fatal error (a storage error), by its message.
    Fatal(String),
    /// The snapshot chunk did not continue the one the remote was receiving.
    SnapshotMismatch(SnapshotMismatch),
}

const KIND_APPEND_ENTRIES: u8 = 1;
const KIND_VOTE: u8 = 2;
const KIND_INSTALL_SNAPSHOT: u8 = 3;
/// Kinds of replies: the request's kind, or this one for an error of the remote Raft.
const KIND_FAILED: u8 = 0xff;

/// `[u8 kind][u32 correlation id][body]`.
pub fn encode_request(correlation_id: u32, request: &RaftRequest) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = Writer(&mut out);
    match request {
        RaftRequest::AppendEntries(rpc) => {
            w.u8(KIND_APPEND_ENTRIES);
            w.u32(correlation_id);
            write_vote(&mut w, &rpc.vote);
            write_log_id(&mut w, &rpc.prev_log_id);
            write_log_id(&mut w, &rpc.leader_commit);
            w.u32(rpc.entries.len() as u32);
            for entry in &rpc.entries {
                w.bytes(&encode_entry(entry));
            }
        }
        RaftRequest::Vote(rpc) => {
            w.u8(KIND_VOTE);
            w.u32(correlation_id);
            write_vote(&mut w, &rpc.vote);
            write_log_id(&mut w, &rpc.last_log_id);
        }
        RaftRequest::InstallSnapshot(rpc) => {
            w.u8(KIND_INSTALL_SNAPSHOT);
            w.u32(correlation_id);
            write_vote(&mut w, &rpc.vote);
            encode_snapshot_meta(&rpc.meta, &mut w);
            w.u64(rpc.offset);
            w.bool(rpc.done);
            w.bytes(&rpc.data);
        }
    }
    out
}

pub fn decode_request(payload: &[u8]) -> Result<(u32, RaftRequest), DecodeError> {
    let mut r = Reader(payload);
    let kind = r.u8()?;
    let correlation_id = r.u32()?;
    let request = match kind {
        KIND_APPEND_ENTRIES => {
            let vote = read_vote(&mut r)?;
            let prev_log_id = read_log_id(&mut r)?;
            let leader_commit = read_log_id(&mut r)?;
            let n = r.count()?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                entries.push(decode_entry(r.bytes()?)?);
            }
            RaftRequest::AppendEntries(AppendEntriesRequest { vote, prev_log_id, leader_commit, entries })
        }
        KIND_VOTE => RaftRequest::Vote(VoteRequest { vote: read_vote(&mut r)?, last_log_id: read_log_id(&mut r)? }),
        KIND_INSTALL_SNAPSHOT => RaftRequest::InstallSnapshot(InstallSnapshotRequest {
            vote: read_vote(&mut r)?,
            meta: decode_snapshot_meta(&mut r)?,
            offset: r.u64()?,
            done: r.bool()?,
            data: r.bytes()?.to_vec(),
        }),
        _ => return Err(DecodeError::Invalid("request kind")),
    };
    end(&r)?;
    Ok((correlation_id, request))
}

/// `[u8 kind][u32 correlation id][body]`, the kind being the request's or [`KIND_FAILED`].
pub fn encode_reply(correlation_id: u32, reply: &RaftReply) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = Writer(&mut out);
    match reply {
        RaftReply::AppendEntries(resp) => {
            w.u8(KIND_APPEND_ENTRIES);
            w.u32(correlation_id);
            match resp {
                AppendEntriesResponse::Success => w.u8(0),
                AppendEntriesResponse::PartialSuccess(matching) => {
                    w.u8(1);
                    write_log_id(&mut w, matching);
                }
                AppendEntriesResponse::Conflict => w.u8(2),
                AppendEntriesResponse::HigherVote(vote) => {
                    w.u8(3);
                    write_vote(&mut w, vote);
                }
            }
        }
        RaftReply::Vote(resp) => {
            w.u8(KIND_VOTE);
            w.u32(correlation_id);
            write_vote(&mut w, &resp.vote);
            w.bool(resp.vote_granted);
            write_log_id(&mut w, &resp.last_log_id);
        }
        RaftReply::InstallSnapshot(resp) => {
            w.u8(KIND_INSTALL_SNAPSHOT);
            w.u32(correlation_id);
            write_vote(&mut w, &resp.vote);
        }
        RaftReply::Failed(failure) => {
            w.u8(KIND_FAILED);
            w.u32(correlation_id);
            match failure {
                RemoteFailure::Stopped => w.u8(0),
                RemoteFailure::Panicked => w.u8(1),
                RemoteFailure::Fatal(message) => {
                    w.u8(2);
                    w.string(message);
                }
                RemoteFailure::SnapshotMismatch(m) => {
                    w.u8(3);
                    for segment in [&m.expect, &m.got] {
                        w.string(&segment.id);
                        w.u64(segment.offset);
                    }
                }
            }
        }
    }
    out
}

pub fn decode_reply(payload: &[u8]) -> Result<(u32, RaftReply), DecodeError> {
    let mut r = Reader(payload);
    let kind = r.u8()?;
    let correlation_id = r.u32()?;
    let reply = match kind {
        KIND_APPEND_ENTRIES => RaftReply::AppendEntries(match r.u8()? {
            0 => AppendEntriesResponse::Success,
            1 => AppendEntriesResponse::PartialSuccess(read_log_id(&mut r)?),
            2 => AppendEntriesResponse::Conflict,
            3 => AppendEntriesResponse::HigherVote(read_vote(&mut r)?),
            _ => return Err(DecodeError::Invalid("append entries response")),
        }),
        KIND_VOTE => RaftReply::Vote(VoteResponse {
            vote: read_vote(&mut r)?,
            vote_granted: r.bool()?,
            last_log_id: read_log_id(&mut r)?,
        }),
        KIND_INSTALL_SNAPSHOT => RaftReply::InstallSnapshot(InstallSnapshotResponse { vote: read_vote(&mut r)? }),
        KIND_FAILED => RaftReply::Failed(match r.u8()? {
            0 => RemoteFailure::Stopped,
            1 => RemoteFailure::Panicked,
            2 => RemoteFailure::Fatal(r.string()?),
            3 => {
                let mut segment =
                    || -> Result<_, DecodeError> { Ok(SnapshotSegmentId { id: r.string()?, offset: r.u64()? }) };
                let (expect, got) = (segment()?, segment()?);
                RemoteFailure::SnapshotMismatch(SnapshotMismatch { expect, got })
            }
            _ => return Err(DecodeError::Invalid("remote failure")),
        }),
        _ => return Err(DecodeError::Invalid("reply kind")),
    };
    end(&r)?;
    Ok((correlation_id, reply))
}

fn end(r: &Reader) -> Result<(), DecodeError> {
    if r.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::TrailingBytes(r.0.len()))
    }
}

/// The kind of a controller request and of its reply: a Kafka request for the active
/// controller (see [`super::rpc`]).
pub const KIND_CONTROLLER: u8 = 0x10;

/// Whether a wire message is a controller request (or reply) rather than a Raft RPC.
pub fn is_controller_message(payload: &[u8]) -> bool {
    payload.first() == Some(&KIND_CONTROLLER)
}

/// `[u8 KIND_CONTROLLER][u32 correlation id][i16 api key][i16 api version][request body]`, the
/// body being the Kafka request encoded in that version, without a request header.
pub fn encode_controller_request(correlation_id: u32, api_key: i16, api_version: i16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + body.len());
    let mut w = Writer(&mut out);
    w.u8(KIND_CONTROLLER);
    w.u32(correlation_id);
    w.i16(api_key);
    w.i16(api_version);
    out.extend_from_slice(body);
    out
}

/// The correlation id, api key, api version and request body of a controller request.
pub fn decode_controller_request(payload: &[u8]) -> Result<(u32, i16, i16, &[u8]), DecodeError> {
    let mut r = Reader(payload);
    if r.u8()? != KIND_CONTROLLER {
        return Err(DecodeError::Invalid("request kind"));
    }
    let correlation_id = r.u32()?;
    let api_key = r.i16()?;
    let api_version = r.i16()?;
    Ok((correlation_id, api_key, api_version, r.0))
}

/// `[u8 KIND_CONTROLLER][u32 correlation id][response body]`, the body being the Kafka
/// response encoded in the request's version, without a response header.
pub fn encode_controller_reply(correlation_id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + body.len());
    let mut w = Writer(&mut out);
    w.u8(KIND_CONTROLLER);
    w.u32(correlation_id);
    out.extend_from_slice(body);
    out
}

/// The correlation id and response body of a controller reply.
pub fn decode_controller_reply(payload: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    let mut r = Reader(payload);
    if r.u8()? != KIND_CONTROLLER {
        return Err(DecodeError::Invalid("reply kind"));
    }
    let correlation_id = r.u32()?;
    Ok((correlation_id, r.0))
}
