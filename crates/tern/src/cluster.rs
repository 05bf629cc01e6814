//! `tern cluster up | status | down`: a local cluster of `tern serve` processes, each a combined
//! broker and controller (KRaft-style), for development and the fault suite (`tests/cluster`).
//!
//! Everything lives in one directory (default `./tern-cluster`):
//!
//! ```text
//! DIR/cluster.properties        the layout: node count, every node's ports, the --set settings
//! DIR/cluster.lock              flock(2)ed by `up` and `down`, so two of them never race
//! DIR/node-N/server.properties  node N's configuration (written when missing)
//! DIR/node-N/data/              node N's log.dirs
//! DIR/node-N/tern.log           node N's stdout and stderr, appended to across restarts
//! DIR/node-N/pid                node N's process id while `up` started it and `down` did not stop it
//! ```
//!
//! The layout file is written once, by the first `up`; later runs reuse its ports and settings.
//! A later `up` refuses a `--nodes` that differs from the layout, and accepts `--set` only when it
//! names exactly the settings recorded there (to change settings, edit the nodes'
//! `server.properties` or start a new directory). A node is *running* when its pid file names a
//! live process whose command line is `tern serve --config DIR/node-N/server.properties` (pids get
//! reused, so the pid alone proves nothing).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use tern_client::{Admin, ClusterConfig, ClusterDescription};

/// The layout file's name inside the cluster directory.
pub const LAYOUT_FILE: &str = "cluster.properties";
const LOCK_FILE: &str = "cluster.lock";
const DEFAULT_DIR: &str = "tern-cluster";
const ROLES: &str = "broker,controller";
/// How long `down` waits for a node to exit after SIGTERM before it sends SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// Lines of a node's log shown when it fails to start.
const LOG_TAIL_LINES: usize = 20;
/// The settings every node's server.properties gets from the layout; `--set` cannot change them.
const LAYOUT_KEYS: &[&str] = &[
    "node.id",
    "process.roles",
    "listeners",
    "controller.listener.names",
    "controller.quorum.voters",
    "log.dirs",
    "log.dir",
];

#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// Start a local cluster (or the nodes of it that are not running) and print its bootstrap address.
    Up(UpArgs),
    /// Show every node of the local cluster and the controller leader.
    Status(DirArgs),
    /// Stop every node of the local cluster (SIGTERM, then SIGKILL after 15 s); data is kept.
    Down(DirArgs),
}

#[derive(clap::Args, Debug)]
pub struct DirArgs {
    /// The cluster's directory.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DIR)]
    pub dir: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Number of nodes (each a broker and a controller); default 3. A later run must give the
    /// number in the layout, or none.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub nodes: Option<u16>,
    /// The cluster's directory.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DIR)]
    pub dir: PathBuf,
    /// A setting added to every node's server.properties, e.g. --set num.partitions=3
    /// (repeatable). A later run accepts only exactly the settings of the first.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub settings: Vec<String>,
    /// Seconds to wait for every node to serve.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub timeout: u64,
}

pub async fn run(cmd: ClusterCommand) -> Result<()> {
    match cmd {
        ClusterCommand::Up(args) => up(args).await,
        ClusterCommand::Status(args) => status(&args.dir).await,
        ClusterCommand::Down(args) => down(&args.dir).await,
    }
}

// ------------------------------------------------------------------------------------ layout

/// One node's ports, on 127.0.0.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePorts {
    pub id: u32,
    pub kafka_port: u16,
    pub controller_port: u16,
}

/// What `DIR/cluster.properties` holds: the nodes (ids 1..=N) and the `--set` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub nodes: Vec<NodePorts>,
    pub settings: BTreeMap<String, String>,
}

