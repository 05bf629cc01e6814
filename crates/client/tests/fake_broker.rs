//! Client tests against the in-process fake broker (loopback only, no timing thresholds).

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::FakeBroker;
use kafka_protocol::messages::{ApiKey, MetadataRequest};
use tern_client::connection::Connection;
use tern_client::partitioner::key_partition;
use tern_client::{
    Admin, Compression, Consumer, ConsumerConfig, ConsumerRecord, OffsetSpec, Producer, ProducerConfig, ProducerRecord,
};

fn producer_config(addr: String) -> ProducerConfig {
    ProducerConfig {
        bootstrap: addr,
        linger: Duration::from_millis(1),
        retry_backoff: Duration::from_millis(10),
        ..Default::default()
    }
}

async fn consume_all(addr: String, topic: &str, partitions: i32, want: usize) -> Vec<ConsumerRecord> {
    let mut c =
        Consumer::new(ConsumerConfig { bootstrap: addr, max_partition_fetch_bytes: 4096, ..Default::default() })
            .await
            .unwrap();
    c.assign((0..partitions).map(|p| (topic.to_owned(), p, OffsetSpec::Earliest)).collect());
    let mut out = Vec::new();
    for _ in 0..10_000 {
        if out.len() >= want {
            break;
        }
        out.extend(c.poll().await.unwrap());
    }
    for p in 0..partitions {
        assert!(c.position(topic, p).is_some());
    }
    out
}

#[tokio::test]
async fn connection_negotiates_and_pipelines() {
    let fake = FakeBroker::start(&[("t", 3)]).await;
    let conn = Connection::connect(&fake.addr(), "test", Duration::from_secs(10)).await.unwrap();
    // Produce is capped by the client at 12; the rest at the codec's maximum.
    assert_eq!(conn.version(ApiKey::Produce), Some(12));
    assert_eq!(conn.version(ApiKey::Fetch), Some(18));
    assert_eq!(conn.version(ApiKey::CreateTopics), None);
    let v = conn.version(ApiKey::Metadata).unwrap();
    let pending: Vec<_> =
        (0..200).map(|_| conn.enqueue(&MetadataRequest::default().with_topics(None), v).unwrap()).collect();
    for p in pending {
        let md = p.wait().await.unwrap();
        assert_eq!(md.brokers.len(), 1);
        assert_eq!(md.topics.len(), 1);
        assert_eq!(md.topics[0].partitions.len(), 3);
    }
}

#[tokio::test]
async fn api_versions_falls_back_to_v0() {
    let fake = FakeBroker::start_with(&[("t", 1)], 2).await;
    let conn = Connection::connect(&fake.addr(), "test", Duration::from_secs(10)).await.unwrap();
    assert_eq!(conn.version(ApiKey::ApiVersions), Some(2));
    assert!(conn.version(ApiKey::Metadata).is_some());
}

#[tokio::test]
async fn connect_refused_is_an_error() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    let err = Producer::new(producer_config(addr)).await.unwrap_err();
    assert!(err.is_retriable(), "{err}");
}

#[tokio::test]
async fn produce_then_consume_all_compressions() {
    for (i, compression) in
        [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd]
            .into_iter()
            .enumerate()
    {
        let topic = format!("c{i}");
        let fake = FakeBroker::start(&[(&topic, 4)]).await;
        let producer = Producer::new(ProducerConfig { compression, batch_size: 2048, ..producer_config(fake.addr()) })
            .await
            .unwrap();
        let mut futures = Vec::new();
        for n in 0..500 {
            let record = ProducerRecord::new(topic.clone(), Bytes::from(format!("value-{n}")))
                .with_key(Bytes::from(format!("key-{}", n % 37)))
                .with_header("n", Some(Bytes::from(n.to_string())));
            futures.push(producer.send(record).await.unwrap());
        }
        producer.flush().await.unwrap();
        let mut offsets = HashMap::new();
        for (n, f) in futures.into_iter().enumerate() {
            let md = f.await.unwrap();
            let key = format!("key-{}", n % 37);
            assert_eq!(md.partition, key_partition(key.as_bytes(), 4));
            // Offsets within a partition follow send order.
            let last = offsets.insert(md.partition, md.offset);
            assert!(last.is_none_or(|l| l < md.offset));
        }
        let got = consume_all(fake.addr(), &topic, 4, 500).await;
        assert_eq!(got.len(), 500, "{compression:?}");
        for r in &got {
            let n: usize = std::str::from_utf8(r.headers[0].1.as_ref().unwrap()).unwrap().parse().unwrap();
            assert_eq!(r.value.as_deref(), Some(format!("value-{n}").as_bytes()));
            assert_eq!(r.key.as_deref(), Some(format!("key-{}", n % 37).as_bytes()));
        }
        producer.close().await.unwrap();
    }
}

