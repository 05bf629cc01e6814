"""Idempotent producers across restarts: a retried batch is recognised even when it sits in a
rolled segment (Kafka's producer state snapshots), so it is never written twice."""

import pytest
import wire
from logfiles import consume_all, segments

TOPIC = "idem"


@pytest.mark.parametrize("restart", ["graceful", "kill9"])
def test_a_retry_of_a_batch_in_a_rolled_segment_is_answered_with_its_offsets(broker_factory, restart):
    broker = broker_factory({"log.segment.bytes": "2048", "num.partitions": "1"})
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(TOPIC, 1, 1)])[TOPIC].result(15)
    err, pid, epoch = wire.init_producer_id(broker.host, broker.port)
    assert err == 0 and pid >= 0
    batches = [wire.record_batch([f"b{i}-r{j}".encode().ljust(600, b".") for j in range(3)],
                                 producer_id=pid, producer_epoch=epoch, base_sequence=3 * i)
               for i in range(6)]
    offsets = []
    for b in batches:
        err, base = wire.produce(broker.host, broker.port, TOPIC, 0, b)
        assert err == 0
        offsets.append(base)
    assert offsets == [0, 3, 6, 9, 12, 15]
    assert len(segments(broker.data_dir / f"{TOPIC}-0")) >= 4, "the early batches are in rolled segments"
    broker.restart(graceful=(restart == "graceful"))
    # The producer never heard back for batch 2 (say) and retries it, and then batch 5.
    for i in (2, 5):
        err, base = wire.produce(broker.host, broker.port, TOPIC, 0, batches[i])
        assert (err, base) == (0, offsets[i]), f"retry of batch {i}"
    records = consume_all(broker.bootstrap, TOPIC)
    assert [o for o, _ in records] == list(range(18)), "nothing written twice"
