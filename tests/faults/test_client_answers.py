"""What admin and transactional clients are told: the authorized operations of a broker without
an authorizer (everything a resource supports, as Kafka answers), and a prompt, fatal error for
a transactional producer while transactions are not implemented."""

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicCollection, TopicPartition
from confluent_kafka.admin import AclOperation, AdminClient, NewTopic

# Kafka's AclEntry.supportedOperations (3.9) for each resource type.
TOPIC_OPS = {AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE, AclOperation.DESCRIBE, AclOperation.DELETE,
             AclOperation.ALTER, AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS}
GROUP_OPS = {AclOperation.READ, AclOperation.DESCRIBE, AclOperation.DELETE}
CLUSTER_OPS = {AclOperation.CREATE, AclOperation.CLUSTER_ACTION, AclOperation.DESCRIBE_CONFIGS,
               AclOperation.ALTER_CONFIGS, AclOperation.IDEMPOTENT_WRITE, AclOperation.ALTER, AclOperation.DESCRIBE}


def test_authorized_operations_without_authorizer(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("ops", 2, 1)])["ops"].result(timeout=60)
    # A group with committed offsets, so that DescribeGroups finds it.
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "ops-group", "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition("ops", 0, 1)], asynchronous=False)
    c.close()

    cluster = admin.describe_cluster(include_authorized_operations=True).result(timeout=30)
    assert set(cluster.authorized_operations or []) == CLUSTER_OPS, cluster.authorized_operations
    topics = admin.describe_topics(TopicCollection(["ops"]), include_authorized_operations=True)
    topic = topics["ops"].result(timeout=30)
    assert set(topic.authorized_operations or []) == TOPIC_OPS, topic.authorized_operations
    groups = admin.describe_consumer_groups(["ops-group"], include_authorized_operations=True)
    group = groups["ops-group"].result(timeout=30)
    assert set(group.authorized_operations or []) == GROUP_OPS, group.authorized_operations
    # Not asked for: not sent (the schema's default), so clients do not show "no rights".
    plain = admin.describe_cluster().result(timeout=30)
    assert not plain.authorized_operations


def test_confluent_transactional_producer_fails_fast(broker):
    """init_transactions() fails with a fatal TRANSACTIONAL_ID_AUTHORIZATION_FAILED naming the
    reason, instead of retrying until its timeout; the broker logs the refusal."""
    p = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "tx-1"})
    with pytest.raises(KafkaException) as raised:
        p.init_transactions(60)
    err = raised.value.args[0]
    assert err.code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, err
    assert err.fatal(), err
    assert "not supported" in err.str(), err
    assert "transactional id tx-1" in broker.log_tail() and "not supported" in broker.log_tail()


def test_kafka_python_transactional_producer_fails_fast(broker):
    from kafka import KafkaProducer
    from kafka.errors import TransactionalIdAuthorizationFailedError

    p = KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id="tx-py", max_block_ms=60_000)
    try:
        # A timeout would raise KafkaTimeoutError: the assertion is the error kind.
        with pytest.raises(TransactionalIdAuthorizationFailedError):
            p.init_transactions()
    finally:
        p.close(timeout=5)


def test_acks_all_with_min_insync_above_the_replication_factor(broker):
    """Kafka 3.7+ caps min.insync.replicas by the replication factor (Partition.effectiveMinIsr):
    a single-replica topic with min.insync.replicas=2 takes acks=all writes, and they are read
    back. (Kafka before 3.7, and Tern before its replica state machine, refused them with
    NOT_ENOUGH_REPLICAS.)"""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("strict", 1, 1, config={"min.insync.replicas": "2"})])["strict"].result(timeout=60)
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "message.timeout.ms": 20000})
    errors = []
    for i in range(10):
        p.produce("strict", value=b"v%d" % i, on_delivery=lambda err, msg: err and errors.append(err))
    assert p.flush(30) == 0
    assert not errors, errors
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "strict-reader", "auto.offset.reset": "earliest",
                  "enable.partition.eof": True})
    c.assign([TopicPartition("strict", 0, 0)])
    values = []
    while True:
        m = c.poll(30)
        assert m is not None, f"only {values} read back"
        if m.error():
            assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
            break
        values.append(m.value())
    c.close()
    assert values == [b"v%d" % i for i in range(10)]
