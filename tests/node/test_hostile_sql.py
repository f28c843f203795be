"""Issue 9, items 5, 8 and 9 over HTTP: hostile SQL values get clear 4xx JSON, never a 500,
every answer is strict JSON, and what is accepted replicates exactly."""

from __future__ import annotations

import json

import httpx

from .conftest import Cluster, unique


def strict(r: httpx.Response) -> dict:
    """The body as JSON that any parser accepts (no NaN or Infinity tokens)."""
    def refuse(name: str) -> None:
        raise AssertionError(f"the answer holds {name}, which is not JSON: {r.text[:200]}")

    return json.loads(r.text, parse_constant=refuse)


def refused(r: httpx.Response, status: int, code: str, words: str) -> None:
    assert r.status_code == status, r.text[:300]
    error = strict(r)["error"]
    assert error["code"] == code and words in error["message"], error


def loose(live: Cluster, env: str, sql: str, params: list) -> httpx.Response:
    """Python's JSON, as many clients send it: NaN and Infinity as bare tokens."""
    body = json.dumps({"statements": [{"sql": sql, "params": params}]})
    return live.http.post(f"{live.url('west-1')}/v1/environments/{env}/sql", content=body)


def test_hostile_values_get_clear_errors_and_replicate_exactly(live: Cluster) -> None:
    env = unique("hostile")
    live.pair(env)
    live.ok_sql("west-1", env, "CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    insert = "INSERT INTO t(v) VALUES (?)"
    # Item 9: Infinity comes back as a string, NaN is refused rather than stored as NULL.
    answer = strict(live.sql("west-1", env, "SELECT 1e999, -1e999, 0.5"))
    assert answer["results"][0]["rows"] == [["Infinity", "-Infinity", 0.5]]
    refused(loose(live, env, insert, [float("nan")]), 400, "sql_error", "NaN")
    # Item 5: parameters that used to crash with a 500.
    refused(live.sql("west-1", env, ("INSERT INTO t(v) VALUES (:v)", {"w": 1})), 400,
            "sql_error", ":v")
    refused(live.sql("west-1", env, (insert, [[1, [2]]])), 400, "sql_error", "parameter 1")
    refused(live.sql("west-1", env, (insert, [10 ** 30])), 400, "sql_error", "64-bit")
    # Item 5: text that is not UTF-8 is stored, checksummed on both regions, and refused
    # with 422 only where JSON would have to carry it.
    live.ok_sql("west-1", env, "INSERT INTO t(v) VALUES (CAST(x'fffe41' AS TEXT))")
    refused(live.sql("west-1", env, "SELECT v FROM t"), 422, "invalid_text", "AS BLOB")
    rows = live.ok_sql("west-1", env, "SELECT CAST(v AS BLOB) FROM t")["results"][0]["rows"]
    assert rows == [[{"$blob": "//5B"}]]
    # Item 5: a value over the entry bound is refused at once with 413; nothing is written.
    lsn = live.ok_sql("west-1", env, "SELECT 1")["lsn"]
    refused(live.sql("west-1", env, "INSERT INTO t(v) VALUES (randomblob(200000000))"), 413,
            "entry_too_large", "MiB")
    assert live.ok_sql("west-1", env, "SELECT 1")["lsn"] == lsn
    # Item 8: ALTERs that were refused with a wrong reason now replicate.
    live.ok_sql("west-1", env, "CREATE VIEW tv AS SELECT id, v FROM t",
                "ALTER TABLE t RENAME COLUMN v TO w", "ALTER TABLE t ADD COLUMN x",
                "ALTER TABLE t RENAME TO u", "ALTER TABLE u DROP COLUMN x")
    assert loose(live, env, "INSERT INTO u(w) VALUES (?)", [float("inf")]).status_code == 200
    both = live.wait_equal(env)
    assert both["tables"].keys() == {"u"}
    east = live.ok_sql("east-1", env, "SELECT id, typeof(w) FROM tv ORDER BY id")
    assert east["results"][0]["rows"] == [[1, "text"], [2, "real"]]
