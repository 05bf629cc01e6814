//! The stable binary encoding of metadata records. It is Tern's own, not Kafka's wire format,
//! and is what the controller's log and snapshots store.
//!
//! A batch is a `u32` record count followed by records, each a `u32` length and then
//! `[api key: u8][version: u8][fields]`. Integers are big-endian; a string is a `u32` length
//! and UTF-8 (an `i32` length, -1 for null, where nullable); a list is a `u32` count (`i32`,
//! -1 for null, where nullable); a UUID is 16 bytes. A later version of a record may only append
//! fields, so that its decoder still reads every earlier version; a version this decoder does
//! not know is an error, never guessed at.

use uuid::Uuid;

use crate::records::*;

/// The version every record is written with.
const VERSION: u8 = 0;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("metadata record truncated")]
    Truncated,
    #[error("unknown metadata record type {0}")]
    UnknownRecordType(u8),
    #[error("metadata record type {api_key} has unsupported version {version}")]
    UnsupportedVersion { api_key: u8, version: u8 },
    #[error("invalid metadata record field: {0}")]
    Invalid(&'static str),
    #[error("{0} bytes left after the last metadata record")]
    TrailingBytes(usize),
}

/// Appends one record (with its length prefix) to `out`.
pub fn encode_record(record: &MetadataRecord, out: &mut Vec<u8>) {
    let len_at = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(record.api_key());
    out.push(VERSION);
    let mut w = Writer(out);
    match record {
        MetadataRecord::RegisterBroker(r) => {
            w.i32(r.broker_id);
            w.uuid(r.incarnation_id);
            w.i64(r.broker_epoch);
            w.u32(r.endpoints.len() as u32);
            for e in &r.endpoints {
                w.string(&e.name);
                w.string(&e.host);
                w.u16(e.port);
                w.i16(e.security_protocol);
            }
            w.nullable_string(r.rack.as_deref());
            w.bool(r.fenced);
            w.bool(r.in_controlled_shutdown);
        }
        MetadataRecord::UnregisterBroker(r) => {
            w.i32(r.broker_id);
            w.i64(r.broker_epoch);
        }
        MetadataRecord::BrokerRegistrationChange(r) => {
            w.i32(r.broker_id);
            w.i64(r.broker_epoch);
            // Kafka's BrokerRegistrationFencingChange values.
            w.i8(match r.fenced {
                Some(true) => 1,
                Some(false) => -1,
                None => 0,
            });
            w.bool(r.in_controlled_shutdown);
        }
        MetadataRecord::Topic(r) => {
            w.string(&r.name);
            w.uuid(r.topic_id);
        }
        MetadataRecord::Partition(r) => {
            w.uuid(r.topic_id);
            w.i32(r.partition);
            w.ids(&r.replicas);
            w.ids(&r.isr);
            w.i32(r.leader);
            w.i32(r.leader_epoch);
            w.i32(r.partition_epoch);
        }
        MetadataRecord::PartitionChange(r) => {
            w.uuid(r.topic_id);
            w.i32(r.partition);
            w.nullable_ids(r.isr.as_deref());
            // Kafka's NO_LEADER_CHANGE.
            w.i32(r.leader.unwrap_or(-2));
            w.nullable_ids(r.replicas.as_deref());
        }
        MetadataRecord::RemoveTopic(r) => w.uuid(r.topic_id),
        MetadataRecord::ProducerIds(r) => {
            w.i32(r.broker_id);
            w.i64(r.broker_epoch);
            w.i64(r.next_producer_id);
        }
        MetadataRecord::Config(r) => {
            w.i8(r.resource_type.0);
            w.string(&r.resource_name);
            w.string(&r.name);
            w.nullable_string(r.value.as_deref());
        }
    }
    let len = (out.len() - len_at - 4) as u32;
    out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
}

pub fn encode_batch(records: &[MetadataRecord]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + records.len() * 48);
    out.extend_from_slice(&(records.len() as u32).to_be_bytes());
    for record in records {
        encode_record(record, &mut out);
    }
    out
}

