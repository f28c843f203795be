"""Switchover on the nodes (docs/failover.md "Planned failover of one environment"), driven
by hand as the controller would: fence, wait, promote, reverse replication, unfence."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import httpx

from .conftest import Cluster, poll, unique

TABLE = "CREATE TABLE t (k TEXT PRIMARY KEY, id INTEGER NOT NULL)"


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
    path = Path(c.dep.data) / "nodes" / node / "envs" / env / "replica.json"
    return json.loads(path.read_text())


class Writer(threading.Thread):
    """Inserts unique ids one at a time into the node named by `target`; keeps what was
    acknowledged (id, epoch) and tolerates the answers of a switchover."""

    def __init__(self, c: Cluster, env: str, target: str) -> None:
        super().__init__(daemon=True)
        self.c, self.env, self.target = c, env, target
        self.acked: list[tuple[int, int, str]] = []  # (id, epoch, node)
        self.refused: dict[str, int] = {}
        self.stop = threading.Event()
        self.failure: str | None = None

    def run(self) -> None:
        n = 0
        with httpx.Client(headers={"X-Tandem-Secret": self.c.dep.secret}, timeout=10) as http:
            while not self.stop.is_set():
                n += 1
                node = self.target
                body = {"statements": [{"sql": "INSERT INTO t VALUES (?, ?)",
                                        "params": [uuid.uuid4().hex, n]}]}
                try:
                    r = http.post(f"{self.c.url(node)}/v1/environments/{self.env}/sql",
                                  json=body)
                except httpx.HTTPError:
                    continue  # not acknowledged: it may or may not have landed
                if r.status_code == 200:
                    self.acked.append((n, r.json()["epoch"], node))
                elif r.status_code in (409, 503):
                    code = r.json()["error"]["code"]
                    if code not in ("fenced", "not_primary", "rpo_exceeded"):
                        self.failure = r.text
                        return
                    self.refused[code] = self.refused.get(code, 0) + 1
                    time.sleep(0.01)
                else:
                    self.failure = r.text
                    return

    def acked_on(self, node: str) -> int:
        return sum(1 for _, _, n in self.acked if n == node)


def counts(c: Cluster, node: str, env: str) -> dict[int, int]:
    rows = c.ok_sql(node, env, "SELECT id, count(*) FROM t GROUP BY id")["results"][0]["rows"]
    return {row[0]: row[1] for row in rows}


def test_manual_switchover_under_writes(live: Cluster) -> None:
    env = unique("switch")
    live.pair(env)
    live.ok_sql("west-1", env, TABLE)
    writer = Writer(live, env, "west-1")
    writer.start()
    try:
        poll(lambda: writer.acked_on("west-1") >= 20 or writer.failure, 10, "writes on west")
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
        writer.target = "east-1"
        live.put_replica("west-1", env, "secondary", primary="east-1", epoch=2)
        poll(lambda: writer.acked_on("east-1") >= 20 or writer.failure, 10, "writes on east")
    finally:
        writer.stop.set()
        writer.join(10)
    assert writer.failure is None, writer.failure

    same = live.wait_equal(env)
    assert same["epoch"] == 2 and same["lsn"] > final
    for node in ("west-1", "east-1"):
        status = live.status(node, env)
        assert status["epoch"] == 2 and status["record"]["epoch"] == 2, status
        assert status["stream_error"] is None, status
        present = counts(live, node, env)
        assert all(present.get(n) == 1 for n, _, _ in writer.acked), node
        assert all(v == 1 for v in present.values()), node
    assert live.status("west-1", env)["role"] == "secondary"
    assert live.status("east-1", env)["role"] == "primary"
    epochs = [epoch for _, epoch, _ in writer.acked]
    assert epochs == sorted(epochs) and epochs[0] == 1 and epochs[-1] == 2
    assert all(epoch == 2 for _, epoch, node in writer.acked if node == "east-1")
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
