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
`sync_unavailable`, their outcome unknown: committed here, never acknowledged. With
several controllers, a request that met no connection or a 503 asks the next one the next
time (common/controllers.py): recording a value is a set, and may be asked twice.

**Regaining sync**, in the other order. A local secondary the record names without sync,
once it has come close (`REGAIN_WITHIN` entries), is waited for again on every write
(`Replica.regaining`; the geo rule follows it too). Once it has acknowledged the primary's
last lsn of that moment (every write acknowledged without it is at or below), the primary
asks the controller to record it `sync: true`. Should a write wait too long meanwhile, the
primary gives up regaining by itself only if it never asked; once it asked, the catalog
may say true, so it asks for `sync: false` as for a sync secondary.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from tandemdb.common.controllers import Controllers, describe
from tandemdb.common.http import KEEPALIVE_SECONDS, SECRET_HEADER, ApiError
from tandemdb.common.roles import Role

from .metrics import SYNC_WAIT
from .replicas import Replica

log = logging.getLogger("tandem.node.syncrule")

SYNC_TIMEOUT = 1.0  # the sync secondary's silence after which the primary asks to drop it
SYNC_BOUND = 10.0  # a write waits at most this long, then fails (outcome unknown)
RETRY_EVERY = 0.25  # while the controller cannot record the change, ask again this often
REGAIN_WITHIN = 100  # a local secondary this close to the primary's lsn may regain sync
REGAIN_BACKOFF = 5.0  # after giving up regaining, wait this long before trying again


class SyncUnavailable(ApiError):
    """503 `sync_unavailable`: a write committed here that its sync secondary never
    confirmed. `result` is what the commit answered (a group's own per-transaction errors
    stand: those transactions were not written)."""

    result: object = None


@dataclass
class Regain:
    """A local secondary regaining sync: what it must acknowledge before the primary asks
    for `sync: true`, and whether it asked (the catalog may say true from then on)."""

    node: str
    from_lsn: int
    asked: bool = False


def holds(history: Sequence[tuple[int, int]], lsn: int, epoch: int) -> bool:
    """Whether a replica with this epoch history ((epoch, start lsn), oldest first) holds
    the entry at `lsn` written in `epoch` and a newer epoch began at or after it: then that
    entry is in every later history. Epoch `epoch` had one primary (invariant 2), which
    numbered its entries, so an entry of `epoch` at `lsn` in this history is that one."""
    in_force = [e for e, start in history if start < lsn]
    return bool(in_force) and max(in_force) == epoch and any(
        e > epoch and start >= lsn for e, start in history)


