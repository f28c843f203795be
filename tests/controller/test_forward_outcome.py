"""What a follower answers when its forward to the leader fails (controller/forward.py).

`no_leader` tells a gateway or node that the call did not run, so it may go to another
controller; it is answered only when the leader could not be reached at all. A write that
reached the leader and got no answer is `outcome_unknown`, so nobody sends it again; a read
is `unavailable` (it may be asked again). The leader here is a port this test holds
(tests/gateway/controllers.py): nothing listening, then a peer that reads and hangs up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tandemdb.controller.forward import FollowerForward
from tandemdb.controller.leader import Leadership
from tandemdb.controller.store import Store, open_store
from tests.gateway.controllers import LostSite


async def never_reached(scope, receive, send) -> None:
    raise AssertionError("a follower must not serve the call itself")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(tmp_path)
    yield opened
    opened.close()


def follower_of(store: Store, leader_url: str) -> FollowerForward:
    """A real Leadership that sees `controller-west` at `leader_url` as the leader."""
    leadership = Leadership(store, "controller-east", "http://unused", 2)
    leadership.leading, leadership.leader = False, {"name": "controller-west",
                                                    "url": leader_url}
    return FollowerForward(never_reached, leadership, 1 << 20)


def call(follower: FollowerForward, method: str) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=follower)
        async with httpx.AsyncClient(transport=transport, base_url="http://c") as client:
            try:
                return await client.request(method, "/v1/environments", json={"name": "x"}
                                            if method == "POST" else None)
            finally:
                if follower.http is not None:
                    await follower.http.aclose()
                    follower.http = None

    return asyncio.run(send())


def test_a_leader_out_of_reach_is_no_leader(store: Store) -> None:
    lost = LostSite()
    try:
        answer = call(follower_of(store, lost.url), "POST")
    finally:
        lost.close()
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "no_leader"
    assert answer.headers["retry-after"] == "1"


def test_a_forward_that_broke_after_sending_is_never_no_leader(store: Store) -> None:
    lost = LostSite()
    lost.breaking()
    try:
        follower = follower_of(store, lost.url)
        write, read = call(follower, "POST"), call(follower, "GET")
    finally:
        lost.close()
    assert write.status_code == 502, write.text
    assert write.json()["error"]["code"] == "outcome_unknown"
    assert "may or may not have run" in write.json()["error"]["message"]
    assert read.status_code == 503 and read.json()["error"]["code"] == "unavailable"
    assert [r.split(b" ", 1)[0] for r in lost.requests] == [b"POST", b"GET"]  # once each
