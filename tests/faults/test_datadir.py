"""The data directory is precious: what operators (and accidents) do to it, done to the real
broker. Nothing the broker did not create is ever deleted, metadata can never delete partitions,
one damaged partition never stops the broker, ids and placements survive lost or changed files,
and every refusal names the file or directory involved."""

import base64
import os
import re
import resource
import shutil
import subprocess
import threading
import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

import wire
from conftest import HOST, BrokerError
from datadir_helpers import (
    COORDINATOR_NOT_AVAILABLE,
    INVALID_TOPIC_EXCEPTION,
    LEADER_NOT_AVAILABLE,
    REQ_TIMEOUT,
    BrokerMaker,
    commit,
    committed,
    error_lines,
    find_coordinator_v0,
    groups_on_distinct_partitions,
    java_partition_for,
    log_lines,
    metadata_file,
    metadata_v5,
    produce_acked,
    read_all,
    run_tern,
    snapshot_files,
)
from test_confluent import admin_for, create_topic, wait_metadata

NODE = 1
MARKER = re.compile(r"version: 0\ntopic_id: ([A-Za-z0-9_-]{22})\n?")


@pytest.fixture
def brokers(request, tmp_path):
    maker = BrokerMaker(request, tmp_path)
    yield maker
    maker.cleanup()


def kafka_base64(topic_uuid: str) -> str:
    """Kafka's text form of a topic id: URL-safe base64 of its 16 bytes, unpadded."""
    return base64.urlsafe_b64encode(uuid.UUID(topic_uuid).bytes).rstrip(b"=").decode()


def tree(root, names):
    """{relative path: bytes} of everything under the given entries of `root`."""
    out = {}
    for name in names:
        top = root / name
        if top.is_file():
            out[name] = top.read_bytes()
            continue
        out[name + "/"] = b""
        for dirpath, _dirs, files in os.walk(top):
            for f in files:
                p = os.path.join(dirpath, f)
                out[os.path.relpath(p, root)] = open(p, "rb").read()
    return out


def values_by_partition(acked):
    out = {}
    for p, o, v in sorted(acked):
        out.setdefault(p, []).append((o, v))
    return out


def describe_topic_id(admin, topic):
    from confluent_kafka import TopicCollection

    futs = admin.describe_topics(TopicCollection([topic]), request_timeout=REQ_TIMEOUT)
    tid = futs[topic].result(timeout=REQ_TIMEOUT).topic_id
    # librdkafka prints ids in standard base64; Kafka's text form is URL-safe.
    bits = ((tid.get_most_significant_bits() & (2**64 - 1)) << 64) | (tid.get_least_significant_bits() & (2**64 - 1))
    return kafka_base64(str(uuid.UUID(int=bits)))


# 1 ------------------------------------------------------------------------------------------

def test_unknown_entries_are_left_alone_and_partitions_carry_kafkas_marker(brokers):
    b = brokers()
    d = b.data_dir
    (d / "photos").mkdir(parents=True)
    (d / "photos" / "cat.jpg").write_bytes(b"\xff\xd8 a user's own file")
    (d / "notes.txt").write_text("mine\n")
    # Named like a partition directory, but no topic has it and it carries no marker.
    (d / "backup-1").mkdir()
    (d / "backup-1" / "important.log").write_text("keep me\n")
    # Named like Kafka's delete directories, but the broker never renamed it (no marker).
    (d / "old-0.0123456789abcdef0123456789abcdef-delete").mkdir()
    (d / "old-0.0123456789abcdef0123456789abcdef-delete" / "keep.me").write_text("x\n")
    user = ["photos", "notes.txt", "backup-1", "old-0.0123456789abcdef0123456789abcdef-delete"]
    before = tree(d, user)

    b.start()
    admin = admin_for(b)
    create_topic(admin, "events", 3)
    acked = produce_acked(b.bootstrap, "events", 3, 30)
    b.restart()
    assert tree(d, user) == before, "the broker changed or removed entries of the data directory it did not create"
    warned = [line for line in log_lines(b, level="WARN") if "photos" in line]
    assert warned, "unknown entries of the data directory are not reported at WARN"

    ids = set()
    for p in range(3):
        text = (d / f"events-{p}" / "partition.metadata").read_text()
        m = MARKER.fullmatch(text)
        assert m, f"events-{p}/partition.metadata is not in Kafka's format: {text!r}"
        ids.add(m.group(1))
    assert len(ids) == 1, f"partitions of one topic carry different topic ids: {ids}"
    wait_metadata(admin, "events", 3)
    assert ids == {describe_topic_id(admin, "events")}, "partition.metadata does not carry the topic's id"
    assert read_all(b.bootstrap, "events", 3) == values_by_partition(acked)
    b.stop()
    assert tree(d, user) == before


