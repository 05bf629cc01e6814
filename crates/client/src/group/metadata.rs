//! The bytes a consumer puts in JoinGroup (its subscription) and receives from SyncGroup (its
//! assignment): Kafka's `ConsumerProtocolSubscription` / `ConsumerProtocolAssignment`, each
//! preceded by its version as an i16, exactly as the Java client's `ConsumerProtocol` writes them.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as OwnedTopic;
use kafka_protocol::messages::{ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::assignor::Subscription;
use super::TopicPartition;
use crate::error::{Error, Result};

/// The version written; readers decode newer versions with the fields they know (the format only
/// ever appends fields), which is what Kafka's own clients do.
const VERSION: i16 = 3;

fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_owned()))
}

/// Partitions grouped by topic, topics in name order.
fn by_topic(partitions: &[TopicPartition]) -> BTreeMap<&str, Vec<i32>> {
    let mut m: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in partitions {
        m.entry(tp.topic.as_str()).or_default().push(tp.partition);
    }
    m
}

fn flatten(topic: &TopicName, partitions: &[i32], out: &mut Vec<TopicPartition>) {
    out.extend(partitions.iter().map(|&p| TopicPartition::new(topic.0.as_str(), p)));
}

/// Encodes a member's JoinGroup metadata.
pub fn encode_subscription(sub: &Subscription) -> Result<Bytes> {
    let owned = by_topic(&sub.owned_partitions)
        .into_iter()
        .map(|(t, ps)| OwnedTopic::default().with_topic(topic_name(t)).with_partitions(ps))
        .collect();
    let msg = ConsumerProtocolSubscription::default()
        .with_topics(sub.topics.iter().map(|t| StrBytes::from_string(t.clone())).collect())
        .with_user_data(sub.user_data.clone())
        .with_owned_partitions(owned)
        .with_generation_id(sub.generation.unwrap_or(-1))
        .with_rack_id(sub.rack.as_ref().map(|r| StrBytes::from_string(r.clone())));
    let mut buf = BytesMut::with_capacity(2 + msg.compute_size(VERSION).map_err(Error::protocol)?);
    buf.put_i16(VERSION);
    msg.encode(&mut buf, VERSION).map_err(Error::protocol)?;
    Ok(buf.freeze())
}

/// Decodes a member's JoinGroup metadata.
pub fn decode_subscription(mut bytes: Bytes) -> Result<Subscription> {
    if bytes.len() < 2 {
        return Err(Error::Protocol("consumer subscription shorter than its version".into()));
    }
    let version = bytes.get_i16();
    if version < 0 {
        return Err(Error::Protocol(format!("consumer subscription version {version}")));
    }
    let msg = ConsumerProtocolSubscription::decode(&mut bytes, version.min(VERSION))
        .map_err(|e| Error::Protocol(format!("consumer subscription: {e}")))?;
    let mut owned = Vec::new();
    for t in &msg.owned_partitions {
        flatten(&t.topic, &t.partitions, &mut owned);
    }
    let generation = Some(msg.generation_id).filter(|&g| version >= 2 && g >= 0);
    Ok(Subscription {
        topics: msg.topics.iter().map(|t| t.to_string()).collect(),
        user_data: msg.user_data,
        owned_partitions: owned,
        generation,
        rack: msg.rack_id.map(|r| r.to_string()),
        group_instance_id: None,
    })
}

/// Encodes the assignment the leader hands a member in SyncGroup.
pub fn encode_assignment(partitions: &[TopicPartition], user_data: Option<Bytes>) -> Result<Bytes> {
    let topics = by_topic(partitions)
        .into_iter()
        .map(|(t, ps)| AssignedTopic::default().with_topic(topic_name(t)).with_partitions(ps))
        .collect();
    let msg = ConsumerProtocolAssignment::default().with_assigned_partitions(topics).with_user_data(user_data);
    let mut buf = BytesMut::with_capacity(2 + msg.compute_size(VERSION).map_err(Error::protocol)?);
    buf.put_i16(VERSION);
    msg.encode(&mut buf, VERSION).map_err(Error::protocol)?;
    Ok(buf.freeze())
}

/// Decodes a member's assignment; empty bytes (a member the leader gave nothing) are no partitions.
pub fn decode_assignment(mut bytes: Bytes) -> Result<Vec<TopicPartition>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    if bytes.len() < 2 {
        return Err(Error::Protocol("consumer assignment shorter than its version".into()));
    }
    let version = bytes.get_i16();
    if version < 0 {
        return Err(Error::Protocol(format!("consumer assignment version {version}")));
    }
    let msg = ConsumerProtocolAssignment::decode(&mut bytes, version.min(VERSION))
        .map_err(|e| Error::Protocol(format!("consumer assignment: {e}")))?;
    let mut out = Vec::new();
    for t in &msg.assigned_partitions {
        flatten(&t.topic, &t.partitions, &mut out);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(t: &str, p: i32) -> TopicPartition {
        TopicPartition::new(t, p)
    }

    #[test]
    fn subscription_roundtrip() {
        let sub = Subscription {
            topics: vec!["b".into(), "a".into()],
            user_data: Some(Bytes::from_static(&[0, 0, 0, 7])),
            owned_partitions: vec![tp("a", 1), tp("b", 0), tp("a", 3)],
            generation: Some(7),
            rack: None,
            group_instance_id: None,
        };
        let bytes = encode_subscription(&sub).unwrap();
        assert_eq!(&bytes[..2], &[0, 3]);
        let got = decode_subscription(bytes).unwrap();
        assert_eq!(got.topics, sub.topics);
        assert_eq!(got.generation, Some(7));
        let mut owned = got.owned_partitions.clone();
        owned.sort();
        assert_eq!(owned, vec![tp("a", 1), tp("a", 3), tp("b", 0)]);
    }

    #[test]
    fn v0_subscription_has_topics_and_user_data_only() {
        let msg = ConsumerProtocolSubscription::default()
            .with_topics(vec![StrBytes::from_static_str("t")])
            .with_user_data(Some(Bytes::from_static(&[0, 0, 0, 4])));
        let mut buf = BytesMut::new();
        buf.put_i16(0);
        msg.encode(&mut buf, 0).unwrap();
        let got = decode_subscription(buf.freeze()).unwrap();
        assert_eq!(got.topics, vec!["t".to_string()]);
        assert_eq!(got.generation, None);
        assert_eq!(got.user_data.as_deref(), Some(&[0u8, 0, 0, 4][..]));
        assert!(got.owned_partitions.is_empty());
    }

    #[test]
    fn newer_versions_decode_known_fields() {
        // A v4 writer appends fields after the v3 ones; the v3 prefix still decodes.
        let sub = Subscription { topics: vec!["t".into()], generation: Some(2), ..Default::default() };
        let mut bytes = BytesMut::from(&encode_subscription(&sub).unwrap()[..]);
        bytes[0..2].copy_from_slice(&4i16.to_be_bytes());
        bytes.put_i32(12345);
        let got = decode_subscription(bytes.freeze()).unwrap();
        assert_eq!(got.topics, vec!["t".to_string()]);
        assert_eq!(got.generation, Some(2));
    }

    #[test]
    fn assignment_roundtrip() {
        let parts = vec![tp("x", 2), tp("y", 0), tp("x", 0)];
        let got = decode_assignment(encode_assignment(&parts, None).unwrap()).unwrap();
        assert_eq!(got, vec![tp("x", 2), tp("x", 0), tp("y", 0)]);
        assert!(decode_assignment(Bytes::new()).unwrap().is_empty());
        assert!(decode_assignment(Bytes::from_static(&[0])).is_err());
    }
}