impl Layout {
    /// The layout file's text: Java-properties syntax, one `key=value` a line.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        s.push_str("# A local Tern cluster: written by the first `tern cluster up` in this directory and read by\n");
        s.push_str("# `tern cluster up|status|down --dir` (and tests/cluster). Every node is a combined broker and\n");
        s.push_str("# controller on 127.0.0.1; node N's files are in node-N/.\n");
        s.push_str("#   nodes                       number of nodes; their ids are 1..nodes\n");
        s.push_str("#   node.N.kafka.port           node N's PLAINTEXT (Kafka client) listener port\n");
        s.push_str("#   node.N.controller.port      node N's CONTROLLER (Raft quorum) listener port\n");
        s.push_str(
            "#   set.KEY                     a --set KEY=VALUE of the first `up`, in every node's server.properties\n",
        );
        s.push_str(&format!("nodes={}\n", self.nodes.len()));
        for n in &self.nodes {
            s.push_str(&format!("node.{}.kafka.port={}\n", n.id, n.kafka_port));
            s.push_str(&format!("node.{}.controller.port={}\n", n.id, n.controller_port));
        }
        for (k, v) in &self.settings {
            s.push_str(&format!("set.{k}={v}\n"));
        }
        s
    }

    /// Parses a layout file's text; an error names the line or the missing key.
    pub fn parse(text: &str) -> Result<Layout> {
        let mut count: Option<usize> = None;
        let mut kafka: BTreeMap<u32, u16> = BTreeMap::new();
        let mut controller: BTreeMap<u32, u16> = BTreeMap::new();
        let mut settings = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let lineno = i + 1;
            let Some((key, value)) = line.split_once('=') else {
                bail!("line {lineno}: expected KEY=VALUE, got {line:?}");
            };
            let (key, value) = (key.trim(), value.trim());
            let dup = |k: &str| anyhow::anyhow!("line {lineno}: {k} is given twice");
            if key == "nodes" {
                let n: usize =
                    value.parse().with_context(|| format!("line {lineno}: nodes={value} is not a number"))?;
                if n == 0 {
                    bail!("line {lineno}: nodes must be at least 1");
                }
                if count.replace(n).is_some() {
                    return Err(dup(key));
                }
            } else if let Some(k) = key.strip_prefix("set.") {
                if k.is_empty() || settings.insert(k.to_string(), value.to_string()).is_some() {
                    bail!("line {lineno}: bad or repeated setting {key}");
                }
            } else if let Some(rest) = key.strip_prefix("node.") {
                let (id, what) = rest.split_once('.').with_context(|| format!("line {lineno}: unknown key {key}"))?;
                let id: u32 =
                    id.parse().with_context(|| format!("line {lineno}: {key}: node id {id:?} is not a number"))?;
                let port: u16 = match value.parse() {
                    Ok(p) if p > 0 => p,
                    _ => bail!("line {lineno}: {key}={value} is not a port (1-65535)"),
                };
                let map = match what {
                    "kafka.port" => &mut kafka,
                    "controller.port" => &mut controller,
                    _ => bail!("line {lineno}: unknown key {key}"),
                };
                if map.insert(id, port).is_some() {
                    return Err(dup(key));
                }
            } else {
                bail!("line {lineno}: unknown key {key}");
            }
        }
        let count = count.context("no `nodes=` line")?;
        let mut nodes = Vec::with_capacity(count);
        for id in 1..=count as u32 {
            let kafka_port = *kafka.get(&id).with_context(|| format!("node.{id}.kafka.port is missing"))?;
            let controller_port =
                *controller.get(&id).with_context(|| format!("node.{id}.controller.port is missing"))?;
            nodes.push(NodePorts { id, kafka_port, controller_port });
        }
        if let Some(id) = kafka.keys().chain(controller.keys()).find(|id| **id == 0 || **id as usize > count) {
            bail!("node {id} is listed but nodes={count} (ids are 1..={count})");
        }
        let mut seen = BTreeMap::new();
        for n in &nodes {
            for port in [n.kafka_port, n.controller_port] {
                if let Some(other) = seen.insert(port, n.id) {
                    bail!("port {port} is given to node {other} and node {}", n.id);
                }
            }
        }
        Ok(Layout { nodes, settings })
    }

    /// `1@127.0.0.1:C1,2@127.0.0.1:C2,...`
    pub fn quorum_voters(&self) -> String {
        self.nodes.iter().map(|n| format!("{}@127.0.0.1:{}", n.id, n.controller_port)).collect::<Vec<_>>().join(",")
    }

    /// `127.0.0.1:K1,127.0.0.1:K2,...`
    pub fn bootstrap(&self) -> String {
        self.nodes.iter().map(kafka_addr).collect::<Vec<_>>().join(",")
    }

    /// Node `node`'s server.properties, with `data_dir` as its log.dirs.
    pub fn server_properties(&self, node: &NodePorts, data_dir: &Path) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "# Node {} of a local Tern cluster, written by `tern cluster up` from ../{LAYOUT_FILE}.\n",
            node.id
        ));
        s.push_str(&format!("node.id={}\n", node.id));
        s.push_str(&format!("process.roles={ROLES}\n"));
        s.push_str(&format!(
            "listeners=PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{}\n",
            node.kafka_port, node.controller_port
        ));
        s.push_str("controller.listener.names=CONTROLLER\n");
        s.push_str(&format!("controller.quorum.voters={}\n", self.quorum_voters()));
        s.push_str(&format!("log.dirs={}\n", data_dir.display()));
        if !self.settings.is_empty() {
            s.push_str("# --set of `tern cluster up`\n");
            for (k, v) in &self.settings {
                s.push_str(&format!("{k}={v}\n"));
            }
        }
        s
    }
}

