#!/usr/bin/env python3
"""Producer benchmarks with librdkafka (through confluent-kafka) against a running broker.

    scripts/bench_librdkafka.py throughput -b 127.0.0.1:9092 --bytes 2e9 --duration 20 --broker-pid PID
    scripts/bench_librdkafka.py latency    -b 127.0.0.1:9092 --rate 1000 --duration 15 --broker-pid PID

throughput: 1 KiB records, acks=1, no compression, linger.ms=5, batch.size ~1 MB, a large
  queue.buffering.max.kbytes; reports records/s, MB/s and (with --broker-pid) broker CPU-s/GB.
latency: a fixed produce rate (default 1000 records/s), linger.ms=0, acks=1; reports
  p50/p99/p99.9/max of delivery-report latency, i.e. from just before produce() until the
  delivery callback runs (the script polls librdkafka continuously between sends, so the
  callback runs as soon as librdkafka has the acknowledgement).

Units: MB = 10^6 bytes, GB = 10^9 bytes, over record payload only. The last line of each
test is `BENCH_RESULT key=value ...` in the same format as `tern bench`.
"""

import argparse
import math
import os
import random
import sys
import time

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic


def cpu_secs(pid):
    """utime + stime of pid in seconds (from /proc/PID/stat)."""
    if pid is None:
        return None
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime/stime are fields 14/15.
    ticks = int(fields[11]) + int(fields[12])
    try:
        hz = os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError):
        hz = 100
    return ticks / hz


def parse_size(s):
    s = s.strip()
    units = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "ki": 1024, "mi": 1024**2, "gi": 1024**3}
    i = len(s)
    while i > 0 and not (s[i - 1].isdigit() or s[i - 1] == "."):
        i -= 1
    num, unit = s[:i], s[i:].lower().rstrip("b")
    if unit not in units:
        # plain float like 2e9
        return int(float(s))
    return int(float(num) * units[unit])


def percentile(sorted_vals, q):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_vals:
        return None
    rank = min(max(math.ceil(q * len(sorted_vals)), 1), len(sorted_vals))
    return sorted_vals[rank - 1]


def fmt(v, prec):
    return "na" if v is None else f"{v:.{prec}f}"


