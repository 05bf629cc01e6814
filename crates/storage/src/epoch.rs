//! Leader epoch cache: which leader epoch started at which offset, persisted as Kafka's
//! `leader-epoch-checkpoint` (line 1 version `0`, line 2 entry count, then `epoch startOffset`).

use std::path::{Path, PathBuf};

use crate::{io_err, Result};

pub(crate) const FILE_NAME: &str = "leader-epoch-checkpoint";

#[derive(Debug)]
pub(crate) struct EpochCache {
    path: PathBuf,
    /// (epoch, start offset), both strictly increasing.
    entries: Vec<(i32, i64)>,
}

impl EpochCache {
    /// Loads the checkpoint in `dir`; a missing or malformed file yields an empty cache.
    pub fn load(dir: &Path) -> EpochCache {
        let path = dir.join(FILE_NAME);
        let entries = std::fs::read_to_string(&path).ok().and_then(|s| parse(&s)).unwrap_or_else(|| {
            if path.exists() {
                tracing::warn!(path = %path.display(), "ignoring malformed leader epoch checkpoint");
            }
            Vec::new()
        });
        EpochCache { path, entries }
    }

    /// An empty cache that was never loaded (for a log that is offline).
    pub fn empty(dir: &Path) -> EpochCache {
        EpochCache { path: dir.join(FILE_NAME), entries: Vec::new() }
    }

    pub fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.0)
    }

    /// Records that `epoch` starts at `start_offset` if it is newer than the latest epoch.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> Result<()> {
        if epoch < 0 || self.latest_epoch().is_some_and(|l| epoch <= l) {
            return Ok(());
        }
        // An older epoch cannot start at or after a newer one.
        self.entries.retain(|e| e.1 < start_offset);
        self.entries.push((epoch, start_offset));
        self.save()
    }

    /// Kafka's OffsetForLeaderEpoch: the largest epoch <= `epoch` and the start offset of the
    /// next higher epoch, or `log_end_offset` if `epoch` is the latest. `None` if unknown.
    pub fn end_offset_for(&self, epoch: i32, log_end_offset: i64) -> Option<(i32, i64)> {
        if epoch < 0 {
            return None;
        }
        if self.latest_epoch() == Some(epoch) {
            return Some((epoch, log_end_offset));
        }
        let higher = self.entries.partition_point(|e| e.0 <= epoch);
        let &(_, higher_start) = self.entries.get(higher)?;
        match higher.checked_sub(1) {
            Some(floor) => Some((self.entries[floor].0, higher_start)),
            // Older than anything cached: the first known epoch's start bounds it.
            None => Some((epoch, higher_start)),
        }
    }

    /// Removes epochs starting at or after `end_offset` (log truncation).
    pub fn truncate_from_end(&mut self, end_offset: i64) -> Result<()> {
        let before = self.entries.len();
        self.entries.retain(|e| e.1 < end_offset);
        if self.entries.len() != before {
            self.save()?;
        }
        Ok(())
    }

    /// Drops epochs wholly below `start_offset`; the epoch covering it now starts there.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> Result<()> {
        let covering = self.entries.partition_point(|e| e.1 <= start_offset);
        if covering == 0 {
            return Ok(());
        }
        let changed = covering > 1 || self.entries[0].1 != start_offset;
        self.entries.drain(..covering - 1);
        self.entries[0].1 = start_offset;
        if changed {
            self.save()?;
        }
        Ok(())
    }

    pub fn clear(&mut self) -> Result<()> {
        self.entries.clear();
        self.save()
    }

    fn save(&self) -> Result<()> {
        let mut s = format!("0\n{}\n", self.entries.len());
        for (e, o) in &self.entries {
            s.push_str(&format!("{e} {o}\n"));
        }
        crate::log::write_atomically(&self.path, s.as_bytes()).map_err(|e| io_err(&self.path, e))
    }
}

fn parse(s: &str) -> Option<Vec<(i32, i64)>> {
    let mut lines = s.lines();
    if lines.next()?.trim() != "0" {
        return None;
    }
    let count: usize = lines.next()?.trim().parse().ok()?;
    let mut entries = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let mut parts = lines.next()?.split_whitespace();
        let epoch: i32 = parts.next()?.parse().ok()?;
        let offset: i64 = parts.next()?.parse().ok()?;
        if entries.last().is_some_and(|&(le, lo)| epoch <= le || offset < lo) {
            return None;
        }
        entries.push((epoch, offset));
    }
    Some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_semantics() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = EpochCache::load(dir.path());
        assert_eq!(c.end_offset_for(0, 10), None);
        c.assign(1, 0).unwrap();
        c.assign(3, 100).unwrap();
        c.assign(2, 150).unwrap(); // older than latest: ignored
        c.assign(5, 200).unwrap();
        assert_eq!(c.end_offset_for(5, 250), Some((5, 250)));
        assert_eq!(c.end_offset_for(4, 250), Some((3, 200)));
        assert_eq!(c.end_offset_for(3, 250), Some((3, 200)));
        assert_eq!(c.end_offset_for(2, 250), Some((1, 100)));
        assert_eq!(c.end_offset_for(0, 250), Some((0, 0)));
        assert_eq!(c.end_offset_for(6, 250), None);
        assert_eq!(c.end_offset_for(-1, 250), None);

        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(text, "0\n3\n1 0\n3 100\n5 200\n");
        assert_eq!(EpochCache::load(dir.path()).entries(), c.entries());

        c.truncate_from_start(150).unwrap();
        assert_eq!(c.entries(), &[(3, 150), (5, 200)]);
        c.truncate_from_end(200).unwrap();
        assert_eq!(c.entries(), &[(3, 150)]);
        assert_eq!(EpochCache::load(dir.path()).entries(), &[(3, 150)]);
    }

    #[test]
    fn malformed_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "0\n5\n1 2\n").unwrap();
        assert!(EpochCache::load(dir.path()).entries().is_empty());
    }
}
