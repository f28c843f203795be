"""Heartbeats: report status up to the controller, take desired replicas back down.

Every `heartbeat_interval` the node posts its replicas (role, epoch, last lsn, seeding
progress, and for primaries each consumer's acknowledged lsn and lag) to
`/internal/v1/heartbeat`. The answer is the full list of replicas this node should host;
the node creates what is missing, drops what is no longer listed and adopts roles. When
the controller cannot be reached the node logs it and carries on with what it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

import httpx

from tandemdb.common.http import SECRET_HEADER, ApiError
from tandemdb.engine import EngineError

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
        self.url = node.deployment.controller_url + "/internal/v1/heartbeat"
        self.client = httpx.AsyncClient(
            headers={SECRET_HEADER: node.deployment.secret},
            timeout=httpx.Timeout(max(2.0, 4 * self.interval), connect=1.0))
        self._failing_since: float | None = None
        self._warned_at = 0.0

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
            replicas[replica.name] = entry
        return {"node": self.node.name, "region": self.node.region, "url": self.node.url,
                "replicas": replicas}

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
            await asyncio.sleep(max(0.05, self.interval - (loop.time() - started)))

    async def beat(self) -> None:
        response = await self.client.post(self.url, json=await self.report())
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
        await self.reconcile(desired)

    async def reconcile(self, desired: list[dict]) -> None:
        """Create what is missing, adopt roles, drop what is no longer listed."""
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
            if replica.name not in listed:
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
