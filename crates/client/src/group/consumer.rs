//! [`GroupConsumer`]: a consumer that shares the partitions of its subscribed topics with the
//! other members of its group, following the Java client's classic-protocol `ConsumerCoordinator`.
//!
//! Everything happens inside [`GroupConsumer::poll`], like the Java client: it acts on what the
//! background heartbeat reported, starts a rebalance when one is needed, completes it, fetches
//! committed offsets for new partitions, auto-commits, and fetches records. The rebalance itself
//! (JoinGroup, the leader's assignment, SyncGroup) runs on a task, so under the cooperative
//! protocol a member keeps returning records from the partitions it keeps while the group
//! rebalances.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::assignor::{default_assignors, PartitionAssignor, Subscription};
use super::coordinator::{self, CommitAs, Coordinator, JoinParams, SyncParams};
use super::heartbeat::{Heartbeat, HeartbeatConfig, HeartbeatEvent};
use super::metadata::{decode_assignment, decode_subscription, encode_assignment, encode_subscription};
use super::TopicPartition;
use crate::cluster::{Cluster, ClusterConfig};
use crate::consumer::{Consumer, ConsumerConfig, ConsumerRecord, OffsetSpec};
use crate::error::{Error, Result};

/// Group consumer settings; names and defaults follow the Java client's.
#[derive(Debug, Clone)]
pub struct GroupConsumerConfig {
    /// Bootstrap, client id, request timeout and fetch settings. `auto_offset_reset` is Kafka's
    /// `auto.offset.reset`: where to start a partition without a committed offset (and after
    /// OFFSET_OUT_OF_RANGE); only `Earliest` and `Latest` make sense here.
    pub consumer: ConsumerConfig,
    /// `group.id`.
    pub group_id: String,
    /// `group.instance.id`: makes this a static member (KIP-345).
    pub group_instance_id: Option<String>,
    /// `session.timeout.ms`.
    pub session_timeout: Duration,
    /// `heartbeat.interval.ms`.
    pub heartbeat_interval: Duration,
    /// `max.poll.interval.ms`, also the rebalance timeout sent in JoinGroup.
    pub max_poll_interval: Duration,
    /// `enable.auto.commit`: commit positions every `auto_commit_interval`, before partitions are
    /// revoked, and on close.
    pub enable_auto_commit: bool,
    /// `auto.commit.interval.ms`.
    pub auto_commit_interval: Duration,
    /// `partition.assignment.strategy`, most preferred first.
    pub assignors: Vec<Arc<dyn PartitionAssignor>>,
    /// `metadata.max.age.ms`: how often the leader checks the subscribed topics for new partitions.
    pub metadata_max_age: Duration,
    /// `retry.backoff.ms`.
    pub retry_backoff: Duration,
}

impl GroupConsumerConfig {
    pub fn new(bootstrap: impl Into<String>, group_id: impl Into<String>) -> Self {
        GroupConsumerConfig {
            consumer: ConsumerConfig {
                bootstrap: bootstrap.into(),
                auto_offset_reset: OffsetSpec::Latest,
                ..ConsumerConfig::default()
            },
            group_id: group_id.into(),
            group_instance_id: None,
            session_timeout: Duration::from_secs(45),
            heartbeat_interval: Duration::from_secs(3),
            max_poll_interval: Duration::from_secs(300),
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            assignors: default_assignors(),
            metadata_max_age: Duration::from_secs(300),
            retry_backoff: Duration::from_millis(100),
        }
    }
}

/// Callbacks around rebalances, called from within [`GroupConsumer::poll`] (and `close`).
pub trait RebalanceListener: Send {
    /// The member gives these partitions up. Under the eager protocol that is everything it
    /// owns, before every rebalance; under the cooperative protocol only what moves elsewhere.
    /// With auto-commit on, their positions are committed just before.
    fn on_partitions_revoked(&mut self, _partitions: &[TopicPartition]) {}

    /// Partitions newly assigned to the member; called after every completed rebalance, possibly
    /// with none.
    fn on_partitions_assigned(&mut self, _partitions: &[TopicPartition]) {}

    /// The membership was lost (expired session, fenced generation): other members may already
    /// own these partitions, so their offsets were not committed.
    fn on_partitions_lost(&mut self, partitions: &[TopicPartition]) {
        self.on_partitions_revoked(partitions)
    }
}

/// A rebalance callback as a value, for [`GroupConsumer::rebalance_events`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceEvent {
    Assigned(Vec<TopicPartition>),
    Revoked(Vec<TopicPartition>),
    Lost(Vec<TopicPartition>),
}

impl RebalanceListener for mpsc::UnboundedSender<RebalanceEvent> {
    fn on_partitions_revoked(&mut self, partitions: &[TopicPartition]) {
        let _ = self.send(RebalanceEvent::Revoked(partitions.to_vec()));
    }

    fn on_partitions_assigned(&mut self, partitions: &[TopicPartition]) {
        let _ = self.send(RebalanceEvent::Assigned(partitions.to_vec()));
    }

