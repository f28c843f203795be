"""Node health from heartbeats: healthy within 3 x heartbeat_interval, then not."""

from __future__ import annotations

import re
import time

from .conftest import HEARTBEAT_INTERVAL

LIMIT = 3 * HEARTBEAT_INTERVAL


def nodes(controller) -> dict[str, dict]:
    regions = controller.http.get("/v1/regions").json()["regions"]
    return {n["name"]: n for r in regions for n in r["nodes"]}


def healthy_gauge(controller, region: str) -> float:
    text = controller.http.get("/metrics").text  # with the cluster secret
    match = re.search(rf'^tandem_controller_healthy_nodes{{region="{region}"}} (\S+)$', text,
                      re.MULTILINE)
    assert match, text
    return float(match.group(1))


def test_health_follows_heartbeats(own_controller):
    ctl = own_controller.start()
    before = nodes(ctl)
    assert not before["west-1"]["healthy"] and before["west-1"]["last_heartbeat_age"] is None

    assert ctl.heartbeat("west-1").status_code == 200
    now = nodes(ctl)
    assert now["west-1"]["healthy"] is True
    assert 0 <= now["west-1"]["last_heartbeat_age"] < LIMIT
    assert now["east-1"]["healthy"] is False  # never heard from
    assert healthy_gauge(ctl, "west") == 1 and healthy_gauge(ctl, "east") == 0

    # Keep east-1 alive while west-1 falls silent for longer than the limit.
    deadline = time.monotonic() + LIMIT + 0.4
    while time.monotonic() < deadline:
        ctl.heartbeat("east-1")
        time.sleep(HEARTBEAT_INTERVAL / 2)
    later = nodes(ctl)
    assert later["west-1"]["healthy"] is False
    assert later["west-1"]["last_heartbeat_age"] > LIMIT
    assert later["east-1"]["healthy"] is True
    assert healthy_gauge(ctl, "west") == 0 and healthy_gauge(ctl, "east") == 1
    assert "node west-1 (west) is unhealthy: no heartbeat for" in ctl.log()

    # It comes back with its next heartbeat.
    ctl.heartbeat("west-1")
    assert nodes(ctl)["west-1"]["healthy"] is True
    assert ctl.log().count("node west-1 (west) is healthy") == 2