# 2 ------------------------------------------------------------------------------------------

def test_second_broker_on_the_same_data_dir_refuses_to_start(brokers):
    first = brokers()
    first.start()
    second = brokers(data_dir=first.data_dir, name="second")
    with pytest.raises(BrokerError):
        second.start()
    out = second.log_tail()
    assert ".lock" in out, f"the refusal does not name the lock file:\n{out}"
    assert str(first.proc.pid) in out, f"the refusal does not say which process holds the directory:\n{out}"
    assert first.alive() and wire.api_versions_ok(HOST, first.port)
    assert (first.data_dir / ".lock").read_text().strip() == str(first.proc.pid)
    # Once the first broker is gone the directory is free again.
    first.stop()
    second.start()


# 3 ------------------------------------------------------------------------------------------

def _damage_garbage(text):
    return b"\xff\xfe\x00not properties\x80\n" * 4


def _damage_fewer_partitions(text):
    assert re.search(r"^partitions=3$", text, re.M), text
    return re.sub(r"^partitions=3$", "partitions=1", text, flags=re.M).encode()


def _damage_other_id(text):
    assert re.search(r"^topic\.id=", text, re.M), text
    return re.sub(r"^topic\.id=.*$", f"topic.id={uuid.uuid4()}", text, flags=re.M).encode()


@pytest.mark.parametrize("damage", [_damage_garbage, _damage_fewer_partitions, _damage_other_id],
                         ids=["garbage", "fewer-partitions", "other-topic-id"])
def test_damaged_topic_metadata_never_deletes_partitions(brokers, damage):
    b = brokers()
    b.start()
    create_topic(admin_for(b), "orders", 3)
    acked = produce_acked(b.bootstrap, "orders", 3, 3000)
    b.stop()
    f = metadata_file(b.data_dir, "orders")
    original = f.read_bytes()
    files = snapshot_files(b.data_dir, "orders")
    assert len([k for k in files if k.endswith(".log")]) == 3
    f.write_bytes(damage(original.decode()))

    try:
        b.start()
        started = True
    except BrokerError:
        started = False
    log = b.log_tail()
    assert f.name in log, f"no message names the damaged metadata file {f.name}:\n{log}"
    assert snapshot_files(b.data_dir, "orders") == files, "partition files were deleted or changed"
    if started:
        assert error_lines(b, f.name), f"the damaged metadata file is not reported at ERROR:\n{log}"
        err, parts = metadata_v5(b, ["orders"])["orders"]
        served = err == 0 and parts and all(e == 0 and leader == NODE for e, leader, *_ in parts.values())
        assert not served, f"a topic whose metadata disagrees with its partitions is served: {err} {parts}"
        b.stop()
    assert snapshot_files(b.data_dir, "orders") == files

    # Repaired by the operator: everything acknowledged is there.
    f.write_bytes(original)
    b.start()
    wait_metadata(admin_for(b), "orders", 3)
    assert read_all(b.bootstrap, "orders", 3) == values_by_partition(acked)


def test_data_dir_of_the_previous_layout_is_adopted(brokers):
    """Partition directories without partition.metadata (written before the marker existed)
    are adopted when `.topics` agrees: the marker is written, nothing is lost."""
    b = brokers()
    b.start()
    create_topic(admin_for(b), "legacy", 2)
    acked = produce_acked(b.bootstrap, "legacy", 2, 200)
    b.stop()
    props = dict(line.split("=", 1) for line in metadata_file(b.data_dir, "legacy").read_text().splitlines()
                 if "=" in line and not line.startswith("#"))
    topic_uuid = str(uuid.UUID(props["topic.id"]))
    for f in (b.data_dir / ".topics").iterdir():
        f.unlink()
    (b.data_dir / ".topics" / "legacy.properties").write_text(f"topic.id={topic_uuid}\npartitions=2\n")
    for p in range(2):
        (b.data_dir / f"legacy-{p}" / "partition.metadata").unlink(missing_ok=True)

    b.start()
    admin = admin_for(b)
    wait_metadata(admin, "legacy", 2)
    assert read_all(b.bootstrap, "legacy", 2) == values_by_partition(acked)
    for p in range(2):
        marker = b.data_dir / f"legacy-{p}" / "partition.metadata"
        assert marker.exists(), f"{marker} was not written when the partition was adopted"
        assert MARKER.fullmatch(marker.read_text()).group(1) == kafka_base64(topic_uuid)
    assert describe_topic_id(admin, "legacy") == kafka_base64(topic_uuid), "the adopted topic changed its id"
    b.restart()
    wait_metadata(admin_for(b), "legacy", 2)
    assert read_all(b.bootstrap, "legacy", 2) == values_by_partition(acked)


