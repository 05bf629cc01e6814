//! The topic registry against a real data directory: what is created, renamed and removed,
//! what a crash halfway leaves behind, and what the broker refuses to touch.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use tern_broker::datadir::{self, Marker};
use tern_broker::topics::TopicRegistry;
use tern_storage::LogConfig;
use uuid::Uuid;

fn load(dir: &Path) -> TopicRegistry {
    TopicRegistry::load(dir, 1, |_| LogConfig::default()).unwrap()
}

fn create(reg: &TopicRegistry, name: &str, partitions: i32) -> Uuid {
    reg.create(name, partitions, BTreeMap::new(), &LogConfig::default()).unwrap().id
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

fn append(reg: &TopicRegistry, topic: &str, partition: i32) {
    // One minimal v2 batch with one record, as the storage tests build them.
    let t = reg.get(topic).unwrap();
    let p = t.partition(partition).unwrap();
    let batch = batch_bytes();
    p.log.append(&batch, 0, 1_000).unwrap();
}

fn batch_bytes() -> Vec<u8> {
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
    let record = Record {
        transactional: false,
        control: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 1_000,
        key: Some(bytes::Bytes::from_static(b"k")),
        value: Some(bytes::Bytes::from_static(b"v")),
        headers: Default::default(),
        delete_horizon: false,
    };
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        [record].iter(),
        &RecordEncodeOptions { version: 2, compression: Compression::None },
    )
    .unwrap();
    buf.to_vec()
}

fn wait_gone(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while path.exists() {
        assert!(Instant::now() < deadline, "{} was not removed", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn created_partitions_carry_the_marker_and_survive_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let reg = load(dir.path());
    let id = create(&reg, "events", 3);
    for p in 0..3 {
        assert_eq!(datadir::read_partition_metadata(&dir.path().join(format!("events-{p}"))), Marker::Topic(id));
    }
    append(&reg, "events", 1);
    reg.close_all();
    drop(reg);
    let reg = load(dir.path());
    let t = reg.get("events").unwrap();
    assert_eq!((t.id, t.partitions.len(), t.offline.is_none()), (id, 3, true));
    assert_eq!(t.partition(1).unwrap().log.log_end_offset(), 1);
}

#[test]
fn deletion_renames_then_removes_and_a_recreated_topic_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let reg = load(dir.path());
    let old = create(&reg, "t", 2);
    append(&reg, "t", 0);
    let held = reg.get("t").unwrap();
    reg.delete("t", 0).unwrap();
    assert!(held.partition(0).unwrap().log.append(&batch_bytes(), 0, 1_000).is_err(), "a deleted log took an append");
    let new = create(&reg, "t", 2);
    assert_ne!(old, new);
    assert_eq!(reg.get("t").unwrap().partition(0).unwrap().log.log_end_offset(), 0);
    for name in entries(dir.path()).iter().filter(|n| n.ends_with("-delete")) {
        wait_gone(&dir.path().join(name));
    }
    assert_eq!(entries(&dir.path().join(".topics")), vec!["t.properties"]);
}

#[test]
fn a_failed_creation_removes_only_what_it_created() {
    let dir = tempfile::tempdir().unwrap();
    let reg = load(dir.path());
    fs::create_dir(dir.path().join("t-2")).unwrap();
    fs::write(dir.path().join("t-2").join("mine.txt"), b"user data").unwrap();
    let err = reg.create("t", 4, BTreeMap::new(), &LogConfig::default()).err().expect("created").to_string();
    assert!(err.contains("t-2"), "{err}");
    assert!(reg.get("t").is_none());
    assert_eq!(entries(dir.path()), vec![".topics", "t-2"]);
    assert_eq!(fs::read(dir.path().join("t-2").join("mine.txt")).unwrap(), b"user data");
    assert!(entries(&dir.path().join(".topics")).is_empty());
    // The same goes for growing a topic.
    create(&reg, "u", 1);
    fs::create_dir(dir.path().join("u-2")).unwrap();
    assert!(reg.add_partitions("u", 4, &LogConfig::default()).is_err());
    assert_eq!(reg.get("u").unwrap().partitions.len(), 1);
    assert!(!dir.path().join("u-1").exists() && dir.path().join("u-2").exists());
    drop(reg);
    assert_eq!(load(dir.path()).get("u").unwrap().partitions.len(), 1);
}

#[test]
fn an_interrupted_creation_is_rolled_back_and_an_interrupted_deletion_finished() {
    let dir = tempfile::tempdir().unwrap();
    let reg = load(dir.path());
    let gone = create(&reg, "gone", 2);
    drop(reg);
    // A crash during the creation of "half": one partition directory made, then the crash.
    let half = Uuid::new_v4();
    fs::write(
        dir.path().join(".topics").join("half.properties"),
        format!("topic.name=half\ntopic.id={half}\npartitions=0\npending.operation=create\npending.partitions=3\n"),
    )
    .unwrap();
    datadir::create_partition_dir(&dir.path().join("half-0"), half).unwrap();
    fs::create_dir(dir.path().join("half-1")).unwrap(); // made, crash before its marker
    fs::create_dir(dir.path().join("half-2")).unwrap();
    fs::write(dir.path().join("half-2").join("x"), b"not ours").unwrap();
    // A crash during the deletion of "gone", after its metadata recorded it.
    let meta = dir.path().join(".topics").join("gone.properties");
    assert!(gone != half);
    let text = fs::read_to_string(&meta).unwrap();
    fs::write(&meta, format!("{text}pending.operation=delete\n")).unwrap();

    let reg = load(dir.path());
    assert!(reg.get("half").is_none() && reg.get("gone").is_none());
    assert!(!dir.path().join("half-0").exists() && !dir.path().join("half-1").exists());
    assert!(dir.path().join("half-2").join("x").exists(), "a directory the operation did not create was removed");
    assert!(!dir.path().join("gone-0").exists() && !dir.path().join("gone-1").exists());
    for name in entries(dir.path()).iter().filter(|n| n.ends_with("-delete")) {
        wait_gone(&dir.path().join(name));
    }
    assert!(entries(&dir.path().join(".topics")).is_empty());
}

#[test]
fn metadata_that_disagrees_with_the_directories_takes_the_topic_offline_and_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let reg = load(dir.path());
    create(&reg, "t", 3);
    append(&reg, "t", 2);
    reg.close_all();
    drop(reg);
    let meta = dir.path().join(".topics").join("t.properties");
    let original = fs::read_to_string(&meta).unwrap();
    fs::write(&meta, original.replace("partitions=3", "partitions=1")).unwrap();
    let before = entries(&dir.path().join("t-2"));

    let reg = load(dir.path());
    let t = reg.get("t").unwrap();
    let reason = t.offline.clone().expect("topic served despite the disagreement");
    assert!(reason.contains("t.properties") && reason.contains("t-2"), "{reason}");
    assert_eq!(t.partitions.len(), 3);
    assert!(t.partitions.iter().all(|p| p.offline_reason().is_some()));
    assert!(reg.delete("t", 0).is_err() && reg.add_partitions("t", 5, &LogConfig::default()).is_err());
    assert!(reg.create("t", 1, BTreeMap::new(), &LogConfig::default()).is_err());
    assert_eq!(entries(&dir.path().join("t-2")), before);
    drop(reg);

    fs::write(&meta, original).unwrap();
    let reg = load(dir.path());
    let t = reg.get("t").unwrap();
    assert!(t.offline.is_none());
    assert_eq!(t.partition(2).unwrap().log.log_end_offset(), 1);
}

