//! Sparse offset and time indexes, kept in memory and persisted in Kafka's file formats:
//! `.index` entries are (relative offset u32 BE, position u32 BE), `.timeindex` entries are
//! (timestamp i64 BE, relative offset u32 BE). Files are written incrementally (only entries
//! not yet on disk) and trimmed to their exact size, like Kafka's indexes after a roll.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

pub(crate) const OFFSET_ENTRY: usize = 8;
pub(crate) const TIME_ENTRY: usize = 12;

/// Persistence bookkeeping shared by both index kinds.
#[derive(Debug, Default)]
struct Persisted {
    /// Entries already written to the file.
    entries: usize,
    /// Whether the file may hold entries beyond `entries` (after a truncation) or unsynced data.
    dirty: bool,
}

impl Persisted {
    /// Writes the entries not yet on disk (each `entry_size` bytes, encoded by `encode`) and trims
    /// the file to `entries.len()` entries; fsyncs if `sync`.
    fn persist<T: Copy>(
        &mut self,
        entries: &[T],
        entry_size: usize,
        encode: impl Fn(T, &mut Vec<u8>),
        path: &Path,
        sync: bool,
    ) -> io::Result<()> {
        if self.entries == entries.len() && !self.dirty {
            return Ok(());
        }
        let from = self.entries;
        let mut buf = Vec::with_capacity((entries.len() - from) * entry_size);
        for &e in &entries[from..] {
            encode(e, &mut buf);
        }
        let f = OpenOptions::new().write(true).create(true).truncate(false).open(path)?;
        f.write_all_at(&buf, (from * entry_size) as u64)?;
        f.set_len((entries.len() * entry_size) as u64)?;
        if sync {
            f.sync_data()?;
        }
        self.entries = entries.len();
        self.dirty = !sync;
        Ok(())
    }
}

