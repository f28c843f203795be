"""etcd members run as child processes: for `tandem up --store etcd` and the tests.

Each member is one `etcd` process with its own data dir. The argv is built here, in one
place, so `tandem up`, the tests and a deployment guide start etcd the same way. A member
restarted on a data dir it already initialised rejoins as itself: etcd then ignores the
`--initial-cluster*` flags, so the same argv serves a first start and every restart.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

ETCD_ENV = "TANDEM_ETCD"  # path of the etcd binary, when not /usr/bin/etcd or on PATH
DEBIAN_ETCD = "/usr/bin/etcd"
# Keep the last 10,000 revisions for watches; a watcher further behind gets `Compacted`
# (the same horizon as the SQLite store's KEEP_CHANGES).
COMPACTION_RETENTION = "10000"
# The largest write etcd takes (its default is 1.5 MiB): a rejoin stores an environment's
# lost writes as one value, which can be larger.
MAX_REQUEST_BYTES = str(8 * 1024 * 1024)
READY_TIMEOUT = 15.0


class EtcdError(RuntimeError):
    """etcd is missing, or a member did not come up; the message says what to do."""


@dataclass(frozen=True)
class EtcdMember:
    """One etcd member: its name, where its data lives and the ports it listens on."""

    name: str
    data_dir: Path
    host: str
    client_port: int
    peer_port: int

    @property
    def client_url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"


def etcd_binary() -> str:
    """The etcd server to run: `$TANDEM_ETCD`, Debian's /usr/bin/etcd, or `etcd` on PATH."""
    configured = os.environ.get(ETCD_ENV)
    if configured:
        if not os.access(configured, os.X_OK):
            raise EtcdError(f"{ETCD_ENV}={configured} is not an executable etcd server")
        return configured
    found = DEBIAN_ETCD if os.access(DEBIAN_ETCD, os.X_OK) else shutil.which("etcd")
    if found is None:
        raise EtcdError("no etcd server found (looked at $TANDEM_ETCD, /usr/bin/etcd and "
                        "PATH): install Debian's etcd-server package (./dev does it)")
    return found


def command(member: EtcdMember, members: Sequence[EtcdMember], token: str) -> list[str]:
    """The argv that starts `member` as part of the cluster `members`.

    Heartbeat 50 ms and election timeout 500 ms (etcd's defaults are 100 and 1000): a lost
    etcd leader is replaced within about a second, while the leading controller still
    holds its lease (it steps down after 1.8 s without a keepalive, controller/leader.py),
    so losing one member, even the raft leader, does not depose the controller. Members on
    one machine or one LAN answer heartbeats in well under a millisecond."""
    cluster = ",".join(f"{m.name}={m.peer_url}" for m in members)
    return [
        etcd_binary(),
        "--name", member.name,
        "--data-dir", str(member.data_dir),
        "--listen-client-urls", member.client_url,
        "--advertise-client-urls", member.client_url,
        "--listen-peer-urls", member.peer_url,
        "--initial-advertise-peer-urls", member.peer_url,
        "--initial-cluster", cluster,
        "--initial-cluster-state", "new",
        "--initial-cluster-token", token,
        "--heartbeat-interval", "50",
        "--election-timeout", "500",
        "--auto-compaction-mode", "revision",
        "--auto-compaction-retention", COMPACTION_RETENTION,
        "--max-request-bytes", MAX_REQUEST_BYTES,
        "--logger", "zap",
        "--log-level", "warn",
    ]


def start(member: EtcdMember, members: Sequence[EtcdMember], token: str,
          log: Path | None = None) -> subprocess.Popen:
    """Start `member` in the background (logging to `log`, default `<data_dir>.log`)."""
    member.data_dir.parent.mkdir(parents=True, exist_ok=True)
    log = log or member.data_dir.with_name(member.data_dir.name + ".log")
    with open(log, "ab") as out:
        return subprocess.Popen(command(member, members, token), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def wait_ready(urls: Sequence[str], timeout: float = READY_TIMEOUT) -> None:
    """Wait until every client URL answers and reports a leader (the cluster has quorum)."""
    deadline = time.monotonic() + timeout
    waiting = list(urls)
    last: dict[str, str] = {url: "no answer yet" for url in urls}
    with httpx.Client(timeout=1.0) as http:
        while waiting:
            for url in list(waiting):
                try:
                    status = http.post(f"{url}/v3/maintenance/status", json={})
                    leader = int(status.json().get("leader", 0)) if status.is_success else 0
                    if leader:
                        waiting.remove(url)
                    else:
                        last[url] = f"HTTP {status.status_code}, no leader yet"
                except (httpx.HTTPError, ValueError) as exc:
                    last[url] = f"{type(exc).__name__}: {exc}"
            if waiting and time.monotonic() >= deadline:
                reasons = "; ".join(f"{url}: {last[url]}" for url in waiting)
                raise EtcdError(f"etcd not ready within {timeout:g} s ({reasons})")
            if waiting:
                time.sleep(0.1)


def check_answers(urls: Sequence[str], timeout: float = 8.0) -> None:
    """An etcd cluster that runs already: at least one endpoint must answer and see a raft
    leader within `timeout`; else EtcdError naming every endpoint and what each did."""
    deadline = time.monotonic() + timeout
    last: dict[str, str] = {}
    with httpx.Client(timeout=httpx.Timeout(2.0, connect=1.0)) as http:
        while True:
            for url in urls:
                try:
                    status = http.post(f"{url}/v3/maintenance/status", json={})
                    if status.is_success and int(status.json().get("leader", 0)):
                        return
                    last[url] = f"HTTP {status.status_code}, no raft leader"
                except (httpx.HTTPError, ValueError) as exc:
                    last[url] = f"{type(exc).__name__}: {exc}"
                if time.monotonic() >= deadline:
                    break
            if time.monotonic() >= deadline:
                break
            time.sleep(0.2)
    raise EtcdError(f"the etcd cluster at {', '.join(urls)} does not answer ("
                    + "; ".join(f"{url}: {why}" for url, why in last.items()) + ")")
