//! `tern quorum`: the controller quorum as a broker sees it (DescribeQuorum), in the shape of
//! Kafka's `kafka-metadata-quorum --bootstrap-server ... describe --status`.

use anyhow::{Context, Result};
use tern_client::Admin;

use super::ConnectArgs;

#[derive(clap::Args, Debug)]
pub struct QuorumArgs {
    #[command(flatten)]
    connect: ConnectArgs,
}

pub async fn quorum(args: QuorumArgs) -> Result<()> {
    let bootstrap = &args.connect.bootstrap_server;
    let admin = Admin::new(bootstrap).await.with_context(|| format!("connecting to {bootstrap}"))?;
    let q = admin.describe_quorum().await.context(
        "DescribeQuorum (answered by cluster nodes; a single node without process.roles runs no controller quorum)",
    )?;
    let leader = if q.leader_id >= 0 { q.leader_id.to_string() } else { "none (an election is under way)".into() };
    let ids: Vec<String> = q.voters.iter().map(|(id, _)| id.to_string()).collect();
    println!("LeaderId:       {leader}");
    println!("LeaderEpoch:    {}", q.leader_epoch);
    println!("HighWatermark:  {}", q.high_watermark);
    println!("CurrentVoters:  [{}]", ids.join(","));
    println!("NodeId\tLogEndOffset\tLag");
    for (id, leo) in &q.voters {
        let (leo, lag) = match *leo {
            -1 => ("unknown".to_string(), "unknown".to_string()),
            leo => (leo.to_string(), (q.high_watermark - leo).max(0).to_string()),
        };
        println!("{id}\t{leo}\t{lag}");
    }
    Ok(())
}