# 5 ------------------------------------------------------------------------------------------

def test_longest_legal_topic_name_and_colliding_names(brokers):
    b = brokers()
    b.start()
    admin = admin_for(b)
    name = "n" * 249
    create_topic(admin, name, 2)
    acked = produce_acked(b.bootstrap, name, 2, 20)
    assert read_all(b.bootstrap, name, 2) == values_by_partition(acked)
    admin.delete_topics([name], operation_timeout=REQ_TIMEOUT)[name].result(timeout=REQ_TIMEOUT)
    create_topic(admin, name, 2)
    assert read_all(b.bootstrap, name, 2) == {0: [], 1: []}, "the re-created topic shows old records"
    b.restart()
    wait_metadata(admin_for(b), name, 2)

    admin = admin_for(b)
    create_topic(admin, "metrics_a", 1)
    fut = admin.create_topics([NewTopic("metrics.a", num_partitions=1, replication_factor=1)],
                              request_timeout=REQ_TIMEOUT)["metrics.a"]
    with pytest.raises(KafkaException) as e:
        fut.result(timeout=REQ_TIMEOUT)
    err = e.value.args[0]
    assert err.code() == KafkaError.TOPIC_EXCEPTION, err
    assert "Topic 'metrics.a' collides with existing topic: metrics_a" in err.str(), err.str()


# 6 ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["missing", "garbage"])
def test_producer_ids_are_never_reused(brokers, how):
    b = brokers()
    b.start()
    create_topic(admin_for(b), "ids", 1)
    first = produce_acked(b.bootstrap, "ids", 1, 50, prefix="first", idempotent=True)
    b.stop()
    block = b.data_dir / "producer-id-block"
    assert block.exists()
    if how == "missing":
        block.unlink()
    else:
        block.write_bytes(b"\x00\xffnot a number\n")
    b.start()
    second = produce_acked(b.bootstrap, "ids", 1, 50, prefix="second", idempotent=True)
    got = read_all(b.bootstrap, "ids", 1)[0]
    assert [v for _, v in got] == [v for _, _, v in sorted(first + second)], (
        f"records of the new idempotent producer were lost: {len(got)} of 100 in the log")
    if how == "garbage":
        assert [line for line in log_lines(b, "producer-id-block") if " WARN " in line or " ERROR " in line], (
            "the garbage producer-id-block is not reported")


# 7 ------------------------------------------------------------------------------------------