class SyncRule:
    """The primaries' wait for their sync secondary, and the request that ends it."""

    def __init__(self, node: str, region: str, controller_urls: Sequence[str], secret: str,
                 timeout: float = SYNC_TIMEOUT, bound: float = SYNC_BOUND,
                 regain: bool = True) -> None:
        self.node, self.region = node, region
        self.regain = regain  # False (deployment `sync_commit: false`): never regain sync
        self.controllers = Controllers(controller_urls, "sync records", log)
        self.secret = secret
        self.timeout = timeout
        self.bound = max(bound, timeout)
        self._asking: dict[str, asyncio.Task] = {}  # env -> its request to the controller
        self._regain: dict[str, Regain] = {}  # env -> its local secondary regaining sync
        self._regain_after: dict[str, float] = {}  # env -> no regaining before (loop time)
        self._client: httpx.AsyncClient | None = None

    async def wait(self, replica: Replica, lsn: int, epoch: int) -> None:
        """Return once `lsn` (committed in `epoch`) may be acknowledged: the sync secondary
        named when the wait starts has acknowledged it, or the primary no longer waits for
        it (the controller recorded it `sync: false`, or a newer record names another), or
        this replica now follows a newer primary whose history holds it. Raise 503
        `sync_unavailable` past the bound."""
        node = replica.waits_for
        if node is None:
            return
        loop = asyncio.get_running_loop()
        start = loop.time()
        with SYNC_WAIT.time():
            while not self._done(replica, node, lsn, epoch):
                waited = loop.time() - start
                if waited >= self.bound:
                    raise self._unavailable(replica, node, lsn, waited)
                if waited >= self.timeout:
                    self._timed_out(replica, node)
                    until = RETRY_EVERY
                else:
                    until = self.timeout - waited
                await replica.changed(min(until, self.bound - waited))

    @staticmethod
    def _done(replica: Replica, node: str, lsn: int, epoch: int) -> bool:
        consumer = replica.consumers.get(node)
        if consumer is not None and consumer.acked_lsn >= lsn:
            return True
        # Only a primary's record can stop the wait: a fenced one keeps waiting for the ack.
        if replica.record.role is Role.PRIMARY and replica.waits_for != node:
            return True
        # A switchover within the region: the sync secondary was promoted at this entry or
        # past it before its acknowledgement came. This replica, now its secondary, learns
        # it from the new primary's epoch history (stream answers) or its own.
        env = replica.env
        return env is not None and (holds(replica.upstream_epochs, lsn, epoch)
                                    or holds(env.epoch_history, lsn, epoch))

    def _timed_out(self, replica: Replica, node: str) -> None:
        """A write waited `timeout` for `node`: stop waiting for it, safely."""
        regain = self._regain.get(replica.name)
        if replica.sync_node is None and regain is not None and regain.node == node \
                and not regain.asked and not self._busy(replica):
            self._stop_regaining(replica, "it did not keep up")  # the catalog says false
            return
        self._ask(replica, node, False)

    def _stop_regaining(self, replica: Replica, why: str) -> None:
        if replica.regaining is not None:
            log.info("%s: %s stops regaining sync: %s", replica.name, replica.regaining, why)
        replica.regaining = None
        self._regain.pop(replica.name, None)
        self._regain_after[replica.name] = asyncio.get_running_loop().time() + REGAIN_BACKOFF
        replica.notify()

    # -- regaining ------------------------------------------------------------------------
    def acknowledged(self, replica: Replica, node: str) -> None:
        """A stream request of `node` acknowledged `replica` (event loop): regain sync,
        step by step, if it is a local secondary the record names without sync."""
        if not self.regain:
            return
        if replica.sync_node is not None or replica.record.role is not Role.PRIMARY:
            if replica.regaining is not None or replica.name in self._regain:
                replica.regaining = None  # the record names its sync secondary now
                self._regain.pop(replica.name, None)
            return
        env, consumer = replica.env, replica.consumers.get(node)
        if env is None or consumer is None or not any(
                peer.node == node and peer.region == self.region
                for peer in replica.record.secondaries):
            return
        regain = self._regain.get(replica.name)
        if regain is not None and all(p.node != regain.node
                                      for p in replica.record.secondaries):
            # Its replica was re-created elsewhere (a drain, self-healing): regain with the
            # new one, at once (a request of ours for the old one is refused, not_local).
            log.info("%s: %s, which was regaining sync, is no longer its secondary",
                     replica.name, regain.node)
            replica.regaining, regain = None, None
            self._regain.pop(replica.name, None)
        if regain is None or replica.regaining != node:
            loop = asyncio.get_running_loop()
            if replica.regaining is None and env.last_lsn - consumer.acked_lsn <= REGAIN_WITHIN \
                    and loop.time() >= self._regain_after.get(replica.name, 0.0):
                replica.regaining = node  # every write waits for it from here on
                self._regain[replica.name] = Regain(node, env.last_lsn)
                log.info("%s: %s is regaining sync (waited for from lsn %d)", replica.name,
                         node, env.last_lsn)
        elif not regain.asked and consumer.acked_lsn >= regain.from_lsn \
                and not self._busy(replica):
            regain.asked = True  # from here on, the catalog may say true
            self._ask(replica, node, True)

    # -- the controller's record ----------------------------------------------------------
    def _busy(self, replica: Replica) -> bool:
        task = self._asking.get(replica.name)
        return task is not None and not task.done()

    def _ask(self, replica: Replica, node: str, sync: bool) -> None:
        """Ask the controller to record `node` with `sync`, unless a request is under way
        (one at a time per environment: they land in the order asked)."""
        if not self._busy(replica):
            self._asking[replica.name] = asyncio.create_task(
                self._record(replica, node, sync, replica.record.epoch),
                name=f"sync {sync} {replica.name}")

    async def _record(self, replica: Replica, node: str, sync: bool, epoch: int) -> None:
        """One request; only a 200 changes what the primary waits for (a write still
        waiting asks again)."""
        body = {"node": node, "sync": sync, "epoch": epoch, "primary": self.node}
        controller = self.controllers.url
        url = f"{controller}/internal/v1/environments/{replica.name}/sync"
        what = "sync" if sync else "unsynced"
        try:
            response = await self.client().post(url, json=body)
        except httpx.HTTPError as exc:
            self.controllers.move_on(controller, describe(exc))
            log.warning("%s: the controller cannot be reached to record %s %s (%s)%s",
                        replica.name, node, what, type(exc).__name__,
                        "" if sync else "; writes wait")
            await self._not_recorded(replica, node, sync)
            return
        self.controllers.heard(controller, response)
        answer = _json(response)
        version = answer.get("version")
        if response.status_code != 200 or type(version) is not int \
                or answer.get("sync") is not sync:
            log.warning("%s: the controller did not record %s %s (HTTP %d: %s)",
                        replica.name, node, what, response.status_code, response.text[:200])
            await self._not_recorded(replica, node, sync)
            return
        if sync:
            log.info("%s: sync restored: the controller recorded %s as sync: true (catalog "
                     "version %d)", replica.name, node, version)
        elif replica.record.epoch == epoch and replica.waits_for == node:
            replica.sync_lost_before = max(replica.sync_lost_before, version)
            log.warning("%s: sync lost: the controller recorded %s as sync: false (catalog "
                        "version %d); writes are acknowledged without it", replica.name, node,
                        version)
            self._stop_regaining(replica, "recorded unsynced")

    async def _not_recorded(self, replica: Replica, node: str, sync: bool) -> None:
        """After a pause, let the change be asked again: a write still waiting asks again
        for `sync: false`; a regain asks again for `sync: true` at its replica's next
        acknowledgement (else it would stay pending, and never be recorded)."""
        await asyncio.sleep(RETRY_EVERY)
        regain = self._regain.get(replica.name)
        if sync and regain is not None and regain.node == node:
            regain.asked = False

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                headers={SECRET_HEADER: self.secret},
                timeout=httpx.Timeout(max(self.timeout, 1.0), connect=0.5),
                limits=httpx.Limits(keepalive_expiry=KEEPALIVE_SECONDS))
        return self._client

    async def close(self) -> None:
        for task in self._asking.values():
            task.cancel()
        await asyncio.gather(*self._asking.values(), return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    def _unavailable(self, replica: Replica, node: str, lsn: int,
                     waited: float) -> SyncUnavailable:
        return SyncUnavailable(503, "sync_unavailable", f"the write to {replica.name} committed on "
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
