//! Broker and topic configuration, by Apache Kafka's names and defaults.
//!
//! The broker reads a `server.properties`-style file plus `--set key=value` overrides.
//! Topic configs fall back to the broker's `log.*` settings, which fall back to Kafka's defaults.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use tern_storage::{CleanupPolicy, CompressionType, LogConfig, TimestampType};

/// A configuration problem, reported to clients as INVALID_CONFIG.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Value type of a config, used to validate values the way Kafka does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Long,
    Int,
    Double,
    Boolean,
    String,
    List,
}

/// One topic-level config: its name, type, default and the broker setting that overrides the default.
pub struct TopicConfigDef {
    pub name: &'static str,
    pub kind: ConfigType,
    pub default: &'static str,
    pub broker_key: Option<&'static str>,
    /// Allowed values for enumerations.
    pub choices: &'static [&'static str],
    /// Kafka's validator for numbers: the smallest and largest value accepted.
    pub range: (f64, f64),
}

const LONG_MAX: &str = "9223372036854775807";
const ANY: (f64, f64) = (f64::NEG_INFINITY, f64::INFINITY);

const fn at_least(min: f64) -> (f64, f64) {
    (min, f64::INFINITY)
}

macro_rules! topic_config {
    ($name:expr, $kind:ident, $default:expr, $broker:expr) => {
        topic_config!($name, $kind, $default, $broker, &[], ANY)
    };
    ($name:expr, $kind:ident, $default:expr, $broker:expr, range $range:expr) => {
        topic_config!($name, $kind, $default, $broker, &[], $range)
    };
    ($name:expr, $kind:ident, $default:expr, $broker:expr, $choices:expr) => {
        topic_config!($name, $kind, $default, $broker, $choices, ANY)
    };
    ($name:expr, $kind:ident, $default:expr, $broker:expr, $choices:expr, $range:expr) => {
        TopicConfigDef {
            name: $name,
            kind: ConfigType::$kind,
            default: $default,
            broker_key: $broker,
            choices: $choices,
            range: $range,
        }
    };
}

/// Kafka's `compression.type` values.
pub const COMPRESSION_TYPES: &[&str] = &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"];

/// Every topic config Tern accepts, as in Kafka's `TopicConfig`, with Kafka's validators
/// (`LogConfig`). Each is honoured; `min.insync.replicas` and `unclean.leader.election.enable`
/// concern replicas, of which a single node has one (`min.insync.replicas` is capped by the
/// replication factor, as Kafka 3.7+ does, so acks=-1 is served).
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    topic_config!("cleanup.policy", List, "delete", Some("log.cleanup.policy"), &["delete", "compact"]),
    topic_config!("compression.type", String, "producer", Some("compression.type"), COMPRESSION_TYPES),
    topic_config!("delete.retention.ms", Long, "86400000", Some("log.cleaner.delete.retention.ms"), range at_least(0.0)),
    topic_config!("file.delete.delay.ms", Long, "60000", Some("log.segment.delete.delay.ms"), range at_least(0.0)),
    topic_config!("flush.messages", Long, LONG_MAX, Some("log.flush.interval.messages"), range at_least(1.0)),
    topic_config!("flush.ms", Long, LONG_MAX, Some("log.flush.interval.ms"), range at_least(0.0)),
    topic_config!("index.interval.bytes", Int, "4096", Some("log.index.interval.bytes"), range at_least(0.0)),
    topic_config!("max.compaction.lag.ms", Long, LONG_MAX, Some("log.cleaner.max.compaction.lag.ms"), range at_least(1.0)),
    topic_config!("max.message.bytes", Int, "1048588", Some("message.max.bytes"), range at_least(0.0)),
    topic_config!(
        "message.timestamp.after.max.ms",
        Long,
        LONG_MAX,
        Some("log.message.timestamp.after.max.ms"),
        range at_least(0.0)
    ),
    topic_config!(
        "message.timestamp.before.max.ms",
        Long,
        LONG_MAX,
        Some("log.message.timestamp.before.max.ms"),
        range at_least(0.0)
    ),
    topic_config!(
        "message.timestamp.type",
        String,
        "CreateTime",
        Some("log.message.timestamp.type"),
        &["CreateTime", "LogAppendTime"]
    ),
    topic_config!("min.cleanable.dirty.ratio", Double, "0.5", Some("log.cleaner.min.cleanable.ratio"), &[], (0.0, 1.0)),
    topic_config!("min.compaction.lag.ms", Long, "0", Some("log.cleaner.min.compaction.lag.ms"), range at_least(0.0)),
    topic_config!("min.insync.replicas", Int, "1", Some("min.insync.replicas"), range at_least(1.0)),
    topic_config!("preallocate", Boolean, "false", Some("log.preallocate")),
    topic_config!("retention.bytes", Long, "-1", Some("log.retention.bytes")),
    topic_config!("retention.ms", Long, "604800000", Some("log.retention.ms"), range at_least(-1.0)),
    topic_config!("segment.bytes", Int, "1073741824", Some("log.segment.bytes"), range at_least(14.0)),
    topic_config!("segment.index.bytes", Int, "10485760", Some("log.index.size.max.bytes"), range at_least(4.0)),
    topic_config!("segment.jitter.ms", Long, "0", Some("log.roll.jitter.ms"), range at_least(0.0)),
    topic_config!("segment.ms", Long, "604800000", Some("log.roll.ms"), range at_least(1.0)),
    topic_config!("unclean.leader.election.enable", Boolean, "false", Some("unclean.leader.election.enable")),
];

