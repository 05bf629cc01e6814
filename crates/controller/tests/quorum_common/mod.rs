//! Raft settings shared by the in-process and the TCP quorum tests, and the TCP tests' bounds.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::{Config, SnapshotPolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a TCP test waits for one thing to happen.
pub const WAIT: Duration = Duration::from_secs(20);
/// Every TCP test is bounded by this, whatever hangs.
pub const TEST_BOUND: Duration = Duration::from_secs(120);

pub async fn bounded<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(TEST_BOUND, test).await.expect("the test finished in time")
}

/// Sends `bytes` and expects the server to close the connection without answering.
pub async fn expect_closed(addr: SocketAddr, bytes: &[u8]) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(WAIT, stream.read(&mut buf)).await.expect("the server closed the connection");
    match read {
        Ok(0) => {}
        Ok(n) => panic!("the server answered {n} bytes to {bytes:?}"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}

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
