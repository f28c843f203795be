"""Journal reading with budgets, truncation bounded by consumers, and the wire format."""

from __future__ import annotations

import msgpack
import pytest

from tandemdb.engine import JournalEntry, JournalTruncated


def _fill(env, n: int) -> None:
    env.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)"])
    for _ in range(n):
        env.execute([("INSERT INTO t(v) VALUES (?)", [b"x" * 1000])])


def test_read_after_respects_entry_and_byte_budgets(make_env):
    env = make_env()
    _fill(env, 20)
    assert [e.lsn for e in env.read_journal(5, max_entries=3)] == [6, 7, 8]
    small = env.read_journal(1, max_bytes=2500)
    assert [e.lsn for e in small] == [2, 3]
    assert [e.lsn for e in env.read_journal(1, max_bytes=1)] == [2], "at least one entry"
    assert env.read_journal(21) == []


def test_truncate_waits_for_every_consumer(make_env):
    env = make_env()
    _fill(env, 10)
    env.acknowledge("east", 4)
    env.acknowledge("south", 8)
    assert env.truncate_journal() == 4
    assert env.first_lsn() == 5
    with pytest.raises(JournalTruncated, match="snapshot"):
        env.read_journal(2)
    assert env.read_journal(4)[0].lsn == 5
    env.acknowledge("east", 3)  # acknowledgements never go backwards
    assert env.consumers() == {"east": 4, "south": 8}
    env.forget_consumer("east")
    assert env.truncate_journal(upto=6) == 2
    assert env.first_lsn() == 7


def test_truncate_keeps_the_newest_entry(make_env):
    env = make_env()
    _fill(env, 3)
    env.truncate_journal()
    assert env.first_lsn() == 4 and env.last_lsn == 4
    env.close()


def test_wire_roundtrip(make_env):
    env = make_env()
    _fill(env, 1)
    env.put_file("f", b"content")
    for entry in env.read_journal(0):
        raw = msgpack.unpackb(msgpack.packb(entry.to_wire(), use_bin_type=True), raw=False)
        assert JournalEntry.from_wire(raw) == entry
