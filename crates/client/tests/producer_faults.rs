//! The producer against a fake broker that refuses, loses or stalls: every batch gets exactly one
//! outcome, nothing is written twice or out of order, the buffer is bounded. Loopback only;
//! every wait is bounded (a hang fails the test), no timing thresholds.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::FakeBroker;
use tern_client::{DeliveryFuture, Error, Producer, ProducerConfig, ProducerRecord};

/// Upper bound for any one wait; only reached when something hangs.
const DEADLINE: Duration = Duration::from_secs(30);

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {DEADLINE:?}"),
    }
}

fn config(addr: String) -> ProducerConfig {
    ProducerConfig {
        bootstrap: addr,
        linger: Duration::from_millis(1),
        retry_backoff: Duration::from_millis(10),
        ..Default::default()
    }
}

/// Queues `values` to partition 0 of `topic`, then flushes.
async fn send_all(producer: &Producer, topic: &str, values: impl Iterator<Item = String>) -> Vec<DeliveryFuture> {
    let mut futures = Vec::new();
    for v in values {
        let record = ProducerRecord::new(topic, Bytes::from(v)).with_partition(0);
        futures.push(bounded("send", producer.send(record)).await.expect("queued"));
    }
    bounded("flush", producer.flush()).await.expect("flush");
    futures
}

/// Every future resolved, at offsets `first..` in send order.
async fn assert_delivered_in_order(futures: Vec<DeliveryFuture>, first: i64) {
    for (n, f) in futures.into_iter().enumerate() {
        let md = bounded("delivery", f).await.unwrap_or_else(|e| panic!("record {n} failed: {e}"));
        assert_eq!(md.offset, first + n as i64, "offset of record {n}");
    }
}

/// A retried batch whose topic disappears used to wait forever for a leader: its future and
/// `flush` hung. It now fails once `delivery_timeout` has passed, naming the last error.
#[tokio::test]
async fn retried_batch_of_a_deleted_topic_fails_after_the_delivery_timeout() {
    let fake = FakeBroker::start(&[("gone", 1)]).await;
    let producer = Producer::new(ProducerConfig {
        request_timeout: Duration::from_millis(500),
        delivery_timeout: Duration::from_millis(1000),
        ..config(fake.addr())
    })
    .await
    .unwrap();
    let first = bounded("send", producer.send(ProducerRecord::new("gone", "a"))).await.unwrap();
    assert_eq!(bounded("delivery", first).await.unwrap().offset, 0);

    fake.delete_topic("gone");
    let second = bounded("send", producer.send(ProducerRecord::new("gone", "b"))).await.unwrap();
    bounded("flush", producer.flush()).await.unwrap();
    let err = bounded("delivery", second).await.unwrap_err();
    assert!(matches!(err, Error::DeliveryTimeout(_)), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("gone-0") && msg.contains("UNKNOWN_TOPIC_OR_PARTITION"), "{msg}");
    assert_eq!(producer.buffered(), (0, 0), "a failed batch gives its room back");
    bounded("close", producer.close()).await.unwrap();
}

/// Responses lost after the broker wrote the batch: the retries carry the same producer id and
/// sequence, so the broker answers with the original offsets instead of writing them again.
#[tokio::test]
async fn lost_responses_are_retried_without_duplicates() {
    const N: usize = 300;
    let fake = FakeBroker::start(&[("lost", 1)]).await;
    fake.lose_response_of.lock().unwrap().extend([0, 2, 5]);
    let producer = Producer::new(ProducerConfig { batch_size: 512, ..config(fake.addr()) }).await.unwrap();
    let futures = send_all(&producer, "lost", (0..N).map(|n| format!("v{n}"))).await;
    assert_delivered_in_order(futures, 0).await;
    let values = fake.values("lost", 0);
    assert_eq!(values.len(), N, "every record written exactly once");
    assert_eq!(values, (0..N).map(|n| format!("v{n}")).collect::<Vec<_>>());
    assert!(fake.lose_response_of.lock().unwrap().is_empty(), "all three responses were lost");
    bounded("close", producer.close()).await.unwrap();
}