def test_damaged_offsets_partition_goes_offline_and_can_be_truncated(brokers):
    b = brokers(settings={"offsets.topic.num.partitions": 5})
    b.start()
    create_topic(admin_for(b), "t", 1)
    produce_acked(b.bootstrap, "t", 1, 10)
    (ga, pa), (gb, pb) = groups_on_distinct_partitions(2, 5)
    commit(b.bootstrap, ga, "t", {0: 3})
    commit(b.bootstrap, gb, "t", {0: 7})
    b.stop()
    seg = b.data_dir / f"__consumer_offsets-{pa}" / "00000000000000000000.log"
    data = bytearray(seg.read_bytes())
    assert len(data) > 61, f"{seg} holds no batch"
    data[-1] ^= 0xFF  # inside the last batch's records: its CRC no longer matches
    seg.write_bytes(bytes(data))

    b.start()
    assert error_lines(b, f"__consumer_offsets-{pa}"), "the damaged partition is not named at ERROR"
    _, parts = metadata_v5(b, ["__consumer_offsets"])["__consumer_offsets"]
    err, leader, replicas, _isr, offline = parts[pa]
    assert (err, leader) == (LEADER_NOT_AVAILABLE, -1) and NODE in offline, parts[pa]
    assert parts[pb][:2] == (0, NODE), parts[pb]
    assert find_coordinator_v0(b, ga) == (COORDINATOR_NOT_AVAILABLE, -1)
    assert find_coordinator_v0(b, gb) == (0, NODE)
    assert committed(b.bootstrap, gb, "t", [0]) == {0: 7}
    produce_acked(b.bootstrap, "t", 1, 5, prefix="after")

    # The tools refuse to touch a directory a running broker holds.
    rc, out = run_tern("log", "check", "--data-dir", str(b.data_dir))
    assert rc != 0 and ".lock" in out, out
    b.stop()

    rc, out = run_tern("log", "check", "--data-dir", str(b.data_dir))
    assert rc != 0, f"tern log check found no damage:\n{out}"
    lines = [line for line in out.splitlines() if f"__consumer_offsets-{pa}" in line]
    m = re.search(r"damaged at offset (\d+)", "\n".join(lines))
    assert m, f"tern log check does not say where __consumer_offsets-{pa} is damaged:\n{out}"
    assert seg.read_bytes() == bytes(data), "tern log check changed the log"
    rc, out = run_tern("log", "truncate", "--data-dir", str(b.data_dir), "--topic", "__consumer_offsets",
                       "--partition", str(pa), "--to-offset", m.group(1))
    assert rc == 0, out
    assert "dropped" in out, f"tern log truncate does not say what it dropped:\n{out}"
    rc, out = run_tern("log", "check", "--data-dir", str(b.data_dir))
    assert rc == 0, f"damage left after truncation:\n{out}"

    b.start()
    assert find_coordinator_v0(b, ga) == (0, NODE)
    assert committed(b.bootstrap, gb, "t", [0]) == {0: 7}
    commit(b.bootstrap, ga, "t", {0: 9})
    assert committed(b.bootstrap, ga, "t", [0]) == {0: 9}


def test_unopenable_partition_goes_offline_while_the_rest_serves(brokers):
    b = brokers()
    b.start()
    create_topic(admin_for(b), "t", 2)
    acked = produce_acked(b.bootstrap, "t", 2, 20)
    b.stop()
    seg = b.data_dir / "t-1" / "00000000000000000000.log"
    aside = b.data_dir.parent / "aside.log"
    seg.rename(aside)
    seg.mkdir()  # a segment that cannot be opened

    b.start()
    assert error_lines(b, "t-1"), "the partition that cannot be opened is not named at ERROR"
    err, parts = metadata_v5(b, ["t"])["t"]
    assert err == 0 and parts[0][:2] == (0, NODE), parts
    assert parts[1][:2] == (LEADER_NOT_AVAILABLE, -1) and NODE in parts[1][4], parts
    c_acked = produce_acked(b.bootstrap, "t", 1, 5, prefix="more")
    b.stop()

    seg.rmdir()
    aside.rename(seg)
    b.start()
    wait_metadata(admin_for(b), "t", 2)
    assert read_all(b.bootstrap, "t", 2) == values_by_partition(acked + c_acked)


# 8 ------------------------------------------------------------------------------------------

def test_offsets_placement_survives_a_changed_partition_setting(brokers):
    b = brokers(settings={"offsets.topic.num.partitions": 4})
    b.start()
    create_topic(admin_for(b), "t", 1)
    produce_acked(b.bootstrap, "t", 1, 1)
    groups = [f"placed-{i}" for i in range(8)]
    assert any(java_partition_for(g, 4) != java_partition_for(g, 7) for g in groups)
    for i, g in enumerate(groups):
        commit(b.bootstrap, g, "t", {0: i + 1})
    b.stop()
    b.settings["offsets.topic.num.partitions"] = 7
    b.start()
    for i, g in enumerate(groups):
        assert committed(b.bootstrap, g, "t", [0]) == {0: i + 1}, f"group {g} lost its committed offset"
    assert log_lines(b, "offsets.topic.num.partitions", level="WARN"), (
        "a setting that differs from the existing topic is not reported")


# 9 ------------------------------------------------------------------------------------------

