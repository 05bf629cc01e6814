//! The `tern` binary: the broker (`tern serve`) and the command-line tools.

mod bench;
mod cli_client;
mod serve;

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
    /// Measure throughput and latency against a running broker.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Topic(cmd) => cli_client::topic(cmd).await,
            Command::Produce(args) => cli_client::produce(args).await,
            Command::Consume(args) => cli_client::consume(args).await,
            Command::Bench(cmd) => bench::run(cmd).await,
        }
    })
}
