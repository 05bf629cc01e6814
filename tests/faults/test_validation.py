"""Produced batches are validated as Kafka's LogValidator does: forged batches on the wire get
Kafka's error code (with KIP-467 record errors where Kafka gives them) and nothing of theirs
reaches the log; the broker keeps serving."""

import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import batches as b

DAY_MS = 86_400_000


def now_ms():
    return int(time.time() * 1000)


def create_topic(broker, name, configs=None, partitions=1):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    futures = admin.create_topics([NewTopic(name, partitions, 1, config=configs or {})], operation_timeout=30)
    futures[name].result(timeout=60)


def end_offset(broker, topic, partition=0):
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "validation-probe"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)[1]
    finally:
        c.close()


def consume_all(broker, topic, n):
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"reader-{topic}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    out = []
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 60
        while len(out) < n and time.monotonic() < deadline:
            m = c.poll(1.0)
            if m is None:
                continue
            assert m.error() is None, m.error()
            out.append(m)
    finally:
        c.close()
    assert len(out) == n, f"read {len(out)} of {n} records"
    return out


def assert_refused(result, code, what):
    assert result["error_code"] == code, f"{what}: expected error {code}, got {result}"
    assert result["base_offset"] == -1, f"{what}: {result}"


def test_every_record_is_decoded(broker):
    """Records whose inside is malformed (header count, header lengths, UTF-8 header keys,
    bytes after the headers, oversized varints) are refused as INVALID_RECORD; the valid batch
    after them is written at offset 0."""
    create_topic(broker, "decode")
    ts = now_ms()
    cases = {
        "header count beyond the record": b.record(0, raw_headers=b.varint(5)),
        "negative header count": b.record(0, raw_headers=b.varint(-2)),
        "header key length beyond the record": b.record(0, raw_headers=b.varint(1) + b.varint(40) + b"ab"),
        "negative header key length": b.record(0, raw_headers=b.varint(1) + b.varint(-1) + b.varint(-1)),
        "header key not UTF-8": b.record(0, headers=[(b"\xff\xfekey", b"v")]),
        "bytes after the headers": b.record(0, tail=b"\x00\x00"),
        "varint of 11 bytes": b.record(0, raw_headers=b"\xff" * 10 + b"\x01"),
    }
    for what, rec in cases.items():
        result = b.produce(broker, "decode", b.batch([rec], ts))
        assert_refused(result, b.INVALID_RECORD, what)
        assert result["error_message"], f"{what}: no error message: {result}"
    good = b.batch([b.record(0, headers=[("héader".encode(), b"v")])], ts)
    assert b.produce(broker, "decode", good)["base_offset"] == 0
    assert end_offset(broker, "decode") == 1


def test_true_max_timestamp_is_written(broker):
    """A batch whose header understates its max timestamp is stored with the true one, so
    ListOffsets by time (and retention) see the newest record."""
    create_topic(broker, "maxts")
    ts = now_ms() - 60_000
    recs = [b.record(0, 0), b.record(1, 5000), b.record(2, 3000)]
    result = b.produce(broker, "maxts", b.batch(recs, ts, max_timestamp=ts))
    assert result["error_code"] == 0, result
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "maxts"})
    try:
        found = c.offsets_for_times([TopicPartition("maxts", 0, ts + 4000)], timeout=30)[0]
    finally:
        c.close()
    assert found.offset == 1, f"offset for timestamp {ts + 4000}: {found}"
    m = consume_all(broker, "maxts", 3)
    assert [x.timestamp()[1] for x in m] == [ts, ts + 5000, ts + 3000]


