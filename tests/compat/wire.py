"""Minimal raw Kafka wire-protocol helpers (only what the tests need)."""

import socket
import struct
import time

API_PRODUCE = 0
API_FETCH = 1
API_METADATA = 3
API_VERSIONS = 18

ERR_NONE = 0
ERR_UNSUPPORTED_VERSION = 35


class ConnectionClosed(Exception):
    pass


def _nullable_string(s):
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode("utf-8")
    return struct.pack(">h", len(b)) + b


def _uvarint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _compact_string(s):
    b = s.encode("utf-8")
    return _uvarint(len(b) + 1) + b


def request_header(api_key, api_version, correlation_id, client_id="tern-compat", flexible=False):
    hdr = struct.pack(">hhi", api_key, api_version, correlation_id) + _nullable_string(client_id)
    if flexible:
        hdr += _uvarint(0)  # empty tagged fields
    return hdr


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def api_versions_request(correlation_id, version=0):
    """An ApiVersions request of the given version (header v2 + flexible body for v3+)."""
    if version >= 3:
        body = _compact_string("tern-compat") + _compact_string("1.0") + _uvarint(0)
        return frame(request_header(API_VERSIONS, version, correlation_id, flexible=True) + body)
    return frame(request_header(API_VERSIONS, version, correlation_id))


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionClosed(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def recv_frame(sock):
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    if size < 0 or size > 1 << 30:
        raise AssertionError(f"broker sent an invalid response length prefix {size}")
    return recv_exact(sock, size)


def parse_api_versions_v0(body):
    """Parse a response header v0 + ApiVersions v0 body, strictly.

    Returns (correlation_id, error_code, [(api_key, min_version, max_version)], trailing_bytes).
    """
    if len(body) < 4 + 2 + 4:
        raise AssertionError(f"ApiVersions response too short ({len(body)} bytes): {body.hex()}")
    corr, err, n = struct.unpack_from(">ihi", body, 0)
    off = 10
    if n < 0 or off + 6 * n > len(body):
        raise AssertionError(f"ApiVersions response has bad array length {n} for {len(body)} bytes: {body.hex()}")
    versions = []
    for _ in range(n):
        versions.append(struct.unpack_from(">hhh", body, off))
        off += 6
    return corr, err, versions, body[off:]


def connect(host, port, timeout=10.0):
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(timeout)
    return s


def api_versions_ok(host, port, timeout=5.0):
    """True iff the broker answers an ApiVersions v0 request with error 0."""
    with connect(host, port, timeout) as s:
        s.sendall(api_versions_request(4242, 0))
        corr, err, versions, _ = parse_api_versions_v0(recv_frame(s))
        return corr == 4242 and err == ERR_NONE and len(versions) > 0


def advertised_versions(host, port):
    """{api_key: (min, max)} as the broker's ApiVersions v0 answer advertises them."""
    with connect(host, port) as s:
        s.sendall(api_versions_request(1, 0))
        _, err, versions, _ = parse_api_versions_v0(recv_frame(s))
    assert err == ERR_NONE, f"ApiVersions answered error {err}"
    return {k: (lo, hi) for k, lo, hi in versions}


def wait_closed(sock, timeout):
    """Drain the socket until the peer closes it. Returns (closed: bool, bytes_received)."""
    deadline = time.monotonic() + timeout
    got = 0
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return False, got
        except (ConnectionResetError, BrokenPipeError):
            return True, got
        if not chunk:
            return True, got
        got += len(chunk)
    return False, got


# --------------------------------------------------------------------------- produce, raw
API_INIT_PRODUCER_ID = 22


def string(s):
    """A non-nullable STRING field."""
    b = s.encode("utf-8")
    return struct.pack(">h", len(b)) + b


class Reader:
    """Reads the fields of a response body in order."""

    def __init__(self, b):
        self.b, self.o = b, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.b, self.o)
        self.o += struct.calcsize(fmt)
        return v[0] if len(v) == 1 else v

    def string(self):
        n = self.take(">h")
        if n < 0:
            return None
        s = self.b[self.o:self.o + n].decode()
        self.o += n
        return s

    def int32s(self):
        return [self.take(">i") for _ in range(self.take(">i"))]


def request(host, port, api_key, version, body, timeout=10.0, correlation_id=1):
    """Sends one non-flexible request and returns the response body (after the correlation id)."""
    with connect(host, port, timeout) as s:
        s.sendall(frame(request_header(api_key, version, correlation_id) + body))
        resp = recv_frame(s)
    (corr,) = struct.unpack_from(">i", resp, 0)
    assert corr == correlation_id, f"correlation id {corr} != {correlation_id}"
    return resp[4:]


def init_producer_id(host, port):
    """InitProducerId v0 for an idempotent (non-transactional) producer: (error, id, epoch)."""
    body = _nullable_string(None) + struct.pack(">i", 60000)
    resp = request(host, port, API_INIT_PRODUCER_ID, 0, body)
    _throttle, err, pid, epoch = struct.unpack_from(">ihqh", resp, 0)
    return err, pid, epoch


def record_batch(values, producer_id=-1, producer_epoch=-1, base_sequence=-1, key=b"k", timestamp_ms=None):
    """A v2 record batch (kafka-python's encoder) of one record per value."""
    from kafka.record.default_records import DefaultRecordBatchBuilder

    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=False, producer_id=producer_id,
        producer_epoch=producer_epoch, base_sequence=base_sequence, batch_size=1 << 30)
    ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    for i, v in enumerate(values):
        builder.append(i, timestamp=ts, key=key, value=v, headers=[])
    return bytes(builder.build())


def produce(host, port, topic, partition, records, acks=-1, version=3):
    """Produce v3 of one partition's `records` (raw batch bytes): (error_code, base_offset)."""
    body = _nullable_string(None) + struct.pack(">hi", acks, 30000) + struct.pack(">i", 1) + string(topic)
    body += struct.pack(">i", 1) + struct.pack(">ii", partition, len(records)) + records
    resp = request(host, port, API_PRODUCE, version, body)
    off = 4  # topic count
    (name_len,) = struct.unpack_from(">h", resp, off)
    off += 2 + name_len + 4  # name, partition count
    _index, err, base_offset = struct.unpack_from(">ihq", resp, off)
    return err, base_offset


def fetch(host, port, topic, partition, offset, max_wait_ms, min_bytes=1, timeout=10.0):
    """Fetch v4 of one partition: (error_code, high_watermark, record bytes); the socket waits
    at most `timeout` seconds for the answer."""
    body = struct.pack(">iiiib", -1, max_wait_ms, min_bytes, 1 << 20, 0) + struct.pack(">i", 1) + string(topic)
    body += struct.pack(">i", 1) + struct.pack(">iqi", partition, offset, 1 << 20)
    r = Reader(request(host, port, API_FETCH, 4, body, timeout=timeout))
    r.take(">i")  # throttle_time_ms
    assert r.take(">i") == 1 and r.string() == topic and r.take(">i") == 1
    _index, err, hw, _lso = r.take(">ihqq")
    aborted = r.take(">i")
    assert aborted <= 0, "no transactions, so no aborted transactions"
    n = r.take(">i")
    return err, hw, r.b[r.o:r.o + max(n, 0)]
