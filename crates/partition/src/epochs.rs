//! The leader-epoch cache: for each leader epoch that wrote to the log, the offset of its first
//! record (Kafka's `LeaderEpochFileCache`, without the checkpoint file: persisting it is the
//! storage layer's job).

/// Kafka's `UNDEFINED_EPOCH`: no epoch is known.
pub const UNDEFINED_EPOCH: i32 = -1;
/// Kafka's `UNDEFINED_EPOCH_OFFSET`: no end offset is known.
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;

/// A leader epoch and the offset of the first record written in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// The answer to "where does epoch E end?": the largest epoch <= E the log knows and the offset
/// where it ends. OffsetForLeaderEpoch returns it as is; a Fetch v12+ returns it as the
/// diverging epoch. [`UNDEFINED_EPOCH`] / [`UNDEFINED_EPOCH_OFFSET`] when unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEndOffset {
    pub leader_epoch: i32,
    pub end_offset: i64,
}

impl EpochEndOffset {
    pub const UNDEFINED: EpochEndOffset =
        EpochEndOffset { leader_epoch: UNDEFINED_EPOCH, end_offset: UNDEFINED_EPOCH_OFFSET };

    pub fn is_undefined(&self) -> bool {
        self.leader_epoch == UNDEFINED_EPOCH || self.end_offset == UNDEFINED_EPOCH_OFFSET
    }
}

/// Entries strictly increasing in both epoch and start offset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a cache from stored entries; entries that break monotonicity are dropped the way
    /// [`LeaderEpochCache::assign`] drops them.
    pub fn from_entries(entries: impl IntoIterator<Item = EpochEntry>) -> Self {
        let mut cache = Self::new();
        for entry in entries {
            cache.assign(entry.epoch, entry.start_offset);
        }
        cache
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset` (called for every appended batch, and by a
    /// new leader for its own epoch). A no-op unless the epoch is new or starts earlier than
    /// recorded; entries that would break monotonicity (an epoch or a start offset at or above
    /// this one) are removed first, as Kafka does. Negative values are ignored (Kafka throws).
    /// Returns whether the cache changed.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || start_offset < 0 {
            return false;
        }
        let update_needed =
            self.entries.last().is_none_or(|latest| epoch != latest.epoch || start_offset < latest.start_offset);
        if !update_needed {
            return false;
        }
        while self.entries.last().is_some_and(|e| e.epoch >= epoch || e.start_offset >= start_offset) {
            self.entries.pop();
        }
        self.entries.push(EpochEntry { epoch, start_offset });
        true
    }

    /// The log was truncated to `end_offset`: entries starting at or after it are gone.
    pub fn truncate_from_end(&mut self, end_offset: i64) {
        if end_offset < 0 {
            return;
        }
        while self.entries.last().is_some_and(|e| e.start_offset >= end_offset) {
            self.entries.pop();
        }
    }

    /// The log now starts at `start_offset`: entries starting at or before it are removed and the
    /// last of them is kept, moved to start at `start_offset`.
    pub fn truncate_from_start(&mut self, start_offset: i64) {
        let removed = self.entries.iter().take_while(|e| e.start_offset <= start_offset).count();
        if removed == 0 {
            return;
        }
        let kept_epoch = self.entries[removed - 1].epoch;
        self.entries.drain(..removed);
        self.entries.insert(0, EpochEntry { epoch: kept_epoch, start_offset });
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Kafka's `LeaderEpochFileCache.endOffsetFor`: the end offset of `requested_epoch` is the
    /// start offset of the first larger epoch, or `log_end_offset` for the latest epoch. An
    /// epoch older than every entry answers (requested epoch, first entry's start offset): that
    /// data is gone, and the follower must replicate from the leader's start. An epoch between
    /// two entries answers the entry below it. Undefined for [`UNDEFINED_EPOCH`] or an epoch
    /// above every entry.
    pub fn end_offset_for(&self, requested_epoch: i32, log_end_offset: i64) -> EpochEndOffset {
        if requested_epoch == UNDEFINED_EPOCH {
            return EpochEndOffset::UNDEFINED;
        }
        if self.latest_epoch() == Some(requested_epoch) {
            return EpochEndOffset { leader_epoch: requested_epoch, end_offset: log_end_offset };
        }
        let Some(higher) = self.entries.iter().find(|e| e.epoch > requested_epoch) else {
            return EpochEndOffset::UNDEFINED;
        };
        match self.entries.iter().rev().find(|e| e.epoch <= requested_epoch) {
            None => EpochEndOffset { leader_epoch: requested_epoch, end_offset: higher.start_offset },
            Some(floor) => EpochEndOffset { leader_epoch: floor.epoch, end_offset: higher.start_offset },
        }
    }
}
