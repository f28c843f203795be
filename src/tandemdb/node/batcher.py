"""Group commit for one replica: concurrent write requests share one engine commit.

Requests queue up while the previous group is being committed in a worker thread; the next
group takes everything queued (up to `MAX_GROUP`) into one `Environment.execute_group` call,
so one fsync serves many clients. Each request gets its own result or its own error.

Each group commits through the write gate (gate.py): role, lease and epoch are checked
when a group is taken from the queue, under the engine's lock, and right before COMMIT.

A statement is never run twice. A group commit that fails with an error that is no one
transaction's (the engine reports those in their own slots) was rolled back whole; each of
its waiters gets a clear error saying so, and nothing is retried (issue 9, item 5).
"""

from __future__ import annotations

import asyncio
import logging

import apsw

from tandemdb.common.http import ApiError
from tandemdb.engine import EngineError, Environment, TxResult

from .gate import WriteGate
from .replicas import Replica
from .syncrule import SyncUnavailable

log = logging.getLogger("tandem.node.batcher")

MAX_GROUP = 256


class Batcher:
    def __init__(self, gate: WriteGate, replica: Replica) -> None:
        self.gate, self.replica = gate, replica
        self._queue: list[tuple[list, asyncio.Future]] = []
        self._task: asyncio.Task | None = None

    async def submit(self, statements: list) -> TxResult:
        fut = asyncio.get_running_loop().create_future()
        self._queue.append((statements, fut))
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        try:
            while self._queue:
                group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
                try:
                    outcomes = await self._commit([statements for statements, _ in group])
                except Exception as exc:  # each waiter gets the error
                    outcomes = [exc] * len(group)
                for (_, fut), outcome in zip(group, outcomes, strict=True):
                    if fut.done():  # the client went away; its write stands
                        continue
                    if isinstance(outcome, BaseException):
                        fut.set_exception(outcome)
                    else:
                        fut.set_result(outcome)
        finally:
            self._task = None

    async def _commit(self, transactions: list[list]) -> list:
        """Commit a group through the write gate (checked there again: the role or the
        lease may have changed while the group was queued)."""
        try:
            return await self.gate.commit(self.replica, Environment.execute_group,
                                          transactions)
        except SyncUnavailable as unconfirmed:
            # Committed, never confirmed: only the transactions that were written are
            # unknown; a transaction's own error stands (it was not written).
            outcomes = unconfirmed.result
            if not isinstance(outcomes, list):
                raise
            return [o if isinstance(o, EngineError) else unconfirmed for o in outcomes]
        except (EngineError, ApiError):
            raise  # ApiError: refused at the commit (no lease, fenced); nothing was written
        except Exception as exc:  # not one transaction's fault: see below
            # Never run again: the group was rolled back, but a statement run twice is paid
            # for twice (a slow one stalls the node twice as long), and should the error
            # have come after the COMMIT, it would be written twice.
            log.exception("group commit of %d transaction(s) on %s failed; nothing was "
                          "written, and none is run again", len(transactions),
                          self.replica.name)
            raise self._failed(exc, len(transactions)) from None

    def _failed(self, exc: Exception, size: int) -> ApiError:
        """What each waiter of a group commit that failed unexpectedly is told (not a 500:
        it says what happened, that nothing was written, and what to do)."""
        name, what = self.replica.name, f"{type(exc).__name__}: {exc}"[:300]
        if isinstance(exc, apsw.TooBigError) and size == 1:
            return ApiError(413, "entry_too_large", f"the transaction on {name} is too large "
                            f"to commit ({what}); nothing was written: split it into "
                            "smaller transactions, or store large content as files")
        shared = (f", committed together with {size - 1} other transaction(s) of this "
                  "environment, one of which may have caused it" if size > 1 else "")
        return ApiError(503, "commit_failed", f"the commit of this transaction on {name} "
                        f"failed{shared} ({what}); it was rolled back, so nothing was "
                        "written, and it was not run again. Retry it; if it fails again, "
                        "the node's log has the details", {"Retry-After": "1"})
