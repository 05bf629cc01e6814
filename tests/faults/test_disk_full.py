"""A full disk: appends are refused with KAFKA_STORAGE_ERROR (logged, rate-limited), a refused
append leaves nothing readable, and the broker starts on the full disk to serve reads.

The data directory is a small tmpfs mounted for the test (needs root, as CI runs)."""

import os
import subprocess
import time

import pytest

from logfiles import consume_all

DISK_MB = 24


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path, chunk=4096):
    """Writes `path` until the disk is full; returns its size."""
    written = 0
    with open(path, "wb", buffering=0) as f:
        block = b"\xab" * chunk
        try:
            while True:
                written += f.write(block)
        except OSError:
            pass
    return written


def producer(bootstrap):
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": bootstrap, "acks": "all", "retries": 0, "linger.ms": 5,
                     "message.timeout.ms": 10000, "enable.idempotence": False, "log_level": 0})


def produce(p, topic, values):
    """Produces `values`; returns ({value: offset} acknowledged, {value: error name} refused)."""
    acked, refused = {}, {}

    def done(err, msg):
        if err is None:
            acked[msg.value()] = msg.offset()
        else:
            refused[msg.value()] = err.name()

    for v in values:
        while True:
            try:
                p.produce(topic, value=v, partition=0, on_delivery=done)
                break
            except BufferError:
                p.poll(0.1)
    p.flush(30)
    return acked, refused


def create(bootstrap, *topics):
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(t, 1, 1) for t in topics]).values():
        f.result(15)


def test_a_full_disk_refuses_appends_loudly_and_invents_nothing(broker_factory, small_disk):
    broker = broker_factory({"log.segment.bytes": str(1 << 20)}, data_dir=small_disk / "data")
    create(broker.bootstrap, "filler", "fresh")
    p = producer(broker.bootstrap)
    values = [f"{i:08d}".encode().ljust(4000, b"v") for i in range(DISK_MB * 300)]
    acked, refused = produce(p, "filler", values)
    assert refused, "the disk never filled"
    assert set(refused.values()) <= {"KAFKA_STORAGE_ERROR", "_MSG_TIMED_OUT"}, set(refused.values())
    # Exactly the acknowledged records are in the log, in order.
    got = consume_all(broker.bootstrap, "filler")
    assert [v for _, v in got] == [v for v in values if v in acked]
    # The refusals were logged, and not one line apiece.
    lines = [l for l in broker.log_tail(max_bytes=1_000_000).splitlines() if "append failed" in l]
    assert lines and "ERROR" in lines[0], "refused appends must be logged"
    assert len(lines) < max(2, len(refused)), f"{len(lines)} lines for {len(refused)} refusals"



@pytest.mark.parametrize("free_pages", [0, 1, 2, 3])
def test_a_refused_append_leaves_nothing_readable(broker_factory, small_disk, free_pages):
    """Room for a fresh partition's first batch but perhaps not for the files that go with it
    (the leader epoch checkpoint): whatever fails, a refused append must never be readable."""
    broker = broker_factory({}, data_dir=small_disk / "data")
    create(broker.bootstrap, "fresh")
    ballast = small_disk / "ballast"
    size = fill(ballast)
    os.truncate(ballast, max(0, size - 4096 * free_pages))
    p = producer(broker.bootstrap)
    acked, refused = produce(p, "fresh", [b"first", b"second"])
    os.remove(ballast)
    got = [v for _, v in consume_all(broker.bootstrap, "fresh")]
    assert got == [v for v in (b"first", b"second") if v in acked], f"acked {acked}, refused {refused}"
    # With room again, the partition takes writes as before.
    acked3, refused3 = produce(p, "fresh", [b"third"])
    assert not refused3, refused3


def test_the_broker_starts_on_a_full_disk_and_serves_reads(broker_factory, small_disk):
    broker = broker_factory({"log.segment.bytes": str(1 << 20), "log.index.interval.bytes": "4096"},
                            data_dir=small_disk / "data")
    create(broker.bootstrap, "kept")
    values = [f"{i:08d}".encode().ljust(2000, b"k") for i in range(3000)]
    acked, _ = produce(producer(broker.bootstrap), "kept", values)
    assert len(acked) == len(values)
    fill(small_disk / "ballast")
    # A crash on a full disk: recovery must rebuild indexes and checkpoints without free space.
    broker.kill9()
    broker.start()
    got = consume_all(broker.bootstrap, "kept", timeout=60)
    assert [v for _, v in got] == values
    broker.stop()
    broker.start()
    assert len(consume_all(broker.bootstrap, "kept", timeout=60)) == len(values)
