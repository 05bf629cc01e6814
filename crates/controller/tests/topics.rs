//! CreateTopics (placement over racks and brokers), CreatePartitions, DeleteTopics, configs.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::Harness;
use tern_controller::errors::*;
use tern_controller::*;
use tern_metadata::*;

/// Kafka's striping: replicas are spread exactly, and leadership evenly over racks. (Within a
/// rack, leadership is as uneven as Kafka's: with as many racks as brokers per rack, one round
/// of partitions is led by one broker per rack, and the shuffle between rounds mixes that.)
#[test]
fn placement_puts_each_replica_in_another_rack_and_spreads_leaders() {
    let mut h = Harness::new();
    // Nine brokers in three racks: a, b, c.
    h.brokers(1..=9, &["a", "b", "c"]);
    let t = h.create("t", 90, 3);
    let topic = h.image().topic(t).unwrap().clone();
    let rack = |b: BrokerId| h.image().broker(b).unwrap().rack.clone().unwrap();
    let mut leaders: BTreeMap<String, usize> = BTreeMap::new();
    let mut replicas: BTreeMap<BrokerId, usize> = BTreeMap::new();
    for p in topic.partitions.values() {
        let racks: BTreeSet<String> = p.replicas.iter().map(|b| rack(*b)).collect();
        assert_eq!(racks.len(), 3, "one replica per rack: {:?}", p.replicas);
        assert_eq!(p.leader, p.replicas[0], "the preferred leader leads");
        assert_eq!(p.isr, p.replicas);
        *leaders.entry(rack(p.leader)).or_default() += 1;
        for r in &p.replicas {
            *replicas.entry(*r).or_default() += 1;
        }
    }
    assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![30; 3], "{leaders:?}");
    assert_eq!(replicas.values().copied().collect::<Vec<_>>(), vec![30; 9], "{replicas:?}");
}

#[test]
fn placement_without_racks_spreads_over_brokers() {
    let mut h = Harness::new();
    h.brokers(1..=4, &[]);
    let t = h.create("t", 8, 2);
    let mut leaders: BTreeMap<BrokerId, usize> = BTreeMap::new();
    for p in h.image().topic(t).unwrap().partitions.values() {
        assert_ne!(p.replicas[0], p.replicas[1]);
        *leaders.entry(p.leader).or_default() += 1;
    }
    assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2; 4]);
}

#[test]
fn fenced_brokers_get_replicas_but_never_lead_or_join_the_isr() {
    let mut h = Harness::new();
    h.brokers([1, 2], &[]);
    h.register(3, None); // stays fenced
    let t = h.create("t", 6, 3);
    for p in h.image().topic(t).unwrap().partitions.values() {
        assert_ne!(p.leader, 3);
        assert!(p.replicas.contains(&3) && !p.isr.contains(&3));
    }
}

#[test]
fn create_topic_errors_use_kafka_codes() {
    let mut h = Harness::new();
    h.brokers([1, 2], &[]);
    h.create("t", 1, 1);
    let code = |h: &mut Harness, t: CreatableTopic| h.create_topic(t).error_code;
    assert_eq!(code(&mut h, CreatableTopic::new("t", 1, 1)), TOPIC_ALREADY_EXISTS);
    assert_eq!(code(&mut h, CreatableTopic::new("u", 1, 3)), INVALID_REPLICATION_FACTOR);
    assert_eq!(code(&mut h, CreatableTopic::new("u", 1, 0)), INVALID_REPLICATION_FACTOR);
    assert_eq!(code(&mut h, CreatableTopic::new("u", 0, 1)), INVALID_PARTITIONS);
    assert_eq!(code(&mut h, CreatableTopic::new("bad name", 1, 1)), INVALID_TOPIC_EXCEPTION);
    assert_eq!(code(&mut h, CreatableTopic::new("..", 1, 1)), INVALID_TOPIC_EXCEPTION);
    assert_eq!(code(&mut h, CreatableTopic::new(&"x".repeat(250), 1, 1)), INVALID_TOPIC_EXCEPTION);
    let manual = |assignments| CreatableTopic { assignments, ..CreatableTopic::new("u", -1, -1) };
    assert_eq!(code(&mut h, manual(vec![vec![1, 1]])), INVALID_REPLICA_ASSIGNMENT);
    assert_eq!(code(&mut h, manual(vec![vec![1, 7]])), INVALID_REPLICA_ASSIGNMENT);
    assert_eq!(code(&mut h, manual(vec![vec![]])), INVALID_REPLICA_ASSIGNMENT);
    assert_eq!(
        code(&mut h, CreatableTopic { assignments: vec![vec![1]], ..CreatableTopic::new("u", 1, -1) }),
        INVALID_REQUEST
    );
    // Two topics of the same name in one request both fail.
    let result =
        h.controller.create_topics(vec![CreatableTopic::new("d", 1, 1), CreatableTopic::new("d", 1, 1)], false);
    assert!(result.records.is_empty());
    assert!(result.response.iter().all(|r| r.error_code == INVALID_REQUEST));
    // Nothing was recorded for any failure.
    assert_eq!(h.image().topics().count(), 1);
}

