"""Consumer groups with real clients: membership changes under load, committed offsets across
broker restarts, and the `__consumer_offsets` records as other tools see them.

Group members run as separate processes (group_member.py) so that one can be SIGKILLed; each
logs its partition ownership and the records it got, and the checks work on those logs.
"""

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from checks import Deadline
from conftest import tern_bin
from test_confluent import admin_for, create_topic

pytestmark = pytest.mark.timeout(300)

HERE = Path(__file__).resolve().parent
PARTITIONS = 12


class Member:
    def __init__(self, broker, tmp_path, client, topic, group, strategy, name):
        self.name = name
        self.out = tmp_path / f"{name}.jsonl"
        self.killed_at = None
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "group_member.py"), "--client", client, "--bootstrap", broker.bootstrap,
             "--topic", topic, "--group", group, "--strategy", strategy, "--name", name, "--out", str(self.out)],
            stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"{name}.stderr", "wb"))

    def kill9(self):
        self.killed_at = time.time()
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=timeout)
        assert self.killed_at is not None or self.proc.returncode == 0, f"{self.name} exited {self.proc.returncode}"

    def events(self):
        if not self.out.exists():
            return []
        lines = self.out.read_text().splitlines()
        # A SIGKILLed member may leave a torn last line.
        return [json.loads(line) for line in lines if line.endswith("}")]

    def consumed(self):
        return {(p, o) for e in self.events() if e["ev"] == "records" for p, o in e["recs"]}


def ownership_intervals(member):
    """(partition, start, end) for every stretch of time the member owned the partition."""
    owned, out = {}, []
    end_of_life = member.killed_at
    for e in member.events():
        if e["ev"] == "assigned":
            for p in e["parts"]:
                owned.setdefault(p, e["t"])
        elif e["ev"] in ("revoked", "lost"):
            for p in e["parts"]:
                if p in owned:
                    out.append((p, owned.pop(p), e["t"]))
        elif e["ev"] == "closed":
            end_of_life = e["t"]
    end = end_of_life if end_of_life is not None else time.time()
    out.extend((p, start, end) for p, start in owned.items())
    return out


def check_no_shared_ownership(members):
    intervals = [(m.name, p, s, e) for m in members for p, s, e in ownership_intervals(m)]
    problems = []
    for i, (name_a, pa, sa, ea) in enumerate(intervals):
        for name_b, pb, sb, eb in intervals[i + 1:]:
            if pa == pb and name_a != name_b and sa < eb and sb < ea:
                problems.append(f"partition {pa}: {name_a} [{sa:.3f}, {ea:.3f}] and {name_b} [{sb:.3f}, {eb:.3f}]")
    assert not problems, "partitions owned by two members at once:\n  " + "\n  ".join(problems[:20])


def check_records_within_ownership(members):
    for m in members:
        intervals = ownership_intervals(m)
        for e in m.events():
            if e["ev"] != "records":
                continue
            for p, o in e["recs"]:
                assert any(ip == p and s <= e["t"] <= end + 0.001 for ip, s, end in intervals), \
                    f"{m.name} got partition {p} offset {o} at {e['t']:.3f} without owning it"


class KeyedProducer:
    """Writes keyed records at a steady rate from a thread; remembers what was acknowledged."""

    def __init__(self, broker, topic, rate=2000):
        self.p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
        self.topic, self.rate = topic, rate
        self.acked, self.errors = set(), []
        self.running = True
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def on_delivery(self, err, msg):
        if err is not None:
            self.errors.append(str(err))
        else:
            self.acked.add((msg.partition(), msg.offset()))

    def run(self):
        i, start = 0, time.monotonic()
        while self.running:
            due = int((time.monotonic() - start) * self.rate)
            while i < due:
                self.p.produce(self.topic, key=f"key-{i % 997}", value=f"value-{i}", on_delivery=self.on_delivery)
                i += 1
            self.p.poll(0.01)
        self.p.flush(30)

    def stop(self):
        self.running = False
        self.thread.join(60)
        assert not self.errors, self.errors[:5]
        return self.acked


