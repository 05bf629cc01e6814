"""confluent-kafka: acks modes, headers/nulls, LogAppendTime, configs and partition admin."""

import time

import pytest

import confluent_kafka as ck
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import (
    AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource, NewPartitions, OffsetSpec)

from checks import Deadline, base_timestamp_ms, verify_records
from test_confluent import (
    REQ_TIMEOUT, admin_for, consume_all, consumer_for, create_topic, list_offsets, produce, result,
    wait_metadata)


@pytest.mark.parametrize("acks", ["0", "1", "-1"])
def test_produce_acks_modes(broker, acks):
    topic = f"acks-{acks.replace('-', 'm')}"
    n, nparts = 20_000, 4
    create_topic(admin_for(broker), topic, nparts)
    base = base_timestamp_ms()
    produce(broker.bootstrap, topic, "lz4", n, base, nparts, extra={"acks": acks})
    if acks == "0":
        # No acknowledgement to wait for: poll the high watermarks until everything has landed.
        c = consumer_for(broker.bootstrap)
        try:
            deadline = Deadline(60, f"acks=0 records becoming visible in {topic}")
            while True:
                total = sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=REQ_TIMEOUT, cached=False)[1]
                            for p in range(nparts))
                if total >= n:
                    break
                deadline.check(f"(high watermarks sum to {total} of {n})")
                time.sleep(0.2)
        finally:
            c.close()
    recs, _, _ = consume_all(broker.bootstrap, topic, nparts)
    verify_records(recs, n, nparts, base_ts=base, what=f"records produced with acks={acks}")


def test_idempotent_producer(broker):
    """enable.idempotence: InitProducerId, sequence numbers, in-order delivery, no duplicates."""
    topic, n, nparts = "idempotent", 20_000, 4
    create_topic(admin_for(broker), topic, nparts)
    base = base_timestamp_ms()
    produce(broker.bootstrap, topic, "zstd", n, base, nparts,
            extra={"enable.idempotence": True, "max.in.flight.requests.per.connection": 5})
    recs, _, _ = consume_all(broker.bootstrap, topic, nparts)
    verify_records(recs, n, nparts, base_ts=base, what="records of an idempotent producer")


def test_headers_null_keys_and_values(broker):
    topic = "headers-nulls"
    create_topic(admin_for(broker), topic, 1)
    sent = []
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5, "compression.type": "zstd"})
    errors = []
    for i in range(500):
        key = None if i % 7 == 0 else f"k{i}".encode()
        value = None if i % 11 == 0 else (b"" if i % 13 == 0 else f"v{i}".encode())
        headers = [] if i % 3 == 0 else [("h-a", f"x{i}".encode()), ("h-b", None), ("h-a", b"dup")]
        ts = base_timestamp_ms() + i
        p.produce(topic, key=key, value=value, headers=headers, partition=0, timestamp=ts,
                  on_delivery=lambda err, msg: err and errors.append(err))
        sent.append((key, value, headers, ts))
    assert p.flush(60) == 0 and not errors, f"produce errors: {errors[:5]}"

    c = consumer_for(broker.bootstrap)
    got = []
    try:
        c.assign([TopicPartition(topic, 0, ck.OFFSET_BEGINNING)])
        deadline = Deadline(60, "consuming headers-nulls")
        while len(got) < len(sent):
            deadline.check(f"({len(got)} of {len(sent)})")
            for m in c.consume(num_messages=1000, timeout=0.5):
                assert not m.error(), m.error()
                got.append((m.offset(), m.key(), m.value(), m.headers() or [], m.timestamp()[1]))
    finally:
        c.close()
    problems = []
    for i, ((key, value, headers, ts), (off, gk, gv, gh, gts)) in enumerate(zip(sent, got)):
        if (off, gk, gv, list(gh), gts) != (i, key, value, headers, ts):
            problems.append(f"#{i}: sent key={key!r} value={value!r} headers={headers} ts={ts}; "
                            f"got offset={off} key={gk!r} value={gv!r} headers={gh} ts={gts}")
    assert not problems, f"{len(problems)} mismatches:\n  " + "\n  ".join(problems[:10])


def test_log_append_time(broker):
    topic = "log-append-time"
    admin = admin_for(broker)
    create_topic(admin, topic, 2, config={"message.timestamp.type": "LogAppendTime"})
    old = base_timestamp_ms()  # an hour ago: must be replaced by the broker's clock
    t0 = int(time.time() * 1000)
    produce(broker.bootstrap, topic, "gzip", 2000, old, 2)
    t1 = int(time.time() * 1000)
    c = consumer_for(broker.bootstrap)
    seen = []
    try:
        c.assign([TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in range(2)])
        deadline = Deadline(60, "consuming log-append-time")
        while len(seen) < 2000:
            deadline.check(f"({len(seen)} of 2000)")
            for m in c.consume(num_messages=1000, timeout=0.5):
                assert not m.error(), m.error()
                seen.append((m.partition(), m.offset(), m.timestamp()))
    finally:
        c.close()
    bad = [s for s in seen if s[2][0] != ck.TIMESTAMP_LOG_APPEND_TIME or not (t0 - 1000 <= s[2][1] <= t1 + 1000)]
    assert not bad, (f"LogAppendTime topic returned records with wrong timestamp type/value "
                     f"(expected type {ck.TIMESTAMP_LOG_APPEND_TIME}, ts in [{t0}, {t1}]): {bad[:5]}")
    got = list_offsets(admin, topic, {p: OffsetSpec.for_timestamp(old) for p in range(2)})
    assert {p: o for p, (o, _) in got.items()} == {0: 0, 1: 0}, f"ListOffsets by (old) timestamp: {got}"


