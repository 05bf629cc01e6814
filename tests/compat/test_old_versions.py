"""Old API versions on the wire: every version Kafka 3.9 serves for the APIs Tern implements.

Tools built on old client libraries still send e.g. ListOffsets v0, OffsetCommit v0/v1,
OffsetFetch v0. kafka-python 3 no longer sends these itself, but it still ships the old versions'
schemas (``kafka.protocol.old``): requests are encoded and responses decoded with them, and every
response must decode to exactly its length. Produce v0-2 carrying message format v0/v1 and Fetch
v0-3 (readers of formats v0/v1) are answered with Kafka's errors, on an open connection.
"""

import struct
import time

import wire
from kafka.protocol.old.admin import (
    CreateTopicsRequest_v0,
    CreateTopicsResponse_v0,
    DeleteTopicsRequest_v0,
    DeleteTopicsResponse_v0,
    DescribeConfigsRequest_v0,
    DescribeConfigsResponse_v0,
)
from kafka.protocol.old.commit import (
    OffsetCommitRequest_v0,
    OffsetCommitRequest_v1,
    OffsetCommitResponse_v0,
    OffsetCommitResponse_v1,
    OffsetFetchRequest_v0,
    OffsetFetchResponse_v0,
)
from kafka.protocol.old.fetch import FetchRequest, FetchResponse
from kafka.protocol.old.list_offsets import ListOffsetsRequest_v0, ListOffsetsResponse_v0
from kafka.protocol.old.metadata import MetadataRequest_v0, MetadataResponse_v0
from kafka.protocol.old.offset_for_leader_epoch import (
    OffsetForLeaderEpochRequest_v0,
    OffsetForLeaderEpochResponse_v0,
)
from kafka.protocol.old.produce import ProduceRequest, ProduceResponse
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.legacy_records import LegacyRecordBatchBuilder

NONE = 0
UNKNOWN_TOPIC_OR_PARTITION = 3
UNSUPPORTED_VERSION = 35
INVALID_REQUEST = 42
UNSUPPORTED_FOR_MESSAGE_FORMAT = 43

# validVersions of Kafka 3.9's message JSON (clients/src/main/resources/common/message) for the
# APIs Tern implements: api key -> (min, max).
KAFKA_3_9 = {
    0: (0, 11),   # Produce
    1: (0, 17),   # Fetch
    2: (0, 9),    # ListOffsets
    3: (0, 12),   # Metadata
    8: (0, 9),    # OffsetCommit
    9: (0, 9),    # OffsetFetch
    10: (0, 6),   # FindCoordinator
    11: (0, 9),   # JoinGroup
    12: (0, 4),   # Heartbeat
    13: (0, 5),   # LeaveGroup
    14: (0, 5),   # SyncGroup
    15: (0, 5),   # DescribeGroups
    16: (0, 5),   # ListGroups
    18: (0, 4),   # ApiVersions
    19: (0, 7),   # CreateTopics
    20: (0, 6),   # DeleteTopics
    21: (0, 2),   # DeleteRecords
    22: (0, 5),   # InitProducerId
    23: (0, 4),   # OffsetForLeaderEpoch
    32: (0, 4),   # DescribeConfigs
    33: (0, 2),   # AlterConfigs
    37: (0, 3),   # CreatePartitions
    42: (0, 2),   # DeleteGroups
    43: (0, 2),   # ElectLeaders
    44: (0, 1),   # IncrementalAlterConfigs
    47: (0, 0),   # OffsetDelete
    60: (0, 1),   # DescribeCluster
}


class Conn:
    """One connection speaking old request versions, decoding with kafka-python's old schemas."""

    def __init__(self, broker, client_id="old-client"):
        self.sock = wire.connect(broker.host, broker.port)
        self.client_id = client_id
        self.corr = 0

    def call(self, request, response_class):
        self.corr += 1
        request.with_header(correlation_id=self.corr, client_id=self.client_id)
        self.sock.sendall(request.encode(header=True, framed=True))
        body = wire.recv_frame(self.sock)
        (corr,) = struct.unpack_from(">i", body, 0)
        assert corr == self.corr, f"{type(request).__name__}: correlation id {corr}, sent {self.corr}"
        response = response_class.decode(body[4:])
        # Nothing may be left over: the response is exactly the version's schema.
        assert response.encode() == body[4:], f"{response_class.__name__} does not round-trip: {body.hex()}"
        return response

    def close(self):
        self.sock.close()


