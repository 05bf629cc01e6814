//! `tern-client` against the real broker binary: `tern serve` in a temp dir on a free loopback
//! port, then Admin, Producer and Consumer in-process. Every wait is bounded; no timing assertions.

use std::collections::HashMap;
mod common;

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tern_client::{
    murmur2, to_positive, Admin, Compression, Consumer, ConsumerConfig, ConsumerRecord, OffsetSpec, Producer,
    ProducerConfig, ProducerRecord,
};

/// Upper bound for any one wait; only reached when something hangs.
const DEADLINE: Duration = Duration::from_secs(120);
const RECORDS: usize = 20_000;
const PARTITIONS: i32 = 4;

use common::Broker;

/// Awaits `f`, failing the test if it takes longer than [`DEADLINE`].
async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {DEADLINE:?}"),
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as i64
}

fn key_of(n: usize) -> String {
    format!("key-{}", n % 1000)
}

/// Java's default partitioner for keyed records.
fn expected_partition(key: &str) -> i32 {
    to_positive(murmur2(key.as_bytes())) % PARTITIONS
}

/// One record sent: its index in send order, partition and offset as acknowledged.
struct Sent {
    partition: i32,
    offset: i64,
}

/// Produces `RECORDS` keyed records with timestamps `base_ts + n` and waits for every delivery.
async fn produce(addr: &str, topic: &str, compression: Compression, base_ts: i64) -> Vec<Sent> {
    let producer = bounded(
        "Producer::new",
        Producer::new(ProducerConfig {
            bootstrap: addr.to_owned(),
            max_in_flight: 5,
            linger: Duration::from_millis(5),
            compression,
            ..Default::default()
        }),
    )
    .await
    .expect("producer");
    let mut futures = Vec::with_capacity(RECORDS);
    for n in 0..RECORDS {
        let record = ProducerRecord::new(topic, Bytes::from(format!("value-{n}")))
            .with_key(Bytes::from(key_of(n)))
            .with_timestamp(base_ts + n as i64);
        futures.push(bounded("send", producer.send(record)).await.expect("queued"));
        if n % 512 == 0 {
            tokio::task::yield_now().await;
        }
    }
    bounded("flush", producer.flush()).await.expect("flush");
    let mut sent = Vec::with_capacity(RECORDS);
    for (n, f) in futures.into_iter().enumerate() {
        let md = bounded("delivery", f).await.unwrap_or_else(|e| panic!("{compression:?}: record {n} failed: {e}"));
        assert_eq!(md.partition, expected_partition(&key_of(n)), "{compression:?}: partition of record {n}");
        assert_eq!(md.timestamp, base_ts + n as i64);
        sent.push(Sent { partition: md.partition, offset: md.offset });
    }
    bounded("close", producer.close()).await.expect("close");
    sent
}

/// Reads every partition of `topic` from Earliest until `want` records arrived.
async fn consume(addr: &str, topic: &str, want: usize) -> Vec<ConsumerRecord> {
    let mut consumer = bounded(
        "Consumer::new",
        Consumer::new(ConsumerConfig {
            bootstrap: addr.to_owned(),
            fetch_max_wait: Duration::from_millis(100),
            max_partition_fetch_bytes: 64 * 1024,
            ..Default::default()
        }),
    )
    .await
    .expect("consumer");
    consumer.assign((0..PARTITIONS).map(|p| (topic.to_owned(), p, OffsetSpec::Earliest)).collect());
    let mut out = Vec::with_capacity(want);
    bounded("consume", async {
        while out.len() < want {
            out.extend(consumer.poll().await.expect("poll"));
        }
    })
    .await;
    assert_eq!(out.len(), want, "consumed more records than were produced");
    out
}

