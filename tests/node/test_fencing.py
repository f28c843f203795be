"""Switchover on the nodes (docs/failover.md "Planned failover of one environment"), driven
by hand as the controller would: fence, wait, promote, reverse replication, unfence."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from tandemdb.testing import IdWriter, NodeSender, poll_until

from .conftest import Cluster, unique

# No key: a write applied twice shows as two rows with its id (the writer's ids count).
TABLE = "CREATE TABLE t (k TEXT, id INTEGER NOT NULL)"
SWITCHOVER_REFUSALS = {"fenced", "not_primary", "rpo_exceeded"}  # the answers to expect


def call(c: Cluster, node: str, env: str, action: str, **body) -> httpx.Response:
    return c.http.post(f"{c.url(node)}/internal/v1/replicas/{env}/{action}", json=body)


def ok(c: Cluster, node: str, env: str, action: str, **body) -> dict:
    r = call(c, node, env, action, **body)
    assert r.status_code == 200, r.text
    return r.json()


def error(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code, r.text
    return r.json()["error"]["message"]


def record_on_disk(c: Cluster, node: str, env: str) -> dict:
    path = Path(c.deployment.data) / "nodes" / node / "envs" / env / "replica.json"
    return json.loads(path.read_text())


def unexpected_refusals(writer: IdWriter) -> set[str]:
    return {r.code for r in list(writer.refusals)} - SWITCHOVER_REFUSALS


def writes_on(writer: IdWriter, node: str) -> bool:
    """20 writes acknowledged by `node`; a refusal other than a switchover's ends the wait."""
    return len(writer.acked_on(node)) >= 20 or bool(unexpected_refusals(writer))


def counts(c: Cluster, node: str, env: str) -> dict[int, int]:
    rows = c.ok_sql(node, env, "SELECT id, count(*) FROM t GROUP BY id")["results"][0]["rows"]
    return {row[0]: row[1] for row in rows}


def test_manual_switchover_under_writes(live: Cluster) -> None:
    env = unique("switch")
    live.pair(env)
    live.ok_sql("west-1", env, TABLE)
    sender = NodeSender(live.url("west-1"), live.deployment.secret, timeout=10, node="west-1")
    writer = IdWriter(sender, env, table="t", stamp=False, error_pause=0.01,
                      owns_sender=True).start()
    try:
        poll_until(lambda: writes_on(writer, "west-1"), 10, what="writes on west")
        # 2. fence west: it stops writing and answers its final lsn, twice the same
        fenced = ok(live, "west-1", env, "fence", epoch=1)
        final = fenced["final_lsn"]
        assert fenced["epoch"] == 1
        assert record_on_disk(live, "west-1", env)["role"] == "fenced"
        message = error(live.sql("west-1", env, ("INSERT INTO t VALUES ('x', -1)")), 409,
                        "fenced")
        assert "switching over" in message
        assert ok(live, "west-1", env, "fence", epoch=1) == {"final_lsn": final, "epoch": 1}
        assert live.status("west-1", env)["last_lsn"] == final
        # 3. east catches up to exactly the final lsn (west still serves the stream)
        reached = ok(live, "east-1", env, "wait", lsn=final, timeout=10)
        assert (reached["applied_lsn"], reached["epoch"]) == (final, 1)
        assert reached["last_committed_at"] > 0  # the final entry's commit time
        # 4. promote east at epoch 2, from exactly the final lsn; a retry answers the same
        promote = {"epoch": 2, "expected_lsn": final, "secondaries": [live.peer("west-1")]}
        assert ok(live, "east-1", env, "promote", **promote) == {"epoch": 2, "lsn": final}
        assert ok(live, "east-1", env, "promote", **promote) == {"epoch": 2, "lsn": final}
        assert record_on_disk(live, "east-1", env)["role"] == "primary"
        # 5./6. writes go to east; west becomes its secondary at epoch 2
        sender.retarget(live.url("east-1"), "east-1")
        live.put_replica("west-1", env, "secondary", primary="east-1", epoch=2)
        poll_until(lambda: writes_on(writer, "east-1"), 10, what="writes on east")
    finally:
        writer.stop()
    assert not unexpected_refusals(writer), writer.refusals

    same = live.wait_equal(env)
    assert same["epoch"] == 2 and same["lsn"] > final
    for node in ("west-1", "east-1"):
        status = live.status(node, env)
        assert status["epoch"] == 2 and status["record"]["epoch"] == 2, status
        assert status["stream_error"] is None, status
        present = counts(live, node, env)
        assert all(present.get(n) == 1 for n in writer.acked), node
        assert all(v == 1 for v in present.values()), node
    assert live.status("west-1", env)["role"] == "secondary"
    assert live.status("east-1", env)["role"] == "primary"
    epochs = writer.epochs
    assert epochs == sorted(epochs) and epochs[0] == 1 and epochs[-1] == 2
    assert all(ack.epoch == 2 for ack in writer.acked_on("east-1"))
    error(live.sql("west-1", env, "INSERT INTO t VALUES ('y', -2)"), 409, "not_primary")
    # The new primary streams to west: a fresh write arrives there.
    lsn = live.ok_sql("east-1", env, "INSERT INTO t VALUES ('z', -3)")["lsn"]
    assert ok(live, "west-1", env, "wait", lsn=lsn, timeout=10)["applied_lsn"] >= lsn


