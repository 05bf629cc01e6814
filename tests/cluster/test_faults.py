"""The fault suite: a 3-node cluster (each node in its own network namespace, see netcluster.py)
under a recorded workload of real clients (history.py), through a schedule of faults
(faults.py), and the history checked afterwards.

Short schedule (CI), in this order:
  - `kill -9` of the leader of every partition in turn, each node restarted before the next;
  - SIGSTOP of a leader for longer than the session and replica lag timeouts, then SIGCONT;
  - a network partition cutting a leader off from every node and client, then healed;
  - `kill -9` of the active controller right after a CreateTopics, the create retried: the topic
    is whole and takes and serves records;
  - `kill -9` of every node at once, all restarted.
Between faults the workload must flow again on every partition. With TERN_SOAK_SECONDS=N the
run goes on with faults picked at random until N seconds have passed (scripts/cluster-soak.sh).

TERN_FAULT_SEED=S replays a run's fault schedule (the seed is printed and in every failure);
the history is written to TERN_HISTORY_DIR (default: the test's tmp_path) as
history-<seed>.jsonl and can be checked again with `python3 tests/cluster/history.py FILE`.
"""

import os
import random
import time
from pathlib import Path

import pytest

from faults import SETTINGS, FaultRun
from history import History, Workload, check, summary
from netcluster import NetCluster
from records import create_replicated_topic, produce_acked, read_partitions

SOAK_SECONDS = float(os.environ.get("TERN_SOAK_SECONDS") or 0)
pytestmark = pytest.mark.timeout(900 + int(SOAK_SECONDS * 1.5))

TOPIC = "history"
PARTITIONS = 3


def soak(run, until):
    faults = [lambda: run.kill_leader(run.rng.randrange(PARTITIONS)),
              lambda: run.pause_leader(run.rng.randrange(PARTITIONS), seconds=run.rng.uniform(5, 15)),
              lambda: run.isolate_leader(run.rng.randrange(PARTITIONS), seconds=run.rng.uniform(5, 15)),
              run.kill_all]
    n = 0
    while time.monotonic() < until:
        run.rng.choice(faults)()
        run.wait_acks()
        n += 1
    run.h.add("note", what=f"soak: {n} random faults")


def start_history(tmp_path, name):
    seed = int(os.environ.get("TERN_FAULT_SEED") or random.randrange(1 << 32))
    hist_dir = Path(os.environ.get("TERN_HISTORY_DIR") or tmp_path)
    hist_dir.mkdir(parents=True, exist_ok=True)
    path = hist_dir / f"{name}-{seed}.jsonl"
    replay = f"seed {seed} (replay: TERN_FAULT_SEED={seed}), history {path}"
    print(replay)
    return seed, path, replay


def finish(c, h, w, failures, replay):
    """Stops the producers, reads every partition back as the final log, lets the group read
    up to it, stops the consumers and checks the history."""
    failures += w.stop_producers()
    if failures:
        w.stop_consumers()
        h.close()
    assert not failures, f"{replay}: {failures}"
    final = read_partitions(c.bootstrap, TOPIC, PARTITIONS)
    for p, recs in final.items():
        h.add("final", p=p, records={str(o): v for o, v in recs.items()})
    ends = {p: len(recs) for p, recs in final.items()}
    unread = w.drain(ends)
    failures += w.stop_consumers()
    h.close()
    print(summary(h.events))
    accepted = []
    problems = check(h.events, allowed=accepted)
    if accepted:
        print("\n".join(accepted))
    fails = h.of("fail")
    if fails:
        print(f"{len(fails)} sends failed (not acknowledged, so not checked), e.g. {fails[:3]}")
    assert not problems and not failures and not unread, (
        f"{replay}:\n" + "\n".join(problems) + f"\nclient failures: {failures}\nunread by the group: {unread}")


def test_faults_under_a_recorded_workload(cluster_factory, tmp_path):
    seed, path, replay = start_history(tmp_path, "history")
    rng = random.Random(seed)

    c = cluster_factory(settings=SETTINGS, cls=NetCluster)
    c.up()
    create_replicated_topic(c, TOPIC, PARTITIONS, rf=3, min_isr=2)
    h = History(path, seed=seed, soak_seconds=SOAK_SECONDS, topic=TOPIC, partitions=PARTITIONS)
    w = Workload(h, c.bootstrap, TOPIC, PARTITIONS)
    run = FaultRun(c, h, w, rng, TOPIC, PARTITIONS)
    w.start()
    failures = []
    try:
        run.wait_acks()
        run.kill_leaders_in_turn()
        run.pause_leader(rng.randrange(PARTITIONS))
        run.wait_acks()
        run.isolate_leader(rng.randrange(PARTITIONS))
        run.wait_acks()
        created = f"created-under-crash-{seed % 1000}"
        run.crash_controller_during_create(created, partitions=6)
        acked = produce_acked(c.bootstrap, created, 6, 300)
        read = read_partitions(c.bootstrap, created, 6)
        assert all(read[p].get(o) == v for p, o, v in acked), f"{created}: acknowledged records not read back"
        run.wait_acks()
        run.kill_all()
        run.wait_acks()
        if SOAK_SECONDS:
            soak(run, time.monotonic() + SOAK_SECONDS)
    except AssertionError as e:
        w.stop_producers()
        w.stop_consumers()
        h.close()
        raise AssertionError(f"{replay}: {e}") from None
    finish(c, h, w, failures, replay)


DISK_MIB = 64


def test_a_full_disk_on_one_node_loses_nothing(cluster_factory, tmp_path):
    """Node 3's data directory is on a small tmpfs that the harness fills for longer than the
    replica lag timeout: node 3 refuses appends (KAFKA_STORAGE_ERROR where it leads, failed
    replica fetches where it follows, so the leaders drop it from their ISRs); nothing
    acknowledged is lost, and once the harness frees the space node 3 catches up and every
    ISR is full again."""
    seed, path, replay = start_history(tmp_path, "disk-full")
    c = cluster_factory(settings=SETTINGS, cls=NetCluster, disks={3: DISK_MIB})
    c.up()
    create_replicated_topic(c, TOPIC, PARTITIONS, rf=3, min_isr=2)
    h = History(path, seed=seed, topic=TOPIC, partitions=PARTITIONS, disk_mib=DISK_MIB)
    w = Workload(h, c.bootstrap, TOPIC, PARTITIONS)
    run = FaultRun(c, h, w, random.Random(seed), TOPIC, PARTITIONS)
    w.start()
    try:
        run.wait_acks()
        run.fill_disk(3, seconds=10)
        run.wait_acks()
    except AssertionError as e:
        w.stop_producers()
        w.stop_consumers()
        h.close()
        raise AssertionError(f"{replay}: {e}") from None
    log = c.log_path(3).read_text(errors="replace")
    assert "No space left on device" in log, "node 3 logged no ENOSPC while its disk was full"
    finish(c, h, w, [], replay)