/// Five requests in flight and the second and fifth refused with a retriable error: the
/// batches behind a refused one are refused as out of sequence and everything is retried in
/// order, so the log holds the records in send order, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_keep_partition_order_with_requests_in_flight() {
    const N: usize = 2_000;
    let fake = FakeBroker::start(&[("ord", 1)]).await;
    let producer = Producer::new(ProducerConfig {
        linger: Duration::ZERO,
        batch_size: 256,
        max_in_flight: 5,
        ..config(fake.addr())
    })
    .await
    .unwrap();
    // Warm up (metadata, producer id), then hold Produce requests until the pipeline is full.
    let warm = bounded("send", producer.send(ProducerRecord::new("ord", "warm").with_partition(0))).await.unwrap();
    bounded("delivery", warm).await.unwrap();
    let base = fake.partition_produces.load(Ordering::SeqCst);
    fake.fail_nth_partition.lock().unwrap().extend([base + 1, base + 4]);
    fake.stall.send_replace(true);
    let mut futures = Vec::new();
    for n in 0..N {
        let record = ProducerRecord::new("ord", Bytes::from(format!("{n}"))).with_partition(0);
        futures.push(bounded("send", producer.send(record)).await.unwrap());
    }
    fake.stall.send_replace(false);
    bounded("flush", producer.flush()).await.unwrap();
    assert_delivered_in_order(futures, 1).await;
    let values = fake.values("ord", 0);
    let want: Vec<String> = std::iter::once("warm".to_owned()).chain((0..N).map(|n| n.to_string())).collect();
    assert_eq!(values.len(), want.len(), "no record lost or written twice");
    assert_eq!(values, want, "the log holds the records in send order");
    assert!(fake.fail_nth_partition.lock().unwrap().is_empty(), "both refusals happened");
    bounded("close", producer.close()).await.unwrap();
}

/// A broker that lost the producer's sequence numbers refuses its next batch as out of order
/// (or as from an unknown producer); the producer gets a new producer id, renumbers from 0 and
/// goes on, in order.
#[tokio::test]
async fn lost_producer_state_resets_the_producer_id() {
    let fake = FakeBroker::start(&[("reset", 1)]).await;
    let producer = Producer::new(ProducerConfig { batch_size: 256, ..config(fake.addr()) }).await.unwrap();
    let futures = send_all(&producer, "reset", (0..100).map(|n| format!("a{n}"))).await;
    assert_delivered_in_order(futures, 0).await;
    let first_id = producer.producer_id().expect("idempotent by default").0;

    fake.forget_producers();
    let futures = send_all(&producer, "reset", (0..100).map(|n| format!("b{n}"))).await;
    assert_delivered_in_order(futures, 100).await;
    let second_id = producer.producer_id().expect("producer id").0;
    assert_ne!(first_id, second_id, "a new producer id after the reset");
    assert_eq!(fake.init_producer_id_calls.load(Ordering::SeqCst), 2);

    // UNKNOWN_PRODUCER_ID (older brokers' answer when they expired the producer): the same.
    fake.fail_code.store(59, Ordering::SeqCst);
    fake.fail_produce.store(1, Ordering::SeqCst);
    let futures = send_all(&producer, "reset", (0..100).map(|n| format!("c{n}"))).await;
    assert_delivered_in_order(futures, 200).await;
    let third_id = producer.producer_id().expect("producer id").0;
    assert!(third_id != second_id && third_id != first_id, "a new producer id after UNKNOWN_PRODUCER_ID");
    assert_eq!(fake.init_producer_id_calls.load(Ordering::SeqCst), 3);

    let ids = fake.producer_ids("reset", 0);
    assert!(ids.iter().all(|&id| [first_id, second_id, third_id].contains(&id)), "{ids:?}");
    let values = fake.values("reset", 0);
    let want: Vec<String> = ["a", "b", "c"].iter().flat_map(|tag| (0..100).map(move |n| format!("{tag}{n}"))).collect();
    assert_eq!(values, want);
    bounded("close", producer.close()).await.unwrap();
}

