"""The SDK: error mapping (against the real gateway process) and the requests it sends.

Request shapes are checked with an httpx transport that records what the SDK sends; that
tests the SDK's own encoding, not a stand-in for a Tandem process.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from tandemdb.client import AsyncClient, Client, TandemError
from tandemdb.client.api import statements_of
from tandemdb.local import free_base_port
from tandemdb.testing import LocalDeployment


def failure(call) -> TandemError:
    with pytest.raises(TandemError) as caught:
        call()
    return caught.value


def test_wrong_token_maps_to_401(gateway_only: LocalDeployment):
    with Client(gateway_only.deployment.gateway_url, "wrong") as client:
        error = failure(client.regions)
    assert (error.status, error.code) == (401, "unauthorized")
    assert str(error).startswith("error 401 unauthorized: missing or wrong token")


def test_gateway_errors_keep_status_code_message_and_retry_after(gateway_only: LocalDeployment):
    with Client.from_data_dir(gateway_only.data) as client:
        assert client.url == gateway_only.deployment.gateway_url
        error = failure(client.environments)
        assert (error.status, error.code) == (503, "unavailable")
        assert gateway_only.deployment.controller_url in error.message
        assert error.retry_after == 1.0
        error = failure(lambda: client.sql("acme", "SELECT 1"))
        assert (error.status, error.code) == (503, "unavailable")
        error = failure(lambda: client.get_file("acme", "../x"))
        assert (error.status, error.code) == (400, "invalid_path")


def test_async_client_maps_errors_the_same_way(gateway_only: LocalDeployment):
    async def scenario():
        errors = []
        async with AsyncClient.from_data_dir(gateway_only.data) as client:
            for call in (client.regions(), client.sql("acme", "SELECT 1"),
                         client.list_files("acme", prefix="../x")):
                try:
                    await call
                except TandemError as exc:
                    errors.append((exc.status, exc.code))
        async with AsyncClient(gateway_only.deployment.gateway_url, "wrong") as client:
            try:
                await client.environments()
            except TandemError as exc:
                errors.append((exc.status, exc.code))
        return errors

    assert asyncio.run(scenario()) == [(503, "unavailable"), (503, "unavailable"),
                                       (400, "invalid_path"), (401, "unauthorized")]


def test_unreachable_gateway_is_status_0():
    with Client(f"http://127.0.0.1:{free_base_port(1)}", "t", timeout=2) as client:
        error = failure(client.regions)
    assert (error.status, error.code) == (0, "unreachable")
    assert str(error).startswith("error unreachable: cannot reach Tandem at http://127.0.0.1")


def test_from_data_dir_without_deployment(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no deployment in"):
        Client.from_data_dir(tmp_path)


class Recorder:
    """An httpx transport that records requests and answers from a fixed script."""

    def __init__(self, status: int = 200, body: bytes = b"{}",
                 headers: dict | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.status, self.body, self.headers = status, body, headers or {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return httpx.Response(self.status, content=self.body, headers=self.headers)

    def client(self) -> Client:
        return Client("http://gw:1/", "tok", transport=httpx.MockTransport(self))


def test_non_contract_error_bodies_still_raise_tandem_error():
    error = failure(Recorder(502, b"<html>bad gateway</html>").client().regions)
    assert (error.status, error.code) == (502, "http_error")
    assert "bad gateway" in error.message
    error = failure(Recorder(500, b"", {"Retry-After": "3"}).client().regions)
    assert (error.status, error.code, error.retry_after) == (500, "http_error", 3.0)
    error = failure(Recorder(409, b'{"error": {"code": "not_primary", "message": "go east"}}')
                    .client().environments)
    assert (error.status, error.code, error.message) == (409, "not_primary", "go east")


def test_requests_carry_token_paths_and_bodies():
    recorder = Recorder(body=b'{"files": [], "regions": [], "environments": []}')
    client = recorder.client()
    client.sql("acme", "INSERT INTO t VALUES (?, ?)", [1, "x"], read_region="east", min_lsn=7)
    client.create_environment("acme", "sandbox", region="east", rpo_limit_seconds=30)
    client.create_environment("globex")
    client.put_file("acme", "dir/a b#1.txt", "héllo")
    client.get_file("acme", "dir/a b#1.txt", read_region="east", min_lsn=3)
    client.list_files("acme", prefix="dir/")
    client.checksum("acme", "east")
    client.delete_file("acme", "x.txt")
    client.delete_environment("acme")
    client.get_file("acme", "../etc/x")
    sql, create, create_default, put, get, ls, checksum, rm, delete, dots = recorder.requests
    assert all(r.headers["authorization"] == "Bearer tok" for r in recorder.requests)
    assert (sql.method, sql.url.path) == ("POST", "/v1/environments/acme/sql")
    assert json.loads(sql.content) == {
        "statements": [{"sql": "INSERT INTO t VALUES (?, ?)", "params": [1, "x"]}],
        "read_region": "east", "min_lsn": 7}
    assert json.loads(create.content) == {"name": "acme", "type": "sandbox", "region": "east",
                                          "rpo_limit_seconds": 30}
    assert json.loads(create_default.content) == {"name": "globex", "type": "production"}
    assert put.method == "PUT"
    assert put.url.raw_path == b"/v1/environments/acme/files/dir/a%20b%231.txt"
    assert put.content == "héllo".encode()
    assert get.url.raw_path.startswith(b"/v1/environments/acme/files/dir/a%20b%231.txt?")
    assert dict(get.url.params) == {"read_region": "east", "min_lsn": "3"}
    assert dict(ls.url.params) == {"prefix": "dir/"}
    assert (checksum.url.path, dict(checksum.url.params)) == (
        "/v1/environments/acme/checksum", {"region": "east"})
    assert (rm.method, rm.url.path) == ("DELETE", "/v1/environments/acme/files/x.txt")
    assert (delete.method, delete.url.path) == ("DELETE", "/v1/environments/acme")
    # '..' is sent as written (encoded), for the server to refuse, never resolved away.
    assert dots.url.raw_path == b"/v1/environments/acme/files/%2E%2E/etc/x"


def test_put_file_streams_a_binary_file_with_its_length(tmp_path: Path):
    recorder = Recorder()
    source = tmp_path / "blob.bin"
    source.write_bytes(bytes(range(256)) * 1000)
    with source.open("rb") as f:
        recorder.client().put_file("acme", "blob.bin", f, size=source.stat().st_size)
    (put,) = recorder.requests
    assert put.headers["content-length"] == str(256_000)
    assert put.content == source.read_bytes()


def test_statements_of_shapes():
    assert statements_of("SELECT 1") == [{"sql": "SELECT 1", "params": []}]
    assert statements_of("SELECT ?", [2]) == [{"sql": "SELECT ?", "params": [2]}]
    assert statements_of(["CREATE TABLE t(a)", ("INSERT INTO t VALUES (?)", [1]),
                          {"sql": "SELECT :a", "params": {"a": 1}}]) == [
        {"sql": "CREATE TABLE t(a)", "params": []},
        {"sql": "INSERT INTO t VALUES (?)", "params": [1]},
        {"sql": "SELECT :a", "params": {"a": 1}}]
    with pytest.raises(TypeError):
        statements_of(["SELECT ?"], [1])
