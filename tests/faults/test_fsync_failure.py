"""A failed fsync takes the partition offline: after EIO from fsync the kernel may have dropped the
dirty pages it could not write, so the page cache no longer says what is on disk (PostgreSQL's
"fsyncgate"). The broker must stop serving that partition, not go on as if nothing happened; a
restart recovers it from what is on disk.

fsync failures are injected with an LD_PRELOAD shim, built here with gcc, whose fsync/fdatasync
fail with EIO for files under a chosen directory while a flag file exists."""

import os
import subprocess

import pytest

from logfiles import consume_all

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int should_fail(int fd) {
    const char *flag = getenv("FAIL_FSYNC_FLAG"), *under = getenv("FAIL_FSYNC_UNDER");
    if (!flag || !under || access(flag, F_OK) != 0) return 0;
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 0) return 0;
    path[n] = 0;
    return strncmp(path, under, strlen(under)) == 0;
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = dlsym(RTLD_NEXT, "fdatasync");
    if (should_fail(fd)) { errno = EIO; return -1; }
    return real(fd);
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = dlsym(RTLD_NEXT, "fsync");
    if (should_fail(fd)) { errno = EIO; return -1; }
    return real(fd);
}
"""


@pytest.fixture
def shim(tmp_path):
    src = tmp_path / "failfsync.c"
    src.write_text(SHIM)
    lib = tmp_path / "libfailfsync.so"
    try:
        subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(lib), str(src), "-ldl"], check=True)
    except FileNotFoundError:
        pytest.skip("gcc is needed to build the fsync-failure shim")
    return lib


def producer(bootstrap):
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": bootstrap, "acks": "all", "retries": 0, "linger.ms": 0,
                     "message.timeout.ms": 10000, "enable.idempotence": False, "log_level": 0})


def produce(p, topic, value):
    result = {}

    def done(err, msg):
        result["err"] = err.name() if err else None
        result["offset"] = msg.offset()

    p.produce(topic, value=value, partition=0, on_delivery=done)
    p.flush(30)
    return result


def test_a_failed_fsync_takes_the_partition_offline_until_a_restart(broker_factory, shim, tmp_path):
    flag = tmp_path / "fail-now"
    data = tmp_path / "data"
    env = {"LD_PRELOAD": str(shim), "FAIL_FSYNC_FLAG": str(flag), "FAIL_FSYNC_UNDER": str(data / "synced-0")}
    broker = broker_factory({"log.flush.interval.messages": "1"}, data_dir=data, env=env)
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in admin.create_topics([NewTopic("synced", 1, 1), NewTopic("other", 1, 1)]).values():
        f.result(15)
    p = producer(broker.bootstrap)
    assert produce(p, "synced", b"before")["err"] is None
    flag.touch()
    assert produce(p, "synced", b"during")["err"] == "KAFKA_STORAGE_ERROR"
    flag.unlink()
    # The disk "works" again, but what the page cache holds can no longer be trusted.
    assert produce(p, "synced", b"after")["err"] == "KAFKA_STORAGE_ERROR", "an offline partition took a write"
    with pytest.raises(AssertionError):
        consume_all(broker.bootstrap, "synced", timeout=5)
    # The rest of the broker serves on.
    assert produce(p, "other", b"fine")["err"] is None
    text = broker.log_tail(max_bytes=200_000)
    assert "taken offline" in text and "fsync" in text and "synced-0" in text, text[-3000:]
    broker.restart()
    values = [v for _, v in consume_all(broker.bootstrap, "synced")]
    # "during" was refused; whether its bytes reached the disk is what recovery finds.
    assert values[0] == b"before" and b"after" not in values, values
    assert produce(p, "synced", b"again")["err"] is None
