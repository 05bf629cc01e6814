"""The faults of the cluster fault suite, each injected into a running `NetCluster` under a
`Workload`, recorded in its `History`, healed, and followed by a wait for every partition's ISR
to be full again. Random choices come from the run's seeded `random.Random`, so a seed replays
the same schedule (the clients' interleaving differs from run to run).

Each fault function returns nothing and raises AssertionError when a bound is missed:
- producers resume within RESUME_WITHIN seconds of losing a partition's leader (the gap between
  the last acknowledgement on that partition before the fault and the first after it);
- the ISR of every partition is full again within ISR_TIMEOUT seconds of the heal.
"""

import os
import signal
import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import NewTopic

RESUME_WITHIN = 10.0
ISR_TIMEOUT = 120
# Session and lag timeouts of the fault clusters: a pause or partition outlasts both. The
# session is short enough that a frozen node which was also the active controller (an election,
# then a fresh session for every broker at the new controller) is fenced before the clients'
# produce to it times out (socket.timeout.ms, history.py): with 4 s a producer sometimes
# retried the frozen leader once more and resumed after 10-11 s (soak, seed 1806363056).
SETTINGS = {"broker.session.timeout.ms": "3000", "broker.heartbeat.interval.ms": "500",
            "replica.lag.time.max.ms": "6000"}
OUTLAST = 8.0  # seconds a pause or a partition lasts: more than the session and lag timeouts


