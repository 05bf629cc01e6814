//! Producer ids for idempotent producers (InitProducerId). Ids are never handed out twice, also
//! across restarts: the broker reserves them in blocks, writing the end of the reserved block to
//! `<data-dir>/producer-id-block` before handing out any id from it (Kafka's controller
//! allocates ids in blocks of 1000 the same way).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::topics::write_atomically;

const BLOCK: i64 = 1000;

pub struct ProducerIdAllocator {
    path: PathBuf,
    /// (next id to hand out, end of the reserved block)
    state: Mutex<(i64, i64)>,
}

impl ProducerIdAllocator {
    pub fn load(data_dir: &Path) -> ProducerIdAllocator {
        let path = data_dir.join("producer-id-block");
        let reserved_end = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0i64);
        // Whatever was reserved before a restart may have been handed out: start after it.
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
        let a = ProducerIdAllocator::load(dir.path());
        assert_eq!((a.next().unwrap(), a.next().unwrap()), (0, 1));
        let b = ProducerIdAllocator::load(dir.path());
        assert_eq!(b.next().unwrap(), BLOCK, "a restart skips the rest of the reserved block");
        let ids: Vec<i64> = (0..2 * BLOCK).map(|_| b.next().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[1] == w[0] + 1));
    }
}
