"""The step tables name the steps operations record: the same names, in the same order, as
the operations already stored carry (a resumed operation runs its steps by these names)."""

from __future__ import annotations

from typing import cast

from tandemdb.controller.environments import replica_steps
from tandemdb.controller.failover.forced import Forced
from tandemdb.controller.failover.planned import Planned
from tandemdb.controller.failover.steps import Context

CTX = cast(Context, None)  # the tables only name bound methods


def test_planned_and_forced_failovers_have_their_steps_in_order():
    assert list(Planned(CTX).steps) == ["hold", "fence", "catch-up", "promote",
                                        "switch-routing", "reverse", "release"]
    assert list(Forced(CTX).steps) == ["hold", "expire-lease", "promote", "switch-routing",
                                       "release"]


def test_replica_steps_put_the_primary_first_and_name_twins_by_node():
    replicas = [{"region": "east", "node": "east-1", "role": "secondary"},
                {"region": "west", "node": "west-1", "role": "primary"}]
    assert [name for name, _ in replica_steps("create", replicas)] == [
        "create-primary", "create-secondary"]
    twins = [*replicas, {"region": "east", "node": "east-2", "role": "secondary"}]
    assert [name for name, _ in replica_steps("drop", twins)] == [
        "drop-primary", "drop-secondary-east-1", "drop-secondary-east-2"]