def committed_and_end_offsets(broker, topic, group, partitions=PARTITIONS):
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        committed = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=30)
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in range(partitions)}
        return {tp.partition: tp.offset for tp in committed}, ends
    finally:
        c.close()


def run_membership_scenario(broker, tmp_path, client, strategy):
    topic = f"grp-{client}-{strategy}"
    group = f"group-{client}-{strategy}"
    create_topic(admin_for(broker), topic, PARTITIONS)
    producer = KeyedProducer(broker, topic)
    members = []

    def add(name):
        members.append(Member(broker, tmp_path, client, topic, group, strategy, name))

    try:
        for i in range(3):
            add(f"m{i}")
        time.sleep(4)
        add("m3")  # joins: rebalance
        time.sleep(3)
        members[1].kill9()  # crashes: its partitions move after the session timeout
        time.sleep(3)
        add("m4")
        time.sleep(8)
        acked = producer.stop()
        deadline = Deadline(90, f"{group} consuming every acknowledged record")
        while True:
            missing = acked - set().union(*(m.consumed() for m in members))
            if not missing:
                break
            deadline.check(f"({len(missing)} of {len(acked)} missing, e.g. {sorted(missing)[:5]})")
            time.sleep(0.5)
        for m in members:
            if m.killed_at is None:
                m.stop()
    finally:
        producer.running = False
        for m in members:
            if m.proc.poll() is None:
                m.proc.kill()

    assert len(acked) > 10_000
    check_no_shared_ownership(members)
    check_records_within_ownership(members)
    committed, ends = committed_and_end_offsets(broker, topic, group)
    assert committed == ends, f"committed {committed} != log end offsets {ends}"
    rows, total = tern_group_lag(broker, group)
    assert rows == librdkafka_lag(broker, topic, group, PARTITIONS) and total == 0
    return topic, group


@pytest.mark.parametrize("strategy", ["range", "cooperative-sticky"])
def test_confluent_group_with_members_joining_and_crashing(broker, tmp_path, strategy):
    run_membership_scenario(broker, tmp_path, "confluent", strategy)


def test_kafka_python_group_with_members_joining_and_crashing(broker, tmp_path):
    run_membership_scenario(broker, tmp_path, "kafka-python", "range")


def commit(broker, group, offsets):
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        c.commit(offsets=offsets, asynchronous=False)
    finally:
        c.close()


def first_offsets_of_resumed_consumer(broker, topic, group, partitions):
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "auto.offset.reset": "latest",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    first = {}
    try:
        c.subscribe([topic])
        deadline = Deadline(60, "resumed consumer reading every partition")
        while len(first) < partitions:
            deadline.check(f"(have {sorted(first)})")
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                first.setdefault(m.partition(), m.offset())
    finally:
        c.close()
    return first