/// Checks what was consumed against what was sent: per-partition send order, key placement,
/// contiguous offsets from 0, values and timestamps.
fn check_consumed(what: &str, sent: &[Sent], got: &[ConsumerRecord], base_ts: i64) {
    let mut by_part: HashMap<i32, Vec<&ConsumerRecord>> = HashMap::new();
    for r in got {
        by_part.entry(r.partition).or_default().push(r);
    }
    let mut expected: HashMap<i32, Vec<usize>> = HashMap::new();
    for (n, s) in sent.iter().enumerate() {
        expected.entry(s.partition).or_default().push(n);
    }
    assert_eq!(by_part.len(), PARTITIONS as usize, "{what}: every partition gets keys");
    for (p, records) in &by_part {
        let order: Vec<usize> = records
            .iter()
            .map(|r| {
                let v = std::str::from_utf8(r.value.as_deref().expect("value")).expect("utf-8");
                v.strip_prefix("value-").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("bad value {v}"))
            })
            .collect();
        let want = &expected[p];
        if order != *want {
            let first = order.iter().zip(want).position(|(a, b)| a != b).unwrap_or(order.len().min(want.len()));
            panic!(
                "{what}: partition {p} order differs from send order at position {first}: got {:?}, sent {:?}",
                &order[first..(first + 5).min(order.len())],
                &want[first..(first + 5).min(want.len())]
            );
        }
        for (i, (r, &n)) in records.iter().zip(want).enumerate() {
            assert_eq!(r.offset, i as i64, "{what}: partition {p} offsets are contiguous from 0");
            assert_eq!(r.offset, sent[n].offset, "{what}: consumed offset equals acknowledged offset");
            let key = key_of(n);
            assert_eq!(r.key.as_deref(), Some(key.as_bytes()));
            assert_eq!(expected_partition(&key), *p, "{what}: key {key} on partition {p}");
            assert_eq!(r.timestamp, base_ts + n as i64, "{what}: timestamp of record {n}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_consume_and_admin_against_real_broker() {
    let broker = Broker::start();
    let addr = broker.addr.clone();
    let admin = bounded("Admin::new", Admin::new(&addr)).await.expect("admin");
    let configs: HashMap<String, String> = [("segment.bytes".to_owned(), "65536".to_owned())].into();
    let base_ts = now_ms() - 10 * 60_000;
    let mut first: Option<(String, Vec<ConsumerRecord>)> = None;
    for (i, compression) in
        [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd]
            .into_iter()
            .enumerate()
    {
        let topic = format!("live-{i}");
        let what = format!("{topic} ({compression:?})");
        bounded("create_topic", admin.create_topic(&topic, PARTITIONS, 1, &configs, false))
            .await
            .unwrap_or_else(|e| panic!("create {what}: {e}\n{}", broker.log()));
        let sent = produce(&addr, &topic, compression, base_ts).await;
        let got = consume(&addr, &topic, RECORDS).await;
        check_consumed(&what, &sent, &got, base_ts);
        if first.is_none() {
            first = Some((topic, got));
        }
    }
    let (topic, got) = first.expect("at least one topic");
    let topic = topic.as_str();

    // The override is described as a dynamic topic config; the others keep their defaults.
    let entries = bounded("describe_configs", admin.describe_configs(topic)).await.expect("describe_configs");
    let seg = entries.iter().find(|e| e.name == "segment.bytes").expect("segment.bytes described");
    assert_eq!(seg.value.as_deref(), Some("65536"));
    assert!(!seg.is_default);
    assert_eq!(seg.source, 1, "DYNAMIC_TOPIC_CONFIG");
    let retention = entries.iter().find(|e| e.name == "retention.ms").expect("retention.ms described");
    assert!(retention.is_default || retention.source != 1, "{retention:?}");

    // Timestamp lookup: the first record at or after a timestamp, per partition.
    for p in 0..PARTITIONS {
        let records: Vec<&ConsumerRecord> = got.iter().filter(|r| r.partition == p).collect();
        for &i in &[0, 1, records.len() / 3, records.len() / 2, records.len() - 1] {
            let target = records[i].timestamp;
            let (offset, ts) = bounded("list_offsets", admin.list_offsets(topic, p, OffsetSpec::Timestamp(target)))
                .await
                .unwrap_or_else(|e| panic!("list_offsets({topic}-{p}, ts {target}): {e}"));
            assert_eq!(
                (offset, ts),
                (records[i].offset, target),
                "ListOffsets {topic}-{p} timestamp {target} (v3+, isolation 0)"
            );
            // Between two records: the later one.
            if i > 0 && records[i - 1].timestamp + 1 < target {
                let (offset, _) =
                    bounded("list_offsets", admin.list_offsets(topic, p, OffsetSpec::Timestamp(target - 1)))
                        .await
                        .expect("list_offsets");
                assert_eq!(offset, records[i].offset, "ListOffsets {topic}-{p} timestamp {}", target - 1);
            }
        }
        let latest = bounded("list_offsets", admin.list_offsets(topic, p, OffsetSpec::Latest)).await.expect("latest");
        assert_eq!(latest.0, records.len() as i64);
    }

    // DeleteRecords moves the log start offset; ListOffsets Earliest reports it.
    let p0 = got.iter().filter(|r| r.partition == 0).count() as i64;
    let cut = p0 / 2 + 3;
    let low = bounded("delete_records", admin.delete_records(topic, 0, cut)).await.expect("delete_records");
    assert_eq!(low, cut, "DeleteRecords {topic}-0 before {cut}: low watermark");
    let (earliest, _) =
        bounded("list_offsets", admin.list_offsets(topic, 0, OffsetSpec::Earliest)).await.expect("earliest");
    assert_eq!(earliest, cut, "ListOffsets Earliest after DeleteRecords");
    let (latest, _) = bounded("list_offsets", admin.list_offsets(topic, 0, OffsetSpec::Latest)).await.expect("latest");
    assert_eq!(latest, p0, "DeleteRecords leaves the end alone");

    // Partitions can grow but not shrink.
    bounded("create_partitions", admin.create_partitions(topic, 6, false)).await.expect("create_partitions to 6");
    let described = bounded("describe_topics", admin.describe_topics(&[topic])).await.expect("describe_topics");
    assert_eq!(described[0].partitions.len(), 6);
    let err = bounded("create_partitions", admin.create_partitions(topic, 3, false))
        .await
        .expect_err("shrinking to 3 partitions must fail");
    assert!(err.to_string().contains("INVALID_PARTITIONS"), "{err}");
    let described = bounded("describe_topics", admin.describe_topics(&[topic])).await.expect("describe_topics");
    assert_eq!(described[0].partitions.len(), 6);
}