/// Decodes one length-prefixed record from the front of `buf`; returns it and the bytes used.
pub fn decode_record(buf: &[u8]) -> Result<(MetadataRecord, usize), DecodeError> {
    let mut r = Reader(buf);
    let len = r.u32()? as usize;
    let body = r.take(len)?;
    let mut r = Reader(body);
    let api_key = r.u8()?;
    let version = r.u8()?;
    if version != VERSION {
        return Err(DecodeError::UnsupportedVersion { api_key, version });
    }
    let record = match api_key {
        0 => {
            let broker_id = r.i32()?;
            let incarnation_id = r.uuid()?;
            let broker_epoch = r.i64()?;
            let n = r.count()?;
            let mut endpoints = Vec::with_capacity(n);
            for _ in 0..n {
                endpoints.push(Endpoint {
                    name: r.string()?,
                    host: r.string()?,
                    port: r.u16()?,
                    security_protocol: r.i16()?,
                });
            }
            MetadataRecord::RegisterBroker(RegisterBroker {
                broker_id,
                incarnation_id,
                broker_epoch,
                endpoints,
                rack: r.nullable_string()?,
                fenced: r.bool()?,
                in_controlled_shutdown: r.bool()?,
            })
        }
        1 => MetadataRecord::UnregisterBroker(UnregisterBroker { broker_id: r.i32()?, broker_epoch: r.i64()? }),
        17 => MetadataRecord::BrokerRegistrationChange(BrokerRegistrationChange {
            broker_id: r.i32()?,
            broker_epoch: r.i64()?,
            fenced: match r.i8()? {
                1 => Some(true),
                -1 => Some(false),
                0 => None,
                _ => return Err(DecodeError::Invalid("fencing change")),
            },
            in_controlled_shutdown: r.bool()?,
        }),
        2 => MetadataRecord::Topic(TopicRecord { name: r.string()?, topic_id: r.uuid()? }),
        3 => MetadataRecord::Partition(PartitionRecord {
            topic_id: r.uuid()?,
            partition: r.i32()?,
            replicas: r.ids()?,
            isr: r.ids()?,
            leader: r.i32()?,
            leader_epoch: r.i32()?,
            partition_epoch: r.i32()?,
        }),
        5 => MetadataRecord::PartitionChange(PartitionChange {
            topic_id: r.uuid()?,
            partition: r.i32()?,
            isr: r.nullable_ids()?,
            leader: match r.i32()? {
                -2 => None,
                leader => Some(leader),
            },
            replicas: r.nullable_ids()?,
        }),
        9 => MetadataRecord::RemoveTopic(RemoveTopic { topic_id: r.uuid()? }),
        15 => MetadataRecord::ProducerIds(ProducerIds {
            broker_id: r.i32()?,
            broker_epoch: r.i64()?,
            next_producer_id: r.i64()?,
        }),
        4 => MetadataRecord::Config(ConfigRecord {
            resource_type: ConfigResourceType(r.i8()?),
            resource_name: r.string()?,
            name: r.string()?,
            value: r.nullable_string()?,
        }),
        other => return Err(DecodeError::UnknownRecordType(other)),
    };
    Ok((record, 4 + len))
}

pub fn decode_batch(buf: &[u8]) -> Result<Vec<MetadataRecord>, DecodeError> {
    let mut r = Reader(buf);
    let count = r.count()?;
    let mut rest = r.0;
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        let (record, used) = decode_record(rest)?;
        records.push(record);
        rest = &rest[used..];
    }
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    Ok(records)
}

/// Field writers, public so that other stores (the controller's log and snapshots) frame their
/// own headers the same way.
pub struct Writer<'a>(pub &'a mut Vec<u8>);

impl Writer<'_> {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn i8(&mut self, v: i8) {
        self.0.push(v as u8);
    }
    pub fn bool(&mut self, v: bool) {
        self.0.push(v as u8);
    }
    pub fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub fn i16(&mut self, v: i16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub fn uuid(&mut self, v: Uuid) {
        self.0.extend_from_slice(v.as_bytes());
    }
    pub fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
    }
    pub fn string(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    pub fn nullable_string(&mut self, v: Option<&str>) {
        match v {
            Some(s) => self.string(s),
            None => self.i32(-1),
        }
    }
    pub fn ids(&mut self, v: &[i32]) {
        self.u32(v.len() as u32);
        for id in v {
            self.i32(*id);
        }
    }
    pub fn nullable_ids(&mut self, v: Option<&[i32]>) {
        match v {
            Some(ids) => self.ids(ids),
            None => self.i32(-1),
        }
    }
}

/// Field readers matching [`Writer`]; every read checks the bytes left first.
pub struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub fn i8(&mut self) -> Result<i8, DecodeError> {
        Ok(self.u8()? as i8)
    }
    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid("boolean")),
        }
    }
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub fn i16(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    pub fn uuid(&mut self) -> Result<Uuid, DecodeError> {
        Ok(Uuid::from_bytes(self.array()?))
    }
    /// A count of items that each take at least one byte: checked against the bytes left
    /// before anything is allocated for it.
    pub fn count(&mut self) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n > self.0.len() {
            return Err(DecodeError::Truncated);
        }
        Ok(n)
    }
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub fn string(&mut self) -> Result<String, DecodeError> {
        let bytes = self.bytes()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Invalid("UTF-8 string"))
    }
    pub fn nullable_string(&mut self) -> Result<Option<String>, DecodeError> {
        if self.0.len() >= 4 && self.0[..4] == (-1i32).to_be_bytes() {
            self.take(4)?;
            return Ok(None);
        }
        self.string().map(Some)
    }
    pub fn ids(&mut self) -> Result<Vec<i32>, DecodeError> {
        let n = self.count()?;
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(self.i32()?);
        }
        Ok(ids)
    }
    pub fn nullable_ids(&mut self) -> Result<Option<Vec<i32>>, DecodeError> {
        if self.0.len() >= 4 && self.0[..4] == (-1i32).to_be_bytes() {
            self.take(4)?;
            return Ok(None);
        }
        self.ids().map(Some)
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
