"""A Tern cluster whose nodes each run in their own network namespace, so that the harness can
cut one node off the network (a partition) and heal it again.

Layout, all made by the harness and removed at teardown (names carry the pytest pid, so two
runs on one machine do not meet; namespaces left by a dead run are removed at the next start):

    root namespace (pytest, the clients)  tn<pid>x<k>c  10.213.S.1/24 ──┐
    namespace tn<pid>x<k>hub:  bridge br0  ◄── tn<pid>x<k>cp ◄──────────────┘
                                       ◄── tn<pid>x<k>h1 ── eth0 10.213.S.11  namespace tn<pid>x<k>n1: node 1
                                       ◄── tn<pid>x<k>h2 ── eth0 10.213.S.12  namespace tn<pid>x<k>n2: node 2
                                       ◄── tn<pid>x<k>h3 ── eth0 10.213.S.13  namespace tn<pid>x<k>n3: node 3

`isolate(node)` sets the node's bridge port (tn<pid>x<k>hN) down: its packets go nowhere and nothing
reaches it, from the clients or the other nodes, while its process and open sockets live on, as in
a switch failure. `heal(node)` sets the port up again.

Each node is a combined broker and controller started as an operator would without `tern cluster`:
its own server.properties (`listeners=PLAINTEXT://10.213.S.1N:9092,CONTROLLER://10.213.S.1N:9093`,
every voter in `controller.quorum.voters`) and a `meta.properties` naming the one cluster id, run
as `ip netns exec tn<pid>x<k>nN tern serve --config ...` (ip execs tern: the pid is tern's). The rest
of `Cluster` (signals, pid checks, metadata polls, log tails) works unchanged.

Needs root with CAP_NET_ADMIN (as CI and this project's machines run); without it the cluster
fails to start and says why.
"""

import base64
import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

from cluster import DEFAULT_SETTINGS, Cluster, ClusterError, REQ_TIMEOUT, tern_bin

KAFKA_PORT = 9092
CONTROLLER_PORT = 9093
START_TIMEOUT = 90
STOP_GRACE = 15


