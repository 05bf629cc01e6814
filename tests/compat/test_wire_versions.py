"""Every advertised version of ListOffsets must be answered (older clients such as
kcat/librdkafka 2.0 use ListOffsets v2)."""

import struct

import wire
from wire import _compact_string, _uvarint

API_LIST_OFFSETS = 2


def advertised(broker):
    return wire.advertised_versions(broker.host, broker.port)


def list_offsets_request(version, corr, topic, partition, ts):
    flexible = version >= 6
    body = struct.pack(">i", -1)
    if version >= 2:
        body += b"\x00"  # isolation_level
    if flexible:
        body += _uvarint(2) + _compact_string(topic) + _uvarint(2)
    else:
        body += struct.pack(">i", 1) + struct.pack(">h", len(topic)) + topic.encode() + struct.pack(">i", 1)
    body += struct.pack(">i", partition)
    if version >= 4:
        body += struct.pack(">i", -1)  # current_leader_epoch
    body += struct.pack(">q", ts)
    if version == 0:
        body += struct.pack(">i", 1)  # max_num_offsets
    if flexible:
        body += _uvarint(0) + _uvarint(0) + _uvarint(0)  # partition, topic, request tagged fields
    return wire.frame(wire.request_header(API_LIST_OFFSETS, version, corr, flexible=flexible) + body)


def parse_list_offsets_nonflexible(version, body):
    """Response header v0 + ListOffsets v1..v5 body with one topic/partition -> (corr, err, ts, offset)."""
    off = 0
    (corr,) = struct.unpack_from(">i", body, off); off += 4
    if version >= 2:
        off += 4  # throttle_time_ms
    (ntopics,) = struct.unpack_from(">i", body, off); off += 4
    assert ntopics == 1, f"ListOffsets v{version}: {ntopics} topics in response: {body.hex()}"
    (nlen,) = struct.unpack_from(">h", body, off); off += 2 + nlen
    (nparts,) = struct.unpack_from(">i", body, off); off += 4
    assert nparts == 1, f"ListOffsets v{version}: {nparts} partitions in response: {body.hex()}"
    _, err, ts, offset = struct.unpack_from(">ihqq", body, off); off += 22
    if version >= 4:
        off += 4  # leader_epoch
    assert off == len(body), f"ListOffsets v{version}: {len(body) - off} trailing bytes: {body.hex()}"
    return corr, err, ts, offset


def test_list_offsets_every_advertised_version(broker):
    import confluent_kafka as ck

    from checks import base_timestamp_ms

    topic = "wire-lo"
    base = base_timestamp_ms()
    p = ck.Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(3):
        p.produce(topic, value=b"v%d" % i, partition=0, timestamp=base + i)
    assert p.flush(30) == 0
    del p

    lo, hi = advertised(broker)[API_LIST_OFFSETS]
    failures = []
    for version in range(max(lo, 1), hi + 1):
        for ts, want_offset in ((-1, 3), (-2, 0), (base + 1, 1)):
            corr = 1000 + version
            try:
                with wire.connect(broker.host, broker.port) as s:
                    s.sendall(list_offsets_request(version, corr, topic, 0, ts))
                    body = wire.recv_frame(s)
            except (OSError, wire.ConnectionClosed) as e:
                failures.append(f"ListOffsets v{version} timestamp {ts}: no response ({e})")
                continue
            if version < 6:
                rcorr, err, _, offset = parse_list_offsets_nonflexible(version, body)
                if (rcorr, err, offset) != (corr, 0, want_offset):
                    failures.append(f"ListOffsets v{version} timestamp {ts}: corr {rcorr} error {err} "
                                    f"offset {offset}, expected corr {corr} error 0 offset {want_offset}")
            else:
                (rcorr,) = struct.unpack_from(">i", body, 0)
                if rcorr != corr:
                    failures.append(f"ListOffsets v{version}: correlation id {rcorr}, sent {corr}")
    assert not failures, "\n".join(failures)
    assert broker.alive()
