//! The CLI tools against the real binary: `tern serve` in a temp dir on a free loopback port,
//! then `tern topic|produce|consume` as subprocesses.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use tern_client::{murmur2, to_positive};

/// Upper bound for any one subprocess or readiness wait; only reached when something hangs.
use common::{reader_thread, wait_bounded, Broker, BIN};

/// `tern topic describe` output: partition count, `Configs:` of the header line, and
/// (partition, log end offset) of every partition line.
struct Described {
    partition_count: usize,
    configs: String,
    partitions: Vec<(i32, i64)>,
}

fn parse_describe(out: &str, topic: &str) -> Described {
    let field = |line: &str, name: &str| -> String {
        let start = line.find(&format!("{name}: ")).unwrap_or_else(|| panic!("no {name} in {line:?}")) + name.len() + 2;
        line[start..].split('\t').next().unwrap_or_default().trim().to_string()
    };
    let header = out
        .lines()
        .find(|l| l.starts_with(&format!("Topic: {topic}\t")))
        .unwrap_or_else(|| panic!("no header line for {topic}:\n{out}"));
    let partitions = out
        .lines()
        .filter(|l| l.starts_with('\t') && l.contains(&format!("Topic: {topic}\t")))
        .map(|l| {
            assert_eq!(field(l, "Leader"), "1", "{l}");
            (field(l, "Partition").parse().unwrap(), field(l, "LogEndOffset").parse().unwrap())
        })
        .collect();
    Described {
        partition_count: field(header, "PartitionCount").parse().unwrap(),
        configs: field(header, "Configs"),
        partitions,
    }
}

fn topics(broker: &Broker) -> Vec<String> {
    broker.run(&["topic", "list"]).ok().stdout.lines().map(str::to_owned).collect()
}

