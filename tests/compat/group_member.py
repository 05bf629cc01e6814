"""One member of a consumer group, run as its own process so a test can kill it with SIGKILL.

    python3 group_member.py --client confluent|kafka-python --bootstrap H:P --topic T --group G \
        [--strategy range|roundrobin|cooperative-sticky] --out FILE

Writes JSON lines to FILE, flushed as they happen, with wall-clock times (one clock for all
processes on the machine):
    {"ev": "assigned" | "revoked" | "lost", "t": ..., "parts": [p, ...]}
    {"ev": "records", "t": ..., "recs": [[p, offset], ...]}
    {"ev": "closed", "t": ...}
Ownership is logged before the client can fetch (assigned) and after it has stopped using the
partitions (revoked), so intervals of different members must not overlap. SIGTERM closes the
consumer cleanly (final commit, LeaveGroup); SIGKILL is the crash case.
"""

import argparse
import json
import signal
import sys
import time

stop = False


def on_term(signum, frame):
    global stop
    stop = True


class Log:
    def __init__(self, path):
        self.f = open(path, "a", buffering=1)

    def write(self, **event):
        event["t"] = time.time()
        self.f.write(json.dumps(event) + "\n")
        self.f.flush()


def run_confluent(args, log):
    from confluent_kafka import Consumer

    conf = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "client.id": args.name,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 500,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "partition.assignment.strategy": args.strategy,
        "fetch.wait.max.ms": 100,
    }
    c = Consumer(conf)
    c.subscribe(
        [args.topic],
        on_assign=lambda _c, parts: log.write(ev="assigned", parts=[p.partition for p in parts]),
        on_revoke=lambda _c, parts: log.write(ev="revoked", parts=[p.partition for p in parts]),
        on_lost=lambda _c, parts: log.write(ev="lost", parts=[p.partition for p in parts]),
    )
    while not stop:
        msgs = c.consume(num_messages=500, timeout=0.2)
        recs = [[m.partition(), m.offset()] for m in msgs if m.error() is None]
        if recs:
            log.write(ev="records", recs=recs)
    c.close()  # commits the final positions and leaves the group; revokes through on_revoke


def run_kafka_python(args, log):
    from kafka import ConsumerRebalanceListener, KafkaConsumer

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            log.write(ev="revoked", parts=[tp.partition for tp in revoked])

        def on_partitions_assigned(self, assigned):
            log.write(ev="assigned", parts=[tp.partition for tp in assigned])

    from kafka.coordinator.assignors.range import RangePartitionAssignor
    from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

    assignor = {"range": RangePartitionAssignor, "roundrobin": RoundRobinPartitionAssignor}[args.strategy]
    c = KafkaConsumer(
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        client_id=args.name,
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        auto_commit_interval_ms=500,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
        partition_assignment_strategy=[assignor],
        fetch_max_wait_ms=100,
    )
    c.subscribe([args.topic], listener=Listener())
    while not stop:
        batches = c.poll(timeout_ms=200, max_records=500)
        recs = [[tp.partition, m.offset] for tp, ms in batches.items() for m in ms]
        if recs:
            log.write(ev="records", recs=recs)
    c.close()  # autocommit=True: commits, then leaves the group


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--client", choices=["confluent", "kafka-python"], required=True)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--strategy", default="range")
    ap.add_argument("--name", default="member")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, on_term)
    log = Log(args.out)
    log.write(ev="started")
    if args.client == "confluent":
        run_confluent(args, log)
    else:
        run_kafka_python(args, log)
    log.write(ev="closed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
