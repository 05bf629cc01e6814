//! Group-coordinator benchmarks, speaking the group protocol directly (no consumer logic in the
//! way): `tern bench rebalance` times rebalances of an N-member group over many partitions;
//! `tern bench commits` measures standalone OffsetCommit throughput.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    GroupId, HeartbeatRequest, JoinGroupRequest, OffsetCommitRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tern_client::connection::Connection;
use tern_client::group::metadata::{encode_assignment, encode_subscription};
use tern_client::group::{PartitionAssignor, RangeAssignor, Subscription};
use tern_client::Admin;

use super::{Latencies, Summary};

/// Kafka's MEMBER_ID_REQUIRED: a new member rejoins with the id it was given.
const MEMBER_ID_REQUIRED: i16 = 79;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(clap::Args, Debug)]
pub struct RebalanceArgs {
    #[arg(short = 'b', long = "bootstrap-server", default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    #[arg(long, default_value = "tern-bench-rebalance")]
    pub group: String,
    /// Group members (one connection each).
    #[arg(long, default_value_t = 10)]
    pub members: usize,
    /// Topics subscribed to (created if missing, named <group>-<i>).
    #[arg(long, default_value_t = 10)]
    pub topics: usize,
    /// Partitions per topic.
    #[arg(long, default_value_t = 100)]
    pub partitions: i32,
    /// Rebalances of the formed group to time (after the one that forms it).
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
}

#[derive(clap::Args, Debug)]
pub struct CommitsArgs {
    #[arg(short = 'b', long = "bootstrap-server", default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    #[arg(long, default_value = "tern-bench-commits")]
    pub group: String,
    /// Topic whose partitions are committed (created if missing).
    #[arg(long, default_value = "tern-bench-commits")]
    pub topic: String,
    #[arg(long, default_value_t = 100)]
    pub partitions: i32,
    /// Connections committing in parallel.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Commit requests in flight per connection (pipelined).
    #[arg(long, default_value_t = 16)]
    pub inflight: usize,
    /// How long to commit.
    #[arg(long, default_value_t = 10.0)]
    pub duration_secs: f64,
}

async fn connect(bootstrap: &str, name: &str) -> Result<Connection> {
    let addr = bootstrap.split(',').next().unwrap_or(bootstrap).trim();
    Connection::connect(addr, name, REQUEST_TIMEOUT).await.with_context(|| format!("connecting to {addr}"))
}

async fn ensure_topic(admin: &Admin, topic: &str, partitions: i32) -> Result<()> {
    if admin.describe_topics(&[topic]).await.map(|t| t.is_empty()).unwrap_or(true) {
        admin.create_topic(topic, partitions, 1, &Default::default(), false).await.map(|_| ()).or_else(|e| {
            if e.to_string().contains("already exists") {
                Ok(())
            } else {
                Err(e)
            }
        })?;
    }
    Ok(())
}

fn subscription(topics: &[String]) -> Result<Bytes> {
    Ok(encode_subscription(&Subscription { topics: topics.to_vec(), ..Default::default() })?)
}

/// The client's range assignor over the members (all subscribed to every topic).
fn range_assignments(members: &[String], topics: &[String], partitions: i32) -> Result<Vec<(String, Bytes)>> {
    let per_topic = topics.iter().map(|t| (t.clone(), partitions)).collect();
    let subscriptions =
        members.iter().map(|m| (m.clone(), Subscription { topics: topics.to_vec(), ..Default::default() })).collect();
    RangeAssignor
        .assign(&per_topic, &subscriptions)
        .into_iter()
        .map(|(member, parts)| Ok((member, encode_assignment(&parts, None)?)))
        .collect()
}

fn join_request(group: &str, member_id: &str, metadata: &Bytes) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_session_timeout_ms(45_000)
        .with_rebalance_timeout_ms(60_000)
        .with_member_id(StrBytes::from_string(member_id.to_string()))
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(metadata.clone())])
}

/// Errors after which a member simply joins again (the group moved on while it was joining).
fn must_rejoin(error_code: i16) -> bool {
    matches!(error_code, 22 | 25 | 27) // ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, REBALANCE_IN_PROGRESS
}

/// What a member reports after each successful SyncGroup.
struct Synced {
    member: usize,
    generation: i32,
    /// When this member sent the JoinGroup that led to this generation.
    joined_at: Instant,
    synced_at: Instant,
}

