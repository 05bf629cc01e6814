"""A local Tern cluster driven through `tern cluster up|status|down` (see tests/cluster/README.md).

`Cluster` knows every node's ports from the layout file `DIR/cluster.properties` that the
first `tern cluster up` writes, and every node's pid from `DIR/node-N/pid` (checked against
`/proc/PID/cmdline`, as `tern cluster` itself does: pids get reused). Faults are signals sent
to one node: `kill9`, `stop` (SIGSTOP), `cont` (SIGCONT); `restart` is `tern cluster up` again,
which starts only the nodes that are not running.
"""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient

REPO = Path(__file__).resolve().parents[2]

UP_TIMEOUT = 90  # seconds `tern cluster up` may wait for the cluster to serve
DOWN_TIMEOUT = 60  # `tern cluster down` gives each node 15 s, then SIGKILLs
REQ_TIMEOUT = 30
# Settings every test cluster gets unless a test overrides them (as tests/conftest.py's brokers).
DEFAULT_SETTINGS = {"group.initial.rebalance.delay.ms": "0"}


def tern_bin() -> Path:
    """The binary under test: tests/conftest.py's rule (`$TERN_BIN`, else
    `<target dir>/release/tern`). Not imported from there: this directory's own conftest.py
    takes the `conftest` module name while it loads."""
    env = os.environ.get("TERN_BIN")
    if env:
        return Path(env)
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    if not target.is_absolute():
        target = REPO / target
    return target / "release" / "tern"


class ClusterError(AssertionError):
    pass


def parse_layout(text):
    """cluster.properties -> (nodes {id: (kafka_port, controller_port)}, settings {key: value})."""
    props = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "!")):
            continue
        k, _, v = line.partition("=")
        props[k.strip()] = v.strip()
    n = int(props["nodes"])
    nodes = {i: (int(props[f"node.{i}.kafka.port"]), int(props[f"node.{i}.controller.port"])) for i in range(1, n + 1)}
    settings = {k[len("set."):]: v for k, v in props.items() if k.startswith("set.")}
    return nodes, settings


def is_node_cmdline(cmdline: bytes, config: Path) -> bool:
    """The check of crates/tern/src/cluster.rs: `tern* serve ... --config <config>`."""
    args = cmdline.split(b"\0")
    if len(args) < 2 or not os.path.basename(args[0]).startswith(b"tern") or args[1] != b"serve":
        return False
    want = os.fsencode(str(config))
    return any(a == b"--config" and b == want for a, b in zip(args, args[1:])) or b"--config=" + want in args


