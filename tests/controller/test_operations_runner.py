"""The operation runner on both real stores (the `store` fixture: SQLite and etcd), with
small workflows of the tests' own: step starts are durable before the step runs, a step's
writes land with its end, lost compare-and-sets re-run the step, failures are clear, and
cancelled runs resume."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable

import pytest

from tandemdb.controller.events import Events, EventType
from tandemdb.controller.operations import (
    Draft,
    Kind,
    Operation,
    Operations,
    Outcome,
    StepFailed,
)
from tandemdb.controller.store import Txn


def kind(name: str, run_step: Callable[[Operation, str], Awaitable[Outcome]],
         *steps: str) -> Kind:
    """A kind whose table runs `run_step(op, name)` for each of `steps`, in order."""
    return Kind(name, lambda params: {step: functools.partial(run_step, step=step)
                                      for step in steps})


def runner(store) -> tuple[Operations, Events]:
    events = Events(store)
    return Operations(store, events), events


def stored_steps(store, op_id: str) -> list[tuple[str, str]]:
    return [(s["name"], s["state"]) for s in store.get(f"operations/{op_id}").value["steps"]]


def test_steps_run_in_order_with_durable_starts_and_atomic_ends(store):
    ops, events = runner(store)
    seen: list[list[tuple[str, str]]] = []

    async def run_step(op: Operation, step: str) -> Outcome:
        seen.append(stored_steps(store, op.id))  # what a crash right now would leave

        def stage(txn: Txn) -> None:
            txn.put(f"side/{step}", op.id)
            if step == "b":
                events.stage(txn, EventType.ENVIRONMENT_CREATED, environment="t",
                             operation=op.id)

        return Outcome(f"did {step}", stage, {step: True})

    ops.register(kind("test.abc", run_step, "a", "b", "c"))
    op = ops.create("test.abc", "t", lambda txn, op_id: Draft({"n": 1}))
    assert (op.id, op.state) == ("op-000001", "pending")
    final = asyncio.run(ops.finish(op.id))

    assert seen == [[("a", "running"), ("b", "pending"), ("c", "pending")],
                    [("a", "succeeded"), ("b", "running"), ("c", "pending")],
                    [("a", "succeeded"), ("b", "succeeded"), ("c", "running")]]
    assert final.state == "succeeded" and final.result == {"a": True, "b": True, "c": True}
    assert [s.detail for s in final.steps] == ["did a", "did b", "did c"]
    assert all(store.get(f"side/{s}").value == op.id for s in "abc")
    assert [e["operation"] for e in events.after(0)] == [op.id]
    # Ids come from a store counter: the next one is op-000002.
    assert ops.create("test.abc", "u", lambda txn, i: Draft({})).id == "op-000002"


def test_a_step_whose_writes_lose_a_compare_and_set_runs_again(store):
    ops, _ = runner(store)
    store.put("side/k", 0)
    runs: list[int] = []

    async def run_step(op: Operation, step: str) -> Outcome:
        item = store.get("side/k")
        runs.append(item.value)
        if len(runs) == 1:
            store.put("side/k", 1)  # someone else writes between the read and the commit

        def stage(txn: Txn) -> None:
            txn.expect("side/k", item.version).put("side/k", item.value + 10)

        return Outcome("bumped", stage)

    ops.register(kind("test.cas", run_step, "bump"))
    op = ops.create("test.cas", "t", lambda txn, op_id: Draft({}))
    final = asyncio.run(ops.finish(op.id))
    assert runs == [0, 1] and store.get("side/k").value == 11
    assert final.state == "succeeded" and final.steps[0].attempts == 2


def test_failures_end_the_operation_with_a_clear_error(store):
    ops, _ = runner(store)

    async def refuse(op: Operation, step: str) -> Outcome:
        if step == "check":
            raise StepFailed("deleted", "environment 't' was deleted meanwhile")
        return Outcome("never")

    async def crash(op: Operation, step: str) -> Outcome:
        raise KeyError("surprise")

    ops.register(kind("test.refuse", refuse, "check", "after"))
    ops.register(kind("test.crash", crash, "boom"))
    first = ops.create("test.refuse", "t", lambda txn, i: Draft({}))
    failed = asyncio.run(ops.finish(first.id))
    assert failed.state == "failed" and failed.finished_at
    assert failed.error == {"code": "deleted", "message": "environment 't' was deleted meanwhile"}
    assert [(s.name, s.state) for s in failed.steps] == [("check", "failed"),
                                                          ("after", "pending")]
    second = ops.create("test.crash", "t", lambda txn, i: Draft({}))
    crashed = asyncio.run(ops.finish(second.id))
    assert crashed.error["code"] == "internal" and "KeyError" in crashed.error["message"]


def test_a_refused_build_writes_nothing(store):
    ops, _ = runner(store)
    base = store.revision()  # (a shared etcd has moved on already)

    def build(txn: Txn, op_id: str) -> Draft:
        txn.put("side/should-not-exist", 1)
        raise ValueError("refused")

    with pytest.raises(ValueError):
        ops.create("test.any", "t", build)
    assert store.list("") == {} and store.watch("", base, 0.05) == []


def test_a_cancelled_run_stays_running_and_resumes(store):
    gate_calls: list[str] = []
    hanging: list[asyncio.Event] = []

    async def slow(op: Operation, step: str) -> Outcome:
        gate_calls.append(step)
        if len(gate_calls) == 2:  # the first run of "wait": hang until cancelled
            hanging[0].set()
            await asyncio.sleep(60)
        return Outcome(f"did {step}")

    ops, _ = runner(store)
    ops.register(kind("test.slow", slow, "first", "wait", "last"))
    op = ops.create("test.slow", "t", lambda txn, i: Draft({}))

    async def cut_off() -> None:
        hanging.append(asyncio.Event())
        task = ops.launch(op.id)
        await hanging[0].wait()
        await ops.stop()  # as at shutdown
        assert task.cancelled()

    asyncio.run(cut_off())
    assert stored_steps(store, op.id) == [("first", "succeeded"), ("wait", "running"),
                                          ("last", "pending")]

    again, _ = runner(store)  # a new controller on the same store
    again.register(kind("test.slow", slow, "first", "wait", "last"))
    live = again.live()
    assert [o.id for o in live] == [op.id]

    async def resume() -> Operation:
        again.resume(live)
        return await again.finish(op.id)

    final = asyncio.run(resume())
    assert final.state == "succeeded" and gate_calls == ["first", "wait", "wait", "last"]
    assert [s.attempts for s in final.steps] == [1, 2, 1]


def test_a_step_its_kind_does_not_have_fails_in_the_runner(store):
    """An operation recorded with a step its kind's table lacks (written by another
    version) fails with `unknown_step`, raised in one place for every kind."""
    ops, _ = runner(store)

    async def step(op: Operation, step: str) -> Outcome:
        return Outcome(f"did {step}")

    ops.register(kind("test.old", step, "a", "gone"))
    op = ops.create("test.old", "t", lambda txn, i: Draft({}))
    again, _ = runner(store)  # a newer controller: its table has no step "gone"
    again.register(kind("test.old", step, "a"))
    final = asyncio.run(again.finish(op.id))
    assert final.state == "failed" and final.error == {
        "code": "unknown_step", "message": "test.old has no step 'gone'"}
    assert [(s.name, s.state) for s in final.steps] == [("a", "succeeded"),
                                                        ("gone", "failed")]
