//! Encoding of openraft's values in the controller's files (and, later, on the wire), with
//! the field helpers of [`tern_metadata::codec`]. Every frame the files hold is
//! `[u32 length][u32 CRC-32C of the payload][payload]`.

use std::collections::{BTreeMap, BTreeSet};

use openraft::{BasicNode, CommittedLeaderId, EntryPayload, Membership};
use tern_metadata::codec::{decode_batch, encode_batch, DecodeError, Reader, Writer};

use super::{Entry, LogId, NodeId, RecordBatch, SnapshotMeta, StoredMembership, Vote};

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
