"""Topic configs in a cluster are controller operations: a change made through one broker is
what every broker describes and what every leader enforces. Here `min.insync.replicas` is
raised to 3 through one node; with a follower gone an acks=all write is then refused with
NOT_ENOUGH_REPLICAS by the leader (another node), and accepted again once it is lowered."""

import time

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigEntry, AlterConfigOpType

from cluster import REQ_TIMEOUT
from records import create_replicated_topic, producer_config

pytestmark = pytest.mark.timeout(300)

TOPIC = "configured"
FAST_FAILOVER = {"broker.session.timeout.ms": "4000", "broker.heartbeat.interval.ms": "500"}


def set_min_isr(bootstrap, value):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    res = ConfigResource(ConfigResource.Type.TOPIC, TOPIC, incremental_configs=[
        ConfigEntry("min.insync.replicas", str(value), incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res], request_timeout=REQ_TIMEOUT)[res].result(timeout=REQ_TIMEOUT + 5)


def described_min_isr(bootstrap):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    res = ConfigResource(ConfigResource.Type.TOPIC, TOPIC)
    return admin.describe_configs([res], request_timeout=REQ_TIMEOUT)[res].result(timeout=REQ_TIMEOUT + 5)[
        "min.insync.replicas"].value


def send_one(bootstrap, value):
    """Sends one record to partition 0 with acks=all; returns the delivery error (None: acked)."""
    outcome = []
    p = Producer(producer_config(bootstrap, **{"enable.idempotence": False, "message.timeout.ms": 8000,
                                               "retries": 0}))
    p.produce(TOPIC, value=value.encode(), partition=0, on_delivery=lambda err, msg: outcome.append(err))
    p.flush(20)
    assert outcome, "no delivery report within 20 s"
    return outcome[0]


def test_a_config_change_through_one_broker_is_enforced_by_the_leader(cluster_factory):
    c = cluster_factory(settings=FAST_FAILOVER)
    c.up()
    create_replicated_topic(c, TOPIC, partitions=1, rf=3, min_isr=2)
    leader = c.leader_of(TOPIC, 0)
    others = [n for n in c.node_ids() if n != leader]
    # The change goes through a broker that is not the leader.
    set_min_isr(c.kafka_addr(others[0]), 3)
    for node in c.node_ids():
        assert described_min_isr(c.kafka_addr(node)) == "3", f"node {node} describes another min.insync.replicas"
    assert send_one(c.bootstrap, "all three in sync") is None

    c.kill9(others[1])
    deadline = time.monotonic() + 60
    while len(c.partitions(TOPIC)[0][2]) > 2:
        assert time.monotonic() < deadline, f"the ISR kept the killed node: {c.partitions(TOPIC)}"
        time.sleep(0.5)
    err = send_one(c.bootstrap, "two in sync, three required")
    assert err is not None and err.code() == KafkaError.NOT_ENOUGH_REPLICAS, f"expected NOT_ENOUGH_REPLICAS, got {err}"

    set_min_isr(c.kafka_addr(others[0]), 2)
    assert send_one(c.bootstrap, "two in sync, two required") is None
