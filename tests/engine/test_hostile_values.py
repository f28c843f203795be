"""Issue 9, items 5 and 9: hostile parameters and values get clear errors, never crashes.

Parameters are checked before SQLite binds them; TEXT that is not valid UTF-8 is checksummed
and described without being decoded; non-finite REALs have a JSON-safe form.
"""

from __future__ import annotations

import json
import math

import apsw
import pytest

from tandemdb.common import values
from tandemdb.controller.replay import unreplayable
from tandemdb.engine import (
    ApplyConflict,
    Environment,
    InvalidText,
    SqlError,
    StatementResult,
    TxResult,
)
from tandemdb.engine.lost import describe
from tandemdb.engine.schema import DB_FILE

from .conftest import replicate

BAD_TEXT = "CAST(x'fffe41' AS TEXT)"


@pytest.fixture
def env(make_env) -> Environment:
    e = make_env("hostile")
    e.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v)"])
    return e


def refused(env: Environment, statement: tuple, match: str) -> SqlError:
    lsn = env.last_lsn
    with pytest.raises(SqlError, match=match) as caught:
        env.execute([statement])
    assert type(caught.value) is SqlError and caught.value.status == 400
    assert env.last_lsn == lsn
    return caught.value


def test_a_missing_named_parameter_is_named(env):
    refused(env, ("INSERT INTO t(v) VALUES (:v)", {"w": 1}), "parameter :v")
    refused(env, ("INSERT INTO t(id, v) VALUES (:id, $v)", {"id": 1}), "parameter :v")


@pytest.mark.parametrize("params, match", [
    ([1, 2], "number of bindings"),
    ([], "number of bindings"),
    ([[1]], "parameter 1 is a list"),
    ([{"a": 1}], "parameter 1 is an object"),
    ({"v": [1, [2]]}, "parameter :v is a list"),
    ([1 << 63], "parameter 1 is an integer outside"),
    ([-(1 << 63) - 1], "parameter 1 is an integer outside"),
    ([float("nan")], "parameter 1 is NaN"),
    (["\ud800"], "not valid Unicode"),
    ({1: 2}, "parameter names must be text"),
    ("ab", "params must be a list"),
])
def test_bad_parameters_are_refused_with_400(env, params, match):
    refused(env, ("INSERT INTO t(v) VALUES (?)", params), match)


def test_edge_values_that_sqlite_can_store_are_kept(env):
    env.execute([("INSERT INTO t VALUES (?, ?)", [1, True]),
                 ("INSERT INTO t VALUES (?, ?)", [2, float("inf")]),
                 ("INSERT INTO t VALUES (?, ?)", [3, (1 << 63) - 1]),
                 ("INSERT INTO t VALUES (?, ?)", [4, -(1 << 63)])])
    rows = env.execute(["SELECT id, v, typeof(v) FROM t ORDER BY id"]).results[0].rows
    assert rows == [[1, 1, "integer"], [2, math.inf, "real"], [3, (1 << 63) - 1, "integer"],
                    [4, -(1 << 63), "integer"]]


def test_non_finite_reals_have_a_json_form():
    """`SELECT 1e999` answered `Infinity`, which is not JSON."""
    result = TxResult([StatementResult(["a", "b", "c"], [[math.inf, -math.inf, 1.5]])], 1, 1)
    wire = values.dumps(result.to_dict())
    assert json.loads(wire, parse_constant=_no_constants)["results"][0]["rows"] == [
        ["Infinity", "-Infinity", 1.5]]
    assert result.results[0].rows == [[math.inf, -math.inf, 1.5]]  # the engine keeps floats


def test_select_of_infinity_is_strict_json(env):
    result = env.execute(["SELECT 1e999, -1e999, 0.5, 'Infinity'"])
    body = values.dumps(result.to_dict())
    rows = json.loads(body, parse_constant=_no_constants)["results"][0]["rows"]
    assert rows == [["Infinity", "-Infinity", 0.5, "Infinity"]]


def _no_constants(name: str) -> None:
    raise AssertionError(f"{name} is not JSON")


def test_invalid_utf8_text_is_checksummed_exactly_without_decoding(make_env):
    """The checksum raised UnicodeDecodeError on both regions after such a write."""
    primary, replica = make_env("p"), make_env("r")
    primary.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v)",
                     f"INSERT INTO t VALUES (1, {BAD_TEXT})"])
    replicate(primary, replica)
    assert primary.checksum() == replica.checksum()
    # Text and blob of the same bytes differ, and so do two different invalid strings.
    before = primary.checksum().total
    primary.execute(["UPDATE t SET v = x'fffe41'"])
    as_blob = primary.checksum().total
    primary.execute(["UPDATE t SET v = CAST(x'fffe42' AS TEXT)"])
    other = primary.checksum().total
    primary.execute([f"UPDATE t SET v = {BAD_TEXT}"])
    assert len({before, as_blob, other}) == 3 and primary.checksum().total == before
    # Valid text, '' and NULL stay apart as well.
    sums = set()
    for value in ("'A'", "''", "NULL", "x''", "0", "0.0"):
        primary.execute([f"UPDATE t SET v = {value}"])
        sums.add(primary.checksum().total)
    assert len(sums) == 6


