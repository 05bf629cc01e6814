"""A workload of real clients against a cluster, everything they observe recorded as a history,
and the checker of the cluster's guarantees over that history.

Workload (`Workload`): confluent-kafka producers with acks=all, one with idempotence and one
without, each sending numbered values `<producer>-<seq>` round-robin over the partitions; group
consumers (one group) that read and commit synchronously every second; an observer that asks
the cluster for the group's committed offsets twice a second. Each observation is an event in
the `History`, kept in memory and written as JSON lines, one event a line, as it happens:

    {"t": seconds since start, "kind": ..., ...}
    ack       producer, idem, p, o, v         a send acknowledged at (partition, offset)
    fail      producer, p, v, err             a send that failed (not acknowledged)
    read      consumer, p, o, v               a record a group consumer was given
    commit    consumer, offsets {p: o}        a commit the coordinator acknowledged
    committed sent, offsets {p: o}            the committed offsets, as asked at `sent`
    fault / heal / note                       what the harness did
    final     p, records {o: v}               the log read back after the faults healed

`check(events)` returns every violation of:
  1. every acknowledged send is in the final log at its acknowledged offset (acks=all,
     min.insync.replicas=2, RF 3: nothing acknowledged is lost);
  2. with idempotence, every value is in the final log once, and a producer's values are in
     send order within a partition;
  3. no consumer read a record that is not in the final log at that offset (no read of a record
     later lost: consumers see only records below the high watermark);
  4. committed offsets never go backwards: each observation is at least every earlier one and
     at least every commit acknowledged before it was asked;
  5. the group read every acknowledged record (consumption resumes from commits across faults).

`python3 tests/cluster/history.py FILE` runs the checker again on a saved history.
"""

import json
import sys
import threading
import time
import uuid
from collections import defaultdict

CHECKS_DOC = __doc__

# A frozen (SIGSTOPped) or cut-off broker keeps its connections open and answers nothing: a
# client notices only when a request times out. librdkafka's defaults (request.timeout.ms 30 s
# for produce, socket.timeout.ms 60 s for the rest, metadata included) would stall a partition
# that long even after the cluster moved its leadership in a few seconds; an application that
# wants to resume within 10 s sets them as here.
#
# socket.timeout.ms (the local timeout of a produce) stays above request.timeout.ms (how long the
# leader waits for its ISR before answering REQUEST_TIMED_OUT): an idempotent librdkafka
# producer whose produce times out locally bumps its epoch (KIP-360) and resends what was in
# flight under the new epoch, where no broker can recognise a batch it already has.
FROZEN_BROKER_TIMEOUTS = {"request.timeout.ms": 5000, "socket.timeout.ms": 6500,
                          "topic.metadata.refresh.interval.ms": 1000}


class History:
    def __init__(self, path, **start):
        self.path = path
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.events = []
        self.file = open(path, "w", buffering=1)  # noqa: SIM115 - closed by close()
        self.add("start", **start)

    def now(self):
        return round(time.monotonic() - self.t0, 4)

    def add(self, kind, **fields):
        ev = {"t": self.now(), "kind": kind, **fields}
        with self.lock:
            self.events.append(ev)
            if not self.file.closed:
                self.file.write(json.dumps(ev) + "\n")
        return ev

    def of(self, kind):
        with self.lock:
            return [e for e in self.events if e["kind"] == kind]

    def close(self):
        with self.lock:
            self.file.close()


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# ------------------------------------------------------------------------------- the workload