pub fn topic_config_def(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// A broker setting that is not a topic default: Kafka's name, type, default (None: unset
/// unless given) and the values accepted here.
pub struct BrokerConfigDef {
    pub name: &'static str,
    pub kind: ConfigType,
    pub default: Option<&'static str>,
    /// For strings: the only values accepted (empty: any).
    pub choices: &'static [&'static str],
    pub range: (f64, f64),
    /// Why values outside `choices`/`range` that Kafka would accept are refused here.
    pub why: &'static str,
}

macro_rules! broker_config {
    ($name:expr, $kind:ident, $default:expr) => {
        broker_config!($name, $kind, $default, ANY, &[], "")
    };
    ($name:expr, $kind:ident, $default:expr, $range:expr) => {
        broker_config!($name, $kind, $default, $range, &[], "")
    };
    ($name:expr, $kind:ident, $default:expr, $range:expr, $choices:expr, $why:expr) => {
        BrokerConfigDef {
            name: $name,
            kind: ConfigType::$kind,
            default: $default,
            choices: $choices,
            range: $range,
            why: $why,
        }
    };
}

/// Kafka's default `listener.security.protocol.map`.
pub const DEFAULT_PROTOCOL_MAP: &str = "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL";

/// Every broker setting Tern knows besides the broker synonyms of [`TOPIC_CONFIGS`], with
/// Kafka's defaults and validators; all are honoured. This table and `TOPIC_CONFIGS` are the
/// one place a setting becomes known: any other key is listed at start-up as unused.
pub const BROKER_CONFIGS: &[BrokerConfigDef] = &[
    broker_config!("node.id", Int, Some("1"), (0.0, i32::MAX as f64)),
    // Checked together in `BrokerConfig::new`: one PLAINTEXT listener.
    broker_config!("listeners", String, None),
    broker_config!("advertised.listeners", String, None),
    broker_config!("listener.security.protocol.map", List, Some(DEFAULT_PROTOCOL_MAP)),
    // The data directory (`tern serve` reads these: one directory).
    broker_config!("log.dirs", String, None),
    broker_config!("log.dir", String, None),
    broker_config!("auto.create.topics.enable", Boolean, Some("true")),
    broker_config!("num.partitions", Int, Some("1"), at_least(1.0)),
    // More than 1 only in a cluster (`process.roles` set): checked in `BrokerConfig::new`.
    broker_config!("default.replication.factor", Int, Some("1"), (1.0, i16::MAX as f64)),
    // KRaft mode (a replicated cluster): unset, the broker is a single node that keeps its own
    // metadata. Only combined nodes (both roles) are implemented yet.
    broker_config!(
        "process.roles",
        List,
        None,
        ANY,
        &["broker,controller", "controller,broker"],
        "every node of a cluster is both a broker and a controller voter (combined mode)"
    ),
    broker_config!("controller.quorum.voters", String, None),
    broker_config!("controller.listener.names", String, None),
    broker_config!("broker.rack", String, None),
    // Kafka's default 3: creating `__consumer_offsets` fails until that many brokers registered.
    // A single node (no `process.roles`) always uses 1.
    broker_config!("offsets.topic.replication.factor", Int, Some("3"), (1.0, i16::MAX as f64)),
    broker_config!("broker.heartbeat.interval.ms", Int, Some("2000"), at_least(1.0)),
    broker_config!("broker.session.timeout.ms", Int, Some("9000"), at_least(1.0)),
    broker_config!("auto.leader.rebalance.enable", Boolean, Some("true")),
    broker_config!("leader.imbalance.check.interval.seconds", Long, Some("300"), at_least(1.0)),
    broker_config!("replica.lag.time.max.ms", Long, Some("30000"), at_least(1.0)),
    broker_config!("replica.fetch.max.bytes", Int, Some("1048576"), at_least(0.0)),
    broker_config!("replica.fetch.response.max.bytes", Int, Some("10485760"), at_least(0.0)),
    broker_config!("replica.fetch.wait.max.ms", Int, Some("500"), at_least(0.0)),
    broker_config!("replica.fetch.min.bytes", Int, Some("1"), at_least(1.0)),
    broker_config!("replica.fetch.backoff.ms", Int, Some("1000"), at_least(0.0)),
    broker_config!(
        "delete.topic.enable",
        Boolean,
        Some("true"),
        ANY,
        &["true"],
        "topics can always be deleted on this broker"
    ),
    broker_config!(
        "authorizer.class.name",
        String,
        Some(""),
        ANY,
        &[""],
        "no authorizer is implemented, so every client would be allowed everything"
    ),
    broker_config!("socket.request.max.bytes", Int, Some("104857600"), at_least(1.0)),
    broker_config!("queued.max.requests", Int, Some("500"), at_least(1.0)),
    broker_config!("log.retention.check.interval.ms", Long, Some("300000"), at_least(1.0)),
    broker_config!("log.retention.minutes", Int, None),
    broker_config!("log.retention.hours", Int, Some("168")),
    broker_config!("log.roll.hours", Int, Some("168"), at_least(1.0)),
    broker_config!("log.flush.scheduler.interval.ms", Long, Some(LONG_MAX)),
    // The log cleaner (compaction of `cleanup.policy=compact` topics).
    broker_config!("log.cleaner.enable", Boolean, Some("true")),
    broker_config!("log.cleaner.backoff.ms", Long, Some("15000"), at_least(0.0)),
    broker_config!("log.cleaner.dedupe.buffer.size", Long, Some("134217728"), at_least(0.0)),
    broker_config!("producer.id.expiration.ms", Int, Some("86400000"), at_least(1.0)),
    // Not a Kafka setting (Kafka does not bound it): idempotent producers whose state one
    // partition keeps, the least recently active forgotten first.
    broker_config!("producer.state.max.entries", Int, Some("100000"), at_least(1.0)),
    // The socket server (server.rs): request queue, receive memory, connections.
    // Kafka's default for queued.max.request.bytes is -1 (unbounded); Tern bounds it (see
    // `queued_max_request_bytes`); a positive value below socket.request.max.bytes is refused.
    broker_config!("queued.max.request.bytes", Long, Some("104857600"), at_least(-1.0)),
    broker_config!("connections.max.idle.ms", Long, Some("600000")),
    broker_config!("max.connections", Int, Some("2147483647"), at_least(0.0)),
    broker_config!("max.connections.per.ip", Int, Some("2147483647"), at_least(0.0)),
    broker_config!("max.connections.per.ip.overrides", String, Some("")),
    broker_config!("fetch.max.bytes", Int, Some("57671680"), at_least(1024.0)),
    // KIP-599 controller mutation quota: partitions created, added or deleted per second and
    // client id (Kafka's `controller_mutation_rate` client quota; -1: none, as in Kafka).
    broker_config!("controller.quota.mutation.rate", Double, Some("-1")),
    broker_config!("controller.quota.window.num", Int, Some("11"), at_least(1.0)),
    broker_config!("controller.quota.window.size.seconds", Int, Some("1"), at_least(1.0)),
    // Group coordinator and `__consumer_offsets`.
    broker_config!("offsets.topic.num.partitions", Int, Some("50"), (1.0, 10_000.0)),
    broker_config!("offsets.topic.segment.bytes", Int, Some("104857600"), at_least(1.0)),
    broker_config!("offsets.retention.minutes", Int, Some("10080"), at_least(1.0)),
    broker_config!("offsets.retention.check.interval.ms", Long, Some("600000"), at_least(1.0)),
    broker_config!("group.min.session.timeout.ms", Int, Some("6000")),
    broker_config!("group.max.session.timeout.ms", Int, Some("1800000")),
    broker_config!("group.initial.rebalance.delay.ms", Int, Some("3000"), at_least(0.0)),
    broker_config!("group.max.size", Int, Some("2147483647"), at_least(1.0)),
];

