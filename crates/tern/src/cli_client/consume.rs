//! `tern consume`: assign partitions, or join a consumer group, and print records like
//! kafka-console-consumer.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tern_client::group::assignor_by_name;
use tern_client::{
    Consumer, ConsumerConfig, ConsumerRecord, GroupConsumer, GroupConsumerConfig, OffsetSpec, TopicPartition,
};

use super::{is_broken_pipe, spinner, ConnectArgs};

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("start").args(["from_beginning", "offset", "from_latest", "from_timestamp"])))]
#[command(after_help = "Output: one record per line; with --print-* options the fields are, in this order, \
timestamp, partition, offset, headers, key and value, separated by --key-separator.\n\n\
With --group the consumer joins the group, reads the partitions the group assigns it, starting at the \
group's committed offsets (--from-beginning: earliest where there is none, else latest), and commits \
what it printed, every 5 s and on exit (also on Ctrl-C and SIGTERM, after which it leaves the group at \
once). It rides out broker restarts: it reconnects, rejoins if needed and goes on from its positions \
(or the committed offsets).\n\n\
Examples:\n  tern consume -t events --from-beginning --max-messages 10 --print-key\n  \
tern consume -t events --group readers --from-beginning")]
pub struct ConsumeArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Topic to consume.
    #[arg(short, long)]
    topic: String,
    /// Partition to read (repeatable or comma-separated; default: all partitions).
    #[arg(short, long = "partition", value_name = "P", value_delimiter = ',', conflicts_with = "group")]
    partitions: Vec<i32>,
    /// Consume as a member of this consumer group.
    #[arg(short, long, value_name = "GROUP")]
    group: Option<String>,
    /// With --group: assignment strategies to offer, most preferred first
    /// (range, roundrobin, cooperative-sticky).
    #[arg(
        long,
        value_name = "NAME",
        value_delimiter = ',',
        default_value = "range,cooperative-sticky",
        requires = "group"
    )]
    assignment_strategy: Vec<String>,
    /// Start at the earliest offset still in the log (with --group: where the group has no
    /// committed offset).
    #[arg(long)]
    from_beginning: bool,
    /// Start at this offset in every read partition.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(0..), conflicts_with = "group")]
    offset: Option<i64>,
    /// Start after the last record, printing only new ones (the default).
    #[arg(long)]
    from_latest: bool,
    /// Start at the first record with a timestamp at or after MS (milliseconds since the epoch).
    #[arg(long, value_name = "MS", conflicts_with = "group")]
    from_timestamp: Option<i64>,
    /// Exit after printing this many records.
    #[arg(long, value_name = "N")]
    max_messages: Option<u64>,
    /// Exit once no record has arrived for this long (default: wait for records forever).
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u64>,
    /// Print the key (`null` if the record has none).
    #[arg(long)]
    print_key: bool,
    /// Print the headers as `k1:v1,k2:v2` (`NO_HEADERS` if none).
    #[arg(long)]
    print_headers: bool,
    /// Print the timestamp as `Timestamp:MS`.
    #[arg(long)]
    print_timestamp: bool,
    /// Print the partition as `Partition:P`.
    #[arg(long)]
    print_partition: bool,
    /// Print the offset as `Offset:N`.
    #[arg(long)]
    print_offset: bool,
    /// Separator between the printed fields.
    #[arg(long, value_name = "SEP", default_value = "\t")]
    key_separator: String,
}

impl ConsumeArgs {
    fn start(&self) -> OffsetSpec {
        if self.from_beginning {
            OffsetSpec::Earliest
        } else if let Some(o) = self.offset {
            OffsetSpec::Offset(o)
        } else if let Some(ts) = self.from_timestamp {
            OffsetSpec::Timestamp(ts)
        } else {
            OffsetSpec::Latest
        }
    }
}

pub async fn consume(args: ConsumeArgs) -> Result<()> {
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout());
    let mut count = 0;
    let r = run(&args, &mut out, &mut count).await;
    let r = r.and_then(|()| out.flush().context("writing stdout"));
    match r {
        // The reader went away (`| head`): that is how a pipeline says "enough".
        Err(e) if is_broken_pipe(&e) => Ok(()),
        Err(e) => Err(e),
        Ok(()) => {
            eprintln!("Processed a total of {count} messages");
            Ok(())
        }
    }
}

/// Where records come from: assigned partitions, or a group membership.
enum Source {
    Assigned(Consumer),
    Group(Box<GroupConsumer>),
}

impl Source {
    async fn poll(&mut self) -> tern_client::Result<Vec<ConsumerRecord>> {
        match self {
            Source::Assigned(c) => c.poll().await,
            Source::Group(c) => c.poll().await,
        }
    }

    /// Makes the group's next commit start at `offsets` (records fetched but not printed).
    fn rewind(&mut self, offsets: &BTreeMap<TopicPartition, i64>) -> Result<()> {
        if let Source::Group(c) = self {
            for (tp, &o) in offsets {
                c.seek(tp, o).with_context(|| format!("rewinding {tp}"))?;
            }
        }
        Ok(())
    }