class ProducerThread(threading.Thread):
    def __init__(self, history, bootstrap, topic, partitions, name, idempotent, logger, interval=0.005):
        super().__init__(daemon=True, name=f"producer-{name}")
        from confluent_kafka import Producer

        self.h, self.topic, self.partitions, self.pname = history, topic, partitions, name
        self.idempotent, self.interval = idempotent, interval
        conf = {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": idempotent,
                "linger.ms": 5, "message.timeout.ms": 180000, **FROZEN_BROKER_TIMEOUTS,
                "client.id": f"history-{name}"}
        if idempotent:
            # Its state changes (an epoch bump among them) reach the log, and so the history.
            conf["debug"] = "eos"
        if not idempotent:
            conf["max.in.flight.requests.per.connection"] = 5
        self.producer = Producer(conf, logger=logger)
        self.stopping = threading.Event()
        self.sent = 0
        self.left = None
        self.failure = None

    def _on_delivery(self, err, msg):
        v = msg.value().decode()
        if err is None:
            self.h.add("ack", producer=self.pname, idem=self.idempotent, p=msg.partition(), o=msg.offset(), v=v)
        else:
            self.h.add("fail", producer=self.pname, p=msg.partition(), v=v, err=str(err),
                       fatal=bool(err.fatal()))

    def epoch_bumped(self):
        """librdkafka began an epoch bump: what is in flight now may be resent under the new
        epoch (see FROZEN_BROKER_TIMEOUTS)."""
        self.h.add("epoch_bump", producer=self.pname, sent=self.sent)

    def run(self):
        try:
            while not self.stopping.is_set():
                seq = self.sent
                try:
                    self.producer.produce(self.topic, value=f"{self.pname}-{seq:07d}".encode(),
                                          key=f"k{seq}".encode(), partition=seq % self.partitions,
                                          on_delivery=self._on_delivery)
                    self.sent += 1
                except BufferError:
                    pass  # the queue is full while a leader is missing: keep polling
                self.producer.poll(self.interval)
            self.left = self.producer.flush(200)
        except Exception as e:  # noqa: BLE001 - reported by stop()
            self.failure = repr(e)

    def stop(self):
        self.stopping.set()
        self.join(240)
        return f"producer {self.pname}: thread still flushing" if self.is_alive() else self.failure


class ConsumerThread(threading.Thread):
    def __init__(self, history, bootstrap, topic, group, name, logger, commit_every=1.0):
        super().__init__(daemon=True, name=f"consumer-{name}")
        from confluent_kafka import Consumer

        self.h, self.topic, self.cname, self.commit_every = history, topic, name, commit_every
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "client.id": f"history-{name}",
                                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                                  "session.timeout.ms": 10000, "heartbeat.interval.ms": 1000,
                                  **FROZEN_BROKER_TIMEOUTS}, logger=logger)
        self.stopping = threading.Event()
        self.failure = None

    def _commit(self):
        from confluent_kafka import KafkaException

        try:
            done = self.consumer.commit(asynchronous=False)
        except KafkaException as e:
            # Nothing consumed since the last commit, or a rebalance / moved coordinator: the
            # next commit carries the positions again.
            if "NO_OFFSET" not in str(e):
                self.h.add("commit_fail", consumer=self.cname, err=str(e))
            return
        offsets = {tp.partition: tp.offset for tp in done or [] if tp.error is None and tp.offset >= 0}
        if offsets:
            self.h.add("commit", consumer=self.cname, offsets=offsets)

    def run(self):
        try:
            self.consumer.subscribe([self.topic])
            last_commit = time.monotonic()
            while not self.stopping.is_set():
                for m in self.consumer.consume(num_messages=500, timeout=0.3):
                    if m.error():
                        self.h.add("consumer_error", consumer=self.cname, err=str(m.error()))
                        continue
                    self.h.add("read", consumer=self.cname, p=m.partition(), o=m.offset(), v=m.value().decode())
                if time.monotonic() - last_commit >= self.commit_every:
                    self._commit()
                    last_commit = time.monotonic()
            self._commit()
            self.consumer.close()
        except Exception as e:  # noqa: BLE001 - reported by stop()
            self.failure = repr(e)

    def stop(self):
        self.stopping.set()
        self.join(60)
        return f"consumer {self.cname}: thread did not finish" if self.is_alive() else self.failure


class CommitObserver(threading.Thread):
    """Asks for the group's committed offsets (OffsetFetch) twice a second, through a consumer of
    the group that never joins it. (AdminClient's list_consumer_group_offsets is not used:
    librdkafka 2.16 aborted the process in it, `rd_kafka_enq_once_del_source_return: Assertion
    eonce->refcnt > 0`, while the group's coordinator was SIGSTOPped.)"""

    def __init__(self, history, bootstrap, topic, partitions, group, logger, interval=0.5):
        super().__init__(daemon=True, name="commit-observer")
        from confluent_kafka import Consumer

        self.h, self.topic, self.partitions, self.interval = history, topic, partitions, interval
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "client.id": "history-observer",
                                  "enable.auto.commit": False}, logger=logger)
        self.stopping = threading.Event()

    def run(self):
        from confluent_kafka import TopicPartition

        tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        while not self.stopping.wait(self.interval):
            sent = self.h.now()
            try:
                res = self.consumer.committed(tps, timeout=5)
            except Exception as e:  # noqa: BLE001 - the coordinator may be down mid-fault
                self.h.add("committed_fail", err=str(e)[:200])
                continue
            offsets = {tp.partition: tp.offset for tp in res if tp.error is None and tp.offset >= 0}
            self.h.add("committed", sent=sent, offsets=offsets)
        self.consumer.close()

    def stop(self):
        self.stopping.set()
        self.join(30)


