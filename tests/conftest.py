"""Shared harness of the Tern test suites (``tests/compat``: real clients;
``tests/faults``: fault injection).

Every test runs against the real ``tern`` binary (``$TERN_BIN`` or
``<target dir>/release/tern``), started on a free loopback port with a fresh
data directory.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# The helper modules (wire, checks, partitioning, ...) live beside the compat tests.
sys.path.insert(0, str(HERE / "compat"))

import wire  # noqa: E402

HOST = "127.0.0.1"
# Settings every test broker gets unless a test overrides them (None removes one): the first
# member of a new group is not kept waiting for others (Kafka's default is 3000 ms).
DEFAULT_SETTINGS = {"group.initial.rebalance.delay.ms": "0"}
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


def tern_bin() -> Path:
    env = os.environ.get("TERN_BIN")
    if env:
        return Path(env)
    target = os.environ.get("CARGO_TARGET_DIR")
    target = Path(target) if target else REPO / "target"
    if not target.is_absolute():
        target = REPO / target
    return target / "release" / "tern"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class BrokerError(AssertionError):
    pass


_LIVE = set()  # brokers started by this pytest process, for emergency cleanup


def _kill_all_brokers():
    for b in list(_LIVE):
        try:
            if b.proc is not None and b.proc.poll() is None:
                b.proc.kill()
        except OSError:
            pass


class Broker:
    """A single tern broker process on 127.0.0.1."""

    def __init__(self, data_dir: Path, log_dir: Path, settings=None, config_file=None, port=None, name="tern",
                 env=None):
        self.data_dir = Path(data_dir)
        self.log_dir = Path(log_dir)
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        self.config_file = config_file
        self.port = port or free_port()
        self.name = name
        self.env = dict(env or {})  # extra environment variables for the broker process
        self.proc = None
        self.starts = 0
        self.log_paths = []
        self._log_file = None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)

    # -- addresses -------------------------------------------------------
    @property
    def host(self):
        return HOST

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    # -- lifecycle -------------------------------------------------------
    def command(self):
        cmd = [str(tern_bin()), "serve", "--listen", self.bootstrap, "--data-dir", str(self.data_dir)]
        if self.config_file:
            cmd += ["--config", str(self.config_file)]
        for k, v in self.settings.items():
            if v is not None:
                cmd += ["--set", f"{k}={v}"]
        return cmd

    def start(self):
        binary = tern_bin()
        if not binary.exists():
            raise BrokerError(
                f"tern binary not found at {binary}; build it with `cargo build --release -p tern` "
                f"or set TERN_BIN")
        assert self.proc is None or self.proc.poll() is not None, "broker already running"
        self.starts += 1
        log_path = self.log_dir / f"{self.name}-{self.starts}.stderr.log"
        self.log_paths.append(log_path)
        self._log_file = open(log_path, "wb")
        env = {**os.environ, **self.env}
        env.setdefault("RUST_BACKTRACE", "1")
        self.proc = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
            env=env, start_new_session=True)
        _LIVE.add(self)
        self.wait_ready()
        return self

    def wait_ready(self, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        last_err = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(
                    f"tern exited with status {self.proc.returncode} during startup\n"
                    f"command: {' '.join(self.command())}\n{self.log_tail()}")
            try:
                if wire.api_versions_ok(HOST, self.port, timeout=2.0):
                    return
                last_err = "ApiVersions answered with an error"
            except (OSError, AssertionError, wire.ConnectionClosed) as e:
                last_err = repr(e)
            time.sleep(0.1)
        raise BrokerError(
            f"tern did not answer ApiVersions on {self.bootstrap} within {timeout}s (last error: {last_err})\n"
            f"command: {' '.join(self.command())}\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _close_log(self):
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def stop(self, timeout=STOP_TIMEOUT):
        """Graceful stop: SIGTERM and wait. Fails if the broker does not exit."""
        if self.proc is None or self.proc.poll() is not None:
            self._close_log()
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self._close_log()
            raise BrokerError(f"tern did not exit within {timeout}s of SIGTERM\n{self.log_tail()}")
        self._close_log()
        return rc

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._close_log()

    def restart(self, graceful=True):
        if graceful:
            self.stop()
        else:
            self.kill9()
        return self.start()

    def cleanup(self):
        try:
            if self.alive():
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
        finally:
            self._close_log()

    # -- debugging -------------------------------------------------------
    def log_tail(self, max_bytes=20000) -> str:
        parts = []
        for p in self.log_paths[-2:]:
            try:
                data = p.read_bytes()
            except OSError as e:
                parts.append(f"--- {p}: unreadable ({e})")
                continue
            if len(data) > max_bytes:
                data = b"...\n" + data[-max_bytes:]
            parts.append(f"--- {p} ---\n{data.decode('utf-8', 'replace')}")
        return "\n".join(parts) if parts else "(no broker log)"

    def __repr__(self):
        return f"Broker({self.bootstrap}, data_dir={self.data_dir})"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for b in getattr(item, "_tern_brokers", []):
            status = "running" if b.alive() else f"exited ({b.proc.returncode if b.proc else 'never started'})"
            rep.sections.append((f"tern broker {b.bootstrap} [{status}] log", b.log_tail()))


@pytest.fixture
def broker_factory(request, tmp_path):
    """Start brokers with extra settings: ``broker_factory({"num.partitions": 6})``, optionally on a
    given ``data_dir`` (default: a fresh one under the test's tmp_path)."""
    brokers = []
    item = request.node
    item._tern_brokers = brokers

    def make(settings=None, data_dir=None, **kw):
        idx = len(brokers)
        data_dir = data_dir or tmp_path / f"data-{idx}"
        b = Broker(data_dir, tmp_path / "logs", settings=settings, name=f"tern-{idx}", **kw)
        brokers.append(b)
        b.start()
        return b

    yield make
    for b in brokers:
        b.cleanup()


@pytest.fixture
def broker(broker_factory):
    return broker_factory()


def pytest_configure(config):
    # If the run itself is killed (timeout(1), CI cancel), do not leave brokers behind.
    import atexit

    atexit.register(_kill_all_brokers)

    def on_term(signum, frame):
        _kill_all_brokers()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    # kafka-python's schema loader emits hundreds of importlib DeprecationWarnings.
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:kafka")
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:importlib")
