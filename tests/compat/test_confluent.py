"""confluent-kafka (librdkafka) compatibility suite."""

import concurrent.futures
import time

import pytest

import confluent_kafka  # noqa: E402
from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from checks import (  # noqa: E402
    CODECS, NUM_PARTITIONS, NUM_RECORDS, base_timestamp_ms, check_delete_records_and_restart, Deadline, read_back_everything,
    expected_max_timestamp, expected_offset_for_time, key_for, Rec, to_str, ts_for, value_for)
from partitioning import java_partition  # noqa: E402

try:
    from confluent_kafka.admin import OffsetSpec
except ImportError:  # older confluent-kafka
    OffsetSpec = None

REQ_TIMEOUT = 30


def result(fut, what, timeout=REQ_TIMEOUT):
    """Future result with a readable failure when the broker never answers."""
    try:
        return fut.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise AssertionError(f"{what}: no answer from the broker within {timeout}s") from None


def admin_for(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap, "socket.timeout.ms": 30000})


def create_topic(admin, topic, partitions, config=None):
    futs = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=REQ_TIMEOUT, request_timeout=REQ_TIMEOUT)
    result(futs[topic], f"CreateTopics {topic} ({partitions} partitions, configs {config})")
    wait_metadata(admin, topic, partitions)


def wait_metadata(admin, topic, partitions, timeout=REQ_TIMEOUT):
    deadline = Deadline(timeout, f"metadata for {topic}")
    while True:
        md = admin.list_topics(topic, timeout=REQ_TIMEOUT)
        t = md.topics.get(topic)
        if t is not None and t.error is None and len(t.partitions) == partitions and all(
                p.leader == 1 for p in t.partitions.values()):
            return md
        if deadline.remaining() <= 0:
            raise AssertionError(f"topic {topic} metadata not as expected: {t and t.error} "
                                 f"{t and {p: (pm.leader, pm.error) for p, pm in t.partitions.items()}}")
        time.sleep(0.2)


def produce(bootstrap, topic, codec, n, base_ts, partitions, extra=None):
    conf = {
        "bootstrap.servers": bootstrap,
        "partitioner": "murmur2_random",
        "compression.type": codec,
        "linger.ms": 5,
        "batch.num.messages": 10000,
        "acks": "all",
        "queue.buffering.max.messages": 200000,
        "message.timeout.ms": 120000,
    }
    conf.update(extra or {})
    p = Producer(conf)
    errors = []
    misplaced = []
    delivered = [0]

    def on_delivery(err, msg):
        if err is not None:
            errors.append((msg.key(), err))
            return
        delivered[0] += 1
        k = to_str(msg.key())
        if msg.partition() != java_partition(k, partitions):
            misplaced.append((k, msg.partition()))

    deadline = Deadline(180, f"producing {n} records")
    for seq in range(n):
        while True:
            try:
                p.produce(topic, key=key_for(seq).encode(), value=value_for(seq).encode(),
                          timestamp=ts_for(base_ts, seq), on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
                deadline.check(f"(queue full at seq {seq}, errors so far: {errors[:3]})")
        if seq % 1000 == 0:
            p.poll(0)
    remaining = p.flush(max(1.0, deadline.remaining()))
    assert remaining == 0, f"{remaining} records still undelivered after flush; errors: {errors[:5]}"
    assert not errors, f"{len(errors)} delivery errors, e.g. {errors[:5]}"
    assert delivered[0] == n
    assert not misplaced, f"librdkafka murmur2_random disagrees with Java murmur2: {misplaced[:5]}"


def consumer_for(bootstrap, extra=None):
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": "tern-compat-assign-only",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 100,
        "socket.timeout.ms": 30000,
    }
    conf.update(extra or {})
    return Consumer(conf)


def consume_all(bootstrap, topic, partitions, timeout=180):
    """Read every partition from its earliest offset to its current high watermark."""
    c = consumer_for(bootstrap)
    try:
        ends = {}
        starts = {}
        for p in range(partitions):
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=REQ_TIMEOUT, cached=False)
            starts[p], ends[p] = lo, hi
        c.assign([TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING) for p in range(partitions)])
        pos = dict(starts)
        out = []
        deadline = Deadline(timeout, f"consuming {topic} up to {ends}")
        while any(pos[p] < ends[p] for p in pos):
            deadline.check(f"(positions {pos})")
            for m in c.consume(num_messages=10000, timeout=0.5):
                if m.error():
                    raise AssertionError(f"consumer error on {topic}: {m.error()}")
                ts_type, ts = m.timestamp()
                out.append(Rec(m.partition(), m.offset(), ts, to_str(m.key()), to_str(m.value())))
                pos[m.partition()] = max(pos[m.partition()], m.offset() + 1)
        return out, starts, ends
    finally:
        c.close()


def list_offsets(admin, topic, specs):
    """specs: {partition: OffsetSpec}; returns {partition: (offset, timestamp)}."""
    futs = admin.list_offsets({TopicPartition(topic, p): s for p, s in specs.items()},
                              request_timeout=REQ_TIMEOUT)
    out = {}
    for tp, f in futs.items():
        r = result(f, f"ListOffsets {tp.topic}/{tp.partition} spec {specs[tp.partition]}")
        out[tp.partition] = (r.offset, r.timestamp)
    return out