fn read_file(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

/// Maps relative offsets to file positions; entries strictly increase in both.
#[derive(Debug, Default)]
pub(crate) struct OffsetIndex {
    entries: Vec<(u32, u32)>,
    persisted: Persisted,
}

impl OffsetIndex {
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn last(&self) -> Option<(u32, u32)> {
        self.entries.last().copied()
    }
    pub fn push(&mut self, rel_offset: u32, position: u32) {
        if self.entries.last().is_none_or(|&(o, p)| rel_offset > o && position > p) {
            self.entries.push((rel_offset, position));
        }
    }
    /// The entry with the largest relative offset <= `rel_offset`.
    pub fn lookup(&self, rel_offset: u32) -> Option<(u32, u32)> {
        let i = self.entries.partition_point(|&(o, _)| o <= rel_offset);
        i.checked_sub(1).map(|i| self.entries[i])
    }
    /// Drops entries pointing at or beyond `position`.
    pub fn truncate_to_position(&mut self, position: u32) {
        let keep = self.entries.partition_point(|&(_, p)| p < position);
        self.truncate(keep);
    }
    fn truncate(&mut self, keep: usize) {
        if keep < self.entries.len() {
            self.entries.truncate(keep);
            self.persisted.entries = self.persisted.entries.min(keep);
            self.persisted.dirty = true;
        }
    }
    pub fn clear(&mut self) {
        self.truncate(0);
        self.persisted.dirty = true;
    }
    /// Loads and sanity-checks an index file; `None` if missing or inconsistent with a log of
    /// `log_size` bytes.
    pub fn load(path: &Path, log_size: u64) -> Option<OffsetIndex> {
        let bytes = read_file(path)?;
        if bytes.len() % OFFSET_ENTRY != 0 {
            return None;
        }
        let mut idx = OffsetIndex::default();
        for e in bytes.chunks_exact(OFFSET_ENTRY) {
            let o = u32::from_be_bytes(e[..4].try_into().unwrap());
            let p = u32::from_be_bytes(e[4..].try_into().unwrap());
            // Kafka writes a zeroed entry for preallocated-but-unused slots; a valid index
            // never has entry (0, 0) after the first and positions are strictly increasing.
            if p as u64 >= log_size || idx.entries.last().is_some_and(|&(lo, lp)| o <= lo || p <= lp) {
                return None;
            }
            idx.entries.push((o, p));
        }
        idx.persisted.entries = idx.entries.len();
        Some(idx)
    }
    /// Writes entries not yet on disk and trims the file; fsyncs if `sync`.
    pub fn persist(&mut self, path: &Path, sync: bool) -> io::Result<()> {
        let encode = |(o, p): (u32, u32), buf: &mut Vec<u8>| {
            buf.extend_from_slice(&o.to_be_bytes());
            buf.extend_from_slice(&p.to_be_bytes());
        };
        self.persisted.persist(&self.entries, OFFSET_ENTRY, encode, path, sync)
    }
}

/// Maps timestamps to relative offsets; timestamps strictly increase.
#[derive(Debug, Default)]
pub(crate) struct TimeIndex {
    entries: Vec<(i64, u32)>,
    persisted: Persisted,
}

impl TimeIndex {
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn last(&self) -> Option<(i64, u32)> {
        self.entries.last().copied()
    }
    /// Appends unless the timestamp does not exceed the last entry's (Kafka's `maybeAppend`).
    pub fn maybe_push(&mut self, timestamp: i64, rel_offset: u32) {
        if self.entries.last().is_none_or(|&(t, o)| timestamp > t && rel_offset >= o) {
            self.entries.push((timestamp, rel_offset));
        }
    }
    /// The entry with the largest timestamp strictly below `timestamp`: every record up to its
    /// offset is older than `timestamp`.
    pub fn lookup_before(&self, timestamp: i64) -> Option<(i64, u32)> {
        let i = self.entries.partition_point(|&(t, _)| t < timestamp);
        i.checked_sub(1).map(|i| self.entries[i])
    }
    /// Drops entries whose relative offset is >= `rel_offset`.
    pub fn truncate_to_offset(&mut self, rel_offset: u32) {
        let keep = self.entries.partition_point(|&(_, o)| o < rel_offset);
        if keep < self.entries.len() {
            self.entries.truncate(keep);
            self.persisted.entries = self.persisted.entries.min(keep);
            self.persisted.dirty = true;
        }
    }
    pub fn clear(&mut self) {
        self.truncate_to_offset(0);
        self.persisted.dirty = true;
    }
    /// Loads and sanity-checks a time index; `None` if missing or inconsistent with a segment
    /// whose largest relative offset is `max_rel_offset`.
    pub fn load(path: &Path, max_rel_offset: u32) -> Option<TimeIndex> {
        let bytes = read_file(path)?;
        if bytes.len() % TIME_ENTRY != 0 {
            return None;
        }
        let mut idx = TimeIndex::default();
        for e in bytes.chunks_exact(TIME_ENTRY) {
            let t = i64::from_be_bytes(e[..8].try_into().unwrap());
            let o = u32::from_be_bytes(e[8..].try_into().unwrap());
            if o > max_rel_offset || idx.entries.last().is_some_and(|&(lt, lo)| t <= lt || o < lo) {
                return None;
            }
            idx.entries.push((t, o));
        }
        idx.persisted.entries = idx.entries.len();
        Some(idx)
    }
    pub fn persist(&mut self, path: &Path, sync: bool) -> io::Result<()> {
        let encode = |(t, o): (i64, u32), buf: &mut Vec<u8>| {
            buf.extend_from_slice(&t.to_be_bytes());
            buf.extend_from_slice(&o.to_be_bytes());
        };
        self.persisted.persist(&self.entries, TIME_ENTRY, encode, path, sync)
    }
}

/// Creates an empty file (used for a new segment's index files so Kafka tooling finds them).
pub(crate) fn create_empty(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create(true).truncate(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_lookup_and_truncate() {
        let mut idx = OffsetIndex::default();
        idx.push(10, 100);
        idx.push(20, 200);
        idx.push(20, 300); // not increasing: ignored
        assert_eq!(idx.lookup(5), None);
        assert_eq!(idx.lookup(10), Some((10, 100)));
        assert_eq!(idx.lookup(25), Some((20, 200)));
        idx.truncate_to_position(200);
        assert_eq!(idx.len(), 1);
    }

    #[test]
    fn time_lookup_is_strict() {
        let mut idx = TimeIndex::default();
        idx.maybe_push(100, 1);
        idx.maybe_push(100, 2);
        idx.maybe_push(200, 5);
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.lookup_before(100), None);
        assert_eq!(idx.lookup_before(101), Some((100, 1)));
        assert_eq!(idx.lookup_before(1000), Some((200, 5)));
    }

    #[test]
    fn persist_roundtrip_and_reject_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.index");
        let mut idx = OffsetIndex::default();
        idx.push(1, 10);
        idx.persist(&p, true).unwrap();
        idx.push(3, 40);
        idx.persist(&p, false).unwrap();
        let loaded = OffsetIndex::load(&p, 100).unwrap();
        assert_eq!(loaded.entries, vec![(1, 10), (3, 40)]);
        assert!(OffsetIndex::load(&p, 20).is_none());
        std::fs::write(&p, [1, 2, 3]).unwrap();
        assert!(OffsetIndex::load(&p, 100).is_none());
    }
}