def describe_topic_configs(admin, topic):
    res = ConfigResource("topic", topic)
    return result(admin.describe_configs([res], request_timeout=REQ_TIMEOUT)[res], f"DescribeConfigs topic {topic}")


def test_configs_and_partitions_admin(broker):
    admin = admin_for(broker)
    topic = "admin-configs"
    create_topic(admin, topic, 2, config={"retention.ms": "86400000"})

    cfg = describe_topic_configs(admin, topic)
    for name in ("retention.ms", "segment.bytes", "flush.messages", "message.timestamp.type", "cleanup.policy"):
        assert name in cfg, f"DescribeConfigs topic {topic} lacks {name}: {sorted(cfg)}"
    assert cfg["retention.ms"].value == "86400000", cfg["retention.ms"]
    assert cfg["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value or \
        cfg["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG, cfg["retention.ms"]

    # IncrementalAlterConfigs SET / DELETE.
    res = ConfigResource("topic", topic, incremental_configs=[
        ConfigEntry("retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("segment.bytes", "1048576", incremental_operation=AlterConfigOpType.SET)])
    result(admin.incremental_alter_configs([res], request_timeout=REQ_TIMEOUT)[res], "IncrementalAlterConfigs")
    cfg = describe_topic_configs(admin, topic)
    assert (cfg["retention.ms"].value, cfg["segment.bytes"].value) == ("3600000", "1048576"), (
        cfg["retention.ms"], cfg["segment.bytes"])
    res = ConfigResource("topic", topic, incremental_configs=[
        ConfigEntry("segment.bytes", None, incremental_operation=AlterConfigOpType.DELETE)])
    result(admin.incremental_alter_configs([res], request_timeout=REQ_TIMEOUT)[res], "IncrementalAlterConfigs DELETE")
    cfg = describe_topic_configs(admin, topic)
    assert cfg["segment.bytes"].value != "1048576", f"DELETE did not reset segment.bytes: {cfg['segment.bytes']}"
    assert cfg["retention.ms"].value == "3600000", cfg["retention.ms"]

    # Legacy AlterConfigs replaces the whole set of topic overrides.
    res = ConfigResource("topic", topic, set_config={"flush.messages": "10"})
    result(admin.alter_configs([res], request_timeout=REQ_TIMEOUT)[res], "AlterConfigs")
    cfg = describe_topic_configs(admin, topic)
    assert cfg["flush.messages"].value == "10", cfg["flush.messages"]
    assert cfg["retention.ms"].value != "3600000", (
        f"AlterConfigs must replace all overrides, retention.ms still {cfg['retention.ms']}")

    # Broker configs.
    bres = ConfigResource("broker", "1")
    bcfg = result(admin.describe_configs([bres], request_timeout=REQ_TIMEOUT)[bres], "DescribeConfigs broker 1")
    for name in ("num.partitions", "auto.create.topics.enable", "log.flush.interval.messages"):
        assert name in bcfg, f"DescribeConfigs broker 1 lacks {name}"

    # DescribeCluster.
    cl = result(admin.describe_cluster(request_timeout=REQ_TIMEOUT), "DescribeCluster")
    assert [(nd.id, nd.host, nd.port) for nd in cl.nodes] == [(1, broker.host, broker.port)], cl.nodes
    assert cl.cluster_id, "DescribeCluster: empty cluster id"

    # CreatePartitions 2 -> 5, then keyed records follow the Java partitioner over 5 partitions.
    futs = admin.create_partitions([NewPartitions(topic, 5)], request_timeout=REQ_TIMEOUT,
                                   operation_timeout=REQ_TIMEOUT)
    result(futs[topic], "CreatePartitions 2 -> 5")
    wait_metadata(admin, topic, 5)
    base = base_timestamp_ms()
    produce(broker.bootstrap, topic, "snappy", 5000, base, 5)
    recs, _, _ = consume_all(broker.bootstrap, topic, 5)
    verify_records(recs, 5000, 5, base_ts=base, what="records after CreatePartitions")

    # Invalid requests are refused with errors, not crashes.
    with pytest.raises(Exception) as ei:
        result(admin.create_partitions([NewPartitions(topic, 3)], request_timeout=REQ_TIMEOUT)[topic],
               "CreatePartitions 5 -> 3")
    assert "INVALID_PARTITIONS" in str(ei.value) or "nvalid" in str(ei.value), ei.value
    with pytest.raises(Exception) as ei:
        create_topic(admin, topic, 1)
    assert "TOPIC_ALREADY_EXISTS" in str(ei.value) or "already exists" in str(ei.value), ei.value
    assert broker.alive()

    # Settings survive a restart.
    broker.restart()
    admin = admin_for(broker)
    wait_metadata(admin, topic, 5)
    cfg = describe_topic_configs(admin, topic)
    assert cfg["flush.messages"].value == "10", f"topic config lost on restart: {cfg['flush.messages']}"
