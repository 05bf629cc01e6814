//! Running several `GroupConsumer`s on their own tasks and watching what they report: shared by
//! the client's fake-broker tests and, through `#[path]`, the `tern` crate's live tests.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tern_client::{GroupConsumer, Producer, ProducerConfig, ProducerRecord, TopicPartition};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Upper bound for any one wait; only reached when something hangs.
pub const DEADLINE: Duration = Duration::from_secs(120);

pub async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {DEADLINE:?}"),
    }
}

/// Produces `per_partition` records (`"<partition>-<n>"`) to each of `partitions` partitions
/// and waits until every one is acknowledged.
pub async fn produce(addr: &str, topic: &str, partitions: i32, per_partition: usize) {
    let config = ProducerConfig { bootstrap: addr.to_owned(), linger: Duration::from_millis(2), ..Default::default() };
    let producer = bounded("Producer::new", Producer::new(config)).await.expect("producer");
    let mut futures = Vec::new();
    for p in 0..partitions {
        for n in 0..per_partition {
            let record = ProducerRecord::new(topic, Bytes::from(format!("{p}-{n}"))).with_partition(p);
            futures.push(bounded("send", producer.send(record)).await.expect("queued"));
        }
    }
    bounded("flush", producer.flush()).await.expect("flush");
    for f in futures {
        bounded("delivery", f).await.expect("delivered");
    }
    bounded("close", producer.close()).await.expect("close");
}

/// What a running consumer reports after every poll.
pub struct Report {
    pub tag: &'static str,
    pub assignment: Vec<TopicPartition>,
    pub records: Vec<(i32, i64)>,
}

/// A consumer polling on its own task until stopped.
pub struct Running {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<GroupConsumer>,
}

impl Running {
    pub fn start(mut c: GroupConsumer, tag: &'static str, tx: mpsc::UnboundedSender<Report>) -> Running {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = tokio::spawn(async move {
            while !flag.load(Ordering::SeqCst) {
                let records = c.poll().await.unwrap_or_else(|e| panic!("{tag}: poll failed: {e}"));
                let records = records.iter().map(|r| (r.partition, r.offset)).collect();
                let _ = tx.send(Report { tag, assignment: c.assignment(), records });
            }
            c
        });
        Running { stop, handle }
    }

    /// Stops polling and returns the consumer (still in its group).
    pub async fn stop(self) -> GroupConsumer {
        self.stop.store(true, Ordering::SeqCst);
        bounded("consumer task", self.handle).await.expect("consumer task")
    }
}

/// The latest assignment of each running consumer and every record they returned.
pub struct Watch {
    rx: mpsc::UnboundedReceiver<Report>,
    pub assignments: BTreeMap<&'static str, Vec<TopicPartition>>,
    pub records: Vec<(i32, i64)>,
    /// Check on every report that no partition is owned by two members. Only meaningful under
    /// the cooperative protocol: an eager member can give up and regain partitions in one poll.
    exclusive: bool,
    /// Consumers that stopped; their queued reports are ignored.
    gone: Vec<&'static str>,
}

impl Watch {
    pub fn new(rx: mpsc::UnboundedReceiver<Report>, exclusive: bool) -> Self {
        Watch { rx, assignments: BTreeMap::new(), records: Vec::new(), exclusive, gone: Vec::new() }
    }

    /// Takes reports until `done` holds.
    pub async fn until(&mut self, what: &str, mut done: impl FnMut(&Watch) -> bool) {
        bounded(what, async {
            while !done(self) {
                let r = self.rx.recv().await.expect("reports");
                self.records.extend(r.records);
                if self.gone.contains(&r.tag) {
                    continue;
                }
                self.assignments.insert(r.tag, r.assignment);
                if self.exclusive {
                    let mut owners: HashMap<&TopicPartition, &str> = HashMap::new();
                    for (tag, parts) in &self.assignments {
                        for tp in parts {
                            if let Some(other) = owners.insert(tp, tag) {
                                panic!("{tp} owned by {other} and {tag} at once: {:?}", self.assignments);
                            }
                        }
                    }
                }
            }
        })
        .await;
    }

    pub fn forget(&mut self, tag: &'static str) {
        self.gone.push(tag);
        self.assignments.remove(tag);
    }

    pub fn sizes(&self) -> Vec<usize> {
        self.assignments.values().map(Vec::len).collect()
    }

    /// Records seen, counting each (partition, offset) once.
    pub fn distinct(&self) -> usize {
        self.records.iter().collect::<BTreeSet<_>>().len()
    }
}
