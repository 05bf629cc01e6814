//! `tern produce`: one record per stdin line, many sends in flight.

use std::collections::VecDeque;
use std::io::BufRead;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use tern_client::{Compression, DeliveryFuture, Producer, ProducerConfig, ProducerRecord};
use tokio::sync::mpsc;

use super::{human_bytes, key_value, spinner, ConnectArgs};

/// Errors printed individually before only the count is reported.
const MAX_REPORTED_ERRORS: u64 = 10;
/// Lines the stdin reader hands over at once when more input is already buffered.
const READ_CHUNK: usize = 1024;

#[derive(clap::Args, Debug)]
#[command(after_help = "Example:\n  printf 'k1:hello\\nk2:world\\n' | tern produce -t events --key-separator :")]
pub struct ProduceArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Topic to produce to.
    #[arg(short, long)]
    topic: String,
    /// Split each line at the first SEP into key and value; lines without SEP fail.
    /// Without this option records have no key.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// Send every record to this partition instead of choosing by key (murmur2) or sticky.
    #[arg(short, long, value_name = "P")]
    partition: Option<i32>,
    /// Acknowledgements to wait for: 0 (none), 1 (leader) or -1/all (all in-sync replicas).
    /// With -1 the producer is idempotent (a retried batch is written once, in order).
    #[arg(long, default_value = "-1", value_parser = parse_acks, allow_negative_numbers = true)]
    acks: i16,
    /// Turn off the idempotent producer (enable.idempotence=false).
    #[arg(long)]
    no_idempotence: bool,
    /// Compression codec for record batches.
    #[arg(long, value_enum, default_value_t = Codec::None)]
    compression: Codec,
    /// How long a partition's batch may wait for more records before it is sent.
    #[arg(long, value_name = "MS", default_value_t = 5)]
    linger_ms: u64,
    /// Header added to every record, e.g. --header source=cli (repeatable).
    #[arg(long = "header", value_name = "KEY=VALUE", value_parser = key_value)]
    headers: Vec<(String, String)>,
    /// Target size of one partition's batch, in bytes before compression.
    #[arg(long, value_name = "BYTES", default_value_t = 256 * 1024)]
    batch_size: usize,
    /// Most records awaiting acknowledgement at once; reading stdin pauses beyond this.
    #[arg(long, value_name = "N", default_value_t = 50_000)]
    max_pending: usize,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl From<Codec> for Compression {
    fn from(c: Codec) -> Self {
        match c {
            Codec::None => Compression::None,
            Codec::Gzip => Compression::Gzip,
            Codec::Snappy => Compression::Snappy,
            Codec::Lz4 => Compression::Lz4,
            Codec::Zstd => Compression::Zstd,
        }
    }
}

fn parse_acks(s: &str) -> Result<i16, String> {
    match s {
        "0" => Ok(0),
        "1" => Ok(1),
        "-1" | "all" => Ok(-1),
        _ => Err(format!("acks must be 0, 1, -1 or all, not {s:?}")),
    }
}

/// Splits `line` into (key, value) at the first `sep`.
fn split_key<'a>(line: &'a [u8], sep: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    if sep.is_empty() || sep.len() > line.len() {
        return None;
    }
    let i = line.windows(sep.len()).position(|w| w == sep)?;
    Some((&line[..i], &line[i + sep.len()..]))
}

/// Reads stdin on a plain thread (stdin is blocking) and hands lines over in chunks: as many as
/// are already buffered, so a fast pipe is cheap and an interactive line is sent at once.
fn spawn_stdin_reader() -> mpsc::Receiver<std::io::Result<Vec<Vec<u8>>>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut reader = std::io::BufReader::with_capacity(1 << 16, std::io::stdin().lock());
        loop {
            let mut chunk = Vec::new();
            let mut eof = false;
            while chunk.len() < READ_CHUNK {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(_) => {
                        if line.last() == Some(&b'\n') {
                            line.pop();
                            if line.last() == Some(&b'\r') {
                                line.pop();
                            }
                        }
                        chunk.push(line);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
                if reader.buffer().is_empty() {
                    break;
                }
            }
            if !chunk.is_empty() && tx.blocking_send(Ok(chunk)).is_err() {
                return;
            }
            if eof {
                return;
            }
        }
    });
    rx
}

struct Stats {
    records: u64,
    bytes: u64,
    acked: u64,
    failed: u64,
}

impl Stats {
    fn fail(&mut self, pb: &indicatif::ProgressBar, what: impl std::fmt::Display) {
        self.failed += 1;
        if self.failed <= MAX_REPORTED_ERRORS {
            pb.suspend(|| eprintln!("error: {what}"));
        } else if self.failed == MAX_REPORTED_ERRORS + 1 {
            pb.suspend(|| eprintln!("error: more records failed; only the count is reported from here on"));
        }
    }

    fn settle(&mut self, pb: &indicatif::ProgressBar, line: u64, r: tern_client::Result<tern_client::RecordMetadata>) {
        match r {
            Ok(_) => {
                self.acked += 1;
                pb.inc(1);
            }
            Err(e) => self.fail(pb, format_args!("line {line}: {e}")),
        }
    }
}

