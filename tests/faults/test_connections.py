"""Hostile and broken connections: slow senders, idle connections, connection limits, bad
frames, huge fetch responses. The broker's memory stays bounded, it keeps serving well-behaved
clients, and every connection it closes is logged with why."""

import os
import re
import socket
import struct
import threading
import time

import wire
from kafka.protocol.old.fetch import FetchRequest_v4, FetchResponse_v4

MB = 1 << 20


def plain_log(broker, max_bytes=1 << 20):
    """The broker's log without terminal colour codes."""
    return re.sub(r"\x1b\[[0-9;]*m", "", broker.log_tail(max_bytes=max_bytes))


def rss_kb(broker):
    with open(f"/proc/{broker.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def round_trip(broker, topic, n=20):
    """A well-behaved client: produce n records and read them back."""
    import confluent_kafka as ck

    p = ck.Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(n):
        p.produce(topic, value=b"v%d" % i)
    assert p.flush(30) == 0
    c = ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"rt-{topic}",
                     "auto.offset.reset": "earliest"})
    try:
        c.subscribe([topic])
        got = []
        deadline = time.monotonic() + 60
        while len(got) < n and time.monotonic() < deadline:
            m = c.poll(1)
            if m is not None and not m.error():
                got.append(m.value())
        assert got == [b"v%d" % i for i in range(n)]
    finally:
        c.close()


def frame_start(size, api_key=0, version=9, client_id="slow-sender"):
    """A size prefix and the start of a request header: what a slow sender has sent first."""
    cid = client_id.encode()
    return struct.pack(">ihhih", size, api_key, version, 1, len(cid)) + cid