def tern_group_lag(broker, group):
    """`tern group lag G` parsed: {(topic, partition): (current, log_end, lag)} and the total."""
    out = subprocess.run([str(tern_bin()), "group", "lag", "-b", broker.bootstrap, group],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows, total = {}, None
    for line in out.stdout.splitlines():
        cols = line.split()
        if len(cols) >= 6 and cols[0] == group and cols[2].isdigit():
            num = lambda c: None if c == "-" else int(c)  # noqa: E731
            rows[(cols[1], int(cols[2]))] = (num(cols[3]), num(cols[4]), num(cols[5]))
        elif line.startswith(f"Total lag of group '{group}':"):
            total = int(line.rsplit(":", 1)[1])
    return rows, total


def librdkafka_lag(broker, topic, group, partitions):
    committed, ends = committed_and_end_offsets(broker, topic, group, partitions)
    return {(topic, p): (committed[p], ends[p], ends[p] - committed[p]) for p in range(partitions)}


@pytest.mark.parametrize("graceful", [True, False], ids=["graceful", "kill9"])
def test_committed_offsets_survive_broker_restart(broker, graceful):
    topic, group, n = f"restart-{graceful}", f"restart-group-{graceful}", 6
    create_topic(admin_for(broker), topic, n)
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(600):
        p.produce(topic, partition=i % n, value=f"v{i}")
    p.flush(30)
    wanted = {part: 10 * part + 7 for part in range(n)}
    commit(broker, group, [TopicPartition(topic, part, off) for part, off in wanted.items()])
    broker.restart(graceful=graceful)
    committed, ends = committed_and_end_offsets(broker, topic, group, n)
    assert committed == wanted
    assert ends == {part: 100 for part in range(n)}
    rows, total = tern_group_lag(broker, group)
    assert rows == librdkafka_lag(broker, topic, group, n)
    assert total == sum(100 - off for off in wanted.values())
    assert first_offsets_of_resumed_consumer(broker, topic, group, n) == wanted


def read_offsets_topic(broker, partitions=50):
    """Every (key, value) of `__consumer_offsets`, read like a lag monitor would: by assignment."""
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "offsets-reader", "enable.auto.commit": False,
                  "enable.partition.eof": True, "fetch.wait.max.ms": 100})
    records = []
    try:
        ends = {}
        for p in range(partitions):
            ends[p] = c.get_watermark_offsets(TopicPartition("__consumer_offsets", p), timeout=30)[1]
        todo = {p for p, end in ends.items() if end > 0}
        c.assign([TopicPartition("__consumer_offsets", p, 0) for p in todo])
        deadline = Deadline(60, "reading __consumer_offsets")
        while todo:
            deadline.check(f"(partitions left: {sorted(todo)})")
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error() is None:
                records.append((m.partition(), m.offset(), m.key(), m.value()))
            elif m.error().code() == KafkaError._PARTITION_EOF:
                todo.discard(m.partition())
            else:
                raise AssertionError(f"reading __consumer_offsets: {m.error()}")
    finally:
        c.close()
    return records


def test_consumer_offsets_records_decode_with_kafka_schemas(broker):
    from offsets_schema import decode_record

    topic, group, simple_group = "schema-topic", "schema-group", "schema-simple-group"
    create_topic(admin_for(broker), topic, 3)
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(300):
        p.produce(topic, key=f"k{i}", value=f"v{i}")
    p.flush(30)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "client.id": "schema-client",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    c.subscribe([topic])
    got, deadline = 0, Deadline(60, "consuming 300 records")
    while got < 300:
        deadline.check()
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got += 1
    c.commit(asynchronous=False)
    c.close()
    commit(broker, simple_group, [TopicPartition(topic, 1, 42)])
    committed, _ = committed_and_end_offsets(broker, topic, group, 3)

    latest_offsets, group_records = {}, []
    records = read_offsets_topic(broker)
    assert records, "__consumer_offsets is empty"
    for partition, offset, key, value in records:
        kind, k, version, v = decode_record(key, value)  # raises if a record does not fit the schema
        if kind == "offset" and v is not None:
            assert version in (1, 3), f"offset commit value version {version}"
            latest_offsets[(k["group"], k["topic"], k["partition"])] = v["offset"]
            assert v["commitTimestamp"] > 0
        elif kind == "group" and k["group"] == group:
            group_records.append((version, v))
    assert {(t, p): o for (g, t, p), o in latest_offsets.items() if g == group} == \
        {(topic, p): o for p, o in committed.items()}
    assert latest_offsets[(simple_group, topic, 1)] == 42
    assert group_records, f"no group metadata record for {group}"
    stable = [v for _, v in group_records if v and v["members"]]
    assert stable, "no group metadata record with members"
    assert stable[-1]["protocolType"] == "consumer"
    assert stable[-1]["protocol"] == "range"
    assert stable[-1]["generation"] >= 1
    assert [m["clientId"] for m in stable[-1]["members"]] == ["schema-client"]
    assert stable[-1]["leader"] == stable[-1]["members"][0]["memberId"]
    version, last = group_records[-1]
    assert version == 3 and last["members"] == [], "after the last member left the group is stored Empty"
