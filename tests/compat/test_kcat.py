"""kcat (librdkafka CLI) compatibility suite."""

import json
import re
import shutil
import subprocess
import time

import pytest

from checks import (
    CODECS, NUM_PARTITIONS, NUM_RECORDS, check_delete_records_and_restart, expected_offset_for_time, key_for,
    Rec, value_for, verify_records)

KCAT = shutil.which("kcat") or shutil.which("kafkacat")


CMD_TIMEOUT = 240
COMMON_X = ["-m", "30", "-X", "socket.timeout.ms=30000", "-X", "api.version.request=true"]


def kcat(broker, args, input_bytes=None, timeout=CMD_TIMEOUT, check=True):
    assert KCAT, "kcat is not installed (scripts/test.sh installs it with apt-get install kcat)"
    cmd = [KCAT, "-b", broker.bootstrap, *COMMON_X, *args]
    try:
        res = subprocess.run(cmd, input=input_bytes, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"kcat timed out after {timeout}s: {' '.join(cmd)}\n"
                             f"stderr: {(e.stderr or b'')[-3000:].decode('utf-8', 'replace')}") from None
    if check and res.returncode != 0:
        raise AssertionError(f"kcat exited {res.returncode}: {' '.join(cmd)}\n"
                             f"stderr: {res.stderr[-3000:].decode('utf-8', 'replace')}")
    return res


def metadata(broker, topic):
    res = kcat(broker, ["-L", "-J", "-t", topic], timeout=60)
    return json.loads(res.stdout)


def wait_topic(broker, topic, partitions, timeout=30):
    end = time.monotonic() + timeout
    while True:
        md = metadata(broker, topic)
        ts = [t for t in md.get("topics", []) if t.get("topic") == topic]
        if ts and not ts[0].get("error") and len(ts[0].get("partitions", [])) == partitions and all(
                p.get("leader") == 1 for p in ts[0]["partitions"]):
            return md
        if time.monotonic() > end:
            raise AssertionError(f"kcat -L: topic {topic} not ready with {partitions} partitions: {md}")
        time.sleep(0.2)


def produce(broker, topic, codec, n):
    lines = "".join(f"{key_for(seq)}:{value_for(seq)}\n" for seq in range(n)).encode()
    codec_args = [] if codec == "none" else ["-z", codec]
    res = kcat(broker, ["-P", "-t", topic, "-K:", *codec_args,
                        "-X", "partitioner=murmur2_random", "-X", "linger.ms=5", "-X", "acks=all",
                        "-X", "batch.num.messages=10000", "-X", "message.timeout.ms=120000"],
               input_bytes=lines)
    err = res.stderr.decode("utf-8", "replace")
    assert "fail" not in err.lower() and "error" not in err.lower(), f"kcat -P reported problems:\n{err[-3000:]}"


LINE_RE = re.compile(r"^(\d+)\t(-?\d+)\t(-?\d+)\t([^\t]*)\t(.*)$")


def consume(broker, topic, partition=None):
    args = ["-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%p\t%o\t%T\t%k\t%s\n"]
    if partition is not None:
        args += ["-p", str(partition)]
    res = kcat(broker, args)
    out = []
    for line in res.stdout.decode("utf-8").splitlines():
        m = LINE_RE.match(line)
        if not m:
            raise AssertionError(f"unparseable kcat -C output line {line!r}")
        p, o, t, k, v = m.groups()
        out.append(Rec(int(p), int(o), int(t), k, v))
    return out


Q_RE = re.compile(r"^(\S+) \[(\d+)\] offset (-?\d+)(?:: (.*))?$")


