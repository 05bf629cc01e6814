//! `tern elect-leaders`: Kafka's `kafka-leader-election`, over ElectLeaders.

use anyhow::{bail, Context, Result};
use tern_client::Admin;

use super::ConnectArgs;

/// ELECTION_NOT_NEEDED: the partition already has the leader the election would choose.
const ELECTION_NOT_NEEDED: i16 = tern_client::ResponseError::ElectionNotNeeded.code();

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElectionType {
    /// Move leadership to the first replica, if it is in the ISR.
    Preferred,
    /// Elect any live replica, in the ISR or not, where a partition has no leader (may lose
    /// acknowledged records).
    Unclean,
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["all_topic_partitions", "topic"])))]
pub struct ElectArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    #[arg(long, value_enum, default_value = "preferred")]
    election_type: ElectionType,
    /// Every partition of every topic (only those that need an election are reported).
    #[arg(long)]
    all_topic_partitions: bool,
    /// The topic whose `--partition`s to elect.
    #[arg(long, requires = "partition")]
    topic: Option<String>,
    /// A partition of `--topic` (repeatable).
    #[arg(long, value_name = "N")]
    partition: Vec<i32>,
}

pub async fn elect_leaders(args: ElectArgs) -> Result<()> {
    let bootstrap = &args.connect.bootstrap_server;
    let admin = Admin::new(bootstrap).await.with_context(|| format!("connecting to {bootstrap}"))?;
    let partitions = args.topic.map(|t| vec![(t, args.partition.clone())]);
    let unclean = args.election_type == ElectionType::Unclean;
    let kind = if unclean { "UNCLEAN" } else { "PREFERRED" };
    let results = admin.elect_leaders(unclean, partitions).await.context("ElectLeaders")?;
    let name = |(t, p, _): &(String, i32, i16)| format!("{t}-{p}");
    let elected: Vec<String> = results.iter().filter(|r| r.2 == 0).map(name).collect();
    let not_needed: Vec<String> = results.iter().filter(|r| r.2 == ELECTION_NOT_NEEDED).map(name).collect();
    let failed: Vec<&(String, i32, i16)> = results.iter().filter(|r| r.2 != 0 && r.2 != ELECTION_NOT_NEEDED).collect();
    if elected.is_empty() && not_needed.is_empty() && failed.is_empty() {
        println!("No partition needed a leader election ({kind}).");
    }
    if !elected.is_empty() {
        println!("Successfully completed leader election ({kind}) for partitions {}", elected.join(", "));
    }
    if !not_needed.is_empty() {
        println!("Valid replica already elected for partitions {}", not_needed.join(", "));
    }
    for (t, p, code) in &failed {
        let error =
            tern_client::ResponseError::try_from_code(*code).map_or(format!("error {code}"), |e| format!("{e:?}"));
        eprintln!("Error completing leader election ({kind}) for partition {t}-{p}: {error}");
    }
    if !failed.is_empty() {
        bail!("{} of {} partitions were not elected", failed.len(), results.len());
    }
    Ok(())
}
