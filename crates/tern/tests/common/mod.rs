//! The real `tern serve` binary for integration tests: a temp data dir, a free loopback port,
//! killed when dropped (also when a test panics, which prints the broker's log).

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_tern");
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
        let log = std::fs::File::create(dir.path().join("broker.log")).expect("broker log");
        let child = Command::new(BIN)
            .args(["serve", "--listen", &addr, "--data-dir"])
            .arg(dir.path().join("data"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn tern serve");
        let mut broker = Broker { child, addr, dir };
        broker.wait_ready();
        broker
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