/// InitProducerId refused for good (CLUSTER_AUTHORIZATION_FAILED): every record fails with
/// that error, flush returns, and later sends fail at once.
#[tokio::test]
async fn fatal_producer_id_error_fails_every_record() {
    let fake = FakeBroker::start(&[("fatal", 2)]).await;
    fake.init_producer_id_error.store(31, Ordering::SeqCst);
    let producer = Producer::new(config(fake.addr())).await.unwrap();
    let mut futures = Vec::new();
    for n in 0..20 {
        futures.push(bounded("send", producer.send(ProducerRecord::new("fatal", format!("{n}")))).await.unwrap());
    }
    bounded("flush", producer.flush()).await.unwrap();
    for f in futures {
        let err = bounded("delivery", f).await.unwrap_err();
        assert!(err.to_string().contains("CLUSTER_AUTHORIZATION_FAILED"), "{err}");
    }
    let err = bounded("send", producer.send(ProducerRecord::new("fatal", "late"))).await.unwrap_err();
    assert!(err.to_string().contains("CLUSTER_AUTHORIZATION_FAILED"), "{err}");
    assert_eq!(fake.record_count("fatal", 0) + fake.record_count("fatal", 1), 0);
}

/// Back-pressure: with the broker stalled, `send` takes records until `buffer_max_records` (or
/// `buffer_memory`) is reached, then waits; it fails with BufferFull after `max_block`, and
/// succeeds once acknowledgements free room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_blocks_send_then_fails_or_resumes() {
    let fake = FakeBroker::start(&[("bp", 1)]).await;
    let warmup = Producer::new(config(fake.addr())).await.unwrap();
    bounded("warm-up", async { warmup.send(ProducerRecord::new("bp", "w")).await.unwrap().await.unwrap() }).await;
    fake.stall.send_replace(true);

    // By records.
    let short = Producer::new(ProducerConfig {
        buffer_max_records: 10,
        max_block: Duration::from_millis(200),
        ..config(fake.addr())
    })
    .await
    .unwrap();
    let mut held = Vec::new();
    for n in 0..10 {
        held.push(short.try_send(ProducerRecord::new("bp", format!("r{n}"))).expect("room for ten records"));
    }
    assert_eq!(short.buffered().1, 10);
    let err = short.try_send(ProducerRecord::new("bp", "r10")).unwrap_err();
    assert!(matches!(err, Error::BufferFull(_)), "{err}");
    let err = bounded("send", short.send(ProducerRecord::new("bp", "r10"))).await.unwrap_err();
    assert!(matches!(err, Error::BufferFull(_)), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("max.block.ms=200") && msg.contains("queue.buffering.max.messages=10"), "{msg}");

    // By bytes: records of ~121 bytes against 1000 bytes of buffer.
    let small = Arc::new(
        Producer::new(ProducerConfig { buffer_memory: 1000, linger: Duration::ZERO, ..config(fake.addr()) })
            .await
            .unwrap(),
    );
    let value = || Bytes::from(vec![b'x'; 100]);
    let mut accepted = 0;
    while let Ok(f) = small.try_send(ProducerRecord::new("bp", value())) {
        held.push(f);
        accepted += 1;
    }
    assert!(accepted > 0 && small.buffered().0 <= 1000, "{accepted} records, {:?}", small.buffered());
    let blocked = tokio::spawn({
        let small = small.clone();
        async move { small.send(ProducerRecord::new("bp", value())).await }
    });
    // Nothing can be acknowledged while the broker is stalled, so the send must still wait.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!blocked.is_finished(), "send waits for room");

    fake.stall.send_replace(false);
    let late = bounded("blocked send", blocked).await.unwrap().expect("room once records are acknowledged");
    bounded("late delivery", late).await.unwrap();
    for f in held {
        bounded("delivery", f).await.unwrap();
    }
    bounded("flush", small.flush()).await.unwrap();
    assert_eq!(small.buffered(), (0, 0));
    assert_eq!(short.buffered(), (0, 0));
}

/// A record larger than `max_request_size` is refused by `send`, as Kafka's RecordTooLarge.
#[tokio::test]
async fn oversized_record_is_refused_at_send() {
    let fake = FakeBroker::start(&[("big", 1)]).await;
    let producer = Producer::new(ProducerConfig { max_request_size: 1000, ..config(fake.addr()) }).await.unwrap();
    let err = producer.try_send(ProducerRecord::new("big", vec![0u8; 2000])).unwrap_err();
    assert!(err.to_string().contains("MESSAGE_TOO_LARGE") && err.to_string().contains("max.request.size"), "{err}");
}
