//! `tern group list|describe|delete|reset-offsets|lag`: consumer-group administration with the
//! semantics and output columns of Kafka's `kafka-consumer-groups.sh`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use anyhow::{bail, Context, Result};
use tern_client::{Admin, GroupDescription, GroupLag, OffsetSpec, TopicPartition};

use super::ConnectArgs;

/// Consumer-group administration.
#[derive(clap::Subcommand, Debug)]
pub enum GroupCommand {
    /// List consumer groups, one per line (with --state: a GROUP STATE table).
    List(ListArgs),
    /// Show each group's coordinator, assignment strategy, state and members with their assignments.
    Describe(DescribeArgs),
    /// Delete groups without active members, with their committed offsets.
    Delete(DeleteArgs),
    /// Reset a group's committed offsets; prints the plan, and applies it with --execute.
    ResetOffsets(ResetArgs),
    /// Committed offset, log end offset and lag of every partition a group consumes.
    Lag(LagArgs),
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Show each group's state; with a value, only groups in these states
    /// (comma-separated: Stable, Empty, PreparingRebalance, CompletingRebalance, Dead).
    #[arg(long, value_name = "STATE", num_args = 0..=1, default_missing_value = "")]
    state: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct DescribeArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Groups to describe.
    #[arg(required = true, value_name = "GROUP")]
    groups: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Groups to delete.
    #[arg(required = true, value_name = "GROUP")]
    groups: Vec<String>,
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("scope").required(true).args(["topics", "all_topics"])))]
#[command(group(
    clap::ArgGroup::new("target")
        .required(true)
        .args(["to_earliest", "to_latest", "to_current", "to_offset", "to_datetime", "shift_by"])
))]
#[command(after_help = "The group must have no active members (state Empty, or not exist yet).\n\n\
Output: GROUP TOPIC PARTITION NEW-OFFSET, one line per partition.\n\n\
Examples:\n  tern group reset-offsets --group g --topic events --to-earliest --execute\n  \
tern group reset-offsets --group g --topic events:0,1 --shift-by -10\n  \
tern group reset-offsets --group g --all-topics --to-datetime 2026-01-01T00:00:00.000")]
pub struct ResetArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// The group whose offsets to reset.
    #[arg(short, long)]
    group: String,
    /// Topic to reset, all its partitions or the listed ones: TOPIC or TOPIC:P,P,... (repeatable).
    #[arg(short, long = "topic", value_name = "TOPIC[:P,...]")]
    topics: Vec<String>,
    /// Every topic the group has committed offsets for.
    #[arg(long)]
    all_topics: bool,
    /// To the earliest offset still in the log.
    #[arg(long)]
    to_earliest: bool,
    /// To the log end offset.
    #[arg(long)]
    to_latest: bool,
    /// To the committed offset (no change; useful to create offsets for a copy of a plan).
    #[arg(long)]
    to_current: bool,
    /// To this offset, moved into the partition's [earliest, latest] range.
    #[arg(long, value_name = "N")]
    to_offset: Option<i64>,
    /// To the first offset with a timestamp at or after this time: YYYY-MM-DDTHH:mm:SS[.sss],
    /// optionally followed by Z or ±HH:MM (local time otherwise).
    #[arg(long, value_name = "DATETIME")]
    to_datetime: Option<String>,
    /// Move the committed offset by N (negative: back), kept within [earliest, latest].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    shift_by: Option<i64>,
    /// Only print the plan (the default).
    #[arg(long, conflicts_with = "execute")]
    dry_run: bool,
    /// Commit the new offsets.
    #[arg(long)]
    execute: bool,
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Output per group: GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG CONSUMER-ID \
HOST CLIENT-ID, one line per partition (- where unknown), then `Total lag of group 'G': N`.")]
pub struct LagArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// The group (default: every group).
    #[arg(value_name = "GROUP")]
    group: Option<String>,
}

pub async fn group(cmd: GroupCommand) -> Result<()> {
    match cmd {
        GroupCommand::List(a) => list(a).await,
        GroupCommand::Describe(a) => describe(a).await,
        GroupCommand::Delete(a) => delete(a).await,
        GroupCommand::ResetOffsets(a) => reset_offsets(a).await,
        GroupCommand::Lag(a) => lag(a).await,
    }
}

async fn connect(c: &ConnectArgs) -> Result<Admin> {
    Admin::new(&c.bootstrap_server).await.with_context(|| format!("connecting to {}", c.bootstrap_server))
}