def query_offsets(broker, topic, partitions, ts):
    """kcat -Q -t topic:partition:timestamp for every partition -> {partition: offset}."""
    args = ["-Q"]
    for p in partitions:
        args += ["-t", f"{topic}:{p}:{ts}"]
    res = kcat(broker, args, timeout=60)
    out = {}
    for line in res.stdout.decode("utf-8").splitlines():
        m = Q_RE.match(line.strip())
        if not m:
            raise AssertionError(f"unparseable kcat -Q output line {line!r}")
        t, p, off, err = m.groups()
        assert err is None, f"kcat -Q {topic}:{p}:{ts} -> error {err}"
        out[int(p)] = int(off)
    assert set(out) == set(partitions), f"kcat -Q answered for {sorted(out)}, asked {list(partitions)}"
    return out


def check_offsets(broker, topic, parts, nparts, start_offsets):
    ps = list(range(nparts))
    earliest = query_offsets(broker, topic, ps, -2)
    latest = query_offsets(broker, topic, ps, -1)
    for p in ps:
        recs = parts.get(p, [])
        assert earliest[p] == start_offsets.get(p, 0), f"kcat -Q earliest {topic}/{p}: {earliest[p]}"
        want = recs[-1].offset + 1 if recs else start_offsets.get(p, 0)
        assert latest[p] == want, f"kcat -Q latest {topic}/{p}: {latest[p]}, expected {want}"
    all_ts = sorted(r.timestamp for recs in parts.values() for r in recs)
    for t in [all_ts[0] - 1, all_ts[0], all_ts[len(all_ts) // 2], all_ts[-1], all_ts[-1] + 1]:
        got = query_offsets(broker, topic, ps, t)
        for p in ps:
            want = expected_offset_for_time(parts.get(p, []), t)
            want = -1 if want is None else want
            assert got[p] == want, f"kcat -Q {topic}:{p}:{t} -> offset {got[p]}, expected {want}"


@pytest.mark.parametrize("codec", CODECS)
def test_kcat_roundtrip(broker_factory, codec):
    nparts, n = NUM_PARTITIONS, NUM_RECORDS
    # kcat cannot create topics: rely on auto.create.topics.enable (default true) + num.partitions.
    broker = broker_factory({"num.partitions": nparts})
    topic = f"kcat-{codec}"
    t0 = int(time.time() * 1000)
    produce(broker, topic, codec, n)
    t1 = int(time.time() * 1000)
    md = wait_topic(broker, topic, nparts)
    brokers = {b["id"]: b["name"] for b in md["brokers"]}
    assert brokers == {1: broker.bootstrap}, f"kcat -L brokers {brokers}, expected {{1: {broker.bootstrap!r}}}"

    recs = consume(broker, topic)
    parts = verify_records(recs, n, nparts)
    bad_ts = [r for r in recs if not (t0 - 1000 <= r.timestamp <= t1 + 1000)]
    assert not bad_ts, f"CreateTime timestamps outside the produce window [{t0}, {t1}]: {bad_ts[:5]}"
    # Single-partition consumption agrees with the all-partitions read.
    assert consume(broker, topic, partition=nparts - 1) == parts.get(nparts - 1, [])
    check_offsets(broker, topic, parts, nparts, {})

    def delete_records(cut):
        # kcat has no DeleteRecords: use the confluent-kafka admin client for that step.
        import confluent_kafka.admin as admin_mod
        from confluent_kafka import TopicPartition
        admin = admin_mod.AdminClient({"bootstrap.servers": broker.bootstrap})
        futs = admin.delete_records([TopicPartition(topic, p, o) for p, o in cut.items()], request_timeout=30)
        for tp, f in futs.items():
            r = f.result(timeout=30)
            assert r.low_watermark == cut[tp.partition], f"DeleteRecords {tp}: low watermark {r.low_watermark}"

    check_delete_records_and_restart(
        broker, n, nparts, parts,
        read=lambda: (consume(broker, topic), None, None),
        delete_records=delete_records,
        check_offsets=lambda got, cut: check_offsets(broker, topic, got, nparts, cut),
        after_restart=lambda: wait_topic(broker, topic, nparts))
