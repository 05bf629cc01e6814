//! Consumer groups against the real broker binary: `GroupConsumer`s in-process (eager and
//! cooperative rebalances, takeover from committed offsets, new partitions), then `tern consume
//! --group` and `tern group ...` as subprocesses. Every wait is bounded; no timing assertions.

mod common;
#[path = "../../client/tests/common/consumers.rs"]
mod consumers;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{finish, reader_thread, wait_bounded, Broker, BIN};
use consumers::{bounded, produce, Running, Watch, DEADLINE};
use tern_client::group::CooperativeStickyAssignor;
use tern_client::{Admin, GroupConsumer, GroupConsumerConfig, OffsetSpec, TopicPartition};
use tokio::sync::mpsc;

fn config(addr: &str, group: &str) -> GroupConsumerConfig {
    let mut c = GroupConsumerConfig::new(addr, group);
    c.consumer.fetch_max_wait = Duration::from_millis(100);
    c.consumer.auto_offset_reset = OffsetSpec::Earliest;
    // The broker's group.min.session.timeout.ms is 6 s.
    c.session_timeout = Duration::from_secs(10);
    c.heartbeat_interval = Duration::from_millis(500);
    c.max_poll_interval = Duration::from_secs(30);
    c.auto_commit_interval = Duration::from_millis(500);
    c
}