def ensure_topic(bootstrap, topic, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    md = admin.list_topics(timeout=10)
    if topic in md.topics and md.topics[topic].error is None:
        return
    futs = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    for f in futs.values():
        try:
            f.result(timeout=30)
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    deadline = time.time() + 10
    while time.time() < deadline:
        md = admin.list_topics(topic, timeout=5)
        if topic in md.topics and md.topics[topic].error is None and md.topics[topic].partitions:
            return
        time.sleep(0.1)
    raise SystemExit(f"topic {topic} did not appear in metadata")


def payloads(size, n=64):
    rnd = random.Random(42)
    letters = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return [bytes(rnd.choice(letters) for _ in range(size)) for _ in range(n)]


def result_line(kind, topic, records, nbytes, elapsed, lat_kind, lats_ms, cpu, errors, extra):
    lats_ms = sorted(lats_ms)
    gb = nbytes / 1e9
    parts = [
        "BENCH_RESULT",
        f"kind={kind}",
        f"topic={topic}",
        f"records={records}",
        f"bytes={nbytes}",
        f"elapsed_s={elapsed:.3f}",
        f"records_per_s={records / elapsed:.0f}",
        f"mb_per_s={nbytes / 1e6 / elapsed:.1f}",
        f"latency={lat_kind}",
        f"p50_ms={fmt(percentile(lats_ms, 0.50), 3)}",
        f"p99_ms={fmt(percentile(lats_ms, 0.99), 3)}",
        f"p999_ms={fmt(percentile(lats_ms, 0.999), 3)}",
        f"max_ms={fmt(lats_ms[-1] if lats_ms else None, 3)}",
        f"broker_cpu_s={fmt(cpu, 2)}",
        f"broker_cpu_s_per_gb={fmt(cpu / gb if cpu is not None and gb > 0 else None, 3)}",
        f"errors={errors}",
    ]
    parts += [f"{k}={v}" for k, v in extra]
    return " ".join(parts)


def throughput(args):
    ensure_topic(args.bootstrap, args.topic, args.partitions)
    conf = {
        "bootstrap.servers": args.bootstrap,
        "acks": "1",
        "compression.type": "none",
        "linger.ms": args.linger_ms,
        "batch.size": args.batch_size,
        "queue.buffering.max.kbytes": 2 * 1024 * 1024,  # 2 GiB
        "queue.buffering.max.messages": 2_000_000,
        "message.max.bytes": max(1_000_000, args.batch_size + 65536),
        "enable.idempotence": False,
    }
    state = {"ok": 0, "err": 0, "first_err": None}

    def on_delivery(err, msg):
        if err is None:
            state["ok"] += 1
        else:
            state["err"] += 1
            if state["first_err"] is None:
                state["first_err"] = str(err)

    conf["on_delivery"] = on_delivery
    p = Producer(conf)
    vals = payloads(args.record_size)
    nvals = len(vals)
    target = args.records if args.records else -(-parse_size(args.bytes) // args.record_size)
    # Warm-up: metadata and connection outside the measurement.
    p.produce(args.topic, vals[0])
    p.flush(30)
    state["ok"] = 0

    cpu0 = cpu_secs(args.broker_pid)
    start = time.perf_counter()
    stop_at = start + args.duration if args.duration > 0 else math.inf
    sent = 0
    produce = p.produce
    topic = args.topic
    last_report = start
    while sent < target:
        if (sent & 1023) == 0:
            now = time.perf_counter()
            if now >= stop_at:
                break
            if args.progress and now - last_report >= 2:
                last_report = now
                print(f"  {sent} sent, {state['ok']} acked, {now - start:.1f} s", file=sys.stderr)
        try:
            produce(topic, vals[sent % nvals])
            sent += 1
        except BufferError:
            p.poll(0.001)
            continue
        if (sent & 255) == 0:
            p.poll(0)
    remaining = p.flush(120)
    elapsed = time.perf_counter() - start
    cpu1 = cpu_secs(args.broker_pid)
    cpu = None if cpu0 is None else cpu1 - cpu0
    if remaining:
        print(f"warning: {remaining} records still queued after flush", file=sys.stderr)
    if state["first_err"]:
        print(f"error: {state['err']} records failed; first: {state['first_err']}", file=sys.stderr)
    ok = state["ok"]
    nbytes = ok * args.record_size
    print(f"librdkafka produce: {ok} records, {nbytes / 1e6:.1f} MB in {elapsed:.2f} s = "
          f"{ok / elapsed:.0f} records/s, {nbytes / 1e6 / elapsed:.1f} MB/s")
    if cpu is not None:
        print(f"broker CPU: {cpu:.2f} s ({cpu / elapsed * 100:.0f}% of one core), "
              f"{cpu / (nbytes / 1e9):.3f} CPU-s/GB")
    print(result_line("librdkafka-produce", topic, ok, nbytes, elapsed, "none", [], cpu, state["err"], [
        ("record_size", args.record_size), ("acks", 1), ("linger_ms", args.linger_ms),
        ("batch_size", args.batch_size), ("compression", "none"), ("librdkafka", _libversion()),
    ]))
    return 0 if state["err"] == 0 else 1


def latency(args):
    ensure_topic(args.bootstrap, args.topic, args.partitions)
    conf = {
        "bootstrap.servers": args.bootstrap,
        "acks": "1",
        "compression.type": "none",
        "linger.ms": 0,
        "enable.idempotence": False,
    }
    p = Producer(conf)
    vals = payloads(args.record_size)
    lats = []
    state = {"err": 0, "first_err": None}

    def make_cb(t0):
        def cb(err, msg):
            if err is None:
                lats.append((time.perf_counter() - t0) * 1e3)
            else:
                state["err"] += 1
                if state["first_err"] is None:
                    state["first_err"] = str(err)
        return cb

    p.produce(args.topic, vals[0])
    p.flush(30)

    target = args.records if args.records else int(args.rate * args.duration)
    interval = 1.0 / args.rate
    cpu0 = cpu_secs(args.broker_pid)
    start = time.perf_counter()
    for i in range(target):
        due = start + i * interval
        # Serve delivery reports while waiting for the next send slot.
        while True:
            now = time.perf_counter()
            if now >= due:
                break
            p.poll(due - now)
        t0 = time.perf_counter()
        p.produce(args.topic, vals[i % len(vals)], on_delivery=make_cb(t0))
        p.poll(0)
    p.flush(30)
    elapsed = time.perf_counter() - start
    cpu1 = cpu_secs(args.broker_pid)
    cpu = None if cpu0 is None else cpu1 - cpu0
    n = len(lats)
    nbytes = n * args.record_size
    s = sorted(lats)
    print(f"librdkafka latency at {args.rate} records/s: {n} records; delivery-report latency "
          f"p50 {fmt(percentile(s, .5), 3)} ms, p99 {fmt(percentile(s, .99), 3)} ms, "
          f"p99.9 {fmt(percentile(s, .999), 3)} ms, max {fmt(s[-1] if s else None, 3)} ms")
    if state["first_err"]:
        print(f"error: {state['err']} records failed; first: {state['first_err']}", file=sys.stderr)
    print(result_line("librdkafka-latency", args.topic, n, nbytes, elapsed, "per-record-delivery-report",
                      lats, cpu, state["err"], [
                          ("record_size", args.record_size), ("acks", 1), ("linger_ms", 0),
                          ("rate", args.rate), ("librdkafka", _libversion()),
                      ]))
    return 0 if state["err"] == 0 else 1


def _libversion():
    import confluent_kafka
    return confluent_kafka.libversion()[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("test", choices=["throughput", "latency"])
    ap.add_argument("-b", "--bootstrap-server", dest="bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--topic", default=None, help="default: rdkafka-throughput / rdkafka-latency")
    ap.add_argument("--partitions", type=int, default=1, help="partitions if the topic is created")
    ap.add_argument("--record-size", type=int, default=1024)
    ap.add_argument("--records", type=int, default=0, help="record count (overrides --bytes / rate*duration)")
    ap.add_argument("--bytes", default="2G", help="throughput: total payload, e.g. 2G (10^9) or 2GiB")
    ap.add_argument("--duration", type=float, default=0,
                    help="seconds: throughput stops sending after this (0 = no limit); latency runs this long "
                         "(default 15)")
    ap.add_argument("--linger-ms", type=int, default=5, help="throughput only")
    ap.add_argument("--batch-size", type=int, default=1_000_000, help="throughput only")
    ap.add_argument("--rate", type=float, default=1000, help="latency: records/s")
    ap.add_argument("--broker-pid", type=int, default=None)
    ap.add_argument("--progress", action="store_true", help="throughput: progress lines on stderr")
    args = ap.parse_args()
    if args.test == "throughput":
        args.topic = args.topic or "rdkafka-throughput"
        return throughput(args)
    args.topic = args.topic or "rdkafka-latency"
    if args.duration <= 0:
        args.duration = 15
    return latency(args)


if __name__ == "__main__":
    sys.exit(main())