fn kafka_addr(n: &NodePorts) -> String {
    format!("127.0.0.1:{}", n.kafka_port)
}

/// `--set KEY=VALUE` arguments as a map; keys the layout owns are refused.
fn parse_settings(args: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for a in args {
        let Some((k, v)) = a.split_once('=') else { bail!("--set expects KEY=VALUE, got {a:?}") };
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() || k.contains([':', '#', '!']) || k.chars().any(char::is_whitespace) {
            bail!("--set {a}: {k:?} is not a configuration key");
        }
        if v.contains(['\n', '\r']) {
            bail!("--set {a}: the value spans lines");
        }
        if LAYOUT_KEYS.contains(&k) {
            bail!("--set {a}: {k} is set by `tern cluster up` itself (from the layout) and cannot be overridden");
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// Free loopback ports, all distinct: every listener is held open until all are chosen.
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0 to find a free port"))
        .collect::<Result<Vec<_>>>()?;
    listeners.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

// ------------------------------------------------------------------------------ files and pids

/// The paths of one cluster directory.
struct Paths {
    dir: PathBuf,
}

impl Paths {
    /// `dir` made absolute (the nodes' configs and command lines name absolute paths).
    fn new(dir: &Path) -> Result<Paths> {
        let dir = if dir.is_absolute() {
            dir.to_path_buf()
        } else {
            std::env::current_dir().context("reading the current directory")?.join(dir)
        };
        // `./x/../y` and symlinks: one spelling per directory, so the command-line check holds.
        let dir = dir.canonicalize().unwrap_or(dir);
        Ok(Paths { dir })
    }
    fn layout(&self) -> PathBuf {
        self.dir.join(LAYOUT_FILE)
    }
    fn node_dir(&self, id: u32) -> PathBuf {
        self.dir.join(format!("node-{id}"))
    }
    fn config(&self, id: u32) -> PathBuf {
        self.node_dir(id).join("server.properties")
    }
    fn data(&self, id: u32) -> PathBuf {
        self.node_dir(id).join("data")
    }
    fn log(&self, id: u32) -> PathBuf {
        self.node_dir(id).join("tern.log")
    }
    fn pid(&self, id: u32) -> PathBuf {
        self.node_dir(id).join("pid")
    }

    /// The layout, or an error saying the directory holds no cluster.
    fn read_layout(&self) -> Result<Layout> {
        let path = self.layout();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!(
                    "{} holds no Tern cluster (no {LAYOUT_FILE}); start one with `tern cluster up --dir {}`",
                    self.dir.display(),
                    self.dir.display()
                )
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Layout::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Node `id`'s pid if it is running (see [`is_node_cmdline`]).
    fn running_pid(&self, id: u32) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.pid(id)).ok()?.trim().parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        is_node_cmdline(&cmdline, &self.config(id)).then_some(pid)
    }
}

/// Whether a `/proc/PID/cmdline` (NUL-separated arguments) is `tern serve --config <config>`:
/// the program's file name starts with `tern`, its first argument is `serve` and it has
/// `--config <config>` (or `--config=<config>`). A zombie's or kernel thread's empty cmdline is not.
pub fn is_node_cmdline(cmdline: &[u8], config: &Path) -> bool {
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let Some(program) = args.first() else { return false };
    let program_ok =
        Path::new(std::ffi::OsStr::from_bytes(program)).file_name().is_some_and(|n| n.as_bytes().starts_with(b"tern"));
    if !program_ok || args.get(1) != Some(&&b"serve"[..]) {
        return false;
    }
    let want = config.as_os_str().as_bytes();
    let mut long = b"--config=".to_vec();
    long.extend_from_slice(want);
    args.windows(2).any(|w| w[0] == b"--config" && w[1] == want) || args.contains(&long.as_slice())
}

/// Writes `text` to `path` through a temporary file and a rename, so a reader never sees half.
fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| format!("writing {}", path.display()))
}

