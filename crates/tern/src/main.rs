//! The `tern` binary: the broker (`tern serve`) and the command-line tools.

mod bench;
mod cli_client;
mod cluster;
mod log_tool;
mod serve;

use std::io::IsTerminal;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "tern", version, about = "Tern: a Kafka-compatible event streaming platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a broker.
    Serve(serve::ServeArgs),
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topic(cli_client::TopicCommand),
    /// Produce records read from stdin, one per line.
    Produce(cli_client::ProduceArgs),
    /// Consume records and print them.
    Consume(cli_client::ConsumeArgs),
    /// List, describe and delete consumer groups; show their lag; reset their offsets.
    #[command(subcommand)]
    Group(cli_client::GroupCommand),
    /// Measure throughput and latency against a running broker.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Check or truncate the partition logs of a stopped broker's data directory.
    #[command(subcommand)]
    Log(log_tool::LogCommand),
    /// Move partition leadership to the preferred replicas (or elect an unclean leader).
    ElectLeaders(cli_client::ElectArgs),
    /// Show the controller quorum: the active controller, its epoch, the voters' progress.
    Quorum(cli_client::QuorumArgs),
    /// Run a local multi-node cluster: `up`, `status`, `down`.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
}

/// The log filter when `RUST_LOG` is unset. openraft reports every failed RPC to a voter that
/// is down (ten a second) and narrates each election at INFO; the quorum transport logs a
/// voter becoming unreachable and reachable again instead (`tern_controller::raft`).
const DEFAULT_LOG_FILTER: &str =
    "info,openraft=warn,openraft::replication=off,openraft::engine::handler::replication_handler=off";

fn main() -> Result<()> {
    // Colour codes only for a terminal: in files and journald they are noise.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| DEFAULT_LOG_FILTER.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve(_)) {
        keep_freed_memory();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Topic(cmd) => cli_client::topic(cmd).await,
            Command::Produce(args) => cli_client::produce(args).await,
            Command::Consume(args) => cli_client::consume(args).await,
            Command::Group(cmd) => cli_client::group(cmd).await,
            Command::Bench(cmd) => bench::run(cmd).await,
            Command::Log(cmd) => log_tool::run(cmd),
            Command::ElectLeaders(args) => cli_client::elect_leaders(args).await,
            Command::Quorum(args) => cli_client::quorum(args).await,
            Command::Cluster(cmd) => cluster::run(cmd).await,
        }
    })
}

/// glibc hands buffers of 128 KiB and more to mmap and returns freed heap tops to the kernel, so
/// every 1 MB produce frame was a fresh mapping: page faults and page clearing cost ~10% of the
/// broker's CPU per GB ingested. Serve them from the heap and keep freed memory for reuse.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}
