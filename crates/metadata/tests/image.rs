//! Applying each record type to the image, and the image's queries.

use tern_metadata::*;

fn uuid(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn register(id: BrokerId, epoch: i64, rack: Option<&str>) -> MetadataRecord {
    MetadataRecord::RegisterBroker(RegisterBroker {
        broker_id: id,
        incarnation_id: uuid(1000 + id as u128),
        broker_epoch: epoch,
        endpoints: vec![Endpoint {
            name: "PLAINTEXT".into(),
            host: "localhost".into(),
            port: 9092,
            security_protocol: 0,
        }],
        rack: rack.map(String::from),
        fenced: true,
        in_controlled_shutdown: false,
    })
}

fn change(id: BrokerId, epoch: i64, fenced: Option<bool>, in_controlled_shutdown: bool) -> MetadataRecord {
    MetadataRecord::BrokerRegistrationChange(BrokerRegistrationChange {
        broker_id: id,
        broker_epoch: epoch,
        fenced,
        in_controlled_shutdown,
    })
}

fn topic(name: &str, id: u128) -> MetadataRecord {
    MetadataRecord::Topic(TopicRecord { name: name.into(), topic_id: uuid(id) })
}

fn partition(topic: u128, p: i32, replicas: &[i32], leader: i32) -> MetadataRecord {
    MetadataRecord::Partition(PartitionRecord {
        topic_id: uuid(topic),
        partition: p,
        replicas: replicas.to_vec(),
        isr: replicas.to_vec(),
        leader,
        leader_epoch: 0,
        partition_epoch: 0,
    })
}

fn apply_all(image: &mut MetadataImage, records: &[MetadataRecord]) {
    for r in records {
        image.apply(r).unwrap();
    }
}

/// Three brokers (epochs 0, 1, 2), unfenced, and topic "t" (id 7) with partitions 0 and 1.
fn cluster() -> MetadataImage {
    let mut image = MetadataImage::new();
    apply_all(
        &mut image,
        &[
            register(1, 0, Some("a")),
            register(2, 1, Some("b")),
            register(3, 2, None),
            change(1, 0, Some(false), false),
            change(2, 1, Some(false), false),
            change(3, 2, Some(false), false),
            topic("t", 7),
            partition(7, 0, &[1, 2, 3], 1),
            partition(7, 1, &[2, 3, 1], 2),
        ],
    );
    image
}

fn tp(topic: u128, p: i32) -> TopicIdPartition {
    TopicIdPartition::new(uuid(topic), p)
}

#[test]
fn register_broker_starts_fenced_and_keeps_its_fields() {
    let mut image = MetadataImage::new();
    assert_eq!(image.offset(), -1);
    image.apply(&register(1, 0, Some("rack-a"))).unwrap();
    assert_eq!(image.offset(), 0);
    let b = image.broker(1).unwrap();
    assert_eq!((b.epoch, b.fenced, b.rack.as_deref()), (0, true, Some("rack-a")));
    assert_eq!(b.endpoints[0].port, 9092);
    assert!(!image.is_active(1));
    assert_eq!(image.fenced_brokers().count(), 1);
    assert_eq!(image.unfenced_brokers().count(), 0);
}

#[test]
fn re_registration_replaces_the_registration() {
    let mut image = cluster();
    image.apply(&register(1, 50, Some("z"))).unwrap();
    let b = image.broker(1).unwrap();
    assert_eq!((b.epoch, b.fenced, b.rack.as_deref()), (50, true, Some("z")));
}

#[test]
fn fence_unfence_and_controlled_shutdown() {
    let mut image = cluster();
    assert!(image.is_active(2));
    image.apply(&change(2, 1, None, true)).unwrap();
    let b = image.broker(2).unwrap();
    assert!(!b.fenced && b.in_controlled_shutdown && !image.is_active(2));
    image.apply(&change(2, 1, Some(true), false)).unwrap();
    assert!(image.broker(2).unwrap().fenced);
    assert_eq!(image.unfenced_brokers().map(|b| b.id).collect::<Vec<_>>(), vec![1, 3]);
    image.apply(&change(3, 2, Some(true), false)).unwrap();
    image.apply(&change(3, 2, Some(false), false)).unwrap();
    assert!(image.is_active(3));
}

#[test]
fn broker_changes_with_a_stale_epoch_are_rejected_and_change_nothing() {
    let mut image = cluster();
    let before = image.clone();
    assert_eq!(
        image.apply(&change(2, 0, Some(true), false)),
        Err(ApplyError::StaleBrokerEpoch { broker_id: 2, current: 1, record: 0 })
    );
    assert_eq!(
        image.apply(&MetadataRecord::UnregisterBroker(UnregisterBroker { broker_id: 9, broker_epoch: 0 })),
        Err(ApplyError::UnknownBroker(9))
    );
    // The records still took their offsets.
    assert_eq!(image.offset(), before.offset() + 2);
    assert_eq!(image.broker(2), before.broker(2));
}

#[test]
fn unregister_broker_removes_it() {
    let mut image = cluster();
    image.apply(&MetadataRecord::UnregisterBroker(UnregisterBroker { broker_id: 3, broker_epoch: 2 })).unwrap();
    assert!(image.broker(3).is_none());
    assert_eq!(image.brokers().count(), 2);
}

#[test]
fn topics_are_found_by_name_and_id() {
    let image = cluster();
    let t = image.topic_by_name("t").unwrap();
    assert_eq!(t.id, uuid(7));
    assert_eq!(image.topic(uuid(7)).unwrap().name, "t");
    assert_eq!(t.partitions.len(), 2);
    assert!(image.topic_by_name("u").is_none());
    let mut again = image.clone();
    assert_eq!(again.apply(&topic("t", 8)), Err(ApplyError::TopicNameInUse { name: "t".into(), existing: uuid(7) }));
    assert_eq!(again.apply(&topic("u", 7)), Err(ApplyError::TopicIdInUse(uuid(7))));
}

#[test]
fn partition_record_needs_its_topic() {
    let mut image = cluster();
    assert_eq!(image.apply(&partition(99, 0, &[1], 1)), Err(ApplyError::UnknownTopic(uuid(99))));
    let p = image.partition(tp(7, 1)).unwrap();
    assert_eq!((p.leader, p.replicas.clone(), p.isr.clone()), (2, vec![2, 3, 1], vec![2, 3, 1]));
}

#[test]
fn partition_change_bumps_the_leader_epoch_only_when_it_names_a_leader() {
    let mut image = cluster();
    let change = |isr: Option<Vec<i32>>, leader: Option<i32>| {
        MetadataRecord::PartitionChange(PartitionChange {
            topic_id: uuid(7),
            partition: 0,
            isr,
            leader,
            replicas: None,
        })
    };
    image.apply(&change(Some(vec![1, 2]), None)).unwrap();
    let p = image.partition(tp(7, 0)).unwrap();
    assert_eq!((p.isr.clone(), p.leader, p.leader_epoch, p.partition_epoch), (vec![1, 2], 1, 0, 1));

    image.apply(&change(Some(vec![2]), Some(2))).unwrap();
    let p = image.partition(tp(7, 0)).unwrap();
    assert_eq!((p.isr.clone(), p.leader, p.leader_epoch, p.partition_epoch), (vec![2], 2, 1, 2));

    // Naming the current leader still bumps the leader epoch (Kafka's way to force one).
    image.apply(&change(None, Some(2))).unwrap();
    let p = image.partition(tp(7, 0)).unwrap();
    assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (2, 2, 3));

    image.apply(&change(None, Some(NO_LEADER))).unwrap();
    assert_eq!(image.leaderless_partitions().collect::<Vec<_>>(), vec![tp(7, 0)]);
    image.apply(&change(None, Some(1))).unwrap();
    assert_eq!(image.leaderless_partitions().count(), 0);

    assert_eq!(
        image.apply(&MetadataRecord::PartitionChange(PartitionChange {
            topic_id: uuid(7),
            partition: 5,
            isr: None,
            leader: Some(1),
            replicas: None
        })),
        Err(ApplyError::UnknownPartition(tp(7, 5)))
    );
}

