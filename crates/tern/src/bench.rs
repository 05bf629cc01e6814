//! `tern bench produce|consume`: throughput and latency with the Rust client.

use anyhow::Result;

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {}

pub async fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {}
}
