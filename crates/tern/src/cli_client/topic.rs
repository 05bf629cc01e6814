//! `tern topic create|list|describe|alter|delete`.

use std::collections::HashMap;
use std::fmt::Write as _;

use anyhow::{bail, Context, Result};
use tern_client::{Admin, ConfigOp, OffsetSpec, TopicInfo};

use super::{key_value, ConnectArgs};

/// Topic administration.
#[derive(clap::Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create(CreateArgs),
    /// List topic names, one per line.
    List(ListArgs),
    /// Show partitions, leaders, replicas, non-default configs and log offsets of topics.
    Describe(DescribeArgs),
    /// Add partitions to a topic and change its configs.
    Alter(AlterArgs),
    /// Delete topics.
    Delete(DeleteArgs),
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Topic name.
    name: String,
    /// Number of partitions (default: the broker's num.partitions).
    #[arg(short, long, value_name = "N")]
    partitions: Option<i32>,
    /// Replication factor (default: the broker's default.replication.factor).
    #[arg(short, long, value_name = "R")]
    replication_factor: Option<i16>,
    /// Topic config override, e.g. --config retention.ms=3600000 (repeatable).
    #[arg(short, long = "config", value_name = "KEY=VALUE", value_parser = key_value)]
    configs: Vec<(String, String)>,
    /// Ask the broker to validate the request without creating the topic.
    #[arg(long)]
    validate_only: bool,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Include internal topics such as __consumer_offsets.
    #[arg(long)]
    internal: bool,
}

#[derive(clap::Args, Debug)]
pub struct DescribeArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Topics to describe.
    #[arg(required = true, value_name = "NAME")]
    names: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct AlterArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Topic name.
    name: String,
    /// New total number of partitions (partitions can only be added).
    #[arg(short, long, value_name = "N")]
    partitions: Option<i32>,
    /// Set a topic config, e.g. --set-config retention.ms=3600000 (repeatable).
    #[arg(long = "set-config", value_name = "KEY=VALUE", value_parser = key_value)]
    set_configs: Vec<(String, String)>,
    /// Remove a topic config override, reverting to the default (repeatable).
    #[arg(long = "delete-config", value_name = "KEY")]
    delete_configs: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Topics to delete.
    #[arg(required = true, value_name = "NAME")]
    names: Vec<String>,
}

/// Kafka's DescribeConfigs source for a config set on the topic itself.
const SOURCE_TOPIC_CONFIG: i8 = 1;

pub async fn topic(cmd: TopicCommand) -> Result<()> {
    match cmd {
        TopicCommand::Create(a) => create(a).await,
        TopicCommand::List(a) => list(a).await,
        TopicCommand::Describe(a) => describe(a).await,
        TopicCommand::Alter(a) => alter(a).await,
        TopicCommand::Delete(a) => delete(a).await,
    }
}

async fn connect(c: &ConnectArgs) -> Result<Admin> {
    Admin::new(&c.bootstrap_server).await.with_context(|| format!("connecting to {}", c.bootstrap_server))
}

async fn create(a: CreateArgs) -> Result<()> {
    let admin = connect(&a.connect).await?;
    let configs: HashMap<String, String> = a.configs.into_iter().collect();
    admin
        .create_topic(
            &a.name,
            a.partitions.unwrap_or(-1),
            a.replication_factor.unwrap_or(-1),
            &configs,
            a.validate_only,
        )
        .await
        .with_context(|| format!("creating topic {}", a.name))?;
    if a.validate_only {
        println!("Topic {} is valid (not created: --validate-only).", a.name);
    } else {
        println!("Created topic {}.", a.name);
    }
    Ok(())
}

async fn list(a: ListArgs) -> Result<()> {
    let admin = connect(&a.connect).await?;
    let topics = admin.list_topics().await.context("listing topics")?;
    let mut out = String::new();
    for t in topics.iter().filter(|t| a.internal || !t.internal) {
        let _ = writeln!(out, "{}", t.name);
    }
    print!("{out}");
    Ok(())
}