struct MemberSetup {
    index: usize,
    conn: Connection,
    group: String,
    metadata: Bytes,
    topics: Arc<Vec<String>>,
    partitions: i32,
}

/// One member behaving like a consumer: join (handling MEMBER_ID_REQUIRED), sync (the leader
/// assigns with range), heartbeat while stable, rejoin when told to or when the group rebalances.
async fn member_loop(
    m: MemberSetup,
    mut rejoin: tokio::sync::watch::Receiver<u64>,
    synced: tokio::sync::mpsc::UnboundedSender<Synced>,
) -> Result<()> {
    let mut member_id = String::new();
    loop {
        // The rejoin round this join answers; a later round makes the member join again.
        let round = *rejoin.borrow_and_update();
        let joined_at = Instant::now();
        let join = m.conn.send(&join_request(&m.group, &member_id, &m.metadata)).await?;
        if join.error_code == MEMBER_ID_REQUIRED {
            member_id = join.member_id.as_str().to_string();
            continue;
        }
        if join.error_code == 25 {
            member_id.clear();
            continue;
        }
        if must_rejoin(join.error_code) {
            continue;
        }
        if join.error_code != 0 {
            bail!("JoinGroup failed with error {}", join.error_code);
        }
        member_id = join.member_id.as_str().to_string();
        let mut req = SyncGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(m.group.clone())))
            .with_generation_id(join.generation_id)
            .with_member_id(join.member_id.clone());
        if join.leader == join.member_id {
            let members: Vec<String> = join.members.iter().map(|x| x.member_id.as_str().to_string()).collect();
            req.assignments = range_assignments(&members, &m.topics, m.partitions)?
                .into_iter()
                .map(|(id, a)| {
                    SyncGroupRequestAssignment::default().with_member_id(StrBytes::from_string(id)).with_assignment(a)
                })
                .collect();
        }
        let sync = m.conn.send(&req).await?;
        if must_rejoin(sync.error_code) {
            continue;
        }
        if sync.error_code != 0 {
            bail!("SyncGroup failed with error {}", sync.error_code);
        }
        let report = Synced { member: m.index, generation: join.generation_id, joined_at, synced_at: Instant::now() };
        if synced.send(report).is_err() {
            return Ok(());
        }
        // Stable: heartbeat until the group rebalances or the benchmark asks for a rejoin.
        loop {
            if *rejoin.borrow_and_update() != round {
                break;
            }
            tokio::select! {
                changed = rejoin.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    break;
                }
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    let hb = HeartbeatRequest::default()
                        .with_group_id(GroupId(StrBytes::from_string(m.group.clone())))
                        .with_generation_id(join.generation_id)
                        .with_member_id(join.member_id.clone());
                    if m.conn.send(&hb).await?.error_code != 0 {
                        break;
                    }
                }
            }
        }
    }
}

/// Waits until every member has synced the same generation; returns it with the time from the
/// last JoinGroup sent for it to the last SyncGroup answer.
async fn wait_stable(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Synced>,
    members: usize,
    newer_than: i32,
) -> Result<(i32, Duration)> {
    let mut latest: Vec<Option<Synced>> = (0..members).map(|_| None).collect();
    loop {
        let s = tokio::time::timeout(REQUEST_TIMEOUT, rx.recv())
            .await
            .context("no member synced within the request timeout")?
            .context("all members stopped")?;
        let i = s.member;
        latest[i] = Some(s);
        let Some(generation) = latest[0].as_ref().map(|s| s.generation) else { continue };
        if generation > newer_than && latest.iter().all(|s| s.as_ref().is_some_and(|s| s.generation == generation)) {
            let done: Vec<&Synced> = latest.iter().flatten().collect();
            let last_join = done.iter().map(|s| s.joined_at).max().expect("members");
            let last_sync = done.iter().map(|s| s.synced_at).max().expect("members");
            return Ok((generation, last_sync.saturating_duration_since(last_join)));
        }
    }
}