def check_list_offsets(admin, topic, parts, n_parts, start_offsets):
    if OffsetSpec is None:
        pytest.fail("confluent-kafka without AdminClient.list_offsets/OffsetSpec: upgrade confluent-kafka")
    ps = range(n_parts)
    earliest = list_offsets(admin, topic, {p: OffsetSpec.earliest() for p in ps})
    latest = list_offsets(admin, topic, {p: OffsetSpec.latest() for p in ps})
    for p in ps:
        recs = parts.get(p, [])
        want_latest = recs[-1].offset + 1 if recs else start_offsets.get(p, 0)
        assert earliest[p][0] == start_offsets.get(p, 0), f"ListOffsets earliest {topic}/{p}: {earliest[p]}"
        assert latest[p][0] == want_latest, f"ListOffsets latest {topic}/{p}: {latest[p]}, expected {want_latest}"

    all_ts = sorted(r.timestamp for recs in parts.values() for r in recs)
    targets = [all_ts[0] - 1, all_ts[0], all_ts[len(all_ts) // 3], all_ts[len(all_ts) // 2] + 1,
               all_ts[-1], all_ts[-1] + 1]
    for t in targets:
        got = list_offsets(admin, topic, {p: OffsetSpec.for_timestamp(t) for p in ps})
        for p in ps:
            recs = parts.get(p, [])
            want = expected_offset_for_time(recs, t)
            if want is None:
                assert got[p][0] == -1, f"ListOffsets {topic}/{p} ts={t}: got {got[p]}, expected offset -1 (no such record)"
            else:
                want_ts = next(r.timestamp for r in recs if r.offset == want)
                assert got[p] == (want, want_ts), (
                    f"ListOffsets {topic}/{p} ts={t}: got (offset, ts) {got[p]}, expected {(want, want_ts)}")

    got = list_offsets(admin, topic, {p: OffsetSpec.max_timestamp() for p in ps})
    for p in ps:
        want = expected_max_timestamp(parts.get(p, []))
        if want is not None:
            assert got[p] == want, f"ListOffsets max_timestamp {topic}/{p}: got {got[p]}, expected {want}"


def delete_records(admin, topic, offsets):
    if not hasattr(admin, "delete_records"):
        pytest.fail("confluent-kafka without AdminClient.delete_records: upgrade confluent-kafka")
    futs = admin.delete_records([TopicPartition(topic, p, o) for p, o in offsets.items()],
                                request_timeout=REQ_TIMEOUT, operation_timeout=REQ_TIMEOUT)
    for tp, f in futs.items():
        r = result(f, f"DeleteRecords {topic}/{tp.partition} before {offsets[tp.partition]}")
        assert r.low_watermark == offsets[tp.partition], (
            f"DeleteRecords {topic}/{tp.partition} up to {offsets[tp.partition]}: low watermark {r.low_watermark}")


@pytest.mark.parametrize("codec", CODECS)
def test_confluent_roundtrip(broker, codec):
    topic = f"confluent-{codec}"
    n, nparts = NUM_RECORDS, NUM_PARTITIONS
    admin = admin_for(broker)
    create_topic(admin, topic, nparts)
    md = admin.list_topics(topic, timeout=REQ_TIMEOUT)
    assert {b.id: (b.host, b.port) for b in md.brokers.values()} == {1: (broker.host, broker.port)}, (
        f"Metadata brokers: {md.brokers}")

    base = base_timestamp_ms()
    produce(broker.bootstrap, topic, codec, n, base, nparts)

    parts, ends = read_back_everything(lambda: consume_all(broker.bootstrap, topic, nparts), n, nparts, base)
    check_list_offsets(admin, topic, parts, nparts, {})

    check_delete_records_and_restart(
        broker, n, nparts, parts,
        read=lambda: consume_all(broker.bootstrap, topic, nparts),
        delete_records=lambda cut: delete_records(admin_for(broker), topic, cut),
        check_offsets=lambda got, cut: check_list_offsets(admin_for(broker), topic, got, nparts, cut),
        base_ts=base, ends=ends,
        after_restart=lambda: wait_metadata(admin_for(broker), topic, nparts))


def test_confluent_create_delete_topic(broker):
    admin = admin_for(broker)
    topic = "confluent-lifecycle"
    create_topic(admin, topic, 3)
    produce(broker.bootstrap, topic, "none", 300, base_timestamp_ms(), 3)
    futs = admin.delete_topics([topic], operation_timeout=REQ_TIMEOUT, request_timeout=REQ_TIMEOUT)
    result(futs[topic], f"DeleteTopics {topic}")
    deadline = Deadline(REQ_TIMEOUT, f"topic {topic} disappearing from metadata")
    while topic in admin.list_topics(timeout=REQ_TIMEOUT).topics:
        deadline.check()
        time.sleep(0.2)
    # Re-create with the same name: must be empty.
    create_topic(admin, topic, 2)
    recs, starts, ends = consume_all(broker.bootstrap, topic, 2)
    assert recs == [] and ends == {0: 0, 1: 0}, f"re-created topic is not empty: ends={ends} records={recs[:3]}"