class FaultRun:
    def __init__(self, cluster, history, workload, rng, topic, partitions):
        self.c, self.h, self.w, self.rng = cluster, history, workload, rng
        self.topic, self.partitions = topic, partitions

    def leaders(self):
        parts = self.c.partitions(self.topic)
        return {p: leader for p, (leader, _, _) in parts.items()}

    def wait_full_isr(self, after):
        t = time.monotonic()
        self.c.wait_partitions(self.topic, self.partitions, isr=self.c.nodes, timeout=ISR_TIMEOUT,
                               what=f"full ISR after {after}")
        self.h.add("note", what=f"full ISR after {after}", took=round(time.monotonic() - t, 2))

    def wait_acks(self, count=50, timeout=60):
        """Until `count` more acks arrived on every partition (the workload is flowing)."""
        start = self.h.now()
        deadline = time.monotonic() + timeout
        while True:
            per = {p: len(self.w.acks(p, after=start)) for p in range(self.partitions)}
            if all(n >= count for n in per.values()):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the workload did not get {count} acks on every partition within {timeout}s "
                                     f"(got {per}); recent failures {self.h.of('fail')[-3:]}")
            time.sleep(0.1)

    def check_resumed(self, fault_t, partitions, what):
        """Producers resumed on `partitions` within RESUME_WITHIN of the fault at `fault_t`."""
        for p in partitions:
            deadline = time.monotonic() + 4 * RESUME_WITHIN
            while not self.w.acks(p, after=fault_t):
                if time.monotonic() > deadline:
                    raise AssertionError(f"{what}: no ack on {self.topic}-{p} in {4 * RESUME_WITHIN}s")
                time.sleep(0.05)
            before = [e["t"] for e in self.w.acks(p) if e["t"] <= fault_t]
            first_after = min(e["t"] for e in self.w.acks(p, after=fault_t))
            gap = first_after - (before[-1] if before else fault_t)
            self.h.add("note", what=f"{what}: {self.topic}-{p} resumed", gap=round(gap, 2))
            assert gap <= RESUME_WITHIN, (f"{what}: {gap:.1f}s between the last ack on {self.topic}-{p} before the "
                                          f"fault and the first after it (bound {RESUME_WITHIN}s)")

    # -- the faults ---------------------------------------------------------------------------
    def kill_leader(self, partition):
        """`kill -9` of the partition's leader; producers resume elsewhere; restart; full ISR."""
        leaders = self.leaders()
        node = leaders[partition]
        led = [p for p, n in leaders.items() if n == node]
        self.c.kill9(node)
        t = self.h.add("fault", what="kill9", node=node, leads=led)["t"]
        self.check_resumed(t, led, f"kill -9 of node {node}")
        self.c.restart(node)
        self.h.add("heal", what="restart", node=node)
        self.wait_full_isr(f"restarting node {node}")

    def kill_leaders_in_turn(self):
        order = list(range(self.partitions))
        self.rng.shuffle(order)
        for p in order:
            self.kill_leader(p)
            self.wait_acks()

    def _outage(self, partition, seconds, what, begin, end, ended):
        """Takes the partition's leader out with `begin(node)` for `seconds`, checking that
        producers resume elsewhere meanwhile, then `end(node)` and a wait for full ISRs."""
        leaders = self.leaders()
        node = leaders[partition]
        led = [p for p, n in leaders.items() if n == node]
        begin(node)
        t = self.h.add("fault", what=what, node=node, leads=led, seconds=seconds)["t"]
        try:
            self.check_resumed(t, led, f"{what} of node {node}")
            time.sleep(max(0.0, t + seconds - self.h.now()))
        finally:
            end(node)
            self.h.add("heal", what=ended, node=node)
        self.wait_full_isr(f"{ended} of node {node}")

    def pause_leader(self, partition, seconds=OUTLAST):
        """SIGSTOP of the partition's leader for longer than the session and lag timeouts."""
        self._outage(partition, seconds, "sigstop", self.c.stop, self.c.cont, "sigcont")

    def isolate_leader(self, partition, seconds=OUTLAST):
        """A network partition: the partition's leader is cut off from every node and client."""
        self._outage(partition, seconds, "isolate", self.c.isolate, self.c.heal, "reconnect")

    def kill_all(self):
        """`kill -9` of every node at once, then all restarted."""
        pids = self.c.pids()
        for pid in filter(None, pids.values()):
            os.kill(pid, signal.SIGKILL)
        self.h.add("fault", what="kill9-all", pids={str(n): p for n, p in pids.items()})
        for n, pid in pids.items():
            if pid is not None:
                self.c._wait_gone(n, pid, 10)
        self.c.restart()
        self.h.add("heal", what="restart-all")
        self.wait_full_isr("restarting every node")

    def crash_controller_during_create(self, name, partitions=6):
        """CreateTopics sent, and the active controller `kill -9`ed at once. The topic must end up
        whole (every partition, with a leader and full ISR) once the create is retried, and
        usable; never half-made."""
        admin = self.c.admin()
        controller = self.c.controller_leader()
        assert controller in self.c.node_ids(), f"no active controller in metadata ({controller})"
        topic = NewTopic(name, num_partitions=partitions, replication_factor=3, config={"min.insync.replicas": "2"})
        fut = admin.create_topics([topic], operation_timeout=10, request_timeout=15)[name]
        self.c.kill9(controller)
        self.h.add("fault", what="kill9-controller-during-create", node=controller, topic=name)
        try:
            fut.result(timeout=60)
            first = "created"
        except KafkaException as e:
            first = str(e)
        self.h.add("note", what=f"create {name} while the controller died", result=first)
        # Retry as a client would until the topic exists (created now, or by the first attempt).
        deadline = time.monotonic() + 90
        while True:
            retry = self.c.admin()  # kept referenced until its answer: a dropped client cancels it
            try:
                retry.create_topics([topic], operation_timeout=10, request_timeout=15)[name].result(timeout=60)
                self.h.add("note", what=f"create {name} retried", result="created")
                break
            except KafkaException as e:
                if e.args[0].name() == "TOPIC_ALREADY_EXISTS":
                    self.h.add("note", what=f"create {name} retried", result="already exists")
                    break
                self.h.add("note", what=f"create {name} retried", result=str(e))
                if time.monotonic() > deadline:
                    raise AssertionError(f"creating {name} after the controller crash kept failing: {e}") from None
                time.sleep(1)
        self.c.restart(controller)
        self.h.add("heal", what="restart", node=controller)
        self.c.wait_partitions(name, partitions, isr=3, timeout=ISR_TIMEOUT,
                               what=f"{name} whole after the controller crash")
        self.wait_full_isr(f"restarting controller node {controller}")

    def fill_disk(self, node, seconds=OUTLAST):
        """Fills node `node`'s disk (its tmpfs: see NetCluster's `disks`) with a file the harness
        owns, holds it full for `seconds`, then deletes that file."""
        filler = self.c.disk(node) / "filler"
        written = 0
        with open(filler, "wb", buffering=0) as f:
            block = b"\xab" * 65536
            try:
                while True:
                    written += f.write(block)
            except OSError:
                pass
        self.h.add("fault", what="disk-full", node=node, filler_bytes=written,
                   leads=[p for p, n in self.leaders().items() if n == node])
        try:
            time.sleep(seconds)
        finally:
            filler.unlink()
            self.h.add("heal", what="disk-freed", node=node)
        self.wait_full_isr(f"freeing node {node}'s disk")
