"""Leader failover: the leader of partition 0 is killed (-9) under a continuous acks=all
producer; sends resume within 10 s, the node comes back into every ISR, and every
acknowledged record is read back.

A killed broker's leadership moves once its session expires (`broker.session.timeout.ms`,
Kafka's default 9 s, which with the client's metadata refresh alone would take most of the
10 s): the cluster runs with a 4 s session and 500 ms heartbeats, as an operator who wants fast
failover sets them."""

import time

import pytest

from records import ContinuousProducer, create_replicated_topic, read_partitions

pytestmark = pytest.mark.timeout(420)

TOPIC = "failover"
PARTITIONS = 3
RESUME_WITHIN = 10.0  # seconds from the last ack before the kill to the first after it
WARMUP_ACKS = 300  # acks on partition 0 before the kill
ISR_TIMEOUT = 120


def wait_for(what, predicate, timeout, detail=lambda: ""):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s {detail()}")
        time.sleep(0.05)


FAST_FAILOVER = {"broker.session.timeout.ms": "4000", "broker.heartbeat.interval.ms": "500"}


def test_killing_a_leader_under_acks_all_loses_nothing(cluster_factory):
    c = cluster_factory(settings=FAST_FAILOVER)
    c.up()
    create_replicated_topic(c, TOPIC, PARTITIONS, rf=3, min_isr=2)
    leader = c.leader_of(TOPIC, 0)
    assert leader in (1, 2, 3), f"{TOPIC}-0 has leader {leader}"

    producer = ContinuousProducer(c.bootstrap, TOPIC, PARTITIONS)
    producer.start()
    try:
        wait_for(f"{WARMUP_ACKS} acks on {TOPIC}-0", lambda: len(producer.acks(0)) >= WARMUP_ACKS, 60,
                 lambda: f"(acks {len(producer.acks())}, errors {producer.errors[:3]})")

        c.kill9(leader)
        killed_at = time.monotonic()
        before = [a for a in producer.acks(0) if a[0] <= killed_at]
        last_before = before[-1][0]
        # Wait longer than the bound so a failure reports the gap it measured.
        wait_for(f"an ack on {TOPIC}-0 after killing its leader (node {leader})",
                 lambda: any(a[0] > killed_at for a in producer.acks(0)), 4 * RESUME_WITHIN,
                 lambda: f"(errors so far: {producer.errors[-3:]})")
        first_after = min(a[0] for a in producer.acks(0) if a[0] > killed_at)
        gap = first_after - last_before
        assert gap <= RESUME_WITHIN, (f"{TOPIC}-0: {gap:.1f}s between the last ack before killing node {leader} "
                                      f"and the first after (leader now {c.leader_of(TOPIC, 0)})")
        # The node that answers Metadata may learn of the new leader a little after the producer.
        leaders, admin = [], c.admin()
        wait_for(f"metadata naming a new leader of {TOPIC}-0", lambda: leaders.append(c.leader_of(TOPIC, 0, admin))
                 or leaders[-1] not in (leader, -1), RESUME_WITHIN, lambda: f"(last seen {leaders[-3:]})")

        # The killed node comes back (`tern cluster up` starts only it) and catches up.
        c.restart(leader)
        c.wait_partitions(TOPIC, PARTITIONS, isr=3, timeout=ISR_TIMEOUT,
                          what=f"node {leader} back in every ISR after its restart")
        acks_then = len(producer.acks())
        wait_for("acks after the restart", lambda: len(producer.acks()) >= acks_then + 100, 60)
    finally:
        left = producer.stop()
    assert left == 0, f"{left} records still undelivered when the producer gave up flushing"

    acked = producer.acks()
    assert acked, "nothing acked"
    # Delivery failures are allowed (their records are not acknowledged) but shown.
    if producer.errors:
        print(f"{len(producer.errors)} delivery failures, e.g. {producer.errors[:5]}")
    read = read_partitions(c.bootstrap, TOPIC, PARTITIONS)
    lost = [(p, o, v) for _, p, o, v in acked if read[p].get(o) != v]
    assert not lost, (f"{len(lost)} of {len(acked)} acked records not read back at their offsets, e.g. "
                      f"{[(p, o, v, read[p].get(o)) for p, o, v in lost[:5]]}")
    # Idempotence: no acked value is in the log twice.
    seen = {}
    for p, recs in read.items():
        for o, v in recs.items():
            assert v not in seen, f"{v} is in the log twice: {seen[v]} and {(p, o)}"
            seen[v] = (p, o)
