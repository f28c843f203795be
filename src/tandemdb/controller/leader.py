"""Which controller leads: the one whose etcd lease holds the leader key (docs/deploy.md).

Several controllers (one per site) share one etcd. Each campaigns for `control/leader`: it
creates the key under a lease of its own only if nobody holds it (Patroni's leader key).
The holder keeps its lease alive every `ttl / 8`; if it dies, is paused or loses etcd, the
lease runs out after `ttl` seconds, the key goes, and a follower that polls every
`POLL_SECONDS` takes it.

A crashed leader need not be waited out: a follower that finds the holder's port refusing
connections for `GONE_SECONDS` (nobody listens there: the process is gone) ends the
holder's lease itself, and the election follows at once. A hung or unreachable leader
times out instead of refusing, and is waited out.

Safety does not rest on timing: once elected, every write of the leader's store checks in
the same etcd transaction that the leader key still holds this term's value (the store's
`fence`), so a deposed leader, even one paused and resumed long after, changes nothing.
Timing only keeps a deposed leader from acting on nodes: it steps down on its own once a
keepalive has not succeeded for `STEP_DOWN` of the ttl, before a follower can be elected.

Stepping down restarts the process in place (`os.execv`, same pid, same command line):
the controller's in-memory state belongs to one term, and a fresh process starts the next
one as a follower. With SQLite (one controller) this controller always leads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from .store import Store, StoreError
from .store.etcd import EtcdStore, Holder, LeaseLost

log = logging.getLogger("tandem.controller.leader")

LEADER_KEY = "control/leader"
POLL_SECONDS = 0.2  # how often a follower looks for a vacant leader key
# A leader without a successful keepalive for this share of the ttl resigns: etcd ends the
# lease a ttl after the last keepalive it took, which came after the one we sent (and a new
# raft leader renews every lease), so 0.9 keeps a margin while leaving an etcd election
# (0.5-1 s with etcd_local's settings) time to end without deposing a healthy leader.
STEP_DOWN = 0.9
GONE_SECONDS = 0.3  # a leader whose port refuses connections this long has no process
PROBE_SECONDS = 0.2


class Leadership:
    """This controller's view of who leads; `run` campaigns and keeps the lease."""

    def __init__(self, store: Store, name: str, url: str, ttl: int) -> None:
        self.store, self.name, self.url, self.ttl = store, name, url, ttl
        self.etcd = store if isinstance(store, EtcdStore) else None
        self.elected = self.etcd is None  # SQLite: the only controller leads
        self.leading = self.elected  # elected, and its term has started
        self.leader: dict | None = self._value(time.time()) if self.elected else None
        self.lease: int | None = None
        self.renewed = time.monotonic()  # when the last keepalive was sent that succeeded
        self.problem: str | None = None  # why nobody can lead now (etcd unreachable …)
        self._refused: dict[int, float] = {}  # a holder's lease -> since when it refuses
        # Keepalives never queue behind the store calls of a busy term (a region failover's
        # many operations share the default pool): a late keepalive deposes the leader.
        self._lease_thread = ThreadPoolExecutor(1, thread_name_prefix="lease")

    def _value(self, since: float) -> dict:
        return {"name": self.name, "url": self.url, "since": round(since, 3)}

    async def run(self, start_term: Callable[[], Awaitable[None]]) -> None:
        """Campaign until elected, start the term (`start_term`, while the lease is kept),
        then keep the lease until it is lost, and then restart the process. With nothing to
        elect (SQLite), just start the term."""
        if self.etcd is None:
            await start_term()
            return
        term: asyncio.Task | None = None
        while True:
            try:
                if not self.elected:
                    await asyncio.get_running_loop().run_in_executor(
                        self._lease_thread, self._campaign, self.etcd)
                    if not self.elected:
                        await asyncio.sleep(POLL_SECONDS)
                        continue
                    log.info("%s is elected leader (lease %x, ttl %d s)", self.name,
                             self.lease or 0, self.ttl)
                    term = asyncio.create_task(self._start(start_term))
                await self._keepalive(self.etcd)
                await asyncio.sleep(self.ttl / 8)
            except (StoreError, TimeoutError) as exc:
                self.problem = f"{type(exc).__name__}: {exc}" if str(exc) else \
                    "etcd did not answer in time"
                if self.elected and (isinstance(exc, LeaseLost) or
                                     time.monotonic() - self.renewed > STEP_DOWN * self.ttl):
                    self.step_down(self.problem)
                log.warning("%s: %s", self.name, self.problem)
                await asyncio.sleep(POLL_SECONDS)
            if term is not None and term.done() and term.exception() is not None:
                self.step_down(f"its term failed to start: {term.exception()!r}")

    async def _start(self, start_term: Callable[[], Awaitable[None]]) -> None:
        await start_term()
        self.leading = True
        log.info("%s leads the controllers", self.name)

    async def _keepalive(self, etcd: EtcdStore) -> None:
        """Renew the lease and check the key still holds this term; a keepalive that has
        not answered by the step-down time is as good as lost (TimeoutError)."""
        sent = time.monotonic()
        budget = max(0.05, STEP_DOWN * self.ttl - (sent - self.renewed))
        holder = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(
            self._lease_thread, self._renew, etcd), budget)
        if holder is None or holder.value != self.leader:
            # The key went some other way than our lease (deleted by hand, say): our
            # writes are refused already (the fence); stop trying them.
            raise LeaseLost(f"the leader key now holds {holder.value if holder else 'nothing'}")
        self.renewed, self.problem = sent, None

    def _renew(self, etcd: EtcdStore) -> Holder | None:
        etcd.keepalive(self.lease or 0)
        return etcd.holder(LEADER_KEY)

    def _campaign(self, store: EtcdStore) -> None:
        """One try: learn the holder; if there is none, take the key under a new lease."""
        holder = store.holder(LEADER_KEY)
        if holder is not None:
            self.leader, self.problem = holder.value, None
            if self._gone(holder):
                log.warning("%s: the leader %s refuses connections at %s (its process is "
                            "gone); ending its lease %x now", self.name,
                            holder.value.get("name"), holder.value.get("url"), holder.lease)
                store.revoke(holder.lease)
            return
        self._refused.clear()
        lease = store.grant(self.ttl)
        value = self._value(time.time())
        if store.acquire(LEADER_KEY, value, lease):
            store.fence(LEADER_KEY, value)  # type: ignore[arg-type]  # every write checks it
            self.lease, self.leader, self.elected = lease, value, True
            self.renewed, self.problem = time.monotonic(), None
        else:
            store.revoke(lease)

    def _gone(self, holder: Holder) -> bool:
        """The holder's process is gone: its port has refused connections, again and again,
        for `GONE_SECONDS`. A refused connection is the kernel saying nobody listens there
        (a SIGKILLed or crashed controller); a hung or unreachable one times out instead,
        and its lease runs out as usual. Ending a live leader's lease by mistake costs an
        election, never a split brain: its writes are fenced by then."""
        url = holder.value.get("url") if isinstance(holder.value, dict) else None
        if not url or holder.value.get("name") == self.name:
            return False
        address = urlsplit(url)
        try:  # a bare TCP connect: cheap enough for every poll
            socket.create_connection((address.hostname, address.port or 80),
                                     timeout=PROBE_SECONDS).close()
        except ConnectionRefusedError:
            first = self._refused.setdefault(holder.lease, time.monotonic())
            return time.monotonic() - first >= GONE_SECONDS
        except OSError:  # a timeout, no route: not proof that nobody is there
            pass
        self._refused.pop(holder.lease, None)
        return False

    def remaining(self) -> float | None:
        """Seconds left on this leader's lease, as last renewed (None: not leading)."""
        if self.lease is None:
            return None
        return max(0.0, self.ttl - (time.monotonic() - self.renewed))

    def resign(self) -> None:
        """On a clean stop: give the key up now, so a follower need not wait out the ttl."""
        if self.etcd is not None and self.lease is not None:
            try:
                self.etcd.revoke(self.lease)
            except StoreError as exc:
                log.warning("%s: could not give up the leader key (%s); it goes when the "
                            "lease runs out", self.name, exc)

    def step_down(self, why: str) -> None:
        """Lost the lease, or may have: restart as a follower with a clean slate."""
        log.error("%s steps down as leader: %s; restarting as a follower", self.name, why)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])  # as it was started