def test_timestamp_bounds(broker):
    """message.timestamp.after.max.ms / before.max.ms (KIP-937): a record stamped a year ahead
    or behind is refused with INVALID_TIMESTAMP and its index in record_errors; a real
    producer's delivery fails the same way."""
    create_topic(broker, "bounded", {"message.timestamp.after.max.ms": "3600000",
                                     "message.timestamp.before.max.ms": str(7 * DAY_MS)})
    now = now_ms()
    ahead = b.batch([b.record(0, 0), b.record(1, 365 * DAY_MS)], now)
    result = b.produce(broker, "bounded", ahead)
    assert_refused(result, b.INVALID_TIMESTAMP, "a year ahead")
    assert [i for i, _ in result["record_errors"]] == [1], result
    assert "out of range" in result["record_errors"][0][1], result
    behind = b.batch([b.record(0, 0)], now - 365 * DAY_MS)
    result = b.produce(broker, "bounded", behind)
    assert_refused(result, b.INVALID_TIMESTAMP, "a year behind")
    assert [i for i, _ in result["record_errors"]] == [0], result

    errors = []
    p = Producer({"bootstrap.servers": broker.bootstrap, "retries": 0})
    p.produce("bounded", b"v", timestamp=now + 365 * DAY_MS, on_delivery=lambda err, _m: errors.append(err))
    assert p.flush(60) == 0
    assert errors and errors[0] is not None and errors[0].code() == b.INVALID_TIMESTAMP, errors
    assert b.produce(broker, "bounded", b.simple_batch(2, now_ms()))["base_offset"] == 0
    assert end_offset(broker, "bounded") == 2


def test_client_batches_kafka_refuses(broker):
    """Control batches, an idempotent batch without a sequence, a base offset other than 0 and
    more than one batch per partition are refused with INVALID_RECORD, as Kafka does."""
    create_topic(broker, "forged")
    ts = now_ms()
    cases = {
        "client control batch": b.simple_batch(1, ts, attributes=b.ATTR_CONTROL),
        "producer id without a sequence": b.simple_batch(1, ts, producer_id=0, producer_epoch=0, base_sequence=-1),
        "base offset 42": b.simple_batch(1, ts, base_offset=42),
        "two batches": b.simple_batch(1, ts) + b.simple_batch(1, ts),
    }
    for what, records in cases.items():
        assert_refused(b.produce(broker, "forged", records), b.INVALID_RECORD, what)
    assert end_offset(broker, "forged") == 0


def test_transactional_batch_without_transactional_id(broker):
    """Kafka answers a request carrying transactional batches but no transactional id with
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED."""
    create_topic(broker, "txn")
    records = b.simple_batch(1, now_ms(), attributes=b.ATTR_TRANSACTIONAL, producer_id=0, producer_epoch=0,
                             base_sequence=0)
    assert_refused(b.produce(broker, "txn", records), b.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "transactional")
    assert end_offset(broker, "txn") == 0


def test_producer_id_never_issued(broker):
    """An idempotent batch with a producer id this broker never handed out is refused with
    UNKNOWN_PRODUCER_ID (it would otherwise claim sequence state for an id a future producer
    gets); ids from InitProducerId work."""
    create_topic(broker, "pids")
    forged = b.simple_batch(1, now_ms(), producer_id=987_654_321, producer_epoch=0, base_sequence=0)
    assert_refused(b.produce(broker, "pids", forged), b.UNKNOWN_PRODUCER_ID, "forged producer id")
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    for i in range(10):
        p.produce("pids", b"v%d" % i)
    assert p.flush(60) == 0
    assert end_offset(broker, "pids") == 10


def test_keyless_record_on_compacted_topic_names_the_record(broker):
    create_topic(broker, "compacted", {"cleanup.policy": "compact"})
    ts = now_ms()
    recs = [b.record(0, key=b"a"), b.record(1, key=None), b.record(2, key=b"c"), b.record(3, key=None)]
    result = b.produce(broker, "compacted", b.batch(recs, ts))
    assert_refused(result, b.INVALID_RECORD, "keyless")
    assert [i for i, _ in result["record_errors"]] == [1, 3], result
    assert all("without key" in m for _, m in result["record_errors"]), result
    assert result["error_message"], result
    # Inside a compressed batch too.
    result = b.produce(broker, "compacted", b.batch(recs, ts, compress_gzip=True))
    assert [i for i, _ in result["record_errors"]] == [1, 3], result
    assert end_offset(broker, "compacted") == 0


