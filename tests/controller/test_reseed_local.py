"""Re-seeding in a region that holds two replicas of an environment (its primary and its
local secondary, docs/ha.md): the secondary is the one asked, never the primary."""

from __future__ import annotations

from .conftest import ControllerProcess


def test_reseed_in_the_home_region_asks_the_local_secondary(ha_controller: ControllerProcess):
    ctl = ha_controller
    answer = ctl.create(name="rs-local", region="west")
    assert answer.status_code == 201, answer.text
    local = next(r["node"] for r in answer.json()["replicas"] if r["kind"] == "local")
    reseed = ctl.http.post("/v1/environments/rs-local/replicas/west/reseed")
    # No node listens in these tests: the call reached for the local secondary's node.
    assert reseed.status_code == 409, reseed.text
    error = reseed.json()["error"]
    assert error["code"] == "node_unreachable" and local in error["message"], error
