"""Hostile raw-socket input must never take the broker down or disturb other clients."""

import os
import random
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import wire
from checks import Deadline, seq_of

SEED = int(os.environ.get("TERN_FUZZ_SEED", str(int(time.time()))))
MAX_REQUEST_BYTES = 104857600  # socket.request.max.bytes default
CLOSE_TIMEOUT = 15.0


def _rng(salt):
    return random.Random(f"{SEED}-{salt}")


def assert_alive(broker, what):
    assert broker.alive(), f"broker died after {what} (seed {SEED}); exit status {broker.proc.returncode}"
    assert wire.api_versions_ok(broker.host, broker.port), f"broker no longer answers ApiVersions after {what}"


# -- individual abuses (each returns a short description of what the broker did) ----------------

def abuse_garbage(broker, rng):
    size = rng.randint(1, 4096)
    payload = rng.randbytes(size)
    with wire.connect(broker.host, broker.port) as s:
        try:
            s.sendall(wire.frame(payload))
        except OSError:
            return "reset on send"
        closed, got = wire.wait_closed(s, 2.0)
        return f"garbage {size}B: closed={closed} replied={got}B"


def abuse_truncated(broker, rng):
    declared = rng.randint(16, 1 << 20)
    sent = rng.randint(0, min(declared - 1, 2048))
    payload = wire.request_header(wire.API_METADATA, rng.randint(0, 12), rng.randint(0, 1 << 30))
    payload = (payload + rng.randbytes(sent))[:sent]
    with wire.connect(broker.host, broker.port) as s:
        try:
            s.sendall(struct.pack(">i", declared) + payload)
        except OSError:
            return "reset on send"
    return f"truncated {sent}/{declared}B"


def abuse_huge_length(broker, rng, size=None):
    size = size if size is not None else rng.choice([MAX_REQUEST_BYTES + 1, 0x7FFFFFFF, -1, -2147483648])
    with wire.connect(broker.host, broker.port) as s:
        try:
            s.sendall(struct.pack(">i", size) + b"\x00\x12\x00\x00")
        except OSError:
            return f"length {size}: reset on send"
        closed, got = wire.wait_closed(s, CLOSE_TIMEOUT)
        assert closed, (f"broker kept the connection open {CLOSE_TIMEOUT}s after a request length prefix of "
                        f"{size} (> socket.request.max.bytes={MAX_REQUEST_BYTES} or negative); Kafka closes it")
        return f"length {size}: closed"


def reply_outcome(s, corr, what, timeout):
    """What the broker did with a request we sent: closed the connection, said nothing, or
    answered it (then with our correlation id)."""
    try:
        s.settimeout(timeout)
        body = wire.recv_frame(s)
    except (wire.ConnectionClosed, ConnectionResetError):
        return f"{what}: closed"
    except socket.timeout:
        return f"{what}: no answer"
    (rcorr,) = struct.unpack_from(">i", body, 0)
    assert rcorr == corr, f"reply to {what} has correlation id {rcorr}, sent {corr}"
    return f"{what}: answered {len(body)}B"


def abuse_unknown_api_key(broker, rng):
    api_key = rng.choice([999, 4242, 32767, -5])
    corr = rng.randint(1, 1 << 30)
    with wire.connect(broker.host, broker.port) as s:
        s.sendall(wire.frame(wire.request_header(api_key, 0, corr) + rng.randbytes(rng.randint(0, 64))))
        return reply_outcome(s, corr, f"api key {api_key}", CLOSE_TIMEOUT)


def check_unsupported_api_versions(broker, version, corr):
    """ApiVersions at an unsupported version -> UNSUPPORTED_VERSION (35) in a v0-format response."""
    with wire.connect(broker.host, broker.port) as s:
        s.sendall(wire.api_versions_request(corr, version))
        body = wire.recv_frame(s)
        rcorr, err, versions, trailing = wire.parse_api_versions_v0(body)
        assert rcorr == corr, f"ApiVersions v{version}: correlation id {rcorr}, sent {corr}"
        assert err == wire.ERR_UNSUPPORTED_VERSION, (
            f"ApiVersions v{version}: error code {err}, expected UNSUPPORTED_VERSION (35); body {body.hex()}")
        assert trailing == b"", (
            f"ApiVersions v{version} error response is not in v0 format: {len(trailing)} unexpected trailing "
            f"bytes {trailing.hex()} (full body {body.hex()})")
        av = [v for v in versions if v[0] == wire.API_VERSIONS]
        assert av, f"ApiVersions v{version} error response does not list ApiVersions (18): {versions}"
        _, vmin, vmax = av[0]
        assert vmin == 0 and vmax >= 3 and vmax < version, f"ApiVersions range advertised as {vmin}..{vmax}"
        # Like the Java client, retry on the same connection with a supported version.
        s.sendall(wire.api_versions_request(corr + 1, 0))
        rcorr2, err2, versions2, _ = wire.parse_api_versions_v0(wire.recv_frame(s))
        assert (rcorr2, err2) == (corr + 1, 0), f"ApiVersions v0 retry on the same connection: {rcorr2}, {err2}"
        keys = {k for k, _, _ in versions2}
        for needed in (0, 1, 2, 3, 18, 19, 20):
            assert needed in keys, f"ApiVersions v0 does not list api key {needed}: {sorted(keys)}"
        return f"unsupported ApiVersions v{version}: ok"