#[tokio::test]
async fn keyless_records_stick_then_spread() {
    let fake = FakeBroker::start(&[("s", 8)]).await;
    let producer = Producer::new(ProducerConfig { batch_size: 1024, ..producer_config(fake.addr()) }).await.unwrap();
    let mut futures = Vec::new();
    for _ in 0..400 {
        futures.push(producer.send(ProducerRecord::new("s", Bytes::from(vec![7u8; 100]))).await.unwrap());
    }
    let mut parts = Vec::new();
    for f in futures {
        parts.push(f.await.unwrap().partition);
    }
    // Consecutive keyless records share a partition until a batch fills up.
    let switches = parts.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(switches > 0 && switches < 100, "switches = {switches}");
    let total: i64 = (0..8).map(|p| fake.record_count("s", p)).sum();
    assert_eq!(total, 400);
}

#[tokio::test]
async fn retries_not_leader_and_acks_zero() {
    let fake = FakeBroker::start(&[("r", 1)]).await;
    fake.fail_produce.store(2, Ordering::SeqCst);
    let producer = Producer::new(producer_config(fake.addr())).await.unwrap();
    let md = producer.send(ProducerRecord::new("r", "x").with_partition(0)).await.unwrap().await.unwrap();
    assert_eq!(md.offset, 0);
    assert!(fake.produce_requests.load(Ordering::SeqCst) >= 3);

    let p0 = Producer::new(ProducerConfig { acks: 0, enable_idempotence: false, ..producer_config(fake.addr()) })
        .await
        .unwrap();
    let mut futs = Vec::new();
    for _ in 0..50 {
        futs.push(p0.send(ProducerRecord::new("r", "y")).await.unwrap());
    }
    for f in futs {
        assert_eq!(f.await.unwrap().offset, -1);
    }
    p0.close().await.unwrap();
    let got = consume_all(fake.addr(), "r", 1, 51).await;
    assert_eq!(got.len(), 51);
    assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), (0..51).collect::<Vec<_>>());
}

#[tokio::test]
async fn retries_exhausted_reports_kafka_error() {
    let fake = FakeBroker::start(&[("e", 1)]).await;
    fake.fail_produce.store(100, Ordering::SeqCst);
    let producer = Producer::new(ProducerConfig { retries: 2, ..producer_config(fake.addr()) }).await.unwrap();
    let err = producer.send(ProducerRecord::new("e", "x")).await.unwrap().await.unwrap_err();
    assert!(err.to_string().contains("NOT_LEADER_OR_FOLLOWER"), "{err}");
}

#[tokio::test]
async fn unknown_topic_fails_after_timeout() {
    let fake = FakeBroker::start(&[]).await;
    let producer =
        Producer::new(ProducerConfig { max_block: Duration::from_millis(200), ..producer_config(fake.addr()) })
            .await
            .unwrap();
    let err = producer.send(ProducerRecord::new("nope", "x")).await.unwrap().await.unwrap_err();
    assert!(err.to_string().contains("UNKNOWN_TOPIC_OR_PARTITION"), "{err}");
}