    fn on_partitions_lost(&mut self, partitions: &[TopicPartition]) {
        let _ = self.send(RebalanceEvent::Lost(partitions.to_vec()));
    }
}

/// The member id and generation this member joined with.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Generation {
    id: i32,
    member_id: String,
    protocol: Option<String>,
}

impl Generation {
    fn none() -> Self {
        Generation { id: -1, member_id: String::new(), protocol: None }
    }

    fn is_valid(&self) -> bool {
        self.id >= 0 && !self.member_id.is_empty()
    }
}

enum Phase {
    /// Needs to (re)join, not before the instant (backoff after a failure).
    Unjoined {
        not_before: Instant,
    },
    Joining(JoinHandle<JoinOutcome>),
    Stable,
}

/// What the join task learned, also when it failed half-way: a member id handed out with
/// MEMBER_ID_REQUIRED, or the new generation when only SyncGroup failed, must be kept.
struct JoinOutcome {
    member_id: String,
    generation: Option<Generation>,
    result: Result<Joined>,
}

struct Joined {
    assignment: Vec<TopicPartition>,
    /// Leader only: partitions per subscribed topic the assignment was computed from.
    snapshot: Option<BTreeMap<String, i32>>,
}

/// Errors after which the consumer cannot continue (Kafka's fatal coordinator errors).
fn is_fatal(code: ResponseError) -> bool {
    matches!(
        code,
        ResponseError::FencedInstanceId
            | ResponseError::InconsistentGroupProtocol
            | ResponseError::InvalidSessionTimeout
            | ResponseError::InvalidGroupId
            | ResponseError::GroupAuthorizationFailed
            | ResponseError::GroupMaxSizeReached
            | ResponseError::UnsupportedVersion
    )
}

/// A consumer in a group: [`subscribe`](GroupConsumer::subscribe), then call
/// [`poll`](GroupConsumer::poll) in a loop (at least every `max_poll_interval`), and
/// [`close`](GroupConsumer::close) at the end.
pub struct GroupConsumer {
    config: GroupConsumerConfig,
    cluster: Arc<Cluster>,
    coordinator: Arc<Coordinator>,
    fetcher: Consumer,
    /// All configured assignors support the cooperative protocol.
    cooperative: bool,
    subscription: Vec<String>,
    joined_subscription: Vec<String>,
    generation: Generation,
    owned: BTreeSet<TopicPartition>,
    /// Owned partitions whose committed offsets are still to be fetched.
    awaiting_offsets: BTreeSet<TopicPartition>,
    last_committed: BTreeMap<TopicPartition, i64>,
    phase: Phase,
    rejoin_reason: String,
    heartbeat: Option<Heartbeat>,
    heartbeat_events: Option<mpsc::UnboundedReceiver<HeartbeatEvent>>,
    last_poll: Arc<Mutex<Instant>>,
    listener: Option<Box<dyn RebalanceListener>>,
    next_auto_commit: Instant,
    snapshot: Option<BTreeMap<String, i32>>,
    next_metadata_check: Instant,
    fatal: Option<Error>,
    closed: bool,
}

impl std::fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConsumer")
            .field("group_id", &self.config.group_id)
            .field("generation", &self.generation)
            .field("owned", &self.owned)
            .finish()
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        if let Phase::Joining(h) = &self.phase {
            h.abort();
        }
    }
}

impl GroupConsumer {
    /// Connects to the cluster. Nothing is sent to the group before the first `poll`.
    pub async fn new(config: GroupConsumerConfig) -> Result<Self> {
        if config.group_id.is_empty() {
            return Err(Error::Config("group.id is empty".into()));
        }
        if config.assignors.is_empty() {
            return Err(Error::Config("partition.assignment.strategy is empty".into()));
        }
        if config.heartbeat_interval >= config.session_timeout {
            return Err(Error::Config("heartbeat.interval.ms must be lower than session.timeout.ms".into()));
        }
        let c = &config.consumer;
        let cluster = Cluster::connect(ClusterConfig {
            bootstrap: c.bootstrap.clone(),
            client_id: c.client_id.clone(),
            request_timeout: c.request_timeout + c.fetch_max_wait,
        })
        .await?;
        let coordinator = Arc::new(Coordinator::new(cluster.clone(), config.group_id.clone()));
        let fetcher = Consumer::with_cluster(cluster.clone(), config.consumer.clone());
        let cooperative = config.assignors.iter().all(|a| a.supports_cooperative());
        let now = Instant::now();
        Ok(GroupConsumer {
            cluster,
            coordinator,
            fetcher,
            cooperative,
            subscription: Vec::new(),
            joined_subscription: Vec::new(),
            generation: Generation::none(),
            owned: BTreeSet::new(),
            awaiting_offsets: BTreeSet::new(),
            last_committed: BTreeMap::new(),
            phase: Phase::Unjoined { not_before: now },
            rejoin_reason: String::new(),
            heartbeat: None,
            heartbeat_events: None,
            last_poll: Arc::new(Mutex::new(now)),
            listener: None,
            next_auto_commit: now + config.auto_commit_interval,
            snapshot: None,
            next_metadata_check: now + config.metadata_max_age,
            fatal: None,
            closed: false,
            config,
        })
    }