def client_logger(path, producers):
    """The clients' own log lines go to `path`, not to the test's stderr; an idempotent
    producer's epoch bump is also recorded in the history (`producers`: name -> thread)."""
    import logging
    import re

    class EpochBumps(logging.Handler):
        def emit(self, record):
            text = record.getMessage()
            if "-> DrainBump" in text:
                m = re.search(r"\[history-(\w+)#producer", text)
                if m and m.group(1) in producers:
                    producers[m.group(1)].epoch_bumped()

    logger = logging.getLogger(f"history-clients-{path}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.addHandler(EpochBumps())
    return logger


class Workload:
    """Two acks=all producers (idempotent and not), two group consumers and a commit observer."""

    def __init__(self, history, bootstrap, topic, partitions):
        self.h, self.bootstrap, self.topic, self.partitions = history, bootstrap, topic, partitions
        self.group = f"history-{uuid.uuid4().hex[:6]}"
        by_name = {}
        log = client_logger(str(history.path) + ".clients.log", by_name)
        self.producers = [ProducerThread(history, bootstrap, topic, partitions, "idem", True, log),
                          ProducerThread(history, bootstrap, topic, partitions, "plain", False, log)]
        by_name.update((p.pname, p) for p in self.producers)
        self.consumers = [ConsumerThread(history, bootstrap, topic, self.group, f"c{i}", log) for i in (1, 2)]
        self.observer = CommitObserver(history, bootstrap, topic, partitions, self.group, log)

    def start(self):
        for t in (*self.producers, *self.consumers, self.observer):
            t.start()

    def stop_producers(self):
        return [f for f in (p.stop() for p in self.producers) if f]

    def drain(self, ends, timeout=90):
        """Waits until the group has read every offset below `ends[p]` (the final high
        watermarks); returns what is still unread."""
        deadline = time.monotonic() + timeout
        while True:
            read = defaultdict(set)
            for e in self.h.of("read"):
                read[e["p"]].add(e["o"])
            missing = {p: end - len(read[p]) for p, end in ends.items() if len(read[p]) < end}
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(0.5)

    def stop_consumers(self):
        failures = [f for f in (c.stop() for c in self.consumers) if f]
        self.observer.stop()
        return failures

    def acks(self, partition=None, after=None):
        return [e for e in self.h.of("ack")
                if (partition is None or e["p"] == partition) and (after is None or e["t"] > after)]


# -------------------------------------------------------------------------------- the checker

def final_log(events):
    out = {}
    for e in events:
        if e["kind"] == "final":
            out[e["p"]] = {int(o): v for o, v in e["records"].items()}
    return out


def check(events, limit=10, allowed=None):
    """Every violation of the guarantees in the module doc, as readable lines (at most `limit`
    examples of each kind, with the count)."""
    final = final_log(events)
    found = defaultdict(list)

    def bad(kind, text):
        found[kind].append(text)

    if not final:
        bad("no final log", "the history has no `final` events")
    acks = [e for e in events if e["kind"] == "ack"]
    # An idempotent producer may report a send delivered without its offset (librdkafka infers
    # it from a later sequence the leader acknowledged): such a send is looked up by value.
    where = {}
    for p, recs in final.items():
        for o, v in recs.items():
            where.setdefault((p, v), o)
    # 1. Acknowledged sends are in the final log at their offsets.
    for e in acks:
        if e["o"] is None:
            if (e["p"], e["v"]) not in where:
                bad("acknowledged record lost", f"{e['v']} acked at t={e['t']} on p{e['p']} (offset not reported), "
                    f"not in the final log")
            continue
        got = final.get(e["p"], {}).get(e["o"])
        if got != e["v"]:
            bad("acknowledged record lost", f"{e['v']} acked at t={e['t']} as p{e['p']}@{e['o']}, final log has {got!r}")
    # 2. Idempotence: once each, in send order per partition. The exception is the client's:
    # a send that was in flight when librdkafka bumped the producer epoch may be in the log
    # twice (it was resent under the new epoch), the second copy after later sends.
    idem = {e["producer"] for e in acks if e["idem"]}
    first_ack = {}
    for e in acks:
        first_ack.setdefault(e["v"], e["t"])
    bumps = [e for e in events if e["kind"] == "epoch_bump"]

    def resent_after_bump(name, v):
        seq = int(v.rsplit("-", 1)[1])
        return any(b["producer"] == name and seq < b["sent"] and first_ack.get(v, float("inf")) > b["t"]
                   for b in bumps)

    for name in idem:
        seen = {}
        for p, recs in final.items():
            last = -1
            for o in sorted(recs):
                v = recs[o]
                if not v.startswith(name + "-"):
                    continue
                if v in seen:
                    if resent_after_bump(name, v):
                        found["allowed: resent after a client epoch bump"].append(
                            f"{v} at p{seen[v][0]}@{seen[v][1]} and p{p}@{o}")
                        continue
                    bad("duplicate with idempotence", f"{v} at p{seen[v][0]}@{seen[v][1]} and p{p}@{o}")
                seen[v] = (p, o)
                seq = int(v.rsplit("-", 1)[1])
                if seq <= last:
                    bad("out of send order with idempotence", f"p{p}@{o} holds {v} after seq {last}")
                last = max(last, seq)
    # 3. No read of a record later lost.
    for e in events:
        if e["kind"] == "read":
            got = final.get(e["p"], {}).get(e["o"])
            if got != e["v"]:
                bad("read a record not in the final log",
                    f"{e['consumer']} read {e['v']} at p{e['p']}@{e['o']} (t={e['t']}), final log has {got!r}")
    # 4. Committed offsets never go backwards.
    acked_commits = [(e["t"], {int(p): o for p, o in e["offsets"].items()}) for e in events if e["kind"] == "commit"]
    highest = {}  # partition -> (offset, what established it)
    for e in events:
        if e["kind"] != "committed":
            continue
        floor = dict(highest)
        for t, offs in acked_commits:
            if t < e["sent"]:
                for p, o in offs.items():
                    if o > floor.get(p, (-1, ""))[0]:
                        floor[p] = (o, f"commit acknowledged at t={t}")
        for p, o in ((int(p), o) for p, o in e["offsets"].items()):
            if o < floor.get(p, (-1, ""))[0]:
                bad("committed offset went backwards",
                    f"p{p}: {o} asked at t={e['sent']}, after {floor[p][0]} ({floor[p][1]})")
            if o > highest.get(p, (-1, ""))[0]:
                highest[p] = (o, f"observed at t={e['t']}")
    for p, (o, _) in highest.items():
        if final and o > max(final.get(p, {-1: None})) + 1:
            bad("committed offset past the log end", f"p{p}: committed {o}, final log ends at "
                f"{max(final.get(p, {-1: None})) + 1}")
    # 5. The group read every acknowledged record.
    read = {(e["p"], e["o"]) for e in events if e["kind"] == "read"}
    unread = [e for e in acks if (e["p"], e["o"] if e["o"] is not None else where.get((e["p"], e["v"]))) not in read]
    for e in unread:
        bad("acknowledged record never read by the group", f"{e['v']} at p{e['p']}@{e['o']}")
    lines = []
    for kind, items in found.items():
        if kind.startswith("allowed"):
            if allowed is not None:
                allowed.append(f"{kind}: {len(items)}")
                allowed.extend(f"    {x}" for x in items[:limit])
            continue
        lines.append(f"{kind}: {len(items)}")
        lines += [f"    {x}" for x in items[:limit]]
    return lines


def summary(events):
    kinds = defaultdict(int)
    for e in events:
        kinds[e["kind"]] += 1
    faults = [f"t={e['t']} {e['what']} {e.get('node', '')}".strip() for e in events if e["kind"] == "fault"]
    return {"events": dict(kinds), "faults": faults}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} HISTORY.jsonl")
    evs = load(sys.argv[1])
    print(json.dumps(summary(evs), indent=1))
    accepted = []
    problems = check(evs, allowed=accepted)
    print("\n".join(accepted + problems) if accepted or problems else "OK: no violations")
    sys.exit(1 if problems else 0)