FLEXIBLE_FROM = {0: 9, 1: 12, 2: 6, 3: 9, 18: 3, 19: 5, 20: 4, 21: 2, 23: 4, 32: 4, 33: 2, 37: 2,
                 44: 1, 60: 0}


def fuzzed_request(rng, advertised):
    """A well-formed header for a real api key/version followed by a random or mutated body."""
    key = rng.choice(sorted(advertised))
    lo, hi = advertised[key]
    version = rng.randint(lo, hi)
    flexible = version >= FLEXIBLE_FROM.get(key, 99)
    corr = rng.randint(1, 1 << 30)
    body = rng.randbytes(rng.randint(0, 512))
    if rng.random() < 0.5:
        # Plausible prefix: big counts / lengths that a naive decoder would trust.
        body = rng.choice([b"\x7f\xff\xff\xff", b"\xff\xff\xff\xff\xff", b"\x00\x00\x00\x01\x7f\xff",
                           b"\xff\xff\xff\xff\x00\x00"]) + body
    return key, version, corr, wire.frame(wire.request_header(key, version, corr, flexible=flexible) + body)


def abuse_fuzzed_body(broker, rng, advertised=None, sent_log=None):
    key, version, corr, data = fuzzed_request(rng, advertised or {0: (0, 9)})
    if sent_log is not None:
        sent_log.append(f"api {key} v{version}: {data.hex()}")
    with wire.connect(broker.host, broker.port) as s:
        try:
            s.sendall(data)
        except OSError:
            return "reset on send"
        return reply_outcome(s, corr, f"fuzz {key}v{version}", 5.0)


def advertised_versions(broker):
    return wire.advertised_versions(broker.host, broker.port)


def abuse_pipelined_api_versions(broker, rng):
    """Several ApiVersions requests in one write: answers must come back in order."""
    n = rng.randint(2, 20)
    base = rng.randint(1, 1 << 20)
    with wire.connect(broker.host, broker.port) as s:
        s.sendall(b"".join(wire.api_versions_request(base + i, 0) for i in range(n)))
        for i in range(n):
            corr, err, _, _ = wire.parse_api_versions_v0(wire.recv_frame(s))
            assert (corr, err) == (base + i, 0), f"pipelined ApiVersions #{i}: corr {corr} err {err}"
    return f"pipelined {n}: ok"


# -- tests ---------------------------------------------------------------------------------------

def test_garbage_frames(broker):
    rng = _rng("garbage")
    for i in range(50):
        abuse_garbage(broker, rng)
    assert_alive(broker, f"garbage frames (seed {SEED})")


def test_truncated_frames(broker):
    rng = _rng("truncated")
    for i in range(50):
        abuse_truncated(broker, rng)
    assert_alive(broker, f"truncated frames (seed {SEED})")


@pytest.mark.parametrize("size", [MAX_REQUEST_BYTES + 1, 0x7FFFFFFF, -1, -2147483648])
def test_huge_or_negative_length_prefix(broker, size):
    abuse_huge_length(broker, None, size)
    assert_alive(broker, f"length prefix {size}")


def test_unknown_api_key(broker):
    rng = _rng("unknown")
    for _ in range(10):
        abuse_unknown_api_key(broker, rng)
    assert_alive(broker, "unknown api keys")


@pytest.mark.parametrize("version", [127, 999, 32767])
def test_unsupported_api_versions_version(broker, version):
    check_unsupported_api_versions(broker, version, 77)
    assert_alive(broker, f"ApiVersions v{version}")


def test_fuzzed_request_bodies(broker):
    rng = _rng("fuzz")
    adv = advertised_versions(broker)
    sent = []
    for i in range(400):
        try:
            abuse_fuzzed_body(broker, rng, adv, sent)
        except OSError:
            pass
        if not broker.alive():
            time.sleep(0.5)
            pytest.fail(f"broker died (exit status {broker.proc.returncode}) after fuzzed request #{i} "
                        f"(TERN_FUZZ_SEED={SEED}); last frame sent (length-prefixed, hex):\n{sent[-1]}\n"
                        f"broker log tail:\n{broker.log_tail(3000)}")
    assert_alive(broker, f"fuzzed request bodies (seed {SEED})")


