"""Catalog validation and placement, on a real SQLite store (no process needed)."""

from __future__ import annotations

from collections import Counter

import pytest

from tandemdb.common.http import ApiError
from tandemdb.common.roles import Role
from tandemdb.controller.catalog import Catalog, EnvState, EnvType, new_record, parse_create
from tandemdb.controller.records import ReplicaRef
from tandemdb.controller.topology import Topology
from tandemdb.testing import plan

REGIONS = ["west", "east"]


@pytest.mark.parametrize("name", ["ab", "acme", "a-1", "x" + "y" * 62])
def test_valid_names(name):
    assert parse_create({"name": name}, REGIONS).name == name


@pytest.mark.parametrize("name", ["a", "Acme", "1abc", "-ab", "ab_c", "a b", "x" * 64,
                                  "acme\n", "", None, 7, "ümlaut"])
def test_invalid_names(name):
    with pytest.raises(ApiError) as err:
        parse_create({"name": name}, REGIONS)
    assert err.value.status == 400 and "invalid environment name" in err.value.message


def test_defaults():
    request = parse_create({"name": "acme"}, REGIONS)
    assert request.type is EnvType.PRODUCTION
    assert request.region == "west"  # the first region
    assert request.rpo_limit_seconds == 900


@pytest.mark.parametrize(("body", "fragment"), [
    ({"name": "acme", "type": "prod"}, "invalid environment type"),
    ({"name": "acme", "region": "south"}, "unknown region 'south'"),
    ({"name": "acme", "rpo_limit_seconds": 0}, "rpo_limit_seconds"),
    ({"name": "acme", "rpo_limit_seconds": -5}, "rpo_limit_seconds"),
    ({"name": "acme", "rpo_limit_seconds": "900"}, "rpo_limit_seconds"),
    ({"name": "acme", "rpo_limit_seconds": True}, "rpo_limit_seconds"),
    ({"name": "acme", "colour": "blue"}, "unknown field(s) colour"),
    (["acme"], "JSON object"),
])
def test_bad_requests(body, fragment):
    with pytest.raises(ApiError) as err:
        parse_create(body, REGIONS)
    assert err.value.status == 400 and fragment in err.value.message


def test_catalog_insert_update_remove(store):
    catalog = Catalog(store)
    record = new_record(parse_create({"name": "acme"}, REGIONS),
                        [ReplicaRef("west", "west-1", Role.PRIMARY)])
    assert record.state == "creating" and record.epoch == 1
    assert catalog.insert(record) is True
    assert catalog.insert(record) is False  # exists
    assert catalog.set_state("acme", EnvState.ACTIVE).state == "active"
    assert catalog.get("acme").state == "active"
    assert catalog.set_state("nope", EnvState.ACTIVE) is None
    assert catalog.replica_counts() == Counter({"west-1": 1})
    assert catalog.remove("acme") is True and catalog.get("acme") is None


def test_placement_picks_the_node_with_fewest_replicas(tmp_path, store):
    deployment = plan(tmp_path, nodes_per_region=3)
    now = [100.0]
    topology = Topology(store, deployment, clock=lambda: now[0])
    counts = Counter({"west-1": 2, "west-2": 1, "west-3": 1})
    # No node healthy: fewest replicas among all, ties to the first name.
    assert topology.place("west", counts)[0] == "west-2"
    # Healthy nodes are preferred over emptier unhealthy ones.
    topology.heard_from("west-1")
    assert topology.place("west", counts)[0] == "west-1"
    topology.heard_from("west-3")
    node, why = topology.place("west", counts)
    assert node == "west-3" and "fewest replicas (1)" in why
    # Health expires after 3 x heartbeat_interval.
    now[0] += 3 * deployment.heartbeat_interval + 0.01
    assert not topology.healthy("west-3")
    assert topology.place("west", counts)[0] == "west-2"
    assert [n for n, _ in topology.newly_unhealthy()] == ["west-1", "west-3"]
    assert topology.newly_unhealthy() == []  # reported once


def test_placement_excludes_nodes_and_breaks_ties_by_fewer_primaries(tmp_path, store):
    deployment = plan(tmp_path, nodes_per_region=3)
    topology = Topology(store, deployment)
    counts = Counter({"west-1": 1, "west-2": 1, "west-3": 2})
    assert topology.place("west", counts)[0] == "west-1"  # the first name
    primaries = Counter({"west-1": 1})
    assert topology.place("west", counts, tiebreak=primaries)[0] == "west-2"
    # A local secondary never goes to a node of the environment's own replicas.
    node, why = topology.place("west", counts, exclude=["west-1", "west-2"])
    assert node == "west-3" and why == "the only other node of west"
    assert topology.place("west", counts, exclude=["west-2"])[0] == "west-1"
