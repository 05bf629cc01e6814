//! `tern topic`, `tern produce`, `tern consume`: command-line tools on top of `tern-client`.

use anyhow::Result;

/// Topic administration.
#[derive(clap::Subcommand, Debug)]
pub enum TopicCommand {}

#[derive(clap::Args, Debug)]
pub struct ProduceArgs {}

#[derive(clap::Args, Debug)]
pub struct ConsumeArgs {}

pub async fn topic(cmd: TopicCommand) -> Result<()> {
    match cmd {}
}

pub async fn produce(_args: ProduceArgs) -> Result<()> {
    anyhow::bail!("not implemented yet")
}

pub async fn consume(_args: ConsumeArgs) -> Result<()> {
    anyhow::bail!("not implemented yet")
}