    /// Commits (group) and leaves the group.
    async fn close(self) -> Result<()> {
        match self {
            Source::Assigned(_) => Ok(()),
            Source::Group(mut c) => {
                let group = c.group_id().to_owned();
                c.close().await.with_context(|| format!("committing offsets of group {group}"))
            }
        }
    }
}

async fn connect(args: &ConsumeArgs, config: ConsumerConfig) -> Result<Source> {
    let Some(group) = &args.group else {
        let mut consumer =
            Consumer::new(config).await.with_context(|| format!("connecting to {}", args.connect.bootstrap_server))?;
        let partitions = partitions_of(&consumer, &args.topic, &args.partitions).await?;
        let start = args.start();
        consumer.assign(partitions.iter().map(|&p| (args.topic.clone(), p, start)).collect());
        return Ok(Source::Assigned(consumer));
    };
    let mut gc = GroupConsumerConfig::new(args.connect.bootstrap_server.clone(), group.clone());
    gc.consumer = ConsumerConfig {
        auto_offset_reset: if args.from_beginning { OffsetSpec::Earliest } else { OffsetSpec::Latest },
        ..config
    };
    gc.assignors = args
        .assignment_strategy
        .iter()
        .map(|name| assignor_by_name(name.trim()).with_context(|| format!("unknown assignment strategy {name:?}")))
        .collect::<Result<_>>()?;
    let mut consumer =
        GroupConsumer::new(gc).await.with_context(|| format!("connecting to {}", args.connect.bootstrap_server))?;
    // Fail early on a missing topic, as the partition-assigning path does.
    partitions_of_cluster(consumer.cluster(), &args.topic).await?;
    consumer.subscribe([args.topic.clone()]);
    Ok(Source::Group(Box::new(consumer)))
}

async fn run(args: &ConsumeArgs, out: &mut impl Write, count: &mut u64) -> Result<()> {
    let idle_timeout = args.timeout_ms.map(Duration::from_millis);
    let mut config = ConsumerConfig {
        bootstrap: args.connect.bootstrap_server.clone(),
        client_id: "tern-consume".into(),
        ..ConsumerConfig::default()
    };
    if let Some(t) = idle_timeout {
        config.fetch_max_wait = config.fetch_max_wait.min(t.max(Duration::from_millis(1)));
    }
    // Installed first: from here on SIGTERM (like Ctrl-C) ends the loop, and the consumer
    // commits and leaves its group instead of being killed.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let mut source = connect(args, config).await?;
    let r = print_records(&mut source, args, out, count, &mut terminate).await;
    // Commit what was printed and leave the group also when printing failed (closed pipe).
    let closed = source.close().await;
    r.and(closed)
}

async fn print_records(
    source: &mut Source,
    args: &ConsumeArgs,
    out: &mut impl Write,
    count: &mut u64,
    terminate: &mut tokio::signal::unix::Signal,
) -> Result<()> {
    let idle_timeout = args.timeout_ms.map(Duration::from_millis);
    let pb = spinner("{spinner} {pos} records ({per_sec}) [{elapsed}]", !std::io::stdout().is_terminal());
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut last_record = Instant::now();
    let mut line = Vec::with_capacity(1024);
    loop {
        if args.max_messages.is_some_and(|m| *count >= m) {
            break;
        }
        let records = tokio::select! {
            r = source.poll() => r.with_context(|| format!("fetching from {}", args.topic))?,
            _ = &mut ctrl_c => break,
            _ = terminate.recv() => break,
        };
        if records.is_empty() {
            if idle_timeout.is_some_and(|t| last_record.elapsed() >= t) {
                break;
            }
            continue;
        }
        last_record = Instant::now();
        for (i, r) in records.iter().enumerate() {
            if args.max_messages.is_some_and(|m| *count >= m) {
                source.rewind(&first_offsets(&records[i..]))?;
                break;
            }
            line.clear();
            format_record(&mut line, r, args);
            out.write_all(&line).context("writing stdout")?;
            *count += 1;
        }
        pb.set_position(*count);
        out.flush().context("writing stdout")?;
    }
    pb.finish_and_clear();
    Ok(())
}

/// The first offset per partition among `records`.
fn first_offsets(records: &[ConsumerRecord]) -> BTreeMap<TopicPartition, i64> {
    let mut first = BTreeMap::new();
    for r in records {
        first.entry(TopicPartition::new(&*r.topic, r.partition)).or_insert(r.offset);
    }
    first
}

/// The partitions to read: `wanted`, checked against metadata, or all of them.
async fn partitions_of(consumer: &Consumer, topic: &str, wanted: &[i32]) -> Result<Vec<i32>> {
    let all = partitions_of_cluster(consumer.cluster(), topic).await?;
    if wanted.is_empty() {
        return Ok(all);
    }
    if let Some(p) = wanted.iter().find(|p| !all.contains(p)) {
        bail!("topic {topic} has no partition {p} (it has {} partitions)", all.len());
    }
    let mut wanted = wanted.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    Ok(wanted)
}

