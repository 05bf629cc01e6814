//! `tern log check|truncate`: tools for the partition logs of a stopped broker. Both take the
//! data directory's lock, so they never run beside a broker on the same directory. `check`
//! only reads; `truncate` is the explicit, logged way to drop a damaged partition's tail.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;
use tern_broker::datadir::{self, DataDirLock, Marker};
use tern_storage::{Log, LogConfig, OnDamage};

/// Record batch framing: base offset (8) + length (4); the length covers the rest.
const LOG_OVERHEAD: u64 = 12;
/// The smallest v2 batch after the framing: the header without records.
const MIN_BATCH_REST: i32 = 49;

#[derive(clap::Subcommand, Debug)]
pub enum LogCommand {
    /// Report damaged partition logs (framing, CRC, records, offsets) without changing anything.
    Check(CheckArgs),
    /// Remove every record at or after an offset from one partition, e.g. a damaged tail that
    /// keeps the partition offline. Prints what was dropped.
    Truncate(TruncateArgs),
}

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// The broker's data directory (the broker must be stopped).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Only this topic.
    #[arg(long)]
    pub topic: Option<String>,
    /// Only this partition (with --topic).
    #[arg(long, requires = "topic")]
    pub partition: Option<i32>,
}

#[derive(clap::Args, Debug)]
pub struct TruncateArgs {
    /// The broker's data directory (the broker must be stopped).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    #[arg(long)]
    pub topic: String,
    #[arg(long)]
    pub partition: i32,
    /// The first offset to drop: the partition ends just before it afterwards.
    #[arg(long, value_name = "OFFSET")]
    pub to_offset: i64,
}

pub fn run(command: LogCommand) -> Result<()> {
    match command {
        LogCommand::Check(args) => check(args),
        LogCommand::Truncate(args) => truncate(args),
    }
}

fn lock(data_dir: &Path) -> Result<DataDirLock> {
    if !data_dir.is_dir() {
        bail!("{} is not a directory", data_dir.display());
    }
    Ok(DataDirLock::acquire(data_dir)?)
}

/// Where a partition log is damaged.
struct Damage {
    /// Truncating here drops the damaged batch and everything after it.
    offset: i64,
    file: PathBuf,
    position: u64,
    problem: String,
}

/// What a read-only pass over one partition found.
#[derive(Default)]
struct Report {
    segments: usize,
    batches: u64,
    bytes: u64,
    first_offset: Option<i64>,
    next_offset: Option<i64>,
    damage: Option<Damage>,
    /// An incomplete last batch at the very end: a crash during an append, which recovery at
    /// start-up removes by itself.
    torn_tail: Option<(PathBuf, u64)>,
}

