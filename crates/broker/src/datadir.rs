//! The data directory's own rules: the lock that keeps a second process out, Kafka's partition
//! marker (`partition.metadata`), the names of partition and delete directories, and creates,
//! renames and removals that survive a crash.
//!
//! Invariants (see ARCHITECTURE.md): the broker only ever removes a directory that carries its
//! marker (or is empty), and only for an explicit deletion or the rollback of an operation that
//! created it; every create and rename is followed by an fsync of the directory holding it.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use uuid::Uuid;

/// Held (flock) for the lifetime of the process that owns the data directory; holds its pid.
pub const LOCK_FILE: &str = ".lock";
/// Kafka's marker of a partition directory: the topic id the partition belongs to.
pub const PARTITION_METADATA: &str = "partition.metadata";
/// Kafka's suffix of a partition directory renamed for deletion.
const DELETE_SUFFIX: &str = "-delete";
/// The longest file name most filesystems accept.
const MAX_FILE_NAME: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("data directory {dir} is in use by another process{holder} (lock file {lock})")]
    Locked { dir: PathBuf, lock: PathBuf, holder: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io { path: path.to_path_buf(), source }
}

/// The exclusive lock of a data directory: the broker and the offline tools (`tern log`) take
/// it, so two processes never write the same logs. Released when dropped (or the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Creates `dir` if needed and locks it, or says which process holds it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, DataDirError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = match text.trim().parse::<u32>() {
                    Ok(pid) => format!(" (pid {pid})"),
                    Err(_) => String::new(),
                };
                return Err(DataDirError::Locked { dir: dir.to_path_buf(), lock: path, holder });
            }
            Err(TryLockError::Error(e)) => return Err(DataDirError::Io { path, source: e }),
        }
        file.set_len(0).map_err(io_error(&path))?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes()).map_err(io_error(&path))?;
        file.sync_data().map_err(io_error(&path))?;
        Ok(DataDirLock { _file: file })
    }
}

/// fsyncs a directory, so the entries created, renamed or removed in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `path` so that a crash leaves either the old or the new content: a temporary file,
/// fsync, rename, fsync of the directory.
pub fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

