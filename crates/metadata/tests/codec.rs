//! Every record type round-trips through the encoding; malformed input is an error, never a
//! panic.

use proptest::prelude::*;
use tern_metadata::codec::{decode_batch, encode_batch, DecodeError};
use tern_metadata::*;

fn ids() -> impl Strategy<Value = Vec<i32>> {
    prop::collection::vec(-1..100i32, 0..6)
}

fn name() -> impl Strategy<Value = String> {
    "[a-z._-]{0,12}"
}

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

fn record() -> impl Strategy<Value = MetadataRecord> {
    prop_oneof![
        (
            any::<i32>(),
            uuid(),
            any::<i64>(),
            prop::collection::vec((name(), name(), any::<u16>(), any::<i16>()), 0..3),
            prop::option::of(name()),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(
                |(broker_id, incarnation_id, broker_epoch, eps, rack, fenced, in_controlled_shutdown)| {
                    MetadataRecord::RegisterBroker(RegisterBroker {
                        broker_id,
                        incarnation_id,
                        broker_epoch,
                        endpoints: eps
                            .into_iter()
                            .map(|(name, host, port, security_protocol)| Endpoint {
                                name,
                                host,
                                port,
                                security_protocol,
                            })
                            .collect(),
                        rack,
                        fenced,
                        in_controlled_shutdown,
                    })
                }
            ),
        (any::<i32>(), any::<i64>()).prop_map(|(broker_id, broker_epoch)| MetadataRecord::UnregisterBroker(
            UnregisterBroker { broker_id, broker_epoch }
        )),
        (any::<i32>(), any::<i64>(), prop::option::of(any::<bool>()), any::<bool>()).prop_map(
            |(broker_id, broker_epoch, fenced, in_controlled_shutdown)| {
                MetadataRecord::BrokerRegistrationChange(BrokerRegistrationChange {
                    broker_id,
                    broker_epoch,
                    fenced,
                    in_controlled_shutdown,
                })
            }
        ),
        (name(), uuid()).prop_map(|(name, topic_id)| MetadataRecord::Topic(TopicRecord { name, topic_id })),
        (uuid(), any::<i32>(), ids(), ids(), any::<i32>(), any::<i32>(), any::<i32>()).prop_map(
            |(topic_id, partition, replicas, isr, leader, leader_epoch, partition_epoch)| {
                MetadataRecord::Partition(PartitionRecord {
                    topic_id,
                    partition,
                    replicas,
                    isr,
                    leader,
                    leader_epoch,
                    partition_epoch,
                })
            }
        ),
        (uuid(), any::<i32>(), prop::option::of(ids()), prop::option::of(-1..100i32), prop::option::of(ids()))
            .prop_map(|(topic_id, partition, isr, leader, replicas)| {
                MetadataRecord::PartitionChange(PartitionChange { topic_id, partition, isr, leader, replicas })
            }),
        uuid().prop_map(|topic_id| MetadataRecord::RemoveTopic(RemoveTopic { topic_id })),
        (any::<i32>(), any::<i64>(), any::<i64>()).prop_map(|(broker_id, broker_epoch, next_producer_id)| {
            MetadataRecord::ProducerIds(ProducerIds { broker_id, broker_epoch, next_producer_id })
        }),
        (any::<i8>(), name(), name(), prop::option::of(name())).prop_map(|(rt, resource_name, name, value)| {
            MetadataRecord::Config(ConfigRecord { resource_type: ConfigResourceType(rt), resource_name, name, value })
        }),
    ]
}

proptest! {
    #[test]
    fn batches_round_trip(records in prop::collection::vec(record(), 0..20)) {
        let bytes = encode_batch(&records);
        prop_assert_eq!(decode_batch(&bytes).unwrap(), records);
    }

    #[test]
    fn truncated_or_garbled_batches_are_errors(records in prop::collection::vec(record(), 1..5), cut in any::<prop::sample::Index>(), noise in any::<Vec<u8>>()) {
        let bytes = encode_batch(&records);
        let cut = cut.index(bytes.len());
        prop_assert!(decode_batch(&bytes[..cut]).is_err());
        let _ = decode_batch(&noise);
    }
}

#[test]
fn the_encoding_is_stable() {
    // A fixed record's bytes: changing them breaks every stored log and snapshot.
    let record = MetadataRecord::PartitionChange(PartitionChange {
        topic_id: Uuid::from_u128(1),
        partition: 2,
        isr: Some(vec![3]),
        leader: None,
        replicas: None,
    });
    let bytes = encode_batch(std::slice::from_ref(&record));
    let expected: Vec<u8> = [
        &[0, 0, 0, 1][..],         // one record
        &[0, 0, 0, 38],            // its length
        &[5, 0],                   // PartitionChangeRecord, version 0
        &[0; 15],                  // topic id ...
        &[1],                      // ... 1
        &[0, 0, 0, 2],             // partition
        &[0, 0, 0, 1, 0, 0, 0, 3], // isr [3]
        &[0xff, 0xff, 0xff, 0xfe], // NO_LEADER_CHANGE
        &[0xff, 0xff, 0xff, 0xff], // replicas: null
    ]
    .concat();
    assert_eq!(bytes, expected);
}

#[test]
fn unknown_types_and_versions_are_rejected() {
    let mut bytes = encode_batch(&[MetadataRecord::RemoveTopic(RemoveTopic { topic_id: Uuid::nil() })]);
    bytes[9] = 1;
    assert_eq!(decode_batch(&bytes), Err(DecodeError::UnsupportedVersion { api_key: 9, version: 1 }));
    bytes[9] = 0;
    bytes[8] = 99;
    assert_eq!(decode_batch(&bytes), Err(DecodeError::UnknownRecordType(99)));
}