/// All partitions of `topic`; an error naming the Kafka error if it does not exist.
async fn partitions_of_cluster(cluster: &tern_client::Cluster, topic: &str) -> Result<Vec<i32>> {
    let resp = cluster
        .refresh_metadata(Some(&[topic.to_owned()]))
        .await
        .with_context(|| format!("fetching metadata of {topic}"))?;
    for t in &resp.topics {
        if let Some(e) = tern_client::Error::from_code(t.error_code, Some(topic), None, None) {
            return Err(e).with_context(|| format!("looking up topic {topic}"));
        }
    }
    let Some(info) = cluster.topic(topic) else {
        bail!("topic {topic} is not in the broker's metadata");
    };
    Ok(info.partitions.iter().map(|p| p.id).collect())
}

/// One output line, in kafka-console-consumer's field order.
fn format_record(line: &mut Vec<u8>, r: &ConsumerRecord, args: &ConsumeArgs) {
    let sep = args.key_separator.as_bytes();
    if args.print_timestamp {
        if r.timestamp < 0 {
            line.extend_from_slice(b"NO_TIMESTAMP");
        } else {
            line.extend_from_slice(format!("Timestamp:{}", r.timestamp).as_bytes());
        }
        line.extend_from_slice(sep);
    }
    if args.print_partition {
        line.extend_from_slice(format!("Partition:{}", r.partition).as_bytes());
        line.extend_from_slice(sep);
    }
    if args.print_offset {
        line.extend_from_slice(format!("Offset:{}", r.offset).as_bytes());
        line.extend_from_slice(sep);
    }
    if args.print_headers {
        if r.headers.is_empty() {
            line.extend_from_slice(b"NO_HEADERS");
        }
        for (i, (k, v)) in r.headers.iter().enumerate() {
            if i > 0 {
                line.push(b',');
            }
            line.extend_from_slice(k.as_bytes());
            line.push(b':');
            line.extend_from_slice(v.as_deref().unwrap_or(b"null"));
        }
        line.extend_from_slice(sep);
    }
    if args.print_key {
        line.extend_from_slice(r.key.as_deref().unwrap_or(b"null"));
        line.extend_from_slice(sep);
    }
    line.extend_from_slice(r.value.as_deref().unwrap_or(b"null"));
    line.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: ConsumeArgs,
    }

    fn args(extra: &[&str]) -> ConsumeArgs {
        Cli::try_parse_from(["consume", "-t", "t"].iter().chain(extra)).unwrap().args
    }

    fn record() -> ConsumerRecord {
        ConsumerRecord {
            topic: "t".into(),
            partition: 2,
            offset: 7,
            timestamp: 1000,
            key: Some("k".into()),
            value: Some("v".into()),
            headers: vec![("a".into(), Some("1".into())), ("b".into(), None)],
        }
    }

    fn line(a: &ConsumeArgs) -> String {
        let mut buf = Vec::new();
        format_record(&mut buf, &record(), a);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn fields_follow_kafka_order() {
        assert_eq!(line(&args(&[])), "v\n");
        let all = args(&["--print-timestamp", "--print-partition", "--print-offset", "--print-headers", "--print-key"]);
        assert_eq!(line(&all), "Timestamp:1000\tPartition:2\tOffset:7\ta:1,b:null\tk\tv\n");
        assert_eq!(line(&args(&["--print-key", "--key-separator", " | "])), "k | v\n");
    }

    #[test]
    fn start_positions_are_exclusive() {
        assert_eq!(args(&[]).start(), OffsetSpec::Latest);
        assert_eq!(args(&["--from-beginning"]).start(), OffsetSpec::Earliest);
        assert_eq!(args(&["--offset", "5"]).start(), OffsetSpec::Offset(5));
        assert_eq!(args(&["--from-timestamp", "9"]).start(), OffsetSpec::Timestamp(9));
        assert!(Cli::try_parse_from(["c", "-t", "t", "--from-beginning", "--offset", "1"]).is_err());
        assert!(Cli::try_parse_from(["c", "-t", "t", "--offset", "-1"]).is_err());
    }

    #[test]
    fn group_options() {
        let a = args(&["--group", "g", "--from-beginning"]);
        assert_eq!(a.group.as_deref(), Some("g"));
        assert_eq!(a.assignment_strategy, vec!["range", "cooperative-sticky"]);
        let a = args(&["-g", "g", "--assignment-strategy", "cooperative-sticky"]);
        assert_eq!(a.assignment_strategy, vec!["cooperative-sticky"]);
        for bad in [&["-g", "g", "-p", "0"][..], &["-g", "g", "--offset", "3"], &["--assignment-strategy", "range"]] {
            assert!(Cli::try_parse_from(["c", "-t", "t"].iter().chain(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rewind_points_at_the_first_unprinted_record() {
        let mut rs = vec![record(), record(), record()];
        rs[1].offset = 9;
        rs[2].partition = 4;
        rs[2].offset = 1;
        let first = first_offsets(&rs);
        assert_eq!(first.get(&TopicPartition::new("t", 2)), Some(&7));
        assert_eq!(first.get(&TopicPartition::new("t", 4)), Some(&1));
    }
}
