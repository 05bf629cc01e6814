"""Forged v2 record batches and raw Produce v8 requests, for tests that send what a broken or
hostile client would. Everything is built byte by byte with correct CRCs unless a test breaks
them on purpose; responses are parsed strictly."""

import gzip
import struct

import wire

API_PRODUCE = 0

# Kafka error codes the validation tests expect.
CORRUPT_MESSAGE = 2
MESSAGE_TOO_LARGE = 10
INVALID_TIMESTAMP = 32
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
UNKNOWN_PRODUCER_ID = 59
INVALID_RECORD = 87

ATTR_GZIP = 1
ATTR_LOG_APPEND_TIME = 1 << 3
ATTR_TRANSACTIONAL = 1 << 4
ATTR_CONTROL = 1 << 5

_CRC32C_TABLE = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC32C_TABLE.append(_c)


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def varint(n: int) -> bytes:
    """Zigzag varint, as the record format encodes lengths, deltas and counts."""
    z = (n << 1) ^ (n >> 63)
    z &= (1 << 64) - 1
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _bytes_field(b):
    if b is None:
        return varint(-1)
    return varint(len(b)) + b


def record(offset_delta, timestamp_delta=0, key=b"k", value=b"v", headers=(), raw_headers=None, tail=b""):
    """One record, length-prefixed. `headers` are (key bytes, value bytes) pairs; `raw_headers`
    replaces the whole header section (count included); `tail` is appended inside the record."""
    body = bytes([0]) + varint(timestamp_delta) + varint(offset_delta) + _bytes_field(key) + _bytes_field(value)
    if raw_headers is not None:
        body += raw_headers
    else:
        body += varint(len(headers))
        for hk, hv in headers:
            body += varint(len(hk)) + hk + _bytes_field(hv)
    body += tail
    return varint(len(body)) + body


def batch(records, base_timestamp, max_timestamp=None, count=None, attributes=0, producer_id=-1,
          producer_epoch=-1, base_sequence=-1, base_offset=0, compress_gzip=False):
    """A v2 batch around already encoded `records` (a list of `record(...)` results), CRC correct.
    `count` defaults to len(records); lastOffsetDelta is count - 1."""
    n = len(records) if count is None else count
    section = b"".join(records)
    if compress_gzip:
        section = gzip.compress(section)
        attributes |= ATTR_GZIP
    if max_timestamp is None:
        max_timestamp = base_timestamp
    after_crc = struct.pack(">hiqqqhii", attributes, n - 1, base_timestamp, max_timestamp, producer_id,
                            producer_epoch, base_sequence, n) + section
    crc = crc32c(after_crc)
    # batchLength counts from the partition leader epoch to the end.
    body = struct.pack(">ibI", -1, 2, crc) + after_crc
    return struct.pack(">qi", base_offset, len(body)) + body


def simple_batch(n, base_timestamp, key=b"k", **kw):
    return batch([record(i, 0, key=key, value=b"v%d" % i) for i in range(n)], base_timestamp, **kw)


# -- Produce v8 (the first version with KIP-467 record errors; not flexible) -------------------

def produce_request(correlation_id, partitions, acks=-1, transactional_id=None, timeout_ms=30000):
    """`partitions`: [(topic, partition, records bytes)]."""
    by_topic = {}
    for topic, p, records in partitions:
        by_topic.setdefault(topic, []).append((p, records))
    body = wire._nullable_string(transactional_id) + struct.pack(">hi", acks, timeout_ms)
    body += struct.pack(">i", len(by_topic))
    for topic, parts in by_topic.items():
        body += wire.string(topic) + struct.pack(">i", len(parts))
        for p, records in parts:
            body += struct.pack(">ii", p, len(records)) + records
    return wire.frame(wire.request_header(API_PRODUCE, 8, correlation_id) + body)


def parse_produce_v8(frame):
    """{(topic, partition): {error_code, base_offset, log_append_time, log_start_offset,
    record_errors: [(batch_index, message)], error_message}}"""
    r = wire.Reader(frame)
    r.take(">i")  # correlation id
    out = {}
    for _ in range(r.take(">i")):
        topic = r.string()
        for _ in range(r.take(">i")):
            index, error_code, base_offset, append_time, log_start = r.take(">ihqqq")
            record_errors = []
            for _ in range(r.take(">i")):
                batch_index = r.take(">i")
                record_errors.append((batch_index, r.string()))
            out[(topic, index)] = {
                "error_code": error_code,
                "base_offset": base_offset,
                "log_append_time": append_time,
                "log_start_offset": log_start,
                "record_errors": record_errors,
                "error_message": r.string(),
            }
    r.take(">i")  # throttle time
    assert r.o == len(frame), f"{len(frame) - r.o} trailing bytes in a Produce v8 response"
    return out


def produce(broker, topic, records, partition=0, acks=-1, transactional_id=None):
    """Sends one partition's records with Produce v8 and returns that partition's result."""
    with wire.connect(broker.host, broker.port) as s:
        s.sendall(produce_request(7, [(topic, partition, records)], acks, transactional_id))
        result = parse_produce_v8(wire.recv_frame(s))
    return result[(topic, partition)]
