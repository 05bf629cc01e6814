"""Producing and reading back numbered records on a replicated topic, with what each step saw
kept for the assertions: acked (partition, offset, value) triples, read records, timings."""

import subprocess
import threading
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from cluster import REQ_TIMEOUT, tern_bin


def create_replicated_topic(cluster, topic, partitions=3, rf=3, min_isr=2):
    """CreateTopics through confluent_kafka's AdminClient, then waits until every partition has
    a leader and `rf` in-sync replicas."""
    admin = cluster.admin()
    fut = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=rf,
                                        config={"min.insync.replicas": str(min_isr)})],
                              operation_timeout=REQ_TIMEOUT, request_timeout=REQ_TIMEOUT)[topic]
    try:
        fut.result(timeout=REQ_TIMEOUT + 5)
    except KafkaException as e:
        # A create whose answer was lost (the quorum electing, a broker restarting) may have
        # been committed, and the client's retry then finds it: the shape is checked below.
        if e.args[0].name() == "TOPIC_ALREADY_EXISTS":
            return cluster.wait_partitions(topic, partitions, isr=rf, timeout=60, what=f"after creating {topic}")
        raise AssertionError(f"CreateTopics {topic} ({partitions} partitions, RF {rf}, min.insync.replicas "
                             f"{min_isr}) failed: {e}") from None
    return cluster.wait_partitions(topic, partitions, isr=rf, timeout=60, what=f"after creating {topic}")


def producer_config(bootstrap, **extra):
    conf = {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5,
            "message.timeout.ms": 120000, "topic.metadata.refresh.interval.ms": 1000,
            "client.id": f"cluster-test-{uuid.uuid4().hex[:6]}"}
    conf.update(extra)
    return conf


def value_of(i):
    return f"rec-{i:07d}"


def produce_acked(bootstrap, topic, partitions, n):
    """Produces n numbered records (record i to partition i % partitions) with acks=all and
    idempotence; returns the acked (partition, offset, value) triples in ack order. Fails
    unless every record was acknowledged."""
    p = Producer(producer_config(bootstrap))
    acked, errors = [], []

    def on_delivery(err, msg):
        if err is None:
            acked.append((msg.partition(), msg.offset(), msg.value().decode()))
        else:
            errors.append((msg.partition(), msg.value().decode(), str(err)))

    for i in range(n):
        while True:
            try:
                p.produce(topic, value=value_of(i).encode(), key=f"k{i}".encode(), partition=i % partitions,
                          on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    left = p.flush(REQ_TIMEOUT * 4)
    assert left == 0 and not errors, f"produce to {topic}: {left} not delivered, {len(errors)} failed: {errors[:5]}"
    assert len(acked) == n, f"{len(acked)} of {n} acked"
    return acked


def consume_group(bootstrap, topic, partitions, until, timeout=120):
    """Reads `topic` with a group consumer (subscribe, earliest) until every partition's
    position passes `until[p]` (an offset); returns [(partition, offset, value)] in the order
    read."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"cluster-test-{uuid.uuid4().hex[:8]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "session.timeout.ms": 10000})
    out = []
    pos = {p: -1 for p in range(partitions)}
    deadline = time.monotonic() + timeout
    try:
        c.subscribe([topic])
        while any(pos[p] < until.get(p, -1) for p in pos):
            if time.monotonic() > deadline:
                raise AssertionError(f"group consumer on {topic}: positions {pos} did not reach {until} "
                                     f"within {timeout}s ({len(out)} records read)")
            for m in c.consume(num_messages=1000, timeout=0.5):
                if m.error():
                    raise AssertionError(f"group consumer on {topic}: {m.error()}")
                out.append((m.partition(), m.offset(), m.value().decode()))
                pos[m.partition()] = max(pos[m.partition()], m.offset())
        return out
    finally:
        c.close()


def read_partitions(bootstrap, topic, partitions, timeout=120):
    """Every record of every partition from offset 0 to the high watermark (assign, no group):
    {partition: {offset: value}}; a record seen twice at one offset with different values fails."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    try:
        ends = {}
        for p in range(partitions):
            _lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=REQ_TIMEOUT, cached=False)
            ends[p] = hi
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        out = {p: {} for p in range(partitions)}
        pos = {p: 0 for p in range(partitions)}
        deadline = time.monotonic() + timeout
        while any(pos[p] < ends[p] for p in pos):
            if time.monotonic() > deadline:
                raise AssertionError(f"reading {topic}: positions {pos} did not reach {ends} within {timeout}s")
            for m in c.consume(num_messages=1000, timeout=0.5):
                if m.error():
                    raise AssertionError(f"reading {topic}: {m.error()}")
                p, o, v = m.partition(), m.offset(), m.value().decode()
                assert out[p].get(o, v) == v, f"{topic}-{p} offset {o} read as {out[p][o]!r} and {v!r}"
                out[p][o] = v
                pos[p] = max(pos[p], o + 1)
        return out
    finally:
        c.close()


def describe_isr(bootstrap, topic):
    """`tern topic describe`: {partition: [isr ids]}."""
    r = subprocess.run([str(tern_bin()), "topic", "describe", "--bootstrap-server", bootstrap, topic],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=REQ_TIMEOUT + 15)
    assert r.returncode == 0, f"tern topic describe {topic} exited {r.returncode}: {r.stderr}"
    isr = {}
    for line in r.stdout.splitlines():
        fields = dict(f.split(": ", 1) for f in line.strip().split("\t") if ": " in f)
        if "Partition" in fields and "Isr" in fields:
            isr[int(fields["Partition"])] = [int(x) for x in fields["Isr"].split(",") if x]
    return isr, r.stdout


class ContinuousProducer(threading.Thread):
    """Sends numbered records (round-robin over the partitions) with acks=all until stopped,
    noting when each ack arrived (time.monotonic())."""

    def __init__(self, bootstrap, topic, partitions, interval=0.005):
        super().__init__(daemon=True)
        self.topic, self.partitions, self.interval = topic, partitions, interval
        self.producer = Producer(producer_config(bootstrap))
        self.lock = threading.Lock()
        self.acked = []  # (monotonic time, partition, offset, value)
        self.errors = []  # (monotonic time, partition, value, error)
        self.sent = 0
        self.stopping = threading.Event()
        self.left = None  # records not delivered when flush gave up
        self.failure = None

    def _on_delivery(self, err, msg):
        now = time.monotonic()
        with self.lock:
            if err is None:
                self.acked.append((now, msg.partition(), msg.offset(), msg.value().decode()))
            else:
                self.errors.append((now, msg.partition(), msg.value().decode(), str(err)))

    def run(self):
        try:
            while not self.stopping.is_set():
                i = self.sent
                try:
                    self.producer.produce(self.topic, value=value_of(i).encode(), key=f"k{i}".encode(),
                                          partition=i % self.partitions, on_delivery=self._on_delivery)
                    self.sent += 1
                except BufferError:
                    pass  # the queue is full while a leader is missing: keep polling
                self.producer.poll(self.interval)
            self.left = self.producer.flush(REQ_TIMEOUT * 4)
        except Exception as e:  # noqa: BLE001 - reported by stop()
            self.failure = e

    def acks(self, partition=None):
        with self.lock:
            return [a for a in self.acked if partition is None or a[1] == partition]

    def stop(self):
        self.stopping.set()
        self.join(REQ_TIMEOUT * 4 + 30)
        assert not self.is_alive(), "the producer thread did not finish flushing"
        assert self.failure is None, f"producer thread failed: {self.failure!r}"
        return self.left