pub fn broker_config_def(name: &str) -> Option<&'static BrokerConfigDef> {
    BROKER_CONFIGS.iter().find(|d| d.name == name)
}

/// Checks `value` against a config's type, enumeration and range, as Kafka's `ConfigDef`.
fn check_value(
    name: &str,
    kind: ConfigType,
    choices: &[&str],
    range: (f64, f64),
    value: &str,
) -> Result<(), ConfigError> {
    let v = value.trim();
    let bad = |why: String| ConfigError(format!("Invalid value {value} for configuration {name}: {why}"));
    let number = match kind {
        ConfigType::Long => Some(v.parse::<i64>().map_err(|_| bad("Not a number of type LONG".into()))? as f64),
        ConfigType::Int => Some(v.parse::<i32>().map_err(|_| bad("Not a number of type INT".into()))? as f64),
        ConfigType::Double => Some(
            v.parse::<f64>().ok().filter(|d| d.is_finite()).ok_or_else(|| bad("Not a number of type DOUBLE".into()))?,
        ),
        ConfigType::Boolean => {
            if !v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false") {
                return Err(bad("Expected value to be either true or false".into()));
            }
            None
        }
        ConfigType::String => {
            if !choices.is_empty() && !choices.contains(&v) {
                return Err(bad(format!("String must be one of: {}", choices.join(", "))));
            }
            None
        }
        ConfigType::List => {
            for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if !choices.is_empty() && !choices.contains(&item) {
                    return Err(bad(format!("Invalid value {item}; must be one of: {}", choices.join(", "))));
                }
            }
            None
        }
    };
    if let Some(n) = number {
        let (min, max) = range;
        if n < min {
            return Err(bad(format!("Value must be at least {min}")));
        }
        if n > max {
            return Err(bad(format!("Value must be no more than {max}")));
        }
    }
    Ok(())
}

/// Checks that `value` is acceptable for the topic config `name`.
pub fn validate_topic_config(name: &str, value: &str) -> Result<(), ConfigError> {
    let def = topic_config_def(name).ok_or_else(|| ConfigError(format!("Unknown topic config name: {name}")))?;
    check_value(name, def.kind, def.choices, def.range, value)
}

/// Checks one broker setting: `Ok(true)` if Tern knows and accepts it, `Ok(false)` if it is not
/// a setting Tern knows (it is then not used, and listed at start-up), an error naming the key
/// if the value is refused.
pub fn check_broker_setting(key: &str, value: &str) -> Result<bool, ConfigError> {
    if let Some(def) = TOPIC_CONFIGS.iter().find(|d| d.broker_key == Some(key)) {
        check_value(key, def.kind, def.choices, def.range, value)?;
        return Ok(true);
    }
    let Some(def) = broker_config_def(key) else { return Ok(false) };
    if def.why.is_empty() {
        check_value(key, def.kind, def.choices, def.range, value)?;
        return Ok(true);
    }
    // Kafka's type check first; then what Tern supports, saying why.
    check_value(key, def.kind, &[], ANY, value)?;
    let chosen = def.choices.is_empty() || def.choices.iter().any(|c| c.eq_ignore_ascii_case(value.trim()));
    if chosen && check_value(key, def.kind, &[], def.range, value).is_ok() {
        return Ok(true);
    }
    let allowed = if !def.choices.is_empty() {
        def.choices.iter().map(|c| if c.is_empty() { "an empty value" } else { c }).collect::<Vec<_>>().join(", ")
    } else if def.range.0 == def.range.1 {
        def.range.0.to_string()
    } else {
        format!("values from {} to {}", def.range.0, def.range.1)
    };
    Err(ConfigError(format!("Invalid value {value} for configuration {key}: only {allowed} is supported: {}", def.why)))
}

