//! The records of `__consumer_offsets` in Apache Kafka's exact binary formats, so a log written
//! by Kafka loads here and the other way round.
//!
//! Every key and value starts with an int16 version. The key version tells the record type:
//! 0 and 1 are offset commits (`OffsetCommitKey.json`; Kafka writes 1), 2 is group metadata
//! (`GroupMetadataKey.json`). Other key versions belong to record types this crate does not
//! handle (KIP-848 consumer groups, share groups, ...) and decode to
//! [`RecordError::UnknownKeyVersion`], which a loader skips. Values follow
//! `OffsetCommitValue.json` (versions 0-4) and `GroupMetadataValue.json` (versions 0-4); version
//! 4 is flexible (compact strings, compact arrays, tagged fields). Unknown tagged fields are
//! skipped on decode and never written. A record with a key and no value is a tombstone.

use bytes::{BufMut, Bytes, BytesMut};

/// Key version Kafka writes for offset commits (0 has the same layout).
pub const OFFSET_COMMIT_KEY_VERSION: i16 = 1;
/// Key version of group metadata records.
pub const GROUP_METADATA_KEY_VERSION: i16 = 2;
/// Group metadata value version Kafka writes.
pub const GROUP_METADATA_VALUE_VERSION: i16 = 3;
/// Highest value version of either value type.
pub const MAX_VALUE_VERSION: i16 = 4;

/// Why a record could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    #[error("record truncated at byte {at}")]
    Truncated { at: usize },
    #[error("unknown __consumer_offsets key version {0}")]
    UnknownKeyVersion(i16),
    #[error("unsupported {kind} value version {version}")]
    UnsupportedValueVersion { kind: &'static str, version: i16 },
    #[error("invalid {what} at byte {at}")]
    Invalid { what: &'static str, at: usize },
}

/// The key of a `__consumer_offsets` record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OffsetsRecordKey {
    OffsetCommit { group: String, topic: String, partition: i32 },
    GroupMetadata { group: String },
}

impl OffsetsRecordKey {
    pub fn group(&self) -> &str {
        match self {
            OffsetsRecordKey::OffsetCommit { group, .. } | OffsetsRecordKey::GroupMetadata { group } => group,
        }
    }
}

/// `OffsetCommitValue`. Fields absent from a version decode to the JSON defaults
/// (`leader_epoch` -1, `expire_timestamp` -1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitValue {
    pub offset: i64,
    /// v3+
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
    /// v1 only; -1 when absent.
    pub expire_timestamp: i64,
}

impl OffsetCommitValue {
    /// The version Kafka writes: 1 when an explicit expire timestamp is set (OffsetCommit v2-v4
    /// retention time), otherwise 3.
    pub fn writer_version(&self) -> i16 {
        if self.expire_timestamp != -1 {
            1
        } else {
            3
        }
    }
}

/// `GroupMetadataValue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMetadataValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// v2+; -1 when absent.
    pub current_state_timestamp: i64,
    pub members: Vec<MemberMetadata>,
}

/// `GroupMetadataValue.MemberMetadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberMetadata {
    pub member_id: String,
    /// v3+
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// v1+; 0 when absent (Kafka then uses the session timeout).
    pub rebalance_timeout: i32,
    pub session_timeout: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// The value of a `__consumer_offsets` record; its type follows from the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetsRecordValue {
    OffsetCommit(OffsetCommitValue),
    GroupMetadata(GroupMetadataValue),
}

/// Java's `String.hashCode`: over UTF-16 code units, wrapping.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

/// The `__consumer_offsets` partition of a group: Kafka's
/// `Utils.abs(groupId.hashCode()) % offsets.topic.num.partitions`, where `Utils.abs` maps
/// `i32::MIN` to 0 and is `Math.abs` otherwise.
pub fn partition_for(group_id: &str, num_partitions: i32) -> i32 {
    let h = java_string_hash(group_id);
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % num_partitions.max(1)
}

