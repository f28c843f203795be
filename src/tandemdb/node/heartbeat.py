"""Heartbeats: report status up to the controller, take desired replicas back down.

Every `heartbeat_interval` the node posts its replicas (role, epoch, last lsn, seeding
progress, and for primaries each consumer's acknowledged lsn and lag) to
`/internal/v1/heartbeat`. The answer is the full list of replicas this node should host;
the node creates what is missing, drops what is no longer listed and adopts roles. When
the controller cannot be reached the node logs it and carries on with what it has.

Each answer also renews the node's lease (`{"lease": {"ttl": s}}`, docs/leases.md). The
lease counts from the moment just before the heartbeat was sent, and is renewed only
after the answer's replicas were reconciled: role and epoch changes the controller asks
for take effect before the lease that comes with them. Once the lease runs out (the
controller unreachable for ttl - margin), primaries on this node refuse writes, except
those whose geo-secondary still vouches for them by pulling (the failsafe lease).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

import httpx

from tandemdb.common.deployment import CONTROLLER
from tandemdb.common.http import SECRET_HEADER, ApiError
from tandemdb.engine import EngineError

from .lease import usable_ttl
from .replicas import ReplicaSet

if TYPE_CHECKING:
    from .app import Node

log = logging.getLogger("tandem.node.heartbeat")

REPEAT_WARNING = 30.0  # while the controller stays unreachable, say so this often


class Heartbeat:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.replicas: ReplicaSet = node.replicas
        self.interval = node.deployment.heartbeat_interval
        self.url = node.deployment.link_url(node.name, CONTROLLER) + "/internal/v1/heartbeat"
        self.client = httpx.AsyncClient(
            headers={SECRET_HEADER: node.deployment.secret},
            timeout=httpx.Timeout(max(2.0, 4 * self.interval), connect=1.0))
        self.lease = node.lease
        self._failing_since: float | None = None
        self._warned_at = 0.0
        self._lease_lost = False  # the lease ran out and the node said so in its log
        self._unvouched: set[str] = set()  # primaries whose failsafe ran out, logged once
        self._warned_no_grant = False

    async def report(self) -> dict:
        replicas = {}
        for replica in self.replicas:
            env = replica.env
            entry = {"role": replica.role,
                     "epoch": env.epoch if env is not None else replica.record.epoch,
                     "last_lsn": env.last_lsn if env is not None else 0,
                     "seeding": dict(replica.seeding) if replica.seeding else None}
            if replica.consumers:
                await replica.refresh_lag()
                entry["consumers"] = replica.consumers_report()
            if replica.stream_error:
                entry["error"] = replica.stream_error
            if replica.halted is not None:  # a halted stream (puller.py, halts.py)
                entry["halted"] = dict(replica.halted)
            replicas[replica.name] = entry
        remaining = self.lease.remaining()
        # The controller's parser ignores fields it does not know; this one is for people
        # reading the reports (and a controller that wants to show it).
        puller = self.node.puller
        return {"node": self.node.name, "region": self.node.region, "url": self.node.url,
                "replicas": replicas,
                "lease_remaining": None if remaining is None else round(remaining, 3),
                "peers": puller.peer_report() if puller is not None else {}}

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep beating whatever happened
                self._failed(exc)
            self._watch_lease()
            await asyncio.sleep(max(0.05, self.interval - (loop.time() - started)))

    async def beat(self) -> None:
        body = await self.report()
        sent_at = self.lease.clock()  # before sending: the controller answers after this
        response = await self.client.post(self.url, json=body)
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
        answer = response.json()
        desired = answer.get("replicas") if isinstance(answer, dict) else None
        if not isinstance(desired, list) or not all(isinstance(d, dict) for d in desired):
            raise RuntimeError("heartbeat answer has no list of replicas; ignoring it")
        if self._failing_since is not None:
            log.info("controller reachable again after %.1fs",
                     time.monotonic() - self._failing_since)
            self._failing_since = None
        revision = answer.get("revision")
        await self.reconcile(desired, revision if type(revision) is int else None)
        self.renew(answer.get("lease"), sent_at)

    def renew(self, raw: object, sent_at: float) -> None:
        """Renew the lease from an answer to the heartbeat sent at `sent_at`."""
        if not self.lease.required:
            return
        ttl = usable_ttl(raw)
        if ttl is None:
            if not self._warned_no_grant:
                self._warned_no_grant = True
                log.warning("the controller's heartbeat answer grants no lease (%r); "
                            "primaries on %s take no writes until it does", raw,
                            self.node.name)
            return
        self._warned_no_grant = False
        self.lease.grant(sent_at, ttl)
        if self._lease_lost and self.lease.valid():  # (a late answer may renew nothing)
            self._lease_lost = False
            self._unvouched.clear()
            log.info("lease renewed by the controller: primaries on %s take writes again",
                     self.node.name)

    def _watch_lease(self) -> None:
        """Say once in the log when the lease runs out, and once per primary when its
        failsafe lease runs out too (its writes stop)."""
        if not self.lease.required or self.lease.expires_at is None or self.lease.valid():
            return
        if not self._lease_lost:
            self._lease_lost = True
            log.warning("%s; primaries on %s now take writes only while their geo-secondary "
                        "vouches for them by pulling (failsafe), the others refuse writes "
                        "(503 no_lease) until the controller answers a heartbeat again",
                        self.lease.describe(), self.node.name)
        now = self.lease.clock()
        for replica in self.replicas:
            if replica.role != "primary":
                continue
            vouched, name = now < replica.failsafe_until, replica.name
            if vouched and name in self._unvouched:
                self._unvouched.discard(name)
                log.info("environment %s (epoch %d): its geo-secondary vouches for it again; "
                         "it takes writes under the failsafe lease", name, replica.record.epoch)
            elif not vouched and name not in self._unvouched:
                self._unvouched.add(name)
                log.warning("environment %s (epoch %d): no lease from the controller, and %s: "
                            "it refuses writes (503 no_lease)", name, replica.record.epoch,
                            self.replicas.describe_failsafe(replica))

    async def reconcile(self, desired: list[dict], revision: int | None = None) -> None:
        """Create what is missing, adopt roles, drop what is no longer listed.

        An answer can arrive after a newer admin call (a failover step, a creation) that
        it did not know of: `ensure` ignores records older than the replica's, and a
        replica whose record is newer than the answer's `revision` is not dropped."""
        listed = set()
        for record in desired:
            name = record.get("env")
            if not isinstance(name, str):
                log.warning("desired replica without an env name: %r", record)
                continue
            listed.add(name)
            try:
                await self.replicas.ensure(name, record)
            except (ApiError, EngineError) as exc:
                log.error("cannot adopt desired replica %s: %s", name, exc)
        for replica in self.replicas:
            if replica.name not in listed and (revision is None
                                               or replica.record.version <= revision):
                log.info("replica %s is no longer wanted on %s; dropping it", replica.name,
                         self.node.name)
                with contextlib.suppress(ApiError):  # dropped meanwhile
                    await self.replicas.drop(replica.name)

    def _failed(self, exc: Exception) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
            self._warned_at = now
            log.warning("heartbeat to the controller failed (%s: %s); carrying on with the "
                        "replicas this node has", type(exc).__name__, exc)
        elif now - self._warned_at >= REPEAT_WARNING:
            self._warned_at = now
            log.warning("controller unreachable for %.0fs (%s)", now - self._failing_since,
                        type(exc).__name__)

    async def close(self) -> None:
        await self.client.aclose()
