//! Ingest/read throughput smoke check; run with
//! `cargo test -p tern-storage --release --test throughput -- --ignored --nocapture`.
mod common;

use std::time::Instant;

use bytes::Bytes;
use common::AppendCommitted;
use kafka_protocol::records::Compression;
use tern_storage::{Log, LogConfig};

fn batch_of(records: usize, value: usize) -> Vec<u8> {
    let recs: Vec<_> = (0..records).map(|i| common::record(i, 1, None, Some(Bytes::from(vec![b'x'; value])))).collect();
    common::encode(&recs, Compression::None)
}

#[test]
#[ignore]
fn ingest_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default(), 0).unwrap();
    // 16 batches of 100 x 100-byte records per append: a typical produce request.
    let mut req = Vec::new();
    for _ in 0..16 {
        req.extend(batch_of(100, 100));
    }
    let total: usize = 1 << 30;
    let start = Instant::now();
    let mut written = 0;
    while written < total {
        log.append_committed(&req, 0, 0).unwrap();
        written += req.len();
    }
    let secs = start.elapsed().as_secs_f64();
    println!("append: {:.0} MB/s ({} bytes per append)", written as f64 / secs / 1e6, req.len());
    let start = Instant::now();
    let mut next = 0;
    let mut read = 0;
    while next < log.log_end_offset() {
        let r = log.read(next, 1 << 20, i64::MAX, true).unwrap();
        read += r.records.len();
        let mut pos = 0;
        while pos + 61 <= r.records.len() {
            let len = i32::from_be_bytes(r.records[pos + 8..pos + 12].try_into().unwrap()) as usize + 12;
            let base = i64::from_be_bytes(r.records[pos..pos + 8].try_into().unwrap());
            let delta = i32::from_be_bytes(r.records[pos + 23..pos + 27].try_into().unwrap()) as i64;
            next = base + delta + 1;
            pos += len;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("read: {:.0} MB/s", read as f64 / secs / 1e6);
}