async fn create_topic(admin: &Admin, topic: &str, partitions: i32) {
    bounded("create_topic", admin.create_topic(topic, partitions, 1, &HashMap::new(), false))
        .await
        .unwrap_or_else(|e| panic!("create {topic}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_split_partitions_and_take_over_from_committed_offsets() {
    let broker = Broker::start();
    let addr = broker.addr.clone();
    let admin = bounded("Admin::new", Admin::new(&addr)).await.expect("admin");
    create_topic(&admin, "split", 6).await;
    produce(&addr, "split", 6, 100).await;

    let (tx, rx) = mpsc::unbounded_channel();
    let mut watch = Watch::new(rx, false);
    let mut c1 = bounded("GroupConsumer::new", GroupConsumer::new(config(&addr, "split-g"))).await.expect("c1");
    c1.subscribe(["split"]);
    let r1 = Running::start(c1, "c1", tx.clone());
    watch.until("c1 owns all six partitions", |w| w.sizes() == vec![6]).await;
    let mut c2 = bounded("GroupConsumer::new", GroupConsumer::new(config(&addr, "split-g"))).await.expect("c2");
    c2.subscribe(["split"]);
    let r2 = Running::start(c2, "c2", tx.clone());
    watch.until("three partitions each", |w| w.sizes() == vec![3, 3]).await;
    let union: BTreeSet<&TopicPartition> = watch.assignments.values().flatten().collect();
    assert_eq!(union.len(), 6, "the two members split the partitions: {:?}", watch.assignments);
    watch.until("all 600 records", |w| w.distinct() >= 600).await;
    assert_eq!(watch.records.len(), 600, "offsets committed on revocation: no record is read twice");

    // c1 leaves: c2 takes over its partitions and continues from c1's commits.
    let mut c1 = r1.stop().await;
    assert_eq!(c1.protocol(), Some("range"));
    bounded("close", c1.close()).await.expect("c1 close commits and leaves");
    watch.forget("c1");
    watch.until("c2 owns all six partitions", |w| w.sizes() == vec![6]).await;
    produce(&addr, "split", 6, 10).await;
    watch.until("the 60 new records", |w| w.distinct() >= 660).await;
    assert_eq!(watch.records.len(), 660, "after the takeover no record is read twice");

    let mut c2 = r2.stop().await;
    bounded("commit", c2.commit_sync()).await.expect("commit");
    let lag = bounded("group_lag", admin.group_lag("split-g")).await.expect("lag");
    assert_eq!((lag.state.as_str(), lag.members, lag.total_lag()), ("Stable", 1, 0), "{lag:?}");
    assert_eq!(lag.partitions.len(), 6);
    for p in &lag.partitions {
        assert_eq!((p.committed, p.log_end_offset), (Some(110), Some(110)), "{p:?}");
        assert_eq!(p.member.as_ref().map(|m| m.member_id.as_str()), Some(c2.member_id()));
    }
    let tp0 = TopicPartition::new("split", 0);
    let err = bounded("delete_group_offsets", admin.delete_group_offsets("split-g", std::slice::from_ref(&tp0)))
        .await
        .expect_err("offsets of a topic the group consumes cannot be deleted");
    assert!(err.to_string().contains("GROUP_SUBSCRIBED_TO_TOPIC"), "{err}");
    bounded("close", c2.close()).await.expect("c2 close");
    let d = bounded("describe", admin.describe_groups(&["split-g"])).await.expect("describe");
    assert_eq!((d[0].state.as_str(), d[0].members.len()), ("Empty", 0));
    bounded("delete_group_offsets", admin.delete_group_offsets("split-g", std::slice::from_ref(&tp0)))
        .await
        .expect("delete offsets of an empty group");
    let offsets = bounded("list_group_offsets", admin.list_group_offsets("split-g")).await.expect("offsets");
    assert_eq!(offsets.len(), 5);
    assert!(!offsets.contains_key(&tp0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cooperative_sticky_group_never_shares_a_partition() {
    let broker = Broker::start();
    let addr = broker.addr.clone();
    let admin = bounded("Admin::new", Admin::new(&addr)).await.expect("admin");
    create_topic(&admin, "coop", 6).await;
    produce(&addr, "coop", 6, 50).await;
    let cooperative = || {
        let mut c = config(&addr, "coop-g");
        c.assignors = vec![Arc::new(CooperativeStickyAssignor)];
        c
    };

    let (tx, rx) = mpsc::unbounded_channel();
    let mut watch = Watch::new(rx, true);
    let mut running = Vec::new();
    for (tag, want) in [("c1", vec![6]), ("c2", vec![3, 3]), ("c3", vec![2, 2, 2])] {
        let mut c = bounded("GroupConsumer::new", GroupConsumer::new(cooperative())).await.expect("consumer");
        c.subscribe(["coop"]);
        running.push(Running::start(c, tag, tx.clone()));
        watch.until(&format!("{tag} joined: {want:?}"), |w| w.sizes() == want).await;
    }
    watch.until("all 300 records", |w| w.distinct() >= 300).await;
    for r in running {
        let mut c = r.stop().await;
        assert_eq!(c.protocol(), Some("cooperative-sticky"));
        bounded("close", c.close()).await.expect("close");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_rejoins_when_partitions_are_added() {
    let broker = Broker::start();
    let addr = broker.addr.clone();
    let admin = bounded("Admin::new", Admin::new(&addr)).await.expect("admin");
    create_topic(&admin, "grow", 2).await;
    let mut c = config(&addr, "grow-g");
    c.metadata_max_age = Duration::from_millis(500);
    let mut consumer = bounded("GroupConsumer::new", GroupConsumer::new(c)).await.expect("consumer");
    consumer.subscribe(["grow"]);
    bounded("first assignment", async {
        while consumer.assignment().len() < 2 {
            consumer.poll().await.expect("poll");
        }
    })
    .await;
    bounded("create_partitions", admin.create_partitions("grow", 4, false)).await.expect("grow to 4");
    produce(&addr, "grow", 4, 5).await;
    let mut seen = BTreeSet::new();
    bounded("records from the new partitions", async {
        while seen.len() < 20 {
            for r in consumer.poll().await.expect("poll") {
                seen.insert((r.partition, r.offset));
            }
        }
    })
    .await;
    assert_eq!(consumer.assignment().len(), 4);
    bounded("close", consumer.close()).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn static_member_keeps_its_place_across_a_restart() {
    let broker = Broker::start();
    let addr = broker.addr.clone();
    let admin = bounded("Admin::new", Admin::new(&addr)).await.expect("admin");
    create_topic(&admin, "static", 2).await;
    let mut first_member = String::new();
    for round in 0..2 {
        let mut c = config(&addr, "static-g");
        c.group_instance_id = Some("instance-1".into());
        let mut consumer = bounded("GroupConsumer::new", GroupConsumer::new(c)).await.expect("consumer");
        consumer.subscribe(["static"]);
        bounded("assignment", async {
            while consumer.assignment().len() < 2 {
                consumer.poll().await.expect("poll");
            }
        })
        .await;
        if round == 0 {
            first_member = consumer.member_id().to_owned();
        } else {
            assert_ne!(consumer.member_id(), first_member, "a restarted static member gets a new member id");
        }
        bounded("close", consumer.close()).await.expect("close");
        // No LeaveGroup: the instance keeps its place until its session times out.
        let d = bounded("describe", admin.describe_groups(&["static-g"])).await.expect("describe");
        assert_eq!(d[0].members.len(), 1, "round {round}: {:?}", d[0]);
        assert_eq!(d[0].members[0].group_instance_id.as_deref(), Some("instance-1"));
    }
}

/// `tern group lag` rows of one group: (topic, partition) → the remaining columns.
fn lag_rows(out: &str, group: &str) -> BTreeMap<(String, i32), Vec<String>> {
    out.lines()
        .filter(|l| l.starts_with(&format!("{group} ")))
        .map(|l| {
            let f: Vec<String> = l.split_whitespace().map(str::to_owned).collect();
            assert_eq!(f.len(), 9, "malformed lag row {l:?}");
            ((f[1].clone(), f[2].parse().expect("partition")), f[3..].to_vec())
        })
        .collect()
}

fn total_lag(out: &str, group: &str) -> i64 {
    let prefix = format!("Total lag of group '{group}': ");
    let line = out.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no total for {group}:\n{out}"));
    line[prefix.len()..].parse().expect("total")
}

/// Committed offset per partition of topic `t` from `tern group lag`.
fn committed(broker: &Broker, group: &str, t: &str) -> Vec<String> {
    let out = broker.run(&["group", "lag", group]).ok().stdout;
    lag_rows(&out, group).into_iter().filter(|((topic, _), _)| topic == t).map(|(_, f)| f[0].clone()).collect()
}

#[test]
fn cli_consume_group_lag_reset_and_delete() {
    let broker = Broker::start();
    broker.run(&["topic", "create", "lag-t", "--partitions", "3"]).ok();
    for p in 0..3 {
        let lines: String = (0..100).map(|n| format!("p{p}-{n}\n")).collect();
        let mut child = broker
            .command(&["produce", "-t", "lag-t", "--partition", &p.to_string()])
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn produce");
        let mut stdin = child.stdin.take().expect("stdin");
        std::io::Write::write_all(&mut stdin, lines.as_bytes()).expect("write stdin");
        drop(stdin);
        finish(child, format!("tern produce -p {p}")).ok();
    }

    // Consume 120 records as group `cg`; exactly those are committed.
    let consumed = broker
        .run(&[
            "consume",
            "-t",
            "lag-t",
            "--group",
            "cg",
            "--from-beginning",
            "--max-messages",
            "120",
            "--timeout-ms",
            "60000",
        ])
        .ok();
    assert_eq!(consumed.stdout.lines().count(), 120);
    assert!(consumed.stderr.contains("Processed a total of 120 messages"), "{}", consumed.stderr);

    let lag = broker.run(&["group", "lag", "cg"]).ok().stdout;
    assert!(lag.contains("Consumer group 'cg' has no active members."), "{lag}");
    let header: Vec<&str> = lag.lines().find(|l| l.starts_with("GROUP")).expect("header").split_whitespace().collect();
    assert_eq!(
        header,
        ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST", "CLIENT-ID"]
    );
    let rows = lag_rows(&lag, "cg");
    assert_eq!(rows.len(), 3, "{lag}");
    let current: i64 = rows.values().map(|f| f[0].parse::<i64>().expect("committed offset")).sum();
    assert_eq!(current, 120, "{lag}");
    for f in rows.values() {
        assert_eq!(f[1], "100", "log end offset: {lag}");
        assert_eq!(f[2].parse::<i64>().unwrap(), 100 - f[0].parse::<i64>().unwrap());
        assert_eq!(&f[3..], ["-", "-", "-"], "no member: {lag}");
    }
    assert_eq!(total_lag(&lag, "cg"), 180);
    // Without a group: every group.
    let all = broker.run(&["group", "lag"]).ok().stdout;
    assert_eq!(lag_rows(&all, "cg"), rows, "{all}");
    assert_eq!(total_lag(&all, "cg"), 180);

    // Listing and describing an inactive group.
    assert!(broker.run(&["group", "list"]).ok().stdout.lines().any(|l| l == "cg"));
    let states = broker.run(&["group", "list", "--state"]).ok().stdout;
    assert!(states.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["cg", "Empty"]), "{states}");
    let stable = broker.run(&["group", "list", "--state", "stable"]).ok().stdout;
    assert!(!stable.contains("cg"), "{stable}");
    let described = broker.run(&["group", "describe", "cg"]).ok().stdout;
    assert!(described.contains("Consumer group 'cg' has no active members."), "{described}");
    assert!(described.lines().any(|l| l.starts_with("cg ") && l.contains(" Empty ")), "{described}");

    // Reset: a dry run by default, applied with --execute.
    let plan = broker.run(&["group", "reset-offsets", "--group", "cg", "--topic", "lag-t", "--to-earliest"]).ok();
    assert!(plan.stderr.contains("--execute"), "dry run warns: {}", plan.stderr);
    let planned: Vec<Vec<&str>> = plan.stdout.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(planned, [["cg", "lag-t", "0", "0"], ["cg", "lag-t", "1", "0"], ["cg", "lag-t", "2", "0"]]);
    assert_eq!(total_lag(&broker.run(&["group", "lag", "cg"]).ok().stdout, "cg"), 180, "a dry run changes nothing");
    broker.run(&["group", "reset-offsets", "--group", "cg", "--topic", "lag-t", "--to-earliest", "--execute"]).ok();
    assert_eq!(total_lag(&broker.run(&["group", "lag", "cg"]).ok().stdout, "cg"), 300, "lag = log end offsets");

    let reset = |args: &[&str]| {
        let mut all = vec!["group", "reset-offsets", "--group", "cg", "--execute"];
        all.extend_from_slice(args);
        broker.run(&all).ok()
    };
    reset(&["--topic", "lag-t:1", "--to-offset", "50"]);
    assert_eq!(committed(&broker, "cg", "lag-t"), ["0", "50", "0"]);
    reset(&["--topic", "lag-t:1", "--shift-by", "-10"]);
    assert_eq!(committed(&broker, "cg", "lag-t"), ["0", "40", "0"]);
    let clamped = reset(&["--topic", "lag-t:1,2", "--shift-by", "1000"]);
    assert!(clamped.stderr.contains("outside"), "{}", clamped.stderr);
    assert_eq!(committed(&broker, "cg", "lag-t"), ["0", "100", "100"]);
    reset(&["--all-topics", "--to-datetime", "1970-01-01T00:00:00.000Z"]);
    assert_eq!(committed(&broker, "cg", "lag-t"), ["0", "0", "0"]);
    reset(&["--topic", "lag-t:0", "--to-datetime", "2999-01-01T00:00:00.000+02:00"]);
    assert_eq!(committed(&broker, "cg", "lag-t"), ["100", "0", "0"]);
    reset(&["--topic", "lag-t", "--to-latest"]);
    assert_eq!(committed(&broker, "cg", "lag-t"), ["100", "100", "100"]);
    broker
        .run(&["group", "reset-offsets", "--group", "cg", "--topic", "no-such", "--to-latest"])
        .fails_with("UNKNOWN_TOPIC_OR_PARTITION");

    // While a member is active the group cannot be reset or deleted.
    reset(&["--topic", "lag-t", "--to-earliest"]);
    let member = broker
        .command(&["consume", "-t", "lag-t", "--group", "cg", "--timeout-ms", "100000"])
        .spawn()
        .expect("spawn consume");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let out = broker.run(&["group", "describe", "cg"]).ok().stdout;
        if out.lines().any(|l| l.starts_with("cg ") && l.contains(" Stable ")) && out.contains("lag-t(0,1,2)") {
            break;
        }
        assert!(Instant::now() < deadline, "the CLI consumer never became a stable member:\n{out}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let refused = broker.run(&["group", "reset-offsets", "--group", "cg", "--topic", "lag-t", "--to-latest"]);
    refused.fails_with("Assignments can only be reset if the group 'cg' is inactive, but the current state is Stable.");
    broker.run(&["group", "delete", "cg"]).fails_with("NON_EMPTY_GROUP");
    let deadline = Instant::now() + DEADLINE;
    let lag = loop {
        // The member reads everything and auto-commits within 5 s.
        let out = broker.run(&["group", "lag", "cg"]).ok().stdout;
        if total_lag(&out, "cg") == 0 {
            break out;
        }
        assert!(Instant::now() < deadline, "the CLI consumer never caught up:\n{out}");
        std::thread::sleep(Duration::from_millis(500));
    };
    for f in lag_rows(&lag, "cg").values() {
        assert_ne!(f[3], "-", "every partition has a consumer: {lag}");
        assert_eq!(f[5], "tern-consume", "client id: {lag}");
    }

    // Ctrl-C: the consumer commits, leaves the group and exits cleanly.
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(member.id() as libc::pid_t, libc::SIGINT) }, 0);
    let stopped = finish(member, "tern consume --group cg".into()).ok();
    assert!(stopped.stderr.contains("Processed a total of 300 messages"), "{}", stopped.stderr);
    let described = broker.run(&["group", "describe", "cg"]).ok().stdout;
    assert!(described.contains("has no active members"), "the member left on exit:\n{described}");

    let deleted = broker.run(&["group", "delete", "cg", "no-such-group"]).fails_with("GROUP_ID_NOT_FOUND");
    assert!(
        deleted.stdout.contains("Deletion of requested consumer groups ('cg') was successful."),
        "{}",
        deleted.stdout
    );
    assert!(!broker.run(&["group", "list"]).ok().stdout.lines().any(|l| l == "cg"));
    let gone = broker.run(&["group", "describe", "cg"]).ok().stdout;
    assert!(gone.contains("Consumer group 'cg' does not exist."), "{gone}");
}

#[test]
fn help_documents_group_commands() {
    for cmd in [
        &["group", "list"][..],
        &["group", "describe"],
        &["group", "delete"],
        &["group", "reset-offsets"],
        &["group", "lag"],
        &["consume"],
    ] {
        let mut child = Command::new(BIN).args(cmd).arg("--help").stdout(Stdio::piped()).spawn().expect("--help");
        let stdout = reader_thread(child.stdout.take().expect("stdout"));
        assert!(wait_bounded(&mut child, "--help").success());
        let help = String::from_utf8_lossy(&stdout.join().expect("stdout")).into_owned();
        assert!(help.contains("--bootstrap-server"), "{cmd:?} --help:\n{help}");
        if cmd == ["consume"] {
            assert!(help.contains("--group"), "{help}");
        }
    }
}