/// The last `lines` lines of a log file (reads at most its last 64 KiB).
fn log_tail(path: &Path, lines: usize) -> String {
    let read = || -> std::io::Result<String> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            let tail = &all[start..];
            if tail.is_empty() {
                return format!("--- {} is empty", path.display());
            }
            let mut out = String::new();
            // A backtrace can fill the tail: name the error it belongs to.
            let is_error = |l: &str| l.starts_with("Error:") || l.contains(" ERROR ") || l.contains("panicked at");
            if let Some(e) =
                all[..start].iter().rev().find(|l| is_error(l)).filter(|_| !tail.iter().any(|l| is_error(l)))
            {
                out.push_str(&format!("--- last error in {} ---\n{e}\n", path.display()));
            }
            out.push_str(&format!("--- last {} lines of {} ---\n{}", tail.len(), path.display(), tail.join("\n")));
            out
        }
        Err(e) => format!("--- {} cannot be read: {e}", path.display()),
    }
}

/// An exclusive flock on `DIR/cluster.lock`, held until dropped; refuses if another `up` or
/// `down` holds it.
struct DirLock(#[allow(dead_code)] File);

fn lock_dir(paths: &Paths) -> Result<DirLock> {
    let path = paths.dir.join(LOCK_FILE);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a file descriptor this function owns.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            bail!(
                "another `tern cluster up` or `down` is running on {} (it holds {})",
                paths.dir.display(),
                path.display()
            );
        }
        return Err(e).with_context(|| format!("locking {}", path.display()));
    }
    Ok(DirLock(f))
}

fn unix_time() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

// ---------------------------------------------------------------------------------------- up

async fn up(args: UpArgs) -> Result<()> {
    let requested = parse_settings(&args.settings)?;
    let paths = Paths::new(&args.dir)?;
    std::fs::create_dir_all(&paths.dir).with_context(|| format!("creating {}", paths.dir.display()))?;
    let paths = Paths::new(&paths.dir)?;
    let _lock = lock_dir(&paths)?;

    let layout = if paths.layout().exists() {
        let layout = paths.read_layout()?;
        if let Some(n) = args.nodes {
            if n as usize != layout.nodes.len() {
                bail!(
                    "--nodes {n}, but the cluster in {} has {} nodes (its {LAYOUT_FILE}); give --nodes {} or none, or use another --dir",
                    paths.dir.display(),
                    layout.nodes.len(),
                    layout.nodes.len()
                );
            }
        }
        if !args.settings.is_empty() && requested != layout.settings {
            let show = |m: &BTreeMap<String, String>| {
                if m.is_empty() {
                    "none".to_string()
                } else {
                    m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
                }
            };
            bail!(
                "--set differs from the settings the cluster in {} was created with ({}); a later `up` takes no --set or exactly those. To change a setting, edit node-N/server.properties and restart the node, or use another --dir",
                paths.dir.display(),
                show(&layout.settings)
            );
        }
        layout
    } else {
        let n = args.nodes.unwrap_or(3) as usize;
        let ports = free_ports(2 * n)?;
        let nodes = (0..n)
            .map(|i| NodePorts { id: i as u32 + 1, kafka_port: ports[2 * i], controller_port: ports[2 * i + 1] })
            .collect();
        let layout = Layout { nodes, settings: requested };
        write_atomic(&paths.layout(), &layout.to_text())?;
        eprintln!("Created a {n}-node cluster layout in {}", paths.layout().display());
        layout
    };

    format_nodes(&paths, &layout)?;
    // Start the nodes that are not running.
    let exe = std::env::current_exe().context("finding the tern executable")?;
    let mut started: BTreeMap<u32, Child> = BTreeMap::new();
    for node in &layout.nodes {
        let id = node.id;
        if let Some(pid) = paths.running_pid(id) {
            eprintln!("Node {id} is already running (pid {pid}).");
            continue;
        }
        let child = start_node(&paths, &layout, node, &exe)?;
        eprintln!(
            "Started node {id} (pid {}): Kafka 127.0.0.1:{}, controller 127.0.0.1:{}, log {}",
            child.id(),
            node.kafka_port,
            node.controller_port,
            paths.log(id).display()
        );
        started.insert(id, child);
    }

    wait_until_serving(&paths, &layout, &mut started, Duration::from_secs(args.timeout)).await?;
    println!("{}", layout.bootstrap());
    Ok(())
}

