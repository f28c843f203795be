"""The group committer never runs a statement twice (issue 9, item 5).

A group commit that fails with an error no one transaction owns (the engine reports those in
their own slots) used to be "retried singly": every statement ran again. Here the disk
"fills up" under the journal entry (SQLite's max_page_count on the environment's own
connection, set as an operator would run out of space): the tenant's INSERT fits, its
journal entry does not, so `execute_group` raises apsw.FullError. The tenant counts its
statement's runs with `total_changes()`, which counts rolled-back changes too.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tandemdb.common.http import ApiError
from tandemdb.node.dataapi import DataApi
from tandemdb.testing import plan

from .conftest import node_in_process

BIG = {"sql": "INSERT INTO t VALUES (randomblob(150000))"}  # ~37 pages, and as many again
SMALL = {"sql": "INSERT INTO t VALUES (1)"}


def total_changes(env) -> int:
    return env.execute([{"sql": "SELECT total_changes()"}]).results[0].rows[0][0]


def rows(env) -> int:
    return env.execute([{"sql": "SELECT count(*) FROM t"}]).results[0].rows[0][0]


def run(tmp_path: Path, scenario) -> None:
    dep = plan(tmp_path, lease_ttl=0)  # no controller here

    async def main() -> None:
        async with node_in_process(dep) as node:
            replica = await node.replicas.ensure("solo", {"role": "primary", "epoch": 1,
                                                          "type": "basic"})
            env = replica.env
            await asyncio.to_thread(env.execute, ["CREATE TABLE t(b)"])
            pages = env._conn.execute("PRAGMA page_count").get
            env._conn.execute(f"PRAGMA max_page_count = {pages + 60}")  # the disk is full
            await scenario(DataApi(node), replica, env)

    asyncio.run(main())


def test_a_failed_group_commit_runs_the_statement_once(tmp_path: Path) -> None:
    async def scenario(api: DataApi, replica, env) -> None:
        before = await asyncio.to_thread(total_changes, env)
        with pytest.raises(Exception) as refused:  # its kind is checked below
            await api.execute(replica, [BIG])
        assert await asyncio.to_thread(total_changes, env) - before == 1  # ran once
        error = refused.value
        assert isinstance(error, ApiError), repr(error)
        assert (error.status, error.code) == (503, "commit_failed")
        assert "FullError" in error.message and "nothing was written" in error.message
        assert "not run again" in error.message
        assert await asyncio.to_thread(rows, env) == 0 and env.last_lsn == 1

    run(tmp_path, scenario)


def test_every_waiter_of_a_failed_group_gets_the_error_and_nothing_is_written(
        tmp_path: Path) -> None:
    async def scenario(api: DataApi, replica, env) -> None:
        before = await asyncio.to_thread(total_changes, env)
        outcomes = await asyncio.gather(api.execute(replica, [SMALL]),
                                        api.execute(replica, [BIG]), return_exceptions=True)
        assert all(isinstance(o, ApiError) and o.code == "commit_failed" for o in outcomes)
        assert "together with 1 other transaction" in outcomes[0].message
        # One run each: SMALL's insert and journal row, BIG's insert (its entry failed).
        assert await asyncio.to_thread(total_changes, env) - before == 3
        assert await asyncio.to_thread(rows, env) == 0 and env.last_lsn == 1
        # The node goes on: a write that fits commits.
        env._conn.execute("PRAGMA max_page_count = 1000000")
        result = await api.execute(replica, [SMALL])
        assert result.lsn == 2

    run(tmp_path, scenario)
