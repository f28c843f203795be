"""Poison entries (issue 9): a secondary that cannot apply an entry halts that environment's
stream, durably and visibly, the other environments stream on, and a re-seed ends it.

The secondary is made unable to apply by changing its database file behind the node's
back (as a disk fault or an operator's mistake would), so the test needs no engine bug.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import apsw
import httpx
import pytest

from tandemdb.engine import (
    ApplyConflict,
    DivergentHistory,
    JournalGap,
    MissingBlobs,
    SqlError,
    StaleEpoch,
)
from tandemdb.node import halts
from tandemdb.testing import poll_until
from tests.tamper import tamper

from .conftest import Cluster, unique


def halted_gauge(live: Cluster, node: str, env: str) -> float | None:
    text = live.http.get(live.url(node) + "/metrics").text
    found = re.search(rf'^tandem_replication_halted{{env="{re.escape(env)}"}} (\S+)$', text,
                      re.MULTILINE)
    return float(found.group(1)) if found else None


def halt_lines(live: Cluster, node: str, env: str) -> list[str]:
    log = live.log(node)
    return [line for line in log.splitlines() if "HALTED" in line and env in line]


def test_poison_and_transient_errors_are_told_apart() -> None:
    poison = [ApplyConflict("lsn 3: UPDATE on table 't' key (2,): row not found"),
              DivergentHistory("forked"), SqlError("no such table"),
              apsw.SQLError("SQLError: table u already exists"),
              apsw.ConstraintError("UNIQUE constraint failed")]
    transient = [MissingBlobs(["ab" * 32]), StaleEpoch("old"), JournalGap("gap"),
                 apsw.BusyError("busy"), apsw.FullError("disk full"),
                 apsw.ConnectionClosedError("closed"), httpx.ConnectError("refused"),
                 ValueError("bad wire")]
    assert [halts.is_poison(e) for e in poison] == [True] * len(poison)
    assert [halts.is_poison(e) for e in transient] == [False] * len(transient)
    assert halts.error_code(apsw.SQLError("x")) == "sqlite_sql"
    assert halts.error_code(ApplyConflict("x")) == "apply_conflict"


def test_a_poison_entry_halts_one_stream_durably_until_a_reseed(live: Cluster) -> None:
    env, other = unique("poison"), unique("bystander")
    live.pair(env)
    live.pair(other)
    live.ok_sql("west-1", env, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
                "INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    live.ok_sql("west-1", other, "CREATE TABLE t(id INTEGER PRIMARY KEY)")
    live.wait_equal(env)
    live.wait_equal(other)
    assert halted_gauge(live, "east-1", env) == 0

    tamper(live.deployment.data, "east-1", env, "DELETE FROM t WHERE id = 2")
    # East gets the three entries in one batch; only the middle one cannot apply.
    live.pause("east-1")
    try:
        before = live.ok_sql("west-1", env, "INSERT INTO t VALUES (4, 'd')")["lsn"]
        poison = live.ok_sql("west-1", env, "UPDATE t SET v = 'B' WHERE id = 2")["lsn"]
        live.ok_sql("west-1", env, "INSERT INTO t VALUES (5, 'e')")
    finally:
        live.resume("east-1")

    status = poll_until(lambda: (s := live.status("east-1", env))["halted"] and s, 10,
                        what="the stream to halt")
    halt = status["halted"]
    assert (halt["lsn"], halt["applied_lsn"], halt["code"]) == (poison, before,
                                                               "apply_conflict")
    assert "row not found" in halt["message"] and halt["primary_node"] == "west-1"
    assert status["last_lsn"] == before  # the entries before the poison one were applied
    assert f"halted at lsn {poison}" in status["stream_error"]
    assert halted_gauge(live, "east-1", env) == 1

    # The other environment of the same peer loop streams on.
    for i in range(5):
        live.ok_sql("west-1", other, ("INSERT INTO t VALUES (?)", [i]))
    live.wait_equal(other)
    time.sleep(1.5)  # the old puller retried (and would log) once a second
    assert live.status("east-1", env)["last_lsn"] == before
    assert len(halt_lines(live, "east-1", env)) == 1

    # A restart does not retry: the halt is read back from disk.
    live.kill("east-1")
    live.start("east-1")
    again = live.status("east-1", env)
    assert again["halted"] == halt and again["last_lsn"] == before
    assert halted_gauge(live, "east-1", env) == 1
    live.ok_sql("west-1", env, "INSERT INTO t VALUES (6, 'f')")
    live.wait_equal(other)

    # The way out: a fresh copy of the primary, then streaming on from it.
    r = live.http.post(live.url("east-1") + f"/internal/v1/replicas/{env}/reseed")
    assert r.status_code == 202, r.text
    assert r.json()["reseed_started"] is True and r.json()["halted"] is None
    live.wait_equal(env)
    after = live.status("east-1", env)
    assert after["halted"] is None and after["last_seed"] is not None
    assert halted_gauge(live, "east-1", env) == 0
    assert not (Path(live.deployment.data) / "nodes/east-1/envs" / env / halts.HALT_FILE).exists()
    lsn = live.ok_sql("west-1", env, "UPDATE t SET v = 'again' WHERE id = 2")["lsn"]
    assert live.wait_equal(env)["lsn"] == lsn


def test_a_ddl_that_cannot_replay_halts_and_a_new_role_ends_the_halt(live: Cluster) -> None:
    env = unique("poison-ddl")
    live.pair(env)
    live.ok_sql("west-1", env, "CREATE TABLE t(id INTEGER PRIMARY KEY)")
    live.wait_equal(env)
    tamper(live.deployment.data, "east-1", env, "CREATE TABLE u(x)")
    lsn = live.ok_sql("west-1", env, "CREATE TABLE u(x)")["lsn"]
    halt = poll_until(lambda: live.status("east-1", env)["halted"], 10, what="the stream to halt")
    assert (halt["lsn"], halt["code"]) == (lsn, "sqlite_sql")
    assert "already exists" in halt["message"]
    # Promoted (as a forced failover would): no longer anyone's secondary, no longer halted.
    live.put_replica("east-1", env, "primary", epoch=2)
    poll_until(lambda: live.status("east-1", env)["halted"] is None, 10, what="the halt to end")
    path = Path(live.deployment.data) / "nodes/east-1/envs" / env / halts.HALT_FILE
    poll_until(lambda: not path.exists(), 10, what=f"{halts.HALT_FILE} to be removed")


@pytest.mark.parametrize("role", ["primary", "missing"])
def test_reseed_is_refused_for_what_is_not_a_secondary(live: Cluster, role: str) -> None:
    env = unique("reseed-no")
    if role == "primary":
        live.put_replica("west-1", env, "primary")
    r = live.http.post(live.url("west-1") + f"/internal/v1/replicas/{env}/reseed")
    expected = (409, "not_secondary") if role == "primary" else (404, "not_found")
    assert (r.status_code, r.json()["error"]["code"]) == expected, r.text