#[test]
fn partition_change_of_replicas_moves_the_broker_index() {
    let mut image = cluster();
    image
        .apply(&MetadataRecord::PartitionChange(PartitionChange {
            topic_id: uuid(7),
            partition: 0,
            isr: Some(vec![1, 2, 4]),
            leader: None,
            replicas: Some(vec![1, 2, 4]),
        }))
        .unwrap();
    assert_eq!(image.partitions_followed_by(4), vec![tp(7, 0)]);
    assert_eq!(image.partitions_followed_by(3), vec![tp(7, 1)]);
}

#[test]
fn led_and_followed_partitions() {
    let image = cluster();
    assert_eq!(image.partitions_led_by(1), vec![tp(7, 0)]);
    assert_eq!(image.partitions_followed_by(1), vec![tp(7, 1)]);
    assert_eq!(image.partitions_led_by(3), vec![]);
    assert_eq!(image.partitions_followed_by(3), vec![tp(7, 0), tp(7, 1)]);
    assert!(image.leads_any(2) && !image.leads_any(3));
    assert!(image.partition(tp(7, 0)).unwrap().has_preferred_leader());
}

#[test]
fn remove_topic_removes_partitions_index_and_topic_configs() {
    let mut image = cluster();
    let config = |name: &str, value: Option<&str>| {
        MetadataRecord::Config(ConfigRecord {
            resource_type: ConfigResourceType::TOPIC,
            resource_name: "t".into(),
            name: name.into(),
            value: value.map(String::from),
        })
    };
    image.apply(&config("retention.ms", Some("1000"))).unwrap();
    image.apply(&MetadataRecord::RemoveTopic(RemoveTopic { topic_id: uuid(7) })).unwrap();
    assert!(image.topic_by_name("t").is_none() && image.topic(uuid(7)).is_none());
    assert!(image.partition(tp(7, 0)).is_none());
    assert_eq!(image.partitions_followed_by(3), vec![]);
    assert!(image.configs(ConfigResourceType::TOPIC, "t").is_none());
    assert_eq!(
        image.apply(&MetadataRecord::RemoveTopic(RemoveTopic { topic_id: uuid(7) })),
        Err(ApplyError::UnknownTopic(uuid(7)))
    );
    // The name can be used again.
    image.apply(&topic("t", 8)).unwrap();
}

