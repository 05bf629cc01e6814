"""Fixtures of the cluster suite: a `Cluster` in the test's tmp_path, always torn down
(`tern cluster down`, then SIGKILL for anything left), its node logs attached to a failed test's
report and left in place under tmp_path."""

import atexit
import os
import signal

import pytest

from cluster import Cluster, ClusterError

_LIVE = []  # clusters made by this pytest process, for emergency cleanup


def _kill_all_clusters():
    for c in list(_LIVE):
        try:
            c.kill_leftovers()
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass


def pytest_configure(config):
    # The nodes run in their own sessions: a killed pytest (timeout(1), CI cancel) must take
    # them down itself. tests/conftest.py's handler (brokers) is chained, not replaced.
    atexit.register(_kill_all_clusters)
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        _kill_all_clusters()
        if callable(previous):
            previous(signum, frame)
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for c in getattr(item, "_tern_clusters", []):
            for cmd, rc, out, err in c.history[-6:]:
                rep.sections.append((f"`{' '.join(cmd[1:])}` -> {rc}", f"stdout:\n{out}\nstderr:\n{err}"))
            try:
                ids = c.node_ids()
            except (OSError, KeyError, ValueError):
                rep.sections.append((f"tern cluster {c.dir}", "no layout file"))
                continue
            for n in ids:
                state = f"running, pid {c.pid(n)}" if c.running(n) else "not running"
                rep.sections.append((f"tern cluster node {n} [{state}] log (kept in {c.log_path(n)})",
                                     c.log_tail(n)))


@pytest.fixture
def cluster_factory(request, tmp_path):
    """Makes `Cluster`s in the test's tmp_path (not started: call `.up()`); tears every one
    down at the end, whatever happened."""
    made = []
    request.node._tern_clusters = made

    def make(nodes=3, settings=None, name="cluster", cls=Cluster, **kwargs):
        c = cls(tmp_path / name, nodes=nodes, settings=settings, **kwargs)
        made.append(c)
        _LIVE.append(c)
        return c

    yield make
    problems = []
    for c in made:
        if not c.started():
            continue
        # A SIGSTOPped node would sit out `down`'s grace period: `down` sends SIGCONT after
        # SIGTERM, and SIGKILL ends it anyway.
        try:
            c.down()
        except ClusterError as e:
            problems.append(f"{c}: tern cluster down failed: {e}")
        killed = c.kill_leftovers()
        if killed:
            problems.append(f"{c}: SIGKILLed nodes left running after down: {killed}")
        _LIVE.remove(c)
    if problems:
        # Teardown trouble is reported, never hidden; the nodes are gone either way.
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def cluster(cluster_factory):
    """A 3-node cluster, not started yet."""
    return cluster_factory()


@pytest.fixture
def running_cluster(cluster_factory):
    """A 3-node cluster, up and serving."""
    c = cluster_factory()
    c.up()
    return c
