"""Replicated writes on a healthy 3-node cluster: acks=all with idempotence, read back by a
group consumer exactly once and in per-partition order; every replica in sync."""

from collections import defaultdict

import pytest

from records import consume_group, create_replicated_topic, describe_isr, produce_acked

pytestmark = pytest.mark.timeout(300)

TOPIC = "replicated"
PARTITIONS = 3
RECORDS = 3000


def test_acked_records_are_read_once_in_order(running_cluster):
    c = running_cluster
    parts = create_replicated_topic(c, TOPIC, PARTITIONS, rf=3, min_isr=2)
    for p, (leader, replicas, isrs) in parts.items():
        assert sorted(replicas) == [1, 2, 3], f"{TOPIC}-{p} replicas {replicas}"

    acked = produce_acked(c.bootstrap, TOPIC, PARTITIONS, RECORDS)
    # Per partition, the acked offsets follow the send order (record i went to partition i % 3).
    by_part = defaultdict(list)
    for p, o, v in acked:
        by_part[p].append((o, v))
    for p, recs in by_part.items():
        recs.sort()
        offsets = [o for o, _ in recs]
        assert len(set(offsets)) == len(offsets), f"{TOPIC}-{p}: two records acked at one offset"
        values = [v for _, v in recs]
        assert values == sorted(values), f"{TOPIC}-{p}: offsets do not follow the send order"
        assert len(recs) == RECORDS // PARTITIONS

    until = {p: max(o for o, _ in recs) for p, recs in by_part.items()}
    read = consume_group(c.bootstrap, TOPIC, PARTITIONS, until)
    # Exactly once: every acked record is read, none twice (a group consumer with no rebalance
    # has no reason to re-deliver), and nothing that was not acked shows up.
    counts = defaultdict(int)
    for p, o, v in read:
        counts[(p, o, v)] += 1
    twice = [r for r, k in counts.items() if k > 1]
    assert not twice, f"{len(twice)} records read more than once, e.g. {twice[:5]}"
    missing = sorted(set(acked) - set(counts))
    assert not missing, f"{len(missing)} acked records not read, e.g. {missing[:5]}"
    extra = sorted(set(counts) - set(acked))
    assert not extra, f"{len(extra)} records read that were never acked (or at other offsets), e.g. {extra[:5]}"
    # Per-partition order: each partition's records arrive in offset order.
    for p in range(PARTITIONS):
        offsets = [o for q, o, _ in read if q == p]
        assert offsets == sorted(offsets), f"{TOPIC}-{p} read out of order"

    isr, text = describe_isr(c.bootstrap, TOPIC)
    assert sorted(isr) == list(range(PARTITIONS)), f"tern topic describe shows partitions {sorted(isr)}:\n{text}"
    for p, members in isr.items():
        assert sorted(members) == [1, 2, 3], f"{TOPIC}-{p} ISR {members} in:\n{text}"