def test_decompression_is_bounded_by_max_message_bytes(broker):
    """A small gzip batch that inflates far beyond what max.message.bytes allows is refused
    without being expanded; an ordinary compressed batch of the same topic is accepted."""
    create_topic(broker, "bomb", {"max.message.bytes": "10000"})
    ts = now_ms()
    bomb = b.batch([b.record(0, value=bytes(4 << 20))], ts, compress_gzip=True)
    assert len(bomb) < 10000
    result = b.produce(broker, "bomb", bomb)
    assert_refused(result, b.CORRUPT_MESSAGE, "gzip bomb")
    assert "max.message.bytes" in (result["error_message"] or ""), result
    ok = b.batch([b.record(i, value=bytes(1000)) for i in range(20)], ts, compress_gzip=True)
    assert b.produce(broker, "bomb", ok)["base_offset"] == 0
    assert end_offset(broker, "bomb") == 20


def segment_codecs(broker, topic):
    """The compression codec of every batch in the partition's first segment file."""
    path = broker.data_dir / f"{topic}-0" / ("0" * 20 + ".log")
    data = path.read_bytes()
    codecs, pos = [], 0
    while pos + 61 <= len(data):
        length = int.from_bytes(data[pos + 8:pos + 12], "big")
        codecs.append(int.from_bytes(data[pos + 21:pos + 23], "big") & 7)
        pos += 12 + length
    return codecs


def test_topic_compression_type_recompresses(broker):
    """Every Kafka compression.type is accepted; the broker rewrites a batch whose codec
    differs from the topic's (and keeps the producer's under `producer`); consumers read the
    same records either way."""
    cases = [("gzip", "none", 1), ("zstd", "lz4", 4), ("uncompressed", "snappy", 0), ("producer", "lz4", 3),
             ("snappy", "gzip", 2), ("lz4", "zstd", 3)]
    for topic_codec, producer_codec, stored in cases:
        topic = f"codec-{topic_codec}-{producer_codec}"
        create_topic(broker, topic, {"compression.type": topic_codec})
        p = Producer({"bootstrap.servers": broker.bootstrap, "compression.type": producer_codec, "linger.ms": 50})
        for i in range(200):
            p.produce(topic, b"value-%d" % i * 5, key=b"k%d" % i, headers=[("h", b"%d" % i)])
        assert p.flush(60) == 0
        got = consume_all(broker, topic, 200)
        assert [m.value() for m in got] == [b"value-%d" % i * 5 for i in range(200)]
        assert [m.headers() for m in got] == [[("h", b"%d" % i)] for i in range(200)]
        assert set(segment_codecs(broker, topic)) == {stored}, topic


def test_broker_compression_type(broker_factory):
    broker = broker_factory({"compression.type": "gzip"})
    create_topic(broker, "brokercodec")
    p = Producer({"bootstrap.servers": broker.bootstrap, "compression.type": "none"})
    for i in range(10):
        p.produce("brokercodec", b"v%d" % i)
    assert p.flush(60) == 0
    consume_all(broker, "brokercodec", 10)
    assert set(segment_codecs(broker, "brokercodec")) == {1}


def test_compression_type_alter_configs(broker):
    create_topic(broker, "alter")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    from confluent_kafka.admin import ConfigResource
    for value in ["zstd", "lz4", "snappy", "gzip", "uncompressed", "producer"]:
        res = ConfigResource(ConfigResource.Type.TOPIC, "alter", set_config={"compression.type": value})
        admin.alter_configs([res])[res].result(timeout=30)
        described = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, "alter")])
        configs = list(described.values())[0].result(timeout=30)
        assert configs["compression.type"].value == value
    bad = ConfigResource(ConfigResource.Type.TOPIC, "alter", set_config={"compression.type": "brotli"})
    with pytest.raises(KafkaException):
        admin.alter_configs([bad])[bad].result(timeout=30)
