"""Record generation and verification shared by the client suites."""

import time
from collections import defaultdict
from dataclasses import dataclass

from partitioning import java_partition

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
NUM_RECORDS = 100_000
NUM_KEYS = 5000
NUM_PARTITIONS = 6


@dataclass(frozen=True)
class Rec:
    partition: int
    offset: int
    timestamp: int
    key: str
    value: str


def key_for(seq: int) -> str:
    return f"key-{seq % NUM_KEYS}"


def value_for(seq: int) -> str:
    return f"seq={seq:07d};payload-xyz"


def seq_of(value: str) -> int:
    if not value.startswith("seq=") or ";" not in value:
        raise AssertionError(f"unexpected record value {value!r}")
    return int(value[4:value.index(";")])


def base_timestamp_ms() -> int:
    # An hour ago: comfortably inside any retention / timestamp-difference limits.
    return int(time.time() * 1000) - 3_600_000


def ts_for(base: int, seq: int) -> int:
    return base + seq


def to_str(x) -> str:
    if x is None:
        return None
    if isinstance(x, (bytes, bytearray)):
        return bytes(x).decode("utf-8")
    return x


def by_partition(records):
    parts = defaultdict(list)
    for r in records:
        parts[r.partition].append(r)
    for p in parts:
        parts[p].sort(key=lambda r: r.offset)
    return dict(parts)


def verify_records(records, n, num_partitions, base_ts=None, start_offsets=None, what="consumed records"):
    """Check completeness, per-partition order, contiguity and Java-partitioner placement.

    start_offsets: {partition: first expected offset} (default 0 everywhere).
    base_ts: when set, each record's timestamp must be the explicit one produced.
    Returns {partition: [Rec sorted by offset]}.
    """
    start_offsets = start_offsets or {}
    parts = by_partition(records)
    problems = []
    unexpected_parts = sorted(set(parts) - set(range(num_partitions)))
    if unexpected_parts:
        problems.append(f"records on non-existent partitions {unexpected_parts}")
    seen = {}
    for p in range(num_partitions):
        recs = parts.get(p, [])
        first = start_offsets.get(p, 0)
        offsets = [r.offset for r in recs]
        if recs:
            if offsets[0] != first:
                problems.append(f"partition {p}: first offset {offsets[0]}, expected {first}")
            gaps = [(a, b) for a, b in zip(offsets, offsets[1:]) if b != a + 1]
            if gaps:
                problems.append(f"partition {p}: non-contiguous offsets, e.g. {gaps[:5]}")
        last_seq = -1
        for r in recs:
            seq = seq_of(r.value)
            if seq in seen:
                problems.append(f"seq {seq} appears twice: {seen[seq]} and {r}")
                if len(problems) > 30:
                    break
                continue
            seen[seq] = r
            if seq <= last_seq:
                problems.append(f"partition {p}: out of order, seq {seq} at offset {r.offset} after seq {last_seq}")
            last_seq = seq
            if r.key != key_for(seq):
                problems.append(f"seq {seq}: key {r.key!r}, expected {key_for(seq)!r}")
            want_p = java_partition(r.key, num_partitions)
            if want_p != p:
                problems.append(f"key {r.key!r} (seq {seq}) is on partition {p}; Java murmur2 partitioner says {want_p}")
            if base_ts is not None and r.timestamp != ts_for(base_ts, seq):
                problems.append(f"seq {seq} at {p}/{r.offset}: timestamp {r.timestamp}, produced {ts_for(base_ts, seq)}")
            if len(problems) > 30:
                break
    expected = set(range(n)) if not start_offsets else None
    if expected is not None:
        missing = sorted(expected - set(seen))
        if missing:
            problems.append(f"{len(missing)} of {n} records missing, e.g. seqs {missing[:10]}")
        extra = sorted(set(seen) - expected)
        if extra:
            problems.append(f"unexpected seqs {extra[:10]}")
    if problems:
        raise AssertionError(f"{what}: {len(problems)} problem(s):\n  " + "\n  ".join(problems[:30]))
    return parts


def expected_offset_for_time(recs, target_ts):
    """Kafka semantics: earliest offset whose timestamp >= target; None when there is none."""
    for r in recs:
        if r.timestamp >= target_ts:
            return r.offset
    return None


def expected_max_timestamp(recs):
    """(offset, timestamp) of the record with the largest timestamp (earliest such offset)."""
    best = None
    for r in recs:
        if best is None or r.timestamp > best.timestamp:
            best = r
    return (best.offset, best.timestamp) if best else None


def pick_delete_offsets(parts):
    """Delete roughly the first third of each partition (offsets derived from the data)."""
    return {p: recs[len(recs) // 3].offset for p, recs in parts.items() if recs}


def same_records(a_parts, b_parts, what):
    problems = []
    for p in sorted(set(a_parts) | set(b_parts)):
        a = a_parts.get(p, [])
        b = b_parts.get(p, [])
        if a != b:
            if len(a) != len(b):
                problems.append(f"partition {p}: {len(a)} records before vs {len(b)} after")
            else:
                diffs = [(x, y) for x, y in zip(a, b) if x != y]
                problems.append(f"partition {p}: {len(diffs)} records differ, e.g. {diffs[:3]}")
    if problems:
        raise AssertionError(f"{what}:\n  " + "\n  ".join(problems))


def read_back_everything(read, n, nparts, base_ts=None):
    """The first read of a freshly produced topic: it starts at offset 0 everywhere, the high
    watermarks add up to `n` and every record is there (see verify_records). Returns the records
    by partition and the high watermarks."""
    recs, starts, ends = read()
    assert starts == {p: 0 for p in range(nparts)}, f"low watermarks {starts}"
    assert sum(ends.values()) == n, f"high watermarks {ends} do not add up to {n}"
    return verify_records(recs, n, nparts, base_ts=base_ts), ends


def check_delete_records_and_restart(broker, n, nparts, parts, read, delete_records, check_offsets, base_ts=None,
                                     ends=None, after_restart=None):
    """The second half of every client's round trip: DeleteRecords up to a third of each
    partition, read back; restart the broker, read back again. Each time the records kept must be
    exactly those from before and ListOffsets must agree.

    read() -> (records, low watermarks or None, high watermarks or None); delete_records(cut);
    check_offsets(parts, start_offsets); after_restart() e.g. waits for metadata.
    Returns the cut offsets."""
    cut = pick_delete_offsets(parts)
    delete_records(cut)
    kept = {p: [r for r in rs if r.offset >= cut[p]] for p, rs in parts.items()}
    for when in ("after DeleteRecords", "after restart"):
        if when == "after restart":
            broker.restart()
            if after_restart:
                after_restart()
        recs, starts, highs = read()
        assert starts is None or starts == cut, f"low watermarks {when}: {starts}, expected {cut}"
        assert when != "after restart" or highs is None or ends is None or highs == ends, (
            f"high watermarks {when}: {highs}, before {ends}")
        got = verify_records(recs, n, nparts, base_ts=base_ts, start_offsets=cut, what=f"records {when}")
        same_records(kept, got, f"records {when}")
        check_offsets(got, cut)
    return cut


class Deadline:
    def __init__(self, seconds, what):
        self.end = time.monotonic() + seconds
        self.seconds = seconds
        self.what = what

    def remaining(self):
        return self.end - time.monotonic()

    def check(self, detail=""):
        if time.monotonic() > self.end:
            raise AssertionError(f"{self.what} did not finish within {self.seconds}s {detail}")
