//! What a leader knows of one follower, learnt from its fetches (Kafka's `ReplicaState`).

/// Kafka's `UnifiedLog.UnknownOffset`: the follower has not fetched in this leadership.
pub const UNKNOWN_OFFSET: i64 = -1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerState {
    /// The follower's log start offset, from its last fetch.
    pub log_start_offset: i64,
    /// The follower's log end offset: the offset of its last fetch.
    pub log_end_offset: i64,
    /// The leader's log end offset when the last fetch arrived.
    pub last_fetch_leader_log_end_offset: i64,
    pub last_fetch_time_ms: i64,
    /// The largest time at which the follower had fetched up to the leader's log end offset of
    /// that time; the ISR rules compare it with `replica.lag.time.max.ms`.
    pub last_caught_up_time_ms: i64,
    /// The broker epoch its last fetch carried (-1 when the request had none); `None` before
    /// the first fetch of this leadership.
    pub broker_epoch: Option<i64>,
}

impl FollowerState {
    /// Kafka's `ReplicaState.Empty`.
    pub(crate) const EMPTY: FollowerState = FollowerState {
        log_start_offset: UNKNOWN_OFFSET,
        log_end_offset: UNKNOWN_OFFSET,
        last_fetch_leader_log_end_offset: 0,
        last_fetch_time_ms: 0,
        last_caught_up_time_ms: 0,
        broker_epoch: None,
    };

    /// Kafka's `ReplicaState.isCaughtUp`.
    pub fn is_caught_up(&self, leader_log_end_offset: i64, now_ms: i64, replica_lag_time_max_ms: i64) -> bool {
        leader_log_end_offset == self.log_end_offset
            || now_ms.saturating_sub(self.last_caught_up_time_ms) <= replica_lag_time_max_ms
    }

    /// Kafka's `Replica.updateFetchStateOrThrow`, after its broker-epoch check. A fetch that
    /// reaches the leader's current end makes the follower caught up now; one that reaches the
    /// leader's end as of the previous fetch makes it caught up as of that previous fetch. So a
    /// follower that always trails a busy leader by the last few produces still counts as in
    /// sync, and one that stalls does not.
    pub(crate) fn record_fetch(
        &mut self,
        fetch_offset: i64,
        follower_log_start_offset: i64,
        fetch_time_ms: i64,
        leader_log_end_offset: i64,
        broker_epoch: i64,
    ) {
        let last_caught_up_time_ms = if fetch_offset >= leader_log_end_offset {
            self.last_caught_up_time_ms.max(fetch_time_ms)
        } else if fetch_offset >= self.last_fetch_leader_log_end_offset {
            self.last_caught_up_time_ms.max(self.last_fetch_time_ms)
        } else {
            self.last_caught_up_time_ms
        };
        *self = FollowerState {
            log_start_offset: follower_log_start_offset,
            log_end_offset: fetch_offset,
            last_fetch_leader_log_end_offset: leader_log_end_offset.max(self.last_fetch_leader_log_end_offset),
            last_fetch_time_ms: fetch_time_ms,
            last_caught_up_time_ms,
            broker_epoch: Some(broker_epoch),
        };
    }

    /// Kafka's `Replica.resetReplicaState`, run when this broker starts a new leader epoch. A
    /// follower in the ISR gets the benefit of the doubt (caught up now); one outside it starts
    /// at time 0 so it does not hold back the high watermark. A brand-new leader forgets what an
    /// earlier leadership learnt of the follower's log.
    pub(crate) fn reset(&mut self, now_ms: i64, leader_log_end_offset: i64, is_new_leader: bool, in_isr: bool) {
        let last_caught_up_time_ms = if in_isr { now_ms } else { 0 };
        *self = if is_new_leader {
            FollowerState {
                log_start_offset: UNKNOWN_OFFSET,
                log_end_offset: UNKNOWN_OFFSET,
                last_fetch_leader_log_end_offset: UNKNOWN_OFFSET,
                last_fetch_time_ms: 0,
                last_caught_up_time_ms,
                broker_epoch: None,
            }
        } else {
            FollowerState {
                last_fetch_leader_log_end_offset: leader_log_end_offset,
                last_fetch_time_ms: if in_isr { now_ms } else { 0 },
                last_caught_up_time_ms,
                ..*self
            }
        };
    }
}
