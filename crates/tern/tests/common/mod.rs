//! The real `tern serve` binary for integration tests: a temp data dir, a free loopback port,
//! killed when dropped (also when a test panics, which prints the broker's log).
#![allow(dead_code)] // each test binary uses its own subset

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_tern");
/// Upper bound for one `tern` CLI run; only reached when something hangs.
pub const RUN_DEADLINE: Duration = Duration::from_secs(120);
/// Upper bound for the broker to start listening; only reached when something hangs.
const START_DEADLINE: Duration = Duration::from_secs(90);

/// A `tern serve` process, killed when dropped (also when a test panics).
pub struct Broker {
    pub child: Child,
    pub addr: String,
    pub dir: tempfile::TempDir,
}

impl Broker {
    pub fn start() -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let addr = format!("127.0.0.1:{port}");
        let child = spawn_serve(&addr, dir.path());
        let mut broker = Broker { child, addr, dir };
        broker.wait_ready();
        broker
    }

    /// Stops the broker cleanly (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) {
        // SAFETY: plain kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) }, 0);
        let status = wait_bounded(&mut self.child, "tern serve after SIGTERM");
        assert!(status.success(), "the broker's clean shutdown failed ({status}):\n{}", self.log());
    }

    /// Kills the broker with SIGKILL (a process crash) and reaps it.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9 the broker");
        let _ = self.child.wait();
    }

    /// Starts the broker again (after `stop` or `kill9`) on the same address and data directory.
    pub fn restart(&mut self) {
        assert!(self.child.try_wait().expect("try_wait").is_some(), "restart: the broker is still running");
        self.child = spawn_serve(&self.addr, self.dir.path());
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("broker exited early ({status}):\n{}", self.log());
            }
            let sock = self.addr.parse().expect("socket addr");
            if TcpStream::connect_timeout(&sock, Duration::from_millis(500)).is_ok() {
                return;
            }
            assert!(start.elapsed() < START_DEADLINE, "broker did not listen on {}:\n{}", self.addr, self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- broker log ---\n{}", self.log());
        }
    }
}

/// `tern serve` on `addr` with its data under `dir`, appending its log to `dir/broker.log`.
fn spawn_serve(addr: &str, dir: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("broker.log")).expect("broker log");
    Command::new(BIN)
        .args(["serve", "--listen", addr, "--data-dir"])
        .arg(dir.join("data"))
        // Groups form at once instead of after Kafka's default 3000 ms wait for more members.
        .args(["--set", "group.initial.rebalance.delay.ms=0"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn tern serve")
}

/// A finished `tern` CLI run.
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub what: String,
}

impl Run {
    pub fn ok(self) -> Run {
        assert!(self.status.success(), "`{}` failed ({}):\n{}", self.what, self.status, self.stderr);
        self
    }

    /// Asserts a non-zero exit whose stderr names `error`.
    pub fn fails_with(self, error: &str) -> Run {
        assert!(!self.status.success(), "`{}` should have failed:\n{}", self.what, self.stdout);
        assert!(self.stderr.contains(error), "`{}`: stderr lacks {error}:\n{}", self.what, self.stderr);
        self
    }
}

impl Broker {
    /// `tern <args> -b <broker>`, output piped, stdin closed.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .args(["-b", &self.addr])
            .env("RUST_BACKTRACE", "0")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs `tern <args> -b <broker>` to completion.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, Vec::new())
    }

    pub fn run_with_stdin(&self, args: &[&str], stdin: Vec<u8>) -> Run {
        let mut child = self.command(args).stdin(Stdio::piped()).spawn().expect("spawn tern");
        let mut input = child.stdin.take().expect("stdin");
        let writer = std::thread::spawn(move || {
            // Closing stdin (dropping it) is the end-of-input signal.
            let _ = input.write_all(&stdin);
        });
        let run = finish(child, format!("tern {}", args.join(" ")));
        writer.join().expect("stdin writer");
        run
    }
}

/// Collects a spawned `tern`'s output and exit status (bounded by [`RUN_DEADLINE`]).
pub fn finish(mut child: Child, what: String) -> Run {
    let stdout = reader_thread(child.stdout.take().expect("stdout"));
    let stderr = reader_thread(child.stderr.take().expect("stderr"));
    let status = wait_bounded(&mut child, &what);
    let run = Run {
        status,
        stdout: String::from_utf8_lossy(&stdout.join().expect("stdout reader")).into_owned(),
        stderr: String::from_utf8_lossy(&stderr.join().expect("stderr reader")).into_owned(),
        what,
    };
    eprintln!("$ {}\n{}{}", run.what, run.stdout.lines().take(20).collect::<Vec<_>>().join("\n"), run.stderr);
    run
}

pub fn reader_thread(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// Waits for `child`, killing it (and failing the test) after [`RUN_DEADLINE`].
pub fn wait_bounded(child: &mut Child, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if start.elapsed() > RUN_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{what}` did not finish within {RUN_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
