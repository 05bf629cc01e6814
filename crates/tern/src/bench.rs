//! `tern bench produce|consume`: throughput and latency with the Rust client.
//!
//! Units: MB = 10^6 bytes, GB = 10^9 bytes, counted over record payload (key + value) only,
//! not framing. Every run ends with one line starting `BENCH_RESULT ` followed by
//! space-separated `key=value` pairs (see `Summary::line`); values that do not apply are `na`.
//!
//! Produce latency is per record: from just before `Producer::send` until its delivery future
//! resolves (the broker acknowledged the batch holding it). Futures are awaited in send order by
//! one collector task, so with several partitions a record acknowledged early may be counted
//! only when the records sent before it are; with one partition this matches batch order.
//! Consume reports the time to read everything from the first fetch, plus per-`poll` latency.

mod group;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tern_client::{
    Admin, Compression, Consumer, ConsumerConfig, DeliveryFuture, OffsetSpec, Producer, ProducerConfig, ProducerRecord,
};

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Produce records as fast as possible (or at `--rate`) and report throughput and latency.
    Produce(ProduceArgs),
    /// Read a topic from the beginning to its current end and report throughput.
    Consume(ConsumeArgs),
    /// Time rebalances of a consumer group (JoinGroup/SyncGroup spoken directly).
    Rebalance(group::RebalanceArgs),
    /// Standalone OffsetCommit throughput and latency.
    Commits(group::CommitsArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// Broker address(es), comma-separated host:port.
    #[arg(short = 'b', long = "bootstrap-server", default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Topic to use.
    #[arg(long, default_value = "tern-bench")]
    pub topic: String,
    /// Number of records (default: 1,000,000 for produce, everything for consume).
    #[arg(long, conflicts_with = "bytes")]
    pub records: Option<u64>,
    /// Total payload instead of a record count, e.g. 2G, 500M, 2GiB (k/M/G = 10^3/10^6/10^9,
    /// Ki/Mi/Gi = 2^10/2^20/2^30).
    #[arg(long, value_parser = parse_size)]
    pub bytes: Option<u64>,
    /// Stop after this many seconds even if not done (0 = no limit).
    #[arg(long, default_value_t = 0.0)]
    pub duration_secs: f64,
    /// Broker process id: report its CPU time (utime+stime from /proc/PID/stat) per GB moved.
    #[arg(long)]
    pub broker_pid: Option<u32>,
}

#[derive(clap::Args, Debug)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Partitions of the topic if it has to be created.
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// Value size of each record in bytes (records are keyless).
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// 0, 1 or -1 (all, Kafka's default). The producer is idempotent only with -1.
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    pub acks: i16,
    /// Turn off the idempotent producer (enable.idempotence=false), which is on with --acks -1.
    #[arg(long)]
    pub no_idempotence: bool,
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Producer batch size in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub batch_size: usize,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    pub compression: Compression,
    /// Target records per second (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Produce requests outstanding per broker.
    #[arg(long, default_value_t = 5)]
    pub max_in_flight: usize,
    /// Records sent but not yet acknowledged before `send` waits (0 = 64 MiB worth).
    #[arg(long, default_value_t = 0)]
    pub max_outstanding: usize,
}

#[derive(clap::Args, Debug)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Max bytes per partition per fetch.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub max_partition_fetch_bytes: i32,
    /// Max bytes per fetch response.
    #[arg(long, default_value_t = 50 * 1024 * 1024)]
    pub fetch_max_bytes: i32,
    /// Give up if no record arrives for this many seconds.
    #[arg(long, default_value_t = 30)]
    pub idle_timeout_secs: u64,
}

pub async fn run(cmd: BenchCommand) -> Result<()> {
    let summary = match cmd {
        BenchCommand::Produce(a) => produce(a).await?,
        BenchCommand::Consume(a) => consume(a).await?,
        BenchCommand::Rebalance(a) => group::rebalance_bench(a).await?,
        BenchCommand::Commits(a) => group::commits_bench(a).await?,
    };
    let errors = summary.errors;
    summary.print();
    if errors > 0 {
        bail!("{errors} records failed");
    }
    Ok(())
}