pub async fn produce(args: ProduceArgs) -> Result<()> {
    // Like Kafka's clients, idempotence is on unless acks is not "all" or it is turned off.
    let idempotence = args.acks == -1 && !args.no_idempotence;
    let producer = Producer::new(ProducerConfig {
        bootstrap: args.connect.bootstrap_server.clone(),
        client_id: "tern-produce".into(),
        acks: args.acks,
        enable_idempotence: idempotence,
        linger: Duration::from_millis(args.linger_ms),
        compression: args.compression.into(),
        batch_size: args.batch_size.max(1),
        // Lines keep their order: with idempotence also across retries of pipelined requests;
        // without it only one request at a time can promise that.
        max_in_flight: if idempotence { 5 } else { 1 },
        ..ProducerConfig::default()
    })
    .await
    .with_context(|| format!("connecting to {}", args.connect.bootstrap_server))?;
    let separator = args.key_separator.as_deref().map(str::as_bytes);
    let headers: Vec<(String, Option<Bytes>)> =
        args.headers.iter().map(|(k, v)| (k.clone(), Some(Bytes::copy_from_slice(v.as_bytes())))).collect();
    let max_pending = args.max_pending.max(1);
    let topic: Arc<str> = Arc::from(args.topic.as_str());

    let pb = spinner("{spinner} {pos} records acknowledged ({per_sec}), {msg} [{elapsed}]", true);
    let start = Instant::now();
    let mut lines = spawn_stdin_reader();
    let mut pending: VecDeque<(u64, DeliveryFuture)> = VecDeque::new();
    let mut stats = Stats { records: 0, bytes: 0, acked: 0, failed: 0 };
    let mut eof = false;
    while !eof || !pending.is_empty() {
        tokio::select! {
            biased;
            r = async { (&mut pending.front_mut().expect("branch enabled only when non-empty").1).await },
                if !pending.is_empty() =>
            {
                let (line, _) = pending.pop_front().expect("non-empty");
                stats.settle(&pb, line, r);
            }
            chunk = lines.recv(), if !eof && pending.len() < max_pending => {
                let chunk = match chunk {
                    None => {
                        eof = true;
                        // Nothing more is coming: send what lingers now.
                        producer.flush().await?;
                        continue;
                    }
                    Some(c) => c.context("reading stdin")?,
                };
                for line in chunk {
                    stats.records += 1;
                    let (key, value) = match separator {
                        None => (None, Bytes::from(line)),
                        Some(sep) => match split_key(&line, sep) {
                            Some((k, v)) => (Some(Bytes::copy_from_slice(k)), Bytes::copy_from_slice(v)),
                            None => {
                                let (n, sep) = (stats.records, String::from_utf8_lossy(sep));
                                stats.fail(&pb, format_args!("line {n}: no key separator {sep:?}"));
                                continue;
                            }
                        },
                    };
                    stats.bytes += (key.as_ref().map_or(0, Bytes::len) + value.len()) as u64;
                    let record = ProducerRecord {
                        topic: topic.to_string(),
                        partition: args.partition,
                        key,
                        value: Some(value),
                        headers: headers.clone(),
                        timestamp: None,
                    };
                    // Waits while the producer's buffer is full (back-pressure on stdin).
                    match producer.send(record).await {
                        Ok(delivery) => pending.push_back((stats.records, delivery)),
                        Err(e) => {
                            let n = stats.records;
                            stats.fail(&pb, format_args!("line {n}: {e}"));
                        }
                    }
                }
                pb.set_message(format!("{} read", stats.records));
            }
        }
    }
    producer.close().await.context("closing the producer")?;
    pb.finish_and_clear();

    let secs = start.elapsed().as_secs_f64();
    let rate = if secs > 0.0 { stats.acked as f64 / secs } else { 0.0 };
    eprintln!(
        "Produced {} of {} records ({}) to {} in {secs:.2}s ({rate:.0} records/s){}",
        stats.acked,
        stats.records,
        human_bytes(stats.bytes),
        args.topic,
        if stats.failed > 0 { format!(", {} failed", stats.failed) } else { String::new() },
    );
    if stats.failed > 0 {
        return Err(anyhow!("{} of {} records were not produced", stats.failed, stats.records));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_at_the_first_separator() {
        assert_eq!(split_key(b"k:v:w", b":"), Some((&b"k"[..], &b"v:w"[..])));
        assert_eq!(split_key(b"k::v", b"::"), Some((&b"k"[..], &b"v"[..])));
        assert_eq!(split_key(b":v", b":"), Some((&b""[..], &b"v"[..])));
        assert_eq!(split_key(b"kv", b":"), None);
        assert_eq!(split_key(b"", b":"), None);
    }

    #[test]
    fn acks_accept_kafka_spellings() {
        assert_eq!(parse_acks("all"), Ok(-1));
        assert_eq!(parse_acks("-1"), Ok(-1));
        assert_eq!(parse_acks("0"), Ok(0));
        assert!(parse_acks("2").is_err());
    }
}