def test_reading_invalid_utf8_is_a_clear_422_and_blob_reads_work(env):
    env.execute([f"INSERT INTO t VALUES (1, {BAD_TEXT})"])
    lsn = env.last_lsn
    with pytest.raises(InvalidText, match="CAST\\(column AS BLOB\\)") as caught:
        env.execute(["SELECT v FROM t"])
    assert caught.value.status == 422 and caught.value.code == "invalid_text"
    with pytest.raises(InvalidText):  # a write that returns it is refused whole
        env.execute([f"INSERT INTO t VALUES (2, {BAD_TEXT}) RETURNING v"])
    assert env.last_lsn == lsn
    rows = env.execute(["SELECT typeof(v), CAST(v AS BLOB), hex(v) FROM t"]).results[0].rows
    assert rows == [["text", b"\xff\xfeA", "FFFE41"]]


def test_lost_writes_with_invalid_text_and_infinity_are_described(make_env):
    """describe() raised UnicodeDecodeError, which would fail the rewind of an old primary."""
    env = make_env()
    env.execute(["CREATE TABLE k(name TEXT PRIMARY KEY, v, w)"])
    env.execute([f"INSERT INTO k VALUES ({BAD_TEXT}, 1e999, 'ok')",
                 "INSERT INTO k VALUES ('plain', -1e999, x'00')"])
    env.execute([f"UPDATE k SET v = {BAD_TEXT} WHERE name = 'plain'",
                 f"DELETE FROM k WHERE name = {BAD_TEXT}"])
    lost = [describe(e, env.columns) for e in env.read_journal(1)]
    json.loads(values.dumps(lost), parse_constant=_no_constants)  # JSON-safe throughout
    bad, inf, ninf = {"$text_hex": "fffe41"}, {"$real": "Infinity"}, {"$real": "-Infinity"}
    inserts = {str(c["key"]["name"]): c for c in lost[0]["changes"]}
    changes = {c["op"]: c for c in lost[1]["changes"]}
    assert inserts[str(bad)] == {"table": "k", "op": "insert", "key": {"name": bad},
                                 "before": None, "after": {"name": bad, "v": inf, "w": "ok"}}
    assert inserts["plain"]["after"] == {"name": "plain", "v": ninf, "w": b"\x00"}
    assert changes["update"]["after"] == {"name": "plain", "v": bad}
    assert changes["delete"]["key"] == {"name": bad}
    assert changes["delete"]["before"] == {"name": bad, "v": inf, "w": "ok"}


def test_an_apply_conflict_on_a_non_utf8_key_is_reported_as_one(make_env, tmp_path):
    """Naming the conflicting key raised UnicodeDecodeError out of apply instead."""
    primary, replica = make_env("p"), make_env("r")
    primary.execute(["CREATE TABLE k(name TEXT PRIMARY KEY, v)"])
    replicate(primary, replica)
    replica.close()
    conn = apsw.Connection(str(tmp_path / "r" / DB_FILE))  # the replica diverged somehow
    conn.execute(f"INSERT INTO k VALUES ({BAD_TEXT}, 'other')")
    conn.close()
    replica = make_env("r")
    primary.execute([f"INSERT INTO k VALUES ({BAD_TEXT}, 1)"])
    with pytest.raises(ApplyConflict, match=r"table 'k'.*row already exists"):
        replicate(primary, replica)
    assert replica.last_lsn == 1


def test_a_replay_leaves_tagged_values_to_people(make_env):
    """Written back as parameters, {"$real"} and {"$text_hex"} would become other values."""
    env = make_env()
    env.execute(["CREATE TABLE k(name TEXT PRIMARY KEY, v)"])
    env.execute([f"INSERT INTO k VALUES ({BAD_TEXT}, 1)", "INSERT INTO k VALUES ('i', 1e999)",
                 "INSERT INTO k VALUES ('plain', x'00')", "INSERT INTO k VALUES ('t', 'x')"])
    (entry,) = [describe(e, env.columns) for e in env.read_journal(1)]
    bundle = json.loads(values.dumps(entry))  # as the node writes it and the controller reads
    verdict = {str(c["key"]["name"]): unreplayable(c) for c in bundle["changes"]}
    assert verdict == {str({"$text_hex": "fffe41"}): True, "i": True, "plain": False,
                       "t": False}