#[test]
fn topic_lifecycle_produce_and_consume() {
    let broker = Broker::start();
    let topic = "cli-events";

    broker.run(&["topic", "create", topic, "--partitions", "3", "--config", "retention.ms=3600000"]).ok();
    broker.run(&["topic", "create", "cli-dry-run", "--partitions", "2", "--validate-only"]).ok();
    assert_eq!(topics(&broker), vec![topic.to_string()], "--validate-only must not create");

    let d = parse_describe(&broker.run(&["topic", "describe", topic]).ok().stdout, topic);
    assert_eq!(d.partition_count, 3);
    assert_eq!(d.partitions.iter().map(|p| p.0).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(d.configs, "retention.ms=3600000", "only the override is shown");

    broker.run(&["topic", "alter", topic, "--partitions", "4", "--set-config", "segment.bytes=1048576"]).ok();
    broker.run(&["topic", "alter", topic, "--delete-config", "retention.ms"]).ok();
    let d = parse_describe(&broker.run(&["topic", "describe", topic]).ok().stdout, topic);
    assert_eq!(d.partition_count, 4);
    assert_eq!(d.partitions.iter().map(|p| p.0).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    assert_eq!(d.configs, "segment.bytes=1048576");

    let lines: Vec<String> = (0..1000).map(|i| format!("key-{i}:value {i}: with separator")).collect();
    let produced = broker.run_with_stdin(
        &["produce", "--topic", topic, "--key-separator", ":", "--acks", "all", "--compression", "zstd"],
        (lines.join("\n") + "\n").into_bytes(),
    );
    let produced = produced.ok();
    assert!(produced.stderr.contains("1000"), "summary names the record count:\n{}", produced.stderr);

    let d = parse_describe(&broker.run(&["topic", "describe", topic]).ok().stdout, topic);
    assert_eq!(d.partitions.iter().map(|p| p.1).sum::<i64>(), 1000, "log end offsets add up to the records");

    let consumed = broker
        .run(&[
            "consume",
            "--topic",
            topic,
            "--from-beginning",
            "--max-messages",
            "1000",
            "--timeout-ms",
            "30000",
            "--print-partition",
            "--print-offset",
            "--print-key",
        ])
        .ok();
    let mut seen: HashSet<String> = HashSet::new();
    let mut offsets: HashMap<i32, HashSet<i64>> = HashMap::new();
    for line in consumed.stdout.lines() {
        let f: Vec<&str> = line.splitn(4, '\t').collect();
        assert_eq!(f.len(), 4, "malformed line {line:?}");
        let partition: i32 = f[0].strip_prefix("Partition:").expect("partition field").parse().unwrap();
        let offset: i64 = f[1].strip_prefix("Offset:").expect("offset field").parse().unwrap();
        let (key, value) = (f[2], f[3]);
        assert_eq!(partition, to_positive(murmur2(key.as_bytes())) % 4, "{key} is on the wrong partition");
        assert!(offsets.entry(partition).or_default().insert(offset), "offset {offset} twice on {partition}");
        assert!(seen.insert(format!("{key}:{value}")), "{line:?} consumed twice");
    }
    let expected: HashSet<String> = lines.into_iter().collect();
    assert_eq!(seen, expected, "every produced line comes back exactly once");
    assert!(consumed.stderr.contains("Processed a total of 1000 messages"), "{}", consumed.stderr);

    // Errors carry the Kafka error name and a non-zero exit.
    broker.run(&["topic", "create", topic, "--partitions", "1"]).fails_with("TOPIC_ALREADY_EXISTS");
    broker.run(&["topic", "alter", topic, "--partitions", "2"]).fails_with("INVALID_PARTITIONS");
    broker.run(&["topic", "describe", "no-such-topic"]).fails_with("UNKNOWN_TOPIC_OR_PARTITION");
    broker
        .run(&["consume", "--topic", "no-such-topic", "--timeout-ms", "100"])
        .fails_with("UNKNOWN_TOPIC_OR_PARTITION");
    broker
        .run_with_stdin(&["produce", "--topic", topic, "--key-separator", "|"], b"no separator\n".to_vec())
        .fails_with("no key separator");

    broker.run(&["topic", "delete", topic]).ok();
    assert!(topics(&broker).is_empty(), "topic deleted");
    broker.run(&["topic", "describe", topic]).fails_with("UNKNOWN_TOPIC_OR_PARTITION");
}

#[test]
fn consume_options_and_closed_pipe() {
    let broker = Broker::start();
    let topic = "cli-pipe";
    broker.run(&["topic", "create", topic, "--partitions", "1"]).ok();
    // Far more output than a pipe buffers, so the consumer must hit the closed pipe.
    let lines: Vec<String> = (0..20_000).map(|i| format!("{i:06} {}", "x".repeat(80))).collect();
    broker
        .run_with_stdin(
            &["produce", "--topic", topic, "--partition", "0", "--header", "src=test", "--linger-ms", "20"],
            (lines.join("\n") + "\n").into_bytes(),
        )
        .ok();

    let run = broker
        .run(&[
            "consume",
            "-t",
            topic,
            "--offset",
            "10",
            "--max-messages",
            "2",
            "--print-headers",
            "--print-offset",
            "--print-timestamp",
            "--key-separator",
            "|",
        ])
        .ok();
    let got: Vec<Vec<&str>> = run.stdout.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(got.len(), 2, "{}", run.stdout);
    for (i, f) in got.iter().enumerate() {
        assert!(f[0].starts_with("Timestamp:"), "{f:?}");
        assert_eq!(f[1], format!("Offset:{}", 10 + i));
        assert_eq!(f[2], "src:test");
        assert_eq!(f[3], lines[10 + i]);
    }

    // One partition: lines come back in the order they were read.
    let all = broker.run(&["consume", "-t", topic, "-p", "0", "--from-beginning", "--max-messages", "20000"]).ok();
    assert!(all.stdout.lines().eq(lines.iter().map(String::as_str)), "records reordered within the partition");

    // `tern consume | head -1`: the consumer must notice the closed pipe and exit 0.
    let mut child = broker.command(&["consume", "-t", topic, "--from-beginning"]).stdin(Stdio::null()).spawn().unwrap();
    let stderr = reader_thread(child.stderr.take().unwrap());
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert_eq!(first.trim_end(), lines[0]);
    drop(out);
    let status = wait_bounded(&mut child, "tern consume | head -1");
    let stderr = String::from_utf8_lossy(&stderr.join().unwrap()).into_owned();
    assert!(status.success(), "consume into a closed pipe: {status}\n{stderr}");
}

#[test]
fn help_documents_every_command() {
    for cmd in [&["topic", "create"][..], &["topic", "alter"], &["produce"], &["consume"]] {
        let mut child = Command::new(BIN).args(cmd).arg("--help").stdout(Stdio::piped()).spawn().expect("run --help");
        let stdout = reader_thread(child.stdout.take().expect("stdout"));
        assert!(wait_bounded(&mut child, "--help").success());
        let help = String::from_utf8_lossy(&stdout.join().expect("stdout reader")).into_owned();
        assert!(help.contains("--bootstrap-server"), "{cmd:?} --help:\n{help}");
    }
}