#[test]
fn every_broker_fenced_is_an_invalid_replication_factor() {
    let mut h = Harness::new();
    h.register(1, None);
    assert_eq!(h.create_topic(CreatableTopic::new("t", 1, 1)).error_code, INVALID_REPLICATION_FACTOR);
    let mut empty = Harness::new();
    assert_eq!(empty.create_topic(CreatableTopic::new("t", 1, 1)).error_code, INVALID_REPLICATION_FACTOR);
}

#[test]
fn defaults_configs_and_validate_only() {
    let mut h = Harness::with_config(ControllerConfig {
        num_partitions: 3,
        default_replication_factor: 2,
        seed: 1,
        ..Default::default()
    });
    h.brokers([1, 2], &[]);
    let result = h.controller.create_topics(vec![CreatableTopic::new("v", -1, -1)], true);
    assert!(result.records.is_empty());
    assert_eq!((result.response[0].num_partitions, result.response[0].replication_factor), (3, 2));
    assert!(h.image().topic_by_name("v").is_none());

    let created = h.create_topic(CreatableTopic {
        configs: vec![("cleanup.policy".into(), Some("compact".into()))],
        ..CreatableTopic::new("t", -1, -1)
    });
    assert_eq!((created.num_partitions, created.replication_factor), (3, 2));
    assert_eq!(h.image().topic_by_name("t").unwrap().id, created.topic_id);
    assert_eq!(h.image().config(ConfigResourceType::TOPIC, "t", "cleanup.policy"), Some("compact"));

    let altered = h.controller.alter_configs(ConfigResourceType::TOPIC, "t", vec![("cleanup.policy".into(), None)]);
    assert_eq!(altered.response, NONE);
    h.commit(&altered.records);
    assert!(h.image().configs(ConfigResourceType::TOPIC, "t").is_none());
    assert_eq!(
        h.controller.alter_configs(ConfigResourceType::TOPIC, "nope", vec![]).response,
        UNKNOWN_TOPIC_OR_PARTITION
    );
}

#[test]
fn create_partitions_adds_placed_or_assigned_partitions() {
    let mut h = Harness::new();
    h.brokers([1, 2, 3], &[]);
    let t = h.create("t", 2, 2);
    let grow = |h: &mut Harness, count, assignments| {
        let result =
            h.controller.create_partitions(vec![CreatePartitionsTopic { name: "t".into(), count, assignments }], false);
        h.commit(&result.records);
        result.response[0].error_code
    };
    assert_eq!(grow(&mut h, 4, None), NONE);
    assert_eq!(h.image().topic(t).unwrap().partitions.len(), 4);
    assert_eq!(h.partition(t, 3).replicas.len(), 2);
    assert_eq!(grow(&mut h, 4, None), INVALID_PARTITIONS);
    assert_eq!(grow(&mut h, 3, None), INVALID_PARTITIONS);
    assert_eq!(grow(&mut h, 6, Some(vec![vec![3, 1]])), INVALID_REPLICA_ASSIGNMENT);
    assert_eq!(grow(&mut h, 5, Some(vec![vec![3, 1]])), NONE);
    assert_eq!(h.partition(t, 4).replicas, vec![3, 1]);
    let unknown = h
        .controller
        .create_partitions(vec![CreatePartitionsTopic { name: "x".into(), count: 2, assignments: None }], false);
    assert_eq!(unknown.response[0].error_code, UNKNOWN_TOPIC_OR_PARTITION);
}

#[test]
fn delete_topics_by_name_and_id() {
    let mut h = Harness::new();
    h.brokers([1], &[]);
    let t = h.create("t", 2, 1);
    let u = h.create("u", 1, 1);
    let result = h.controller.delete_topics(vec![
        TopicRef::Name("t".into()),
        TopicRef::Id(u),
        TopicRef::Name("nope".into()),
        TopicRef::Id(Uuid::from_u128(5)),
    ]);
    h.commit(&result.records);
    let codes: Vec<_> = result.response.iter().map(|r| (r.topic_id, r.error_code)).collect();
    assert_eq!(
        codes,
        vec![(t, NONE), (u, NONE), (Uuid::nil(), UNKNOWN_TOPIC_OR_PARTITION), (Uuid::nil(), UNKNOWN_TOPIC_ID)]
    );
    assert_eq!(h.image().topics().count(), 0);
    assert!(h.image().partitions_led_by(1).is_empty());
}
