//! Raft settings shared by the in-process and the TCP quorum tests.

use std::sync::Arc;

use openraft::{Config, SnapshotPolicy};

/// Fast elections, a snapshot every `snapshot_every` entries with nothing kept behind it, and
/// optionally small snapshot chunks (so that a snapshot takes several InstallSnapshot requests).
pub fn raft_config(snapshot_every: u64, snapshot_max_chunk_size: Option<u64>) -> Arc<Config> {
    let mut config = Config {
        heartbeat_interval: 50,
        election_timeout_min: 300,
        election_timeout_max: 600,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(snapshot_every),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..Default::default()
    };
    if let Some(chunk) = snapshot_max_chunk_size {
        config.snapshot_max_chunk_size = chunk;
    }
    Arc::new(config.validate().unwrap())
}