/// Where a config value came from, as DescribeConfigs reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    TopicConfig = 1,
    StaticBrokerConfig = 4,
    DefaultConfig = 5,
}

/// The broker's settings: the properties file with overrides applied.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub listen: SocketAddr,
    /// host:port put into Metadata responses (`advertised.listeners`, else the listen address).
    pub advertised_host: String,
    pub advertised_port: i32,
    pub data_dir: PathBuf,
    /// Explicitly set properties (file then overrides), by Kafka name.
    pub props: BTreeMap<String, String>,
    /// KRaft mode: `None` for a single node that keeps its own metadata.
    pub cluster: Option<ClusterSettings>,
}

/// A node of a replicated cluster (`process.roles` set): its controller listener and the voters.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// Where this node's controller serves the quorum (the `controller.listener.names` listener).
    pub controller_listen: SocketAddr,
    /// `controller.quorum.voters`, unparsed (the controller crate parses and resolves it).
    pub quorum_voters: String,
    pub rack: Option<String>,
}

fn controller_listener_names(props: &BTreeMap<String, String>) -> Vec<String> {
    props
        .get("controller.listener.names")
        .map(|v| v.split(',').map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect())
        .unwrap_or_default()
}

/// Kafka's KRaft checks: roles, voters and a controller listener go together.
fn cluster_settings(
    props: &BTreeMap<String, String>,
    controller_listen: Option<(String, u16)>,
) -> Result<Option<ClusterSettings>, ConfigError> {
    let Some(_roles) = props.get("process.roles") else {
        let replication = props.get("default.replication.factor").and_then(|v| v.trim().parse::<i64>().ok());
        if replication.is_some_and(|r| r != 1) {
            return Err(ConfigError(format!(
                "Invalid value {} for configuration default.replication.factor: a single node (no process.roles) keeps exactly one replica of every partition",
                replication.unwrap_or_default()
            )));
        }
        for key in ["controller.quorum.voters", "controller.listener.names"] {
            if props.contains_key(key) {
                return Err(ConfigError(format!(
                    "{key} is set but process.roles is not: set process.roles=broker,controller to run a cluster node"
                )));
            }
        }
        return Ok(None);
    };
    let voters = props.get("controller.quorum.voters").filter(|v| !v.trim().is_empty()).ok_or_else(|| {
        ConfigError(
            "process.roles is set: controller.quorum.voters must name the controller voters (id@host:port,...)".into(),
        )
    })?;
    let (host, port) = controller_listen.ok_or_else(|| {
        ConfigError("listeners must include the listener named by controller.listener.names (a controller node serves the quorum on it)".into())
    })?;
    let host = if host.is_empty() { "0.0.0.0".to_string() } else { host };
    let controller_listen = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| ConfigError(format!("the controller listener {host}:{port} does not resolve to an address")))?;
    Ok(Some(ClusterSettings {
        controller_listen,
        quorum_voters: voters.clone(),
        rack: props.get("broker.rack").filter(|r| !r.is_empty()).cloned(),
    }))
}

impl BrokerConfig {
    /// Checks every setting (see [`check_broker_setting`]; unknown keys are kept and reported
    /// by [`BrokerConfig::unused_keys`]) and the listeners.
    pub fn new(listen: SocketAddr, data_dir: PathBuf, props: BTreeMap<String, String>) -> Result<Self, ConfigError> {
        for (key, value) in &props {
            check_broker_setting(key, value)?;
        }
        let map = props.get("listener.security.protocol.map").map_or(DEFAULT_PROTOCOL_MAP, String::as_str);
        if props.contains_key("process.roles") && !props.contains_key("controller.listener.names") {
            return Err(ConfigError(
                "process.roles is set: controller.listener.names must name the controller listener".into(),
            ));
        }
        let controller_names = controller_listener_names(&props);
        let mut controller_listen = None;
        if let Some(l) = props.get("listeners") {
            let (_, controller) = split_listeners("listeners", l, map, &controller_names)?;
            controller_listen = controller;
        }
        let (advertised_host, advertised_port) = match props.get("advertised.listeners") {
            Some(l) => {
                let ((host, port), _) = split_listeners("advertised.listeners", l, map, &controller_names)?;
                (if host.is_empty() { listen.ip().to_string() } else { host }, port as i32)
            }
            None => (listen.ip().to_string(), listen.port() as i32),
        };
        let cluster = cluster_settings(&props, controller_listen)?;
        let config = BrokerConfig { listen, advertised_host, advertised_port, data_dir, props, cluster };
        config.validate_socket_server()?;
        Ok(config)
    }

    /// The keys given that are not settings of this broker (Kafka lists them as "supplied but
    /// not used").
    pub fn unused_keys(&self) -> Vec<&str> {
        self.props.keys().map(String::as_str).filter(|k| matches!(check_broker_setting(k, ""), Ok(false))).collect()
    }

    /// The effective value of a broker setting (set or default).
    pub fn get(&self, key: &str) -> Option<String> {
        if let Some(v) = self.props.get(key) {
            return Some(v.clone());
        }
        if let Some(def) = broker_config_def(key) {
            return def.default.map(str::to_string);
        }
        self.broker_topic_default(key)
    }

    /// A numeric (or boolean: 1/0) broker setting, set or default.
    pub fn get_i64(&self, key: &str) -> Option<i64> {
        let v = self.get(key)?;
        match v.trim() {
            s if s.eq_ignore_ascii_case("true") => Some(1),
            s if s.eq_ignore_ascii_case("false") => Some(0),
            s => s.parse().ok(),
        }
    }

