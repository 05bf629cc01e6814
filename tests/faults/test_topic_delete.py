"""Topics deleted and re-created while producers write to them: a re-created topic never shows
a record the deleted topic acknowledged, also after a restart; the deleted partitions'
directories go away."""

import re
import threading
import time

import pytest
from confluent_kafka import Producer

import wire
from checks import Deadline
from datadir_helpers import REQ_TIMEOUT, BrokerMaker, read_all
from test_confluent import admin_for, create_topic, wait_metadata

TOPIC = "churn"
PARTITIONS = 2
ROUNDS = 20
PRODUCERS = 3


@pytest.fixture
def brokers(request, tmp_path):
    maker = BrokerMaker(request, tmp_path)
    yield maker
    maker.cleanup()


class Producers:
    """Producer threads writing unique values as fast as they are acknowledged; each ack is
    recorded with the time its callback ran (never earlier than the broker's answer)."""

    def __init__(self, bootstrap):
        self.acked = {}  # value -> monotonic time of its delivery callback
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(bootstrap, i), daemon=True)
                        for i in range(PRODUCERS)]

    def run(self, bootstrap, tid):
        p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 1, "enable.idempotence": False,
                      "message.timeout.ms": 5000, "topic.metadata.refresh.interval.ms": 200,
                      "queue.buffering.max.messages": 2000})

        def on_delivery(err, msg):
            if err is None:
                with self.lock:
                    self.acked[msg.value().decode()] = time.monotonic()

        seq = 0
        while not self.stop.is_set():
            try:
                p.produce(TOPIC, value=f"p{tid}-{seq:08d}".encode(), partition=seq % PARTITIONS,
                          on_delivery=on_delivery)
                seq += 1
            except BufferError:
                pass
            p.poll(0.001)
        p.flush(30)

    def count(self):
        with self.lock:
            return len(self.acked)

    def acked_before(self, t):
        with self.lock:
            return {v for v, at in self.acked.items() if at < t}

    def wait_for_more(self, n, what):
        target = self.count() + n
        deadline = Deadline(60, f"{n} more acknowledgements {what}")
        while self.count() < target:
            deadline.check(f"({self.count()} of {target})")
            time.sleep(0.01)


def test_recreated_topic_never_shows_an_old_record(brokers):
    # Small segments: the partitions roll (create files) all the time while they are deleted.
    b = brokers(settings={"auto.create.topics.enable": "false", "log.segment.bytes": 2048,
                          "log.segment.delete.delay.ms": 0})
    b.start()
    admin = admin_for(b)
    create_topic(admin, TOPIC, PARTITIONS)
    producers = Producers(b.bootstrap)
    for t in producers.threads:
        t.start()
    try:
        for round_ in range(ROUNDS):
            producers.wait_for_more(50, f"before deletion {round_}")
            admin.delete_topics([TOPIC], operation_timeout=REQ_TIMEOUT)[TOPIC].result(timeout=REQ_TIMEOUT)
            # Nothing can be acknowledged by the new topic before it is created: every record
            # acknowledged until then went to the deleted one.
            creating_at = time.monotonic()
            create_topic(admin, TOPIC, PARTITIONS)
            old = producers.acked_before(creating_at)
            producers.wait_for_more(50, f"after re-creation {round_}")
            if round_ % 2 == 1:
                b.restart()
                admin = admin_for(b)
                wait_metadata(admin, TOPIC, PARTITIONS)
            got = read_all(b.bootstrap, TOPIC, PARTITIONS)
            back = sorted(v for recs in got.values() for _, v in recs if v in old)
            assert not back, (f"round {round_}: the re-created topic shows {len(back)} records acknowledged "
                              f"by the deleted topic, e.g. {back[:5]}")
    finally:
        producers.stop.set()
        for t in producers.threads:
            t.join(60)
    # The deleted partitions' directories are renamed away and then removed.
    deadline = Deadline(60, "removal of deleted partition directories")
    while any(re.fullmatch(rf"{TOPIC}-\d+\.[0-9a-f]{{32}}-delete", p.name) for p in b.data_dir.iterdir()):
        deadline.check()
        time.sleep(0.1)
    live = sorted(p.name for p in b.data_dir.iterdir() if p.name.startswith(TOPIC))
    assert live == [f"{TOPIC}-{p}" for p in range(PARTITIONS)], live


# A fetch long-polls for up to its max_wait_ms; these wait far longer than the socket allows
# (60 s against 20 s), so only a wake-up of the waiting fetch can answer them in time.
LONG_POLL_MS = 60_000
SOCKET_WAIT_S = 20
UNKNOWN_TOPIC_OR_PARTITION = 3


def long_poll(b, topic, partition, offset):
    """Starts a raw Fetch that waits for data; returns (thread, result list)."""
    out = []

    def run():
        try:
            out.append(wire.fetch(b.host, b.port, topic, partition, offset, LONG_POLL_MS, timeout=SOCKET_WAIT_S))
        except Exception as e:  # the socket timed out: the fetch was never woken
            out.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    time.sleep(1)  # let the fetch reach its wait
    return t, out


def test_a_waiting_fetch_is_woken_by_its_partition_and_by_deletion(brokers):
    b = brokers(settings={"auto.create.topics.enable": "false"})
    b.start()
    admin = admin_for(b)
    create_topic(admin, "waited", 2)

    # Appends to another partition do not answer it; an append to its own does.
    t, out = long_poll(b, "waited", 0, 0)
    for i in range(5):
        assert wire.produce(b.host, b.port, "waited", 1, wire.record_batch([b"other-%d" % i]))[0] == 0
    time.sleep(0.5)
    assert t.is_alive() and not out, f"a fetch of partition 0 answered after appends to partition 1: {out}"
    assert wire.produce(b.host, b.port, "waited", 0, wire.record_batch([b"mine"]))[0] == 0
    t.join(SOCKET_WAIT_S + 5)
    assert not isinstance(out[0], Exception), f"an append to its partition did not wake the fetch: {out[0]}"
    err, hw, records = out[0]
    assert (err, hw) == (0, 1) and b"mine" in records

    # Deleting the topic answers a fetch waiting on it at once, not at its max_wait_ms.
    t, out = long_poll(b, "waited", 0, 1)
    admin.delete_topics(["waited"], operation_timeout=REQ_TIMEOUT)["waited"].result(timeout=REQ_TIMEOUT)
    t.join(SOCKET_WAIT_S + 5)
    assert not isinstance(out[0], Exception), f"a fetch of a deleted topic waited out its max_wait: {out[0]}"
    assert out[0][0] == UNKNOWN_TOPIC_OR_PARTITION, out[0]