pub fn encode_key(key: &OffsetsRecordKey) -> Bytes {
    let mut w = Writer::new(false);
    match key {
        OffsetsRecordKey::OffsetCommit { group, topic, partition } => {
            w.buf.reserve(2 + 2 + group.len() + 2 + topic.len() + 4);
            w.i16(OFFSET_COMMIT_KEY_VERSION);
            w.string(group);
            w.string(topic);
            w.i32(*partition);
        }
        OffsetsRecordKey::GroupMetadata { group } => {
            w.i16(GROUP_METADATA_KEY_VERSION);
            w.string(group);
        }
    }
    w.buf.freeze()
}

pub fn decode_key(bytes: &Bytes) -> Result<OffsetsRecordKey, RecordError> {
    let mut r = Reader::new(bytes, false);
    let version = r.i16()?;
    match version {
        0 | 1 => Ok(OffsetsRecordKey::OffsetCommit { group: r.string()?, topic: r.string()?, partition: r.i32()? }),
        2 => Ok(OffsetsRecordKey::GroupMetadata { group: r.string()? }),
        v => Err(RecordError::UnknownKeyVersion(v)),
    }
}

/// Encodes `value` at `version` (fields the version lacks are dropped).
pub fn encode_value(value: &OffsetsRecordValue, version: i16) -> Result<Bytes, RecordError> {
    match value {
        OffsetsRecordValue::OffsetCommit(v) => encode_offset_commit_value(v, version),
        OffsetsRecordValue::GroupMetadata(v) => encode_group_metadata_value(v, version),
    }
}

/// Decodes the value of a record with key `key`; returns the value's version with it.
pub fn decode_value(key: &OffsetsRecordKey, bytes: &Bytes) -> Result<(i16, OffsetsRecordValue), RecordError> {
    match key {
        OffsetsRecordKey::OffsetCommit { .. } => {
            decode_offset_commit_value(bytes).map(|(v, o)| (v, OffsetsRecordValue::OffsetCommit(o)))
        }
        OffsetsRecordKey::GroupMetadata { .. } => {
            decode_group_metadata_value(bytes).map(|(v, g)| (v, OffsetsRecordValue::GroupMetadata(g)))
        }
    }
}

pub fn encode_offset_commit_value(v: &OffsetCommitValue, version: i16) -> Result<Bytes, RecordError> {
    if !(0..=MAX_VALUE_VERSION).contains(&version) {
        return Err(RecordError::UnsupportedValueVersion { kind: "OffsetCommitValue", version });
    }
    let mut w = Writer::new(version >= 4);
    w.buf.reserve(2 + 8 + 4 + 2 + v.metadata.len() + 8 + 8 + 1);
    w.i16(version);
    w.i64(v.offset);
    if version >= 3 {
        w.i32(v.leader_epoch);
    }
    w.string(&v.metadata);
    w.i64(v.commit_timestamp);
    if version == 1 {
        w.i64(v.expire_timestamp);
    }
    w.tagged_fields();
    Ok(w.buf.freeze())
}

pub fn decode_offset_commit_value(bytes: &Bytes) -> Result<(i16, OffsetCommitValue), RecordError> {
    let mut r = Reader::new(bytes, false);
    let version = r.i16()?;
    if !(0..=MAX_VALUE_VERSION).contains(&version) {
        return Err(RecordError::UnsupportedValueVersion { kind: "OffsetCommitValue", version });
    }
    r.flexible = version >= 4;
    let offset = r.i64()?;
    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
    let metadata = r.string()?;
    let commit_timestamp = r.i64()?;
    let expire_timestamp = if version == 1 { r.i64()? } else { -1 };
    r.skip_tagged_fields()?;
    Ok((version, OffsetCommitValue { offset, leader_epoch, metadata, commit_timestamp, expire_timestamp }))
}

pub fn encode_group_metadata_value(v: &GroupMetadataValue, version: i16) -> Result<Bytes, RecordError> {
    if !(0..=MAX_VALUE_VERSION).contains(&version) {
        return Err(RecordError::UnsupportedValueVersion { kind: "GroupMetadataValue", version });
    }
    let mut w = Writer::new(version >= 4);
    w.i16(version);
    w.string(&v.protocol_type);
    w.i32(v.generation);
    w.nullable_string(v.protocol.as_deref());
    w.nullable_string(v.leader.as_deref());
    if version >= 2 {
        w.i64(v.current_state_timestamp);
    }
    w.array_len(v.members.len());
    for m in &v.members {
        w.string(&m.member_id);
        if version >= 3 {
            w.nullable_string(m.group_instance_id.as_deref());
        }
        w.string(&m.client_id);
        w.string(&m.client_host);
        if version >= 1 {
            w.i32(m.rebalance_timeout);
        }
        w.i32(m.session_timeout);
        w.bytes(&m.subscription);
        w.bytes(&m.assignment);
        w.tagged_fields();
    }
    w.tagged_fields();
    Ok(w.buf.freeze())
}

