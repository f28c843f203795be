"""A gateway that knows several controllers (issue 12), its own region's first.

With west's controller lost (nothing listening), gateway-west still serves control calls
and routing through east's. With west's controller breaking connections after reading the
request, a write is answered `outcome_unknown` and never sent to the other controller,
while a read moves on. With no controller at all, the error names every URL tried.
"""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from tandemdb.common.controllers import Controllers
from tandemdb.testing import LocalDeployment, poll_until

from .controllers import GATEWAY, LIVE, healthy_at, lost_west

START = (LIVE, "west-1", "east-1", GATEWAY)


def auth(cluster: LocalDeployment) -> dict:
    return {"Authorization": f"Bearer {cluster.deployment.token}"}


# -- Controllers, the list itself ------------------------------------------------------------

def test_controllers_move_on_once_per_switch_and_stick(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING, logger="tandem.controllers")
    links = Controllers(["http://a:1/", "http://b:2", "http://c:3"], "heartbeats")
    assert links.url == "http://a:1" and links.in_turn()[0] == "http://a:1"
    links.move_on("http://a:1", "ConnectError")
    links.move_on("http://a:1", "ConnectError")  # a call that was under way with it
    assert links.url == "http://b:2"
    assert links.in_turn() == ["http://b:2", "http://c:3", "http://a:1"]
    assert caplog.messages == ["heartbeats now go to http://b:2 (http://a:1: ConnectError)"]
    links.move_on("http://b:2", "HTTP 503")
    links.move_on("http://c:3", "ReadTimeout")  # every one has failed: quiet from here
    links.move_on("http://a:1", "ConnectError")
    assert links.url == "http://b:2" and len(caplog.messages) == 2
    links.answered("http://b:2")
    links.move_on("http://b:2", "HTTP 503")  # after an answer, a switch is said again
    assert links.url == "http://c:3" and len(caplog.messages) == 3
    with pytest.raises(ValueError, match="one controller URL or more"):
        Controllers([], "heartbeats")


def test_one_controller_never_moves(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING, logger="tandem.controllers")
    links = Controllers(["http://a:1"], "routing polls")
    links.move_on("http://a:1", "ConnectError")
    assert links.url == "http://a:1" and links.in_turn() == ["http://a:1"]
    assert caplog.messages == []


# -- a real gateway, west's controller lost ----------------------------------------------------

def test_gateway_serves_control_calls_and_routing_through_the_next_controller(tmp_path: Path):
    with lost_west(tmp_path / "data", START) as (cluster, lost):
        live = cluster.url(LIVE)
        health = httpx.get(f"{cluster.url(GATEWAY)}/healthz").json()
        assert (health["name"], health["region"]) == (GATEWAY, "west")
        poll_until(lambda: healthy_at(cluster, LIVE), 20.0, 0.1, "the nodes' heartbeats")
        client = cluster.client
        # The gateway's first control call, a write: refused at west's controller before a
        # byte was sent, so it moves on to east's.
        created = client.create_environment("acme", region="west")
        assert created["name"] == "acme"
        assert [e["name"] for e in client.environments()] == ["acme"]
        # Data calls are routed from the table the watch loads from east's controller.
        client.sql("acme", "CREATE TABLE t(v)")
        assert client.sql("acme", "INSERT INTO t VALUES (1)")["lsn"] >= 2
        log = cluster.log(GATEWAY)
        assert f"controllers {lost.url}, {live}" in log  # its own region's first
        # Moved on after the refusal, or steered to the leader (common/leader_watch.py)
        # before the first call: either way once, and it sticks to east's from then on.
        assert log.count(f"control calls now go to {live} (") == 1
        assert f"routing polls now go to {live} (" in log
        assert log.count("control calls now go to") == 1

        # No controller answers: the error names every URL tried.
        cluster.stop(LIVE)
        answer = httpx.get(f"{cluster.url(GATEWAY)}/v1/environments", headers=auth(cluster),
                           timeout=15)
        assert answer.status_code == 503, answer.text
        error = answer.json()["error"]
        assert error["code"] == "unavailable"
        assert live in error["message"] and lost.url in error["message"]
        assert answer.headers["retry-after"] == "1"


def test_a_write_that_may_have_run_is_not_sent_to_another_controller(tmp_path: Path):
    with lost_west(tmp_path / "data", START) as (cluster, lost):
        cluster.stop(GATEWAY)
        lost.breaking()  # west's controller now takes requests in and never answers
        cluster.start(GATEWAY)
        url, headers = cluster.url(GATEWAY), auth(cluster)
        answer = httpx.post(f"{url}/v1/environments", headers=headers, timeout=15,
                            json={"name": "once", "region": "west"})
        assert answer.status_code == 502, answer.text
        assert answer.json()["error"]["code"] == "outcome_unknown"
        posts = [r for r in lost.requests if r.startswith(b"POST /v1/environments ")]
        assert len(posts) == 1  # sent once, to west's, and never again
        # A read moves on (it may run twice), and the write did not reach east's controller.
        missing = httpx.get(f"{url}/v1/environments/once", headers=headers, timeout=15)
        assert missing.status_code == 404, missing.text
        assert len([r for r in lost.requests if r.startswith(b"GET /v1/environments/once")]) \
            == 2  # the proxy's one resend of a read on a fresh connection, then east's
        # The gateway sticks to east's now: the next write goes there at once.
        answer = httpx.post(f"{url}/v1/environments", headers=headers, timeout=15,
                            json={"name": "once", "region": "west"})
        assert answer.status_code in (200, 201, 202), answer.text
        # (nodes' heartbeats, steered there by their own leader watch, may reach it too)
        assert len([r for r in lost.requests if r.startswith(b"POST /v1/")]) == 1
