//! `__consumer_offsets` record codecs: hand-checked bytes, round trips, and no panics on
//! arbitrary input.

use bytes::Bytes;
use proptest::prelude::*;
use tern_group::partition_for;
use tern_group::records::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn offset_commit_key_v1_bytes() {
    let key = OffsetsRecordKey::OffsetCommit { group: "g1".into(), topic: "t".into(), partition: 7 };
    let bytes = encode_key(&key);
    // version 1 | "g1" | "t" | partition 7
    assert_eq!(bytes.as_ref(), hex("0001 0002 6731 0001 74 00000007").as_slice());
    assert_eq!(decode_key(&bytes).unwrap(), key);
    // Key version 0 has the same layout.
    let v0 = Bytes::from(hex("0000 0002 6731 0001 74 00000007"));
    assert_eq!(decode_key(&v0).unwrap(), key);
}

#[test]
fn group_metadata_key_bytes() {
    let key = OffsetsRecordKey::GroupMetadata { group: "grp".into() };
    let bytes = encode_key(&key);
    assert_eq!(bytes.as_ref(), hex("0002 0003 677270").as_slice());
    assert_eq!(decode_key(&bytes).unwrap(), key);
}

#[test]
fn unknown_key_versions_are_reported() {
    // Version 3+ keys are KIP-848 consumer-group records and the like.
    let bytes = Bytes::from(hex("0003 0001 67"));
    assert_eq!(decode_key(&bytes), Err(RecordError::UnknownKeyVersion(3)));
}