def ip(*args, check=True):
    r = subprocess.run(["ip", *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise ClusterError(f"`ip {' '.join(args)}` exited {r.returncode}: {r.stderr.strip()} (network namespaces "
                           f"need root with CAP_NET_ADMIN)")
    return r


def remove_stale_namespaces():
    """Removes the namespaces (and so their veths) of earlier runs whose pytest is gone, after
    SIGKILLing what still runs in them (nodes of a pytest that died without its teardown)."""
    r = ip("netns", "list", check=False)
    for line in r.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.match(r"tn(\d+)x\d+(hub|n\d+)$", name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            for pid in ip("netns", "pids", name, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            ip("netns", "del", name, check=False)


class Network:
    """The namespaces, bridge and veths of one `NetCluster` (see the module doc)."""

    count = 0  # networks made by this process: each cluster gets its own names and subnet

    def __init__(self, nodes):
        Network.count += 1
        # A new tag and /24 per cluster (away from the usual 10.0/10.1 ranges): clients an
        # earlier test left behind cannot reach a later test's nodes at the same addresses.
        self.tag = f"tn{os.getpid()}x{Network.count}"
        self.nodes = nodes
        self.subnet = f"10.213.{(os.getpid() + 37 * Network.count) % 250 + 1}"
        self.hub = f"{self.tag}hub"
        self.made = False

    def ns(self, node):
        return f"{self.tag}n{node}"

    def port(self, node):
        return f"{self.tag}h{node}"

    def addr(self, node):
        return f"{self.subnet}.{10 + node}"

    def create(self):
        remove_stale_namespaces()
        self.destroy()
        self.made = True
        ip("netns", "add", self.hub)
        ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        ip("-n", self.hub, "link", "set", "br0", "up")
        for n in range(1, self.nodes + 1):
            ns = self.ns(n)
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
            ip("link", "add", self.port(n), "netns", self.hub, "type", "veth", "peer", "name", "eth0", "netns", ns)
            ip("-n", self.hub, "link", "set", self.port(n), "master", "br0", "up")
            ip("-n", ns, "addr", "add", f"{self.addr(n)}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
        client, peer = f"{self.tag}c", f"{self.tag}cp"
        ip("link", "add", client, "type", "veth", "peer", "name", peer, "netns", self.hub)
        ip("-n", self.hub, "link", "set", peer, "master", "br0", "up")
        ip("addr", "add", f"{self.subnet}.1/24", "dev", client)
        ip("link", "set", client, "up")

    def set_port(self, node, up):
        ip("-n", self.hub, "link", "set", self.port(node), "up" if up else "down")

    def destroy(self):
        """Deleting a namespace deletes the veths in it and so their peers elsewhere."""
        for n in range(1, self.nodes + 1):
            ip("netns", "del", self.ns(n), check=False)
        ip("netns", "del", self.hub, check=False)
        ip("link", "del", f"{self.tag}c", check=False)


def die_with_parent():
    """In the child before exec: SIGKILL it when the thread that started it (pytest's) dies,
    so a pytest killed without its teardown (an abort, SIGKILL) leaves no node running."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def kafka_uuid():
    """A cluster id as Kafka writes it: 16 random bytes, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


class NetCluster(Cluster):
    def __init__(self, directory, nodes=3, settings=None, disks=None):
        """`disks`: {node: MiB} gives those nodes a data directory on a tmpfs of that size (a
        disk the harness can fill), mounted at `node-N/disk` and unmounted by `down`."""
        super().__init__(directory, nodes=nodes, settings=settings)
        self.net = Network(nodes)
        self.isolated = set()
        self.disks = dict(disks or {})
        self.mounted = []

    # -- addresses ----------------------------------------------------------------------------
    def node_ids(self):
        return list(range(1, self.nodes + 1))

    def kafka_addr(self, node):
        return f"{self.net.addr(node)}:{KAFKA_PORT}"

    def controller_addr(self, node):
        return f"{self.net.addr(node)}:{CONTROLLER_PORT}"

    def server_properties(self, node):
        voters = ",".join(f"{n}@{self.controller_addr(n)}" for n in self.node_ids())
        lines = [f"# Node {node} of a NetCluster (tests/cluster/netcluster.py), in namespace {self.net.ns(node)}",
                 f"node.id={node}", "process.roles=broker,controller",
                 f"listeners=PLAINTEXT://{self.kafka_addr(node)},CONTROLLER://{self.controller_addr(node)}",
                 "controller.listener.names=CONTROLLER", f"controller.quorum.voters={voters}",
                 f"log.dirs={self.data_dir(node)}"]
        lines += [f"{k}={v}" for k, v in self.settings.items()]
        return "\n".join(lines) + "\n"

    def disk(self, node):
        """Where node `node`'s data directory lives: its own tmpfs if it has one."""
        return self.node_dir(node) / "disk" if node in self.disks else self.node_dir(node)

    def data_dir(self, node):
        return self.disk(node) / "data"

    # -- lifecycle ----------------------------------------------------------------------------
    def started(self):
        return self.net.made

    def up(self, timeout=START_TIMEOUT):
        """Creates the network and the node files on the first call; starts every node that is
        not running; waits until every running node is in the cluster's metadata."""
        if not self.net.made:
            self.net.create()
            for n, mib in self.disks.items():
                self.disk(n).mkdir(parents=True, exist_ok=True)
                subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(self.disk(n))], check=True)
                self.mounted.append(self.disk(n))
            cluster_id = kafka_uuid()
            for n in self.node_ids():
                self.data_dir(n).mkdir(parents=True, exist_ok=True)
                self.config_path(n).write_text(self.server_properties(n))
                (self.data_dir(n) / "meta.properties").write_text(
                    f"version=1\ncluster.id={cluster_id}\nnode.id={n}\n")
        for n in self.node_ids():
            if not self.running(n):
                self._start(n)
        self.wait_serving(timeout)
        return self.bootstrap

    def _start(self, node):
        cmd = ["ip", "netns", "exec", self.net.ns(node), str(tern_bin()), "serve", "--config",
               str(self.config_path(node))]
        with open(self.log_path(node), "ab") as log:
            log.write(f"=== NetCluster: starting node {node} at {time.time():.3f}: {' '.join(cmd)}\n".encode())
            log.flush()
            env = {**os.environ, "RUST_LIB_BACKTRACE": os.environ.get("RUST_LIB_BACKTRACE", "0")}
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                    start_new_session=True, preexec_fn=die_with_parent)
        (self.node_dir(node) / "pid").write_text(f"{proc.pid}\n")
        self.history.append((cmd, f"started pid {proc.pid}", "", ""))
        # Reap it when it exits, so its pid does not linger as a zombie that /proc still shows.
        self._children = getattr(self, "_children", [])
        self._children.append(proc)

    def _reap(self):
        for p in getattr(self, "_children", []):
            p.poll()

    def pid(self, node):
        self._reap()
        return super().pid(node)

    def wait_serving(self, timeout):
        """Until Metadata from a running node lists every running node as a broker."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            running = {n for n in self.node_ids() if self.running(n)}
            reachable = running - self.isolated
            if reachable:
                try:
                    md = self.admin().list_topics(timeout=5)
                    last = sorted(md.brokers)
                    if running <= set(md.brokers) and self.controller_leader() in self.node_ids():
                        return
                except Exception as e:  # noqa: BLE001 - still starting
                    last = repr(e)
            if time.monotonic() > deadline:
                raise ClusterError(f"{self}: nodes {sorted(running)} not all serving within {timeout}s (last "
                                   f"metadata brokers: {last})\n{self.log_tails(4000)}")
            time.sleep(0.3)

    def restart(self, node=None):
        if node is not None and self.running(node):
            raise ClusterError(f"node {node} is running; restart() starts only stopped nodes")
        return self.up()

    def down(self, timeout=None):
        """SIGTERM (and SIGCONT for a stopped node) to every node, SIGKILL after the grace period,
        then the network is removed."""
        for n in list(self.isolated):
            self.heal(n)
        pids = {n: self.pid(n) for n in self.node_ids()}
        for pid in filter(None, pids.values()):
            for sig in (signal.SIGTERM, signal.SIGCONT):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + STOP_GRACE
        while any(self.pid(n) for n in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        slow = self.kill_leftovers()
        self.net.destroy()
        for m in self.mounted:
            subprocess.run(["umount", "-l", str(m)], check=False)
        self.mounted.clear()
        if slow:
            raise ClusterError(f"{self}: nodes {slow} did not stop within {STOP_GRACE}s of SIGTERM; SIGKILLed")

    def kill_leftovers(self):
        killed = super().kill_leftovers()
        for p in getattr(self, "_children", []):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
        return killed

    # -- faults -------------------------------------------------------------------------------
    def isolate(self, node):
        """Cuts node `node` off from every other node and every client."""
        self.net.set_port(node, up=False)
        self.isolated.add(node)

    def heal(self, node):
        self.net.set_port(node, up=True)
        self.isolated.discard(node)

    def admin(self):
        from confluent_kafka.admin import AdminClient

        return AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 10000})

    def controller_leader(self):
        """The active controller, from `tern quorum` (DescribeQuorum); -1 if unknown. (Metadata's
        controller_id names a live broker, as Kafka's KRaft brokers answer, not the controller.)"""
        r = subprocess.run([str(tern_bin()), "quorum", "--bootstrap-server", self.bootstrap], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=REQ_TIMEOUT)
        m = re.search(r"^LeaderId:\s+(\d+)", r.stdout, re.M)
        return int(m.group(1)) if r.returncode == 0 and m else -1

    def __repr__(self):
        return f"NetCluster({self.dir}, nodes={self.nodes}, subnet {self.net.subnet}.0/24)"


__all__ = ["NetCluster", "DEFAULT_SETTINGS"]
