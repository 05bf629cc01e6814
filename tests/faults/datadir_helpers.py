"""Helpers of the data-directory fault tests: brokers on a prepared data directory, acked
produce, read back, the topic metadata file, and the few raw requests (Metadata v5,
FindCoordinator v0) whose fields the clients do not show."""

import os
import re
import struct
import subprocess
import threading
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

import wire
from test_confluent import consume_all
from conftest import HOST, Broker, tern_bin

REQ_TIMEOUT = 30

# Kafka's error codes used here.
LEADER_NOT_AVAILABLE = 5
COORDINATOR_NOT_AVAILABLE = 15
INVALID_TOPIC_EXCEPTION = 17
KAFKA_STORAGE_ERROR = 56


class BrokerMaker:
    """Brokers that are not started yet (so their data directory can be prepared first);
    every broker made is stopped at the end of the test."""

    def __init__(self, request, tmp_path):
        self.tmp_path = tmp_path
        self.brokers = request.node.__dict__.setdefault("_tern_brokers", [])

    def __call__(self, data_dir=None, settings=None, name=None):
        idx = len(self.brokers)
        b = Broker(Path(data_dir) if data_dir else self.tmp_path / f"data-{idx}", self.tmp_path / "logs",
                   settings=settings, name=name or f"tern-{idx}")
        self.brokers.append(b)
        return b

    def cleanup(self):
        for b in self.brokers:
            b.cleanup()


def produce_acked(bootstrap, topic, partitions, n, prefix="v", idempotent=False, extra=None):
    """Produces n records round-robin over `partitions` with acks=all; returns the acked
    (partition, offset, value) triples. Fails unless every record was acknowledged."""
    conf = {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "message.timeout.ms": 60000,
            "enable.idempotence": idempotent}
    conf.update(extra or {})
    p = Producer(conf)
    acked, errors = [], []

    def on_delivery(err, msg):
        if err is None:
            acked.append((msg.partition(), msg.offset(), msg.value().decode()))
        else:
            errors.append(err)

    for i in range(n):
        while True:
            try:
                p.produce(topic, value=f"{prefix}-{i:06d}".encode(), key=f"k{i}".encode(),
                          partition=i % partitions, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    left = p.flush(REQ_TIMEOUT * 2)
    assert left == 0 and not errors, f"produce to {topic}: {left} pending, errors {errors[:5]}"
    assert len(acked) == n
    return acked


def read_all(bootstrap, topic, partitions, timeout=60):
    """Every record of every partition, from the log start to the high watermark:
    {partition: [(offset, value)]} (records appended while reading are left out)."""
    records, _starts, ends = consume_all(bootstrap, topic, partitions, timeout)
    out = {p: [] for p in range(partitions)}
    for r in records:
        if r.offset < ends[r.partition]:
            out[r.partition].append((r.offset, r.value))
    return out


def metadata_file(data_dir, topic):
    """The file that holds `topic`'s metadata: `.topics/<topic>.properties` (the layout before
    topic ids named the files) or the `.topics/*.properties` that names it."""
    meta = Path(data_dir) / ".topics"
    legacy = meta / f"{topic}.properties"
    if legacy.exists():
        return legacy
    for f in sorted(meta.glob("*.properties")):
        try:
            text = f.read_text()
        except (OSError, UnicodeDecodeError):
            continue
        if re.search(rf"^topic\.name={re.escape(topic)}$", text, re.M):
            return f
    raise AssertionError(f"no metadata file for topic {topic} in {meta}: {sorted(os.listdir(meta))}")


def snapshot_files(data_dir, topic):
    """{relative path: size} of every file in the topic's partition directories."""
    out = {}
    for d in Path(data_dir).iterdir():
        if d.is_dir() and re.fullmatch(rf"{re.escape(topic)}-\d+", d.name):
            for f in d.iterdir():
                if f.suffix in (".log", ".index", ".timeindex"):
                    out[f"{d.name}/{f.name}"] = f.stat().st_size
    return out


def broker_log(broker):
    """The broker's current log, without colour codes."""
    return re.sub(r"\x1b\[[0-9;]*m", "", broker.log_paths[-1].read_text(errors="replace"))


def error_lines(broker, *needles):
    """Lines of the broker's current log at ERROR that contain every needle."""
    return log_lines(broker, *needles, level="ERROR")


def log_lines(broker, *needles, level=None):
    text = broker_log(broker)
    return [line for line in text.splitlines()
            if all(n in line for n in needles) and (level is None or f" {level} " in line)]


def run_tern(*args, timeout=120):
    """Runs a `tern` subcommand; returns (exit status, stdout + stderr)."""
    r = subprocess.run([str(tern_bin()), *args], stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    return r.returncode, r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")


# -- raw requests ---------------------------------------------------------------------------

def _request(broker, api_key, version, body):
    return wire.request(HOST, broker.port, api_key, version, body, timeout=REQ_TIMEOUT, correlation_id=7)


def metadata_v5(broker, topics):
    """{topic: (error, {partition: (error, leader, replicas, isr, offline_replicas)})}."""
    body = struct.pack(">i", len(topics)) + b"".join(wire.string(t) for t in topics) + b"\x00"
    r = wire.Reader(_request(broker, wire.API_METADATA, 5, body))
    r.take(">i")  # throttle
    for _ in range(r.take(">i")):
        r.take(">i"), r.string(), r.take(">i"), r.string()
    r.string(), r.take(">i")
    out = {}
    for _ in range(r.take(">i")):
        err, name, _internal = r.take(">h"), r.string(), r.take(">b")
        parts = {}
        for _ in range(r.take(">i")):
            perr, index, leader = r.take(">h"), r.take(">i"), r.take(">i")
            parts[index] = (perr, leader, r.int32s(), r.int32s(), r.int32s())
        out[name] = (err, parts)
    return out


def find_coordinator_v0(broker, group):
    """(error code, node id) of FindCoordinator v0 for a group."""
    r = wire.Reader(_request(broker, 10, 0, wire.string(group)))
    err, node = r.take(">h"), r.take(">i")
    return err, node


def java_partition_for(group, partitions):
    """Kafka's `__consumer_offsets` partition of a group: abs(String.hashCode) % partitions."""
    data = group.encode("utf-16-be")
    h = 0
    for unit in struct.unpack(f">{len(data) // 2}H", data):
        h = (31 * h + unit) & 0xFFFFFFFF
    if h >= 1 << 31:
        h -= 1 << 32
    h = 0 if h == -(1 << 31) else abs(h)
    return h % partitions


def groups_on_distinct_partitions(count, partitions, prefix="g"):
    """`count` group ids, each owned by a different `__consumer_offsets` partition."""
    found, used = [], set()
    i = 0
    while len(found) < count:
        g = f"{prefix}{i}"
        p = java_partition_for(g, partitions)
        if p not in used:
            used.add(p)
            found.append((g, p))
        i += 1
    return found


def commit(bootstrap, group, topic, offsets):
    """Commits {partition: offset} for a group (simple consumer, no subscription)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
    finally:
        c.close()


def committed(bootstrap, group, topic, partitions, timeout=REQ_TIMEOUT):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        got = c.committed([TopicPartition(topic, p) for p in partitions], timeout=timeout)
        return {tp.partition: tp.offset for tp in got}
    finally:
        c.close()


class Background(threading.Thread):
    """A thread whose exception is re-raised by join()."""

    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn, self.error = fn, None

    def run(self):
        try:
            self.fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in join
            self.error = e

    def join(self, timeout=None):
        super().join(timeout)
        assert not self.is_alive(), "background thread did not finish"
        if self.error:
            raise self.error