/// Kafka's `kafka-storage format`: every node's data directory gets a `meta.properties` naming
/// the same cluster id (a node's own file is never rewritten), so all nodes report one cluster.
fn format_nodes(paths: &Paths, layout: &Layout) -> Result<()> {
    let meta = |id: u32| paths.data(id).join("meta.properties");
    let existing = layout.nodes.iter().find_map(|n| {
        let text = std::fs::read_to_string(meta(n.id)).ok()?;
        tern_broker::config::parse_properties(&text).remove("cluster.id").filter(|id| !id.is_empty())
    });
    let cluster_id = existing.unwrap_or_else(|| tern_broker::datadir::kafka_uuid_string(uuid::Uuid::new_v4()));
    for node in &layout.nodes {
        let path = meta(node.id);
        if path.exists() {
            continue;
        }
        std::fs::create_dir_all(paths.data(node.id))
            .with_context(|| format!("creating {}", paths.data(node.id).display()))?;
        let text = format!("version=1\ncluster.id={cluster_id}\nnode.id={}\n", node.id);
        write_atomic(&path, &text)?;
    }
    Ok(())
}

/// Starts node `node` detached (own session, stdin null, output appended to its tern.log) and
/// records its pid.
fn start_node(paths: &Paths, layout: &Layout, node: &NodePorts, exe: &Path) -> Result<Child> {
    let id = node.id;
    let data = paths.data(id);
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let config = paths.config(id);
    if !config.exists() {
        write_atomic(&config, &layout.server_properties(node, &data))?;
    }
    let log_path = paths.log(id);
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    writeln!(
        log,
        "=== tern cluster up: starting node {id} at unix time {}: {} serve --config {}",
        unix_time(),
        exe.display(),
        config.display()
    )
    .with_context(|| format!("writing {}", log_path.display()))?;
    let err = log.try_clone().with_context(|| format!("opening {}", log_path.display()))?;
    let mut cmd = Command::new(exe);
    cmd.arg("serve").arg("--config").arg(&config).stdin(Stdio::null()).stdout(log).stderr(err);
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // With RUST_BACKTRACE=1 a start-up error would end in a backtrace of where anyhow built
        // it, pushing the error itself out of the log tail `up` shows; panics keep theirs.
        cmd.env("RUST_LIB_BACKTRACE", "0");
    }
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| if libc::setsid() < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting node {id}: {} serve --config {}", exe.display(), config.display()))?;
    write_atomic(&paths.pid(id), &format!("{}\n", child.id()))?;
    Ok(child)
}

/// One node's answers to DescribeCluster and DescribeQuorum, asked of that node alone: the
/// brokers it knows, and the active controller (-1 while there is none).
async fn describe(node: &NodePorts, timeout: Duration) -> Result<(ClusterDescription, i32)> {
    let config =
        ClusterConfig { bootstrap: kafka_addr(node), client_id: "tern-cluster".into(), request_timeout: timeout };
    let ask = async {
        let admin = Admin::with_config(config).await?;
        let cluster = admin.describe_cluster().await?;
        let quorum = admin.describe_quorum().await?;
        Ok::<_, tern_client::Error>((cluster, quorum.leader_id))
    };
    match tokio::time::timeout(timeout, ask).await {
        Ok(r) => Ok(r?),
        Err(_) => bail!("no answer within {} ms", timeout.as_millis()),
    }
}