class Cluster:
    def __init__(self, directory, nodes=3, settings=None):
        self.dir = Path(directory).resolve()
        self.nodes = nodes
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        self.last = None  # the last `tern cluster ...` run: subprocess.CompletedProcess (text)
        self.history = []  # (command, exit status, stdout, stderr) of every `tern cluster ...` run

    # -- the tern cluster commands ------------------------------------------------------------
    def run(self, *args, timeout=REQ_TIMEOUT, check=True):
        binary = tern_bin()
        if not binary.exists():
            raise ClusterError(f"tern binary not found at {binary}; build it with `cargo build --release -p tern` "
                               f"or set TERN_BIN")
        cmd = [str(binary), "cluster", *args, "--dir", str(self.dir)]
        try:
            # No anyhow backtrace after an error: the message is what the report needs.
            env = {**os.environ, "RUST_LIB_BACKTRACE": os.environ.get("RUST_LIB_BACKTRACE", "0")}
            r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                               env=env)
        except subprocess.TimeoutExpired as e:
            self.history.append((cmd, "timeout", e.stdout, e.stderr))
            raise ClusterError(f"`{' '.join(cmd)}` did not finish within {timeout}s\n"
                               f"stderr: {e.stderr}\n{self.log_tails()}") from None
        self.last = r
        self.history.append((cmd, r.returncode, r.stdout, r.stderr))
        if check and r.returncode != 0:
            raise ClusterError(f"`{' '.join(cmd)}` exited with {r.returncode}\nstdout: {r.stdout}\n"
                               f"stderr: {r.stderr}\n{self.log_tails()}")
        return r

    def up(self, timeout=UP_TIMEOUT):
        """`tern cluster up`; returns the bootstrap address it prints."""
        args = ["up", "--nodes", str(self.nodes), "--timeout", str(timeout)]
        for k, v in self.settings.items():
            args += ["--set", f"{k}={v}"]
        r = self.run(*args, timeout=timeout + 30)
        return r.stdout.strip()

    def status(self):
        return self.run("status", timeout=REQ_TIMEOUT + 15, check=False)

    def down(self, timeout=DOWN_TIMEOUT):
        return self.run("down", timeout=timeout)

    # -- layout and processes -----------------------------------------------------------------
    def started(self):
        """Whether `up` made anything that teardown must stop."""
        return (self.dir / "cluster.properties").exists()

    def layout(self):
        return parse_layout((self.dir / "cluster.properties").read_text())

    def node_ids(self):
        return sorted(self.layout()[0])

    def kafka_port(self, node):
        return self.layout()[0][node][0]

    def controller_port(self, node):
        return self.layout()[0][node][1]

    def kafka_addr(self, node):
        return f"127.0.0.1:{self.kafka_port(node)}"

    @property
    def bootstrap(self):
        return ",".join(self.kafka_addr(n) for n in self.node_ids())

    def node_dir(self, node):
        return self.dir / f"node-{node}"

    def config_path(self, node):
        return self.node_dir(node) / "server.properties"

    def log_path(self, node):
        return self.node_dir(node) / "tern.log"

    def pid(self, node):
        """Node `node`'s pid if it is running, else None."""
        try:
            pid = int((self.node_dir(node) / "pid").read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if is_node_cmdline(cmdline, self.config_path(node)) else None

    def running(self, node):
        return self.pid(node) is not None

    def pids(self):
        return {n: self.pid(n) for n in self.node_ids()}

    def _signal(self, node, sig):
        pid = self.pid(node)
        if pid is None:
            raise ClusterError(f"node {node} is not running; cannot send {sig.name}")
        os.kill(pid, sig)
        return pid

    def _wait_gone(self, node, pid, timeout):
        deadline = time.monotonic() + timeout
        while self.pid(node) == pid:
            if time.monotonic() > deadline:
                raise ClusterError(f"node {node} (pid {pid}) still runs {timeout}s after SIGKILL")
            time.sleep(0.05)

    def kill9(self, node):
        """SIGKILL node `node` and wait until its process is gone."""
        pid = self._signal(node, signal.SIGKILL)
        self._wait_gone(node, pid, 10)
        return pid

    def stop(self, node):
        """SIGSTOP: the node freezes, its sockets stay open."""
        return self._signal(node, signal.SIGSTOP)

    def cont(self, node):
        return self._signal(node, signal.SIGCONT)

    def restart(self, node=None):
        """`tern cluster up` again: starts the nodes that are not running (`node`, if given,
        must be one of them) and waits until the cluster serves."""
        if node is not None and self.running(node):
            raise ClusterError(f"node {node} is running; restart() starts only stopped nodes")
        return self.up()

    def kill_leftovers(self):
        """SIGKILL every node still running (teardown, after `down`)."""
        killed = []
        if not self.started():
            return killed
        for n in self.node_ids():
            pid = self.pid(n)
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append((n, pid))
                except ProcessLookupError:
                    pass
        return killed

    # -- metadata -----------------------------------------------------------------------------
    def admin(self):
        return AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 10000})

    def partitions(self, topic, admin=None):
        """{partition: (leader, replicas, isrs)} from Metadata, or {} while the topic is unknown."""
        admin = admin or self.admin()
        md = admin.list_topics(topic, timeout=REQ_TIMEOUT)
        t = md.topics.get(topic)
        if t is None or t.error is not None:
            return {}
        return {p: (pm.leader, list(pm.replicas), list(pm.isrs)) for p, pm in t.partitions.items()}

    def leader_of(self, topic, partition, admin=None):
        """The partition's leader as Metadata reports it (-1 while it has none)."""
        parts = self.partitions(topic, admin)
        if partition not in parts:
            raise ClusterError(f"{topic}-{partition} is not in metadata: {parts}")
        return parts[partition][0]

    def wait_partitions(self, topic, count, isr=3, timeout=60, what="partitions"):
        """Polls metadata until `topic` has `count` partitions, each with a leader and `isr`
        in-sync replicas; returns their (leader, replicas, isrs)."""
        admin = self.admin()
        deadline = time.monotonic() + timeout
        parts = {}
        while True:
            try:
                parts = self.partitions(topic, admin)
            except Exception as e:  # noqa: BLE001 - a node may be down; retry until the deadline
                parts = {"error": repr(e)}
            if len(parts) == count and "error" not in parts and all(
                    leader >= 0 and len(isrs) == isr for leader, _, isrs in parts.values()):
                return parts
            if time.monotonic() > deadline:
                raise ClusterError(f"{what}: {topic} did not have {count} partitions with a leader and {isr} "
                                   f"in-sync replicas within {timeout}s; last seen {parts}")
            time.sleep(0.5)

    # -- debugging ----------------------------------------------------------------------------
    def log_tail(self, node, max_bytes=20000):
        p = self.log_path(node)
        try:
            data = p.read_bytes()
        except OSError as e:
            return f"--- {p}: unreadable ({e})"
        if len(data) > max_bytes:
            data = b"...\n" + data[-max_bytes:]
        text = re.sub(r"\x1b\[[0-9;]*m", "", data.decode("utf-8", "replace"))
        return f"--- {p} ---\n{text}"

    def log_tails(self, max_bytes=20000):
        try:
            ids = self.node_ids()
        except (OSError, KeyError, ValueError):
            return f"(no layout in {self.dir})"
        return "\n".join(self.log_tail(n, max_bytes) for n in ids)

    def __repr__(self):
        return f"Cluster({self.dir}, nodes={self.nodes})"
