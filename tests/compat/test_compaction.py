"""Log compaction with a real broker and client: many updates per key, tombstones, the broker
SIGKILLed repeatedly while its cleaner works; a full read afterwards yields exactly the latest
value of every live key, once."""

import random
import time

import pytest

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from checks import Deadline
from test_confluent import REQ_TIMEOUT, admin_for, consume_all, create_topic

KEYS = 2000
UPDATES = 120_000
PAD = "x" * 40


def produce(bootstrap, topic, items):
    """items: (key, value or None); acks=all; returns nothing, fails on any delivery error."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "compression.type": "lz4",
                  "queue.buffering.max.messages": 500000, "message.timeout.ms": 120000})
    errors = []
    for key, value in items:
        while True:
            try:
                p.produce(topic, key=key, value=value, partition=0, on_delivery=lambda e, m: e and errors.append(e))
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(120) == 0 and not errors, f"produce errors: {errors[:5]}"


def test_compaction_keeps_latest_value_per_key_across_crashes(broker_factory):
    broker = broker_factory({"log.cleaner.backoff.ms": "100"})
    topic = "compacted"
    create_topic(admin_for(broker), topic, 1, {
        "cleanup.policy": "compact",
        "segment.bytes": "1048576",
        "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": "2000",
    })
    latest = {}
    items = []
    for seq in range(UPDATES):
        key = f"key-{seq % KEYS:05d}"
        value = f"{key}={seq:07d};{PAD}"
        items.append((key, value))
        latest[key] = value
    # Tombstones for every 10th key; every 20th key is written again after its tombstone.
    for k in range(0, KEYS, 10):
        key = f"key-{k:05d}"
        items.append((key, None))
        latest[key] = None
    for k in range(0, KEYS, 20):
        key = f"key-{k:05d}"
        value = f"{key}=again;{PAD}"
        items.append((key, value))
        latest[key] = value
    # Unique filler pushes all of the above out of the active segment, so all of it is cleanable.
    items.extend((f"filler-{i:06d}", PAD) for i in range(25_000))
    produce(broker.bootstrap, topic, items)

    rng = random.Random(7)
    for _ in range(6):
        time.sleep(rng.uniform(0.05, 0.6))
        broker.restart(graceful=False)

    live = {k: v for k, v in latest.items() if v is not None}
    deadline = Deadline(120, "compaction to leave one record per key and drop expired tombstones")
    while True:
        records, _, _ = consume_all(broker.bootstrap, topic, 1)
        keyed = [r for r in records if r.key.startswith("key-")]
        seen = {}
        for r in keyed:
            seen.setdefault(r.key, []).append(r.value)
        done = len(keyed) == len(seen) == len(live) and all(seen.get(k) == [v] for k, v in live.items())
        if done:
            break
        # Whatever the cleaner has or has not done yet, the last value per key must be right.
        last = {k: vs[-1] for k, vs in seen.items()}
        wrong = {k: (last.get(k), v) for k, v in latest.items() if last.get(k, None) != v}
        assert not wrong, f"latest values lost or wrong: {list(wrong.items())[:5]}"
        deadline.check(f"({len(keyed)} keyed records for {len(live)} live keys)")
        time.sleep(1)
    fillers = [r for r in records if r.key.startswith("filler-")]
    assert len(fillers) == 25_000
    assert len(records) < len(items) / 4


def test_delete_records_is_refused_on_a_compacted_topic(broker):
    admin = admin_for(broker)
    create_topic(admin, "compact-only", 1, {"cleanup.policy": "compact"})
    create_topic(admin, "compact-delete", 1, {"cleanup.policy": "compact,delete"})
    for topic in ("compact-only", "compact-delete"):
        produce(broker.bootstrap, topic, [(f"k{i}", "v") for i in range(10)])
    futs = admin.delete_records([TopicPartition("compact-only", 0, 5)], request_timeout=REQ_TIMEOUT)
    with pytest.raises(KafkaException) as refused:
        list(futs.values())[0].result()
    assert refused.value.args[0].code() == KafkaError.POLICY_VIOLATION
    futs = admin.delete_records([TopicPartition("compact-delete", 0, 5)], request_timeout=REQ_TIMEOUT)
    assert list(futs.values())[0].result().low_watermark == 5