    fn broker_topic_default(&self, key: &str) -> Option<String> {
        let def = TOPIC_CONFIGS.iter().find(|d| d.broker_key == Some(key))?;
        self.topic_default(def).map(|(v, _)| v)
    }

    /// A topic config's default on this broker and where it comes from.
    pub fn topic_default(&self, def: &TopicConfigDef) -> Option<(String, ConfigSource)> {
        let from_broker = def.broker_key.and_then(|k| self.props.get(k).cloned()).or_else(|| {
            // Kafka's hour/minute variants of the retention and roll settings.
            let scaled = |key: &str, factor: i64| {
                self.props.get(key).and_then(|v| v.trim().parse::<i64>().ok()).map(|v| (v * factor).to_string())
            };
            match def.name {
                "retention.ms" => {
                    scaled("log.retention.minutes", 60_000).or_else(|| scaled("log.retention.hours", 3_600_000))
                }
                "segment.ms" => scaled("log.roll.hours", 3_600_000),
                _ => None,
            }
        });
        match from_broker {
            Some(v) => Some((v, ConfigSource::StaticBrokerConfig)),
            None => Some((def.default.to_string(), ConfigSource::DefaultConfig)),
        }
    }

    pub fn node_id(&self) -> i32 {
        self.get_i64("node.id").unwrap_or(1) as i32
    }
    pub fn auto_create_topics(&self) -> bool {
        self.get_i64("auto.create.topics.enable").unwrap_or(1) != 0
    }
    pub fn num_partitions(&self) -> i32 {
        self.get_i64("num.partitions").unwrap_or(1) as i32
    }
    pub fn socket_request_max_bytes(&self) -> usize {
        self.get_i64("socket.request.max.bytes").unwrap_or(104_857_600) as usize
    }
    pub fn retention_check_interval_ms(&self) -> u64 {
        self.get_i64("log.retention.check.interval.ms").unwrap_or(300_000).max(10) as u64
    }
    pub fn offsets_topic_num_partitions(&self) -> i32 {
        self.get_i64("offsets.topic.num.partitions").unwrap_or(50).clamp(1, 10_000) as i32
    }
    pub fn offsets_topic_segment_bytes(&self) -> i64 {
        self.get_i64("offsets.topic.segment.bytes").unwrap_or(104_857_600)
    }
    pub fn log_cleaner_enable(&self) -> bool {
        self.get_i64("log.cleaner.enable").unwrap_or(1) != 0
    }
    pub fn log_cleaner_backoff_ms(&self) -> u64 {
        self.get_i64("log.cleaner.backoff.ms").unwrap_or(15_000).clamp(10, 3_600_000) as u64
    }
    /// Memory for one cleaning pass's key → offset map.
    pub fn log_cleaner_dedupe_buffer_size(&self) -> usize {
        self.get_i64("log.cleaner.dedupe.buffer.size").unwrap_or(134_217_728).clamp(1 << 20, 1 << 34) as usize
    }
    pub fn flush_scheduler_interval_ms(&self) -> u64 {
        self.get_i64("log.flush.scheduler.interval.ms").unwrap_or(i64::MAX).clamp(10, 3_600_000) as u64
    }

    /// Kafka's checks of the socket-server and quota settings.
    fn validate_socket_server(&self) -> Result<(), ConfigError> {
        let at_least = |key: &str, min: i64| match self.get_i64(key) {
            Some(v) if v >= min => Ok(()),
            _ => Err(ConfigError(format!("{key}: must be at least {min}"))),
        };
        at_least("queued.max.requests", 1)?;
        at_least("fetch.max.bytes", 1024)?;
        at_least("max.connections", 0)?;
        at_least("max.connections.per.ip", 0)?;
        at_least("controller.quota.window.num", 1)?;
        at_least("controller.quota.window.size.seconds", 1)?;
        at_least("socket.request.max.bytes", 1)?;
        if let Some(queued) = self.props.get("queued.max.request.bytes").and_then(|v| v.trim().parse::<i64>().ok()) {
            if queued > 0 && (queued as usize) < self.socket_request_max_bytes() {
                return Err(ConfigError(format!(
                    "queued.max.request.bytes ({queued}) must be larger or equal to socket.request.max.bytes ({})",
                    self.socket_request_max_bytes()
                )));
            }
        }
        self.max_connections_per_ip_overrides()?;
        Ok(())
    }

