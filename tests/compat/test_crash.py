"""kill -9 mid-stream: every acknowledged record survives, exactly once."""

import threading
import time

import pytest

import confluent_kafka  # noqa: E402
from confluent_kafka import Producer  # noqa: E402

from checks import Deadline, seq_of  # noqa: E402
from test_confluent import admin_for, consume_all, create_topic, wait_metadata  # noqa: E402

PARTITIONS = 3


def test_kill9_keeps_acknowledged_records(broker):
    topic = "crash-acks"
    admin = admin_for(broker)
    create_topic(admin, topic, PARTITIONS, config={"flush.messages": "1"})

    acked = []
    failed = []
    lock = threading.Lock()

    def on_delivery(err, msg):
        with lock:
            if err is None:
                acked.append((seq_of(msg.value().decode()), msg.partition(), msg.offset()))
            else:
                failed.append(seq_of(msg.value().decode()))

    p = Producer({
        "bootstrap.servers": broker.bootstrap,
        "acks": "-1",
        "linger.ms": 5,
        "enable.idempotence": False,
        "retries": 0,
        "message.send.max.retries": 0,
        "message.timeout.ms": 10000,
        "socket.timeout.ms": 10000,
        "reconnect.backoff.ms": 100,
        "queue.buffering.max.messages": 100000,
    })

    seq = 0
    start = time.monotonic()
    killed = False
    while True:
        if not killed and time.monotonic() - start >= 2.0:
            broker.kill9()
            killed = True
            kill_seq = seq
            # Keep producing a little while the broker is dead: all of these must fail or be lost.
            after = time.monotonic()
        if killed and time.monotonic() - after >= 0.5:
            break
        try:
            p.produce(topic, key=f"k{seq % 97}".encode(), value=f"seq={seq:09d};x".encode(), on_delivery=on_delivery)
            seq += 1
        except BufferError:
            pass
        p.poll(0 if seq % 100 else 0.001)
    total = seq
    p.purge()  # drop what never left the client; in-flight ones fail via the callback
    left = p.flush(30)
    assert left == 0, f"{left} messages still pending after purge+flush"

    with lock:
        acked_seqs = sorted(s for s, _, _ in acked)
        n_failed = len(failed)
    assert len(acked_seqs) > 0, f"no record was acknowledged before kill -9 ({n_failed} failed of {total})"
    assert len(set(acked_seqs)) == len(acked_seqs), "a sequence number was acknowledged twice"

    broker.start()
    admin = admin_for(broker)
    wait_metadata(admin, topic, PARTITIONS)
    recs, starts, ends = consume_all(broker.bootstrap, topic, PARTITIONS, timeout=120)
    counts = {}
    where = {}
    for r in recs:
        s = seq_of(r.value)
        counts[s] = counts.get(s, 0) + 1
        where.setdefault(s, []).append((r.partition, r.offset))
    missing = [s for s in acked_seqs if s not in counts]
    dups = {s: where[s] for s, c in counts.items() if c > 1}
    ack_pos = {s: (p_, o) for s, p_, o in acked}
    moved = [(s, ack_pos[s], where[s]) for s in acked_seqs if s in where and where[s][0] != ack_pos[s]]
    assert not missing, (
        f"{len(missing)} of {len(acked_seqs)} acknowledged records lost after kill -9 "
        f"(e.g. seqs {missing[:10]} acked at {[ack_pos[s] for s in missing[:10]]}); "
        f"recovered offsets {starts}..{ends}; produced {total}, killed at seq ~{kill_seq}")
    assert not dups, f"duplicated records after recovery (retries were disabled): {list(dups.items())[:10]}"
    assert not moved, f"acknowledged records found at a different partition/offset than acked: {moved[:10]}"
    unknown = sorted(set(counts) - set(range(total)))
    assert not unknown, f"records never produced appeared: {unknown[:10]}"
