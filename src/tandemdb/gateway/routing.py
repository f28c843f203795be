"""The gateway's routing table: which node serves each environment, kept current by a watch.

The controller publishes routing at `GET /internal/v1/routing?after=R&wait=S` (a long poll:
it answers at once when its revision is newer than `after`, else after up to `S` seconds).
`RoutingWatch` keeps one such poll open at all times and replaces the `RoutingTable` with
every answer, so a request is routed from memory and never costs a controller call. With
several controllers (one per site, any of them answers) a failed poll moves the watch on to
the next one (common/controllers.py); they share one store, so revisions go on.

Until the first answer arrives the table is *not loaded*: data calls wait briefly for it and
then get 503 `unavailable`, never a misleading 404 for an environment that may well exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from prometheus_client import Counter, Gauge

from tandemdb.common.controllers import Controllers, describe
from tandemdb.common.http import SECRET_HEADER, ApiError

log = logging.getLogger("tandem.gateway.routing")

REVISION = Gauge("tandem_gateway_routing_revision", "Routing revision the gateway holds")
ROUTED_ENVS = Gauge("tandem_gateway_routing_environments", "Environments in the routing table")
WATCH_FAILURES = Counter("tandem_gateway_routing_failures_total",
                         "Failed routing polls of the controller")


@dataclass(frozen=True)
class Target:
    """One replica a request can be sent to."""

    env: str
    region: str
    node: str
    url: str
    role: str
    epoch: int


@dataclass(frozen=True)
class Route:
    """Where one environment lives: its primary and its replica in each region."""

    env: str
    epoch: int
    primary_region: str
    replicas: dict[str, Target]  # region -> replica
    switching: bool = False  # a failover runs: calls to the primary wait for its end
    operation: str | None = None  # the last operation that changed the environment

    @property
    def primary(self) -> Target | None:
        return self.replicas.get(self.primary_region)

    @classmethod
    def parse(cls, env: str, record: dict) -> Route:
        epoch = int(record.get("epoch", 0))
        replicas = {
            region: Target(env, region, spec.get("node") or "",
                           (spec.get("url") or "").rstrip("/"), spec.get("role") or "", epoch)
            for region, spec in (record.get("replicas") or {}).items()
        }
        return cls(env, epoch, record.get("primary_region", ""), replicas,
                   bool(record.get("switching")), record.get("operation"))


class RoutingTable:
    """Environment -> route, replaced whole on every routing answer; lookups are dict reads."""

    def __init__(self, regions: list[str]) -> None:
        self.regions = list(regions)
        self.revision = -1
        self.routes: dict[str, Route] = {}
        self.loaded = False
        self.updated_at = 0.0
        self._changed = asyncio.Event()

    def __contains__(self, env: str) -> bool:
        return env in self.routes

    def update(self, answer: dict) -> None:
        """Install one routing answer: the whole table `{"revision", "environments"}`, or
        what changed since the revision we hold `{"revision", "changes": {env: record or
        None}}`."""
        revision = int(answer["revision"])
        if "changes" in answer:
            routes = dict(self.routes)
            for env, record in answer["changes"].items():
                if record is None:
                    routes.pop(env, None)
                else:
                    routes[env] = Route.parse(env, record)
        else:
            routes = {env: Route.parse(env, record)
                      for env, record in (answer.get("environments") or {}).items()}
        if revision < self.revision:
            log.warning("routing: revision went back from %d to %d (controller state reset?); "
                        "taking the controller's answer", self.revision, revision)
        if revision != self.revision:
            self._log_changes(routes, answer.get("changes"))
        self.routes, self.revision = routes, revision
        self.loaded, self.updated_at = True, time.monotonic()
        REVISION.set(revision)
        ROUTED_ENVS.set(len(routes))
        # Wake every waiter, then arm a fresh event for the next change.
        self._changed.set()
        self._changed = asyncio.Event()

    def _log_changes(self, routes: dict[str, Route], changed: dict | None) -> None:
        for env in routes if changed is None else [e for e in changed if e in routes]:
            route, old = routes[env], self.routes.get(env)
            if old is None:
                log.info("routing: %s added, primary in %s (epoch %d)", env,
                         route.primary_region, route.epoch)
            elif (old.primary_region, old.epoch) != (route.primary_region, route.epoch):
                log.info("routing: %s primary now in %s (epoch %d), was %s (epoch %d)", env,
                         route.primary_region, route.epoch, old.primary_region, old.epoch)
            if route.switching != (old is not None and old.switching):
                log.info("routing: %s %s (operation %s)", env, "held: failing over"
                         if route.switching else "released", route.operation)
        for env in self.routes.keys() - routes.keys():
            log.info("routing: %s removed", env)

    def lookup(self, env: str, region: str | None = None) -> Target:
        """The replica to send a call to: the primary, or the replica in `region`.

        Raises 404 for an unknown environment, 400 for an unknown region or one without a
        replica of this environment, 503 when the table has no primary for it.
        """
        if region is not None and region not in self.regions:
            raise ApiError(400, "bad_request",
                           f"unknown region {region!r}: regions are {', '.join(self.regions)}")
        route = self.routes.get(env)
        if route is None:
            raise ApiError(404, "not_found",
                           f"environment {env!r} does not exist: 'tandem env list' shows them")
        if region is None or region == route.primary_region:
            target = route.primary
            if target is None or not target.url:
                raise ApiError(503, "unavailable",
                               f"environment {env!r} has no reachable primary right now "
                               "(its node has not reported); retry shortly",
                               {"Retry-After": "1"})
            return target
        target = route.replicas.get(region)
        if target is None:
            raise ApiError(400, "no_replica",
                           f"environment {env!r} has no replica in region {region!r}; it has "
                           f"replicas in {', '.join(sorted(route.replicas)) or 'no region'}")
        if not target.url:
            raise ApiError(503, "unavailable",
                           f"the node of {env!r} in {region} has not reported its address yet; "
                           "retry shortly", {"Retry-After": "1"})
        return target

    async def wait_loaded(self, seconds: float) -> bool:
        """Wait until the first routing answer has loaded, up to `seconds`."""
        deadline = time.monotonic() + seconds
        while not self.loaded:
            left = deadline - time.monotonic()
            if left <= 0 or not await self._wait_change(left):
                return self.loaded
        return True

    async def wait_until(self, predicate: Callable[[RoutingTable], bool],
                         seconds: float) -> bool:
        """Wait until `predicate(self)` holds after some update, up to `seconds`."""
        deadline = time.monotonic() + seconds
        while not predicate(self):
            left = deadline - time.monotonic()
            if left <= 0 or not await self._wait_change(left):
                return predicate(self)
        return True

    async def _wait_change(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._changed.wait(), seconds)
            return True
        except TimeoutError:
            return False


class RoutingWatch:
    """Background task: long-poll the controller's routing and keep the table current."""

    def __init__(self, table: RoutingTable, controllers: Controllers, secret: str,
                 wait: float = 20.0, max_backoff: float = 1.0) -> None:
        self.table, self.controllers, self.wait = table, controllers, wait
        self.max_backoff = max_backoff
        self._http = httpx.AsyncClient(
            headers={SECRET_HEADER: secret},
            timeout=httpx.Timeout(wait + 10.0, connect=2.0),
            limits=httpx.Limits(max_connections=2, max_keepalive_connections=1))
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="routing-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._http.aclose()

    async def run(self) -> None:
        failures, backoff = 0, 0.1
        while True:
            url = self.controllers.url
            try:
                answer = await self.poll(url)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: log it, move on, back off, retry
                failures += 1
                WATCH_FAILURES.inc()
                delay = backoff * (0.5 + random.random() / 2)
                if failures == 1 or failures % 20 == 0:
                    log.warning("routing: cannot poll the controller at %s (%s); "
                                "retry %d in %.2f s", url, describe(exc), failures, delay)
                self.controllers.move_on(url, describe(exc))
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            self.controllers.answered(url)
            if failures:
                log.info("routing: controller %s reachable after %d failed polls", url,
                         failures)
            failures, backoff = 0, 0.1
            self.table.update(answer)

    async def poll(self, url: str) -> dict:
        # Without `after` the controller answers at once: that is the first load.
        params = {"after": self.table.revision, "wait": self.wait} if self.table.loaded else {}
        response = await self._http.get(f"{url}/internal/v1/routing", params=params)
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
        answer = response.json()
        if "revision" not in answer:
            raise RuntimeError("answer without 'revision'")
        return answer