#[test]
fn offset_commit_value_v3_bytes() {
    let value = OffsetCommitValue {
        offset: 100,
        leader_epoch: 5,
        metadata: "m".into(),
        commit_timestamp: 1000,
        expire_timestamp: -1,
    };
    assert_eq!(value.writer_version(), 3);
    let bytes = encode_offset_commit_value(&value, 3).unwrap();
    let expected = hex("0003
         0000000000000064
         00000005
         0001 6d
         00000000000003e8");
    assert_eq!(bytes.as_ref(), expected.as_slice());
    assert_eq!(decode_offset_commit_value(&bytes).unwrap(), (3, value));
}

#[test]
fn offset_commit_value_v1_carries_expire_timestamp() {
    let value = OffsetCommitValue {
        offset: 1,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp: 2,
        expire_timestamp: 3,
    };
    assert_eq!(value.writer_version(), 1);
    let bytes = encode_offset_commit_value(&value, 1).unwrap();
    let expected = hex("0001 0000000000000001 0000 0000000000000002 0000000000000003");
    assert_eq!(bytes.as_ref(), expected.as_slice());
    assert_eq!(decode_offset_commit_value(&bytes).unwrap(), (1, value));
}

#[test]
fn offset_commit_value_v4_is_flexible_and_skips_unknown_tags() {
    let value = OffsetCommitValue {
        offset: 1,
        leader_epoch: 2,
        metadata: "ab".into(),
        commit_timestamp: 3,
        expire_timestamp: -1,
    };
    let bytes = encode_offset_commit_value(&value, 4).unwrap();
    // compact string length is len+1; empty tagged-field section at the end
    let expected = hex("0004 0000000000000001 00000002 03 6162 0000000000000003 00");
    assert_eq!(bytes.as_ref(), expected.as_slice());
    // A newer writer's tagged field (tag 0, 16 bytes, e.g. a topic id) is skipped.
    let mut tagged = expected[..expected.len() - 1].to_vec();
    tagged.extend_from_slice(&hex("01 00 10"));
    tagged.extend_from_slice(&[0xab; 16]);
    assert_eq!(decode_offset_commit_value(&Bytes::from(tagged)).unwrap(), (4, value));
}

fn sample_group() -> GroupMetadataValue {
    GroupMetadataValue {
        protocol_type: "consumer".into(),
        generation: 1,
        protocol: Some("range".into()),
        leader: Some("m1".into()),
        current_state_timestamp: 1234,
        members: vec![MemberMetadata {
            member_id: "m1".into(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "/h".into(),
            rebalance_timeout: 300_000,
            session_timeout: 10_000,
            subscription: Bytes::from_static(&[1, 2]),
            assignment: Bytes::from_static(&[3]),
        }],
    }
}

#[test]
fn group_metadata_value_v3_bytes() {
    let value = sample_group();
    let bytes = encode_group_metadata_value(&value, GROUP_METADATA_VALUE_VERSION).unwrap();
    let expected = hex("0003
         0008 636f6e73756d6572
         00000001
         0005 72616e6765
         0002 6d31
         00000000000004d2
         00000001
           0002 6d31
           ffff
           0001 63
           0002 2f68
           000493e0
           00002710
           00000002 0102
           00000001 03");
    assert_eq!(bytes.as_ref(), expected.as_slice());
    assert_eq!(decode_group_metadata_value(&bytes).unwrap(), (3, value));
}

#[test]
fn group_metadata_value_v0_has_no_rebalance_timeout_or_timestamp() {
    let mut value = sample_group();
    let bytes = encode_group_metadata_value(&value, 0).unwrap();
    value.current_state_timestamp = -1;
    value.members[0].rebalance_timeout = 0;
    assert_eq!(decode_group_metadata_value(&bytes).unwrap(), (0, value));
}

#[test]
fn empty_group_value_has_null_protocol_and_leader() {
    let value = GroupMetadataValue {
        protocol_type: "consumer".into(),
        generation: 2,
        protocol: None,
        leader: None,
        current_state_timestamp: 5,
        members: vec![],
    };
    let bytes = encode_group_metadata_value(&value, 3).unwrap();
    let expected = hex("0003 0008 636f6e73756d6572 00000002 ffff ffff 0000000000000005 00000000");
    assert_eq!(bytes.as_ref(), expected.as_slice());
    assert_eq!(decode_group_metadata_value(&bytes).unwrap(), (3, value));
}

#[test]
fn truncated_and_bogus_inputs_are_errors() {
    let full = encode_group_metadata_value(&sample_group(), 3).unwrap();
    for n in 0..full.len() {
        assert!(decode_group_metadata_value(&full.slice(..n)).is_err(), "prefix of {n} bytes");
    }
    // A huge member count must not allocate or panic.
    let bogus = Bytes::from(hex("0003 0000 00000000 ffff ffff 0000000000000000 7fffffff"));
    assert!(decode_group_metadata_value(&bogus).is_err());
    assert!(decode_offset_commit_value(&Bytes::from(hex("0009"))).is_err());
    assert!(decode_offset_commit_value(&Bytes::from(hex("ffff"))).is_err());
}

#[test]
fn partition_for_matches_kafka() {
    // "my-group".hashCode() == -1906497762; Utils.abs gives 1906497762; % 50 == 12.
    assert_eq!(java_string_hash("my-group"), -1906497762);
    assert_eq!(partition_for("my-group", 50), 12);
    // "test-consumer-group".hashCode() == -1793216381 -> 31.
    assert_eq!(partition_for("test-consumer-group", 50), 31);
    // hashCode == Integer.MIN_VALUE: Utils.abs maps it to 0.
    assert_eq!(partition_for("polygenelubricants", 50), 0);
    // Non-ASCII: 'é' is one UTF-16 unit; the emoji is a surrogate pair.
    assert_eq!(java_string_hash("groupé"), -1237460406);
    assert_eq!(partition_for("groupé", 50), 6);
    assert_eq!(java_string_hash("grüppe-\u{1F600}"), -1039948164);
    assert_eq!(partition_for("grüppe-\u{1F600}", 50), 14);
    assert_eq!(partition_for("anything", 1), 0);
}

fn arb_string() -> impl Strategy<Value = String> {
    "\\PC{0,12}"
}

fn arb_offset_value() -> impl Strategy<Value = OffsetCommitValue> {
    (any::<i64>(), any::<i32>(), arb_string(), any::<i64>(), any::<i64>()).prop_map(
        |(offset, leader_epoch, metadata, commit_timestamp, expire_timestamp)| OffsetCommitValue {
            offset,
            leader_epoch,
            metadata,
            commit_timestamp,
            expire_timestamp,
        },
    )
}

fn arb_member() -> impl Strategy<Value = MemberMetadata> {
    (
        arb_string(),
        proptest::option::of(arb_string()),
        arb_string(),
        arb_string(),
        any::<i32>(),
        any::<i32>(),
        proptest::collection::vec(any::<u8>(), 0..20),
        proptest::collection::vec(any::<u8>(), 0..20),
    )
        .prop_map(|(member_id, group_instance_id, client_id, client_host, rt, st, sub, asg)| MemberMetadata {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout: rt,
            session_timeout: st,
            subscription: Bytes::from(sub),
            assignment: Bytes::from(asg),
        })
}

fn arb_group_value() -> impl Strategy<Value = GroupMetadataValue> {
    (
        arb_string(),
        any::<i32>(),
        proptest::option::of(arb_string()),
        proptest::option::of(arb_string()),
        any::<i64>(),
        proptest::collection::vec(arb_member(), 0..4),
    )
        .prop_map(|(protocol_type, generation, protocol, leader, ts, members)| GroupMetadataValue {
            protocol_type,
            generation,
            protocol,
            leader,
            current_state_timestamp: ts,
            members,
        })
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let bytes = Bytes::from(data);
        if let Ok(key) = decode_key(&bytes) {
            let _ = decode_value(&key, &bytes);
        }
        let _ = decode_offset_commit_value(&bytes);
        let _ = decode_group_metadata_value(&bytes);
    }

    #[test]
    fn decoding_mutated_records_never_panics(
        value in arb_group_value(),
        version in 0i16..=4,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
    ) {
        let mut data = encode_group_metadata_value(&value, version).unwrap().to_vec();
        for (at, byte) in flips {
            if !data.is_empty() {
                let i = at % data.len();
                data[i] = byte;
            }
        }
        let _ = decode_group_metadata_value(&Bytes::from(data));
    }

    #[test]
    fn keys_round_trip(group in arb_string(), topic in arb_string(), partition in any::<i32>()) {
        let k = OffsetsRecordKey::OffsetCommit { group: group.clone(), topic, partition };
        prop_assert_eq!(decode_key(&encode_key(&k)).unwrap(), k);
        let k = OffsetsRecordKey::GroupMetadata { group };
        prop_assert_eq!(decode_key(&encode_key(&k)).unwrap(), k);
    }

    #[test]
    fn offset_values_round_trip(mut v in arb_offset_value(), version in 0i16..=4) {
        if version < 3 { v.leader_epoch = -1; }
        if version != 1 { v.expire_timestamp = -1; }
        let key = OffsetsRecordKey::OffsetCommit { group: "g".into(), topic: "t".into(), partition: 0 };
        let value = OffsetsRecordValue::OffsetCommit(v);
        let bytes = encode_value(&value, version).unwrap();
        prop_assert_eq!(decode_value(&key, &bytes).unwrap(), (version, value));
    }

    #[test]
    fn group_values_round_trip(mut v in arb_group_value(), version in 0i16..=4) {
        if version < 2 { v.current_state_timestamp = -1; }
        for m in &mut v.members {
            if version < 1 { m.rebalance_timeout = 0; }
            if version < 3 { m.group_instance_id = None; }
        }
        let key = OffsetsRecordKey::GroupMetadata { group: "g".into() };
        let value = OffsetsRecordValue::GroupMetadata(v);
        let bytes = encode_value(&value, version).unwrap();
        prop_assert_eq!(decode_value(&key, &bytes).unwrap(), (version, value));
    }
}
