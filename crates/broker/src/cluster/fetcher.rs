//! Replica fetchers (Kafka's `ReplicaFetcherThread`): one task per leader broker, on its own
//! connection to the leader's Kafka listener (so replication never queues behind a client's
//! requests on a shared connection), fetching every partition this broker follows from it.
//!
//! A fetch names, per partition, the local log end offset, the epoch of the last local record
//! (Fetch v12's `last_fetched_epoch`) and the leader epoch the follower knows. The leader
//! answers records to append, or a diverging epoch to truncate to (KIP-595), or an error. The
//! appended batches keep the leader's offsets and epochs (`Log::append_replicated`); the
//! leader's high watermark is adopted, capped by the local log end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use tern_client::connection::Connection;
use tokio::sync::Notify;

use crate::handlers::metadata::topic_name;
use crate::log_limit::LogLimiter;
use crate::{now_ms, Broker};

/// Fetch failures repeat every `replica.fetch.backoff.ms` while their cause lasts (a dead
/// leader, a full disk): logged rate-limited, with how many were suppressed.
static PROBLEMS: LogLimiter = LogLimiter::new();

/// Fetch v12: topics by name, `replica_id` in the request, diverging epochs in the answer.
const FETCH_VERSION: i16 = 12;

/// `replica.fetch.*` settings, with Kafka's names.
#[derive(Debug, Clone, Copy)]
pub struct FetcherConfig {
    pub max_wait_ms: i32,
    pub min_bytes: i32,
    pub max_bytes: i32,
    pub response_max_bytes: i32,
    pub backoff_ms: u64,
}

/// The partitions one leader's fetcher fetches, with the leader epoch each was given.
#[derive(Default)]
struct Assigned {
    partitions: HashMap<(String, i32), i32>,
}

struct LeaderFetcher {
    assigned: Mutex<Assigned>,
    changed: Notify,
}

pub(crate) struct Fetchers {
    node_id: i32,
    config: FetcherConfig,
    /// By leader id, with the address the task connects to.
    by_leader: Mutex<HashMap<(i32, String), Arc<LeaderFetcher>>>,
}

impl Fetchers {
    pub(crate) fn new(node_id: i32, config: FetcherConfig) -> Fetchers {
        Fetchers { node_id, config, by_leader: Mutex::new(HashMap::new()) }
    }

    /// Fetches `topic`-`index` from `leader_id` from now on (and from no other leader).
    pub(crate) fn add(
        &self,
        broker: &Arc<Broker>,
        leader_id: i32,
        address: String,
        topic: &str,
        index: i32,
        leader_epoch: i32,
    ) {
        self.remove(topic, index);
        let mut by_leader = self.by_leader.lock().unwrap_or_else(|e| e.into_inner());
        let fetcher = by_leader.entry((leader_id, address.clone())).or_insert_with(|| {
            let fetcher = Arc::new(LeaderFetcher { assigned: Mutex::default(), changed: Notify::new() });
            tokio::spawn(run(broker.clone(), self.node_id, self.config, leader_id, address, fetcher.clone()));
            fetcher
        });
        fetcher
            .assigned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .partitions
            .insert((topic.to_string(), index), leader_epoch);
        fetcher.changed.notify_one();
        tracing::info!(topic, partition = index, leader_id, leader_epoch, "following the leader");
    }

    pub(crate) fn remove(&self, topic: &str, index: i32) {
        let by_leader = self.by_leader.lock().unwrap_or_else(|e| e.into_inner());
        for fetcher in by_leader.values() {
            let removed = fetcher
                .assigned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .partitions
                .remove(&(topic.to_string(), index));
            if removed.is_some() {
                fetcher.changed.notify_one();
            }
        }
    }
}