async fn describe(a: DescribeArgs) -> Result<()> {
    let admin = connect(&a.connect).await?;
    let names: Vec<&str> = a.names.iter().map(String::as_str).collect();
    let topics = admin.describe_topics(&names).await.context("describing topics")?;
    let mut out = String::new();
    for t in &topics {
        let configs =
            admin.describe_configs(&t.name).await.with_context(|| format!("describing configs of {}", t.name))?;
        let mut overrides: Vec<String> = configs
            .iter()
            .filter(|c| c.source == SOURCE_TOPIC_CONFIG)
            .map(|c| {
                let v = if c.sensitive { "<sensitive>" } else { c.value.as_deref().unwrap_or("null") };
                format!("{}={v}", c.name)
            })
            .collect();
        overrides.sort();
        let offsets = log_offsets(&admin, t).await?;
        let rf = t.partitions.first().map_or(0, |p| p.replicas.len());
        let _ = writeln!(
            out,
            "Topic: {}\tTopicId: {}\tPartitionCount: {}\tReplicationFactor: {rf}\tConfigs: {}",
            t.name,
            kafka_uuid(t.id.as_bytes()),
            t.partitions.len(),
            overrides.join(",")
        );
        for (p, (start, end)) in t.partitions.iter().zip(offsets) {
            let _ = writeln!(
                out,
                "\tTopic: {}\tPartition: {}\tLeader: {}\tReplicas: {}\tIsr: {}\tLogStartOffset: {start}\tLogEndOffset: {end}",
                t.name,
                p.id,
                if p.leader >= 0 { p.leader.to_string() } else { "none".into() },
                join_ids(&p.replicas),
                join_ids(&p.isr),
            );
        }
    }
    print!("{out}");
    Ok(())
}

/// (log start, log end) of every partition of `t`, in `t.partitions` order.
async fn log_offsets(admin: &Admin, t: &TopicInfo) -> Result<Vec<(i64, i64)>> {
    // The admin client asks for one partition per call; run them side by side.
    let mut tasks = tokio::task::JoinSet::new();
    for (i, p) in t.partitions.iter().enumerate() {
        let (admin, topic, partition) = (admin.clone(), t.name.clone(), p.id);
        tasks.spawn(async move {
            let start = admin.list_offsets(&topic, partition, OffsetSpec::Earliest).await?.0;
            let end = admin.list_offsets(&topic, partition, OffsetSpec::Latest).await?.0;
            Ok::<_, tern_client::Error>((i, start, end))
        });
    }
    let mut out = vec![(-1, -1); t.partitions.len()];
    while let Some(r) = tasks.join_next().await {
        let (i, start, end) =
            r.context("offset lookup task failed")?.with_context(|| format!("listing offsets of {}", t.name))?;
        out[i] = (start, end);
    }
    Ok(out)
}

async fn alter(a: AlterArgs) -> Result<()> {
    if a.partitions.is_none() && a.set_configs.is_empty() && a.delete_configs.is_empty() {
        bail!("nothing to alter: give --partitions, --set-config or --delete-config");
    }
    let admin = connect(&a.connect).await?;
    if let Some(n) = a.partitions {
        admin
            .create_partitions(&a.name, n, false)
            .await
            .with_context(|| format!("setting partitions of {} to {n}", a.name))?;
        println!("Topic {} now has {n} partitions.", a.name);
    }
    let ops: Vec<ConfigOp> = a
        .set_configs
        .into_iter()
        .map(|(k, v)| ConfigOp::Set(k, v))
        .chain(a.delete_configs.into_iter().map(ConfigOp::Delete))
        .collect();
    if !ops.is_empty() {
        admin.alter_configs(&a.name, &ops, false).await.with_context(|| format!("altering configs of {}", a.name))?;
        println!("Updated configs of topic {}.", a.name);
    }
    Ok(())
}

async fn delete(a: DeleteArgs) -> Result<()> {
    let admin = connect(&a.connect).await?;
    let names: Vec<&str> = a.names.iter().map(String::as_str).collect();
    admin.delete_topics(&names).await.context("deleting topics")?;
    for n in &names {
        println!("Deleted topic {n}.");
    }
    Ok(())
}

fn join_ids(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

/// A topic id as Kafka prints it: URL-safe base64 of the 16 bytes, without padding.
fn kafka_uuid(bytes: &[u8; 16]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_ids_print_like_kafka() {
        assert_eq!(kafka_uuid(&[0; 16]), "AAAAAAAAAAAAAAAAAAAAAA");
        let mut b = [0u8; 16];
        b[0] = 0xff;
        b[1] = 0xef;
        assert_eq!(kafka_uuid(&b), "_-8AAAAAAAAAAAAAAAAAAA");
    }
}