pub async fn rebalance_bench(args: RebalanceArgs) -> Result<Summary> {
    let admin = Admin::new(&args.bootstrap).await?;
    let topics: Vec<String> = (0..args.topics).map(|i| format!("{}-{i}", args.group)).collect();
    for t in &topics {
        ensure_topic(&admin, t, args.partitions).await?;
    }
    let metadata = subscription(&topics)?;
    let topics = Arc::new(topics);
    let (rejoin_tx, rejoin_rx) = tokio::sync::watch::channel(0u64);
    let (synced_tx, mut synced_rx) = tokio::sync::mpsc::unbounded_channel();
    let formation = Instant::now();
    let mut tasks = Vec::new();
    for index in 0..args.members {
        let setup = MemberSetup {
            index,
            conn: connect(&args.bootstrap, &format!("bench-member-{index}")).await?,
            group: args.group.clone(),
            metadata: metadata.clone(),
            topics: topics.clone(),
            partitions: args.partitions,
        };
        tasks.push(tokio::spawn(member_loop(setup, rejoin_rx.clone(), synced_tx.clone())));
    }
    let (mut generation, _) = wait_stable(&mut synced_rx, args.members, 0).await?;
    let total_partitions = topics.len() as i32 * args.partitions;
    println!(
        "group of {} members over {total_partitions} partitions stable (generation {generation}) {:.1} ms after the first join",
        args.members,
        formation.elapsed().as_secs_f64() * 1e3
    );
    // Timed: every member of the Stable group rejoins at once.
    let mut latencies = Latencies::with_capacity(args.rounds);
    let start = Instant::now();
    for round in 1..=args.rounds {
        rejoin_tx.send_replace(round as u64);
        let (next, took) = wait_stable(&mut synced_rx, args.members, generation).await?;
        generation = next;
        latencies.push(took);
    }
    drop(rejoin_tx);
    for t in tasks {
        t.abort();
    }
    Ok(Summary {
        kind: "rebalance",
        topic: args.group.clone(),
        records: args.rounds as u64,
        bytes: 0,
        elapsed: start.elapsed(),
        latency_kind: "last-join-to-last-sync",
        latencies,
        broker_cpu: None,
        errors: 0,
        extra: vec![("members", args.members.to_string()), ("partitions", total_partitions.to_string())],
    })
}

pub async fn commits_bench(args: CommitsArgs) -> Result<Summary> {
    let admin = Admin::new(&args.bootstrap).await?;
    ensure_topic(&admin, &args.topic, args.partitions).await?;
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration_secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let conn = connect(&args.bootstrap, &format!("bench-committer-{c}")).await?;
        let (group, topic, partitions, inflight) =
            (args.group.clone(), args.topic.clone(), args.partitions, args.inflight);
        tasks.push(tokio::spawn(async move {
            let version = conn.version_of::<OffsetCommitRequest>()?;
            let mut latencies = Latencies::with_capacity(1 << 16);
            let (mut errors, mut seq) = (0u64, 0i64);
            let mut window = std::collections::VecDeque::new();
            loop {
                while window.len() < inflight && Instant::now() < deadline {
                    seq += 1;
                    let partition = ((c as i64 * 7919 + seq) % partitions as i64) as i32;
                    let req = OffsetCommitRequest::default()
                        .with_group_id(GroupId(StrBytes::from_string(format!("{group}-{c}"))))
                        .with_generation_id_or_member_epoch(-1)
                        .with_topics(vec![OffsetCommitRequestTopic::default()
                            .with_name(TopicName(StrBytes::from_string(topic.clone())))
                            .with_partitions(vec![OffsetCommitRequestPartition::default()
                                .with_partition_index(partition)
                                .with_committed_offset(seq)])]);
                    window.push_back((Instant::now(), conn.enqueue(&req, version)?));
                }
                let Some((sent, pending)) = window.pop_front() else { break };
                let r = pending.wait().await?;
                latencies.push(sent.elapsed());
                errors += r.topics.iter().flat_map(|t| &t.partitions).filter(|p| p.error_code != 0).count() as u64;
            }
            anyhow::Ok((latencies, errors))
        }));
    }
    let mut latencies = Latencies::with_capacity(1 << 20);
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await??;
        latencies.samples.extend(l.samples);
        errors += e;
    }
    let commits = latencies.samples.len() as u64;
    Ok(Summary {
        kind: "commits",
        topic: args.topic.clone(),
        records: commits,
        bytes: 0,
        elapsed: start.elapsed(),
        latency_kind: "per-commit-request",
        latencies,
        broker_cpu: None,
        errors,
        extra: vec![("connections", args.connections.to_string()), ("inflight", args.inflight.to_string())],
    })
}
