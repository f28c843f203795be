"""The sync rule on a primary (docs/ha.md): a write is acknowledged only once its sync
secondary has acknowledged (applied, durably) the write's entry.

The write gate commits, then waits here on the event loop; a group commit waits once for
the whole group. The sync secondary's acknowledgement is its position in its next stream
request (stream.py), which wakes the waiters (`Replica.notify`).

**Losing sync, safely.** A wait longer than `timeout` asks the controller to record the
sync secondary `sync: false` (POST /internal/v1/environments/{env}/sync). Only its 200 lets
the primary stop waiting for that replica (`Replica.sync_lost_before`): the controller's
record says false before any write the replica lacks is acknowledged. While the controller
cannot be reached (or refuses), writes wait; past `bound` they fail with 503
`sync_unavailable`, their outcome unknown: committed here, never acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import math

import httpx

from tandemdb.common.http import SECRET_HEADER, ApiError
from tandemdb.common.roles import Role

from .metrics import SYNC_WAIT
from .replicas import Replica

log = logging.getLogger("tandem.node.syncrule")

SYNC_TIMEOUT = 1.0  # the sync secondary's silence after which the primary asks to drop it
SYNC_BOUND = 10.0  # a write waits at most this long, then fails (outcome unknown)
RETRY_EVERY = 0.25  # while the controller cannot record the change, ask again this often


def bounded(value: object, default: float, low: float, high: float) -> float:
    """A node setting in seconds, kept within [low, high] (the default if it is no number)."""
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value):
        return default
    return min(max(float(value), low), high)


class SyncRule:
    """The primaries' wait for their sync secondary, and the request that ends it."""

    def __init__(self, node: str, controller_url: str, secret: str,
                 timeout: float = SYNC_TIMEOUT, bound: float = SYNC_BOUND) -> None:
        self.node, self.controller_url, self.secret = node, controller_url, secret
        self.timeout = timeout
        self.bound = max(bound, timeout)
        self._asking: dict[str, asyncio.Task] = {}  # env -> its request to drop sync
        self._client: httpx.AsyncClient | None = None

    async def wait(self, replica: Replica, lsn: int) -> None:
        """Return once `lsn` may be acknowledged: the sync secondary named when the wait
        starts has acknowledged it, or the primary no longer waits for it (the controller
        recorded it `sync: false`, or a newer record names another). Raise 503
        `sync_unavailable` past the bound."""
        node = replica.sync_node
        if node is None:
            return
        loop = asyncio.get_running_loop()
        start = loop.time()
        with SYNC_WAIT.time():
            while not self._done(replica, node, lsn):
                waited = loop.time() - start
                if waited >= self.bound:
                    raise self._unavailable(replica, node, lsn, waited)
                if waited >= self.timeout:
                    self._ask_to_drop(replica, node)
                    until = RETRY_EVERY
                else:
                    until = self.timeout - waited
                await replica.changed(min(until, self.bound - waited))

    @staticmethod
    def _done(replica: Replica, node: str, lsn: int) -> bool:
        consumer = replica.consumers.get(node)
        if consumer is not None and consumer.acked_lsn >= lsn:
            return True
        # Only a primary's record can stop the wait: a fenced one keeps waiting for the ack.
        return replica.record.role is Role.PRIMARY and replica.sync_node != node

    def _ask_to_drop(self, replica: Replica, node: str) -> None:
        """Start the request to record `node` as `sync: false`, unless one is under way."""
        task = self._asking.get(replica.name)
        if task is None or task.done():
            self._asking[replica.name] = asyncio.create_task(
                self._drop(replica, node, replica.record.epoch), name=f"unsync {replica.name}")

    async def _drop(self, replica: Replica, node: str, epoch: int) -> None:
        """One request; only a 200 stops the waits (the next wait round asks again)."""
        body = {"node": node, "sync": False, "epoch": epoch, "primary": self.node}
        url = f"{self.controller_url}/internal/v1/environments/{replica.name}/sync"
        try:
            response = await self.client().post(url, json=body)
        except httpx.HTTPError as exc:
            log.warning("%s: sync secondary %s has not acknowledged for %gs and the "
                        "controller cannot be reached to record it unsynced (%s); writes "
                        "wait", replica.name, node, self.timeout, type(exc).__name__)
            await asyncio.sleep(RETRY_EVERY)
            return
        answer = _json(response)
        version = answer.get("version")
        if response.status_code != 200 or type(version) is not int \
                or answer.get("sync") is not False:
            log.warning("%s: the controller did not record %s unsynced (HTTP %d: %s); "
                        "writes wait", replica.name, node, response.status_code,
                        response.text[:200])
            await asyncio.sleep(RETRY_EVERY)
            return
        if replica.record.epoch == epoch and replica.sync_node == node:
            replica.sync_lost_before = max(replica.sync_lost_before, version)
            log.warning("%s: sync lost: the controller recorded %s as sync: false (catalog "
                        "version %d); writes are acknowledged without it", replica.name, node,
                        version)
            replica.notify()

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                headers={SECRET_HEADER: self.secret},
                timeout=httpx.Timeout(max(self.timeout, 1.0), connect=0.5))
        return self._client

    async def close(self) -> None:
        for task in self._asking.values():
            task.cancel()
        await asyncio.gather(*self._asking.values(), return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    def _unavailable(self, replica: Replica, node: str, lsn: int, waited: float) -> ApiError:
        return ApiError(503, "sync_unavailable", f"the write to {replica.name} committed on "
                        f"its primary (lsn {lsn}) but was not acknowledged: its sync "
                        f"secondary {node} has not confirmed it for {waited:.1f}s and the "
                        "controller has not recorded that replica as unsynced. The write's "
                        "outcome is unknown (if the primary is replaced, it is rewound and "
                        "listed among the lost writes); read before retrying it",
                        {"Retry-After": "1"})


def _json(response: httpx.Response) -> dict:
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}
