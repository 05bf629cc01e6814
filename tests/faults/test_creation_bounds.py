"""Creating topics and partitions is bounded: an operation the open-file limit cannot hold is
refused before anything is created, the start-up raises the open-file limit and reports the
room it leaves, and the KIP-599 controller mutation quota throttles a client that creates or
deletes partitions too fast."""

import re
import subprocess

import pytest

import conftest

POLICY_VIOLATION = 44


def plain_log(broker):
    return re.sub(r"\x1b\[[0-9;]*m", "", broker.log_tail(max_bytes=1 << 20))


@pytest.fixture
def broker_with_nofile(broker_factory, monkeypatch):
    """Starts a broker under `prlimit --nofile=SOFT:HARD`."""

    def make(nofile, settings=None):
        command = conftest.Broker.command
        monkeypatch.setattr(conftest.Broker, "command", lambda self: ["prlimit", f"--nofile={nofile}", *command(self)])
        return broker_factory(settings)

    return make


def partition_dirs(broker, topic):
    return sorted(p.name for p in broker.data_dir.iterdir() if p.name.startswith(f"{topic}-"))


def test_creation_that_cannot_fit_is_refused_before_it_starts(broker_with_nofile):
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

    b = broker_with_nofile("1024:1024")
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    with pytest.raises(KafkaException) as refused:
        admin.create_topics([NewTopic("too-many", 2000, 1)])["too-many"].result(120)
    error = refused.value.args[0]
    assert error.code() == POLICY_VIOLATION, error
    assert "open-file limit 1024" in error.str(), error.str()
    assert partition_dirs(b, "too-many") == [], "a refused creation left partition directories behind"
    # What fits is still created, and growing it past the limit is refused the same way.
    admin.create_topics([NewTopic("fits", 10, 1)])["fits"].result(60)
    assert len(partition_dirs(b, "fits")) == 10
    with pytest.raises(KafkaException) as refused:
        admin.create_partitions([NewPartitions("fits", 2000)])["fits"].result(120)
    assert refused.value.args[0].code() == POLICY_VIOLATION
    assert len(partition_dirs(b, "fits")) == 10
    assert "refused: Creating 2000 partitions" in plain_log(b)
    assert b.alive()


def test_start_up_raises_the_open_file_limit_and_reports_the_room(broker_with_nofile):
    b = broker_with_nofile("512:4096")
    with open(f"/proc/{b.proc.pid}/limits") as f:
        limits = f.read()
    assert re.search(r"Max open files\s+4096\s+4096", limits), limits
    log = plain_log(b)
    assert "raised the open-file limit to the hard limit" in log, log
    room = re.search(r"room for (\d+) more partitions", log)
    assert room and 0 < int(room.group(1)) < 4096, log


def tern_cli(broker, *args):
    cmd = [str(conftest.tern_bin()), "topic", *args, "--bootstrap-server", broker.bootstrap]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_controller_mutation_quota(broker_factory):
    from confluent_kafka.admin import AdminClient, NewTopic

    # One partition per second per client id, and a bucket of one second's worth.
    b = broker_factory({"controller.quota.mutation.rate": 1, "controller.quota.window.num": 1,
                        "controller.quota.window.size.seconds": 1})
    # CreateTopics v7 (Tern's CLI): strict. A creation that empties the bucket still passes...
    first = tern_cli(b, "create", "q-first", "--partitions", "100")
    assert first.returncode == 0, first.stderr
    # ...and the next one is refused until the client's rate is back under the quota.
    second = tern_cli(b, "create", "q-second", "--partitions", "1")
    assert second.returncode != 0, "a creation over the controller mutation quota was accepted"
    assert "THROTTLING_QUOTA_EXCEEDED" in second.stderr or "throttling quota" in second.stderr.lower(), second.stderr
    assert partition_dirs(b, "q-second") == []
    deleted = tern_cli(b, "delete", "q-first")
    assert deleted.returncode != 0, "a deletion over the controller mutation quota was accepted"
    assert "ThrottlingQuotaExceeded" in plain_log(b)
    # Older request versions (librdkafka's CreateTopics v4) are permissive, as in Kafka: the same
    # client id, over its quota, still creates.
    admin = AdminClient({"bootstrap.servers": b.bootstrap, "client.id": "tern-admin"})
    admin.create_topics([NewTopic("q-old-version", 1, 1)])["q-old-version"].result(60)
    assert partition_dirs(b, "q-old-version") == ["q-old-version-0"]
