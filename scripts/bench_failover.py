#!/usr/bin/env python3
"""Leader kill to producer resuming, on a local 3-node cluster (`tern cluster up`): a
confluent-kafka producer sends continuously with acks=all (idempotent) to an RF 3 topic;
the leader of partition 0 is killed (-9) and restarted, TRIALS times; each trial's gap is the
time from the last ack on partition 0 before the kill to the first after it.

    python3 scripts/bench_failover.py [--trials 5] [--session-ms 4000] [--heartbeat-ms 500]

Needs TERN_BIN (default target/release/tern) and confluent-kafka. Prints one line per trial and
the summary; bounded: each trial gives up after 60 s.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "cluster"))

from cluster import Cluster  # noqa: E402
from records import ContinuousProducer, create_replicated_topic  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--session-ms", type=int, default=4000)
    ap.add_argument("--heartbeat-ms", type=int, default=500)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tern-failover-") as d:
        c = Cluster(Path(d) / "cluster", settings={"broker.session.timeout.ms": str(args.session_ms),
                                                   "broker.heartbeat.interval.ms": str(args.heartbeat_ms)})
        c.up()
        try:
            create_replicated_topic(c, "failover-bench", 3)
            producer = ContinuousProducer(c.bootstrap, "failover-bench", 3, interval=0.002)
            producer.start()
            gaps = []
            try:
                for trial in range(args.trials):
                    time.sleep(3)
                    leader = c.leader_of("failover-bench", 0)
                    c.kill9(leader)
                    killed = time.monotonic()
                    deadline = killed + 60
                    while not any(a[0] > killed for a in producer.acks(0)):
                        if time.monotonic() > deadline:
                            sys.exit(f"trial {trial}: no ack within 60 s of killing node {leader}")
                        time.sleep(0.01)
                    before = [a[0] for a in producer.acks(0) if a[0] <= killed]
                    first_after = min(a[0] for a in producer.acks(0) if a[0] > killed)
                    gap = first_after - (before[-1] if before else killed)
                    gaps.append(gap)
                    print(f"trial {trial}: killed node {leader}, acks resumed after {gap:.2f} s", flush=True)
                    c.restart(leader)
                    c.wait_partitions("failover-bench", 3, isr=3, timeout=60, what="full ISR")
            finally:
                producer.stop()
        finally:
            c.down()
    print(f"leader kill to resume (session {args.session_ms} ms, heartbeat {args.heartbeat_ms} ms): "
          f"p50 {statistics.median(gaps):.2f} s, max {max(gaps):.2f} s over {len(gaps)} trials")


if __name__ == "__main__":
    main()
