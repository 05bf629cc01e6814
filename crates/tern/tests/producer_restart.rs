//! The idempotent producer against the real broker binary while the broker is killed (`kill -9`)
//! and stays down for a while: every record is acknowledged once the broker is back, and the
//! log holds each exactly once, in send order. Every wait is bounded; no timing assertions.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::Broker;
use tern_client::{Consumer, ConsumerConfig, OffsetSpec, Producer, ProducerConfig, ProducerRecord};

/// Upper bound for any one wait; only reached when something hangs.
const DEADLINE: Duration = Duration::from_secs(120);
const RECORDS: usize = 30_000;

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {DEADLINE:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_rides_out_a_broker_crash_without_duplicates() {
    let mut broker = Broker::start();
    broker.run(&["topic", "create", "crash-t", "--partitions", "1"]).ok();
    let producer = Arc::new(
        bounded(
            "Producer::new",
            Producer::new(ProducerConfig {
                bootstrap: broker.addr.clone(),
                batch_size: 4096,
                retry_backoff: Duration::from_millis(50),
                ..Default::default()
            }),
        )
        .await
        .expect("producer"),
    );
    // Half the records go to a running broker; once it acknowledged some, it is killed (with
    // batches in flight or queued) and the other half is sent while it is down.
    let (half_queued, mut half_queued_rx) = tokio::sync::mpsc::channel::<()>(1);
    let (killed, killed_rx) = tokio::sync::oneshot::channel::<()>();
    let (queued, mut queued_rx) = tokio::sync::mpsc::unbounded_channel();
    let acked = Arc::new(AtomicUsize::new(0));
    let sender = tokio::spawn({
        let producer = producer.clone();
        async move {
            let mut killed_rx = Some(killed_rx);
            for n in 0..RECORDS {
                if n == RECORDS / 2 {
                    half_queued.send(()).await.expect("test waits");
                    killed_rx.take().expect("once").await.expect("broker killed");
                }
                let record = ProducerRecord::new("crash-t", Bytes::from(n.to_string())).with_partition(0);
                queued.send(producer.send(record).await.expect("queued")).expect("collector");
            }
        }
    });
    let collector = tokio::spawn({
        let acked = acked.clone();
        async move {
            let mut offsets = Vec::with_capacity(RECORDS);
            while let Some(f) = queued_rx.recv().await {
                let n = offsets.len();
                let md = f.await.unwrap_or_else(|e| panic!("record {n} failed: {e}"));
                offsets.push(md.offset);
                acked.fetch_add(1, Ordering::SeqCst);
            }
            offsets
        }
    });
    bounded("the first half queued", half_queued_rx.recv()).await.expect("sender task");
    bounded("a first acknowledgement", async {
        while acked.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    broker.kill9();
    killed.send(()).expect("sender task");
    // Down for longer than the old client's ten retries lasted.
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker.restart();

    bounded("every record queued", sender).await.expect("sender task");
    let offsets = bounded("every delivery", collector).await.expect("collector task");
    assert_eq!(offsets, (0..RECORDS as i64).collect::<Vec<_>>(), "acknowledged in send order, no gaps");
    assert!(producer.producer_id().is_some(), "idempotent by default");

    let mut consumer = bounded(
        "Consumer::new",
        Consumer::new(ConsumerConfig {
            bootstrap: broker.addr.clone(),
            fetch_max_wait: Duration::from_millis(100),
            ..Default::default()
        }),
    )
    .await
    .expect("consumer");
    consumer.assign(vec![("crash-t".into(), 0, OffsetSpec::Earliest)]);
    let mut values = Vec::with_capacity(RECORDS);
    bounded("consume", async {
        while consumer.position("crash-t", 0).is_none_or(|p| p < RECORDS as i64) {
            values.extend(consumer.poll().await.expect("poll").into_iter().map(|r| r.value.expect("value")));
        }
    })
    .await;
    let want: Vec<Bytes> = (0..RECORDS).map(|n| Bytes::from(n.to_string())).collect();
    assert_eq!(values.len(), RECORDS, "each record once");
    assert!(values == want, "the log holds the records in send order");
    let end = bounded("end offset", consumer.poll()).await.expect("poll");
    assert!(end.is_empty(), "nothing after the last record: {} more", end.len());
}
