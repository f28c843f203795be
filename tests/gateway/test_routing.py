"""The routing table and the gateway's routing decisions, in process.

The table is filled with routing answers shaped as the controller publishes them
(docs/architecture.md); the app runs with `watch=False`, so nothing polls a controller.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request

from tandemdb.common.http import ApiError
from tandemdb.gateway.app import create_app, query_without, sql_read_region
from tandemdb.gateway.routing import RoutingTable
from tandemdb.local import free_base_port
from tandemdb.testing import plan


def answer(revision: int, **envs: dict) -> dict:
    return {"revision": revision, "environments": envs}


def record(primary: str = "west", epoch: int = 1, east_url: str | None = "http://h:2",
           west_url: str | None = "http://h:1", regions=("west", "east")) -> dict:
    urls = {"west": west_url, "east": east_url}
    return {"epoch": epoch, "primary_region": primary,
            "replicas": {r: {"node": f"{r}-1", "url": urls[r],
                             "role": "primary" if r == primary else "secondary"}
                         for r in regions}}


def table_with(**envs: dict) -> RoutingTable:
    table = RoutingTable(["west", "east"])
    table.update(answer(1, **envs))
    return table


def error_of(call) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call()
    return caught.value


def test_lookup_primary_and_read_region():
    table = table_with(acme=record())
    assert table.lookup("acme").url == "http://h:1"
    assert table.lookup("acme").role == "primary"
    assert table.lookup("acme", "east").url == "http://h:2"
    assert table.lookup("acme", "west").region == "west"


def test_unknown_environment_is_404_and_unknown_region_400():
    table = table_with(acme=record())
    assert error_of(lambda: table.lookup("globex")).status == 404
    assert error_of(lambda: table.lookup("globex")).code == "not_found"
    bad_region = error_of(lambda: table.lookup("acme", "mars"))
    assert (bad_region.status, bad_region.code) == (400, "bad_request")
    assert "west" in bad_region.message and "east" in bad_region.message


def test_region_without_replica_is_400_and_missing_url_503():
    table = table_with(solo=record(regions=("west",)), lost=record(west_url=None))
    no_replica = error_of(lambda: table.lookup("solo", "east"))
    assert (no_replica.status, no_replica.code) == (400, "no_replica")
    unreported = error_of(lambda: table.lookup("lost"))
    assert (unreported.status, unreported.code) == (503, "unavailable")
    assert table.lookup("lost", "east").url == "http://h:2"


def test_update_replaces_the_table_whole():
    table = table_with(acme=record(), globex=record())
    table.update(answer(2, acme=record(primary="east", epoch=2)))
    assert table.revision == 2
    assert "globex" not in table
    assert table.lookup("acme").region == "east"
    assert table.lookup("acme").epoch == 2
    table.update(answer(1, acme=record()))  # a controller that lost its state: believe it
    assert table.revision == 1 and table.lookup("acme").region == "west"


def test_waiters_wake_on_update():
    async def scenario() -> tuple[bool, bool, bool]:
        table = RoutingTable(["west", "east"])
        loaded_early = await table.wait_loaded(0.05)
        asyncio.get_running_loop().call_later(0.05, table.update, answer(1, acme=record()))
        loaded = await table.wait_loaded(2.0)
        asyncio.get_running_loop().call_later(
            0.05, table.update, answer(2, acme=record(primary="east", epoch=2)))
        moved = await table.wait_until(lambda t: t.lookup("acme").region == "east", 2.0)
        return loaded_early, loaded, moved

    assert asyncio.run(scenario()) == (False, True, True)


def test_sql_read_region_forwards_bytes_untouched_when_absent():
    body = b'{"statements": [{"sql": "SELECT 1"}], "min_lsn": 3}'
    assert sql_read_region(body) == (None, body)  # the very same bytes
    region, stripped = sql_read_region(
        b'{"statements": [{"sql": "SELECT 1"}], "read_region": "east", "min_lsn": 3}')
    assert region == "east"
    assert b"read_region" not in stripped and b'"min_lsn": 3' in stripped
    assert sql_read_region(b'{"statements": [{"sql": "SELECT \'\\"read_region\\"\'"}]}')[0] \
        is None
    assert error_of(lambda: sql_read_region(b'{"read_region": ')).code == "bad_request"
    assert error_of(lambda: sql_read_region(b'{"read_region": 5}')).code == "bad_request"


@pytest.fixture
def gateway_app(tmp_path: Path):
    """The gateway app over a table we control; node URLs point at closed ports."""
    deployment = plan(tmp_path / "data", max_body_bytes=4096)
    closed = f"http://127.0.0.1:{free_base_port(1)}"
    table = RoutingTable(list(deployment.regions))
    table.update(answer(1, acme=record(west_url=closed, east_url=closed),
                        solo=record(west_url=closed, regions=("west",))))
    app = create_app(deployment, table=table, watch=False)
    app.state.gateway.hold = 0.2
    return app, {"Authorization": f"Bearer {deployment.token}"}


def run(gateway_app, scenario):
    """Run `scenario(client)` against the app in process, all in one event loop."""
    app, headers = gateway_app

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway",
                                     headers=headers) as client:
            return await scenario(client)

    return asyncio.run(main())


def test_app_unknown_environment_is_404_without_forward(gateway_app):
    async def scenario(client):
        out = []
        for method, path in [("POST", "/v1/environments/globex/sql"),
                             ("GET", "/v1/environments/globex/files/a.txt"),
                             ("PUT", "/v1/environments/globex/files/a.txt"),
                             ("DELETE", "/v1/environments/globex/files/a.txt"),
                             ("GET", "/v1/environments/globex/files"),
                             ("GET", "/v1/environments/globex/checksum")]:
            response = await client.request(method, path, content=b'{"statements": []}')
            out.append((method, path, response.status_code, response.json()["error"]["code"]))
        return out

    for method, path, status, code in run(gateway_app, scenario):
        assert (status, code) == (404, "not_found"), (method, path)


def test_app_read_region_errors(gateway_app):
    sql = {"statements": [{"sql": "SELECT 1"}]}

    async def scenario(client):
        return [
            await client.post("/v1/environments/acme/sql", json={**sql, "read_region": "mars"}),
            await client.post("/v1/environments/solo/sql", json={**sql, "read_region": "east"}),
            await client.get("/v1/environments/acme/files/a.txt",
                             params={"read_region": "mars"}),
            await client.get("/v1/environments/acme/checksum", params={"region": "mars"}),
        ]

    mars, solo, file_mars, checksum_mars = run(gateway_app, scenario)
    assert (mars.status_code, mars.json()["error"]["code"]) == (400, "bad_request")
    assert (solo.status_code, solo.json()["error"]["code"]) == (400, "no_replica")
    assert file_mars.status_code == 400
    assert checksum_mars.status_code == 400


def test_app_unreachable_node_is_503_after_a_brief_hold(gateway_app):
    async def scenario(client):
        return [
            await client.post("/v1/environments/acme/sql",
                              json={"statements": [{"sql": "SELECT 1"}]}),
            await client.get("/v1/environments/acme/files/a.txt",
                             params={"read_region": "east"}),
            await client.put("/v1/environments/acme/files/a.txt", content=b"hello"),
        ]

    sql, east_read, put = run(gateway_app, scenario)
    assert sql.status_code == 503
    assert sql.json()["error"]["code"] == "unavailable"
    assert "west-1" in sql.json()["error"]["message"]
    assert east_read.status_code == 503
    assert "east-1" in east_read.json()["error"]["message"]
    assert put.status_code == 503


def test_app_bad_prefix_is_400(gateway_app):
    async def scenario(client):
        return await client.get("/v1/environments/acme/files", params={"prefix": "../etc"})

    response = run(gateway_app, scenario)
    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_path")


def test_query_without_keeps_the_rest():
    def request(query: bytes) -> Request:
        return Request({"type": "http", "method": "GET", "path": "/", "query_string": query,
                        "headers": []})

    assert query_without(request(b"prefix=a%2Fb&read_region=east&min_lsn=4"),
                         "read_region") == ("east", "prefix=a%2Fb&min_lsn=4")
    assert query_without(request(b"prefix=x"), "read_region") == (None, "prefix=x")


def test_hold_sends_to_the_new_primary_once_routing_moves(tmp_path: Path):
    deployment = plan(tmp_path / "data")
    table = RoutingTable(["west", "east"])
    table.update(answer(1, acme=record()))
    gateway = create_app(deployment, table=table, watch=False).state.gateway
    old = table.lookup("acme")

    async def scenario():
        loop = asyncio.get_running_loop()
        loop.call_later(0.1, table.update, answer(2, acme=record(primary="east", epoch=2)))
        return await gateway.await_new_primary("acme", old, None, time.monotonic() + 2.0)

    moved = asyncio.run(scenario())
    assert moved is not None and (moved.region, moved.epoch) == ("east", 2)

    # No change within the hold: give up, and the node's own answer goes back.
    assert asyncio.run(gateway.await_new_primary("acme", table.lookup("acme"), None,
                                                 time.monotonic() + 0.1)) is None


def test_hold_waits_for_a_switching_environment_then_times_out(tmp_path: Path):
    deployment = plan(tmp_path / "data")
    table = RoutingTable(["west", "east"])
    table.update(answer(1, acme={**record(), "switching": True, "operation": "op-000002"}))
    gateway = create_app(deployment, table=table, watch=False).state.gateway

    async def released():
        loop = asyncio.get_running_loop()
        loop.call_later(0.1, table.update, answer(2, acme={
            **record(primary="east", epoch=2), "operation": "op-000002"}))
        return await gateway.route("acme", None, time.monotonic() + 2.0)

    target = asyncio.run(released())
    assert (target.region, target.epoch) == ("east", 2)

    table.update(answer(3, acme={**record(), "switching": True, "operation": "op-000003"}))
    with pytest.raises(ApiError) as refused:
        asyncio.run(gateway.route("acme", None, time.monotonic() + 0.1))
    assert (refused.value.status, refused.value.code) == (503, "switching")
    assert refused.value.headers == {"Retry-After": "1"}
    # A read of another region's replica is not held.
    assert asyncio.run(gateway.route("acme", "east", time.monotonic())).region == "east"


def test_table_applies_deltas_and_whole_tables():
    table = RoutingTable(["west", "east"])
    table.update(answer(1, acme=record(), beta=record()))
    table.update({"revision": 5, "changes": {"acme": record(primary="east", epoch=2),
                                             "beta": None, "gamma": record()}})
    assert table.revision == 5 and set(table.routes) == {"acme", "gamma"}
    assert (table.lookup("acme").region, table.lookup("acme").epoch) == ("east", 2)
    table.update({"revision": 6, "changes": {}})  # nothing changed: all kept
    assert table.revision == 6 and set(table.routes) == {"acme", "gamma"}
    table.update(answer(9, beta=record()))  # a whole table replaces everything
    assert set(table.routes) == {"beta"}
