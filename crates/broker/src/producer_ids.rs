//! Producer ids for idempotent producers (InitProducerId). Ids are never handed out twice, also
//! across restarts: the broker reserves them in blocks, writing the end of the reserved block to
//! `<data-dir>/producer-id-block` before handing out any id from it (Kafka's controller
//! allocates ids in blocks of 1000 the same way). Should that file be lost or damaged, ids still
//! continue above every producer id found in the logs (the floor given to `load`), so a new
//! producer is never taken for an old one whose batches are in the log.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::datadir::write_atomically;

const BLOCK: i64 = 1000;

pub struct ProducerIdAllocator {
    path: PathBuf,
    /// (next id to hand out, end of the reserved block)
    state: Mutex<(i64, i64)>,
}

impl ProducerIdAllocator {
    /// `floor`: one more than the largest producer id in the logs.
    pub fn load(data_dir: &Path, floor: i64) -> ProducerIdAllocator {
        let path = data_dir.join("producer-id-block");
        let recorded = match std::fs::read(&path) {
            Ok(bytes) => {
                let parsed = std::str::from_utf8(&bytes).ok().and_then(|s| s.trim().parse::<i64>().ok());
                if parsed.is_none_or(|n| n < 0) {
                    tracing::warn!(file = %path.display(), floor,
                        "not a producer id block: ignored; producer ids continue above those in the logs");
                }
                parsed.filter(|&n| n >= 0)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if floor > 0 {
                    tracing::warn!(file = %path.display(), floor,
                        "producer id block missing; producer ids continue above those in the logs");
                }
                None
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, floor,
                    "cannot read the producer id block; producer ids continue above those in the logs");
                None
            }
        };
        // Whatever was reserved before a restart may have been handed out: start after it.
        let reserved_end = recorded.unwrap_or(0).max(floor);
        ProducerIdAllocator { path, state: Mutex::new((reserved_end, reserved_end)) }
    }

    /// Ids below this may have been handed out (by this process or before a restart); none at
    /// or above it ever were.
    pub fn issued_below(&self) -> i64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    /// The next producer id. Blocking: it may write the block file (with fsync).
    pub fn next(&self) -> std::io::Result<i64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (next, end) = *state;
        if next >= end {
            write_atomically(&self.path, format!("{}\n", next + BLOCK).as_bytes())?;
            state.1 = next + BLOCK;
        }
        state.0 = next + 1;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let a = ProducerIdAllocator::load(dir.path(), 0);
        assert_eq!((a.next().unwrap(), a.next().unwrap()), (0, 1));
        let b = ProducerIdAllocator::load(dir.path(), 0);
        assert_eq!(b.next().unwrap(), BLOCK, "a restart skips the rest of the reserved block");
        let ids: Vec<i64> = (0..2 * BLOCK).map(|_| b.next().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[1] == w[0] + 1));
    }

    #[test]
    fn a_lost_or_garbage_block_file_continues_above_the_logs() {
        let dir = tempfile::tempdir().unwrap();
        let a = ProducerIdAllocator::load(dir.path(), 0);
        a.next().unwrap();
        std::fs::write(dir.path().join("producer-id-block"), b"\xffgarbage").unwrap();
        assert_eq!(ProducerIdAllocator::load(dir.path(), 7).next().unwrap(), 7);
        std::fs::remove_file(dir.path().join("producer-id-block")).unwrap();
        assert_eq!(ProducerIdAllocator::load(dir.path(), 42).next().unwrap(), 42);
        // A block file ahead of the logs wins.
        assert_eq!(ProducerIdAllocator::load(dir.path(), 0).next().unwrap(), 42 + BLOCK);
    }
}