/// Waits until every node answers DescribeCluster listing every node as a broker; fails when a
/// node started here exits, a running node goes away, or `timeout` passes.
async fn wait_until_serving(
    paths: &Paths,
    layout: &Layout,
    started: &mut BTreeMap<u32, Child>,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let want: Vec<i32> = layout.nodes.iter().map(|n| n.id as i32).collect();
    let mut waiting: BTreeMap<u32, String> = layout.nodes.iter().map(|n| (n.id, "not asked yet".to_string())).collect();
    eprintln!("Waiting up to {} s for every node to list all {} brokers...", timeout.as_secs(), want.len());
    loop {
        for (id, child) in started.iter_mut() {
            if let Some(status) = child.try_wait().with_context(|| format!("checking node {id}"))? {
                bail!(
                    "node {id} exited during start-up ({status}); the other nodes are left running (`tern cluster down --dir {}` stops them)\n{}",
                    paths.dir.display(),
                    log_tail(&paths.log(*id), LOG_TAIL_LINES)
                );
            }
        }
        for node in &layout.nodes {
            if !waiting.contains_key(&node.id) {
                continue;
            }
            if !started.contains_key(&node.id) && paths.running_pid(node.id).is_none() {
                bail!(
                    "node {} stopped running while the cluster started (its pid file names no `tern serve` of it)\n{}",
                    node.id,
                    log_tail(&paths.log(node.id), LOG_TAIL_LINES)
                );
            }
            let left = deadline
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(100), Duration::from_secs(3));
            let reason = match describe(node, left).await {
                Ok((d, leader)) => {
                    let mut have: Vec<i32> = d.brokers.iter().map(|b| b.id).collect();
                    have.sort_unstable();
                    if want.iter().all(|id| have.contains(id)) {
                        let leader = if leader >= 0 { leader.to_string() } else { "unknown".into() };
                        eprintln!("Node {} serves: brokers {have:?}, controller leader {leader}.", node.id);
                        waiting.remove(&node.id);
                        continue;
                    }
                    format!("DescribeCluster lists brokers {have:?}, not all of {want:?}")
                }
                Err(e) => format!("DescribeCluster/DescribeQuorum on {} failed: {e:#}", kafka_addr(node)),
            };
            waiting.insert(node.id, reason);
        }
        if waiting.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let mut msg = format!(
                "the cluster in {} did not serve within {} s (`tern cluster status` shows it, `tern cluster down` stops it):",
                paths.dir.display(),
                timeout.as_secs()
            );
            for (id, reason) in &waiting {
                msg.push_str(&format!("\nnode {id}: {reason}"));
            }
            for id in waiting.keys() {
                msg.push_str(&format!("\n{}", log_tail(&paths.log(*id), LOG_TAIL_LINES)));
            }
            bail!(msg);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

// ------------------------------------------------------------------------------------ status

/// `process.roles` from the node's server.properties, else the layout's.
fn node_roles(paths: &Paths, id: u32) -> String {
    std::fs::read_to_string(paths.config(id))
        .ok()
        .and_then(|t| {
            t.lines().filter_map(|l| l.trim().strip_prefix("process.roles")).find_map(|rest| {
                let rest = rest.trim_start();
                rest.strip_prefix(['=', ':']).map(|v| v.trim().to_string())
            })
        })
        .unwrap_or_else(|| ROLES.to_string())
}

/// Whether process `pid` is stopped by a signal (state `T` in /proc/PID/stat).
fn is_suspended(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('T')))
        .unwrap_or(false)
}

