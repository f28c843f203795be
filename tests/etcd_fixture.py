"""Throw-away etcd clusters for tests: real `etcd` processes on loopback ports.

    with etcd_cluster(tmp_path, members=3) as cluster:
        store = EtcdStore(cluster.endpoints, prefix="t/")
        cluster.kill("etcd-1")       # SIGKILL, as a crash
        cluster.start("etcd-1")      # back on its own data dir

`shared_etcd(request)` is one 1-member cluster per test session (per xdist worker), for
tests that only need somewhere to store keys; give each test its own prefix
(`unique_prefix()`).
"""

from __future__ import annotations

import atexit
import contextlib
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tandemdb import etcd_local
from tandemdb.etcd_local import EtcdMember
from tandemdb.local import free_base_port

HOST = "127.0.0.1"


@dataclass
class EtcdCluster:
    members: list[EtcdMember]
    token: str
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    def member(self, name: str) -> EtcdMember:
        return next(m for m in self.members if m.name == name)

    def start(self, name: str) -> subprocess.Popen:
        """Start (or restart, on its existing data dir) one member; does not wait."""
        process = etcd_local.start(self.member(name), self.members, self.token)
        self.processes[name] = process
        return process

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        process.wait(10)

    def wait_ready(self, timeout: float = etcd_local.READY_TIMEOUT) -> None:
        """Every running member answers and follows the same leader, one of them (after
        a kill, the others keep naming a dead leader until their election timeout)."""
        running = [self.member(name).client_url for name in self.processes]
        etcd_local.wait_ready(running, timeout)
        deadline = time.monotonic() + timeout
        while True:
            statuses = [httpx.post(f"{url}/v3/maintenance/status", json={}, timeout=1).json()
                        for url in running]
            ids = {s["header"]["member_id"] for s in statuses}
            if len({s.get("leader") for s in statuses}) == 1 and statuses[0].get("leader") in ids:
                return
            assert time.monotonic() < deadline, f"no leader among {running}: {statuses}"
            time.sleep(0.1)

    def stop(self) -> None:
        for name in list(self.processes):
            self.kill(name, signal.SIGTERM)


@contextmanager
def etcd_cluster(path: Path, members: int = 1) -> Iterator[EtcdCluster]:
    """A new `members`-member etcd cluster with its data under `path`, ready on entry
    and stopped on the way out."""
    base = free_base_port(2 * members)
    cluster = EtcdCluster(
        [EtcdMember(f"etcd-{i}", path / f"etcd-{i}", HOST, base + 2 * i, base + 2 * i + 1)
         for i in range(members)], token=f"test-{uuid.uuid4().hex[:8]}")
    try:
        for member in cluster.members:
            cluster.start(member.name)
        cluster.wait_ready()
        yield cluster
    finally:
        cluster.stop()


def shared_etcd(request: pytest.FixtureRequest) -> EtcdCluster:
    """One 1-member cluster for the whole session, started on first use."""
    config = request.config
    cluster = getattr(config, "_tandem_etcd", None)
    if cluster is None:
        path = request.getfixturevalue("tmp_path_factory").mktemp("etcd")
        manager = etcd_cluster(path)
        cluster = manager.__enter__()
        config._tandem_etcd = cluster  # type: ignore[attr-defined]
        config.add_cleanup(lambda: manager.__exit__(None, None, None))
        atexit.register(cluster.stop)  # should a worker skip the cleanup (etcd outlives it)
    return cluster


def unique_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}/"
