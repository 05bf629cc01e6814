"""kafka-python compatibility suite."""

import time

import pytest

import kafka  # noqa: E402,F401
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402
from kafka.admin import NewTopic  # noqa: E402

from checks import (  # noqa: E402
    CODECS, NUM_PARTITIONS, NUM_RECORDS, base_timestamp_ms, check_delete_records_and_restart, Deadline, read_back_everything,
    expected_max_timestamp, expected_offset_for_time, key_for, Rec, to_str, ts_for, value_for)
from partitioning import java_partition  # noqa: E402

REQ_TIMEOUT_MS = 30000


def admin_for(broker):
    return KafkaAdminClient(bootstrap_servers=broker.bootstrap, client_id="tern-compat-admin",
                            request_timeout_ms=REQ_TIMEOUT_MS)


def wait_partitions(consumer, topic, n, timeout=30):
    deadline = Deadline(timeout, f"kafka-python seeing {n} partitions of {topic}")
    while True:
        ps = consumer.partitions_for_topic(topic)
        if ps is not None and len(ps) == n:
            return
        deadline.check(f"(last saw {ps})")
        time.sleep(0.2)


def create_topic(admin, topic, partitions, configs=None):
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1,
                                  topic_configs=configs or {})], timeout_ms=REQ_TIMEOUT_MS)


def produce(bootstrap, topic, codec, n, base_ts, partitions):
    # kafka-python >= 2.1 turns idempotence on by default (InitProducerId + sequence numbers).
    extra = {"enable_idempotence": True} if "enable_idempotence" in KafkaProducer.DEFAULT_CONFIG else {}
    p = KafkaProducer(
        bootstrap_servers=bootstrap, client_id="tern-compat-producer",
        compression_type=None if codec == "none" else codec,
        acks="all", linger_ms=5, batch_size=64 * 1024, request_timeout_ms=REQ_TIMEOUT_MS,
        max_block_ms=60000, **extra)
    try:
        futures = []
        for seq in range(n):
            futures.append((seq, p.send(topic, key=key_for(seq).encode(), value=value_for(seq).encode(),
                                        timestamp_ms=ts_for(base_ts, seq))))
        p.flush(timeout=180)
        errors, misplaced = [], []
        for seq, f in futures:
            try:
                md = f.get(timeout=30)
            except Exception as e:  # noqa: BLE001 - we want every failure listed
                errors.append((seq, repr(e)))
                continue
            if md.partition != java_partition(key_for(seq), partitions):
                misplaced.append((seq, md.partition))
        assert not errors, f"{len(errors)} kafka-python send errors, e.g. {errors[:5]}"
        assert not misplaced, f"kafka-python partitioner disagrees with Java murmur2: {misplaced[:5]}"
    finally:
        p.close(timeout=30)


def consumer_for(bootstrap):
    return KafkaConsumer(bootstrap_servers=bootstrap, client_id="tern-compat-consumer", group_id=None,
                         enable_auto_commit=False, auto_offset_reset="earliest",
                         request_timeout_ms=REQ_TIMEOUT_MS, fetch_max_wait_ms=100,
                         max_poll_records=10000)


def consume_all(bootstrap, topic, partitions, timeout=240):
    c = consumer_for(bootstrap)
    try:
        wait_partitions(c, topic, partitions)
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        starts = {tp.partition: o for tp, o in c.beginning_offsets(tps, timeout_ms=REQ_TIMEOUT_MS).items()}
        ends = {tp.partition: o for tp, o in c.end_offsets(tps, timeout_ms=REQ_TIMEOUT_MS).items()}
        c.assign(tps)
        c.seek_to_beginning(*tps)
        pos = dict(starts)
        out = []
        deadline = Deadline(timeout, f"kafka-python consuming {topic} up to {ends}")
        while any(pos[p] < ends[p] for p in pos):
            deadline.check(f"(positions {pos})")
            for tp, msgs in c.poll(timeout_ms=500).items():
                for m in msgs:
                    out.append(Rec(m.partition, m.offset, m.timestamp, to_str(m.key), to_str(m.value)))
                    pos[m.partition] = max(pos[m.partition], m.offset + 1)
        return out, starts, ends
    finally:
        c.close()


