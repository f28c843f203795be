"""Heartbeats: report status up to the controller, take desired replicas back down.

Every `heartbeat_interval` the node posts its replicas (role, epoch, last lsn, seeding
progress, and for primaries each consumer's acknowledged lsn and lag) to
`/internal/v1/heartbeat`. The answer is the full list of replicas this node should host;
the node creates what is missing, drops what is no longer listed and adopts roles. When
the controller cannot be reached the node logs it and carries on with what it has.
With several controllers (one per site) the beats go to the one that leads
(common/leader_watch.py), its own site's first while none is known to, and move on to the
next after a connection failure, a timeout or a 503 (common/controllers.py).

Each answer also renews the node's lease (`{"lease": {"ttl": s}}`, docs/leases.md). The
lease counts from the moment just before the heartbeat was sent, and is renewed only
after the answer's replicas were reconciled: role and epoch changes the controller asks
for take effect before the lease that comes with them. Once the lease runs out (the
controller unreachable for ttl - margin), primaries on this node refuse writes, except
those whose geo-secondary still vouches for them by pulling (the failsafe lease).

**Its own thread** (issue 9, item 6): the beats run in a thread of their own, with their
own event loop and HTTP client, so no tenant's work can hold them up: not a long commit
that holds an engine's lock (the old report waited for it to read a lag), not the node's
event loop busy encoding a large answer, not the shared pool of worker threads. The
report is read from what the replicas know (reads of plain attributes); the node's loop
is asked to refresh the lag figures for the next one, without waiting for it. An answer
that changes nothing the node has (the steady state) renews the lease right there; one
that does (a new replica, a role, a drop) is handed to the node's loop, which owns the
replicas, and the lease is renewed only once that reconciliation has run. The beats go
on meanwhile, renewing nothing, so the controller still hears from a node whose loop is
busy. The heavy tenant work left (changesets, msgpack, JSON) holds the GIL for at most a
few hundred ms at the largest entry allowed; a short GIL switch interval gives the beats
the GIL soon after they ask (bench/README.md, `tandem bench isolation`).

A record the node cannot use (say an `rpo_limit_seconds` of 400 digits) is refused for that
one replica and logged once; the others are reconciled and the lease is renewed as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import threading
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING

import httpx

from tandemdb.common.controllers import Controllers, describe
from tandemdb.common.http import SECRET_HEADER, ApiError
from tandemdb.common.leader_watch import LeaderWatch
from tandemdb.common.roles import Role
from tandemdb.engine import EngineError

from .lease import usable_ttl
from .record import Record
from .replicas import Replica, ReplicaSet

if TYPE_CHECKING:
    from .app import Node

log = logging.getLogger("tandem.node.heartbeat")

REPEAT_WARNING = 30.0  # while the controller stays unreachable, say so this often
# The heartbeat thread needs the GIL for every step of a beat. While other threads run
# Python code, a waiting thread gets it after the switch interval (5 ms by default): many
# waits per beat made beats late by hundreds of ms under a busy neighbour. 1 ms keeps
# them on time (measured: bench/README.md, `tandem bench isolation`).
SWITCH_INTERVAL = 0.001
# A loop busy for a moment holds up no beat, but one that has not run for this long (a bug:
# a blocking call on it) serves nobody: the node stops beating, as it did when the beats
# ran on that loop, so that the controller sees it as unhealthy.
LOOP_STUCK_MIN = 5.0  # seconds, or twice the lease ttl if that is longer
STOP_WAIT = 10.0  # for the heartbeat thread to end at shutdown
PATH = "/internal/v1/heartbeat"


class Heartbeat:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.replicas: ReplicaSet = node.replicas
        self.interval = node.deployment.heartbeat_interval
        self.controllers = Controllers(node.deployment.controller_links(node.name),
                                       "heartbeats", log)
        self.lease = node.lease
        self._failing_since: float | None = None
        self._warned_at = 0.0
        self._lease_lost = False  # the lease ran out and the node said so in its log
        self._unvouched: set[str] = set()  # primaries whose failsafe ran out, logged once
        self._warned_no_grant = False
        self._refused: dict[str, str] = {}  # env -> why its desired record was refused
        self._lag_tasks: dict[str, asyncio.Task] = {}  # node loop: one look-up per replica
        self._main: asyncio.AbstractEventLoop | None = None  # the node's loop
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._beats: tuple[asyncio.AbstractEventLoop, asyncio.Task] | None = None
        self._applying: asyncio.Task | None = None  # heartbeat thread: an answer in hand
        self._loop_seen = time.monotonic()  # when the node's loop last ran for the beats
        self._loop_stuck = max(LOOP_STUCK_MIN, 2 * self.lease.ttl)

    # -- the thread ------------------------------------------------------------------------
    async def run(self) -> None:
        """On the node's loop: beat in a thread of its own until cancelled (and start it
        again should it ever end otherwise: a node never stops beating)."""
        self._main = asyncio.get_running_loop()
        self._stopping.clear()
        self._loop_seen = time.monotonic()
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        try:
            while True:
                ended = self._main.create_future()
                self._thread = threading.Thread(target=self._thread_main, args=(ended,),
                                                name=f"heartbeat-{self.node.name}",
                                                daemon=True)
                self._thread.start()
                await ended
                log.error("the heartbeat thread of %s ended; starting it again",
                          self.node.name)
                await asyncio.sleep(self.interval)
        finally:
            await self._stop_thread()

    def _thread_main(self, ended: asyncio.Future) -> None:
        try:
            asyncio.run(self._beat_forever())
        except Exception:  # said here; `run` starts the thread again
            log.exception("the heartbeat thread of %s failed", self.node.name)
        finally:
            main = self._main
            if main is not None and not main.is_closed():
                with contextlib.suppress(RuntimeError):  # the node's loop has just closed
                    main.call_soon_threadsafe(_resolve, ended)

    async def _beat_forever(self) -> None:
        """The heartbeat thread's loop: one beat every interval, whatever happens."""
        loop = asyncio.get_running_loop()
        self._beats = (loop, asyncio.current_task())  # type: ignore[assignment]
        self._applying = None
        timeout = httpx.Timeout(self.node.deployment.heartbeat_timeout, connect=1.0)
        steering = LeaderWatch([self.controllers])
        async with httpx.AsyncClient(headers={SECRET_HEADER: self.node.deployment.secret},
                                     timeout=timeout) as client:
            steering.start()
            try:
                with contextlib.suppress(asyncio.CancelledError):
                    while not self._stopping.is_set():
                        started = loop.time()
                        await self._beat_once(client)
                        await asyncio.sleep(max(0.05, self.interval - (loop.time() - started)))
            finally:
                await steering.stop()

    async def _beat_once(self, client: httpx.AsyncClient) -> None:
        """One beat and the lease check after it; nothing that goes wrong stops the beats."""
        try:
            await self.beat(client)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # keep beating whatever happened
            self._failed(exc)
        try:
            self._watch_lease()
        except Exception:  # a log line must not stop the beats
            log.exception("cannot check the lease of %s", self.node.name)

    async def _stop_thread(self) -> None:
        self._stopping.set()
        beats, thread = self._beats, self._thread
        if beats is not None:
            with contextlib.suppress(RuntimeError):  # its loop has ended already
                beats[0].call_soon_threadsafe(beats[1].cancel)
        if thread is not None and thread.is_alive():
            await asyncio.to_thread(thread.join, STOP_WAIT)
        self._thread = self._beats = None

    async def _on_main(self, coro: Coroutine) -> object:
        """Run `coro` on the node's loop (which owns the replicas) and wait for it."""
        main = self._main
        if main is None or main is asyncio.get_running_loop():
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, main))

    # -- one beat ----------------------------------------------------------------------
    async def beat(self, client: httpx.AsyncClient) -> None:
        """Report, then apply the answer: reconcile (if it changes anything), then renew."""
        # The report carries the lag figures known now, and the node's loop is asked to
        # refresh them for the next one: a busy engine or loop holds up no beat.
        main = self._main
        if main is not None and main is not asyncio.get_running_loop():
            silent = time.monotonic() - self._loop_seen
            if silent > self._loop_stuck:
                raise RuntimeError(f"the node's event loop has not run for {silent:.1f} s; "
                                   "no heartbeat is sent until it runs again")
            with contextlib.suppress(RuntimeError):  # the node's loop has just closed
                main.call_soon_threadsafe(self.look_up_lags)
        body = self.body()
        sent_at = self.lease.clock()  # before sending: the controller answers after this
        url = self.controllers.url
        try:
            response = await client.post(url + PATH, json=body)
        except httpx.TransportError as exc:
            self.controllers.move_on(url, describe(exc))
            raise
        self.controllers.heard(url, response)
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
        parsed = parse_answer(response.content)
        answer = parsed if isinstance(parsed, dict) else {}
        desired = answer.get("replicas")
        if not isinstance(desired, list) or not all(isinstance(d, dict) for d in desired):
            raise RuntimeError("heartbeat answer has no list of replicas; ignoring it")
        if self._failing_since is not None:
            log.info("controller reachable again after %.1fs",
                     time.monotonic() - self._failing_since)
            self._failing_since = None
        if self._applying is not None:
            return  # the node's loop still applies an earlier answer: this one renews nothing
        revision = answer.get("revision")
        revision = revision if type(revision) is int else None
        if self.settled(desired, revision):
            self.renew(answer.get("lease"), sent_at)
        else:
            # The beats go on (the controller keeps hearing from the node) while the node's
            # loop reconciles; the lease is renewed once it has.
            self._applying = asyncio.create_task(
                self._apply(desired, revision, answer.get("lease"), sent_at))

    async def _apply(self, desired: list[dict], revision: int | None, lease: object,
                     sent_at: float) -> None:
        """Heartbeat thread: have the node's loop reconcile an answer, then renew from it."""
        try:
            await self._on_main(self.reconcile(desired, revision))
        except Exception:  # an answer that cannot be applied renews nothing
            log.exception("cannot apply the controller's heartbeat answer; the lease is not "
                          "renewed by it")
        else:
            self.renew(lease, sent_at)
        finally:
            self._applying = None

    def settled(self, desired: list[dict], revision: int | None) -> bool:
        """True if reconciling `desired` would change nothing: every listed replica is here
        with that record (or a newer one), no replica is to be dropped, and every record
        this node cannot use is refused (and logged, once). Such an answer needs nothing
        from the node's loop, so a busy loop cannot hold up the lease it grants. Reads
        only: replicas and records are replaced whole by the node's loop."""
        listed = set()
        for raw in desired:
            name = raw.get("env")
            if not isinstance(name, str):
                return False
            listed.add(name)
            replica = self.replicas.find(name)
            record = self._usable(name, raw)
            if record is None:
                continue  # refused, and said so: this replica keeps the record it has
            if replica is None or replica.dropped:
                return False
            if record.version >= replica.record.version and record != replica.record:
                return False
        return not any(self._to_drop(replica, listed, revision) for replica in self.replicas)

    def _usable(self, name: str, raw: dict) -> Record | None:
        """The record, or None if this node cannot use it (then it says why, once)."""
        try:
            return Record.parse(raw)
        except ApiError as exc:
            self._refuse(name, exc.message)
            return None

    def _refuse(self, name: str, why: str) -> None:
        if self._refused.get(name) != why:
            self._refused[name] = why
            log.error("the controller's record of %s is refused: %s; that replica keeps the "
                      "record it has, the others go on", name, why)

    @staticmethod
    def _to_drop(replica: Replica, listed: set[str], revision: int | None) -> bool:
        return replica.name not in listed and (revision is None
                                               or replica.record.version <= revision)

    # -- the report ---------------------------------------------------------------------
    async def report(self) -> dict:
        """On the node's loop: the report with fresh lag figures (tests, tools)."""
        await self.refresh_lags()
        return self.body()

    async def refresh_lags(self) -> None:
        """On the node's loop: look up each primary's lag and wait for the look-ups."""
        self.look_up_lags()
        pending = [task for task in self._lag_tasks.values() if not task.done()]
        if pending:
            await asyncio.wait(pending)

    def look_up_lags(self) -> None:
        """On the node's loop: start a lag look-up for each primary that has none running.

        A look-up reads the journal under the engine's lock, so it waits for a long commit
        of that replica; the others are not held up by it, nor is any beat."""
        self._loop_seen = time.monotonic()
        tasks = self._lag_tasks
        for name in [name for name, task in tasks.items() if task.done()]:
            del tasks[name]
        for replica in self.replicas:
            if replica.consumers and replica.name not in tasks:
                task = asyncio.create_task(replica.refresh_lag(),
                                           name=f"lag-{replica.name}")
                task.add_done_callback(_log_lag_failure)
                tasks[replica.name] = task

    def body(self) -> dict:
        """What the node reports, from what its replicas know now. Safe from any thread:
        it only reads attributes, and copies each collection before walking it."""
        replicas = {}
        now = time.time()
        for replica in self.replicas:
            env = replica.env
            seeding = replica.seeding
            entry = {"role": replica.role,
                     "epoch": env.epoch if env is not None else replica.record.epoch,
                     "last_lsn": env.last_lsn if env is not None else 0,
                     "seeding": dict(seeding) if seeding else None}
            consumers = list(replica.consumers.items())
            if consumers:
                entry["consumers"] = {}
                for node, consumer in consumers:
                    entries, seconds = replica.lag(node, now)
                    entry["consumers"][node] = {"acked_lsn": consumer.acked_lsn,
                                                "lag_entries": entries,
                                                "lag_seconds": round(seconds, 3)}
            if replica.stream_error:
                entry["error"] = replica.stream_error
            halted = replica.halted  # replaced whole, never changed in place (halts.py)
            if halted is not None:  # a halted stream: the controller tells of it (halts.py)
                entry["halted"] = dict(halted)
            replicas[replica.name] = entry
        remaining = self.lease.remaining()
        # The controller's parser ignores fields it does not know; this one is for people
        # reading the reports (and a controller that wants to show it).
        return {"node": self.node.name, "region": self.node.region, "url": self.node.url,
                "replicas": replicas,
                "lease_remaining": None if remaining is None else round(remaining, 3),
                "peers": self._peers()}

    def _peers(self) -> dict:
        puller = self.node.puller
        return {} if puller is None else puller.peer_report()

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
            if replica.role != Role.PRIMARY:
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
                            self.node.gate.describe_failsafe(replica))

    async def reconcile(self, desired: list[dict], revision: int | None = None) -> None:
        """On the node's loop: create what is missing, adopt roles, drop what is no longer
        listed.

        An answer can arrive after a newer admin call (a failover step, a creation) that
        it did not know of: `ensure` ignores records older than the replica's, and a
        replica whose record is newer than the answer's `revision` is not dropped. A record
        this node cannot use is refused for that replica alone (logged once)."""
        listed = set()
        for record in desired:
            name = record.get("env")
            if not isinstance(name, str):
                log.warning("desired replica without an env name: %r", record)
                continue
            listed.add(name)
            if self._usable(name, record) is None:
                continue
            try:
                await self.replicas.ensure(name, record)
            except (ApiError, EngineError) as exc:
                self._refuse(name, f"cannot adopt it: {exc}")
            else:
                self._refused.pop(name, None)
        for replica in self.replicas:
            if self._to_drop(replica, listed, revision):
                log.info("replica %s is no longer wanted on %s; dropping it", replica.name,
                         self.node.name)
                with contextlib.suppress(ApiError):  # dropped meanwhile
                    await self.replicas.drop(replica.name)
        for name in set(self._refused) - listed:
            del self._refused[name]

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
        """Stop the heartbeat thread if it still runs (the node stops)."""
        await self._stop_thread()


def parse_answer(content: bytes) -> object:
    """The controller's answer as JSON. An integer too long for Python's int parser (over
    4300 digits) or for any use here is read as a float (inf): the record holding it is
    refused, instead of the whole answer and with it every replica's lease."""
    return json.loads(content, parse_int=lambda s: int(s) if len(s) <= 64 else float(s))


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


def _log_lag_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("cannot look up the lag of %s: %s", task.get_name().removeprefix("lag-"),
                    task.exception())