def test_slow_senders_cannot_pin_memory(broker_factory):
    # Requests of up to 20 MB; 20 MB of them buffered at once.
    b = broker_factory({"socket.request.max.bytes": 20 * MB, "queued.max.request.bytes": 20 * MB})
    round_trip(b, "before")
    base = rss_kb(b)
    senders = []
    for i in range(10):
        s = wire.connect(b.host, b.port)
        s.sendall(frame_start(20 * MB, client_id=f"slow-{i}"))
        senders.append(s)
    chunk = b"\0" * MB

    def push(s):
        # 15 of each 20 MB announced; a send the broker does not read times out.
        s.settimeout(10)
        try:
            for _ in range(15):
                s.sendall(chunk)
        except OSError:
            pass

    threads = [threading.Thread(target=push, args=(s,)) for s in senders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # The slow senders hold their connections, and a normal client is served meanwhile.
    round_trip(b, "during")
    grown_mb = (rss_kb(b) - base) / 1024
    # 150 MB were sent; one 20 MB request may be buffered at a time.
    assert grown_mb < 60, f"broker RSS grew by {grown_mb:.0f} MB while slow senders sent 150 MB"
    for s in senders:
        s.close()
    assert b.alive()
    round_trip(b, "after")


def test_idle_connections_are_closed_but_not_while_a_request_is_in_hand(broker_factory):
    b = broker_factory({"connections.max.idle.ms": 1000})
    round_trip(b, "idle-topic", n=1)
    idle = wire.connect(b.host, b.port)
    # A fetch that long-polls for 3 s keeps its connection although it sends nothing meanwhile.
    busy = wire.connect(b.host, b.port)
    req = FetchRequest_v4(replica_id=-1, max_wait_ms=3000, min_bytes=MB, max_bytes=MB, isolation_level=0,
                          topics=[("idle-topic", [(0, 1, MB)])])
    req.with_header(correlation_id=77, client_id="long-poller")
    busy.sendall(req.encode(header=True, framed=True))
    busy.settimeout(30)
    body = wire.recv_frame(busy)
    assert struct.unpack_from(">i", body, 0)[0] == 77
    closed, _ = wire.wait_closed(idle, timeout=30)
    assert closed, "an idle connection was not closed after connections.max.idle.ms"
    idle.close()
    busy.close()
    assert "closed idle connection" in plain_log(b)


def api_versions_answered(s, timeout):
    s.settimeout(timeout)
    s.sendall(wire.api_versions_request(9, 0))
    try:
        _, err, _, _ = wire.parse_api_versions_v0(wire.recv_frame(s))
        return err == 0
    except (socket.timeout, wire.ConnectionClosed, ConnectionResetError):
        return False


def test_max_connections_per_ip(broker_factory):
    b = broker_factory({"max.connections.per.ip": 3})
    # The harness's readiness probe may still hold a slot until the broker sees it closed.
    held = []
    deadline = time.monotonic() + 30
    while len(held) < 3:
        s = wire.connect(b.host, b.port)
        if api_versions_answered(s, 10):
            held.append(s)
        else:
            s.close()
            assert time.monotonic() < deadline, "three connections from one address were never all served"
            time.sleep(0.1)
    extra = wire.connect(b.host, b.port)
    closed, _ = wire.wait_closed(extra, timeout=30)
    assert closed, "a 4th connection from one address was accepted with max.connections.per.ip=3"
    extra.close()
    held.pop().close()
    deadline = time.monotonic() + 30
    while True:  # the slot is freed once the broker has seen the close
        s = wire.connect(b.host, b.port)
        if api_versions_answered(s, 10):
            s.close()
            break
        s.close()
        assert time.monotonic() < deadline, "a freed slot was not reused"
        time.sleep(0.1)
    for s in held:
        s.close()
    assert "max.connections.per.ip" in plain_log(b)


def test_max_connections_makes_new_connections_wait(broker_factory):
    b = broker_factory({"max.connections": 2})
    held = [wire.connect(b.host, b.port) for _ in range(2)]
    assert all(api_versions_answered(s, 10) for s in held)
    waiting = wire.connect(b.host, b.port)  # queued by the kernel, not accepted
    assert not api_versions_answered(waiting, 2), "a 3rd connection was served with max.connections=2"
    held.pop().close()
    waiting.settimeout(30)
    _, err, _, _ = wire.parse_api_versions_v0(wire.recv_frame(waiting))
    assert err == 0
    waiting.close()
    for s in held:
        s.close()
    assert "max.connections reached" in plain_log(b)


def test_closed_connections_are_logged_with_peer_client_and_api(broker_factory):
    b = broker_factory({"socket.request.max.bytes": MB})
    s = wire.connect(b.host, b.port)
    s.sendall(frame_start(2 * MB, client_id="big-sender") + b"\0" * 100)
    assert wire.wait_closed(s, timeout=30)[0]
    s.close()
    s = wire.connect(b.host, b.port)
    s.sendall(wire.frame(wire.request_header(0, 99, 5, client_id="future-client") + b"\0" * 16))
    assert wire.wait_closed(s, timeout=30)[0]
    s.close()
    s = wire.connect(b.host, b.port)
    s.sendall(wire.frame(wire.request_header(3, 1, 6, client_id="garbage-client") + b"\xff" * 3))
    assert wire.wait_closed(s, timeout=30)[0]
    s.close()
    log = plain_log(b)
    assert "exceeds socket.request.max.bytes" in log and "big-sender" in log, log
    assert "unsupported version 99 of Produce" in log and "future-client" in log, log
    assert "bad Metadata v1 request" in log and "garbage-client" in log, log
    assert "peer=127.0.0.1:" in log
    # A flood of bad frames is rate-limited, not logged line for line.
    before = log.count("closed connection")
    for _ in range(60):
        s = wire.connect(b.host, b.port)
        s.sendall(wire.frame(wire.request_header(0, 99, 5, client_id="flooder") + b"\0" * 16))
        wire.wait_closed(s, timeout=30)
        s.close()
    logged = plain_log(b).count("closed connection") - before
    assert 0 < logged < 60, f"{logged} lines for 60 bad connections"
    assert b.alive()


def test_fetch_responses_are_capped_by_fetch_max_bytes(broker_factory):
    import confluent_kafka as ck
    from confluent_kafka.admin import AdminClient, NewTopic

    b = broker_factory({"fetch.max.bytes": MB})
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.create_topics([NewTopic("wide", 8, 1)])["wide"].result(30)
    p = ck.Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 50})
    value = os.urandom(50_000)
    for partition in range(8):
        for _ in range(12):
            p.produce("wide", value=value, partition=partition)
    assert p.flush(60) == 0
    # One small request asking every partition for as much as the protocol allows.
    biggest = 2**31 - 1
    req = FetchRequest_v4(replica_id=-1, max_wait_ms=0, min_bytes=0, max_bytes=biggest, isolation_level=0,
                          topics=[("wide", [(i, 0, biggest) for i in range(8)])])
    req.with_header(correlation_id=3, client_id="greedy")
    with wire.connect(b.host, b.port, timeout=30) as s:
        s.sendall(req.encode(header=True, framed=True))
        body = wire.recv_frame(s)
    response = FetchResponse_v4.decode(body[4:])
    sizes = [len(part[-1] or b"") for topic in response.topics for part in topic[1]]
    total = sum(sizes)
    # 4.8 MB are there; a response holds fetch.max.bytes (the first batch may exceed it alone).
    assert 0 < total <= 2 * MB, f"Fetch response carried {total} bytes of records with fetch.max.bytes=1 MiB"
    assert len(body) < 3 * MB