// ------------------------------------------------------------------------------- parsing

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().trim_end_matches('b') {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "t" => 1e12,
        "ki" => 1024.0,
        "mi" => 1024.0 * 1024.0,
        "gi" => 1024.0 * 1024.0 * 1024.0,
        "ti" => 1024.0f64.powi(4),
        _ => return Err(format!("bad size unit in {s:?}")),
    };
    Ok((num * mult).round() as u64)
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        _ => return Err(format!("unknown compression {s:?} (none, gzip, snappy, lz4, zstd)")),
    })
}

// ------------------------------------------------------------------------------- broker CPU

fn clock_ticks_per_sec() -> f64 {
    #[cfg(target_os = "linux")]
    {
        extern "C" {
            fn sysconf(name: std::os::raw::c_int) -> std::os::raw::c_long;
        }
        const SC_CLK_TCK: std::os::raw::c_int = 2; // Linux (glibc and musl)
                                                   // SAFETY: sysconf has no preconditions; it returns -1 for unknown names.
        let t = unsafe { sysconf(SC_CLK_TCK) };
        if t > 0 {
            return t as f64;
        }
    }
    100.0
}

/// utime + stime of `pid` in seconds.
fn process_cpu_secs(pid: u32) -> Result<f64> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let rest = &stat[stat.rfind(')').context("malformed /proc stat")? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based) = indices 11 and 12 here.
    let utime: f64 = f.get(11).context("no utime")?.parse()?;
    let stime: f64 = f.get(12).context("no stime")?.parse()?;
    Ok((utime + stime) / clock_ticks_per_sec())
}

struct CpuMeter {
    pid: Option<u32>,
    start: f64,
}

impl CpuMeter {
    fn start(pid: Option<u32>) -> Result<Self> {
        let start = match pid {
            Some(p) => process_cpu_secs(p)?,
            None => 0.0,
        };
        Ok(CpuMeter { pid, start })
    }

    fn used(&self) -> Option<f64> {
        let p = self.pid?;
        match process_cpu_secs(p) {
            Ok(now) => Some(now - self.start),
            Err(e) => {
                eprintln!("warning: broker CPU not measured: {e:#}");
                None
            }
        }
    }
}

// ------------------------------------------------------------------------------- reporting

#[derive(Debug, Default)]
struct Latencies {
    /// Nanoseconds, unsorted until `percentile` is used.
    samples: Vec<u64>,
    sorted: bool,
}

impl Latencies {
    fn with_capacity(n: usize) -> Self {
        Latencies { samples: Vec::with_capacity(n), sorted: false }
    }

    fn push(&mut self, d: Duration) {
        self.samples.push(d.as_nanos().min(u64::MAX as u128) as u64);
        self.sorted = false;
    }

    /// Nearest-rank percentile in milliseconds (`q` in 0..=1).
    fn percentile_ms(&mut self, q: f64) -> Option<f64> {
        if self.samples.is_empty() {
            return None;
        }
        if !self.sorted {
            self.samples.sort_unstable();
            self.sorted = true;
        }
        let n = self.samples.len();
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        Some(self.samples[rank - 1] as f64 / 1e6)
    }
}

struct Summary {
    kind: &'static str,
    topic: String,
    records: u64,
    bytes: u64,
    elapsed: Duration,
    latency_kind: &'static str,
    latencies: Latencies,
    broker_cpu: Option<f64>,
    errors: u64,
    extra: Vec<(&'static str, String)>,
}

fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    match v {
        Some(v) => format!("{v:.prec$}"),
        None => "na".into(),
    }
}

impl Summary {
    fn line(&mut self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let gb = self.bytes as f64 / 1e9;
        let mut s = format!(
            "BENCH_RESULT kind={} topic={} records={} bytes={} elapsed_s={:.3} records_per_s={:.0} mb_per_s={:.1} \
             latency={} p50_ms={} p99_ms={} p999_ms={} max_ms={} broker_cpu_s={} broker_cpu_s_per_gb={} errors={}",
            self.kind,
            self.topic,
            self.records,
            self.bytes,
            secs,
            self.records as f64 / secs,
            self.bytes as f64 / 1e6 / secs,
            self.latency_kind,
            fmt_opt(self.latencies.percentile_ms(0.50), 3),
            fmt_opt(self.latencies.percentile_ms(0.99), 3),
            fmt_opt(self.latencies.percentile_ms(0.999), 3),
            fmt_opt(self.latencies.percentile_ms(1.0), 3),
            fmt_opt(self.broker_cpu, 2),
            fmt_opt(self.broker_cpu.filter(|_| gb > 0.0).map(|c| c / gb), 3),
            self.errors,
        );
        for (k, v) in &self.extra {
            s.push_str(&format!(" {k}={v}"));
        }
        s
    }