def test_many_idle_connections_do_not_block_clients(broker):
    import confluent_kafka as ck
    from test_confluent import consume_all, create_topic, admin_for

    create_topic(admin_for(broker), "idle-conns", 1)
    socks = []
    try:
        for i in range(300):
            s = wire.connect(broker.host, broker.port)
            if i % 2:
                s.sendall(b"\x00\x00")  # half a length prefix, then silence
            socks.append(s)
        p = ck.Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "message.timeout.ms": 30000})
        errors = []
        for i in range(1000):
            p.produce("idle-conns", value=f"seq={i:07d};i".encode(), on_delivery=lambda e, m: e and errors.append(e))
        assert p.flush(60) == 0 and not errors, f"produce with 300 idle connections open: {errors[:5]}"
        del p
        recs, _, _ = consume_all(broker.bootstrap, "idle-conns", 1)
        assert [r.value for r in recs] == [f"seq={i:07d};i" for i in range(1000)]
    finally:
        for s in socks:
            s.close()
    assert_alive(broker, "300 idle connections")


def test_pipelined_requests(broker):
    abuse_pipelined_api_versions(broker, _rng("pipe"))


def test_concurrent_abuse_while_clients_work(broker):
    import confluent_kafka as ck
    from test_confluent import admin_for, consume_all, consumer_for, create_topic

    topic = "robust"
    nparts = 3
    create_topic(admin_for(broker), topic, nparts)
    adv = advertised_versions(broker)

    stop = threading.Event()
    abuse_results = []
    abuse_errors = []

    def one(i):
        rng = _rng(f"conc-{i}")
        kind = i % 7
        try:
            if kind == 0:
                return abuse_garbage(broker, rng)
            if kind == 1:
                return abuse_truncated(broker, rng)
            if kind == 2:
                return abuse_huge_length(broker, rng)
            if kind == 3:
                return abuse_unknown_api_key(broker, rng)
            if kind == 4:
                return check_unsupported_api_versions(broker, rng.choice([100, 999, 32767]), i)
            if kind == 5:
                return abuse_pipelined_api_versions(broker, rng)
            return abuse_fuzzed_body(broker, rng, adv)
        except AssertionError as e:
            abuse_errors.append(f"abuse #{i} (kind {kind}): {e}")
        except OSError as e:
            # Connection-level failures are acceptable reactions to abuse, except refusal to connect.
            if isinstance(e, ConnectionRefusedError):
                abuse_errors.append(f"abuse #{i}: connection refused - broker gone? {e}")
            return f"oserror {e!r}"

    def abuse_all():
        try:
            with ThreadPoolExecutor(max_workers=16) as ex:
                abuse_results.extend(ex.map(one, range(700)))
        finally:
            stop.set()

    abuser = threading.Thread(target=abuse_all, daemon=True)
    abuser.start()

    # Meanwhile: produce in rounds and consume them back through a live consumer.
    errors = []
    producer = ck.Producer({"bootstrap.servers": broker.bootstrap, "partitioner": "murmur2_random",
                            "acks": "all", "linger.ms": 2, "message.timeout.ms": 60000})
    consumer = consumer_for(broker.bootstrap)
    consumer.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in range(nparts)])
    produced = 0
    consumed = {}
    deadline = Deadline(300, "produce/consume under concurrent abuse")
    rounds = 0
    try:
        while not stop.is_set() or rounds < 3:
            deadline.check(f"(round {rounds}, produced {produced}, consumed {len(consumed)})")
            for _ in range(500):
                producer.produce(topic, key=f"key-{produced % 50}".encode(), value=f"seq={produced:07d};r".encode(),
                                 on_delivery=lambda err, msg: err and errors.append(err))
                produced += 1
            left = producer.flush(60)
            assert broker.alive(), (f"broker died during concurrent abuse (TERN_FUZZ_SEED={SEED}); "
                                    f"log tail:\n{broker.log_tail(3000)}")
            assert left == 0 and not errors, f"produce under abuse failed: left={left} errors={errors[:5]}"
            while len(consumed) < produced:
                deadline.check(f"(consumed {len(consumed)} of {produced})")
                for m in consumer.consume(num_messages=1000, timeout=0.5):
                    assert not m.error(), f"consumer error under abuse: {m.error()}"
                    s = seq_of(m.value().decode())
                    assert s not in consumed, f"seq {s} delivered twice to the live consumer"
                    consumed[s] = (m.partition(), m.offset())
            rounds += 1
    finally:
        consumer.close()
        stop.wait(timeout=300)
        abuser.join(timeout=300)

    assert not abuser.is_alive(), "abuse threads did not finish"
    assert not abuse_errors, f"{len(abuse_errors)} abuse checks failed (seed {SEED}):\n  " + "\n  ".join(abuse_errors[:15])
    assert_alive(broker, f"concurrent abuse (seed {SEED})")

    # Data intact: a fresh read returns exactly what was produced, at the offsets first seen.
    recs, starts, ends = consume_all(broker.bootstrap, topic, nparts)
    again = {seq_of(r.value): (r.partition, r.offset) for r in recs}
    assert len(recs) == produced and again == consumed, (
        f"data changed after abuse: {len(recs)} records vs {produced} produced; "
        f"diff e.g. {[(s, consumed.get(s), again.get(s)) for s in set(consumed) ^ set(again)][:5]}")