async fn run(
    broker: Arc<Broker>,
    node_id: i32,
    config: FetcherConfig,
    leader_id: i32,
    address: String,
    fetcher: Arc<LeaderFetcher>,
) {
    let client_id = format!("tern-replica-fetcher-{node_id}-from-{leader_id}");
    let mut connection: Option<Connection> = None;
    let backoff = Duration::from_millis(config.backoff_ms.max(10));
    loop {
        let assigned: Vec<((String, i32), i32)> = {
            let a = fetcher.assigned.lock().unwrap_or_else(|e| e.into_inner());
            a.partitions.iter().map(|(k, v)| (k.clone(), *v)).collect()
        };
        if assigned.is_empty() {
            fetcher.changed.notified().await;
            continue;
        }
        let conn = match &connection {
            Some(c) if c.is_alive() => c.clone(),
            _ => match Connection::connect(&address, &client_id, Duration::from_secs(30)).await {
                Ok(c) => {
                    connection = Some(c.clone());
                    c
                }
                Err(e) => {
                    if let Some(suppressed) = PROBLEMS.allow() {
                        tracing::warn!(leader_id, address, error = %e, suppressed, "replica fetcher cannot connect to the leader");
                    }
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            },
        };
        let request = build_request(&broker, node_id, &config, &assigned);
        let sent = conn.enqueue(&request, FETCH_VERSION);
        let response = match sent {
            Ok(pending) => {
                pending
                    .with_timeout(Duration::from_millis(config.max_wait_ms.max(0) as u64) + Duration::from_secs(30))
                    .wait()
                    .await
            }
            Err(e) => Err(e),
        };
        let response: FetchResponse = match response {
            Ok(r) => r,
            Err(e) => {
                if let Some(suppressed) = PROBLEMS.allow() {
                    tracing::warn!(leader_id, address, error = %e, suppressed, "replica fetch failed");
                }
                connection = None;
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        let b = broker.clone();
        let errors = tokio::task::spawn_blocking(move || apply_response(&b, response)).await.unwrap_or(true);
        if errors {
            tokio::time::sleep(backoff).await;
        }
    }
}

fn build_request(
    broker: &Broker,
    node_id: i32,
    config: &FetcherConfig,
    assigned: &[((String, i32), i32)],
) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for ((topic, index), leader_epoch) in assigned {
        let Some(partition) = broker.topics.get(topic).and_then(|t| t.partition(*index).cloned()) else { continue };
        if partition.offline_reason().is_some() {
            continue;
        }
        let (last_epoch, log_end_offset) = partition.fetch_position();
        let fetch = FetchPartition::default()
            .with_partition(*index)
            .with_current_leader_epoch(*leader_epoch)
            .with_fetch_offset(log_end_offset)
            .with_last_fetched_epoch(last_epoch.unwrap_or(-1))
            .with_log_start_offset(partition.log.log_start_offset())
            .with_partition_max_bytes(config.max_bytes);
        match topics.iter_mut().find(|t| t.topic.0.as_str() == topic) {
            Some(t) => t.partitions.push(fetch),
            None => topics.push(FetchTopic::default().with_topic(topic_name(topic)).with_partitions(vec![fetch])),
        }
    }
    FetchRequest::default()
        .with_replica_id(BrokerId(node_id))
        .with_max_wait_ms(config.max_wait_ms)
        .with_min_bytes(config.min_bytes)
        .with_max_bytes(config.response_max_bytes)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics)
}

/// Appends what the leader sent and truncates where it says the logs diverge; `true` if any
/// partition answered an error (the fetcher then backs off).
fn apply_response(broker: &Broker, response: FetchResponse) -> bool {
    let mut any_error = response.error_code != 0;
    for t in response.responses {
        let name = t.topic.0.as_str();
        let Some(topic) = broker.topics.get(name) else { continue };
        for p in t.partitions {
            let Some(partition) = topic.partition(p.partition_index) else { continue };
            if p.error_code != 0 {
                any_error = true;
                tracing::debug!(
                    topic = name,
                    partition = p.partition_index,
                    error = crate::errors::error_name(p.error_code),
                    "replica fetch error"
                );
                continue;
            }
            if p.diverging_epoch.epoch >= 0 {
                // KIP-595: truncate to where this log's copy of that epoch ends, at most the leader's.
                let local_end = partition
                    .last_offset_for_leader_epoch(None, p.diverging_epoch.epoch, false)
                    .map_or(p.diverging_epoch.end_offset, |e| e.end_offset);
                let offset = p.diverging_epoch.end_offset.min(local_end.max(0));
                tracing::warn!(
                    topic = name,
                    partition = p.partition_index,
                    offset,
                    epoch = p.diverging_epoch.epoch,
                    log_end_offset = partition.log.log_end_offset(),
                    "follower log diverged from the leader: truncating"
                );
                match partition.log.truncate_to(offset) {
                    Ok(()) => partition.truncated(partition.log.log_end_offset(), false),
                    Err(e) => {
                        if let Some(suppressed) = PROBLEMS.allow() {
                            tracing::error!(topic = name, partition = p.partition_index, error = %e, suppressed, "truncation failed");
                        }
                        any_error = true;
                    }
                }
                continue;
            }
            let before = partition.log.log_end_offset();
            let records = p.records.unwrap_or_default();
            if !records.is_empty() {
                if let Err(e) = partition.log.append_replicated(&records, now_ms()) {
                    if let Some(suppressed) = PROBLEMS.allow() {
                        tracing::error!(topic = name, partition = p.partition_index, error = %e, suppressed, "cannot append replicated records");
                    }
                    any_error = true;
                    continue;
                }
            }
            let log_end_offset = partition.log.log_end_offset();
            let batches = partition.log.epoch_entries().into_iter().filter(|&(_, start)| start >= before).collect();
            partition.fetched_from_leader(&tern_partition::FetchedFromLeader {
                batches,
                log_end_offset,
                leader_high_watermark: p.high_watermark,
                leader_log_start_offset: p.log_start_offset,
            });
        }
    }
    any_error
}
