//! The delta of a batch, and what it asks of each broker.

use tern_metadata::*;

fn uuid(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn tp(p: i32) -> TopicIdPartition {
    TopicIdPartition::new(uuid(7), p)
}

fn image_with_topic() -> MetadataImage {
    let mut image = MetadataImage::new();
    image.apply(&MetadataRecord::Topic(TopicRecord { name: "t".into(), topic_id: uuid(7) })).unwrap();
    for (p, replicas, leader) in [(0, vec![1, 2, 3], 1), (1, vec![2, 3, 1], 2), (2, vec![3, 1, 2], 3)] {
        image
            .apply(&MetadataRecord::Partition(PartitionRecord {
                topic_id: uuid(7),
                partition: p,
                replicas: replicas.clone(),
                isr: replicas,
                leader,
                leader_epoch: 0,
                partition_epoch: 0,
            }))
            .unwrap();
    }
    image
}

fn leader_change(p: i32, leader: i32, isr: Vec<i32>) -> MetadataRecord {
    MetadataRecord::PartitionChange(PartitionChange {
        topic_id: uuid(7),
        partition: p,
        isr: Some(isr),
        leader: Some(leader),
        replicas: None,
    })
}

#[test]
fn new_topic_tells_each_replica_to_lead_or_follow() {
    let mut image = MetadataImage::new();
    let records = image_with_topic().to_records();
    let delta = image.apply_batch(&records);
    assert!(delta.errors.is_empty());
    assert_eq!(delta.created_topics().collect::<Vec<_>>(), vec![uuid(7)]);
    let local = delta.local_changes(&image, 1);
    assert_eq!(local.leaders.iter().map(|p| (p.tp, p.newly_led)).collect::<Vec<_>>(), vec![(tp(0), true)]);
    assert_eq!(local.followers.iter().map(|p| p.tp).collect::<Vec<_>>(), vec![tp(1), tp(2)]);
    assert_eq!(local.leaders[0].topic_name, "t");
    assert!(local.deletes.is_empty());
    assert!(delta.local_changes(&image, 9).is_empty());
}

#[test]
fn failover_moves_leadership_with_the_new_leader_epoch() {
    let mut image = image_with_topic();
    // Broker 1 is fenced: it leaves every ISR, and partition 0 gets leader 2.
    let records = vec![
        leader_change(0, 2, vec![2, 3]),
        MetadataRecord::PartitionChange(PartitionChange {
            topic_id: uuid(7),
            partition: 1,
            isr: Some(vec![2, 3]),
            leader: None,
            replicas: None,
        }),
    ];
    let delta = image.apply_batch(&records);
    assert_eq!(delta.changed_partitions(), vec![tp(0), tp(1)]);
    assert_eq!(delta.partition_before(tp(0)).unwrap().unwrap().leader, 1);

    let two = delta.local_changes(&image, 2);
    assert_eq!(
        two.leaders.iter().map(|p| (p.tp, p.newly_led, p.state.leader_epoch)).collect::<Vec<_>>(),
        vec![(tp(0), true, 1), (tp(1), false, 0)]
    );
    let three = delta.local_changes(&image, 3);
    assert_eq!(
        three.followers.iter().map(|p| (p.tp, p.state.leader)).collect::<Vec<_>>(),
        vec![(tp(0), 2), (tp(1), 2)]
    );
    // The fenced broker still hosts both: it is told to follow the new leader.
    let one = delta.local_changes(&image, 1);
    assert!(one.leaders.is_empty());
    assert_eq!(one.followers.len(), 2);
}

#[test]
fn removing_a_topic_or_a_replica_tells_the_broker_to_delete() {
    let mut image = image_with_topic();
    let delta = image.apply_batch(&[MetadataRecord::PartitionChange(PartitionChange {
        topic_id: uuid(7),
        partition: 0,
        isr: Some(vec![1, 2]),
        leader: None,
        replicas: Some(vec![1, 2]),
    })]);
    assert_eq!(delta.local_changes(&image, 3).deletes, vec![(tp(0), "t".to_string())]);

    let delta = image.apply_batch(&[MetadataRecord::RemoveTopic(RemoveTopic { topic_id: uuid(7) })]);
    assert_eq!(delta.removed_topics().collect::<Vec<_>>(), vec![(uuid(7), "t")]);
    let one = delta.local_changes(&image, 1);
    assert_eq!(one.deletes.iter().map(|(tp, _)| *tp).collect::<Vec<_>>(), vec![tp(0), tp(1), tp(2)]);
    assert!(one.leaders.is_empty() && one.followers.is_empty());
    // Broker 3 left partition 0 in the earlier batch: only 1 and 2 are deleted now.
    assert_eq!(delta.local_changes(&image, 3).deletes.len(), 2);
}

#[test]
fn a_partition_changed_twice_reports_its_final_state_against_the_first_before() {
    let mut image = image_with_topic();
    let delta = image.apply_batch(&[leader_change(0, 2, vec![2, 3]), leader_change(0, 1, vec![1, 2, 3])]);
    let one = delta.local_changes(&image, 1);
    // Broker 1 led before and leads after: not newly led, but the epoch moved by two.
    assert_eq!(one.leaders.iter().map(|p| (p.newly_led, p.state.leader_epoch)).collect::<Vec<_>>(), vec![(false, 2)]);
}

#[test]
fn broker_and_config_changes_are_recorded_and_failures_listed() {
    let mut image = MetadataImage::new();
    let delta = image.apply_batch(&[
        MetadataRecord::RegisterBroker(RegisterBroker {
            broker_id: 4,
            incarnation_id: uuid(1),
            broker_epoch: 0,
            endpoints: vec![],
            rack: None,
            fenced: true,
            in_controlled_shutdown: false,
        }),
        MetadataRecord::Config(ConfigRecord {
            resource_type: ConfigResourceType::BROKER,
            resource_name: "4".into(),
            name: "k".into(),
            value: Some("v".into()),
        }),
        MetadataRecord::RemoveTopic(RemoveTopic { topic_id: uuid(3) }),
    ]);
    assert_eq!(delta.changed_brokers().collect::<Vec<_>>(), vec![4]);
    assert_eq!(delta.changed_configs().count(), 1);
    assert_eq!(delta.errors, vec![(2, ApplyError::UnknownTopic(uuid(3)))]);
    assert_eq!(image.offset(), 2);
}