    fn print(mut self) {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        println!(
            "{}: {} records, {:.1} MB in {:.2} s = {:.0} records/s, {:.1} MB/s",
            self.kind,
            self.records,
            self.bytes as f64 / 1e6,
            secs,
            self.records as f64 / secs,
            self.bytes as f64 / 1e6 / secs
        );
        if !self.latencies.samples.is_empty() {
            println!(
                "{} latency ({}): p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms",
                self.kind,
                self.latency_kind,
                fmt_opt(self.latencies.percentile_ms(0.50), 3),
                fmt_opt(self.latencies.percentile_ms(0.99), 3),
                fmt_opt(self.latencies.percentile_ms(0.999), 3),
                fmt_opt(self.latencies.percentile_ms(1.0), 3),
            );
        }
        if let Some(cpu) = self.broker_cpu {
            let gb = self.bytes as f64 / 1e9;
            println!(
                "broker CPU: {:.2} s ({:.0}% of one core), {} CPU-s/GB",
                cpu,
                cpu / secs * 100.0,
                fmt_opt(Some(cpu / gb).filter(|_| gb > 0.0), 3)
            );
        }
        println!("{}", self.line());
    }
}

fn progress(total: u64, unit: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(4));
    let template = format!("{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {unit} {{per_sec}} eta {{eta}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

// ------------------------------------------------------------------------------- produce

async fn ensure_topic(admin: &Admin, topic: &str, partitions: i32) -> Result<i32> {
    if let Ok(infos) = admin.describe_topics(&[topic]).await {
        if let Some(t) = infos.iter().find(|t| t.name == topic && t.error_code == 0 && !t.partitions.is_empty()) {
            return Ok(t.partitions.len() as i32);
        }
    }
    match admin.create_topic(topic, partitions, -1, &HashMap::new(), false).await {
        Ok(_) => {}
        Err(e) if e.to_string().to_ascii_lowercase().contains("exist") => {}
        Err(e) => return Err(e).with_context(|| format!("creating topic {topic}")),
    }
    // Wait until metadata shows the topic.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(infos) = admin.describe_topics(&[topic]).await {
            if let Some(t) = infos.iter().find(|t| t.name == topic && t.error_code == 0 && !t.partitions.is_empty()) {
                return Ok(t.partitions.len() as i32);
            }
        }
        if Instant::now() > deadline {
            bail!("topic {topic} did not appear in metadata");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Incompressible-looking payload pool (xorshift letters) that record values are sliced from.
fn payload_pool(record_size: usize) -> Bytes {
    let len = record_size + 1024 * 1024;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let v: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'A' + (x % 26) as u8
        })
        .collect();
    Bytes::from(v)
}

