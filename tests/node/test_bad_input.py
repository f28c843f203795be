"""Bad input gets a clear error and changes nothing (docs/design.md, invariant 8)."""

from __future__ import annotations

import httpx
import msgpack

from .conftest import MAX_BODY, Cluster, unique


def test_secret_is_required_except_for_health_and_metrics_token(live: Cluster) -> None:
    env = unique("auth")
    live.pair(env)
    base = live.url("west-1")
    for headers in ({}, {"X-Tandem-Secret": "wrong"}):
        for method, path in [("POST", f"/v1/environments/{env}/sql"),
                             ("GET", f"/internal/v1/replicas/{env}/checksum"),
                             ("PUT", f"/internal/v1/replicas/{env}"),
                             ("POST", "/internal/v1/stream"),
                             ("GET", f"/internal/v1/envs/{env}/snapshot")]:
            r = httpx.request(method, base + path, headers=headers, content=b"{}")
            assert r.status_code == 401, (method, path, r.text)
            assert r.json()["error"]["code"] == "unauthorized"
    health = httpx.get(base + "/healthz")
    assert health.json() == {"ok": True, "component": "node", "name": "west-1",
                             "region": "west"}
    assert httpx.get(base + "/metrics").status_code == 401  # it names environments
    token = {"Authorization": f"Bearer {live.deployment.token}"}  # as Prometheus sends it
    metrics = httpx.get(base + "/metrics", headers=token)
    assert metrics.status_code == 200
    assert f'tandem_env_primary_lsn{{env="{env}"}}' in metrics.text
    assert f'tandem_env_lag_seconds{{consumer="east-1",env="{env}"}}' in metrics.text
    assert "tandem_http_requests_total" in metrics.text
    east = httpx.get(live.url("east-1") + "/metrics", headers=token).text
    assert f'tandem_env_applied_lsn{{env="{env}",role="secondary"}}' in east


def test_unknown_and_malformed_environment_names(live: Cluster) -> None:
    for name, status in [("nosuchenv", 404), ("Bad_Name", 400), ("a", 400)]:
        for r in (live.sql("west-1", name, "SELECT 1"),
                  live.http.get(live.files_url("west-1", name, "x")),
                  live.http.get(f"{live.url('west-1')}/internal/v1/replicas/{name}/checksum"),
                  live.http.delete(f"{live.url('west-1')}/internal/v1/replicas/{name}")):
            assert r.status_code == status, r.text
            code = r.json()["error"]["code"]
            assert code == ("not_found" if status == 404 else "invalid_name")


def test_bad_requests_change_nothing(live: Cluster) -> None:
    env = unique("bad")
    live.pair(env)
    live.ok_sql("west-1", env, "CREATE TABLE t(id INTEGER PRIMARY KEY)",
                "INSERT INTO t VALUES (1)")
    before = live.wait_equal(env)

    def expect(r: httpx.Response, status: int, code: str) -> None:
        assert r.status_code == status, r.text[:300]
        assert r.json()["error"]["code"] == code, r.text[:300]

    sql_url = f"{live.url('west-1')}/v1/environments/{env}/sql"
    expect(live.sql("west-1", env, "SELEC nonsense"), 400, "sql_error")
    expect(live.sql("west-1", env, "INSERT INTO t VALUES (2)", "INSERT INTO t VALUES (1)"),
           400, "sql_error")  # the second fails, so the first is rolled back too
    expect(live.sql("west-1", env, "ATTACH DATABASE '/tmp/x.db' AS x"), 403, "forbidden")
    expect(live.sql("west-1", env, "DELETE FROM _tandem_journal"), 403, "forbidden")
    expect(live.http.post(sql_url, content=b"not json"), 400, "bad_request")
    expect(live.http.post(sql_url, json={"statements": []}), 400, "bad_request")
    expect(live.http.post(sql_url, json={"statements": [{"params": [1]}]}), 400, "sql_error")
    expect(live.http.post(sql_url, json={"statements": [{"sql": "SELECT 1"}] * 60000}), 413,
           "body_too_large")
    expect(live.http.put(live.files_url("west-1", env, "big.bin"),
                         content=b"x" * (MAX_BODY + 1)), 413, "body_too_large")

    def chunks():  # no Content-Length: the limit applies while the body streams
        for _ in range(MAX_BODY // 65536 + 2):
            yield b"y" * 65536

    expect(live.http.put(live.files_url("west-1", env, "streamed.bin"), content=chunks()),
           413, "body_too_large")
    for trick in ["%2e%2e/etc/passwd", "a/%2e%2e/%2e%2e/b", "a//b", "", "%00x", "a\\b",
                  "%2e/a", "/etc/passwd"]:
        r = live.http.put(live.files_url("west-1", env, trick), content=b"x")
        expect(r, 400, "invalid_path")
    r = live.http.get(live.files_url("west-1", env, "%2e%2e/db.sqlite"))
    expect(r, 400, "invalid_path")
    expect(live.http.post(f"{live.url('west-1')}/internal/v1/stream", content=b"\xc1"),
           400, "bad_request")
    bad_positions = msgpack.packb({"node": "east-1", "positions": {env: -1}})
    expect(live.http.post(f"{live.url('west-1')}/internal/v1/stream", content=bad_positions),
           400, "bad_request")
    for vouch in ([env], {env: "1"}, {env: 1.5}, "all"):
        bad_vouch = msgpack.packb({"node": "east-1", "positions": {env: 0}, "vouch": vouch})
        expect(live.http.post(f"{live.url('west-1')}/internal/v1/stream", content=bad_vouch),
               400, "bad_request")
    expect(live.http.get(f"{live.url('west-1')}/internal/v1/envs/{env}/blobs/..%2e"),
           400, "bad_request")

    assert live.checksum("west-1", env) == before
    listing = live.http.get(f"{live.url('west-1')}/v1/environments/{env}/files").json()
    assert listing == {"files": []}
    assert live.ok_sql("west-1", env, "SELECT id FROM t")["results"][0]["rows"] == [[1]]


def test_admin_refuses_bad_replica_records(live: Cluster) -> None:
    url = f"{live.url('east-1')}/internal/v1/replicas/{unique('admin')}"
    # No `drill` role: drills will be separate copies, never a role without a lease.
    for record in [{"role": "king", "epoch": 1}, {"role": "drill", "epoch": 1},
                   {"role": ["primary"], "epoch": 1}, {"role": "primary", "epoch": 0},
                   {"role": "secondary", "epoch": 1},  # a secondary needs its primary
                   {"role": "primary", "epoch": 1, "secondaries": "east-1"},
                   {"role": "primary", "epoch": 1, "type": "gold"},
                   {"role": "primary", "epoch": 1, "rpo_limit_seconds": -1},
                   {"role": "primary", "epoch": 1, "vouch": "yes"}, [1, 2]]:
        r = live.http.put(url, json=record)
        assert r.status_code == 400, (record, r.text)
        assert r.json()["error"]["code"] == "bad_request"
    r = live.http.put(url, json={"env": "other-name", "role": "primary", "epoch": 1})
    assert r.status_code == 400
    assert live.http.get(url).status_code == 404  # nothing was created