// -- topic ids in Kafka's text form -----------------------------------------------------------

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Kafka's text form of a `Uuid` (topic ids, cluster ids): URL-safe base64 of the 16 bytes,
/// without padding (22 characters).
pub fn kafka_uuid_string(id: Uuid) -> String {
    let mut out = String::with_capacity(22);
    for chunk in id.as_bytes().chunks(3) {
        let n = chunk.iter().fold(0u32, |acc, b| acc << 8 | *b as u32) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(BASE64URL[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Parses Kafka's text form of a `Uuid`; `None` unless it is exactly 22 base64url characters.
pub fn parse_kafka_uuid(text: &str) -> Option<Uuid> {
    if text.len() != 22 {
        return None;
    }
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut bytes = Vec::with_capacity(17);
    for c in text.bytes() {
        let v = BASE64URL.iter().position(|&a| a == c)? as u32;
        bits = bits << 6 | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            bytes.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    // 22 characters carry 132 bits: the last 4 must be zero in a canonical encoding.
    if bits != 0 {
        return None;
    }
    Uuid::from_slice(&bytes).ok()
}

// -- the partition marker ---------------------------------------------------------------------

/// Writes `<dir>/partition.metadata` in Kafka's format (`PartitionMetadataFile`), durably.
pub fn write_partition_metadata(dir: &Path, topic_id: Uuid) -> io::Result<()> {
    let text = format!("version: 0\ntopic_id: {}", kafka_uuid_string(topic_id));
    write_atomically(&dir.join(PARTITION_METADATA), text.as_bytes())
}

/// What a directory's marker says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marker {
    /// `partition.metadata` with this topic id.
    Topic(Uuid),
    /// No `partition.metadata`: not created by this broker, or by a version before the marker.
    Absent,
    /// A `partition.metadata` that cannot be read; the message names the file.
    Unreadable(String),
}

/// Reads `<dir>/partition.metadata` the way Kafka's `PartitionMetadataReadBuffer` does.
pub fn read_partition_metadata(dir: &Path) -> Marker {
    let path = dir.join(PARTITION_METADATA);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Marker::Absent,
        Err(e) => return Marker::Unreadable(format!("cannot read {}: {e}", path.display())),
    };
    let bad = |why: &str| Marker::Unreadable(format!("{} is not a partition metadata file: {why}", path.display()));
    let Ok(text) = String::from_utf8(bytes) else { return bad("not UTF-8 text") };
    let mut lines = text.lines();
    let field = |line: Option<&str>, name: &str| {
        line.and_then(|l| l.split_once(':')).filter(|(k, _)| k.trim() == name).map(|(_, v)| v.trim().to_string())
    };
    match field(lines.next(), "version").map(|v| v.parse::<i32>()) {
        Some(Ok(v)) if v >= 0 => {}
        _ => return bad("no `version: 0` line"),
    }
    match field(lines.next(), "topic_id").as_deref().map(parse_kafka_uuid) {
        Some(Some(id)) if !id.is_nil() => Marker::Topic(id),
        _ => bad("no valid `topic_id` line"),
    }
}

// -- names --------------------------------------------------------------------------------------

/// `<topic>-<partition>`, Kafka's partition directory name.
pub fn partition_dir_name(topic: &str, partition: i32) -> String {
    format!("{topic}-{partition}")
}

/// The topic and partition a directory name stands for, if it is `<legal topic>-<partition>`.
pub fn parse_partition_dir_name(name: &str) -> Option<(&str, i32)> {
    let (topic, index) = name.rsplit_once('-')?;
    let partition: i32 = index.parse().ok()?;
    let canonical = partition >= 0 && partition.to_string() == index;
    (canonical && crate::topics::validate_topic_name(topic).is_ok()).then_some((topic, partition))
}

/// Kafka's name for a partition directory being deleted (`LocalLog.logDeleteDirName`):
/// `<topic>-<partition>.<unique id>-delete`, the topic cut short so the name fits 255 bytes.
pub fn delete_dir_name(topic: &str, partition: i32) -> String {
    let suffix = format!("-{partition}.{}{DELETE_SUFFIX}", Uuid::new_v4().simple());
    let keep = topic.len().min(MAX_FILE_NAME - suffix.len());
    format!("{}{suffix}", &topic[..keep])
}

/// Whether `name` is a delete-directory name as [`delete_dir_name`] makes them.
pub fn is_delete_dir_name(name: &str) -> bool {
    let Some(rest) = name.strip_suffix(DELETE_SUFFIX) else { return false };
    let Some((dir, unique)) = rest.rsplit_once('.') else { return false };
    let unique_ok = unique.len() == 32 && unique.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let partition_ok = dir.rsplit_once('-').is_some_and(|(t, p)| !t.is_empty() && p.parse::<u32>().is_ok());
    unique_ok && partition_ok
}

// -- creating and removing partition directories -------------------------------------------------

/// Creates a new partition directory with its marker. Fails if the directory exists: a new
/// partition never opens files it did not create. The caller fsyncs the data directory. On
/// error, also says whether the directory was created (and so is the caller's to remove).
pub fn create_partition_dir(dir: &Path, topic_id: Uuid) -> Result<(), (DataDirError, bool)> {
    fs::create_dir(dir).map_err(|e| {
        let source = if e.kind() == io::ErrorKind::AlreadyExists {
            io::Error::new(e.kind(), "a directory of that name exists already (left as it is)")
        } else {
            e
        };
        (DataDirError::Io { path: dir.to_path_buf(), source }, false)
    })?;
    write_partition_metadata(dir, topic_id).map_err(|e| (io_error(&dir.join(PARTITION_METADATA))(e), true))
}

/// Whether the broker may remove `dir`: it carries the broker's marker, or it is empty.
pub fn removable(dir: &Path) -> bool {
    matches!(read_partition_metadata(dir), Marker::Topic(_))
        || fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none())
}

/// Removes a partition directory the broker created: everything but the marker first, the
/// marker last, so a crash halfway leaves a directory that still carries it (or is empty).
pub fn remove_partition_dir(dir: &Path) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        entries => entries?,
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_name() == PARTITION_METADATA {
            continue;
        }
        if entry.file_type()?.is_dir() {
            fs::remove_dir_all(entry.path())?;
        } else {
            fs::remove_file(entry.path())?;
        }
    }
    match fs::remove_file(dir.join(PARTITION_METADATA)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    fs::remove_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_uuid_text_round_trips_and_matches_kafka() {
        // Kafka: Uuid(0x0123456789abcdef, 0x0fedcba987654321).toString()
        let id = Uuid::from_u128(0x0123456789abcdef_0fedcba987654321);
        assert_eq!(kafka_uuid_string(id), "ASNFZ4mrze8P7cuph2VDIQ");
        for _ in 0..100 {
            let id = Uuid::new_v4();
            assert_eq!(parse_kafka_uuid(&kafka_uuid_string(id)), Some(id));
        }
        assert_eq!(parse_kafka_uuid("ASNFZ4mrze8P7cuph2VDIR"), None, "non-zero trailing bits");
        assert_eq!(parse_kafka_uuid("ASNFZ4mrze8P7cuph2VDI"), None);
        assert_eq!(parse_kafka_uuid("ASNFZ4mrze8P7cuph2VDI="), None);
    }

    #[test]
    fn marker_is_kafkas_format() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_partition_metadata(dir.path()), Marker::Absent);
        let id = Uuid::new_v4();
        write_partition_metadata(dir.path(), id).unwrap();
        let text = fs::read_to_string(dir.path().join(PARTITION_METADATA)).unwrap();
        assert_eq!(text, format!("version: 0\ntopic_id: {}", kafka_uuid_string(id)));
        assert_eq!(read_partition_metadata(dir.path()), Marker::Topic(id));
        fs::write(dir.path().join(PARTITION_METADATA), b"\xff\xfe").unwrap();
        assert!(matches!(read_partition_metadata(dir.path()), Marker::Unreadable(m) if m.contains(PARTITION_METADATA)));
    }

    #[test]
    fn delete_names_fit_and_are_recognised() {
        let long = "t".repeat(249);
        let name = delete_dir_name(&long, 12345);
        assert_eq!(name.len(), 255);
        assert!(is_delete_dir_name(&name));
        assert!(is_delete_dir_name(&delete_dir_name("a.b-c", 0)));
        assert!(!is_delete_dir_name("old-0.xyz-delete"));
        assert!(!is_delete_dir_name("photos"));
        assert_eq!(parse_partition_dir_name("a-b-12"), Some(("a-b", 12)));
        assert_eq!(parse_partition_dir_name("a-012"), None);
        assert_eq!(parse_partition_dir_name("photos"), None);
    }

    #[test]
    fn second_lock_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let held = DataDirLock::acquire(dir.path()).unwrap();
        let err = DataDirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&format!("pid {}", std::process::id())) && err.contains(LOCK_FILE), "{err}");
        drop(held);
        DataDirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn removal_keeps_the_marker_to_the_end_and_spares_foreign_directories() {
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("t-0");
        create_partition_dir(&ours, Uuid::new_v4()).unwrap();
        fs::write(ours.join("00000000000000000000.log"), b"x").unwrap();
        assert!(removable(&ours));
        remove_partition_dir(&ours).unwrap();
        assert!(!ours.exists());
        let foreign = dir.path().join("photos");
        fs::create_dir(&foreign).unwrap();
        fs::write(foreign.join("cat.jpg"), b"x").unwrap();
        assert!(!removable(&foreign));
        assert!(matches!(create_partition_dir(&foreign, Uuid::new_v4()), Err((_, false))));
        assert!(foreign.join("cat.jpg").exists());
    }
}
