//! `tern consume --group` against the real broker binary while the broker is restarted, cleanly
//! and with `kill -9`, and records keep coming; then SIGTERM: the consumer commits, leaves the
//! group at once (not after its session timeout) and exits cleanly. Every wait is bounded; no
//! timing assertions.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{finish, Broker, RUN_DEADLINE};

const TOPIC: &str = "restart-t";
const GROUP: &str = "restart-g";
const PARTITIONS: usize = 3;

/// Lines a running `tern consume` printed so far, read on a thread as they come.
struct Printed {
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Printed {
    fn follow(child: &mut Child) -> Printed {
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Printed { lines, reader: Some(reader) }
    }

    /// Waits until every one of `want` was printed (at least once).
    fn wait_for(&self, what: &str, want: &[String], consumer: &mut Child) {
        let start = Instant::now();
        loop {
            let missing = {
                let lines = self.lines.lock().unwrap();
                want.iter().filter(|w| !lines.contains(w)).count()
            };
            if missing == 0 {
                return;
            }
            if let Some(status) = consumer.try_wait().expect("try_wait") {
                panic!("{what}: the consumer exited ({status}) with {missing} records not printed");
            }
            assert!(start.elapsed() < RUN_DEADLINE, "{what}: {missing} records never printed");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn take(mut self) -> Vec<String> {
        if let Some(r) = self.reader.take() {
            r.join().expect("stdout reader");
        }
        std::mem::take(&mut *self.lines.lock().unwrap())
    }
}

/// Produces `values` with `tern produce`, round-robin over the partitions.
fn produce(broker: &Broker, values: &[String]) {
    for p in 0..PARTITIONS {
        let lines: String = values.iter().skip(p).step_by(PARTITIONS).map(|v| format!("{v}\n")).collect();
        let mut child = broker
            .command(&["produce", "-t", TOPIC, "--partition", &p.to_string()])
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn produce");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(lines.as_bytes()).expect("write stdin");
        drop(stdin);
        finish(child, format!("tern produce -p {p}")).ok();
    }
}

fn batch(tag: &str) -> Vec<String> {
    (0..60).map(|n| format!("{tag}-{n}")).collect()
}

#[test]
fn group_consumer_survives_broker_restarts_and_leaves_on_sigterm() {
    let mut broker = Broker::start();
    broker.run(&["topic", "create", TOPIC, "--partitions", &PARTITIONS.to_string()]).ok();
    let mut consumer = broker
        .command(&["consume", "-t", TOPIC, "--group", GROUP, "--from-beginning"])
        .env("RUST_LOG", "info")
        .spawn()
        .expect("spawn tern consume --group");
    let printed = Printed::follow(&mut consumer);
    let mut all = Vec::new();

    let before = batch("before");
    produce(&broker, &before);
    printed.wait_for("records before any restart", &before, &mut consumer);
    all.extend(before);

    broker.stop();
    broker.restart();
    let after_stop = batch("after-clean-restart");
    produce(&broker, &after_stop);
    printed.wait_for("records after a clean broker restart", &after_stop, &mut consumer);
    all.extend(after_stop);

    broker.kill9();
    broker.restart();
    let after_kill = batch("after-kill-9");
    produce(&broker, &after_kill);
    printed.wait_for("records after kill -9 of the broker", &after_kill, &mut consumer);
    all.extend(after_kill);

    // SIGTERM: commit what was printed, leave the group, exit 0.
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(consumer.id() as libc::pid_t, libc::SIGTERM) }, 0);
    let stderr = consumer.stderr.take().expect("stderr");
    let status = common::wait_bounded(&mut consumer, "tern consume after SIGTERM");
    let stderr = std::io::read_to_string(stderr).unwrap_or_default();
    let lines = printed.take();
    assert!(status.success(), "tern consume --group exits cleanly on SIGTERM ({status}):\n{stderr}");
    assert!(stderr.contains("Processed a total of"), "{stderr}");

    // The group is empty right away, not after the 45 s session timeout.
    let described = broker.run(&["group", "describe", GROUP]).ok().stdout;
    assert!(described.contains("has no active members"), "the member left on SIGTERM:\n{described}");
    let lag = broker.run(&["group", "lag", GROUP]).ok().stdout;
    assert!(lag.contains(&format!("Total lag of group '{GROUP}': 0")), "everything printed was committed:\n{lag}");

    // At least once: every record printed; a record is printed again only if the restart came
    // before its offset was committed, so never more than twice here.
    let mut times: BTreeMap<&str, usize> = BTreeMap::new();
    for l in &lines {
        *times.entry(l.as_str()).or_default() += 1;
    }
    for v in &all {
        assert!(times.contains_key(v.as_str()), "{v} was never printed");
    }
    assert_eq!(times.len(), all.len(), "nothing but the produced records was printed: {times:?}");
    let most = times.values().max().copied().unwrap_or(0);
    assert!(most <= 2, "a record printed {most} times: {times:?}");
    eprintln!("{} records, {} lines printed", all.len(), lines.len());
}
