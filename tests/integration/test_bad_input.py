"""Invariant 8: bad input gets a clear JSON error with a fitting status and changes nothing."""

from __future__ import annotations

import httpx
import pytest

from tandemdb.client import TandemError
from tandemdb.testing import caught_up, poll_until

ENV = "bad-input"


@pytest.fixture(scope="module")
def env(cluster):
    c = cluster.client
    c.create_environment(ENV)
    c.sql(ENV, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    c.sql(ENV, "INSERT INTO t(id, v) VALUES (1, 'one')")
    c.put_file(ENV, "keep.txt", b"keep")
    poll_until(lambda: caught_up(c, ENV), what="catch-up")
    return ENV


def _state(cluster) -> tuple:
    c = cluster.client
    return (c.checksum(ENV, "west")["total"], c.environment(ENV)["primary_lsn"],
            [e["name"] for e in c.environments()])


def _raw(cluster, method: str, path: str, token: str | None = "ok", **kw) -> httpx.Response:
    headers = kw.pop("headers", {})
    if token == "ok":
        headers["Authorization"] = f"Bearer {cluster.deployment.token}"
    elif token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.request(method, cluster.deployment.gateway_url + path, headers=headers,
                         timeout=30, **kw)


CASES = [
    ("unknown environment", "POST", "/v1/environments/nope/sql",
     {"json": {"statements": [{"sql": "SELECT 1"}]}}, "ok", 404),
    ("malformed SQL", "POST", f"/v1/environments/{ENV}/sql",
     {"json": {"statements": [{"sql": "SELEC * FORM t"}]}}, "ok", 400),
    ("sandbox violation", "POST", f"/v1/environments/{ENV}/sql",
     {"json": {"statements": [{"sql": "ATTACH '/etc/passwd' AS x"}]}}, "ok", 403),
    ("system table write", "POST", f"/v1/environments/{ENV}/sql",
     {"json": {"statements": [{"sql": "DELETE FROM _tandem_journal"}]}}, "ok", 403),
    ("body not JSON", "POST", f"/v1/environments/{ENV}/sql",
     {"content": b"{not json", "headers": {"content-type": "application/json"}}, "ok", 400),
    ("statements missing", "POST", f"/v1/environments/{ENV}/sql", {"json": {}}, "ok", 400),
    ("path trick", "PUT", f"/v1/environments/{ENV}/files/a/..%2F..%2Fetc/passwd",
     {"content": b"x"}, "ok", 400),
    ("empty path segment", "PUT", f"/v1/environments/{ENV}/files/a//b",
     {"content": b"x"}, "ok", 400),
    ("missing token", "POST", f"/v1/environments/{ENV}/sql",
     {"json": {"statements": [{"sql": "DELETE FROM t"}]}}, None, 401),
    ("wrong token", "POST", f"/v1/environments/{ENV}/sql",
     {"json": {"statements": [{"sql": "DELETE FROM t"}]}}, "wrong", 401),
    ("wrong token on control plane", "DELETE", f"/v1/environments/{ENV}", {}, "wrong", 401),
    ("bad environment name", "POST", "/v1/environments", {"json": {"name": "Bad_Name"}}, "ok",
     400),
    ("unknown environment type", "POST", "/v1/environments",
     {"json": {"name": "typo", "type": "prod"}}, "ok", 400),
    ("unknown region", "POST", "/v1/environments",
     {"json": {"name": "nowhere", "region": "mars"}}, "ok", 400),
    ("existing environment", "POST", "/v1/environments", {"json": {"name": ENV}}, "ok", 409),
    ("unknown read region", "POST", f"/v1/environments/{ENV}/sql",
     {"json": {"statements": [{"sql": "SELECT 1"}], "read_region": "mars"}}, "ok", 400),
]


@pytest.mark.parametrize("what,method,path,kw,token,status", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_and_changes_nothing(cluster, env, what, method, path, kw, token,
                                                  status):
    before = _state(cluster)
    r = _raw(cluster, method, path, token, **kw)
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] and body["error"]["message"]
    assert _state(cluster) == before


def test_oversized_body_is_413_and_changes_nothing(cluster, env):
    before = _state(cluster)
    too_big = b"x" * (cluster.deployment.max_body_bytes + 1)
    r = _raw(cluster, "PUT", f"/v1/environments/{ENV}/files/big.bin", content=too_big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    assert _state(cluster) == before
    with pytest.raises(TandemError):
        cluster.client.get_file(ENV, "big.bin")


def test_internal_endpoints_need_the_cluster_secret(cluster, env):
    node = cluster.url(cluster.node_of("west"))
    for url in (f"{node}/v1/environments/{ENV}/sql", f"{cluster.deployment.controller_url}"
                "/v1/environments"):
        r = httpx.post(url, json={"statements": [{"sql": "DELETE FROM t"}], "name": "x"},
                       headers={"X-Tandem-Secret": "guess"})
        assert r.status_code == 401
    assert cluster.client.sql(ENV, "SELECT count(*) FROM t")["results"][0]["rows"] == [[1]]