async fn status(dir: &Path) -> Result<()> {
    let paths = Paths::new(dir)?;
    let layout = paths.read_layout()?;
    let n = layout.nodes.len();
    println!("Cluster in {} ({n} node{})", paths.dir.display(), if n == 1 { "" } else { "s" });
    let rows: Vec<[String; 6]> = layout
        .nodes
        .iter()
        .map(|n| {
            let pid = paths.running_pid(n.id);
            [
                n.id.to_string(),
                node_roles(&paths, n.id),
                kafka_addr(n),
                format!("127.0.0.1:{}", n.controller_port),
                pid.map_or("-".to_string(), |p| p.to_string()),
                match pid {
                    Some(p) if is_suspended(p) => "running (suspended: SIGSTOP)",
                    Some(_) => "running",
                    None => "stopped",
                }
                .to_string(),
            ]
        })
        .collect();
    let header = ["NODE", "ROLES", "KAFKA", "CONTROLLER", "PID", "STATE"];
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].len()).chain([header[i].len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: &[&str]| {
        let s: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(&header);
    for r in &rows {
        line(&r.iter().map(String::as_str).collect::<Vec<_>>());
    }
    let mut leader = None;
    for n in &layout.nodes {
        if paths.running_pid(n.id).is_none() {
            continue;
        }
        match describe(n, Duration::from_secs(3)).await {
            Ok(d) => {
                leader = Some((n.id, d));
                break;
            }
            Err(e) => eprintln!("Node {} did not answer DescribeCluster/DescribeQuorum: {e:#}", n.id),
        }
    }
    match leader {
        Some((from, (d, controller))) => {
            let mut ids: Vec<i32> = d.brokers.iter().map(|b| b.id).collect();
            ids.sort_unstable();
            let ids: Vec<String> = ids.iter().map(i32::to_string).collect();
            if controller >= 0 {
                println!("Controller leader: {controller}");
            } else {
                println!("Controller leader: unknown (node {from} knows of none)");
            }
            println!(
                "Registered brokers: {} (as node {from} sees them)",
                if ids.is_empty() { "none".into() } else { ids.join(",") }
            );
        }
        None => println!("Controller leader: unknown (no node answers)"),
    }
    Ok(())
}

// -------------------------------------------------------------------------------------- down

fn signal(pid: u32, sig: libc::c_int) -> std::io::Result<()> {
    // SAFETY: kill(2) with a pid just checked to be our node's.
    if unsafe { libc::kill(pid as libc::pid_t, sig) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

async fn down(dir: &Path) -> Result<()> {
    let paths = Paths::new(dir)?;
    let layout = paths.read_layout()?;
    let _lock = lock_dir(&paths)?;
    let mut running: Vec<(u32, u32)> = Vec::new();
    for n in &layout.nodes {
        match paths.running_pid(n.id) {
            Some(pid) => match signal(pid, libc::SIGTERM) {
                Ok(()) => {
                    // A SIGSTOPped node acts on SIGTERM only once continued.
                    let _ = signal(pid, libc::SIGCONT);
                    eprintln!("Stopping node {} (pid {pid}): SIGTERM", n.id);
                    running.push((n.id, pid));
                }
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => bail!("cannot signal node {} (pid {pid}): {e}", n.id),
            },
            None => eprintln!("Node {} is not running.", n.id),
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    let mut failed = Vec::new();
    for (id, pid) in running {
        while paths.running_pid(id) == Some(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if paths.running_pid(id) != Some(pid) {
            eprintln!("Node {id} stopped.");
            continue;
        }
        eprintln!(
            "WARN: node {id} (pid {pid}) did not exit within {} s of SIGTERM; sending SIGKILL",
            STOP_GRACE.as_secs()
        );
        if let Err(e) = signal(pid, libc::SIGKILL) {
            if e.raw_os_error() != Some(libc::ESRCH) {
                failed.push(format!("node {id} (pid {pid}): SIGKILL failed: {e}"));
                continue;
            }
        }
        let killed = Instant::now() + Duration::from_secs(10);
        while paths.running_pid(id) == Some(pid) && Instant::now() < killed {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if paths.running_pid(id) == Some(pid) {
            failed.push(format!("node {id} (pid {pid}) is still running 10 s after SIGKILL"));
        }
    }
    for n in &layout.nodes {
        if paths.running_pid(n.id).is_none() {
            match std::fs::remove_file(paths.pid(n.id)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => failed.push(format!("removing {}: {e}", paths.pid(n.id).display())),
            }
        }
    }
    if !failed.is_empty() {
        bail!("stopping the cluster in {}: {}", paths.dir.display(), failed.join("; "));
    }
    eprintln!("Cluster in {} is down (data kept).", paths.dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            nodes: vec![
                NodePorts { id: 1, kafka_port: 40001, controller_port: 40002 },
                NodePorts { id: 2, kafka_port: 40003, controller_port: 40004 },
                NodePorts { id: 3, kafka_port: 40005, controller_port: 40006 },
            ],
            settings: [("group.initial.rebalance.delay.ms", "0"), ("log.segment.bytes", "1048576")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn layout_round_trips() {
        let l = layout();
        let text = l.to_text();
        assert_eq!(Layout::parse(&text).unwrap(), l);
        assert!(text.contains("node.2.controller.port=40004\n"), "{text}");
        assert!(text.contains("set.log.segment.bytes=1048576\n"), "{text}");
        let none = Layout { settings: BTreeMap::new(), ..l };
        assert_eq!(Layout::parse(&none.to_text()).unwrap(), none);
    }

    #[test]
    fn layout_errors_name_the_problem() {
        let err = |t: &str| format!("{:#}", Layout::parse(t).unwrap_err());
        assert!(err("node.1.kafka.port=1\nnode.1.controller.port=2\n").contains("nodes="));
        assert!(
            err("nodes=2\nnode.1.kafka.port=1\nnode.1.controller.port=2\n").contains("node.2.kafka.port is missing")
        );
        assert!(err("nodes=1\nnode.1.kafka.port=0\n").contains("line 2"));
        assert!(err("nodes=1\nnode.1.kafka.port=5\nnode.1.controller.port=5\n").contains("port 5"));
        assert!(err("nodes=1\nnode.1.kafka.port=5\nnode.1.controller.port=6\nnode.2.kafka.port=7\n").contains("node 2"));
        assert!(err("nodes=1\nbogus=1\n").contains("unknown key bogus"));
        assert!(err("nodes=1\nnodes=1\n").contains("twice"));
    }

    #[test]
    fn server_properties_name_the_node_and_all_voters() {
        let l = layout();
        let text = l.server_properties(&l.nodes[1], Path::new("/c/node-2/data"));
        for line in [
            "node.id=2",
            "process.roles=broker,controller",
            "listeners=PLAINTEXT://127.0.0.1:40003,CONTROLLER://127.0.0.1:40004",
            "controller.listener.names=CONTROLLER",
            "controller.quorum.voters=1@127.0.0.1:40002,2@127.0.0.1:40004,3@127.0.0.1:40006",
            "log.dirs=/c/node-2/data",
            "log.segment.bytes=1048576",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        assert_eq!(l.bootstrap(), "127.0.0.1:40001,127.0.0.1:40003,127.0.0.1:40005");
    }

    #[test]
    fn a_log_tail_ending_in_a_backtrace_names_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("tern.log");
        let mut text = String::from("INFO starting\nError: binding 127.0.0.1:1: Address in use\n\nStack backtrace:\n");
        for i in 0..30 {
            text.push_str(&format!("  {i}: frame\n"));
        }
        std::fs::write(&log, text).unwrap();
        let tail = log_tail(&log, 20);
        assert!(tail.contains("last error in") && tail.contains("Error: binding 127.0.0.1:1"), "{tail}");
        assert!(tail.ends_with("  29: frame") && !tail.contains("  9: frame"), "{tail}");
        std::fs::write(&log, "one\ntwo\n").unwrap();
        assert!(log_tail(&log, 20).ends_with("one\ntwo"));
        assert!(log_tail(&dir.path().join("missing"), 20).contains("cannot be read"));
    }

    #[test]
    fn settings_owned_by_the_layout_are_refused() {
        assert!(parse_settings(&["node.id=4".into()]).is_err());
        assert!(parse_settings(&["listeners=PLAINTEXT://:1".into()]).is_err());
        assert!(parse_settings(&["novalue".into()]).is_err());
        let s = parse_settings(&["a.b=1".into(), "c=x=y".into()]).unwrap();
        assert_eq!(s.get("c").map(String::as_str), Some("x=y"));
    }

    #[test]
    fn a_pid_is_our_node_only_with_its_serve_command_line() {
        let config = Path::new("/c/node-1/server.properties");
        let ours = b"/usr/bin/tern\0serve\0--config\0/c/node-1/server.properties\0";
        assert!(is_node_cmdline(ours, config));
        assert!(is_node_cmdline(b"/t/debug/tern\0serve\0--config=/c/node-1/server.properties\0", config));
        // Another node of the same cluster, another cluster, another program, another subcommand.
        assert!(!is_node_cmdline(b"/usr/bin/tern\0serve\0--config\0/c/node-2/server.properties\0", config));
        assert!(!is_node_cmdline(b"/usr/bin/tern\0serve\0--config\0/d/node-1/server.properties\0", config));
        assert!(!is_node_cmdline(b"/bin/sleep\0serve\0--config\0/c/node-1/server.properties\0", config));
        assert!(!is_node_cmdline(b"/usr/bin/tern\0log\0--config\0/c/node-1/server.properties\0", config));
        // A zombie's cmdline is empty; a prefix of the path is not the path.
        assert!(!is_node_cmdline(b"", config));
        assert!(!is_node_cmdline(b"/usr/bin/tern\0serve\0--config\0/c/node-1/server.properties.bak\0", config));
    }

    #[test]
    fn the_pid_check_reads_proc() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths { dir: dir.path().to_path_buf() };
        std::fs::create_dir_all(paths.node_dir(1)).unwrap();
        assert_eq!(paths.running_pid(1), None, "no pid file");
        // This test process is alive but is no `tern serve` of node 1 (a reused pid).
        std::fs::write(paths.pid(1), format!("{}\n", std::process::id())).unwrap();
        assert_eq!(paths.running_pid(1), None);
        std::fs::write(paths.pid(1), "garbage").unwrap();
        assert_eq!(paths.running_pid(1), None);
        // A process whose command line is `tern serve --config <node 1's config>`: sh running a
        // script named `serve`, with argv[0] set to `tern`.
        std::fs::write(dir.path().join("serve"), "while :; do sleep 1; done\n").unwrap();
        let mut child = Command::new("/bin/sh")
            .arg0("tern")
            .arg("serve")
            .arg("--config")
            .arg(paths.config(1))
            .current_dir(dir.path())
            // Its `sleep` outlives the kill by up to a second: it must not hold the test's output.
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::fs::write(paths.pid(1), format!("{}\n", child.id())).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while paths.running_pid(1).is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(paths.running_pid(1), Some(child.id()));
        assert_eq!(paths.running_pid(2), None, "node 2 has no pid file");
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(paths.running_pid(1), None, "an exited process is not running");
    }
}