    /// The cluster handle this consumer uses.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    pub fn group_id(&self) -> &str {
        &self.config.group_id
    }

    /// The member id the coordinator gave this member (empty before it joined).
    pub fn member_id(&self) -> &str {
        &self.generation.member_id
    }

    /// The generation this member is in, -1 if none.
    pub fn generation_id(&self) -> i32 {
        self.generation.id
    }

    /// The assignment strategy the group uses, once joined.
    pub fn protocol(&self) -> Option<&str> {
        self.generation.protocol.as_deref()
    }

    /// Whether this consumer follows the cooperative protocol (all its assignors support it).
    pub fn is_cooperative(&self) -> bool {
        self.cooperative
    }

    /// Subscribes to `topics`, replacing the previous subscription; a change makes the member
    /// rejoin in its next poll.
    pub fn subscribe<I, S>(&mut self, topics: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut topics: Vec<String> = topics.into_iter().map(Into::into).collect();
        topics.sort();
        topics.dedup();
        self.subscription = topics;
    }

    /// The subscribed topics.
    pub fn subscription(&self) -> &[String] {
        &self.subscription
    }

    /// Calls `listener` around rebalances.
    pub fn set_rebalance_listener(&mut self, listener: Box<dyn RebalanceListener>) {
        self.listener = Some(listener);
    }

    /// Rebalance callbacks as a stream of events (replaces any listener).
    pub fn rebalance_events(&mut self) -> mpsc::UnboundedReceiver<RebalanceEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.listener = Some(Box::new(tx));
        rx
    }

    /// The partitions this member owns.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.owned.iter().cloned().collect()
    }

    /// The next offset `poll` returns for an owned partition, once known.
    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        self.fetcher.position(&tp.topic, tp.partition)
    }

    /// Moves an owned partition to `offset`; later commits commit from there.
    pub fn seek(&mut self, tp: &TopicPartition, offset: i64) -> Result<()> {
        if self.awaiting_offsets.remove(tp) {
            self.fetcher
                .update_assignment(|_, _| true, vec![(tp.topic.clone(), tp.partition, OffsetSpec::Offset(offset))]);
            return Ok(());
        }
        self.fetcher.seek(&tp.topic, tp.partition, OffsetSpec::Offset(offset))
    }

    /// The group's committed offsets of `partitions` (absent: none committed).
    pub async fn committed(&self, partitions: &[TopicPartition]) -> Result<BTreeMap<TopicPartition, i64>> {
        let conn = self.coordinator.connection().await?;
        coordinator::fetch_offsets(&conn, &self.config.group_id, Some(partitions)).await
    }

    /// Positions of the owned partitions that have one: what a commit commits.
    pub fn positions(&self) -> Vec<(TopicPartition, i64)> {
        self.owned.iter().filter_map(|tp| Some((tp.clone(), self.position(tp)?))).collect()
    }

    /// Fetches the next records, first doing whatever group work is due. Returns an empty batch
    /// when nothing arrived within the fetch wait or while a rebalance is in progress.
    pub async fn poll(&mut self) -> Result<Vec<ConsumerRecord>> {
        if self.closed {
            return Err(Error::Closed);
        }
        if let Some(e) = &self.fatal {
            return Err(e.clone());
        }
        if self.subscription.is_empty() {
            return Err(Error::Config("subscribe to topics before poll".into()));
        }
        *self.last_poll.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.handle_heartbeat_events()?;
        if matches!(self.phase, Phase::Stable) {
            if self.joined_subscription != self.subscription {
                self.request_rejoin("subscription changed");
            } else {
                self.check_metadata().await;
            }
        }
        if matches!(self.phase, Phase::Stable)
            && self.config.enable_auto_commit
            && Instant::now() >= self.next_auto_commit
        {
            self.auto_commit().await;
        }
        if let Phase::Unjoined { not_before } = self.phase {
            if Instant::now() >= not_before {
                self.start_join().await?;
            }
        }
        self.fetch_committed().await?;

        let wait = self.config.consumer.fetch_max_wait;
        if matches!(self.phase, Phase::Stable) || !self.fetcher.assignment().is_empty() {
            let records = self.fetch().await?;
            if matches!(&self.phase, Phase::Joining(h) if h.is_finished()) {
                let Phase::Joining(handle) = self.take_phase() else { unreachable!("matched above") };
                self.finish_join(handle.await).await?;
            }
            return Ok(records);
        }
        let outcome = match &mut self.phase {
            // Wait for the rebalance, but come back within the fetch wait like any poll.
            Phase::Joining(handle) => tokio::time::timeout(wait, handle).await.ok(),
            Phase::Unjoined { not_before } => {
                let pause = not_before.saturating_duration_since(Instant::now()).min(wait);
                tokio::time::sleep(pause).await;
                None
            }
            Phase::Stable => None,
        };
        if let Some(outcome) = outcome {
            self.take_phase();
            self.finish_join(outcome).await?;
        }
        Ok(Vec::new())
    }

    fn take_phase(&mut self) -> Phase {
        std::mem::replace(&mut self.phase, Phase::Unjoined { not_before: Instant::now() })
    }

    /// Commits the positions of all owned partitions, retrying retriable errors until the
    /// request timeout. Fails with the Kafka error (e.g. REBALANCE_IN_PROGRESS,
    /// ILLEGAL_GENERATION) when the member cannot commit; it then rejoins in its next poll.
    pub async fn commit_sync(&mut self) -> Result<()> {
        let offsets = self.positions();
        self.commit(offsets).await
    }

    /// Commits explicit offsets (the next offset to read, as Kafka commits), like `commit_sync`.
    pub async fn commit_offsets_sync(&mut self, offsets: &[(TopicPartition, i64)]) -> Result<()> {
        self.commit(offsets.to_vec()).await
    }

    /// Sends one OffsetCommit of the current positions now and returns a future of its outcome;
    /// not retried (like Java's `commitAsync`).
    pub fn commit_async(&self) -> impl Future<Output = Result<()>> + Send + 'static {
        let offsets = self.positions();
        let coordinator = self.coordinator.clone();
        let generation = self.generation.clone();
        let instance = self.config.group_instance_id.clone();
        async move {
            if offsets.is_empty() {
                return Ok(());
            }
            if !generation.is_valid() {
                return Err(not_a_member(coordinator.group_id()));
            }
            let conn = coordinator.connection().await?;
            let who =
                CommitAs { generation: generation.id, member_id: &generation.member_id, group_instance_id: &instance };
            let results = coordinator::commit_offsets(&conn, coordinator.group_id(), who, &offsets).await?;
            first_commit_error(&results).map_or(Ok(()), Err)
        }
    }

    /// Commits (with auto-commit on), revokes the partitions and leaves the group. Fails if the
    /// commit failed, except when the member was closed during a rebalance (the error is logged).
    /// A static member does not send LeaveGroup: it keeps its place until the session times out,
    /// so that a restart does not cause a rebalance (KIP-345).
    pub async fn close(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        self.heartbeat = None;
        if let Phase::Joining(h) = &self.phase {
            // Its JoinGroup may hold the coordinator connection for the whole rebalance.
            h.abort();
            self.coordinator.mark_unknown().await;
        }
        self.phase = Phase::Unjoined { not_before: Instant::now() };
        let mut result = Ok(());
        if self.generation.is_valid() && self.config.enable_auto_commit {
            let offsets = self.positions();
            match self.commit(offsets).await {
                // Closing during a rebalance: the generation moved on, and the partitions go to
                // their next owners from the last successful commit (Java logs this too).
                Err(e) if lost_membership(&e) => {
                    tracing::warn!(group = %self.config.group_id, error = %e, "commit on close failed")
                }
                r => result = r,
            }
        }
        let owned: Vec<TopicPartition> = std::mem::take(&mut self.owned).into_iter().collect();
        if !owned.is_empty() {
            if self.generation.is_valid() {
                self.invoke(|l| l.on_partitions_revoked(&owned));
            } else {
                self.invoke(|l| l.on_partitions_lost(&owned));
            }
        }
        self.fetcher.assign(Vec::new());
        if self.config.group_instance_id.is_none() && !self.generation.member_id.is_empty() {
            let left = async {
                let conn = self.coordinator.connection().await?;
                let member = &self.generation.member_id;
                coordinator::leave_group(&conn, &self.config.group_id, member, &None, "the consumer is being closed")
                    .await
            };
            match tokio::time::timeout(self.config.consumer.request_timeout, left).await {
                Ok(Ok(())) => {
                    tracing::info!(group = %self.config.group_id, member = %self.generation.member_id, "left the group")
                }
                Ok(Err(e)) => tracing::warn!(group = %self.config.group_id, error = %e, "LeaveGroup failed"),
                Err(_) => tracing::warn!(group = %self.config.group_id, "LeaveGroup timed out"),
            }
        }
        self.generation = Generation::none();
        result
    }

    fn invoke(&mut self, f: impl FnOnce(&mut dyn RebalanceListener)) {
        if let Some(l) = self.listener.as_mut() {
            f(l.as_mut());
        }
    }

    fn request_rejoin(&mut self, reason: &str) {
        if matches!(self.phase, Phase::Stable) {
            tracing::info!(group = %self.config.group_id, member = %self.generation.member_id, "rejoining the group: {reason}");
            self.rejoin_reason = reason.to_owned();
            self.phase = Phase::Unjoined { not_before: Instant::now() };
        }
    }

    fn reset_generation(&mut self, reason: &str) {
        tracing::info!(group = %self.config.group_id, member = %self.generation.member_id, "resetting the membership: {reason}");
        self.generation = Generation::none();
        self.snapshot = None;
        self.heartbeat = None;
        if matches!(self.phase, Phase::Stable) {
            self.rejoin_reason = reason.to_owned();
            self.phase = Phase::Unjoined { not_before: Instant::now() };
        }
    }

    fn handle_heartbeat_events(&mut self) -> Result<()> {
        let Some(rx) = self.heartbeat_events.as_mut() else {
            return Ok(());
        };
        let mut events = Vec::new();
        while let Ok(e) = rx.try_recv() {
            events.push(e);
        }
        for e in events {
            match e {
                HeartbeatEvent::Rejoin => self.request_rejoin("the group is rebalancing"),
                HeartbeatEvent::Reset(code) => {
                    self.reset_generation(&format!("heartbeat failed with {}", crate::error::error_name(code)))
                }
                HeartbeatEvent::PollTimeout => self.reset_generation("poll timeout"),
                HeartbeatEvent::Fenced => {
                    let e =
                        Error::from_code(ResponseError::FencedInstanceId.code(), None, None, None).expect("non-zero");
                    self.fatal = Some(e.clone());
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    async fn fetch(&mut self) -> Result<Vec<ConsumerRecord>> {
        if self.fetcher.assignment().is_empty() {
            tokio::time::sleep(self.config.consumer.fetch_max_wait).await;
            return Ok(Vec::new());
        }
        self.fetcher.poll().await
    }

    async fn auto_commit(&mut self) {
        self.next_auto_commit = Instant::now() + self.config.auto_commit_interval;
        let offsets: Vec<(TopicPartition, i64)> =
            self.positions().into_iter().filter(|(tp, o)| self.last_committed.get(tp) != Some(o)).collect();
        if let Err(e) = self.commit(offsets).await {
            tracing::warn!(group = %self.config.group_id, error = %e, "auto-commit failed");
        }
    }

    async fn commit(&mut self, offsets: Vec<(TopicPartition, i64)>) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + self.config.consumer.request_timeout;
        loop {
            if !self.generation.is_valid() {
                return Err(not_a_member(&self.config.group_id));
            }
            let attempt = async {
                let conn = self.coordinator.connection().await?;
                let who = CommitAs {
                    generation: self.generation.id,
                    member_id: &self.generation.member_id,
                    group_instance_id: &self.config.group_instance_id,
                };
                coordinator::commit_offsets(&conn, &self.config.group_id, who, &offsets).await
            };
            let err = match attempt.await {
                Ok(results) => match first_commit_error(&results) {
                    None => {
                        tracing::debug!(group = %self.config.group_id, ?offsets, "committed offsets");
                        self.last_committed.extend(offsets);
                        return Ok(());
                    }
                    Some(e) => e,
                },
                Err(e) => e,
            };
            self.on_group_error(&err).await;
            if !err.is_retriable() || Instant::now() + self.config.retry_backoff > deadline {
                return Err(err);
            }
            tokio::time::sleep(self.config.retry_backoff).await;
        }
    }

    /// Reacts to an error from a group request other than JoinGroup/SyncGroup.
    async fn on_group_error(&mut self, e: &Error) {
        match e.kafka_code() {
            Some(code @ (ResponseError::UnknownMemberId | ResponseError::IllegalGeneration)) => {
                self.reset_generation(&format!("commit failed with {}", crate::error::error_name(code)))
            }
            Some(ResponseError::RebalanceInProgress) => self.request_rejoin("the group is rebalancing"),
            Some(ResponseError::FencedInstanceId) => self.fatal = Some(e.clone()),
            _ if coordinator::coordinator_lost(e) => self.coordinator.mark_unknown().await,
            _ => {}
        }
    }

    /// Fetches committed offsets for newly assigned partitions and hands them to the fetcher.
    async fn fetch_committed(&mut self) -> Result<()> {
        if self.awaiting_offsets.is_empty() {
            return Ok(());
        }
        let partitions: Vec<TopicPartition> = self.awaiting_offsets.iter().cloned().collect();
        let result = async {
            let conn = self.coordinator.connection().await?;
            coordinator::fetch_offsets(&conn, &self.config.group_id, Some(&partitions)).await
        }
        .await;
        match result {
            Ok(committed) => {
                let reset = self.config.consumer.auto_offset_reset;
                let add = partitions
                    .into_iter()
                    .map(|tp| {
                        let spec = match committed.get(&tp) {
                            Some(&o) => OffsetSpec::Offset(o),
                            None => {
                                tracing::debug!(group = %self.config.group_id, partition = %tp, "no committed offset; resetting to {reset:?}");
                                reset
                            }
                        };
                        (tp.topic, tp.partition, spec)
                    })
                    .collect();
                self.fetcher.update_assignment(|_, _| true, add);
                self.awaiting_offsets.clear();
                Ok(())
            }
            Err(e) if e.is_retriable() => {
                tracing::debug!(group = %self.config.group_id, error = %e, "fetching committed offsets failed; will retry");
                if coordinator::coordinator_lost(&e) {
                    self.coordinator.mark_unknown().await;
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The leader rejoins when the partition counts of the group's topics changed since it
    /// computed the assignment (new partitions, topics created or deleted).
    async fn check_metadata(&mut self) {
        if Instant::now() < self.next_metadata_check {
            return;
        }
        self.next_metadata_check = Instant::now() + self.config.metadata_max_age;
        let Some(snapshot) = &self.snapshot else { return };
        let topics: BTreeSet<String> = snapshot.keys().cloned().collect();
        match partition_counts(&self.cluster, &topics).await {
            Ok(counts) if &counts != snapshot => {
                tracing::info!(group = %self.config.group_id, before = ?snapshot, now = ?counts, "subscribed topics changed");
                self.request_rejoin("the partitions of subscribed topics changed");
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "metadata refresh failed"),
        }
    }

    /// Prepares for a rebalance (Java's `onJoinPrepare`) and starts the join task.
    async fn start_join(&mut self) -> Result<()> {
        self.heartbeat = None;
        self.heartbeat_events = None;
        if self.generation.is_valid() && self.config.enable_auto_commit {
            let offsets = self.positions();
            if let Err(e) = self.commit(offsets).await {
                tracing::warn!(group = %self.config.group_id, error = %e, "commit before rebalance failed");
            }
        }
        if !self.generation.is_valid() {
            if !self.owned.is_empty() {
                let lost: Vec<TopicPartition> = std::mem::take(&mut self.owned).into_iter().collect();
                tracing::info!(group = %self.config.group_id, lost = %partition_list(&lost), "giving away all partitions as lost: the membership was reset");
                self.invoke(|l| l.on_partitions_lost(&lost));
                self.apply_assignment(&[]);
            }
        } else if !self.cooperative {
            let revoked: Vec<TopicPartition> = std::mem::take(&mut self.owned).into_iter().collect();
            if !revoked.is_empty() {
                tracing::info!(group = %self.config.group_id, revoked = %partition_list(&revoked), "revoking previously assigned partitions");
                self.invoke(|l| l.on_partitions_revoked(&revoked));
                self.apply_assignment(&[]);
            }
        } else {
            let revoked: Vec<TopicPartition> =
                self.owned.iter().filter(|tp| !self.subscription.contains(&tp.topic)).cloned().collect();
            if !revoked.is_empty() {
                self.invoke(|l| l.on_partitions_revoked(&revoked));
                for tp in &revoked {
                    self.owned.remove(tp);
                }
                self.apply_assignment(&[]);
            }
        }

        let owned: Vec<TopicPartition> =
            if self.cooperative { self.owned.iter().cloned().collect() } else { Vec::new() };
        let generation = self.generation.id;
        let mut protocols = Vec::with_capacity(self.config.assignors.len());
        for a in &self.config.assignors {
            let sub = Subscription {
                topics: self.subscription.clone(),
                user_data: a.subscription_user_data(generation),
                owned_partitions: owned.clone(),
                generation: Some(generation).filter(|g| *g >= 0),
                rack: None,
                group_instance_id: None,
            };
            protocols.push((a.name().to_owned(), encode_subscription(&sub)?));
        }
        let reason = std::mem::take(&mut self.rejoin_reason);
        let task = JoinTask {
            coordinator: self.coordinator.clone(),
            cluster: self.cluster.clone(),
            params: JoinParams {
                group_id: self.config.group_id.clone(),
                member_id: self.generation.member_id.clone(),
                group_instance_id: self.config.group_instance_id.clone(),
                session_timeout: self.config.session_timeout,
                rebalance_timeout: self.config.max_poll_interval,
                protocols,
                reason: Some(reason).filter(|r| !r.is_empty()),
            },
            assignors: self.config.assignors.clone(),
            cooperative: self.cooperative,
        };
        tracing::debug!(group = %self.config.group_id, member = %self.generation.member_id, "joining the group");
        self.joined_subscription = self.subscription.clone();
        self.phase = Phase::Joining(tokio::spawn(task.run()));
        Ok(())
    }

    /// Acts on the finished join task's outcome.
    async fn finish_join(&mut self, outcome: std::result::Result<JoinOutcome, tokio::task::JoinError>) -> Result<()> {
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(group = %self.config.group_id, error = %e, "join task failed");
                self.phase = Phase::Unjoined { not_before: Instant::now() + self.config.retry_backoff };
                return Ok(());
            }
        };
        match outcome.generation {
            Some(g) => self.generation = g,
            None => self.generation.member_id = outcome.member_id,
        }
        match outcome.result {
            Ok(joined) => {
                self.on_join_complete(joined).await;
                Ok(())
            }
            Err(e) => self.on_join_error(e).await,
        }
    }

    async fn on_join_error(&mut self, e: Error) -> Result<()> {
        let now = Instant::now();
        let backoff = now + self.config.retry_backoff;
        match e.kafka_code() {
            Some(ResponseError::UnknownMemberId | ResponseError::IllegalGeneration) => {
                tracing::info!(group = %self.config.group_id, error = %e, "rejoining as a new member");
                self.generation = Generation::none();
                self.phase = Phase::Unjoined { not_before: now };
            }
            Some(ResponseError::RebalanceInProgress) => self.phase = Phase::Unjoined { not_before: now },
            Some(code) if is_fatal(code) => {
                self.fatal = Some(e.clone());
                return Err(e);
            }
            _ if coordinator::coordinator_lost(&e) => {
                tracing::debug!(group = %self.config.group_id, error = %e, "coordinator lost during the rebalance");
                self.coordinator.mark_unknown().await;
                self.phase = Phase::Unjoined { not_before: backoff };
            }
            _ if e.is_retriable() => {
                tracing::debug!(group = %self.config.group_id, error = %e, "rebalance failed; retrying");
                self.phase = Phase::Unjoined { not_before: backoff };
            }
            _ => {
                self.phase = Phase::Unjoined { not_before: backoff };
                return Err(e);
            }
        }
        Ok(())
    }

    /// Takes up the new assignment (Java's `onJoinComplete`).
    async fn on_join_complete(&mut self, joined: Joined) {
        let assigned: BTreeSet<TopicPartition> = joined.assignment.into_iter().collect();
        self.snapshot = joined.snapshot;
        self.phase = Phase::Stable;
        tracing::info!(
            group = %self.config.group_id,
            member = %self.generation.member_id,
            generation = self.generation.id,
            protocol = self.generation.protocol.as_deref().unwrap_or_default(),
            assignment = %partition_list(&assigned),
            "joined the group"
        );
        let revoked: Vec<TopicPartition> = self.owned.difference(&assigned).cloned().collect();
        let added: Vec<TopicPartition> = if self.cooperative {
            assigned.difference(&self.owned).cloned().collect()
        } else {
            assigned.iter().cloned().collect()
        };
        self.start_heartbeat();
        if !revoked.is_empty() {
            // Only the cooperative protocol still owns partitions here; give up those that move.
            if self.config.enable_auto_commit {
                let offsets: Vec<(TopicPartition, i64)> =
                    self.positions().into_iter().filter(|(tp, _)| !assigned.contains(tp)).collect();
                if let Err(e) = self.commit(offsets).await {
                    tracing::warn!(group = %self.config.group_id, error = %e, "commit of revoked partitions failed");
                }
            }
            self.invoke(|l| l.on_partitions_revoked(&revoked));
        }
        self.owned = assigned;
        self.apply_assignment(&added);
        self.invoke(|l| l.on_partitions_assigned(&added));
        self.next_auto_commit = Instant::now() + self.config.auto_commit_interval;
        self.next_metadata_check = Instant::now() + self.config.metadata_max_age;
        if !revoked.is_empty() {
            // The revoked partitions go to their new owners in the follow-up rebalance.
            self.request_rejoin("partitions were revoked");
        }
    }

    /// Makes the fetcher read exactly the owned partitions; `added` start from their committed
    /// offsets, fetched before their first read.
    fn apply_assignment(&mut self, added: &[TopicPartition]) {
        let owned = &self.owned;
        self.fetcher.update_assignment(|t, p| owned.contains(&TopicPartition::new(t, p)), Vec::new());
        self.awaiting_offsets.retain(|tp| owned.contains(tp));
        self.awaiting_offsets.extend(added.iter().cloned());
        self.last_committed.retain(|tp, _| owned.contains(tp));
    }

    fn start_heartbeat(&mut self) {
        let (tx, rx) = mpsc::unbounded_channel();
        let config = HeartbeatConfig {
            group_id: self.config.group_id.clone(),
            member_id: self.generation.member_id.clone(),
            generation: self.generation.id,
            group_instance_id: self.config.group_instance_id.clone(),
            interval: self.config.heartbeat_interval,
            session_timeout: self.config.session_timeout,
            max_poll_interval: self.config.max_poll_interval,
        };
        self.heartbeat = Some(Heartbeat::start(self.coordinator.clone(), config, self.last_poll.clone(), tx));
        self.heartbeat_events = Some(rx);
    }
}

/// `t-0, t-1` for logs.
fn partition_list<'a>(parts: impl IntoIterator<Item = &'a TopicPartition>) -> String {
    parts.into_iter().map(|tp| tp.to_string()).collect::<Vec<_>>().join(", ")
}

/// The errors of a commit from a member whose generation is over.
fn lost_membership(e: &Error) -> bool {
    matches!(
        e.kafka_code(),
        Some(ResponseError::RebalanceInProgress | ResponseError::IllegalGeneration | ResponseError::UnknownMemberId)
    )
}

fn not_a_member(group_id: &str) -> Error {
    let message = format!("group {group_id}: not a member of an active generation");
    Error::from_code(ResponseError::RebalanceInProgress.code(), None, None, Some(&message)).expect("non-zero")
}

fn first_commit_error(results: &[(TopicPartition, i16)]) -> Option<Error> {
    results.iter().find_map(|(tp, code)| Error::from_code(*code, Some(&tp.topic), Some(tp.partition), None))
}

/// Partition count of each topic, 0 for a topic that does not exist.
async fn partition_counts(cluster: &Cluster, topics: &BTreeSet<String>) -> Result<BTreeMap<String, i32>> {
    let list: Vec<String> = topics.iter().cloned().collect();
    cluster.refresh_metadata(Some(&list)).await?;
    Ok(topics.iter().map(|t| (t.clone(), cluster.topic(t).map_or(0, |i| i.partitions.len() as i32))).collect())
}

/// One rebalance: JoinGroup (again with the member id the coordinator asks for), the leader's
/// assignment, SyncGroup.
struct JoinTask {
    coordinator: Arc<Coordinator>,
    cluster: Arc<Cluster>,
    params: JoinParams,
    assignors: Vec<Arc<dyn PartitionAssignor>>,
    cooperative: bool,
}

impl JoinTask {
    async fn run(mut self) -> JoinOutcome {
        let mut generation = None;
        let result = self.join_and_sync(&mut generation).await;
        JoinOutcome { member_id: self.params.member_id, generation, result }
    }

    async fn join_and_sync(&mut self, generation: &mut Option<Generation>) -> Result<Joined> {
        let conn = self.coordinator.connection().await?;
        let mut attempts = 0;
        let resp = loop {
            let resp = coordinator::join_group(&conn, &self.params).await?;
            match ResponseError::try_from_code(resp.error_code) {
                None => break resp,
                // KIP-394: the first JoinGroup only hands out a member id to join with.
                Some(ResponseError::MemberIdRequired) if attempts < 3 => {
                    attempts += 1;
                    self.params.member_id = resp.member_id.to_string();
                }
                Some(_) => {
                    let msg = format!("group {}", self.params.group_id);
                    return Err(Error::from_code(resp.error_code, None, None, Some(&msg)).expect("non-zero"));
                }
            }
        };
        self.params.member_id = resp.member_id.to_string();
        let protocol = resp
            .protocol_name
            .as_ref()
            .map(|p| p.to_string())
            .filter(|p| !p.is_empty())
            .ok_or_else(|| Error::Protocol("JoinGroup response names no assignment strategy".into()))?;
        *generation = Some(Generation {
            id: resp.generation_id,
            member_id: self.params.member_id.clone(),
            protocol: Some(protocol.clone()),
        });
        let leader = resp.leader == resp.member_id && !resp.skip_assignment;
        let (assignments, snapshot) =
            if leader { self.assign(&protocol, &resp.members).await? } else { (Vec::new(), None) };
        let sync = coordinator::sync_group(
            &conn,
            SyncParams {
                group_id: &self.params.group_id,
                generation: resp.generation_id,
                member_id: &self.params.member_id,
                group_instance_id: &self.params.group_instance_id,
                protocol_name: &protocol,
                assignments,
                timeout: self.params.rebalance_timeout + Duration::from_secs(5),
            },
        )
        .await?;
        if let Some(code) = ResponseError::try_from_code(sync.error_code) {
            let msg = format!("group {}", self.params.group_id);
            return Err(Error::from_code(code.code(), None, None, Some(&msg)).expect("non-zero"));
        }
        Ok(Joined { assignment: decode_assignment(sync.assignment)?, snapshot })
    }

    /// The leader's part: run the chosen assignor over every member's subscription.
    async fn assign(
        &self,
        protocol: &str,
        members: &[JoinGroupResponseMember],
    ) -> Result<(Vec<(String, Bytes)>, Option<BTreeMap<String, i32>>)> {
        let assignor = self.assignors.iter().find(|a| a.name() == protocol).ok_or_else(|| {
            Error::Protocol(format!("the coordinator chose assignment strategy {protocol}, which this consumer lacks"))
        })?;
        let mut subscriptions = BTreeMap::new();
        for m in members {
            let mut sub = decode_subscription(m.metadata.clone())?;
            sub.group_instance_id = m.group_instance_id.as_ref().map(|i| i.to_string());
            subscriptions.insert(m.member_id.to_string(), sub);
        }
        let topics: BTreeSet<String> = subscriptions.values().flat_map(|s| s.topics.iter().cloned()).collect();
        let counts = partition_counts(&self.cluster, &topics).await?;
        let partitions_per_topic: BTreeMap<String, i32> =
            counts.iter().filter(|(_, &n)| n > 0).map(|(t, &n)| (t.clone(), n)).collect();
        let assignment = assignor.assign(&partitions_per_topic, &subscriptions);
        if self.cooperative {
            validate_cooperative(&subscriptions, &assignment);
        }
        tracing::debug!(group = %self.params.group_id, %protocol, ?assignment, "computed the group's assignment as leader");
        let mut out = Vec::with_capacity(subscriptions.len());
        for member in subscriptions.keys() {
            let parts = assignment.get(member).map(Vec::as_slice).unwrap_or_default();
            out.push((member.clone(), encode_assignment(parts, None)?));
        }
        Ok((out, Some(counts)))
    }
}

/// Kafka's `validateCooperativeAssignment`: no partition may go to a new owner while another
/// member still reports owning it.
fn validate_cooperative(
    subscriptions: &BTreeMap<String, Subscription>,
    assignment: &BTreeMap<String, Vec<TopicPartition>>,
) {
    let owner: BTreeMap<&TopicPartition, &str> =
        subscriptions.iter().flat_map(|(m, s)| s.owned_partitions.iter().map(move |tp| (tp, m.as_str()))).collect();
    for (member, parts) in assignment {
        for tp in parts {
            if let Some(other) = owner.get(tp).filter(|o| **o != member.as_str()) {
                tracing::error!(%tp, to = %member, owner = %other, "assignor moved a partition that is still owned");
            }
        }
    }
}
