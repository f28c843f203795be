"""Node health right after a controller (re)start is unknown, not unhealthy (issue 9 item 7).

The controller runs alone; the test plays the nodes by posting their heartbeats. Just
after a restart no node has heartbeated to the new process yet: that silence must not
refuse a failover (409 `unhealthy`), nor make the outage detector declare a region down.
"""

from __future__ import annotations

import time
from datetime import datetime

from tandemdb.controller.topology import UNKNOWN_FACTOR

from .beats import Beater
from .conftest import HEARTBEAT_INTERVAL, ControllerProcess, controller_process
from .waiting import wait_for

UNKNOWN_WINDOW = UNKNOWN_FACTOR * HEARTBEAT_INTERVAL


def health(ctl: ControllerProcess) -> dict[str, str]:
    regions = ctl.http.get("/v1/regions").json()["regions"]
    return {n["name"]: n["health"] for r in regions for n in r["nodes"]}


def test_health_is_unknown_after_a_start_then_known(own_controller):
    ctl = own_controller.start()
    began = time.monotonic()
    first = health(ctl)
    if time.monotonic() - began < UNKNOWN_WINDOW:  # (a slow machine may be past it)
        assert first == {"west-1": "unknown", "east-1": "unknown"}
    ctl.heartbeat("west-1")
    assert health(ctl)["west-1"] == "healthy"
    assert ctl.create(name="silent").status_code == 201
    # East-1 stays silent: the failover waits out the unknown window, then refuses.
    with Beater(ctl, ["west-1"]):
        answer = ctl.http.post("/v1/environments/silent/failover", json={})
        assert answer.status_code == 409, answer.text
        error = answer.json()["error"]
        assert error["code"] == "unhealthy" and "east-1" in error["message"], error
        assert health(ctl) == {"west-1": "healthy", "east-1": "unhealthy"}


def test_a_failover_right_after_a_restart_waits_for_the_first_heartbeats(tmp_path,
                                                                        backend_settings):
    # Margins for a loaded machine, where the test itself is slow: the failover is asked
    # for well before the first heartbeat (1 s after the test saw the controller lead),
    # which lands well within the unknown window (6 heartbeat intervals of 1 s).
    with controller_process(tmp_path / "deployment", heartbeat_interval=1.0,
                            **backend_settings) as ctl:
        ctl.start()
        ctl.heartbeat("west-1")
        ctl.heartbeat("east-1")
        assert ctl.create(name="restarted").status_code == 201
        ctl.kill()
        ctl.start()
        # The nodes' first heartbeats to the new process come a little later; the failover
        # asked for before them waits for them instead of refusing with 409 unhealthy.
        with Beater(ctl, ["west-1", "east-1"], delay=1.0):
            answer = ctl.http.post("/v1/environments/restarted/failover", json={})
            assert answer.status_code == 202, answer.text
            done = ctl.http.get(f"/v1/operations/{answer.json()['id']}?wait=30").json()
        # No node process answers here: the fence fails and the move is rolled back. What
        # matters is that it was not refused for a silence that only meant "just started".
        assert done["state"] == "failed" and done["error"]["code"] == "fence_failed", done
        assert "waited" in ctl.log() and "first heartbeats" in ctl.log()


def test_the_outage_detector_waits_a_full_grace_period_after_a_restart(tmp_path,
                                                                       backend_settings):
    grace = 2.0
    with controller_process(tmp_path / "deployment", grace_seconds=grace,
                            lease_ttl=0.5, **backend_settings) as ctl:
        ctl.start()
        ctl.heartbeat("west-1")
        ctl.heartbeat("east-1")
        assert ctl.create(name="outage-restart").status_code == 201
        ctl.kill()
        # East has not pulled from west for long: its own observation says west is lost.
        peers = {"east-1": {"west-1": {"failing_seconds": 600.0}}}
        killed_at = time.time()
        ctl.start()

        def west_down() -> dict | None:
            west = ctl.http.get("/v1/regions").json()["regions"][0]
            return west if west["state"] != "healthy" else None

        with Beater(ctl, ["east-1"], peers=peers):
            west = wait_for(west_down, grace + 15, 0.1, "west to be declared down")
        assert west["state"] != "healthy", "west was never declared down"
        op = ctl.http.get(f"/v1/operations/{west['operation']}").json()
        assert (op["kind"], op["params"]["mode"]) == ("region.failover", "forced")
        started = datetime.fromisoformat(op["started_at"].replace("Z", "+00:00")).timestamp()
        # Not before a whole grace period of the new process's own silence from west.
        assert started - killed_at >= grace, started - killed_at
