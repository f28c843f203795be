"""The write gate: the one way a tenant's write reaches a replica's data (docs/leases.md).

A write is **admitted** when its replica is a primary that holds its lease (the node's
lease from the controller, or its own failsafe lease while its geo-secondary vouches) in
its current epoch (the epoch of its record is the one its data has seen), and when none of
its secondaries lags past the RPO limit. Admitted, the write **enters** the replica (a
fence waits for the writes in flight) and is checked again, twice, under the engine's
lock: when the lock is taken, and right before COMMIT. So a lease that runs out, or a fence
that lands, between admission and commit refuses the write, and nothing of it commits.

SQL (group commit, batcher.py) and files (put, delete) both commit through `commit`;
nothing else writes on a primary. A secondary's apply (puller.py), a rewind (fencing.py)
and a seed (replicas.py) are the engine's own paths, under the record changes that allow
them.

The refusals, kept exactly: 409 `not_primary` (a secondary) and `fenced`, 503 `no_lease`
(no lease, or not in its current epoch), 503 `rpo_exceeded`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TypeVar

from tandemdb.common.http import ApiError
from tandemdb.common.roles import Role
from tandemdb.engine import Environment

from .lease import Lease
from .replicas import Replica, run_sync
from .syncrule import SyncRule, SyncUnavailable

T = TypeVar("T")


class WriteGate:
    """Admission and commit of every write on one node's primaries."""

    def __init__(self, region: str, lease: Lease | None = None,
                 sync: SyncRule | None = None) -> None:
        self.region = region
        self.lease = lease  # None: no lease required (in-process tests of the replica set)
        self.sync = sync  # None: no sync rule (in-process tests of the replica set)

    # -- the rule -----------------------------------------------------------------------
    def may_write(self, replica: Replica) -> bool:
        """Whether a write would be taken now, RPO guard aside (cheap: no error built)."""
        return replica.writable and self.holds_lease(replica)

    def holds_lease(self, replica: Replica) -> bool:
        """Invariant 2: a primary writes only in its current epoch, under the node's lease
        from the controller or under its own failsafe lease (its geo-secondary vouches)."""
        lease, env = self.lease, replica.env
        return ((lease is None or lease.valid() or lease.clock() < replica.failsafe_until)
                and (env is None or replica.record.epoch == env.epoch))

    def check(self, replica: Replica) -> None:
        """Raise the refusal of a write to `replica` now (role, lease, epoch), if any.

        Cheap and thread-safe: it runs on admission and again under the engine's lock."""
        if replica.writable:
            if not self.holds_lease(replica):
                raise self._no_lease(replica)
            return
        record = replica.record
        if record.role == Role.FENCED:
            raise ApiError(409, "fenced", f"environment {replica.name} is switching over to "
                           f"another primary: its replica in region {self.region} is fenced at "
                           f"epoch {record.epoch} and takes no writes; retry shortly",
                           {"Retry-After": "1"})
        if record.role == Role.SECONDARY and record.primary is not None:
            where = (f"the primary is in region {record.primary.region} "
                     f"(node {record.primary.node})")
        else:
            where = "this replica is fenced; the environment is moving to another primary"
        raise ApiError(409, "not_primary", f"environment {replica.name} is read-only in "
                       f"region {self.region}: {where}; send writes there")

    async def rpo_breach(self, replica: Replica) -> str | None:
        """Why writes are refused now (a secondary lags past the RPO limit), or None."""
        record = replica.record
        if record.role != Role.PRIMARY or not record.secondaries:
            return None
        await replica.refresh_lag()
        limit = record.rpo_limit_seconds
        for peer in record.secondaries:
            entries, seconds = replica.lag(peer.node)
            if seconds > limit:
                return (f"the secondary of {replica.name} in region {peer.region} (node "
                        f"{peer.node}) is {seconds:.2f}s ({entries} entries) behind, over the "
                        f"RPO limit of {limit:g}s; writes resume when it catches up")
        return None

    async def refusal(self, replica: Replica) -> ApiError | None:
        """The refusal a write would get now (role, lease, epoch, then RPO), or None."""
        if not self.may_write(replica):
            try:
                self.check(replica)
            except ApiError as refused:
                return refused
        breach = await self.rpo_breach(replica)
        return ApiError(503, "rpo_exceeded", breach, {"Retry-After": "1"}) if breach else None

    async def admit(self, replica: Replica) -> None:
        """Raise the refusal of a write now, if there is one."""
        refused = await self.refusal(replica)
        if refused is not None:
            raise refused

    # -- the commit -------------------------------------------------------------------
    async def commit(self, replica: Replica, write: Callable[..., T], *args: object,
                     content: bytes | None = None) -> T:
        """Commit an admitted write: `write(env, *args, before_commit=check)`, an engine
        method such as `Environment.execute_group`, in a worker thread.

        The write enters the replica (`Replica.writing`: a fence drains it) and is checked
        there, then under the engine's lock, then by the engine right before COMMIT.
        `content` (a file's bytes) is made durable as a blob first, outside the lock (the
        slow part), and pinned until its row commits.

        Committed, the write is acknowledged only once the sync secondary has it (the sync
        rule, syncrule.py): a group waits once, outside `writing` (a fence need not wait)."""
        if replica.dropped:
            raise ApiError(404, "not_found", f"replica {replica.name} was dropped")
        env = replica.require_env()
        with replica.writing():
            self.check(replica)  # the role may have changed while it waited (queued)
            before = env.last_lsn
            result, lsn, epoch = await run_sync(self._locked, replica, env, write, args,
                                                content)
        replica.notify()  # answers the long polls waiting for this entry at once
        if self.sync is not None and lsn > before:
            try:
                await self.sync.wait(replica, lsn, epoch)
            except SyncUnavailable as unconfirmed:
                unconfirmed.result = result
                raise
        return result

    def _locked(self, replica: Replica, env: Environment, write: Callable[..., T],
                args: tuple, content: bytes | None) -> tuple[T, int, int]:
        """Worker thread: with nothing able to commit in between, a write never commits
        after the lease expired or a fence; the engine checks once more right before
        COMMIT, since statements may run longer than the lease's safety margin."""
        def check() -> None:
            self.check(replica)

        staged = env.staged_blob(content) if content is not None else contextlib.nullcontext()
        with staged, env.exclusive():
            check()
            return write(env, *args, before_commit=check), env.last_lsn, env.epoch

    # -- the failsafe lease -------------------------------------------------------------
    def vouch(self, replica: Replica, consumer: str, epoch: int, token: object) -> bool:
        """A pull of `consumer` vouches for primary `replica` at `epoch`, echoing `token`:
        extend its failsafe lease if that consumer is its geo-secondary and the epoch is
        the primary's. True if it was extended."""
        lease, env, record = self.lease, replica.env, replica.record
        if lease is None or env is None or record.role != Role.PRIMARY \
                or not epoch == record.epoch == env.epoch:
            return False
        if not any(peer.node == consumer and peer.region != self.region
                   for peer in record.secondaries):
            return False
        until = lease.vouched_until(token)
        if until is None or until <= replica.failsafe_until:
            return False
        replica.failsafe_until = until
        return True

    def describe_failsafe(self, replica: Replica) -> str:
        """A primary's failsafe lease in words (the refusal, the node's log)."""
        if self.lease is None or not any(peer.region != self.region
                                         for peer in replica.record.secondaries):
            return "it has no geo-secondary to vouch for it (failsafe)"
        return self.lease.describe_failsafe(replica.failsafe_until)

    def _no_lease(self, replica: Replica) -> ApiError:
        env, record = replica.env, replica.record
        if env is not None and record.epoch != env.epoch:
            why = (f"its primary here is recorded at epoch {record.epoch} but its data has "
                   f"seen epoch {env.epoch}, and a primary writes only in its current epoch")
        elif self.lease is not None:
            why = f"{self.lease.describe()}, and {self.describe_failsafe(replica)}"
        else:
            why = "no lease"
        return ApiError(503, "no_lease", f"environment {replica.name} takes no writes in "
                        f"region {self.region} now: {why}; nothing was written, retry "
                        "shortly (reads are still served)", {"Retry-After": "1"})
