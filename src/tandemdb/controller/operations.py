"""Operations: durable, resumable control-plane workflows (docs/operations.md).

An operation is a record under `operations/<id>` (`op-000017`, numbered by the store counter
`counters/operations`, so ids sort by age) with a fixed list of named steps. A **kind**
(`environment.create`/`delete`/`failover`/`rejoin`, `region.failover`/`failback`) says what
each step does.
The runner here knows nothing of environments; it only keeps the record true:

- a step's start is written (compare-and-set on the record's version) before the step runs,
  and its end after, together with the writes the step made (`Outcome.stage`: a catalog
  change, an event and its webhook outbox entries) in one store transaction. So a step's
  effects on the store and its `succeeded` land together or not at all. A step may also end
  the operation `failed` while its writes land (`Outcome.error`);
- each step ends with one log sentence: the operation, the environment and epoch, what was
  decided and why;
- **invariant 7** (operations survive a controller restart) is kept by `resume()`: at
  start-up every operation still `pending` or `running` runs again from its first step not
  `succeeded`. Steps are idempotent, so re-running one that was cut off is safe. A kind this
  controller does not know ends `failed` with an error that says so.

A step whose writes lose a compare-and-set (something else changed the environment in
between) is run again from its start, a few times, before the operation fails.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum

from tandemdb.common.http import ApiError
from tandemdb.common.retry import Contended, cas_attempts

from .catalog import iso_now
from .events import Events
from .store import Store, Txn, increment

log = logging.getLogger("tandem.controller.operations")

PREFIX = "operations/"
COUNTER = "counters/operations"
STEP_ATTEMPTS = 5
DEFAULT_LIST = 20
MAX_LIST = 5000
MAX_WAIT_SECONDS = 60.0
# Fault injection for the tests that kill the controller in the middle of an operation:
# `TANDEM_PAUSE_AT=environment.failover/promote:end` parks every operation that reaches that
# point (after the step ran, before its end is written) until the process is killed.
PAUSE_ENV = "TANDEM_PAUSE_AT"


class OpState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


LIVE = {OpState.PENDING, OpState.RUNNING}


@dataclass
class Step:
    name: str
    state: OpState = OpState.PENDING
    started_at: str | None = None
    finished_at: str | None = None
    detail: str | None = None
    attempts: int = 0  # more than 1 after a resume or a lost compare-and-set


@dataclass
class Operation:
    id: str
    kind: str
    target: str
    state: OpState
    params: dict
    steps: list[Step]
    started_at: str
    finished_at: str | None = None
    result: dict | None = None
    error: dict | None = None  # {"code", "message"}, as API errors are

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: dict) -> Operation:
        steps = [Step(**{**s, "state": OpState(s["state"])}) for s in value["steps"]]
        return cls(**{**value, "state": OpState(value["state"]), "steps": steps})

    def next_step(self) -> int | None:
        """Index of the first step not succeeded; None when all are."""
        return next((i for i, s in enumerate(self.steps) if s.state != OpState.SUCCEEDED),
                    None)


class StepFailed(Exception):
    """A step that cannot succeed; `code` and `message` become the operation's error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class Conflict(Exception):
    """Another writer changed the operation's record: this runner stops touching it."""


@dataclass
class Outcome:
    """What a step did: its log sentence, and the writes that land with its end."""

    detail: str
    stage: Callable[[Txn], None] | None = None  # may raise StepFailed
    result: dict = field(default_factory=dict)  # merged into the operation's result
    warn: bool = False  # succeeded, but something is left for repair (logged as a warning)
    # (code, message): the step's writes land, and the operation ends `failed` with this
    # error; no later step runs. A region operation whose environments did not all move
    # records the region's state this way and still fails.
    error: tuple[str, str] | None = None


@dataclass
class Draft:
    """A new operation's shape, as `Operations.create`'s `build` answers it. Its steps are
    those of its kind's table for these `params`."""

    params: dict
    done: dict[str, str] = field(default_factory=dict)  # steps done in the creating txn


StepRun = Callable[[Operation], Awaitable[Outcome]]
Steps = Mapping[str, StepRun]  # ordered: step name -> what the step does


