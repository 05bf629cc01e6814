"""Reading and damaging a partition's files on disk, as an operator or a failing disk would."""

import struct
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Batch:
    position: int
    base_offset: int
    size: int  # whole batch, including the 12-byte offset+length prefix
    last_offset: int
    records: int


def segments(partition_dir: Path):
    """The partition's segment files, oldest first."""
    return sorted(p for p in Path(partition_dir).glob("*.log") if len(p.stem) == 20)


def base_offset(segment: Path) -> int:
    return int(segment.stem)


def batches(segment: Path):
    data = Path(segment).read_bytes()
    out, pos = [], 0
    while pos + 61 <= len(data):
        base, length = struct.unpack_from(">qi", data, pos)
        (delta,) = struct.unpack_from(">i", data, pos + 23)
        (count,) = struct.unpack_from(">i", data, pos + 57)
        out.append(Batch(pos, base, length + 12, base + delta, count))
        pos += length + 12
    return out


def batch_holding(partition_dir: Path, offset: int):
    """(segment, batch) of the batch that holds `offset`."""
    for seg in segments(partition_dir):
        for b in batches(seg):
            if b.base_offset <= offset <= b.last_offset:
                return seg, b
    raise AssertionError(f"no batch holds offset {offset} in {partition_dir}")


def overwrite(path: Path, position: int, data: bytes):
    """Writes `data` at `position` in place (the broker's open file sees it)."""
    with open(path, "r+b") as f:
        f.seek(position)
        f.write(data)


def first_consumed(bootstrap, topic, partition, offset, timeout=15.0):
    """What a librdkafka consumer gets when it asks for `offset`: ("record", offset) of the first
    record delivered, or ("error", code name) of the first error, or ("nothing", None)."""
    import time

    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "fault-reader", "enable.auto.commit": False,
                  "enable.partition.eof": False, "fetch.error.backoff.ms": 50, "log_level": 0})
    try:
        c.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                return ("error", m.error().name())
            return ("record", m.offset())
        return ("nothing", None)
    finally:
        c.close()


def produce_numbered(bootstrap, topic, n, value_size=100, batch=10, partition=0):
    """Produces values `n-<i>` padded to `value_size` in batches of about `batch` records, acks=all;
    returns the acknowledged offsets by sequence number."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 50,
                  "batch.num.messages": batch, "enable.idempotence": False, "log_level": 0})
    acked = {}

    def done(err, msg):
        if err is None:
            acked[int(msg.value().split(b"-")[1].split(b";")[0])] = msg.offset()

    for i in range(n):
        value = f"n-{i};".encode().ljust(value_size, b"x")
        p.produce(topic, value=value, partition=partition, on_delivery=done)
        if i % batch == batch - 1:
            p.flush(30)
    assert p.flush(30) == 0
    assert len(acked) == n, f"{n - len(acked)} records not acknowledged"
    return acked


def consume_all(bootstrap, topic, partition=0, timeout=30.0, batch_per_fetch=False):
    """Every record of the partition from the start, as (offset, value), or raises on an error.
    `batch_per_fetch` makes every fetch ask for one batch, so that reads start at every batch
    (and use the index) instead of reading whole segments at a time."""
    import time

    from confluent_kafka import Consumer, TopicPartition

    conf = {"bootstrap.servers": bootstrap, "group.id": "fault-reader", "enable.auto.commit": False,
            "enable.partition.eof": True, "log_level": 0}
    if batch_per_fetch:
        conf.update({"max.partition.fetch.bytes": 1, "fetch.max.bytes": 1000, "message.max.bytes": 1000})
    c = Consumer(conf)
    out = []
    try:
        c.assign([TopicPartition(topic, partition, 0)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().name() == "_PARTITION_EOF":
                    return out
                raise AssertionError(f"consuming {topic}-{partition}: {m.error()}")
            out.append((m.offset(), m.value()))
        raise AssertionError(f"consuming {topic}-{partition}: no end of partition within {timeout}s")
    finally:
        c.close()