#[tokio::test]
async fn consumer_offsets_seek_and_out_of_range() {
    let fake = FakeBroker::start(&[("o", 1)]).await;
    let producer = Producer::new(producer_config(fake.addr())).await.unwrap();
    for n in 0..20 {
        drop(producer.send(ProducerRecord::new("o", Bytes::from(format!("{n}")))).await.unwrap());
    }
    producer.flush().await.unwrap();

    let mut c = Consumer::new(ConsumerConfig { bootstrap: fake.addr(), ..Default::default() }).await.unwrap();
    c.assign(vec![("o".into(), 0, OffsetSpec::Offset(5))]);
    let mut got = Vec::new();
    while got.len() < 15 {
        got.extend(c.poll().await.unwrap());
    }
    assert_eq!(got[0].offset, 5);
    assert_eq!(got.last().unwrap().offset, 19);
    assert_eq!(c.position("o", 0), Some(20));

    c.seek("o", 0, OffsetSpec::Latest).unwrap();
    assert!(c.poll().await.unwrap().is_empty());
    assert_eq!(c.position("o", 0), Some(20));

    // Far past the end: reset to earliest.
    c.seek("o", 0, OffsetSpec::Offset(1_000)).unwrap();
    let mut got = Vec::new();
    while got.len() < 20 {
        got.extend(c.poll().await.unwrap());
    }
    assert_eq!(got[0].offset, 0);

    let admin = Admin::new(&fake.addr()).await.unwrap();
    assert_eq!(admin.list_offsets("o", 0, OffsetSpec::Latest).await.unwrap().0, 20);
    assert_eq!(admin.list_offsets("o", 0, OffsetSpec::Earliest).await.unwrap().0, 0);
    let topics = admin.describe_topics(&["o"]).await.unwrap();
    assert_eq!(topics[0].partitions.len(), 1);
    assert_eq!(topics[0].partitions[0].leader, 0);
    assert!(!topics[0].id.is_nil());
    let err = admin.describe_topics(&["missing"]).await.unwrap_err();
    assert!(err.to_string().contains("UNKNOWN_TOPIC_OR_PARTITION"), "{err}");
    assert_eq!(admin.list_topics().await.unwrap().len(), 1);
}

/// Regression: with `max_in_flight > 1` and no retries, requests for one partition must reach
/// the broker in the order their batches were drained (they used to race to the socket).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipelined_requests_keep_partition_order() {
    const N: usize = 5_000;
    for compression in [Compression::None, Compression::Gzip] {
        let fake = FakeBroker::start(&[("ord", 1)]).await;
        let producer = Producer::new(ProducerConfig {
            linger: Duration::ZERO,
            batch_size: 256,
            max_in_flight: 5,
            compression,
            ..producer_config(fake.addr())
        })
        .await
        .unwrap();
        let mut futures = Vec::with_capacity(N);
        for n in 0..N {
            // Uneven sizes make some batches slower to encode than their successors.
            let value = format!("{n}:{}", "x".repeat(n % 97));
            futures
                .push(producer.send(ProducerRecord::new("ord", Bytes::from(value)).with_partition(0)).await.unwrap());
            if n % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let flushed = tokio::time::timeout(Duration::from_secs(60), producer.flush()).await;
        flushed.expect("flush timed out").unwrap();
        for (n, f) in futures.into_iter().enumerate() {
            assert_eq!(f.await.unwrap().offset, n as i64, "{compression:?}: delivery offset of record {n}");
        }
        assert!(fake.produce_requests.load(Ordering::SeqCst) > 10);
        let got = consume_all(fake.addr(), "ord", 1, N).await;
        assert_eq!(got.len(), N);
        for (n, r) in got.iter().enumerate() {
            let v = std::str::from_utf8(r.value.as_deref().unwrap()).unwrap();
            let sent: usize = v.split(':').next().unwrap().parse().unwrap();
            assert_eq!((r.offset, sent), (n as i64, n), "{compression:?}: broker order differs from send order");
        }
        producer.close().await.unwrap();
    }
}