def produce_modern(broker, topic, values, partition=0):
    import confluent_kafka as ck

    p = ck.Producer({"bootstrap.servers": broker.bootstrap})
    for v in values:
        p.produce(topic, value=v, partition=partition)
    assert p.flush(30) == 0


def advertised(broker):
    return wire.advertised_versions(broker.host, broker.port)


def test_every_version_kafka_3_9_serves_is_advertised(broker):
    served = advertised(broker)
    missing = [
        f"api {key}: Kafka 3.9 serves {lo}-{hi}, Tern advertises {served.get(key)}"
        for key, (lo, hi) in KAFKA_3_9.items()
        if key not in served or served[key][0] > lo or served[key][1] < hi
    ]
    assert not missing, "\n".join(missing)


def test_list_offsets_v0_answers_old_style_offsets(broker):
    topic = "old-lo"
    produce_modern(broker, topic, [b"a", b"b", b"c"])
    c = Conn(broker)
    try:
        def offsets(ts, max_num=1, partition=0):
            r = c.call(ListOffsetsRequest_v0(replica_id=-1, topics=[(topic, [(partition, ts, max_num)])]),
                       ListOffsetsResponse_v0)
            (name, [(index, error, found)]) = r.topics[0]
            assert (name, index) == (topic, partition)
            return error, found

        assert offsets(-1) == (NONE, [3])          # latest
        assert offsets(-2) == (NONE, [0])          # earliest
        # The offsets Kafka's v0 knows: segment base offsets and the log end, newest first.
        assert offsets(-1, max_num=10) == (NONE, [3, 0])
        future = int(time.time() * 1000) + 3_600_000
        assert offsets(future, max_num=10) == (NONE, [3, 0])
        assert offsets(0, max_num=10) == (NONE, [])  # nothing was written before 1970
        assert offsets(-3) == (UNSUPPORTED_VERSION, [])  # v0 knows only -1 and -2
        assert offsets(-1, partition=7) == (UNKNOWN_TOPIC_OR_PARTITION, [])
        # A partition named twice is refused (Kafka does so from v1; it also bounds the answer).
        r = c.call(ListOffsetsRequest_v0(replica_id=-1, topics=[(topic, [(0, -1, 1), (0, -2, 1)])]),
                   ListOffsetsResponse_v0)
        assert [p[1] for p in r.topics[0][1]] == [INVALID_REQUEST, INVALID_REQUEST]
        # The same connection still answers a current client's version.
        r = c.call(MetadataRequest_v0(topics=[topic]), MetadataResponse_v0)
        assert r.topics[0][1] == topic
    finally:
        c.close()
    assert broker.alive()


def test_offset_commit_v0_v1_and_offset_fetch_v0_use_the_group_coordinator(broker):
    import confluent_kafka as ck

    topic = "old-commits"
    produce_modern(broker, topic, [b"x"] * 5)
    c = Conn(broker)
    try:
        r = c.call(OffsetCommitRequest_v0(group_id="g-v0", topics=[(topic, [(0, 2, "zk-era")])]),
                   OffsetCommitResponse_v0)
        assert r.topics == [(topic, [(0, NONE)])]
        r = c.call(OffsetFetchRequest_v0(group_id="g-v0", topics=[(topic, [0])]), OffsetFetchResponse_v0)
        assert r.topics == [(topic, [(0, 2, "zk-era", NONE)])]

        # v1: a simple (memberless) commit with the client's commit timestamp.
        now = int(time.time() * 1000)
        r = c.call(OffsetCommitRequest_v1(group_id="g-v1", generation_id_or_member_epoch=-1, member_id="",
                                          topics=[(topic, [(0, 4, now, "v1")])]),
                   OffsetCommitResponse_v1)
        assert r.topics == [(topic, [(0, NONE)])]
        r = c.call(OffsetCommitRequest_v0(group_id="g-v0", topics=[("no-such-topic", [(0, 1, "")])]),
                   OffsetCommitResponse_v0)
        assert r.topics == [("no-such-topic", [(0, UNKNOWN_TOPIC_OR_PARTITION)])]
        r = c.call(OffsetFetchRequest_v0(group_id="g-v1", topics=[(topic, [0, 9])]), OffsetFetchResponse_v0)
        assert r.topics == [(topic, [(0, 4, "v1", NONE), (9, -1, "", NONE)])]
    finally:
        c.close()
    # The v1 commit is the group's committed offset for a current client too (its metadata is
    # not compared: confluent-kafka mis-decodes short metadata strings).
    consumer = ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g-v1"})
    try:
        [tp] = consumer.committed([ck.TopicPartition(topic, 0)], timeout=30)
        assert tp.offset == 4
    finally:
        consumer.close()


