"""kill -9 mid-stream: every acknowledged record survives, exactly once."""

import threading
import time

import pytest

from confluent_kafka import Producer  # noqa: E402

from checks import seq_of  # noqa: E402
from test_confluent import admin_for, consume_all, create_topic, wait_metadata  # noqa: E402

PARTITIONS = 3


@pytest.mark.parametrize("flush_via,codec", [("topic", "none"), ("broker", "lz4")])
def test_kill9_keeps_acknowledged_records(broker_factory, flush_via, codec):
    """flush_via=topic: topic config flush.messages=1; broker: --set log.flush.interval.messages=1."""
    if flush_via == "broker":
        broker = broker_factory({"log.flush.interval.messages": 1})
        topic_config = {}
    else:
        broker = broker_factory()
        topic_config = {"flush.messages": "1"}
    topic = "crash-acks"
    admin = admin_for(broker)
    create_topic(admin, topic, PARTITIONS, config=topic_config)

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
        "compression.type": codec,
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
    del p
    assert left == 0, f"{left} messages still pending after purge+flush"

    with lock:
        acked_seqs = sorted(s for s, _, _ in acked)
        n_failed = len(failed)
    assert len(acked_seqs) > 0, f"no record was acknowledged before kill -9 ({n_failed} failed of {total})"
    assert len(set(acked_seqs)) == len(acked_seqs), "a sequence number was acknowledged twice"

    print(f"crash test: produced {total}, acked {len(acked_seqs)}, failed {n_failed}, killed at seq {kill_seq}")
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

    # The recovered log keeps accepting writes, at offsets after everything recovered.
    new_acks = []
    p2 = Producer({"bootstrap.servers": broker.bootstrap, "acks": "-1", "linger.ms": 5,
                   "enable.idempotence": False, "message.timeout.ms": 30000})
    for i in range(300):
        s = total + i
        p2.produce(topic, key=f"k{s % 97}".encode(), value=f"seq={s:09d};x".encode(),
                   on_delivery=lambda err, msg: new_acks.append((err, msg.partition(), msg.offset())))
    assert p2.flush(60) == 0
    errs = [e for e, _, _ in new_acks if e is not None]
    assert not errs, f"produce after recovery failed: {errs[:5]}"
    reused = [(p_, o) for _, p_, o in new_acks if o < ends[p_]]
    assert not reused, f"offsets below the recovered high watermarks {ends} were handed out again: {reused[:10]}"
    del p2
    recs2, _, ends2 = consume_all(broker.bootstrap, topic, PARTITIONS, timeout=120)
    assert len(recs2) == len(recs) + 300, f"{len(recs2)} records after post-recovery produce, expected {len(recs) + 300}"
    first = {(r.partition, r.offset): r.value for r in recs}
    changed = [(k, v, first[k]) for k, v in ((( r.partition, r.offset), r.value) for r in recs2)
               if k in first and first[k] != v]
    assert not changed, f"recovered records changed after more writes: {changed[:5]}"
