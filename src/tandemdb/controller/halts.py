"""`replication.halted` and `replication.resumed`: a halted stream, as tenants hear of it.

A secondary that cannot apply an entry halts that environment's stream (node/halts.py) and
reports `halted` (lsn, code, message …) in each heartbeat until a re-seed or a new role ends
it. The controller tells of each halt once: `replication.halted` when a report first shows
it, `replication.resumed` when the node reports that replica without it. Which halts were
told is kept in the store under `halts/<env>/<node>`, written in the event's own
transaction, so a controller restart neither repeats nor misses one. The gauge
`tandem_controller_replication_halted{env,region}` is 1 while a reported halt lasts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from prometheus_client import Gauge

from .events import Events, EventType
from .store import Txn
from .topology import Topology

log = logging.getLogger("tandem.controller.halts")

PREFIX = "halts/"
MAX_MESSAGE = 2000

HALTED = Gauge("tandem_controller_replication_halted",
               "1 while a geo-secondary's stream is halted at an entry it cannot apply",
               ["env", "region"])


def reseed_hint(env: str, region: str | None) -> str:
    """What fixes a halt: the command and the call that re-seed the replica."""
    return (f"tandem env reseed {env} --region {region} "
            f"(POST /v1/environments/{env}/replicas/{region}/reseed)")


def parse_halt(raw: object) -> dict | None:
    """The `halted` field of a heartbeat's replica report, checked; None if absent/invalid."""
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
        return None

    def number(key: str) -> int | float | None:
        value = raw.get(key)
        return value if isinstance(value, int | float) and not isinstance(value, bool) \
            else None

    return {"id": raw["id"][:64], "lsn": number("lsn"), "applied_lsn": number("applied_lsn"),
            "code": str(raw.get("code") or "unknown")[:100],
            "message": str(raw.get("message") or "")[:MAX_MESSAGE],
            "primary_node": raw.get("primary_node") if isinstance(raw.get("primary_node"),
                                                                  str) else None,
            "epoch": number("epoch"), "at": number("at")}


def iso(at: float | None) -> str | None:
    if at is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1000):03d}Z"


class HaltWatch:
    def __init__(self, topology: Topology, events: Events) -> None:
        self.topology, self.events = topology, events
        self._told: dict[str, dict[str, str]] = {}  # node -> env -> id of the halt told of

    async def observe(self, node: str, replicas: dict[str, dict]) -> None:
        """Compare a node's report with the halts told of; emit an event on each change.
        Never raises: a heartbeat must be answered whatever happens here."""
        try:
            await self._observe(node, replicas)
        except Exception:  # the next heartbeat tries again
            log.exception("cannot record the halted streams reported by %s", node)

    async def _observe(self, node: str, replicas: dict[str, dict]) -> None:
        told = self._told.get(node)
        if told is None:  # first report since the start: what was told before it
            told = self._told[node] = await asyncio.to_thread(self._load, node)
        region = self.topology.region_of(node)
        for env, report in replicas.items():
            halt = parse_halt(report.get("halted"))
            if halt is not None:
                HALTED.labels(env, region).set(1)
                if told.get(env) != halt["id"]:
                    await self._halted(env, node, region, halt)
                    told[env] = halt["id"]
            elif env in told:
                await self._resumed(env, node, region, report)
                del told[env]
        for env in [e for e in told if e not in replicas]:
            # That replica is gone from the node (dropped, the environment deleted).
            await asyncio.to_thread(self._forget, env, node)
            self._clear(env, region)
            del told[env]

    def _load(self, node: str) -> dict[str, str]:
        told = {}
        for key, item in self.events.store.list(PREFIX).items():
            env, _, owner = key[len(PREFIX):].rpartition("/")
            if owner == node and isinstance(item.value, dict):
                told[env] = str(item.value.get("id"))
        return told

    async def _halted(self, env: str, node: str, region: str | None, halt: dict) -> None:
        fix = reseed_hint(env, region)
        log.warning("environment %s: replication to %s (%s) halted at lsn %s (%s: %s); that "
                    "secondary is not being updated; fix: %s", env, node, region,
                    halt["lsn"], halt["code"], halt["message"], fix)
        data = {"node": node, "lsn": halt["lsn"], "applied_lsn": halt["applied_lsn"],
                "error": {"code": halt["code"], "message": halt["message"]},
                "primary_node": halt["primary_node"], "epoch": halt["epoch"],
                "halted_at": iso(halt["at"]), "fix": fix}

        def build(txn: Txn) -> dict:
            event = self.events.stage(txn, EventType.REPLICATION_HALTED, environment=env,
                                      region=region, data=data)
            txn.put(_key(env, node), {"id": halt["id"], "lsn": halt["lsn"],
                                      "event": event["id"]})
            return event

        await asyncio.to_thread(self._commit, build)

    async def _resumed(self, env: str, node: str, region: str | None, report: dict) -> None:
        seeding = bool(report.get("seeding"))
        log.info("environment %s: replication to %s (%s) is no longer halted (%s)", env, node,
                 region, "re-seeding from a snapshot" if seeding else f"now {report.get('role')}")
        data = {"node": node, "role": report.get("role"), "seeding": seeding,
                "applied_lsn": report.get("last_lsn")}

        def build(txn: Txn) -> dict:
            txn.delete(_key(env, node))
            return self.events.stage(txn, EventType.REPLICATION_RESUMED, environment=env,
                                     region=region, data=data)

        await asyncio.to_thread(self._commit, build)
        self._clear(env, region)

    def _forget(self, env: str, node: str) -> None:
        self._commit(lambda txn: txn.delete(_key(env, node)))

    def _commit(self, build: Callable[[Txn], object]) -> None:
        self.events.commit(build, "a halt's event")

    @staticmethod
    def _clear(env: str, region: str | None) -> None:
        with contextlib.suppress(KeyError):  # not set in this process
            HALTED.remove(env, region)


def _key(env: str, node: str) -> str:
    return f"{PREFIX}{env}/{node}"
