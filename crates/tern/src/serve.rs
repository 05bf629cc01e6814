//! `tern serve`: one broker process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tern_broker::config::{check_broker_setting, parse_properties, split_listeners, DEFAULT_PROTOCOL_MAP};
use tern_broker::{open_files, Broker, BrokerConfig};

/// The commented default configuration, embedded in the binary.
pub const DEFAULT_CONFIG: &str = include_str!("../../../config/server.properties");

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on for Kafka clients (default 127.0.0.1:9092, or `listeners` from the config).
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Directory for the partition logs (default ./data, or `log.dirs` from the config).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// A server.properties-style file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override one setting, e.g. --set num.partitions=3 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Print the embedded default configuration and exit.
    #[arg(long)]
    pub print_config: bool,
}

fn build_config(args: &ServeArgs) -> Result<BrokerConfig> {
    // Every value is checked where it was given, so an error names its file or `--set`.
    let mut props: BTreeMap<String, String> = BTreeMap::new();
    let mut add = |text: BTreeMap<String, String>, origin: &str| -> Result<()> {
        for (key, value) in text {
            check_broker_setting(&key, &value).with_context(|| format!("in {origin}"))?;
            props.insert(key, value);
        }
        Ok(())
    };
    add(parse_properties(DEFAULT_CONFIG), "the embedded default configuration")?;
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading --config {}", path.display()))?;
        add(parse_properties(&text), &format!("--config {}", path.display()))?;
    }
    for o in &args.overrides {
        let Some((k, v)) = o.split_once('=') else { bail!("--set expects KEY=VALUE, got {o:?}") };
        add([(k.trim().to_string(), v.trim().to_string())].into(), &format!("--set {o}"))?;
    }
    let protocol_map = props.get("listener.security.protocol.map").cloned().unwrap_or_default();
    let listen = match (&args.listen, props.get("listeners")) {
        (Some(l), _) => l.clone(),
        (None, Some(l)) => {
            let map = if protocol_map.is_empty() { DEFAULT_PROTOCOL_MAP } else { &protocol_map };
            let controller_names: Vec<String> = props
                .get("controller.listener.names")
                .map(|v| v.split(',').map(|n| n.trim().to_string()).collect())
                .unwrap_or_default();
            let ((host, port), _) = split_listeners("listeners", l, map, &controller_names)?;
            // Kafka: an empty host binds every interface.
            let host = if host.is_empty() { "0.0.0.0".to_string() } else { host };
            if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            }
        }
        (None, None) => "127.0.0.1:9092".to_string(),
    };
    let listen: SocketAddr = match listen.parse() {
        Ok(a) => a,
        Err(_) => std::net::ToSocketAddrs::to_socket_addrs(&listen)
            .with_context(|| format!("resolving listen address {listen}"))?
            .next()
            .with_context(|| format!("no address for {listen}"))?,
    };
    let data_dir = match (&args.data_dir, props.get("log.dirs").or(props.get("log.dir"))) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) => {
            let dirs: Vec<&str> = d.split(',').map(str::trim).filter(|d| !d.is_empty()).collect();
            match dirs[..] {
                [one] => PathBuf::from(one),
                _ => bail!("log.dirs={d}: this broker stores its data in exactly one directory, not {}", dirs.len()),
            }
        }
        (None, None) => PathBuf::from("data"),
    };
    let config = BrokerConfig::new(listen, data_dir, props)?;
    let unused = config.unused_keys();
    if !unused.is_empty() {
        // Kafka's AbstractConfig.logUnused, once for all of them.
        tracing::warn!("These configurations '[{}]' were supplied but are not used yet.", unused.join(", "));
    }
    Ok(config)
}

/// The data directory, created if missing; an error names it.
fn prepare_data_dir(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        bail!("data directory {} is not a directory", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("data directory {} cannot be created", dir.display()))
}

pub async fn run(args: ServeArgs) -> Result<()> {
    if args.print_config {
        print!("{DEFAULT_CONFIG}");
        return Ok(());
    }
    let config = build_config(&args)?;
    let listen = config.listen;
    let data_dir = config.data_dir.clone();
    prepare_data_dir(&data_dir)?;
    // Every partition keeps files open: take all the open-file limit allows, before opening them.
    match open_files::raise_to_hard_limit() {
        Ok((before, after)) if before != after => {
            tracing::info!(from = ?before.soft, to = ?after.soft, "raised the open-file limit to the hard limit")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let broker = tokio::task::spawn_blocking(move || Broker::open(config))
        .await?
        .with_context(|| format!("opening data directory {}", data_dir.display()))?;
    match open_files::room() {
        Some(room) => tracing::info!(
            open_file_limit = room.limit,
            open_files = room.in_use,
            kept_free = room.reserve,
            "room for {} more partitions (one open file each)",
            room.partitions
        ),
        None => tracing::info!("no open-file limit: partitions are not bounded by it"),
    }
    let cluster = match broker.config.cluster.is_some() {
        true => Some(tern_broker::cluster::start(&broker).await.map_err(anyhow::Error::msg)?),
        false => None,
    };
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    tracing::info!(listen = %listener.local_addr()?, data_dir = %data_dir.display(), cluster_id = broker.cluster_id, "tern broker started");
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let background = tokio::spawn(broker.clone().run_background_tasks());
    let server = tokio::spawn(tern_broker::serve(listener, broker.clone(), shutdown_rx));
    wait_for_signal().await;
    tracing::info!("shutting down");
    if let Some(cluster) = &cluster {
        cluster.controlled_shutdown(std::time::Duration::from_secs(10)).await;
    }
    let _ = shutdown_tx.send(true);
    let _ = server.await;
    background.abort();
    tokio::task::spawn_blocking(move || broker.shutdown()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