def test_clients_cannot_produce_to_consumer_offsets(brokers):
    b = brokers()
    b.start()
    admin = admin_for(b)
    wait_metadata(admin, "__consumer_offsets", 50)
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "probe"})
    before = c.get_watermark_offsets(TopicPartition("__consumer_offsets", 0), timeout=REQ_TIMEOUT, cached=False)
    results = []
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "message.timeout.ms": 20000})
    p.produce("__consumer_offsets", partition=0, key=b"\x00\x01forged", value=b"forged",
              on_delivery=lambda err, msg: results.append(err))
    assert p.flush(30) == 0
    assert results and results[0] is not None, "a client wrote to __consumer_offsets"
    assert results[0].code() == KafkaError.TOPIC_EXCEPTION, results[0]
    after = c.get_watermark_offsets(TopicPartition("__consumer_offsets", 0), timeout=REQ_TIMEOUT, cached=False)
    c.close()
    assert after == before


# 10 -----------------------------------------------------------------------------------------

def test_failed_topic_creation_leaves_nothing_behind(brokers):
    b = brokers()
    b.start()
    admin = admin_for(b)
    create_topic(admin, "keep", 1)
    acked = produce_acked(b.bootstrap, "keep", 1, 5)
    entries = sorted(os.listdir(b.data_dir))
    topics_before = sorted(os.listdir(b.data_dir / ".topics"))
    pid = b.proc.pid
    limits = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    open_fds = len(os.listdir(f"/proc/{pid}/fd"))
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (open_fds + 40, limits[1]))
    try:
        fut = admin.create_topics([NewTopic("big", num_partitions=300, replication_factor=1)],
                                  request_timeout=REQ_TIMEOUT)["big"]
        with pytest.raises(KafkaException):
            fut.result(timeout=REQ_TIMEOUT)
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, limits)
    assert sorted(os.listdir(b.data_dir)) == entries, "the failed creation left entries in the data directory"
    assert sorted(os.listdir(b.data_dir / ".topics")) == topics_before
    assert "big" not in admin.list_topics(timeout=REQ_TIMEOUT).topics
    assert read_all(b.bootstrap, "keep", 1) == values_by_partition(acked)
    # With the limit back, the same creation succeeds and survives a restart.
    create_topic(admin, "big", 300)
    b.restart()
    wait_metadata(admin_for(b), "big", 300)


# 11 -----------------------------------------------------------------------------------------

def _strace_attach(pid, out):
    st = subprocess.Popen(
        ["strace", "-f", "-y", "-e", "trace=mkdir,mkdirat,rename,renameat,renameat2,fsync,fdatasync",
         "-o", str(out), "-p", str(pid)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    attached = threading.Event()

    def watch():
        for line in st.stderr:
            if b"attached" in line:
                attached.set()
    threading.Thread(target=watch, daemon=True).start()
    assert attached.wait(30), "strace did not attach"
    return st


def test_directory_entries_are_fsynced_after_creates_and_renames(brokers, tmp_path):
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    b = brokers()
    b.start()
    admin = admin_for(b)
    data = os.path.realpath(b.data_dir)
    trace = tmp_path / "strace.txt"
    st = _strace_attach(b.proc.pid, trace)
    try:
        create_topic(admin, "synced", 2)
        admin.delete_topics(["synced"], operation_timeout=REQ_TIMEOUT)["synced"].result(timeout=REQ_TIMEOUT)
    finally:
        st.terminate()
        st.wait(30)
    lines = trace.read_text().splitlines()

    def fsynced_after(i, directory):
        return any(re.search(rf"\bf(data)?sync\(\d+<{re.escape(directory)}>", line) for line in lines[i + 1:])

    for p in range(2):
        made = [i for i, line in enumerate(lines) if re.search(rf'mkdir(at)?\(.*"{re.escape(data)}/synced-{p}"', line)]
        assert made, f"no mkdir of synced-{p} traced"
        assert fsynced_after(made[-1], data), f"the data directory is not fsynced after creating synced-{p}"
        renamed = [i for i, line in enumerate(lines)
                   if re.search(rf'rename.*"{re.escape(data)}/synced-{p}", .*"{re.escape(data)}/synced-{p}\.[0-9a-f]{{32}}-delete"', line)]
        assert renamed, f"synced-{p} was not renamed to Kafka's delete name"
        assert fsynced_after(renamed[-1], data), f"the data directory is not fsynced after renaming synced-{p}"
    meta = f"{data}/.topics"
    written = [i for i, line in enumerate(lines) if re.search(rf'rename.*"{re.escape(meta)}/[^"]+"\)?', line)]
    assert written, "no metadata file was written"
    assert all(fsynced_after(i, meta) for i in written), ".topics is not fsynced after a metadata file is renamed"