    /// `fetch.max.bytes`: the most record bytes one Fetch response carries (beyond its first batch).
    pub fn fetch_max_bytes(&self) -> usize {
        self.get_i64("fetch.max.bytes").unwrap_or(57_671_680).max(1024) as usize
    }
    /// `queued.max.requests`: requests read but not yet answered, over all connections.
    pub fn queued_max_requests(&self) -> usize {
        self.get_i64("queued.max.requests").unwrap_or(500).clamp(1, 1 << 20) as usize
    }
    /// `queued.max.request.bytes`: bytes of requests larger than a connection's own read buffer
    /// that may be buffered at once, over all connections; `None` is unbounded (a value <= 0, as
    /// in Kafka). Left unset it is 100 MiB, or `socket.request.max.bytes` if that is larger, so
    /// that a request of the largest size can always be read.
    pub fn queued_max_request_bytes(&self) -> Option<usize> {
        match self.props.get("queued.max.request.bytes").and_then(|v| v.trim().parse::<i64>().ok()) {
            Some(v) if v <= 0 => None,
            Some(v) => Some(v as usize),
            None => Some(self.socket_request_max_bytes().max(104_857_600)),
        }
    }
    /// `connections.max.idle.ms`; `None` (a negative value) never closes idle connections.
    pub fn connections_max_idle_ms(&self) -> Option<u64> {
        u64::try_from(self.get_i64("connections.max.idle.ms").unwrap_or(600_000)).ok()
    }
    pub fn max_connections(&self) -> usize {
        self.get_i64("max.connections").unwrap_or(i32::MAX as i64).clamp(0, i32::MAX as i64) as usize
    }
    pub fn max_connections_per_ip(&self) -> usize {
        self.get_i64("max.connections.per.ip").unwrap_or(i32::MAX as i64).clamp(0, i32::MAX as i64) as usize
    }
    /// `max.connections.per.ip.overrides`: `host:count` pairs, comma-separated (hosts resolved once).
    pub fn max_connections_per_ip_overrides(&self) -> Result<Vec<(std::net::IpAddr, usize)>, ConfigError> {
        let Some(text) = self.props.get("max.connections.per.ip.overrides") else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let bad = || ConfigError(format!("max.connections.per.ip.overrides: invalid entry {item:?} (host:count)"));
            let (host, count) = item.rsplit_once(':').ok_or_else(bad)?;
            let count: usize = count.trim().parse().map_err(|_| bad())?;
            let host = host.trim().trim_matches(['[', ']']);
            let ips: Vec<std::net::IpAddr> = match host.parse() {
                Ok(ip) => vec![ip],
                Err(_) => std::net::ToSocketAddrs::to_socket_addrs(&(host, 0))
                    .map_err(|e| ConfigError(format!("max.connections.per.ip.overrides: cannot resolve {host}: {e}")))?
                    .map(|a| a.ip())
                    .collect(),
            };
            out.extend(ips.into_iter().map(|ip| (ip, count)));
        }
        Ok(out)
    }
    /// The KIP-599 controller mutation quota per client id, partitions per second; `None`: no quota.
    pub fn controller_mutation_rate(&self) -> Option<f64> {
        self.get_i64("controller.quota.mutation.rate").filter(|&r| r >= 0).map(|r| r as f64)
    }
    /// How many seconds of the mutation rate a client may use at once (Kafka's token-bucket burst:
    /// `controller.quota.window.num` x `controller.quota.window.size.seconds`).
    pub fn controller_quota_burst_seconds(&self) -> f64 {
        let num = self.get_i64("controller.quota.window.num").unwrap_or(11).max(1);
        let size = self.get_i64("controller.quota.window.size.seconds").unwrap_or(1).max(1);
        num.saturating_mul(size) as f64
    }

    /// The effective value of every topic config for a topic with the given explicit overrides.
    pub fn effective_topic_configs(
        &self,
        overrides: &BTreeMap<String, String>,
    ) -> Vec<(&'static TopicConfigDef, String, ConfigSource)> {
        TOPIC_CONFIGS
            .iter()
            .filter_map(|def| match overrides.get(def.name) {
                Some(v) => Some((def, v.clone(), ConfigSource::TopicConfig)),
                None => self.topic_default(def).map(|(v, s)| (def, v, s)),
            })
            .collect()
    }

    /// The storage settings for a topic with the given explicit overrides.
    pub fn log_config(&self, overrides: &BTreeMap<String, String>) -> LogConfig {
        let mut config = LogConfig::default();
        for (def, value, _) in self.effective_topic_configs(overrides) {
            let v = value.trim();
            let num = || v.parse::<i64>().ok();
            match def.name {
                "segment.bytes" => config.segment_bytes = num().map_or(config.segment_bytes, |n| n.max(14) as u64),
                "segment.ms" => config.segment_ms = num().unwrap_or(config.segment_ms),
                "retention.ms" => config.retention_ms = num().unwrap_or(config.retention_ms),
                "retention.bytes" => config.retention_bytes = num().unwrap_or(config.retention_bytes),
                "flush.messages" => config.flush_messages = num().unwrap_or(config.flush_messages),
                "flush.ms" => config.flush_ms = num().unwrap_or(config.flush_ms),
                "max.message.bytes" => {
                    config.max_message_bytes = num().map_or(config.max_message_bytes, |n| n.max(0) as usize)
                }
                "index.interval.bytes" => {
                    config.index_interval_bytes = num().map_or(config.index_interval_bytes, |n| n.max(1) as usize)
                }
                "segment.index.bytes" => {
                    config.segment_index_bytes = num().map_or(config.segment_index_bytes, |n| n.max(8) as usize)
                }
                "cleanup.policy" => config.cleanup_policy = CleanupPolicy::parse(v),
                "delete.retention.ms" => config.delete_retention_ms = num().unwrap_or(config.delete_retention_ms),
                "min.cleanable.dirty.ratio" => {
                    config.min_cleanable_dirty_ratio =
                        v.parse::<f64>().ok().filter(|r| r.is_finite()).unwrap_or(config.min_cleanable_dirty_ratio)
                }
                "min.compaction.lag.ms" => config.min_compaction_lag_ms = num().unwrap_or(config.min_compaction_lag_ms),
                "max.compaction.lag.ms" => config.max_compaction_lag_ms = num().unwrap_or(config.max_compaction_lag_ms),
                "message.timestamp.type" => {
                    config.message_timestamp_type =
                        if v == "LogAppendTime" { TimestampType::LogAppendTime } else { TimestampType::CreateTime }
                }
                "message.timestamp.before.max.ms" => {
                    config.message_timestamp_before_max_ms = num().unwrap_or(config.message_timestamp_before_max_ms)
                }
                "message.timestamp.after.max.ms" => {
                    config.message_timestamp_after_max_ms = num().unwrap_or(config.message_timestamp_after_max_ms)
                }
                "preallocate" => config.preallocate = v.eq_ignore_ascii_case("true"),
                "segment.jitter.ms" => config.segment_jitter_ms = num().unwrap_or(config.segment_jitter_ms),
                "file.delete.delay.ms" => config.file_delete_delay_ms = num().unwrap_or(config.file_delete_delay_ms),
                "compression.type" => {
                    config.compression = CompressionType::parse(v).unwrap_or(config.compression);
                }
                _ => {}
            }
        }
        config.producer_id_expiration_ms =
            self.get_i64("producer.id.expiration.ms").unwrap_or(config.producer_id_expiration_ms);
        config.max_producer_entries =
            self.get_i64("producer.state.max.entries").map_or(config.max_producer_entries, |n| n.max(1) as usize);
        config
    }
}

