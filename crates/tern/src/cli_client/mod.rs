//! `tern topic`, `tern produce`, `tern consume`, `tern group`: command-line tools on top of
//! `tern-client`.
//!
//! Failures surface as `anyhow` errors whose chain ends in the client's error, so a broker
//! rejection prints its Kafka name (e.g. `TOPIC_ALREADY_EXISTS (36) for topic t: ...`) and
//! `main` exits non-zero.

mod consume;
mod elect;
mod group;
mod produce;
mod quorum;
mod topic;

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub use consume::{consume, ConsumeArgs};
pub use elect::{elect_leaders, ElectArgs};
pub use group::{group, GroupCommand};
pub use produce::{produce, ProduceArgs};
pub use quorum::{quorum, QuorumArgs};
pub use topic::{topic, TopicCommand};

/// Where to find the cluster; shared by every client command.
#[derive(clap::Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Broker to bootstrap from (comma-separated HOST:PORT list).
    #[arg(short = 'b', long = "bootstrap-server", value_name = "HOST:PORT", default_value = "127.0.0.1:9092")]
    pub bootstrap_server: String,
}

/// Parses `key=value` (the value may contain `=`).
fn parse_key_value(s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => bail!("expected KEY=VALUE, got {s:?}"),
    }
}

/// clap value parser for `key=value` arguments.
fn key_value(s: &str) -> Result<(String, String), String> {
    parse_key_value(s).map_err(|e| e.to_string())
}

/// A spinner on stderr when `visible` and stderr is a terminal, hidden otherwise (pipes, files, tests).
fn spinner(template: &str, visible: bool) -> ProgressBar {
    let target = if visible && std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let pb = ProgressBar::with_draw_target(None, target);
    pb.set_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_spinner()));
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// `1.2 MiB`-style size.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Whether an error chain bottoms out in a closed pipe (`tern consume ... | head`).
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_split_at_first_equals() {
        assert_eq!(parse_key_value("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert_eq!(parse_key_value("a=").unwrap(), ("a".into(), "".into()));
        assert!(parse_key_value("=b").is_err());
        assert!(parse_key_value("ab").is_err());
    }

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
