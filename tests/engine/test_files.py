"""Files: a namespace whose rows share the database's recovery point and whose blobs are
content-addressed and durable before the row commits."""

from __future__ import annotations

import pytest

from tandemdb.engine import FileNotFound, InvalidPath, normalise_path
from tandemdb.engine.blobstore import digest_of


def test_put_get_list_delete(make_env):
    env = make_env()
    env.put_file("docs/a.txt", b"alpha")
    env.put_file("docs/b.txt", b"beta")
    env.put_file("img/c.png", b"\x89PNG")
    assert env.get_file("docs/a.txt") == b"alpha"
    assert [f.path for f in env.list_files("docs/")] == ["docs/a.txt", "docs/b.txt"]
    assert [f.path for f in env.list_files()] == ["docs/a.txt", "docs/b.txt", "img/c.png"]
    info = env.stat_file("img/c.png")
    assert info.size == 4 and info.hash == digest_of(b"\x89PNG")
    env.delete_file("docs/a.txt")
    with pytest.raises(FileNotFound):
        env.get_file("docs/a.txt")
    with pytest.raises(FileNotFound):
        env.delete_file("docs/a.txt")
    assert env.last_lsn == 4


def test_overwrite_records_old_and_new_blob(make_env):
    env = make_env()
    env.put_file("a", b"one")
    env.put_file("a", b"two")
    entry = env.read_journal(1)[0]
    assert set(entry.blobs) == {digest_of(b"one"), digest_of(b"two")}
    assert env.get_file("a") == b"two"


def test_files_and_rows_share_a_transaction_log(make_env):
    env = make_env()
    env.execute(["CREATE TABLE t(v)"])
    env.put_file("x", b"data")
    env.execute(["INSERT INTO t VALUES (1)"])
    assert [e.lsn for e in env.read_journal(0)] == [1, 2, 3]
    assert env.read_journal(1)[0].blobs == (digest_of(b"data"),)


def test_like_wildcards_in_prefix_are_literal(make_env):
    env = make_env()
    env.put_file("a_b/1", b"1")
    env.put_file("axb/2", b"2")
    env.put_file("a%/3", b"3")
    assert [f.path for f in env.list_files("a_b/")] == ["a_b/1"]
    assert [f.path for f in env.list_files("a%")] == ["a%/3"]


@pytest.mark.parametrize("bad", [
    "", "/etc/passwd", "../x", "a/../../b", "a//b", "a/", "a/./b", ".", "a\x00b",
    "a\\b", "a/\x01", "x" * 2000,
])
def test_path_tricks_are_rejected_and_change_nothing(make_env, bad):
    env = make_env()
    before = env.checksum().total
    with pytest.raises(InvalidPath):
        env.put_file(bad, b"evil")
    with pytest.raises(InvalidPath):
        env.get_file(bad)
    assert env.last_lsn == 0 and env.checksum().total == before
    assert list(env.blobs.digests()) == []


def test_paths_are_nfc_normalised():
    decomposed = "cafe\u0301.txt"
    assert normalise_path(decomposed) == "caf\u00e9.txt"


def test_blob_digests_are_checked_before_use(make_env):
    env = make_env()
    with pytest.raises(ValueError):
        env.blobs.get("../../etc/passwd")
    with pytest.raises(ValueError):
        env.blobs.has("abc")


def test_garbage_collection_keeps_what_journal_and_snapshots_need(make_env):
    env = make_env()
    env.put_file("a", b"v1")
    env.put_file("a", b"v2")  # v1 still needed: entry 2 restores it on rewind
    env.put_file("tmp", b"gone")
    env.delete_file("tmp")
    assert env.collect_garbage() == 0
    snap = env.snapshot()
    env.put_file("a", b"v3")
    env.truncate_journal()  # keeps only the newest entry (lsn 5)
    # The snapshot holds entries 1-4 and a replica seeded from it may rewind them.
    assert env.collect_garbage() == 0
    env.drop_snapshot(snap)
    # Now v1 and "gone" are needed by nothing; v2 still by entry 5 (its old content).
    assert env.collect_garbage() == 2
    assert env.blobs.has(digest_of(b"v2")) and env.blobs.has(digest_of(b"v3"))
    env.execute(["CREATE TABLE t(v)"])
    env.truncate_journal()
    assert env.collect_garbage() == 1
    assert sorted(env.blobs.digests()) == [digest_of(b"v3")]
    assert env.get_file("a") == b"v3"