pub fn decode_group_metadata_value(bytes: &Bytes) -> Result<(i16, GroupMetadataValue), RecordError> {
    let mut r = Reader::new(bytes, false);
    let version = r.i16()?;
    if !(0..=MAX_VALUE_VERSION).contains(&version) {
        return Err(RecordError::UnsupportedValueVersion { kind: "GroupMetadataValue", version });
    }
    r.flexible = version >= 4;
    let protocol_type = r.string()?;
    let generation = r.i32()?;
    let protocol = r.nullable_string()?;
    let leader = r.nullable_string()?;
    let current_state_timestamp = if version >= 2 { r.i64()? } else { -1 };
    let n = r.array_len()?;
    // Each member takes at least 14 bytes, so a bogus count cannot reserve much.
    let mut members = Vec::with_capacity(n.min(r.remaining() / 14));
    for _ in 0..n {
        let member_id = r.string()?;
        let group_instance_id = if version >= 3 { r.nullable_string()? } else { None };
        let client_id = r.string()?;
        let client_host = r.string()?;
        let rebalance_timeout = if version >= 1 { r.i32()? } else { 0 };
        let session_timeout = r.i32()?;
        let subscription = r.bytes()?;
        let assignment = r.bytes()?;
        r.skip_tagged_fields()?;
        members.push(MemberMetadata {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout,
            session_timeout,
            subscription,
            assignment,
        });
    }
    r.skip_tagged_fields()?;
    Ok((version, GroupMetadataValue { protocol_type, generation, protocol, leader, current_state_timestamp, members }))
}

/// Longest string a record can hold.
pub const MAX_STRING_LEN: usize = i16::MAX as usize;

fn floor_char_boundary(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    (0..=max).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0)
}

/// Big-endian writer of Kafka's primitive types; `flexible` selects the compact forms.
struct Writer {
    buf: BytesMut,
    flexible: bool,
}