def test_wrong_final_lsn_refused_then_unfence(live: Cluster) -> None:
    env = unique("mismatch")
    live.pair(env)
    live.ok_sql("west-1", env, TABLE, ("INSERT INTO t VALUES ('a', 1)"))
    live.wait_equal(env)
    final = ok(live, "west-1", env, "fence", epoch=1)["final_lsn"]
    ok(live, "east-1", env, "wait", lsn=final, timeout=10)
    before = live.status("east-1", env)
    for wrong in (final - 1, final + 1):
        message = error(call(live, "east-1", env, "promote", epoch=2, expected_lsn=wrong,
                             secondaries=[live.peer("west-1")]), 409, "lsn_mismatch")
        assert str(final) in message and str(wrong) in message
    after = live.status("east-1", env)
    assert (after["role"], after["epoch"], after["last_lsn"], after["record"]) == (
        before["role"], before["epoch"], before["last_lsn"], before["record"])
    assert record_on_disk(live, "east-1", env)["role"] == "secondary"
    # The switchover fails: west takes writes again at epoch 1, and east follows.
    answer = ok(live, "west-1", env, "unfence", epoch=1)
    assert answer["epoch"] == 1 and answer["role"] == "primary"
    assert record_on_disk(live, "west-1", env)["role"] == "primary"
    written = live.ok_sql("west-1", env, "INSERT INTO t VALUES ('b', 2)")
    assert written["epoch"] == 1 and written["lsn"] == final + 1
    assert live.wait_equal(env)["epoch"] == 1
    error(call(live, "west-1", env, "unfence", epoch=2), 409, "not_fenced")


def test_epochs_and_roles_are_checked(live: Cluster) -> None:
    env = unique("epochs")
    live.put_replica("west-1", env, "primary", secondaries=("east-1",), epoch=3)
    live.put_replica("east-1", env, "secondary", primary="west-1", epoch=3)
    live.ok_sql("west-1", env, TABLE)
    live.wait_equal(env)
    lsn = live.status("west-1", env)["last_lsn"]
    error(call(live, "west-1", env, "fence", epoch=2), 409, "stale_epoch")
    error(call(live, "west-1", env, "fence", epoch=4), 409, "epoch_mismatch")
    error(call(live, "east-1", env, "fence", epoch=3), 409, "not_primary")
    error(call(live, "east-1", env, "unfence", epoch=3), 409, "not_fenced")
    error(call(live, "west-1", env, "fence", epoch="3"), 400, "bad_request")
    for epoch in (2, 3):
        error(call(live, "east-1", env, "promote", epoch=epoch, expected_lsn=lsn,
                   secondaries=[]), 409, "stale_epoch")
    error(call(live, "west-1", env, "promote", epoch=4, expected_lsn=lsn, secondaries=[]),
          409, "not_secondary")
    started = time.monotonic()
    message = error(call(live, "east-1", env, "wait", lsn=lsn + 5, timeout=0.3), 503,
                    "lsn_not_reached")
    assert str(lsn) in message and time.monotonic() - started < 5
    assert live.status("west-1", env)["role"] == "primary"
    assert live.status("east-1", env)["role"] == "secondary"
    # Once fenced at 3, a fence at a lower epoch is stale, at 3 the same answer.
    final = ok(live, "west-1", env, "fence", epoch=3)["final_lsn"]
    assert final == lsn
    error(call(live, "west-1", env, "fence", epoch=2), 409, "stale_epoch")
    assert ok(live, "west-1", env, "fence", epoch=3) == {"final_lsn": lsn, "epoch": 3}
    error(call(live, "west-1", env, "unfence", epoch=2), 409, "not_fenced")
    ok(live, "west-1", env, "unfence", epoch=3)
    ok(live, "west-1", env, "unfence", epoch=3)  # a retried unfence
