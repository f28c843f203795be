"""Snapshots seed replicas that continue from the journal; checksums compare content."""

from __future__ import annotations

import pytest

from tandemdb.engine import Environment

from .conftest import replicate


def test_restore_then_continue_streaming(make_env, tmp_path):
    primary = make_env("p")
    primary.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v)"])
    primary.put_file("a", b"file-a")
    primary.acknowledge("old-secondary", 1)
    snap = primary.snapshot()
    assert (snap.lsn, snap.epoch) == (2, 1)
    primary.execute(["INSERT INTO t VALUES (1, 'after')"])
    replica = Environment.restore(snap.path, tmp_path / "r", primary.blobs.get)
    assert replica.last_lsn == 2 and replica.epoch == 1
    assert replica.consumers() == {}, "consumers belong to the source primary"
    replicate(primary, replica)
    assert replica.checksum() == primary.checksum()
    assert replica.get_file("a") == b"file-a"
    replica.close()


def test_restore_refuses_to_overwrite_and_checks_blobs(make_env, tmp_path):
    primary = make_env("p")
    primary.put_file("a", b"file-a")
    snap = primary.snapshot()
    with pytest.raises(FileExistsError):
        Environment.restore(snap.path, primary.directory, primary.blobs.get)
    with pytest.raises(ValueError, match="digest"):
        Environment.restore(snap.path, tmp_path / "bad", lambda digest: b"tampered")
    assert not (tmp_path / "bad" / "db.sqlite").exists()


def test_checksum_sees_every_kind_of_difference(make_env):
    a, b = make_env("a"), make_env("b")
    for env in (a, b):
        env.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v)", "CREATE TABLE n(x)"])
        env.execute(["INSERT INTO t VALUES (1, 1)", "INSERT INTO n VALUES ('k')"])
    assert a.checksum() == b.checksum()
    b.execute(["UPDATE t SET v = 1.0"])  # same number, different type
    assert a.checksum().tables["t"] != b.checksum().tables["t"]
    b.execute(["UPDATE t SET v = 1"])
    assert a.checksum() == b.checksum()
    b.execute(["CREATE INDEX n_x ON n(x)"])
    assert a.checksum().schema != b.checksum().schema
    a.execute(["CREATE INDEX n_x ON n(x)"])
    a.put_file("f", b"1")
    b.put_file("f", b"2")
    assert a.checksum().files != b.checksum().files
    b.put_file("f", b"1")
    assert a.checksum().total == b.checksum().total
