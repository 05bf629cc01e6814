"""Broker start-up with bad, unknown or unsupported settings: every setting is honoured or
refused with a message naming it; unknown keys are listed once at WARN; operator output has no
colour codes when it does not go to a terminal and names the files involved."""

import subprocess
import time

from confluent_kafka.admin import AdminClient, ConfigResource

import wire
from conftest import free_port, tern_bin

START_TIMEOUT = 60


def run_serve(tmp_path, *args, settings=None):
    """Starts `tern serve` expecting it to refuse. Returns (exit status, output), with status
    None if it served instead (it answered ApiVersions; it is then stopped)."""
    port = free_port()
    cmd = [str(tern_bin()), "serve", *args]
    if "--listen" not in args and "listeners" not in (settings or {}):
        cmd += ["--listen", f"127.0.0.1:{port}"]
    if "--data-dir" not in args:
        cmd += ["--data-dir", str(tmp_path / "data")]
    for k, v in (settings or {}).items():
        cmd += ["--set", f"{k}={v}"]
        if k == "listeners":
            port = int(v.split(",")[0].rsplit(":", 1)[1])
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        status = None
        try:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    status = proc.returncode
                    break
                try:
                    if wire.api_versions_ok("127.0.0.1", port, timeout=1.0):
                        break
                except (OSError, AssertionError, wire.ConnectionClosed):
                    pass
                time.sleep(0.05)
            else:
                raise AssertionError(f"tern serve neither started nor exited: {cmd}")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
    return status, log.read_text(errors="replace")


def refusals(tmp_path, cases):
    """Starts the broker with each case's settings ({label: (key, settings)}); returns the
    cases that were not refused with a message naming `key`, with what happened."""
    wrong = {}
    for i, (label, (key, settings)) in enumerate(cases.items()):
        case_dir = tmp_path / f"case-{i}"
        case_dir.mkdir()
        status, out = run_serve(case_dir, settings=settings)
        if status is None:
            wrong[label] = "served"
        elif status == 0 or key not in out or "panicked" in out:
            wrong[label] = f"exit {status}: {out[-2000:]}"
    return wrong


REFUSED = {
    "num.partitions": "0",
    "socket.request.max.bytes": "-1",
    "log.retention.check.interval.ms": "0",
    "offsets.topic.num.partitions": "0",
    "log.segment.bytes": "13",
    "log.cleaner.min.cleanable.ratio": "1.5",
    "group.max.size": "0",
    "node.id": "-3",
    "default.replication.factor": "3",
    "auto.create.topics.enable": "yes",
    "log.retention.hours": "many",
    "message.max.bytes": "99999999999",
    "compression.type": "brotli",
    "authorizer.class.name": "kafka.security.authorizer.AclAuthorizer",
}


def test_invalid_values_are_refused_naming_the_key(tmp_path):
    cases = {key: (key, {key: value}) for key, value in REFUSED.items()}
    assert refusals(tmp_path, cases) == {}


def test_listeners_other_than_plaintext_are_refused(tmp_path):
    cases = {}
    for listeners in [
        "SSL://127.0.0.1:{port}",
        "SASL_PLAINTEXT://127.0.0.1:{port}",
        "PLAINTEXT://127.0.0.1:{port},SSL://127.0.0.1:{other}",
    ]:
        value = listeners.format(port=free_port(), other=free_port())
        cases[value] = ("listeners", {"listeners": value})
    cases["advertised"] = ("advertised.listeners", {"advertised.listeners": "SSL://127.0.0.1:9093"})
    assert refusals(tmp_path, cases) == {}


def test_unknown_keys_are_listed_once_at_warn(broker_factory):
    broker = broker_factory({"no.such.setting": "1", "log.retension.ms": "5", "num.partitions": "2"})
    log = broker.log_tail()
    warnings = [line for line in log.splitlines() if "not used" in line]
    assert len(warnings) == 1, log
    assert "WARN" in warnings[0] and "no.such.setting" in warnings[0] and "log.retension.ms" in warnings[0], log
    assert "num.partitions" not in warnings[0], log


def test_log_has_no_colour_codes_when_not_a_terminal(broker):
    log = broker.log_tail()
    assert "tern broker started" in log, log
    assert "\x1b[" not in log, repr(log[:500])


def test_startup_errors_name_the_file(tmp_path):
    missing = tmp_path / "nowhere" / "server.properties"
    status, out = run_serve(tmp_path, "--config", str(missing))
    assert status not in (None, 0) and str(missing) in out, out
    not_a_dir = tmp_path / "plainfile"
    not_a_dir.write_text("x")
    status, out = run_serve(tmp_path, "--data-dir", str(not_a_dir))
    assert status not in (None, 0) and str(not_a_dir) in out, out
    assert "\x1b[" not in out, repr(out)


def test_group_initial_rebalance_delay_defaults_to_kafkas(broker_factory):
    """Kafka's built-in 3000 ms, not 0: the first member of a new group waits for others."""
    broker = broker_factory({"group.initial.rebalance.delay.ms": None})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    res = ConfigResource(ConfigResource.Type.BROKER, "1")
    configs = admin.describe_configs([res])[res].result(timeout=30)
    assert configs["group.initial.rebalance.delay.ms"].value == "3000"


def test_config_file_values_are_validated_too(tmp_path):
    config = tmp_path / "server.properties"
    config.write_text("num.partitions=-4\n")
    status, out = run_serve(tmp_path, "--config", str(config))
    assert status not in (None, 0) and "num.partitions" in out and str(config) in out, out