impl Writer {
    fn new(flexible: bool) -> Self {
        Writer { buf: BytesMut::with_capacity(64), flexible }
    }
    fn i16(&mut self, v: i16) {
        self.buf.put_i16(v);
    }
    fn i32(&mut self, v: i32) {
        self.buf.put_i32(v);
    }
    fn i64(&mut self, v: i64) {
        self.buf.put_i64(v);
    }
    fn uvarint(&mut self, mut v: u32) {
        while v >= 0x80 {
            self.buf.put_u8((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.put_u8(v as u8);
    }
    fn string(&mut self, s: &str) {
        self.nullable_string(Some(s));
    }
    /// Kafka strings hold at most `i16::MAX` bytes; the coordinator rejects longer ones before
    /// they get here, so cutting (at a char boundary) only keeps a misuse from corrupting.
    fn nullable_string(&mut self, s: Option<&str>) {
        let s = s.map(|s| &s[..floor_char_boundary(s, MAX_STRING_LEN)]);
        match (s, self.flexible) {
            (None, false) => self.buf.put_i16(-1),
            (None, true) => self.uvarint(0),
            (Some(s), false) => {
                self.buf.put_i16(s.len() as i16);
                self.buf.put_slice(s.as_bytes());
            }
            (Some(s), true) => {
                self.uvarint(s.len() as u32 + 1);
                self.buf.put_slice(s.as_bytes());
            }
        }
    }
    fn bytes(&mut self, b: &[u8]) {
        if self.flexible {
            self.uvarint(b.len() as u32 + 1);
        } else {
            self.buf.put_i32(b.len() as i32);
        }
        self.buf.put_slice(b);
    }
    fn array_len(&mut self, n: usize) {
        if self.flexible {
            self.uvarint(n as u32 + 1);
        } else {
            self.buf.put_i32(n as i32);
        }
    }
    fn tagged_fields(&mut self) {
        if self.flexible {
            self.uvarint(0);
        }
    }
}

/// Bounds-checked reader over untrusted bytes; every read fails instead of panicking.
pub(crate) struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
    pub(crate) flexible: bool,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a Bytes, flexible: bool) -> Self {
        Reader { buf, pos: 0, flexible }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if n > self.remaining() {
            return Err(RecordError::Truncated { at: self.pos });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn i16(&mut self) -> Result<i16, RecordError> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().unwrap_or_default()))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().unwrap_or_default()))
    }

    fn i64(&mut self) -> Result<i64, RecordError> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().unwrap_or_default()))
    }

    fn uvarint(&mut self) -> Result<u32, RecordError> {
        let at = self.pos;
        let mut v: u32 = 0;
        for i in 0..5 {
            let b = self.take(1)?[0];
            if i == 4 && b > 0x0f {
                return Err(RecordError::Invalid { what: "varint", at });
            }
            v |= ((b & 0x7f) as u32) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(RecordError::Invalid { what: "varint", at })
    }

    /// Length of a string or bytes field; `None` is null.
    fn length(&mut self, wide: bool) -> Result<Option<usize>, RecordError> {
        let at = self.pos;
        if self.flexible {
            let n = self.uvarint()?;
            return Ok(if n == 0 { None } else { Some(n as usize - 1) });
        }
        let n = if wide { self.i32()? } else { self.i16()? as i32 };
        match n {
            -1 => Ok(None),
            n if n < 0 => Err(RecordError::Invalid { what: "length", at }),
            n => Ok(Some(n as usize)),
        }
    }

    pub(crate) fn nullable_string(&mut self) -> Result<Option<String>, RecordError> {
        let Some(n) = self.length(false)? else { return Ok(None) };
        let at = self.pos;
        let raw = self.take(n)?;
        match std::str::from_utf8(raw) {
            Ok(s) => Ok(Some(s.to_owned())),
            Err(_) => Err(RecordError::Invalid { what: "utf-8 string", at }),
        }
    }

    pub(crate) fn string(&mut self) -> Result<String, RecordError> {
        let at = self.pos;
        self.nullable_string()?.ok_or(RecordError::Invalid { what: "null string", at })
    }

    /// Non-null bytes, shared with the input buffer rather than copied.
    pub(crate) fn bytes(&mut self) -> Result<Bytes, RecordError> {
        let at = self.pos;
        let n = self.length(true)?.ok_or(RecordError::Invalid { what: "null bytes", at })?;
        self.take(n)?;
        Ok(self.buf.slice(self.pos - n..self.pos))
    }

    /// Nullable bytes, skipped.
    pub(crate) fn skip_nullable_bytes(&mut self) -> Result<(), RecordError> {
        if let Some(n) = self.length(true)? {
            self.take(n)?;
        }
        Ok(())
    }

    /// A non-null array's element count.
    pub(crate) fn array_len(&mut self) -> Result<usize, RecordError> {
        let at = self.pos;
        let n = if self.flexible { self.uvarint()? as i64 - 1 } else { self.i32()? as i64 };
        if n < 0 {
            return Err(RecordError::Invalid { what: "array length", at });
        }
        Ok(n as usize)
    }

    fn skip_tagged_fields(&mut self) -> Result<(), RecordError> {
        if !self.flexible {
            return Ok(());
        }
        let count = self.uvarint()?;
        for _ in 0..count {
            let _tag = self.uvarint()?;
            let size = self.uvarint()? as usize;
            self.take(size)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_hash_matches_known_values() {
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("hello"), 99162322);
        assert_eq!(java_string_hash("Aa"), 2112);
        assert_eq!(java_string_hash("BB"), 2112);
        // The well-known string whose hashCode is Integer.MIN_VALUE.
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        // U+1F600 is the surrogate pair D83D DE00: 0xD83D * 31 + 0xDE00.
        assert_eq!(java_string_hash("\u{1F600}"), 0xD83D * 31 + 0xDE00);
        // 'é' is one UTF-16 unit (0xE9), two UTF-8 bytes.
        assert_eq!(java_string_hash("é"), 0xE9);
    }
}
