//! The background heartbeat of one generation: keeps the membership alive between polls and
//! reports what the coordinator says back to the consumer, which acts on it in its next poll.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::coordinator::{self, Coordinator};

/// What the heartbeat learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeartbeatEvent {
    /// REBALANCE_IN_PROGRESS: rejoin, keeping member id and generation.
    Rejoin,
    /// UNKNOWN_MEMBER_ID or ILLEGAL_GENERATION: the membership is gone; rejoin as a new member.
    Reset(ResponseError),
    /// FENCED_INSTANCE_ID: another consumer took this group.instance.id.
    Fenced,
    /// `poll` was not called within max.poll.interval; the member left the group.
    PollTimeout,
}

pub(crate) struct HeartbeatConfig {
    pub group_id: String,
    pub member_id: String,
    pub generation: i32,
    pub group_instance_id: Option<String>,
    pub interval: Duration,
    pub session_timeout: Duration,
    pub max_poll_interval: Duration,
}

/// The running heartbeat task; stopped when dropped.
pub(crate) struct Heartbeat {
    task: JoinHandle<()>,
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Heartbeat {
    pub fn start(
        coordinator: Arc<Coordinator>,
        config: HeartbeatConfig,
        last_poll: Arc<Mutex<Instant>>,
        events: mpsc::UnboundedSender<HeartbeatEvent>,
    ) -> Heartbeat {
        Heartbeat { task: tokio::spawn(run(coordinator, config, last_poll, events)) }
    }
}

async fn run(
    coordinator: Arc<Coordinator>,
    c: HeartbeatConfig,
    last_poll: Arc<Mutex<Instant>>,
    events: mpsc::UnboundedSender<HeartbeatEvent>,
) {
    let mut last_ok = Instant::now();
    loop {
        tokio::time::sleep(c.interval).await;
        let since_poll = last_poll.lock().unwrap_or_else(|e| e.into_inner()).elapsed();
        if since_poll > c.max_poll_interval {
            tracing::warn!(
                group = %c.group_id,
                member = %c.member_id,
                "poll() was not called for {since_poll:?}, longer than max.poll.interval ({:?}): leaving the group",
                c.max_poll_interval
            );
            // Static members keep their place until the session times out (KIP-345).
            if c.group_instance_id.is_none() {
                if let Ok(conn) = coordinator.connection().await {
                    let reason = "consumer poll timeout has expired";
                    if let Err(e) = coordinator::leave_group(&conn, &c.group_id, &c.member_id, &None, reason).await {
                        tracing::debug!(group = %c.group_id, error = %e, "LeaveGroup failed");
                    }
                }
            }
            let _ = events.send(HeartbeatEvent::PollTimeout);
            return;
        }
        let result = match coordinator.connection().await {
            Ok(conn) => {
                coordinator::heartbeat(&conn, &c.group_id, c.generation, &c.member_id, &c.group_instance_id).await
            }
            Err(e) => Err(e),
        };
        match result.map(ResponseError::try_from_code) {
            Ok(None) => last_ok = Instant::now(),
            Ok(Some(ResponseError::RebalanceInProgress)) => {
                // Still a member until it rejoins; keep heartbeating meanwhile.
                last_ok = Instant::now();
                let _ = events.send(HeartbeatEvent::Rejoin);
            }
            Ok(Some(code @ (ResponseError::UnknownMemberId | ResponseError::IllegalGeneration))) => {
                let _ = events.send(HeartbeatEvent::Reset(code));
                return;
            }
            Ok(Some(ResponseError::FencedInstanceId)) => {
                let _ = events.send(HeartbeatEvent::Fenced);
                return;
            }
            Ok(Some(code @ (ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable))) => {
                tracing::debug!(group = %c.group_id, ?code, "coordinator moved");
                coordinator.mark_unknown().await;
            }
            Ok(Some(code)) => tracing::warn!(group = %c.group_id, ?code, "heartbeat failed"),
            Err(e) => {
                tracing::debug!(group = %c.group_id, error = %e, "heartbeat failed");
                if coordinator::coordinator_lost(&e) {
                    coordinator.mark_unknown().await;
                }
            }
        }
        if last_ok.elapsed() > c.session_timeout {
            // The coordinator has surely expired the member by now.
            tracing::warn!(group = %c.group_id, member = %c.member_id, "no successful heartbeat within the session timeout");
            let _ = events.send(HeartbeatEvent::Reset(ResponseError::UnknownMemberId));
            return;
        }
    }
}