#[test]
fn config_records_set_and_delete_keys() {
    let mut image = MetadataImage::new();
    let set = |rt, name: &str, key: &str, value: Option<&str>| {
        MetadataRecord::Config(ConfigRecord {
            resource_type: rt,
            resource_name: name.into(),
            name: key.into(),
            value: value.map(String::from),
        })
    };
    apply_all(
        &mut image,
        &[
            set(ConfigResourceType::TOPIC, "t", "cleanup.policy", Some("compact")),
            set(ConfigResourceType::TOPIC, "t", "retention.ms", Some("1")),
            set(ConfigResourceType::BROKER, "", "log.retention.ms", Some("5")),
            set(ConfigResourceType::TOPIC, "t", "retention.ms", Some("2")),
        ],
    );
    assert_eq!(image.config(ConfigResourceType::TOPIC, "t", "retention.ms"), Some("2"));
    assert_eq!(image.config(ConfigResourceType::BROKER, "", "log.retention.ms"), Some("5"));
    assert_eq!(image.configs(ConfigResourceType::TOPIC, "t").unwrap().len(), 2);
    image.apply(&set(ConfigResourceType::TOPIC, "t", "retention.ms", None)).unwrap();
    image.apply(&set(ConfigResourceType::TOPIC, "t", "cleanup.policy", None)).unwrap();
    assert!(image.configs(ConfigResourceType::TOPIC, "t").is_none());
    // Deleting a key that is not there is a no-op.
    image.apply(&set(ConfigResourceType::TOPIC, "x", "y", None)).unwrap();
}

#[test]
fn snapshot_round_trips_to_an_equal_image() {
    let mut image = cluster();
    image.apply(&change(2, 1, None, true)).unwrap();
    image
        .apply(&MetadataRecord::Config(ConfigRecord {
            resource_type: ConfigResourceType::TOPIC,
            resource_name: "t".into(),
            name: "min.insync.replicas".into(),
            value: Some("2".into()),
        }))
        .unwrap();
    let bytes = image.encode_snapshot();
    let decoded = MetadataImage::decode_snapshot(&bytes).unwrap();
    assert_eq!(decoded, image);
    assert_eq!(decoded.offset(), image.offset());
    assert_eq!(MetadataImage::decode_snapshot(b"nope"), Err(SnapshotError::BadMagic));
    assert!(MetadataImage::decode_snapshot(&bytes[..bytes.len() - 1]).is_err());
}