async fn produce(a: ProduceArgs) -> Result<Summary> {
    let c = &a.common;
    if a.record_size == 0 {
        bail!("--record-size must be > 0");
    }
    let target = match (c.records, c.bytes) {
        (Some(n), _) => n,
        (None, Some(b)) => b.div_ceil(a.record_size as u64),
        (None, None) => 1_000_000,
    };
    let admin = Admin::new(&c.bootstrap).await.context("connecting admin client")?;
    let partitions = ensure_topic(&admin, &c.topic, a.partitions).await?;
    let outstanding =
        if a.max_outstanding > 0 { a.max_outstanding } else { (64 * 1024 * 1024 / a.record_size).max(1000) };
    // Like Kafka's clients, idempotence is on unless acks is not "all" or it is turned off.
    let idempotence = a.acks == -1 && !a.no_idempotence;
    let defaults = ProducerConfig::default();
    let config = ProducerConfig {
        bootstrap: c.bootstrap.clone(),
        client_id: "tern-bench".into(),
        acks: a.acks,
        enable_idempotence: idempotence,
        linger: Duration::from_millis(a.linger_ms),
        batch_size: a.batch_size,
        compression: a.compression,
        max_in_flight: a.max_in_flight,
        max_request_size: (a.batch_size + 64 * 1024).max(1024 * 1024),
        // `--max-outstanding` is the bound here, not the producer's buffer.
        buffer_memory: defaults.buffer_memory.max(outstanding.saturating_mul(a.record_size + 64)),
        buffer_max_records: defaults.buffer_max_records.max(outstanding),
        ..defaults
    };
    let producer = Producer::new(config).await.context("starting producer")?;
    let pool = payload_pool(a.record_size);
    let window = pool.len() - a.record_size;

    // Warm up metadata (first send waits for it) so it is not in the measurement.
    producer
        .send(ProducerRecord::new(c.topic.clone(), pool.slice(0..a.record_size)))
        .await
        .context("queueing the warm-up record")?
        .await
        .context("warm-up record")?;

    let pb = progress(target, "records");
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Instant, tern_client::Result<DeliveryFuture>)>(outstanding);
    let collector = {
        let pb = pb.clone();
        tokio::spawn(async move {
            let mut lat = Latencies::with_capacity(target.min(50_000_000) as usize);
            let mut errors = 0u64;
            let mut first_error: Option<String> = None;
            let mut n = 0u64;
            while let Some((t0, queued)) = rx.recv().await {
                let delivered = match queued {
                    Ok(fut) => fut.await,
                    Err(e) => Err(e),
                };
                match delivered {
                    Ok(_) => lat.push(t0.elapsed()),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
                n += 1;
                if n & 4095 == 0 {
                    pb.set_position(n);
                }
            }
            pb.set_position(n);
            (lat, errors, first_error)
        })
    };

    let cpu = CpuMeter::start(c.broker_pid)?;
    let start = Instant::now();
    let stop_at = (c.duration_secs > 0.0).then(|| start + Duration::from_secs_f64(c.duration_secs));
    let interval = (a.rate > 0).then(|| Duration::from_secs_f64(1.0 / a.rate as f64));
    let mut sent = 0u64;
    let mut off = 0usize;
    while sent < target {
        if let Some(iv) = interval {
            let due = start + iv.mul_f64(sent as f64);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        if sent & 1023 == 0 && stop_at.is_some_and(|s| Instant::now() >= s) {
            break;
        }
        let permit = tx.reserve().await.context("collector stopped")?;
        let value = pool.slice(off..off + a.record_size);
        off = (off + 4099) % window;
        let t0 = Instant::now();
        let queued = producer.send(ProducerRecord::new(c.topic.clone(), value)).await;
        permit.send((t0, queued));
        sent += 1;
    }
    drop(tx);
    let (lat, errors, first_error) = collector.await.context("collector task")?;
    let elapsed = start.elapsed();
    let broker_cpu = cpu.used();
    pb.finish_and_clear();
    producer.close().await.ok();
    if let Some(e) = first_error {
        eprintln!("error: {errors} records failed; first: {e}");
    }
    let ok = sent - errors;
    Ok(Summary {
        kind: "produce",
        topic: c.topic.clone(),
        records: ok,
        bytes: ok * a.record_size as u64,
        elapsed,
        latency_kind: "per-record-send-to-ack",
        latencies: lat,
        broker_cpu,
        errors,
        extra: vec![
            ("partitions", partitions.to_string()),
            ("record_size", a.record_size.to_string()),
            ("acks", a.acks.to_string()),
            ("idempotence", idempotence.to_string()),
            ("linger_ms", a.linger_ms.to_string()),
            ("batch_size", a.batch_size.to_string()),
            ("compression", format!("{:?}", a.compression).to_ascii_lowercase()),
            ("rate", a.rate.to_string()),
        ],
    })
}

// ------------------------------------------------------------------------------- consume

async fn consume(a: ConsumeArgs) -> Result<Summary> {
    let c = &a.common;
    let admin = Admin::new(&c.bootstrap).await.context("connecting admin client")?;
    let infos = admin.describe_topics(&[c.topic.as_str()]).await?;
    let info = infos
        .iter()
        .find(|t| t.name == c.topic && t.error_code == 0)
        .with_context(|| format!("topic {} not found", c.topic))?;
    // Read each partition from its start to its end as of now.
    let mut ranges: HashMap<i32, (i64, i64)> = HashMap::new();
    for p in &info.partitions {
        let (lo, _) = admin.list_offsets(&c.topic, p.id, OffsetSpec::Earliest).await?;
        let (hi, _) = admin.list_offsets(&c.topic, p.id, OffsetSpec::Latest).await?;
        if hi > lo {
            ranges.insert(p.id, (lo, hi));
        }
    }
    let available: u64 = ranges.values().map(|(lo, hi)| (hi - lo) as u64).sum();
    let record_limit = c.records.unwrap_or(u64::MAX).min(available);
    let byte_limit = c.bytes.unwrap_or(u64::MAX);

    let mut consumer = Consumer::new(ConsumerConfig {
        bootstrap: c.bootstrap.clone(),
        client_id: "tern-bench".into(),
        max_partition_fetch_bytes: a.max_partition_fetch_bytes,
        fetch_max_bytes: a.fetch_max_bytes,
        ..ConsumerConfig::default()
    })
    .await
    .context("starting consumer")?;
    consumer.assign(ranges.iter().map(|(&p, &(lo, _))| (c.topic.clone(), p, OffsetSpec::Offset(lo))).collect());
    let mut remaining: HashMap<i32, i64> = ranges.iter().map(|(&p, &(_, hi))| (p, hi)).collect();

    let (pb, pb_bytes) = if c.bytes.is_some() {
        (progress(byte_limit, "bytes"), true)
    } else {
        (progress(record_limit, "records"), false)
    };
    let mut lat = Latencies::with_capacity(100_000);
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut first_record: Option<Duration> = None;
    let cpu = CpuMeter::start(c.broker_pid)?;
    let start = Instant::now();
    let stop_at = (c.duration_secs > 0.0).then(|| start + Duration::from_secs_f64(c.duration_secs));
    let mut last_progress = Instant::now();
    let mut timed_out = false;
    'outer: while records < record_limit && bytes < byte_limit && !remaining.is_empty() {
        if stop_at.is_some_and(|s| Instant::now() >= s) {
            timed_out = true;
            break;
        }
        let t0 = Instant::now();
        let batch = consumer.poll().await?;
        lat.push(t0.elapsed());
        if batch.is_empty() {
            if last_progress.elapsed() > Duration::from_secs(a.idle_timeout_secs) {
                eprintln!("warning: no records for {} s; stopping", a.idle_timeout_secs);
                timed_out = true;
                break;
            }
            continue;
        }
        last_progress = Instant::now();
        first_record.get_or_insert_with(|| start.elapsed());
        for r in &batch {
            if remaining.get(&r.partition).is_none_or(|&hi| r.offset >= hi) {
                continue;
            }
            records += 1;
            bytes += (r.value.as_ref().map_or(0, |v| v.len()) + r.key.as_ref().map_or(0, |k| k.len())) as u64;
            if r.offset + 1 >= remaining[&r.partition] {
                remaining.remove(&r.partition);
            }
            if records >= record_limit || bytes >= byte_limit {
                break 'outer;
            }
        }
        pb.set_position(if pb_bytes { bytes } else { records });
    }
    let elapsed = start.elapsed();
    let broker_cpu = cpu.used();
    pb.finish_and_clear();
    Ok(Summary {
        kind: "consume",
        topic: c.topic.clone(),
        records,
        bytes,
        elapsed,
        latency_kind: "per-poll",
        latencies: lat,
        broker_cpu,
        errors: 0,
        extra: vec![
            ("partitions", info.partitions.len().to_string()),
            ("first_record_ms", fmt_opt(first_record.map(|d| d.as_secs_f64() * 1e3), 3)),
            ("complete", (!timed_out).to_string()),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2G").unwrap(), 2_000_000_000);
        assert_eq!(parse_size("2GB").unwrap(), 2_000_000_000);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("1.5k").unwrap(), 1500);
        assert!(parse_size("3x").is_err());
    }

    #[test]
    fn percentiles() {
        let mut l = Latencies::default();
        for i in 1..=1000u64 {
            l.push(Duration::from_micros(i * 1000));
        }
        assert_eq!(l.percentile_ms(0.5), Some(500.0));
        assert_eq!(l.percentile_ms(0.99), Some(990.0));
        assert_eq!(l.percentile_ms(0.999), Some(999.0));
        assert_eq!(l.percentile_ms(1.0), Some(1000.0));
    }

    #[test]
    fn own_cpu_time_is_readable() {
        assert!(process_cpu_secs(std::process::id()).unwrap() >= 0.0);
    }
}
