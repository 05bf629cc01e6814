"""An operator damages a stopped node's data directory, on the real binary:

- a replica whose `partition.metadata` names another topic id is left exactly as it is and is
  offline, its file named in the log at ERROR; the cluster keeps serving it from the others;
- a replica directory emptied (as a crash between creating the directory and writing its
  marker leaves it) is adopted and refilled from the leader, and the node rejoins its ISR;
- no acknowledged record is lost."""

import time

import pytest

from records import create_replicated_topic, produce_acked, read_partitions

pytestmark = pytest.mark.timeout(300)

TOPIC = "damaged"
PARTITIONS = 2
RECORDS = 600
FOREIGN_ID = "AAAAAAAAAAAAAAAAAAAAAA"  # a valid Kafka topic id that is not the topic's


def files_of(d):
    return sorted((p.relative_to(d).as_posix(), p.read_bytes()) for p in d.rglob("*") if p.is_file())


def test_a_damaged_replica_is_left_alone_and_an_emptied_one_is_refilled(running_cluster):
    c = running_cluster
    create_replicated_topic(c, TOPIC, PARTITIONS, rf=3, min_isr=1)
    acked = produce_acked(c.bootstrap, TOPIC, PARTITIONS, RECORDS)
    parts = c.partitions(TOPIC)
    # A node that follows both partitions (3 nodes, RF 3: every node hosts both).
    node = next(n for n in c.node_ids() if all(parts[p][0] != n for p in range(PARTITIONS)))
    data = c.node_dir(node) / "data"
    damaged, emptied = data / f"{TOPIC}-0", data / f"{TOPIC}-1"
    # The follower has every acked record before it goes down (it is in the ISR).
    c.wait_partitions(TOPIC, PARTITIONS, isr=3, what="all replicas in sync before the damage")
    c.kill9(node)
    # Once its session expires the controller fences it and takes it out of every ISR: its
    # return to an ISR below is then its own doing.
    deadline = time.monotonic() + 60
    while any(node in isrs for _, _, isrs in c.partitions(TOPIC).values()):
        assert time.monotonic() < deadline, f"node {node} stayed in an ISR: {c.partitions(TOPIC)}"
        time.sleep(0.5)

    marker = damaged / "partition.metadata"
    marker.write_text(f"version: 0\ntopic_id: {FOREIGN_ID}\n")
    before = files_of(damaged)
    for f in emptied.iterdir():
        f.unlink()

    c.restart(node)
    # The emptied replica refills from the leader and rejoins its ISR.
    deadline = time.monotonic() + 90
    while True:
        isr1 = c.partitions(TOPIC)[1][2]
        if node in isr1:
            break
        assert time.monotonic() < deadline, f"node {node} did not rejoin the ISR of {TOPIC}-1: {isr1}"
        time.sleep(0.5)
    assert (emptied / "partition.metadata").exists()
    assert sum(f.stat().st_size for f in emptied.glob("*.log")) > 0, "the refilled replica has no records"

    # The damaged replica: untouched, offline, named.
    assert files_of(damaged) == before, "a replica whose marker disagrees with the metadata was changed"
    log = c.log_tail(node, max_bytes=200_000)
    assert str(marker) in log and "ERROR" in log, f"node {node}'s log does not name {marker}:\n{log[-3000:]}"
    assert node not in c.partitions(TOPIC)[0][2], f"the damaged replica on node {node} is in the ISR of {TOPIC}-0"

    # Nothing acknowledged is lost.
    read = read_partitions(c.bootstrap, TOPIC, PARTITIONS)
    lost = [(p, o, v) for p, o, v in acked if read[p].get(o) != v]
    assert not lost, f"{len(lost)} acked records not read back, e.g. {lost[:5]}"