/// The one listener of `listeners` or `advertised.listeners` (`NAME://host:port`, or a bare
/// `host:port`), as (host, port). Its security protocol (by `listener.security.protocol.map`)
/// must be PLAINTEXT: there is no TLS or SASL yet, and serving plaintext where the operator
/// asked for encryption would be worse than not starting.
pub fn plaintext_listener(key: &str, value: &str, protocol_map: &str) -> Result<(String, u16), ConfigError> {
    let err = |why: String| ConfigError(format!("Invalid value {value} for configuration {key}: {why}"));
    let listeners: Vec<&str> = value.split(',').map(str::trim).filter(|l| !l.is_empty()).collect();
    let [listener] = listeners[..] else {
        return Err(err(format!("this broker serves exactly one listener, not {}", listeners.len())));
    };
    let addr = match listener.split_once("://") {
        None => listener,
        Some((name, addr)) => {
            let protocol = protocol_map
                .split(',')
                .filter_map(|entry| entry.trim().split_once(':'))
                .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
                .map(|(_, p)| p.trim())
                .ok_or_else(|| err(format!("listener name {name} is not in listener.security.protocol.map")))?;
            if !protocol.eq_ignore_ascii_case("PLAINTEXT") {
                return Err(err(format!(
                    "security protocol {protocol} is not supported (TLS and SASL are not implemented); use PLAINTEXT"
                )));
            }
            addr
        }
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| err("expected host:port".into()))?;
    let port = port.parse::<u16>().map_err(|_| err(format!("bad port {port}")))?;
    Ok((host.trim_matches(['[', ']']).to_string(), port))
}

/// A listener's host (empty: every interface) and port.
pub type HostPort = (String, u16);

/// The listeners of `listeners` or `advertised.listeners`: exactly one client listener (a
/// PLAINTEXT one, see [`plaintext_listener`]), and at most one controller listener (named in
/// `controller.listener.names`; PLAINTEXT too) — as ((host, port), controller (host, port)).
pub fn split_listeners(
    key: &str,
    value: &str,
    protocol_map: &str,
    controller_names: &[String],
) -> Result<(HostPort, Option<HostPort>), ConfigError> {
    let err = |why: String| ConfigError(format!("Invalid value {value} for configuration {key}: {why}"));
    let is_controller =
        |l: &str| l.split_once("://").is_some_and(|(n, _)| controller_names.iter().any(|c| c.eq_ignore_ascii_case(n)));
    let all: Vec<&str> = value.split(',').map(str::trim).filter(|l| !l.is_empty()).collect();
    let (controllers, clients): (Vec<&str>, Vec<&str>) = all.into_iter().partition(|l| is_controller(l));
    let controller = match controllers[..] {
        [] => None,
        [one] => {
            // A controller listener missing from the map is PLAINTEXT.
            let (name, _) = one.split_once("://").unwrap_or_default();
            let map = format!("{protocol_map},{name}:PLAINTEXT");
            Some(plaintext_listener(key, one, &map)?)
        }
        _ => return Err(err("this node serves exactly one controller listener".into())),
    };
    let client = match clients[..] {
        [one] => plaintext_listener(key, one, protocol_map)?,
        _ => return Err(err(format!("this broker serves exactly one client listener, not {}", clients.len()))),
    };
    Ok((client, controller))
}

