"""Replication between two real node processes: rows, schema changes and files reach the
secondary, it serves reads, refuses writes, waits for `min_lsn`, and concurrent writers
are group-committed with each request getting its own answer."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import httpx

from .conftest import Cluster, unique


def test_rows_schema_and_files_replicate(live: Cluster) -> None:
    env = unique("repl")
    live.pair(env)
    live.ok_sql("west-1", env,
                "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT)",
                ("INSERT INTO items(id, name) VALUES (?, ?)", [1, "anvil"]),
                ("INSERT INTO items(id, name) VALUES (?, ?)", [2, "bolt"]),
                ("INSERT INTO items(id, name) VALUES (?, ?)", [3, "cog"]))
    live.ok_sql("west-1", env,
                "CREATE TABLE nokey(a, b)",
                ("INSERT INTO nokey VALUES (?, ?)", [1, b"\x00\x01".hex()]),
                "ALTER TABLE items ADD COLUMN qty INTEGER DEFAULT 0",
                "UPDATE items SET qty = 5 WHERE id = 2",
                "DELETE FROM items WHERE id = 3")
    blob = os.urandom(100_000)
    for path, data in [("docs/a.txt", b"first"), ("docs/b.bin", blob),
                       ("docs/a.txt", b"second"), ("docs/c.txt", b"")]:
        r = live.http.put(live.files_url("west-1", env, path), content=data)
        assert r.status_code == 200, r.text
        assert r.json()["size"] == len(data) and r.json()["region"] == "west"
    r = live.http.delete(live.files_url("west-1", env, "docs/c.txt"))
    assert r.status_code == 200 and r.json()["deleted"] == "docs/c.txt"

    final = live.wait_equal(env)
    assert final["tables"].keys() == {"items", "nokey"}

    rows = live.ok_sql("east-1", env, "SELECT id, name, qty FROM items ORDER BY id")
    assert rows["results"][0]["rows"] == [[1, "anvil", 0], [2, "bolt", 5]]
    assert rows["region"] == "east" and rows["lsn"] == final["lsn"]
    got = live.http.get(live.files_url("east-1", env, "docs/b.bin"))
    assert got.status_code == 200 and got.content == blob
    assert int(got.headers["x-tandem-lsn"]) == final["lsn"]
    assert live.http.get(live.files_url("east-1", env, "docs/a.txt")).content == b"second"
    gone = live.http.get(live.files_url("east-1", env, "docs/c.txt"))
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "file_not_found"
    listing = {n: live.http.get(f"{live.url(n)}/v1/environments/{env}/files",
                                params={"prefix": "docs/"}).json()["files"]
               for n in ("west-1", "east-1")}
    assert [f["path"] for f in listing["east-1"]] == ["docs/a.txt", "docs/b.bin"]
    assert [(f["path"], f["hash"]) for f in listing["east-1"]] == \
        [(f["path"], f["hash"]) for f in listing["west-1"]]


def test_secondary_serves_reads_and_refuses_writes(live: Cluster) -> None:
    env = unique("readonly")
    live.pair(env)
    lsn = live.ok_sql("west-1", env, "CREATE TABLE t(x)", "INSERT INTO t VALUES (1)")["lsn"]
    before = live.wait_equal(env)
    assert before["lsn"] == lsn

    for statement in ["INSERT INTO t VALUES (2)", "CREATE TABLE u(y)", "DELETE FROM t"]:
        r = live.sql("east-1", env, statement)
        assert r.status_code == 409, r.text
        error = r.json()["error"]
        assert error["code"] == "not_primary" and "west" in error["message"]
    r = live.http.put(live.files_url("east-1", env, "x.txt"), content=b"no")
    assert r.status_code == 409 and "west" in r.json()["error"]["message"]
    r = live.http.delete(live.files_url("east-1", env, "x.txt"))
    assert r.status_code == 409
    read = live.ok_sql("east-1", env, "SELECT count(*) FROM t")
    assert read["results"][0]["rows"] == [[1]] and read["region"] == "east"
    assert live.checksum("east-1", env) == before  # the refused writes changed nothing


def test_min_lsn_waits_for_the_secondary(live: Cluster) -> None:
    env = unique("ryw")
    live.pair(env)
    live.ok_sql("west-1", env, "CREATE TABLE t(id INTEGER PRIMARY KEY)")
    for i in range(20):
        lsn = live.ok_sql("west-1", env, ("INSERT INTO t VALUES (?)", [i]))["lsn"]
        # Read-your-writes: straight after the write, on the other region.
        seen = live.ok_sql("east-1", env, "SELECT max(id) FROM t", min_lsn=lsn)
        assert seen["lsn"] >= lsn and seen["results"][0]["rows"] == [[i]]
    r = live.http.get(live.files_url("east-1", env, "missing.txt"), params={"min_lsn": lsn})
    assert r.status_code == 404  # waited for the lsn, then looked: no such file

    far = live.sql("east-1", env, "SELECT 1", min_lsn=lsn + 1000)
    assert far.status_code == 503, far.text
    assert far.json()["error"]["code"] == "lsn_not_reached"
    assert far.headers["retry-after"] == "1"
    bad = live.sql("east-1", env, "SELECT 1", min_lsn="soon")
    assert bad.status_code == 400


def test_concurrent_writers_are_committed_as_groups(live: Cluster) -> None:
    env = unique("group")
    live.pair(env)
    live.ok_sql("west-1", env, "CREATE TABLE t(id INTEGER PRIMARY KEY, who TEXT)")
    url = f"{live.url('west-1')}/v1/environments/{env}/sql"
    headers = {"X-Tandem-Secret": live.deployment.secret}

    def writer(w: int) -> list[tuple[int, int, dict]]:
        out = []
        with httpx.Client(headers=headers, timeout=30) as client:
            for i in range(25):
                # Every fifth id collides with writer 0's ids: only one of them may win.
                key = i if i % 5 == 0 else w * 1000 + i
                r = client.post(url, json={"statements": [
                    {"sql": "INSERT INTO t VALUES (?, ?)", "params": [key, f"w{w}"]}]})
                out.append((key, r.status_code, r.json()))
        return out

    with ThreadPoolExecutor(16) as pool:
        answers = [a for part in pool.map(writer, range(16)) for a in part]
    ok = [(key, body) for key, status, body in answers if status == 200]
    failed = [(key, status, body) for key, status, body in answers if status != 200]
    assert all(status == 400 and body["error"]["code"] == "sql_error"
               for _, status, body in failed)
    assert len(failed) == 15 * 5  # each colliding id was refused to all writers but one
    lsns = [body["lsn"] for _, body in ok]
    assert len(set(lsns)) == len(lsns)  # each write its own journal entry
    rows = live.ok_sql("west-1", env, "SELECT id FROM t ORDER BY id")["results"][0]["rows"]
    assert sorted(key for key, _ in ok) == [r[0] for r in rows]
    assert live.wait_equal(env)["lsn"] == max(lsns)
