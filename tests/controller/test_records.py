"""Typed catalog records and failover parameters load the JSON the current version stores
and write it back unchanged: same keys, same values, same order (so the stored records and
the API answers do not change)."""

from __future__ import annotations

import json
from dataclasses import replace

from tandemdb.common.roles import Kind, Role
from tandemdb.controller.catalog import Catalog
from tandemdb.controller.failover import FailoverParams
from tandemdb.controller.records import EnvRecord, EnvState, EnvType, ReplicaRef

# As the current version writes them: created, then a forced failover's old primary.
ACTIVE = {"name": "acme", "type": "production", "home_region": "west",
          "primary_region": "west", "epoch": 3, "state": "active", "rpo_limit_seconds": 30,
          "created_at": "2026-01-01T00:00:00.000Z",
          "replicas": [{"region": "west", "node": "west-1", "role": "primary"},
                       {"region": "east", "node": "east-1", "role": "secondary"}],
          "operation": "op-000007"}
FORKED = {**ACTIVE, "primary_region": "east", "epoch": 4, "operation": "op-000009",
          "replicas": [{"region": "west", "node": "west-1", "role": "fenced", "behind": True,
                        "fork_lsn": 41},
                       {"region": "east", "node": "east-1", "role": "primary"}]}
# Written by hand, or by an older or newer version: no `operation`, fields of its own.
ODD = {"name": "old", "type": "basic", "home_region": "west", "primary_region": "west",
       "epoch": 1, "state": "active", "rpo_limit_seconds": 2.5, "created_at": None,
       "replicas": [{"node": "west-2", "region": "west", "role": "primary", "note": "x"}],
       "owner": "team-a"}
PLANNED = {"environment": "acme", "mode": "planned", "reason": "failover", "epoch": 3,
           "from": {"node": "west-1", "region": "west"},
           "to": {"node": "east-1", "region": "east"}, "catch_up_timeout": 10.0,
           "parent": None}
FORCED = {**PLANNED, "mode": "forced", "parent": "op-000002", "lease_ttl": 4.0,
          "primary_last_seen_lsn": None}


def same(a: dict, b: dict) -> bool:
    return json.dumps(a) == json.dumps(b)  # values and key order


def test_stored_records_load_typed_and_round_trip_unchanged():
    for stored in (ACTIVE, FORKED, ODD):
        record = EnvRecord.from_json(stored)
        assert same(record.to_json(), stored)
    record = EnvRecord.from_json(FORKED)
    assert record.type == EnvType.PRODUCTION and record.state == EnvState.ACTIVE
    assert record.primary == ReplicaRef("east", "east-1", Role.PRIMARY)
    assert record.on("west-1") == ReplicaRef("west", "west-1", Role.FENCED, Kind.GEO,
                                             behind=True, fork_lsn=41)
    assert record.behind is record.on("west-1") and record.secondaries == []
    assert all(r.kind == Kind.GEO for r in record.replicas)  # no `kind` stored: geo


def test_changes_write_the_json_the_dict_updates_wrote():
    record = EnvRecord.from_json(ACTIVE)
    held = record.with_(state=EnvState.SWITCHING, operation="op-000008").with_replicas(
        lambda r: replace(r, role=Role.FENCED, behind=True) if r.node == "west-1" else r)
    # What failover.py wrote before: {**record, "state", "operation", "replicas"}
    assert same(held.to_json(), {**ACTIVE, "state": "switching", "operation": "op-000008",
                                 "replicas": [{"region": "west", "node": "west-1",
                                               "role": "fenced", "behind": True},
                                              ACTIVE["replicas"][1]]})
    rejoined = EnvRecord.from_json(FORKED).with_roles({"west-1": Role.SECONDARY})
    rejoined = rejoined.with_replicas(lambda r: replace(r, behind=False, fork_lsn=None))
    assert same(rejoined.to_json()["replicas"][0],
                {"region": "west", "node": "west-1", "role": "secondary"})
    odd = EnvRecord.from_json(ODD).with_(state=EnvState.DELETING)
    assert same(odd.to_json(), {**ODD, "state": "deleting"})  # no `operation` added


def test_a_local_replica_stores_its_kind_and_sync_and_geo_ones_store_neither():
    local = ReplicaRef("west", "west-2", Role.SECONDARY, Kind.LOCAL)
    assert local.to_json() == {"region": "west", "node": "west-2", "role": "secondary",
                               "kind": "local", "sync": False}
    assert ReplicaRef.from_json(local.to_json()) == local
    synced = replace(local, sync=True)
    assert ReplicaRef.from_json(synced.to_json()).sync is True
    geo = ReplicaRef("east", "east-1", Role.SECONDARY)
    assert "kind" not in geo.to_json() and "sync" not in geo.to_json()
    # A geo replica never stores `sync`, even if asked to.
    assert "sync" not in replace(geo, sync=True).to_json()


def test_api_answers_show_kind_and_sync_on_every_replica():
    geo = ReplicaRef("east", "east-1", Role.SECONDARY)
    assert geo.view() == {"region": "east", "node": "east-1", "role": "secondary",
                          "kind": "geo", "sync": False}
    local = ReplicaRef("west", "west-2", Role.SECONDARY, Kind.LOCAL, sync=True)
    assert local.view()["kind"] == "local" and local.view()["sync"] is True


def test_the_catalog_reads_todays_records_from_the_store(store):
    store.put("environments/acme", FORKED)
    store.put("environments/old", {**ODD, "rpo_limit_seconds": -1})
    catalog = Catalog(store)
    stored = store.get("environments/acme").value  # (the store sorts keys)
    assert stored == FORKED and same(catalog.get("acme").to_json(), stored)
    # The rpo repair of `loaded` still applies; the rest stays as stored.
    assert catalog.get("old").to_json() == {**ODD, "rpo_limit_seconds": 900}
    assert catalog.update("acme", lambda r: r) is not None
    assert same(store.get("environments/acme").value, stored)


def test_failover_params_round_trip():
    for stored in (PLANNED, FORCED):
        params = FailoverParams.from_json(stored)
        assert same(params.to_json(), stored)
    forced = FailoverParams.from_json(FORCED)
    assert forced.forced and forced.source.node == "west-1" and forced.target.region == "east"