fn check(args: CheckArgs) -> Result<()> {
    let _lock = lock(&args.data_dir)?;
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(&args.data_dir).with_context(|| format!("reading {}", args.data_dir.display()))? {
        let entry = entry.with_context(|| format!("reading {}", args.data_dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((topic, partition)) = datadir::parse_partition_dir_name(&name) else { continue };
        let wanted = args.topic.as_deref().is_none_or(|t| t == topic) && args.partition.is_none_or(|p| p == partition);
        if wanted && entry.path().is_dir() {
            dirs.push((topic.to_string(), partition, entry.path()));
        }
    }
    dirs.sort();
    let mut damaged = 0;
    for (_, _, dir) in &dirs {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let marker = match datadir::read_partition_metadata(dir) {
            Marker::Topic(_) => String::new(),
            Marker::Absent => " (no partition.metadata)".to_string(),
            Marker::Unreadable(m) => format!(" ({m})"),
        };
        let report = check_partition(dir)?;
        let range = match (report.first_offset, report.next_offset) {
            (Some(a), Some(b)) => format!("offsets {a}..{b}"),
            _ => "no records".to_string(),
        };
        match &report.damage {
            Some(d) => {
                damaged += 1;
                println!(
                    "{name}: damaged at offset {} ({} position {}): {}{marker}",
                    d.offset,
                    d.file.display(),
                    d.position,
                    d.problem
                );
            }
            None => println!(
                "{name}: ok, {} segments, {} batches, {range}, {} bytes{marker}",
                report.segments, report.batches, report.bytes
            ),
        }
        if let Some((file, position)) = &report.torn_tail {
            println!(
                "{name}: incomplete batch at the end of {} (position {position}): a crash during an append; \
                 the broker's recovery removes it at start-up",
                file.display()
            );
        }
    }
    println!("checked {} partitions: {damaged} damaged", dirs.len());
    if damaged > 0 {
        bail!("{damaged} damaged partitions (`tern log truncate --to-offset <offset>` drops a damaged tail)");
    }
    Ok(())
}

/// Reads every batch of every segment of a partition: framing, magic, CRC and records (via
/// kafka-protocol's decoder), offsets increasing. Changes nothing.
fn check_partition(dir: &Path) -> Result<Report> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = entry.with_context(|| format!("reading {}", dir.display()))?.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".log") {
            if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
                bases.push(stem.parse::<i64>()?);
            }
        }
    }
    bases.sort_unstable();
    let mut report = Report { segments: bases.len(), ..Report::default() };
    for (i, &base) in bases.iter().enumerate() {
        let path = dir.join(format!("{base:020}.log"));
        let last_segment = i + 1 == bases.len();
        let damage = |report: &Report, position: u64, problem: String| Damage {
            offset: report.next_offset.unwrap_or(base),
            file: path.clone(),
            position,
            problem,
        };
        if report.next_offset.is_some_and(|next| base < next) {
            report.damage =
                Some(damage(&report, 0, format!("segment starts at offset {base}, below the end of the one before")));
            return Ok(report);
        }
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()));
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                report.damage = Some(damage(&report, 0, format!("{e:#}")));
                return Ok(report);
            }
        };
        let len = file.metadata().with_context(|| format!("reading {}", path.display()))?.len();
        report.bytes += len;
        let mut pos = 0u64;
        while pos < len {
            let incomplete = |report: &mut Report, problem: String| {
                if last_segment {
                    report.torn_tail = Some((path.clone(), pos));
                    None
                } else {
                    Some(damage(report, pos, problem))
                }
            };
            if len - pos < LOG_OVERHEAD {
                report.damage = incomplete(&mut report, "incomplete batch header".into());
                return Ok(report);
            }
            let mut head = [0u8; LOG_OVERHEAD as usize];
            file.read_exact_at(&mut head, pos).with_context(|| format!("reading {}", path.display()))?;
            let base_offset = i64::from_be_bytes(head[0..8].try_into()?);
            let rest = i32::from_be_bytes(head[8..12].try_into()?);
            if rest < MIN_BATCH_REST {
                report.damage = Some(damage(&report, pos, format!("batch length {rest} is too small")));
                return Ok(report);
            }
            if pos + LOG_OVERHEAD + rest as u64 > len {
                let problem = format!("batch of {rest} bytes runs past the end of the file");
                report.damage = incomplete(&mut report, problem);
                return Ok(report);
            }
            let mut batch = vec![0u8; LOG_OVERHEAD as usize + rest as usize];
            file.read_exact_at(&mut batch, pos).with_context(|| format!("reading {}", path.display()))?;
            if batch[16] != 2 {
                report.damage = Some(damage(&report, pos, format!("record format (magic) {} is not 2", batch[16])));
                return Ok(report);
            }
            let last_offset_delta = i32::from_be_bytes(batch[23..27].try_into()?);
            if let Err(e) = RecordBatchDecoder::decode(&mut Bytes::from(batch)) {
                report.damage = Some(damage(&report, pos, format!("{e:#}")));
                return Ok(report);
            }
            if base_offset < base || report.next_offset.is_some_and(|next| base_offset < next) || last_offset_delta < 0
            {
                let problem = format!("batch offsets {base_offset}+{last_offset_delta} do not follow the log");
                report.damage = Some(damage(&report, pos, problem));
                return Ok(report);
            }
            report.first_offset.get_or_insert(base_offset);
            report.next_offset = Some(base_offset + last_offset_delta as i64 + 1);
            report.batches += 1;
            pos += LOG_OVERHEAD + rest as u64;
        }
    }
    Ok(report)
}

/// Total size of a partition's segment files.
fn segment_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        if entry.file_name().to_string_lossy().ends_with(".log") {
            total += entry.metadata().with_context(|| format!("reading {}", entry.path().display()))?.len();
        }
    }
    Ok(total)
}

fn truncate(args: TruncateArgs) -> Result<()> {
    let _lock = lock(&args.data_dir)?;
    let dir = args.data_dir.join(datadir::partition_dir_name(&args.topic, args.partition));
    match datadir::read_partition_metadata(&dir) {
        Marker::Topic(_) => {}
        Marker::Absent => bail!(
            "{} is not a partition directory of this broker (no {}); nothing changed",
            dir.display(),
            datadir::PARTITION_METADATA
        ),
        Marker::Unreadable(m) => bail!("{m}; nothing changed"),
    }
    if args.to_offset < 0 {
        bail!("--to-offset must not be negative");
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    // A log the broker refuses to open is cut at its damage here (each drop logged at ERROR),
    // then truncated further if asked.
    let on_disk = segment_bytes(&dir)?;
    let log = Log::open_with(&dir, LogConfig::default(), now, OnDamage::Truncate)
        .with_context(|| format!("opening {}", dir.display()))?;
    let (start, end, bytes, segments) =
        (log.log_start_offset(), log.log_end_offset(), log.size_bytes(), log.segment_base_offsets());
    if bytes < on_disk {
        println!(
            "{}: damaged: cut at its damage, dropping {} bytes (what they held is in the ERROR lines above); \
             the log now ends at offset {end}",
            dir.display(),
            on_disk - bytes
        );
    }
    if args.to_offset >= end {
        log.close()?;
        if bytes == on_disk {
            println!("{}: nothing dropped: the log ends at offset {end}", dir.display());
        }
        return Ok(());
    }
    log.truncate_to(args.to_offset).with_context(|| format!("truncating {}", dir.display()))?;
    let (new_end, new_bytes, new_segments) = (log.log_end_offset(), log.size_bytes(), log.segment_base_offsets());
    log.close().with_context(|| format!("closing {}", dir.display()))?;
    let removed: Vec<i64> = segments.iter().filter(|b| !new_segments.contains(b)).copied().collect();
    let dropped = format!(
        "{}: dropped offsets {new_end}..{end} ({} bytes; segments removed: {removed:?}); the log now holds offsets {}..{new_end}",
        dir.display(),
        bytes.saturating_sub(new_bytes),
        start.min(new_end),
    );
    tracing::warn!("{dropped}");
    println!("{dropped}");
    Ok(())
}