def test_topic_admin_v0(broker):
    topic = "old-admin"
    c = Conn(broker)
    try:
        r = c.call(CreateTopicsRequest_v0(topics=[(topic, 2, 1, [], [("retention.ms", "3600000")])],
                                          timeout_ms=10_000),
                   CreateTopicsResponse_v0)
        assert r.topics == [(topic, NONE)]
        r = c.call(DescribeConfigsRequest_v0(resources=[(2, topic, ["retention.ms", "segment.bytes"])]),
                   DescribeConfigsResponse_v0)
        [(error, _, _, name, configs)] = r.results
        assert (error, name) == (NONE, topic)
        by_name = {cfg[0]: cfg for cfg in configs}
        # v0 says whether a value is the default instead of where it comes from.
        assert by_name["retention.ms"][1:4] == ("3600000", False, False)
        assert by_name["segment.bytes"][1:4] == ("1073741824", False, True)
        produce_modern(broker, topic, [b"e0"])
        r = c.call(OffsetForLeaderEpochRequest_v0(topics=[(topic, [(0, 0)])]), OffsetForLeaderEpochResponse_v0)
        assert r.topics == [(topic, [(NONE, 0, 1)])]
        r = c.call(DeleteTopicsRequest_v0(topic_names=[topic], timeout_ms=10_000), DeleteTopicsResponse_v0)
        assert r.responses == [(topic, NONE)]
    finally:
        c.close()


def legacy_message_set(magic):
    b = LegacyRecordBatchBuilder(magic=magic, compression_type=0, batch_size=1 << 20)
    b.append(0, timestamp=int(time.time() * 1000) if magic else None, key=b"k", value=b"old")
    return bytes(b.build())


def v2_batch(value):
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=-1,
                                  producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    b.append(0, timestamp=int(time.time() * 1000), key=None, value=value, headers=[])
    return bytes(b.build())


def test_record_formats_v0_v1_are_refused_with_kafkas_errors(broker):
    topic = "old-formats"
    produce_modern(broker, topic, [b"new"])
    c = Conn(broker)
    try:
        for version in (0, 1, 2):
            for magic in (0, 1):
                req = ProduceRequest[version](acks=1, timeout_ms=10_000,
                                              topic_data=[(topic, [(0, legacy_message_set(magic))])])
                r = c.call(req, ProduceResponse[version])
                [(name, [partition])] = r.responses
                assert (name, partition[0], partition[1]) == (topic, 0, UNSUPPORTED_FOR_MESSAGE_FORMAT), \
                    f"Produce v{version} of message format v{magic}: {r}"
        # Format v2 in an old Produce version is stored as usual.
        r = c.call(ProduceRequest[2](acks=1, timeout_ms=10_000, topic_data=[(topic, [(0, v2_batch(b"v2"))])]),
                   ProduceResponse[2])
        [(name, [partition])] = r.responses
        assert (partition[1], partition[2]) == (NONE, 1)
        # Fetch v0-3 read formats v0/v1 only: every partition is answered UNSUPPORTED_VERSION.
        for version in (0, 1, 2, 3):
            fields = dict(replica_id=-1, max_wait_ms=0, min_bytes=0,
                          topics=[(topic, [(0, 0, 1 << 20)]), ("old-no-such-topic", [(0, 0, 1 << 20)])])
            if version == 3:
                fields["max_bytes"] = 1 << 20
            r = c.call(FetchRequest[version](**fields), FetchResponse[version])
            errors = {t[0]: t[1][0][1] for t in r.topics}
            assert errors == {topic: UNSUPPORTED_VERSION, "old-no-such-topic": UNKNOWN_TOPIC_OR_PARTITION}, \
                f"Fetch v{version}: {r}"
    finally:
        c.close()
    # Nothing of the old formats was stored: the log holds the two v2 records.
    import confluent_kafka as ck

    consumer = ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "old-formats-check",
                            "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        consumer.assign([ck.TopicPartition(topic, 0, 0)])
        got = []
        deadline = time.monotonic() + 30
        while len(got) < 2 and time.monotonic() < deadline:
            m = consumer.poll(1)
            if m is not None and not m.error():
                got.append(m.value())
        assert got == [b"new", b"v2"]
    finally:
        consumer.close()
    log = broker.log_tail()
    assert "UNSUPPORTED_FOR_MESSAGE_FORMAT" in log and "client_id" in log and "old-client" in log
