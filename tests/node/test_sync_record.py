"""The sync secondary in a primary's record (docs/ha.md, "Records"): parsed defensively,
at most one, and written back only when true, so records without one are unchanged; and
what a primary's writes wait for (`Replica.waits_for`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tandemdb.common.http import ApiError
from tandemdb.common.roles import Role
from tandemdb.node.record import Record
from tandemdb.node.replicas import Replica


def peer(node: str, **extra: object) -> dict:
    return {"node": node, "region": node.split("-")[0], "url": f"http://127.0.0.1/{node}",
            **extra}


def primary(*secondaries: dict) -> dict:
    return {"role": "primary", "epoch": 3, "secondaries": list(secondaries)}


def test_the_sync_secondary_is_named_and_written_back() -> None:
    record = Record.parse(primary(peer("west-2", sync=True), peer("east-1")))
    assert record.sync_peer is not None and record.sync_peer.node == "west-2"
    again = record.to_dict()
    assert again["secondaries"] == [peer("west-2", sync=True), peer("east-1")]
    assert Record.parse(again) == record


def test_without_sync_the_record_is_as_before() -> None:
    raw = primary(peer("west-2", sync=False), peer("east-1"))
    record = Record.parse(raw)
    assert record.sync_peer is None
    assert record.to_dict()["secondaries"] == [peer("west-2"), peer("east-1")]


def test_only_a_primary_has_a_sync_secondary() -> None:
    fenced = Record.parse({**primary(peer("west-2", sync=True)), "role": "fenced"})
    assert fenced.sync_peer is None


@pytest.mark.parametrize("bad", [
    primary(peer("west-2", sync=True), peer("west-3", sync=True)),
    primary(peer("west-2", sync="yes")),
    primary(peer("west-2", sync=1)),
    primary(peer("west-2", sync=None)),
])
def test_bad_sync_values_are_refused(bad: dict) -> None:
    with pytest.raises(ApiError) as refused:
        Record.parse(bad)
    assert refused.value.status == 400 and "sync" in refused.value.message


def test_what_a_primary_waits_for(tmp_path: Path) -> None:
    """The record's sync secondary, unless the controller recorded it unsynced at a newer
    version; else the one regaining sync, while the record still lists it."""
    record = Record.parse({**primary(peer("west-2", sync=True), peer("east-1")),
                           "version": 7})
    replica = Replica("env", tmp_path, record, None)
    assert replica.waits_for == "west-2"
    replica.sync_lost_before = 8  # the controller's answer: recorded false at version 8
    assert replica.sync_node is None and replica.waits_for is None
    replica.regaining = "west-2"
    assert replica.waits_for == "west-2"
    replica.record = replace(record, secondaries=record.secondaries[1:], version=9)
    assert replica.waits_for is None  # replaced meanwhile: nothing to wait for
    replica.record = Record.parse({**record.to_dict(), "version": 9})
    replica.regaining = None
    assert replica.waits_for == "west-2"  # recorded sync again, at a newer version
    replica.record = replace(replica.record, role=Role.FENCED)
    assert replica.waits_for is None
