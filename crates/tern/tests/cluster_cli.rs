//! `tern cluster status|down|up` on directories that need no running node: refusals, and a
//! hand-written layout whose nodes are all stopped. (Starting a cluster needs the brokers'
//! cluster mode; tests/cluster covers that.)

use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_tern");

fn tern(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("RUST_LIB_BACKTRACE", "0").stdin(Stdio::null()).output().expect("running tern")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn a_directory_without_a_cluster_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("none");
    let d = d.to_str().unwrap();
    for cmd in ["status", "down"] {
        let o = tern(&["cluster", cmd, "--dir", d]);
        let (_, err) = text(&o);
        assert!(!o.status.success() && err.contains("holds no Tern cluster"), "{cmd}: {err}");
    }
    let o = tern(&["cluster", "up", "--dir", d, "--set", "controller.quorum.voters=1@x:1"]);
    let (out, err) = text(&o);
    assert!(!o.status.success() && err.contains("controller.quorum.voters"), "{err}");
    assert!(out.is_empty() && !dir.path().join("none").exists(), "nothing written");
}

#[test]
fn status_and_down_of_a_stopped_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    std::fs::write(
        dir.path().join("cluster.properties"),
        "nodes=2\nnode.1.kafka.port=1\nnode.1.controller.port=2\nnode.2.kafka.port=3\nnode.2.controller.port=4\n",
    )
    .unwrap();
    // A stale pid file naming a live process that is no node (this test) is not "running".
    std::fs::create_dir_all(dir.path().join("node-1")).unwrap();
    std::fs::write(dir.path().join("node-1/pid"), format!("{}\n", std::process::id())).unwrap();

    let o = tern(&["cluster", "status", "--dir", d]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "status is a report, exit 0 with nodes down: {err}");
    assert!(out.contains("(2 nodes)"), "{out}");
    for row in [
        "1     broker,controller  127.0.0.1:1  127.0.0.1:2  -    stopped",
        "2     broker,controller  127.0.0.1:3  127.0.0.1:4  -    stopped",
    ] {
        assert!(out.lines().any(|l| l == row), "{row:?} not in\n{out}");
    }
    assert!(out.contains("Controller leader: unknown"), "{out}");

    for _ in 0..2 {
        let o = tern(&["cluster", "down", "--dir", d]);
        let (_, err) = text(&o);
        assert!(o.status.success(), "down is idempotent: {err}");
    }
    assert!(!dir.path().join("node-1/pid").exists(), "down removes stale pid files");

    let o = tern(&["cluster", "up", "--dir", d, "--nodes", "3"]);
    let (out, err) = text(&o);
    assert!(!o.status.success() && err.contains("--nodes 3") && err.contains("has 2 nodes"), "{err}");
    assert!(out.is_empty());
}
