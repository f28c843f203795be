"""The write gate (node/gate.py) refuses a write whose lease runs out after admission.

An injected clock, moved by hand at the exact moment: while the write waits for the
engine's lock (an apply holds it), while its statements run, while a file's blob is made
durable. Each time the write is refused with 503 `no_lease` and nothing of it commits."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tandemdb.common.http import ApiError
from tandemdb.engine import Environment
from tandemdb.node.gate import WriteGate
from tandemdb.node.replicas import Replica
from tandemdb.testing import plan

from .conftest import Clock, node_in_process

INSERT = [[{"sql": "INSERT INTO t VALUES (1)"}]]


Scenario = Callable[[WriteGate, Replica, Environment, Clock], Awaitable[None]]


def run(tmp_path: Path, scenario: Scenario) -> None:
    dep = plan(tmp_path, lease_ttl=5.0)
    clock = Clock()

    async def main() -> None:
        async with node_in_process(dep, clock) as node:
            replica = await node.replicas.ensure("alpha", {"role": "primary", "epoch": 1,
                                                           "type": "basic"})
            env = replica.require_env()
            await asyncio.to_thread(env.execute, ["CREATE TABLE t(x)"])
            node.lease.grant(clock.now, 5.0)  # valid until now + 4.5
            await node.gate.admit(replica)
            await scenario(node.gate, replica, env, clock)

    asyncio.run(main())


def rows(env: Environment) -> int:
    return env.execute([{"sql": "SELECT count(*) FROM t"}]).results[0].rows[0][0]


async def refused(write: Awaitable[object]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        await write
    assert (caught.value.status, caught.value.code) == (503, "no_lease")
    assert "nothing was written" in caught.value.message
    return caught.value


def test_the_lease_expires_while_the_write_waits_for_the_engine_lock(tmp_path: Path) -> None:
    async def scenario(gate: WriteGate, replica: Replica, env: Environment,
                       clock: Clock) -> None:
        held, release = threading.Event(), threading.Event()

        def apply_in_progress() -> None:  # as the puller or a fence holds the lock
            with env.exclusive():
                held.set()
                release.wait(30)

        holder = asyncio.create_task(asyncio.to_thread(apply_in_progress))
        await asyncio.to_thread(held.wait, 30)
        write = asyncio.create_task(gate.commit(replica, Environment.execute_group, INSERT))
        await asyncio.sleep(0)  # it runs up to its worker thread, which waits for the lock
        assert replica.in_flight == 1  # admitted, entered and checked on the loop
        clock.now += 10  # the lease runs out meanwhile
        release.set()
        await holder
        await refused(write)
        assert replica.in_flight == 0
        assert await asyncio.to_thread(rows, env) == 0

    run(tmp_path, scenario)


def test_the_lease_expires_while_the_statements_run(tmp_path: Path) -> None:
    async def scenario(gate: WriteGate, replica: Replica, env: Environment,
                       clock: Clock) -> None:
        def slow() -> int:  # a statement that runs past the lease
            clock.now += 10
            return 1

        env._conn.create_scalar_function("slow", slow)
        statements = [[{"sql": "INSERT INTO t VALUES (slow())"}]]
        await refused(gate.commit(replica, Environment.execute_group, statements))
        assert await asyncio.to_thread(rows, env) == 0
        assert env.last_lsn == 1  # the CREATE TABLE only

    run(tmp_path, scenario)


def test_the_lease_expires_while_a_files_blob_is_made_durable(tmp_path: Path) -> None:
    async def scenario(gate: WriteGate, replica: Replica, env: Environment,
                       clock: Clock) -> None:
        put = env.blobs.put

        def slow_put(data: bytes) -> str:  # the fsync of a large file
            clock.now += 10
            return put(data)

        env.blobs.put = slow_put  # type: ignore[method-assign]
        await refused(gate.commit(replica, Environment.put_file, "a.txt", b"late",
                                  content=b"late"))
        assert await asyncio.to_thread(env.list_files) == []
        assert env.last_lsn == 1

    run(tmp_path, scenario)


def test_a_write_within_the_lease_commits(tmp_path: Path) -> None:
    async def scenario(gate: WriteGate, replica: Replica, env: Environment,
                       clock: Clock) -> None:
        [result] = await gate.commit(replica, Environment.execute_group, INSERT)
        assert result.lsn == 2
        info = await gate.commit(replica, Environment.put_file, "a.txt", b"x", content=b"x")
        assert info.lsn == 3
        assert await asyncio.to_thread(rows, env) == 1

    run(tmp_path, scenario)
