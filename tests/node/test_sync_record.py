"""The sync secondary in a primary's record (docs/ha.md, "Records"): parsed defensively,
at most one, and written back only when true, so records without one are unchanged."""

from __future__ import annotations

import pytest

from tandemdb.common.http import ApiError
from tandemdb.node.record import Record


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
