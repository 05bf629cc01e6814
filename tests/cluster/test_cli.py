"""`tern cluster up | status | down` on a 3-node cluster: what each prints, which nodes each
starts or stops, and that they find the cluster by its directory alone."""

import re
import subprocess

import pytest

from cluster import tern_bin

pytestmark = pytest.mark.timeout(300)

ADDR = r"127\.0\.0\.1:(\d+)"


def status_rows(text):
    """{node: (roles, kafka address, controller address, pid, state)} from `tern cluster status`."""
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^(\d+)\s+(\S+)\s+(127\.0\.0\.1:\d+)\s+(127\.0\.0\.1:\d+)\s+(\S+)\s+(\S.*)$", line)
        if m:
            rows[int(m[1])] = (m[2], m[3], m[4], m[5], m[6].strip())
    return rows


def controller_leader(text):
    m = re.search(r"^Controller leader: (\S+)", text, re.M)
    assert m, f"no controller leader line in status:\n{text}"
    return m[1]


def check_status(cluster, running):
    """`status` exits 0 and shows every node with its addresses; `running` ones with their pid."""
    r = cluster.status()
    assert r.returncode == 0, f"status exited {r.returncode}: {r.stdout}{r.stderr}"
    rows = status_rows(r.stdout)
    assert sorted(rows) == [1, 2, 3], f"status lists nodes {sorted(rows)}:\n{r.stdout}"
    for n, (roles, kafka, controller, pid, state) in rows.items():
        assert roles == "broker,controller", r.stdout
        assert kafka == cluster.kafka_addr(n) and controller == f"127.0.0.1:{cluster.controller_port(n)}", r.stdout
        if n in running:
            assert (pid, state) == (str(cluster.pid(n)), "running"), f"node {n}:\n{r.stdout}"
        else:
            assert (pid, state) == ("-", "stopped"), f"node {n}:\n{r.stdout}"
    return r.stdout


def started_nodes(stderr):
    return sorted(int(n) for n in re.findall(r"^Started node (\d+) ", stderr, re.M))


def test_up_status_restart_down(cluster):
    # First `up`: three nodes, the bootstrap address alone on stdout.
    boot = cluster.up()
    assert re.fullmatch(rf"{ADDR},{ADDR},{ADDR}", boot), f"bootstrap {boot!r}"
    assert cluster.last.stdout == boot + "\n", f"stdout holds more than the bootstrap: {cluster.last.stdout!r}"
    assert boot == cluster.bootstrap, "the bootstrap names the layout's Kafka ports, in node order"
    ports = [p for n in (1, 2, 3) for p in (cluster.kafka_port(n), cluster.controller_port(n))]
    assert len(set(ports)) == 6, f"ports are distinct: {ports}"
    assert started_nodes(cluster.last.stderr) == [1, 2, 3], cluster.last.stderr
    pids = cluster.pids()
    assert all(pids.values()), f"every node runs: {pids}"
    for n in (1, 2, 3):
        config = cluster.config_path(n).read_text()
        assert f"node.id={n}\n" in config and (cluster.node_dir(n) / "data").is_dir()

    text = check_status(cluster, running={1, 2, 3})
    assert controller_leader(text) in {"1", "2", "3"}, f"a controller leader among the nodes:\n{text}"
    # `tern quorum` (DescribeQuorum) asked of any node names the same active controller and all
    # three voters; Metadata's controller_id names a live broker instead (Kafka's KRaft rule).
    for n in (1, 2, 3):
        q = subprocess.run([str(tern_bin()), "quorum", "--bootstrap-server", cluster.kafka_addr(n)],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
        assert q.returncode == 0, f"tern quorum against node {n}: {q.stderr}"
        assert re.search(rf"^LeaderId:\s+{controller_leader(text)}$", q.stdout, re.M), q.stdout
        assert re.search(r"^CurrentVoters:\s+\[1,2,3\]$", q.stdout, re.M), q.stdout
        md = cluster.admin().list_topics(timeout=30)
        assert md.controller_id in (1, 2, 3), f"Metadata controller_id {md.controller_id}"

    # A second `up` starts nothing: every node is running.
    assert cluster.up() == boot
    assert started_nodes(cluster.last.stderr) == [], cluster.last.stderr
    assert len(re.findall(r"^Node \d is already running", cluster.last.stderr, re.M)) == 3, cluster.last.stderr
    assert cluster.pids() == pids

    # kill -9 one node: status reports it stopped (still exit 0); `up` restarts only it.
    cluster.kill9(2)
    check_status(cluster, running={1, 3})
    assert cluster.restart(2) == boot
    assert started_nodes(cluster.last.stderr) == [2], cluster.last.stderr
    after = cluster.pids()
    assert after[1] == pids[1] and after[3] == pids[3] and after[2] not in (None, pids[2]), f"{pids} -> {after}"
    check_status(cluster, running={1, 2, 3})

    # `down` stops every node, removes the pid files, keeps the data; a second `down` is a no-op.
    cluster.down()
    assert cluster.pids() == {1: None, 2: None, 3: None}
    for n in (1, 2, 3):
        assert not (cluster.node_dir(n) / "pid").exists()
        assert (cluster.node_dir(n) / "data").is_dir() and any((cluster.node_dir(n) / "data").iterdir()), \
            f"node {n}'s data is kept"
    text = check_status(cluster, running=set())
    assert controller_leader(text) == "unknown", text
    cluster.down()


def test_a_later_up_keeps_the_layout(cluster):
    """`--nodes` or `--set` different from the layout's are refused, naming the difference."""
    cluster.up()
    r = cluster.run("up", "--nodes", "5", check=False)
    assert r.returncode != 0 and "--nodes 5" in r.stderr and "3 nodes" in r.stderr, r.stderr
    r = cluster.run("up", "--set", "num.partitions=7", check=False)
    assert r.returncode != 0 and "--set differs" in r.stderr, r.stderr
    assert r.stdout == ""


def test_refusals_that_start_nothing(cluster):
    """No cluster in the directory: status and down fail and say so. `--set` of a key the layout
    owns is refused before anything is written or started."""
    for cmd in ("status", "down"):
        r = cluster.run(cmd, check=False)
        assert r.returncode != 0 and "holds no Tern cluster" in r.stderr, f"{cmd}: {r.stderr}"
    r = cluster.run("up", "--set", "node.id=7", check=False)
    assert r.returncode != 0 and "node.id" in r.stderr, r.stderr
    assert not (cluster.dir / "cluster.properties").exists()