@dataclass(frozen=True)
class Kind:
    """What a kind of operation does. `steps(params)` is its ordered table of steps (an
    operation's parameters may choose among tables: a forced failover has its own); the
    runner records the names when it creates an operation and runs each by its name, so
    the two cannot drift. `settle` runs when a step fails, before the failure is
    recorded: it leaves what the operation touched consistent (a failover unfences the old
    primary, or finishes the move once it was decided) and answers a sentence for the log.
    If the controller dies during it, the operation stays live and the step runs again."""

    name: str
    steps: Callable[[dict], Steps]
    settle: Callable[[Operation, str, str], Awaitable[str]] | None = None


def op_key(op_id: str) -> str:
    return PREFIX + op_id


def not_found(op_id: str) -> ApiError:
    return ApiError(404, "not_found", f"operation {op_id!r} does not exist: 'tandem ops' lists "
                                      "the recent operations")


class Operations:
    def __init__(self, store: Store, events: Events) -> None:
        self.store, self.events = store, events
        self.kinds: dict[str, Kind] = {}
        self.tasks: dict[str, asyncio.Task] = {}

    def register(self, kind: Kind) -> None:
        self.kinds[kind.name] = kind

    # -- reading -------------------------------------------------------------------------

    def get(self, op_id: str) -> dict | None:
        item = self.store.get(op_key(op_id)) if op_id.startswith("op-") else None
        return item.value if item else None

    def recent(self, limit: int = DEFAULT_LIST, parent: str | None = None) -> list[dict]:
        """The newest operations first; with `parent`, those that operation started."""
        if parent is None:
            return [item.value for item in
                    self.store.list(PREFIX, reverse=True, limit=limit).values()]
        return self.children(parent)[::-1][:limit]

    def children(self, parent: str) -> list[dict]:
        """Operations started by operation `parent` (a region failover's), oldest first."""
        return [item.value for item in self.store.list(PREFIX).values()
                if item.value["params"].get("parent") == parent]

    def wait_ended(self, op_id: str, wait: float) -> dict | None:
        """The operation once it has ended, or after `wait` s as it is then. Blocking."""
        deadline = time.monotonic() + min(max(wait, 0.0), MAX_WAIT_SECONDS)
        while True:
            revision = self.store.revision()
            value = self.get(op_id)
            remaining = deadline - time.monotonic()
            if value is None or value["state"] not in LIVE or remaining <= 0:
                return value
            self.store.watch(op_key(op_id), revision, remaining)

    def live(self) -> list[Operation]:
        """Operations still pending or running, oldest first."""
        ops = (Operation.from_dict(item.value) for item in self.store.list(PREFIX).values())
        return [op for op in ops if op.state in LIVE]

    # -- creating ------------------------------------------------------------------------

    def create(self, kind: str, target: str, build: Callable[[Txn, str], Draft]) -> Operation:
        """Record a new operation. Blocking.

        `build(txn, op_id)` reads what it needs, stages the writes that must land with the
        record (the steps in `Draft.done`) and answers the operation's shape. It may raise
        (an `ApiError` for a refused request): then nothing is written at all.
        """
        def build_all(txn: Txn) -> Operation:
            op_id = f"op-{increment(self.store, txn, COUNTER):06d}"
            draft = build(txn, op_id)
            now = iso_now()
            steps = [Step(name) for name in self.kinds[kind].steps(draft.params)]
            for step in steps:
                if step.name in draft.done:
                    step.state, step.started_at, step.finished_at = OpState.SUCCEEDED, now, now
                    step.detail, step.attempts = draft.done[step.name], 1
            op = Operation(op_id, kind, target,
                           OpState.RUNNING if draft.done else OpState.PENDING,
                           draft.params, steps, now)
            txn.expect(op_key(op_id), None).put(op_key(op_id), op.to_dict())
            return op

        op = self.events.commit(build_all, f"{kind} {target}: recording the operation")[0]
        for i, step in enumerate(op.steps):
            if step.state == OpState.SUCCEEDED:
                self._log_step(op, i)
        return op

    # -- running -------------------------------------------------------------------------

    def launch(self, op_id: str) -> asyncio.Task:
        """Run the operation in a task of its own (at most one per operation)."""
        task = self.tasks.get(op_id)
        if task is None or task.done():
            task = asyncio.create_task(self._run(op_id), name=op_id)
            self.tasks[op_id] = task
            task.add_done_callback(lambda t: self.tasks.pop(op_id, None)
                                   if self.tasks.get(op_id) is t else None)
        return task

    async def finish(self, op_id: str) -> Operation:
        """Run the operation (if it is not running yet) and wait for its end.

        The caller's cancellation (a client that hung up) does not stop the operation.
        """
        await asyncio.shield(self.launch(op_id))
        value = await asyncio.to_thread(self.get, op_id)
        if value is None:
            raise not_found(op_id)
        return Operation.from_dict(value)

    def resume(self, live: list[Operation]) -> None:
        """Launch the operations a previous run left pending or running (invariant 7).

        `live` is what `live()` answered at start-up, before anything new could begin."""
        for op in live:
            index = op.next_step()
            where = ("at its end" if index is None else
                     f"at step {index + 1} of {len(op.steps)} ({op.steps[index].name}, "
                     f"{op.steps[index].state.value} when the previous run stopped)")
            log.info("operation %s (%s %s): resumed %s; steps are idempotent, so the "
                     "interrupted one runs again", op.id, op.kind, op.target, where)
            self.launch(op.id)

    async def stop(self) -> None:
        """Cancel running operations; their records stay `running`, to resume at start-up."""
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, op_id: str) -> None:
        item = await asyncio.to_thread(self.store.get, op_key(op_id))
        if item is None or item.value["state"] not in LIVE:
            return  # finished already: never run a step twice after the end
        op, version = Operation.from_dict(item.value), item.version
        try:
            await self._run_steps(op, version)
        except Conflict as exc:
            log.error("operation %s (%s %s): %s; this run stops touching it", op.id, op.kind,
                      op.target, exc)
        except asyncio.CancelledError:
            raise
        except Exception:  # the store failed under it: the record stays live, to resume
            log.exception("operation %s (%s %s): stopped, its record could not be written; "
                          "it resumes at the next start", op.id, op.kind, op.target)

    async def _run_steps(self, op: Operation, version: int) -> None:
        kind = self.kinds.get(op.kind)
        if kind is None:
            await self._fail(op, version, None, "unknown_kind",
                             f"this controller does not know operations of kind {op.kind!r} "
                             "(written by another version?); nothing was done for it")
            return
        if op.state == OpState.PENDING:
            op.state = OpState.RUNNING
            version = await self._write(op, version)
        table = kind.steps(op.params)
        while (index := op.next_step()) is not None:
            try:
                for _ in cas_attempts(f"step {op.steps[index].name}: its writes",
                                      STEP_ATTEMPTS):
                    step = op.steps[index]
                    step.state, step.started_at, step.finished_at = OpState.RUNNING, iso_now(), None
                    step.detail, step.attempts = None, step.attempts + 1
                    version = await self._write(op, version)
                    try:
                        await pause_point(f"{op.kind}/{step.name}:start")
                        outcome = await run(table, op, step.name)
                        await pause_point(f"{op.kind}/{step.name}:end")
                        committed = await self._finish_step(op, version, index, outcome)
                    except StepFailed as exc:
                        await self._fail(op, version, index, exc.code, exc.message)
                        return
                    except (asyncio.CancelledError, Conflict):
                        raise
                    except Exception as exc:  # a bug or a broken store: say so, stop cleanly
                        log.exception("operation %s: step %s crashed", op.id, step.name)
                        await self._fail(op, version, index, "internal",
                                         f"step {step.name} crashed: {type(exc).__name__}: {exc}")
                        return
                    if committed is not None:
                        op, version = committed
                        self._log_step(op, index, logging.WARNING if outcome.warn else logging.INFO)
                        if op.state == OpState.FAILED:
                            log.warning("operation %s (%s %s): failed after step %s: %s", op.id,
                                        op.kind, op.target, step.name,
                                        (op.error or {}).get("message"))
                            return
                        break
            except Contended as exc:
                await self._fail(op, version, index, "conflict", str(exc))
                return
        if op.state == OpState.SUCCEEDED:
            log.info("operation %s (%s %s): succeeded in %d steps", op.id, op.kind, op.target,
                     len(op.steps))

    async def _finish_step(self, op: Operation, version: int, index: int,
                           outcome: Outcome) -> tuple[Operation, int] | None:
        """Write the step's end with its writes: the new record and version, or None if
        the writes lost a compare-and-set (then nothing changed, `op` included)."""
        done = copy.deepcopy(op)
        step = done.steps[index]
        step.state, step.finished_at, step.detail = OpState.SUCCEEDED, iso_now(), outcome.detail
        if outcome.result:
            done.result = {**(done.result or {}), **outcome.result}
        if outcome.error is not None:
            code, message = outcome.error
            done.state, done.finished_at = OpState.FAILED, step.finished_at
            done.error = {"code": code, "message": message}
        elif done.next_step() is None:
            done.state, done.finished_at = OpState.SUCCEEDED, step.finished_at
        committed = await self._write_with(done, version, outcome.stage)
        return None if committed is None else (done, committed)

    async def _fail(self, op: Operation, version: int, index: int | None, code: str,
                    message: str) -> None:
        kind = self.kinds.get(op.kind)
        if kind is not None and kind.settle is not None and index is not None:
            # Raises (and leaves the operation live, to resume) if it cannot settle.
            settled = await kind.settle(op, op.steps[index].name, message)
            message = f"{message}; {settled}"
        now = iso_now()
        if index is not None:
            step = op.steps[index]
            step.state, step.finished_at, step.detail = OpState.FAILED, now, message
        op.state, op.finished_at, op.error = OpState.FAILED, now, {"code": code,
                                                                   "message": message}
        await self._write(op, version)
        where = f"step {op.steps[index].name}" if index is not None else "before any step"
        log.warning("operation %s (%s %s): failed at %s: %s", op.id, op.kind, op.target,
                    where, message)

    async def _write(self, op: Operation, version: int) -> int:
        """Compare-and-set the record alone; its new version (`Conflict` if it changed)."""
        written = await self._write_with(op, version, None)
        if written is None:  # (without writes of a step's own, a lost commit is a Conflict)
            raise Conflict("its record could not be written although nobody changed it")
        return written

    async def _write_with(self, op: Operation, version: int,
                          stage: Callable[[Txn], None] | None) -> int | None:
        """Compare-and-set the record with `stage`'s writes; its new version.

        None when `stage`'s own expectations failed; `Conflict` when the record changed.
        """
        key, value = op_key(op.id), op.to_dict()

        def build(txn: Txn) -> None:
            txn.expect(key, version).put(key, value)
            if stage is not None:
                stage(txn)

        done = await asyncio.to_thread(self.events.transact, build)
        if done is not None:
            return done[1][key]
        current = await asyncio.to_thread(self.store.get, key)
        if current is None or current.version != version:
            raise Conflict(f"its record was changed by another writer (version "
                           f"{None if current is None else current.version}, expected "
                           f"{version})")
        if stage is None:
            raise Conflict("its record could not be written although nobody changed it")
        return None

    def _log_step(self, op: Operation, index: int, level: int = logging.INFO) -> None:
        step = op.steps[index]
        log.log(level, "%s (%s %s, step %d of %d: %s)", step.detail, op.id, op.kind, index + 1,
                len(op.steps), step.name)


async def run(table: Steps, op: Operation, step: str) -> Outcome:
    """Run step `step` of `op` from its kind's table: the one place an operation recorded
    with a step its kind does not have (written by another version?) fails."""
    found = table.get(step)
    if found is None:
        raise StepFailed("unknown_step", f"{op.kind} has no step {step!r}")
    return await found(op)


async def pause_point(name: str) -> None:
    """Park here forever when `TANDEM_PAUSE_AT` names this point (fault tests only)."""
    if os.environ.get(PAUSE_ENV) == name:
        log.warning("operation paused at %s because %s says so (a fault test); it resumes "
                    "after a restart without it", name, PAUSE_ENV)
        await asyncio.Event().wait()