/// Parses a Java-style `.properties` file (`key=value` or `key: value`, `#`/`!` comments).
pub fn parse_properties(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let split = line.find(['=', ':']).unwrap_or(line.len());
        let (k, v) = line.split_at(split);
        let v = v.get(1..).unwrap_or("");
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(props: &[(&str, &str)]) -> BrokerConfig {
        let props = props.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        BrokerConfig::new("127.0.0.1:9092".parse().unwrap(), "data".into(), props).unwrap()
    }

    #[test]
    fn properties_file_syntax() {
        let p = parse_properties("# c\nnum.partitions=3\n auto.create.topics.enable : false\n!x\nlog.dirs=/a=b\n");
        assert_eq!(p["num.partitions"], "3");
        assert_eq!(p["auto.create.topics.enable"], "false");
        assert_eq!(p["log.dirs"], "/a=b");
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn topic_defaults_come_from_broker_log_settings() {
        let c = config(&[("log.retention.hours", "1"), ("log.segment.bytes", "1000")]);
        let lc = c.log_config(&BTreeMap::new());
        assert_eq!(lc.retention_ms, 3_600_000);
        assert_eq!(lc.segment_bytes, 1000);
        let overrides = [("retention.ms".to_string(), "5".to_string())].into();
        assert_eq!(c.log_config(&overrides).retention_ms, 5);
        assert_eq!(c.get("log.retention.ms"), Some("3600000".into()));
    }

    #[test]
    fn compaction_configs_reach_the_log() {
        let c = config(&[("log.cleaner.delete.retention.ms", "5")]);
        let overrides = [
            ("cleanup.policy".to_string(), "compact,delete".to_string()),
            ("min.cleanable.dirty.ratio".to_string(), "0.25".to_string()),
            ("min.compaction.lag.ms".to_string(), "7".to_string()),
            ("max.compaction.lag.ms".to_string(), "9".to_string()),
        ]
        .into();
        let lc = c.log_config(&overrides);
        assert_eq!(lc.cleanup_policy, CleanupPolicy { delete: true, compact: true });
        assert_eq!(lc.delete_retention_ms, 5);
        assert_eq!(lc.min_cleanable_dirty_ratio, 0.25);
        assert_eq!((lc.min_compaction_lag_ms, lc.max_compaction_lag_ms), (7, 9));
        let compact = [("cleanup.policy".to_string(), "compact".to_string())].into();
        assert_eq!(c.log_config(&compact).cleanup_policy, CleanupPolicy::COMPACT);
        assert!(c.log_cleaner_enable());
        assert_eq!(c.log_cleaner_backoff_ms(), 15_000);
    }

    #[test]
    fn kafka_defaults() {
        let c = config(&[]);
        assert!(c.auto_create_topics());
        assert_eq!(c.num_partitions(), 1);
        assert_eq!(c.log_config(&BTreeMap::new()), LogConfig::default());
    }

    #[test]
    fn validation() {
        assert!(validate_topic_config("retention.ms", "100").is_ok());
        assert!(validate_topic_config("retention.ms", "abc").is_err());
        assert!(validate_topic_config("no.such.config", "1").is_err());
        assert!(validate_topic_config("cleanup.policy", "compact,delete").is_ok());
        assert!(validate_topic_config("cleanup.policy", "bogus").is_err());
        assert!(validate_topic_config("message.timestamp.type", "LogAppendTime").is_ok());
        assert!(validate_topic_config("segment.bytes", "0").is_err());
    }

    #[test]
    fn advertised_listener() {
        let c = config(&[("advertised.listeners", "PLAINTEXT://localhost:19092")]);
        assert_eq!((c.advertised_host.as_str(), c.advertised_port), ("localhost", 19092));
    }

    fn refused(props: &[(&str, &str)]) -> String {
        let props = props.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        BrokerConfig::new("127.0.0.1:9092".parse().unwrap(), "data".into(), props).unwrap_err().0
    }

    #[test]
    fn only_plaintext_listeners() {
        for (key, value) in [
            ("listeners", "SSL://127.0.0.1:9093"),
            ("listeners", "SASL_SSL://127.0.0.1:9093"),
            ("listeners", "PLAINTEXT://127.0.0.1:9092,SSL://127.0.0.1:9093"),
            ("listeners", "CUSTOM://127.0.0.1:9093"),
            ("advertised.listeners", "SSL://example.com:9093"),
        ] {
            assert!(refused(&[(key, value)]).contains(key), "{key}={value}");
        }
        let named = [("listeners", "INTERNAL://:9092"), ("listener.security.protocol.map", "INTERNAL:PLAINTEXT")];
        config(&named);
        assert_eq!(
            plaintext_listener("listeners", "PLAINTEXT://:9092", DEFAULT_PROTOCOL_MAP).unwrap(),
            ("".into(), 9092)
        );
    }

    #[test]
    fn invalid_values_are_refused_naming_the_key() {
        for (key, value) in [
            ("num.partitions", "0"),
            ("num.partitions", "x"),
            ("socket.request.max.bytes", "-1"),
            ("log.segment.bytes", "13"),
            ("log.cleaner.min.cleanable.ratio", "1.5"),
            ("message.max.bytes", "99999999999"),
            ("auto.create.topics.enable", "yes"),
            ("default.replication.factor", "3"),
            ("process.roles", "broker"),
            ("delete.topic.enable", "false"),
            ("authorizer.class.name", "kafka.security.authorizer.AclAuthorizer"),
            ("compression.type", "brotli"),
            ("offsets.topic.num.partitions", "20000"),
        ] {
            let e = refused(&[(key, value)]);
            assert!(e.contains(key) && e.contains(value), "{key}={value}: {e}");
        }
        // Kafka's booleans ignore case; every compression type is accepted.
        config(&[("auto.create.topics.enable", "FALSE"), ("compression.type", "zstd")]);
    }

    #[test]
    fn cluster_mode_needs_voters_and_a_controller_listener() {
        let node = [
            ("process.roles", "broker,controller"),
            ("controller.quorum.voters", "1@127.0.0.1:9093"),
            ("controller.listener.names", "CONTROLLER"),
            ("listeners", "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"),
            ("default.replication.factor", "3"),
        ];
        let c = config(&node);
        let cluster = c.cluster.clone().expect("a cluster node");
        assert_eq!(cluster.controller_listen, "127.0.0.1:9093".parse().unwrap());
        assert!(c.unused_keys().is_empty());
        for missing in ["controller.quorum.voters", "controller.listener.names", "listeners"] {
            let props: Vec<_> = node.iter().copied().filter(|(k, _)| *k != missing).collect();
            assert!(refused(&props).contains(missing), "without {missing}");
        }
        assert!(refused(&[("controller.quorum.voters", "1@127.0.0.1:9093")]).contains("process.roles"));
        assert!(config(&[]).cluster.is_none());
    }

    #[test]
    fn unknown_keys_are_kept_and_listed() {
        let c = config(&[("no.such.key", "1"), ("num.partitions", "2"), ("log.retention.ms", "5")]);
        assert_eq!(c.unused_keys(), ["no.such.key"]);
        assert_eq!(c.num_partitions(), 2);
    }
}