/// Left-aligned columns separated by a space, as kafka-consumer-groups.sh prints them.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (cell, w) in cells.zip(&widths) {
            let _ = write!(l, "{cell:<w$} ");
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

fn dash(v: Option<impl ToString>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// Kafka's canonical spelling of a group state given in any case.
fn canonical_state(s: &str) -> Result<&'static str> {
    const STATES: [&str; 5] = ["Stable", "Empty", "PreparingRebalance", "CompletingRebalance", "Dead"];
    STATES
        .into_iter()
        .find(|st| st.eq_ignore_ascii_case(s.trim()))
        .ok_or_else(|| anyhow::anyhow!("unknown group state {s:?} (expected one of {})", STATES.join(", ")))
}

/// Consumer groups and groups that only hold offsets, like kafka-consumer-groups.sh --list.
fn is_consumer_group(protocol_type: &str) -> bool {
    protocol_type.is_empty() || protocol_type == "consumer"
}

async fn list(a: ListArgs) -> Result<()> {
    let admin = connect(&a.connect).await?;
    let states: Vec<&str> = match a.state.as_deref() {
        Some(s) if !s.trim().is_empty() => s.split(',').map(canonical_state).collect::<Result<_>>()?,
        _ => Vec::new(),
    };
    let groups = admin.list_groups(&states).await.context("listing groups")?;
    let groups: Vec<_> = groups.into_iter().filter(|g| is_consumer_group(&g.protocol_type)).collect();
    if a.state.is_none() {
        let mut out = String::new();
        for g in &groups {
            let _ = writeln!(out, "{}", g.group_id);
        }
        print!("{out}");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = groups.iter().map(|g| vec![g.group_id.clone(), dash(g.state.as_deref())]).collect();
    print!("{}", table(&["GROUP", "STATE"], &rows));
    Ok(())
}

/// `topic(0,1,2), other(3)`, Kafka's ASSIGNMENT column.
fn format_assignment(parts: &[TopicPartition]) -> String {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in parts {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    if by_topic.is_empty() {
        return "-".to_owned();
    }
    by_topic
        .into_iter()
        .map(|(t, mut ps)| {
            ps.sort_unstable();
            format!("{t}({})", ps.iter().map(i32::to_string).collect::<Vec<_>>().join(","))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_text(d: &GroupDescription) -> String {
    if d.state == "Dead" {
        return format!("Consumer group '{}' does not exist.\n", d.group_id);
    }
    let coordinator = format!("{}:{} ({})", d.coordinator.host, d.coordinator.port, d.coordinator.id);
    let mut out = table(
        &["GROUP", "COORDINATOR (ID)", "ASSIGNMENT-STRATEGY", "STATE", "#MEMBERS"],
        &[vec![
            d.group_id.clone(),
            coordinator,
            if d.protocol.is_empty() { "-".into() } else { d.protocol.clone() },
            d.state.clone(),
            d.members.len().to_string(),
        ]],
    );
    out.push('\n');
    if d.members.is_empty() {
        let _ = writeln!(out, "Consumer group '{}' has no active members.", d.group_id);
        return out;
    }
    let mut members: Vec<_> = d.members.iter().collect();
    members.sort_by(|a, b| (b.assignment.len(), &a.member_id).cmp(&(a.assignment.len(), &b.member_id)));
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            vec![
                d.group_id.clone(),
                m.member_id.clone(),
                dash(m.group_instance_id.as_deref()),
                m.host.clone(),
                m.client_id.clone(),
                m.assignment.len().to_string(),
                format_assignment(&m.assignment),
            ]
        })
        .collect();
    out.push_str(&table(
        &["GROUP", "CONSUMER-ID", "GROUP-INSTANCE-ID", "HOST", "CLIENT-ID", "#PARTITIONS", "ASSIGNMENT"],
        &rows,
    ));
    out
}

async fn describe(a: DescribeArgs) -> Result<()> {
    let admin = connect(&a.connect).await?;
    let mut out = String::new();
    for (i, g) in a.groups.iter().enumerate() {
        let d = match admin.describe_groups(&[g]).await {
            Ok(mut d) => d.remove(0),
            Err(e) if e.kafka_code() == Some(tern_client::ResponseError::GroupIdNotFound) => {
                let _ = writeln!(out, "Consumer group '{g}' does not exist.");
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("describing group {g}")),
        };
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&describe_text(&d));
    }
    print!("{out}");
    Ok(())
}

async fn delete(a: DeleteArgs) -> Result<()> {
    let admin = connect(&a.connect).await?;
    let names: Vec<&str> = a.groups.iter().map(String::as_str).collect();
    let results = admin.delete_groups(&names).await.context("deleting groups")?;
    let (ok, failed): (Vec<_>, Vec<_>) = results.into_iter().partition(|(_, r)| r.is_ok());
    if !ok.is_empty() {
        let list = ok.iter().map(|(g, _)| format!("'{g}'")).collect::<Vec<_>>().join(", ");
        println!("Deletion of requested consumer groups ({list}) was successful.");
    }
    let mut first = None;
    for (g, r) in failed {
        let e = r.expect_err("partitioned on errors");
        eprintln!("Group '{g}' could not be deleted: {e}");
        first.get_or_insert((g, e));
    }
    match first {
        Some((g, e)) => Err(e).with_context(|| format!("deleting group {g}")),
        None => Ok(()),
    }
}

/// `TOPIC` or `TOPIC:P,P,...`.
fn parse_topic_spec(s: &str) -> Result<(String, Option<Vec<i32>>)> {
    let Some((topic, parts)) = s.rsplit_once(':') else {
        return Ok((s.to_owned(), None));
    };
    if topic.is_empty() {
        bail!("empty topic in {s:?}");
    }
    let parts = parts
        .split(',')
        .map(|p| p.trim().parse::<i32>().with_context(|| format!("bad partition {p:?} in {s:?}")))
        .collect::<Result<Vec<_>>>()?;
    Ok((topic.to_owned(), Some(parts)))
}

/// Milliseconds since the epoch of `YYYY-MM-DDTHH:mm:SS[.sss][Z|±HH:MM]`; without a zone the
/// time is local, as in kafka-consumer-groups.sh.
fn parse_datetime(s: &str) -> Result<i64> {
    let bad = || anyhow::anyhow!("bad datetime {s:?}: expected YYYY-MM-DDTHH:mm:SS[.sss] with optional Z or ±HH:MM");
    let (date, time) = s.split_once('T').ok_or_else(bad)?;
    let (time, zone) = match time.find(['Z', 'z', '+', '-']) {
        Some(i) => (&time[..i], Some(&time[i..])),
        None => (time, None),
    };
    let num = |v: &str| v.parse::<i64>().map_err(|_| bad());
    let d: Vec<&str> = date.split('-').collect();
    let (hms, millis) = match time.split_once('.') {
        Some((hms, frac)) if !frac.is_empty() && frac.len() <= 3 => (hms, num(&format!("{frac:0<3}"))?),
        Some(_) => return Err(bad()),
        None => (time, 0),
    };
    let t: Vec<&str> = hms.split(':').collect();
    if d.len() != 3 || t.len() != 3 {
        return Err(bad());
    }
    let (year, month, day) = (num(d[0])?, num(d[1])?, num(d[2])?);
    let (hour, minute, second) = (num(t[0])?, num(t[1])?, num(t[2])?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return Err(bad());
    }
    let local_secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    let offset_secs = match zone {
        Some("Z" | "z") => 0,
        Some(z) => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let (h, m) = z[1..].split_once(':').ok_or_else(bad)?;
            sign * (num(h)? * 3600 + num(m)? * 60)
        }
        None => local_offset_secs(local_secs),
    };
    Ok((local_secs - offset_secs) * 1000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The local time zone's offset from UTC, in seconds, around `local_secs` (seconds since the
/// epoch read as local wall-clock time).
fn local_offset_secs(local_secs: i64) -> i64 {
    #[cfg(unix)]
    {
        let t = local_secs as libc::time_t;
        // SAFETY: localtime_r only writes the `tm` we pass; a zeroed tm is a valid value.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
            return 0;
        }
        tm.tm_gmtoff
    }
    #[cfg(not(unix))]
    {
        let _ = local_secs;
        0
    }
}

/// Where to move each partition.
enum Target {
    Spec(OffsetSpec),
    Current,
    Shift(i64),
}

async fn reset_offsets(a: ResetArgs) -> Result<()> {
    let admin = connect(&a.connect).await?;
    let group = a.group.as_str();
    let state = match admin.describe_groups(&[group]).await {
        Ok(mut d) => d.remove(0).state,
        Err(e) if e.kafka_code() == Some(tern_client::ResponseError::GroupIdNotFound) => "Dead".to_owned(),
        Err(e) => return Err(e).with_context(|| format!("describing group {group}")),
    };
    if state != "Empty" && state != "Dead" {
        bail!("Assignments can only be reset if the group '{group}' is inactive, but the current state is {state}.");
    }
    let committed = admin.list_group_offsets(group).await.with_context(|| format!("fetching offsets of {group}"))?;

    let mut partitions: BTreeSet<TopicPartition> = BTreeSet::new();
    if a.all_topics {
        partitions.extend(committed.keys().cloned());
    }
    for spec in &a.topics {
        let (topic, wanted) = parse_topic_spec(spec)?;
        let info = admin.describe_topics(&[&topic]).await.with_context(|| format!("looking up topic {topic}"))?;
        let all: Vec<i32> = info[0].partitions.iter().map(|p| p.id).collect();
        match wanted {
            None => partitions.extend(all.iter().map(|&p| TopicPartition::new(&topic, p))),
            Some(ps) => {
                for p in ps {
                    if !all.contains(&p) {
                        bail!("topic {topic} has no partition {p} (it has {} partitions)", all.len());
                    }
                    partitions.insert(TopicPartition::new(&topic, p));
                }
            }
        }
    }

    let target = if a.to_earliest {
        Target::Spec(OffsetSpec::Earliest)
    } else if a.to_latest {
        Target::Spec(OffsetSpec::Latest)
    } else if let Some(n) = a.to_offset {
        Target::Spec(OffsetSpec::Offset(n))
    } else if let Some(dt) = &a.to_datetime {
        Target::Spec(OffsetSpec::Timestamp(parse_datetime(dt)?))
    } else if let Some(n) = a.shift_by {
        Target::Shift(n)
    } else {
        Target::Current
    };

    let mut plan = Vec::with_capacity(partitions.len());
    let admin = &admin;
    for tp in &partitions {
        let (t, p) = (tp.topic.as_str(), tp.partition);
        let offsets = |spec| async move {
            admin.list_offsets(t, p, spec).await.map(|(o, _)| o).with_context(|| format!("listing offsets of {t}-{p}"))
        };
        let (earliest, latest) = (offsets(OffsetSpec::Earliest).await?, offsets(OffsetSpec::Latest).await?);
        let current = || {
            committed.get(tp).copied().ok_or_else(|| {
                anyhow::anyhow!("cannot shift or keep the offset of {tp}: the group has no committed offset for it")
            })
        };
        let wanted = match &target {
            Target::Spec(OffsetSpec::Earliest) => earliest,
            Target::Spec(OffsetSpec::Latest) => latest,
            Target::Spec(OffsetSpec::Offset(n)) => *n,
            Target::Spec(spec @ OffsetSpec::Timestamp(_)) => match offsets(*spec).await? {
                // No record at or after the time: the end of the log.
                o if o < 0 => latest,
                o => o,
            },
            Target::Current => current()?,
            Target::Shift(n) => current()?.saturating_add(*n),
        };
        let new = wanted.clamp(earliest, latest.max(earliest));
        if new != wanted {
            eprintln!("New offset ({wanted}) for {tp} is outside [{earliest}, {latest}]; using {new}.");
        }
        plan.push((tp.clone(), new));
    }

    let rows: Vec<Vec<String>> = plan
        .iter()
        .map(|(tp, o)| vec![group.to_owned(), tp.topic.clone(), tp.partition.to_string(), o.to_string()])
        .collect();
    print!("{}", table(&["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"], &rows));
    if a.execute {
        admin.alter_group_offsets(group, &plan).await.with_context(|| format!("committing offsets of {group}"))?;
    } else if !a.dry_run {
        eprintln!("WARN: No action will be performed as the --execute option is missing. Add --execute to reset the offsets, or --dry-run to only print the plan without this warning.");
    }
    Ok(())
}

fn lag_text(l: &GroupLag) -> String {
    let mut out = String::new();
    if l.state == "Dead" && l.partitions.is_empty() {
        let _ = writeln!(out, "Consumer group '{}' does not exist.", l.group_id);
        return out;
    }
    if l.members == 0 {
        let _ = writeln!(out, "Consumer group '{}' has no active members.", l.group_id);
    }
    let rows: Vec<Vec<String>> = l
        .partitions
        .iter()
        .map(|p| {
            let m = p.member.as_ref();
            vec![
                l.group_id.clone(),
                p.topic.clone(),
                p.partition.to_string(),
                dash(p.committed),
                dash(p.log_end_offset),
                dash(p.lag),
                dash(m.map(|m| m.member_id.as_str())),
                dash(m.map(|m| m.host.as_str())),
                dash(m.map(|m| m.client_id.as_str())),
            ]
        })
        .collect();
    out.push_str(&table(
        &["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST", "CLIENT-ID"],
        &rows,
    ));
    let _ = writeln!(out, "Total lag of group '{}': {}", l.group_id, l.total_lag());
    out
}

async fn lag(a: LagArgs) -> Result<()> {
    let admin = connect(&a.connect).await?;
    let groups: Vec<String> = match a.group {
        Some(g) => vec![g],
        None => admin
            .list_groups(&[])
            .await
            .context("listing groups")?
            .into_iter()
            .filter(|g| is_consumer_group(&g.protocol_type))
            .map(|g| g.group_id)
            .collect(),
    };
    let mut out = String::new();
    for (i, g) in groups.iter().enumerate() {
        let l = admin.group_lag(g).await.with_context(|| format!("describing offsets of group {g}"))?;
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&lag_text(&l));
    }
    print!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_client::{LagMember, PartitionLag};

    #[test]
    fn datetimes_follow_kafka_format() {
        assert_eq!(parse_datetime("2026-01-01T00:00:00.000Z").unwrap(), 1_767_225_600_000);
        assert_eq!(parse_datetime("2026-01-01T00:00:00.5Z").unwrap(), 1_767_225_600_500);
        assert_eq!(parse_datetime("2026-01-01T01:30:00+01:30").unwrap(), 1_767_225_600_000);
        assert_eq!(parse_datetime("1970-01-01T00:00:01.001-00:00").unwrap(), 1001);
        assert_eq!(parse_datetime("2024-02-29T12:00:00Z").unwrap(), 1_709_208_000_000);
        for bad in ["2026-01-01", "2026-13-01T00:00:00Z", "2026-01-01T00:00Z", "2026-01-01T00:00:00.1234Z", "x"] {
            assert!(parse_datetime(bad).is_err(), "{bad}");
        }
        // Local time: whatever the zone, it lies within a day of UTC.
        let local = parse_datetime("2026-01-01T00:00:00.000").unwrap();
        assert!((local - 1_767_225_600_000).abs() <= 26 * 3600 * 1000);
    }

    #[test]
    fn topic_specs() {
        assert_eq!(parse_topic_spec("t").unwrap(), ("t".into(), None));
        assert_eq!(parse_topic_spec("t:0,2").unwrap(), ("t".into(), Some(vec![0, 2])));
        assert!(parse_topic_spec("t:x").is_err());
        assert!(parse_topic_spec(":1").is_err());
    }

    #[test]
    fn states_are_canonical() {
        assert_eq!(canonical_state("stable").unwrap(), "Stable");
        assert_eq!(canonical_state(" preparingrebalance").unwrap(), "PreparingRebalance");
        assert!(canonical_state("nope").is_err());
    }

    #[test]
    fn tables_align_columns() {
        let t = table(&["A", "LONGER"], &[vec!["xyz".into(), "1".into()], vec!["q".into(), "22".into()]]);
        assert_eq!(t, "A   LONGER\nxyz 1\nq   22\n");
    }

    #[test]
    fn lag_rows_like_kafka_consumer_groups() {
        let l = GroupLag {
            group_id: "g".into(),
            state: "Stable".into(),
            members: 1,
            partitions: vec![
                PartitionLag {
                    topic: "t".into(),
                    partition: 0,
                    committed: Some(5),
                    log_end_offset: Some(8),
                    lag: Some(3),
                    member: Some(LagMember {
                        member_id: "m-1".into(),
                        host: "/127.0.0.1".into(),
                        client_id: "c".into(),
                    }),
                },
                PartitionLag {
                    topic: "t".into(),
                    partition: 1,
                    committed: None,
                    log_end_offset: Some(2),
                    lag: None,
                    member: None,
                },
            ],
        };
        let text = lag_text(&l);
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(lines[0][3], "CURRENT-OFFSET");
        assert_eq!(lines[1], vec!["g", "t", "0", "5", "8", "3", "m-1", "/127.0.0.1", "c"]);
        assert_eq!(lines[2], vec!["g", "t", "1", "-", "2", "-", "-", "-", "-"]);
        assert_eq!(text.lines().last().unwrap(), "Total lag of group 'g': 3");
        assert_eq!(
            format_assignment(&[TopicPartition::new("b", 1), TopicPartition::new("a", 2), TopicPartition::new("b", 0)]),
            "a(2), b(0,1)"
        );
    }
}