#[test]
fn marked_directories_without_metadata_are_an_offline_topic_and_foreign_ones_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let reg = load(dir.path());
    let id = create(&reg, "t", 2);
    drop(reg);
    fs::remove_file(dir.path().join(".topics").join("t.properties")).unwrap();
    fs::create_dir(dir.path().join("photos")).unwrap();
    fs::create_dir(dir.path().join("backup-1")).unwrap();
    fs::create_dir(dir.path().join("old-0.0123456789abcdef0123456789abcdef-delete")).unwrap();
    fs::write(dir.path().join("old-0.0123456789abcdef0123456789abcdef-delete").join("f"), b"x").unwrap();

    let reg = load(dir.path());
    let t = reg.get("t").unwrap();
    assert!(t.offline.as_deref().is_some_and(|r| r.contains("no metadata file")), "{:?}", t.offline);
    assert_eq!(t.id, id, "the id the markers agree on");
    assert!(reg.get("backup").is_none(), "an unmarked directory became a topic");
    assert_eq!(
        entries(dir.path()),
        vec![".topics", "backup-1", "old-0.0123456789abcdef0123456789abcdef-delete", "photos", "t-0", "t-1"]
    );
}

#[test]
fn directories_of_the_older_layout_are_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let reg = load(dir.path());
    let id = create(&reg, "legacy", 2);
    append(&reg, "legacy", 1);
    reg.close_all();
    drop(reg);
    fs::write(dir.path().join(".topics").join("legacy.properties"), format!("topic.id={id}\npartitions=2\n")).unwrap();
    for p in 0..2 {
        fs::remove_file(dir.path().join(format!("legacy-{p}")).join(datadir::PARTITION_METADATA)).unwrap();
    }
    let reg = load(dir.path());
    let t = reg.get("legacy").unwrap();
    assert!(t.offline.is_none(), "{:?}", t.offline);
    assert_eq!((t.id, t.partition(1).unwrap().log.log_end_offset()), (id, 1));
    assert_eq!(datadir::read_partition_metadata(&dir.path().join("legacy-0")), Marker::Topic(id));
    assert_eq!(entries(&dir.path().join(".topics")), vec!["legacy.properties"]);
    assert!(fs::read_to_string(dir.path().join(".topics").join("legacy.properties"))
        .unwrap()
        .contains("topic.name=legacy"));
}

#[test]
fn names_colliding_on_dot_and_underscore_are_refused_and_long_names_fit() {
    let dir = tempfile::tempdir().unwrap();
    let reg = load(dir.path());
    create(&reg, "a_b", 1);
    let err = reg.create("a.b", 1, BTreeMap::new(), &LogConfig::default()).err().expect("created").to_string();
    assert_eq!(err, "Topic 'a.b' collides with existing topic: a_b");
    let long = "x".repeat(249);
    let id = create(&reg, &long, 2);
    let mut expected = vec![format!("{id}.properties"), "a_b.properties".to_string()];
    expected.sort();
    assert_eq!(entries(&dir.path().join(".topics")), expected);
    reg.delete(&long, 0).unwrap();
    create(&reg, &long, 2);
    drop(reg);
    assert_eq!(load(dir.path()).get(&long).unwrap().partitions.len(), 2);
}
