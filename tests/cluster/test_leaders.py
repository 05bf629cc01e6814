"""Leadership back to the preferred replicas: by hand with `tern elect-leaders` (ElectLeaders),
and by the controller itself (`auto.leader.rebalance.enable`, every
`leader.imbalance.check.interval.seconds`)."""

import subprocess
import time

import pytest

from cluster import REQ_TIMEOUT, tern_bin
from records import create_replicated_topic, produce_acked

pytestmark = pytest.mark.timeout(300)

TOPIC = "leaders"
PARTITIONS = 3
FAST = {"broker.session.timeout.ms": "4000", "broker.heartbeat.interval.ms": "500"}


def elect(cluster, *args):
    return subprocess.run([str(tern_bin()), "elect-leaders", "--bootstrap-server", cluster.bootstrap, *args],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=REQ_TIMEOUT + 15)


def unbalance(cluster):
    """Kills the preferred leader of partition 0 and restarts it: once it is back in the ISR,
    partition 0 is led by another replica. Returns the preferred replica's id."""
    parts = cluster.partitions(TOPIC)
    preferred = parts[0][1][0]
    assert parts[0][0] == preferred, f"{TOPIC}-0 starts on its preferred leader: {parts[0]}"
    cluster.kill9(preferred)
    deadline = time.monotonic() + 30
    while cluster.leader_of(TOPIC, 0) in (preferred, -1):
        assert time.monotonic() < deadline, f"{TOPIC}-0 did not move off node {preferred}"
        time.sleep(0.2)
    cluster.restart(preferred)
    cluster.wait_partitions(TOPIC, PARTITIONS, isr=3, timeout=60, what=f"node {preferred} back in every ISR")
    return preferred


def test_elect_leaders_moves_leadership_back_to_the_preferred_replica(cluster_factory):
    c = cluster_factory(settings={**FAST, "auto.leader.rebalance.enable": "false"})
    c.up()
    create_replicated_topic(c, TOPIC, PARTITIONS)
    preferred = unbalance(c)
    assert c.leader_of(TOPIC, 0) != preferred, "no automatic balancing when it is disabled"

    r = elect(c, "--topic", TOPIC, "--partition", "0")
    assert r.returncode == 0, f"elect-leaders exited {r.returncode}: {r.stdout}{r.stderr}"
    assert f"Successfully completed leader election (PREFERRED) for partitions {TOPIC}-0" in r.stdout, r.stdout
    assert c.leader_of(TOPIC, 0) == preferred, "the answering broker's metadata shows the new leader"
    produce_acked(c.bootstrap, TOPIC, PARTITIONS, 30)

    # Balanced now: nothing to do, and a partition already on its preferred leader says so.
    r = elect(c, "--all-topic-partitions")
    assert r.returncode == 0 and "No partition needed a leader election (PREFERRED)." in r.stdout, r.stdout + r.stderr
    r = elect(c, "--topic", TOPIC, "--partition", "1")
    assert r.returncode == 0 and f"Valid replica already elected for partitions {TOPIC}-1" in r.stdout, r.stdout
    # An unknown partition fails the command, naming it.
    r = elect(c, "--topic", TOPIC, "--partition", "7")
    assert r.returncode != 0 and f"{TOPIC}-7: UnknownTopicOrPartition" in r.stderr, r.stdout + r.stderr


def test_the_controller_balances_leaders_by_itself(cluster_factory):
    c = cluster_factory(settings={**FAST, "leader.imbalance.check.interval.seconds": "2"})
    c.up()
    create_replicated_topic(c, TOPIC, PARTITIONS)
    preferred = unbalance(c)
    deadline = time.monotonic() + 30
    while c.leader_of(TOPIC, 0) != preferred:
        assert time.monotonic() < deadline, f"{TOPIC}-0 did not go back to node {preferred} within 30 s"
        time.sleep(0.2)
    parts = c.partitions(TOPIC)
    assert all(leader == replicas[0] for leader, replicas, _ in parts.values()), parts