def check_list_offsets(bootstrap, admin, topic, parts, nparts, start_offsets):
    c = consumer_for(bootstrap)
    try:
        wait_partitions(c, topic, nparts)
        tps = [TopicPartition(topic, p) for p in range(nparts)]
        earliest = c.beginning_offsets(tps, timeout_ms=REQ_TIMEOUT_MS)
        latest = c.end_offsets(tps, timeout_ms=REQ_TIMEOUT_MS)
        for tp in tps:
            recs = parts.get(tp.partition, [])
            want_latest = recs[-1].offset + 1 if recs else start_offsets.get(tp.partition, 0)
            assert earliest[tp] == start_offsets.get(tp.partition, 0), f"beginning_offsets {tp}: {earliest[tp]}"
            assert latest[tp] == want_latest, f"end_offsets {tp}: {latest[tp]}, expected {want_latest}"
        all_ts = sorted(r.timestamp for recs in parts.values() for r in recs)
        targets = [all_ts[0] - 1, all_ts[0], all_ts[len(all_ts) // 4], all_ts[len(all_ts) // 2] + 1,
                   all_ts[-1], all_ts[-1] + 1]
        for t in targets:
            got = c.offsets_for_times({tp: t for tp in tps}, timeout_ms=REQ_TIMEOUT_MS)
            for tp in tps:
                recs = parts.get(tp.partition, [])
                want = expected_offset_for_time(recs, t)
                g = got.get(tp)
                if want is None:
                    assert g is None, f"offsets_for_times {tp} ts={t}: got {g}, expected None (no such record)"
                else:
                    want_ts = next(r.timestamp for r in recs if r.offset == want)
                    assert g is not None and (g.offset, g.timestamp) == (want, want_ts), (
                        f"offsets_for_times {tp} ts={t}: got {g}, expected offset {want} ts {want_ts}")
    finally:
        c.close()
    # KIP-734 max timestamp via the admin client, where this kafka-python has it.
    if hasattr(admin, "list_partition_offsets"):
        got = admin.list_partition_offsets({TopicPartition(topic, p): -3 for p in range(nparts)})
        for p in range(nparts):
            want = expected_max_timestamp(parts.get(p, []))
            g = got[TopicPartition(topic, p)]
            if want is not None:
                assert (g.offset, g.timestamp) == want, f"ListOffsets MAX_TIMESTAMP {topic}/{p}: {g}, expected {want}"


def delete_records(admin, topic, offsets):
    if not hasattr(admin, "delete_records"):
        pytest.fail("installed kafka-python has no KafkaAdminClient.delete_records")
    res = admin.delete_records({TopicPartition(topic, p): o for p, o in offsets.items()},
                               timeout_ms=REQ_TIMEOUT_MS)
    for tp, r in res.items():
        lw = r["low_watermark"] if isinstance(r, dict) else getattr(r, "low_watermark", None)
        err = r.get("error_code", 0) if isinstance(r, dict) else getattr(r, "error_code", 0)
        assert err == 0 and lw == offsets[tp.partition], (
            f"DeleteRecords {tp} up to {offsets[tp.partition]}: {r}")


def with_admin(broker, f):
    admin = admin_for(broker)
    try:
        return f(admin)
    finally:
        admin.close()


@pytest.mark.parametrize("codec", CODECS)
def test_kafka_python_roundtrip(broker, codec):
    topic = f"kafka-python-{codec}"
    n, nparts = NUM_RECORDS, NUM_PARTITIONS
    with_admin(broker, lambda admin: create_topic(admin, topic, nparts))
    base = base_timestamp_ms()
    produce(broker.bootstrap, topic, codec, n, base, nparts)

    parts, ends = read_back_everything(lambda: consume_all(broker.bootstrap, topic, nparts), n, nparts, base)
    with_admin(broker, lambda admin: check_list_offsets(broker.bootstrap, admin, topic, parts, nparts, {}))
    check_delete_records_and_restart(
        broker, n, nparts, parts,
        read=lambda: consume_all(broker.bootstrap, topic, nparts),
        delete_records=lambda cut: with_admin(broker, lambda admin: delete_records(admin, topic, cut)),
        check_offsets=lambda got, cut: with_admin(
            broker, lambda admin: check_list_offsets(broker.bootstrap, admin, topic, got, nparts, cut)),
        base_ts=base, ends=ends)
