"""Geo-replication through real processes: rows, DDL and files reach the paired region,
checksums agree after catch-up (invariants 4 and 6), restarts lose nothing (1 and 5)."""

from __future__ import annotations

import base64
import signal
import time

import httpx
import pytest

from tandemdb.client import TandemError
from tandemdb.testing import IdWriter, caught_up, poll_until


def test_rows_ddl_and_files_replicate(cluster):
    c = cluster.client
    view = c.create_environment("rep-basic", type="production", region="west")
    assert view["primary_region"] == "west" and view["home_region"] == "west"
    assert sorted(r["region"] for r in view["replicas"]) == ["east", "west"]
    c.sql("rep-basic", "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    for i in range(20):
        c.sql("rep-basic", "INSERT INTO t(id, v) VALUES (?, ?)", [i, f"v{i}"])
    c.sql("rep-basic", "ALTER TABLE t ADD COLUMN w INTEGER DEFAULT 3")
    c.sql("rep-basic", "UPDATE t SET w = id * 2 WHERE id < 10")
    c.put_file("rep-basic", "docs/readme.txt", b"hello east")
    last = c.put_file("rep-basic", "img/logo.bin", bytes(range(256)) * 100)["lsn"]
    poll_until(lambda: caught_up(c, "rep-basic"), what="secondary to catch up")
    east = c.sql("rep-basic", "SELECT count(*), sum(w) FROM t", read_region="east",
                 min_lsn=last)
    assert east["region"] == "east"
    assert east["results"][0]["rows"] == [[20, 10 * 3 + sum(i * 2 for i in range(10))]]
    assert c.get_file("rep-basic", "img/logo.bin", read_region="east") == bytes(range(256)) * 100
    assert c.checksum("rep-basic", "west")["total"] == c.checksum("rep-basic", "east")["total"]
    files = c.list_files("rep-basic", prefix="docs/")
    assert [f["path"] for f in files] == ["docs/readme.txt"]


def test_min_lsn_reads_your_writes_in_the_pair(cluster):
    c = cluster.client
    c.create_environment("rep-ryw")
    c.sql("rep-ryw", "CREATE TABLE t(id INTEGER PRIMARY KEY)")
    for i in range(30):
        lsn = c.sql("rep-ryw", "INSERT INTO t(id) VALUES (?)", [i])["lsn"]
        seen = c.sql("rep-ryw", "SELECT count(*) FROM t", read_region="east", min_lsn=lsn)
        assert seen["results"][0]["rows"] == [[i + 1]], "the write must be visible in east"
        assert seen["lsn"] >= lsn


def restart_under_writes(cluster, env: str, region: str, down_for: float = 0.0,
                         timeout: float = 15.0) -> IdWriter:
    """Kill and restart `region`'s node while a writer runs; wait for 50 more acks."""
    cluster.client.create_environment(env)
    writer = IdWriter(cluster.client, env)
    writer.create_table()
    writer.start()
    try:
        poll_until(lambda: len(writer.acked) > 50, what="writes before the kill")
        node = cluster.node_of(region)
        cluster.kill(node)
        acked_while_down = len(writer.acked)
        time.sleep(down_for)
        cluster.start(node)
        poll_until(lambda: len(writer.acked) > acked_while_down + 50, timeout=timeout,
                   what="writes after")
    finally:
        writer.stop()
    return writer


def test_secondary_node_restart_under_writes_loses_nothing(cluster):
    c = cluster.client
    writer = restart_under_writes(cluster, "rep-restart", "east", down_for=0.5)
    assert not writer.failed, f"writes failed while the secondary restarted: {writer.failed[:3]}"
    poll_until(lambda: caught_up(c, "rep-restart"), what="secondary to catch up")
    writer.check(c)
    ids = writer.check(c, region="east", min_lsn=max(writer.lsns))
    assert len(ids) == len(writer.acked)
    assert sorted(writer.lsns) == writer.lsns, "lsns acknowledged in order"
    assert c.checksum("rep-restart", "west")["total"] == c.checksum("rep-restart", "east")["total"]


def test_primary_node_restart_keeps_every_acknowledged_write(cluster):
    c = cluster.client
    writer = restart_under_writes(cluster, "rep-prestart", "west", timeout=20)
    writer.check(c)
    poll_until(lambda: caught_up(c, "rep-prestart"), what="secondary to catch up")
    writer.check(c, region="east", min_lsn=max(writer.lsns))
    assert c.checksum("rep-prestart", "west")["total"] == \
        c.checksum("rep-prestart", "east")["total"]


def test_rpo_guard_rejects_writes_past_the_limit_and_recovers(cluster):
    c = cluster.client
    c.create_environment("rpo-on", rpo_limit_seconds=1)
    c.create_environment("rpo-off")  # default 900 s: stays writable
    for env in ("rpo-on", "rpo-off"):
        c.sql(env, "CREATE TABLE t(id INTEGER PRIMARY KEY)")
    poll_until(lambda: caught_up(c, "rpo-on") and caught_up(c, "rpo-off"), what="catch-up")
    east = cluster.node_of("east")
    cluster.signal(east, signal.SIGSTOP)
    refused: list[TandemError] = []
    try:
        deadline = time.monotonic() + 10
        i = 0
        while time.monotonic() < deadline and not refused:
            i += 1
            try:
                c.sql("rpo-on", "INSERT INTO t(id) VALUES (?)", [i])
            except TandemError as exc:
                refused.append(exc)
            time.sleep(0.1)
        for j in range(5):
            c.sql("rpo-off", "INSERT INTO t(id) VALUES (?)", [j])  # no guard hit at 900 s
        time.sleep(1.5)  # a few heartbeats report the lag over the limit to the controller
    finally:
        cluster.signal(east, signal.SIGCONT)
    assert refused, "the RPO guard never refused a write while the secondary was stopped"
    assert refused[0].status == 503 and refused[0].code == "rpo_exceeded"
    assert "limit" in refused[0].message
    accepted_id = 10_000

    def writable() -> bool:
        try:
            c.sql("rpo-on", "INSERT INTO t(id) VALUES (?)", [accepted_id])
            return True
        except TandemError:
            return False

    poll_until(writable, timeout=15, interval=0.2, what="writes to resume after catch-up")

    def lag_events() -> list[dict]:
        return [e for e in c.events(after=0)["events"] if e["environment"] == "rpo-on"
                and e["type"].startswith("replication.lag_")]

    # Tenants heard of it: once when the lag passed the limit, once when it was back under.
    poll_until(lambda: len(lag_events()) == 2, what="lag events")
    exceeded, recovered = lag_events()
    assert (exceeded["type"], recovered["type"]) == ("replication.lag_exceeded",
                                                     "replication.lag_recovered")
    assert exceeded["data"]["lag_seconds"] > exceeded["data"]["rpo_limit_seconds"] == 1
    assert exceeded["data"]["secondary_region"] == "east"
    assert not any(e["environment"] == "rpo-off" and e["type"].startswith("replication.")
                   for e in c.events(after=0)["events"])


def test_write_sent_to_the_secondary_node_is_refused_with_the_primary_region(cluster):
    c = cluster.client
    c.create_environment("rep-direct")
    c.sql("rep-direct", "CREATE TABLE t(id INTEGER PRIMARY KEY)")
    poll_until(lambda: caught_up(c, "rep-direct"), what="catch-up")
    east_url = cluster.url(cluster.node_of("east"))
    headers = {"X-Tandem-Secret": cluster.deployment.secret}
    r = httpx.post(f"{east_url}/v1/environments/rep-direct/sql", headers=headers,
                   json={"statements": [{"sql": "INSERT INTO t(id) VALUES (1)"}]})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "not_primary" and "west" in r.json()["error"]["message"]
    read = c.sql("rep-direct", "SELECT count(*) FROM t", read_region="east")
    assert read["results"][0]["rows"] == [[0]]


@pytest.mark.parametrize("env_type", ["sandbox", "basic"])
def test_non_production_types_have_a_single_replica(cluster, env_type):
    c = cluster.client
    view = c.create_environment(f"single-{env_type}", type=env_type, region="east")
    assert [(r["region"], r["role"]) for r in view["replicas"]] == [("east", "primary")]
    c.sql(f"single-{env_type}", "CREATE TABLE t(x)")
    assert c.sql(f"single-{env_type}", "SELECT count(*) FROM t")["region"] == "east"


def test_blob_values_round_trip_as_bytes_in_both_regions(cluster):
    c = cluster.client
    c.create_environment("rep-blob")
    c.sql("rep-blob", "CREATE TABLE b(id INTEGER PRIMARY KEY, data BLOB, note TEXT)")
    payload = bytes(range(256))
    lsn = c.sql("rep-blob", "INSERT INTO b VALUES (1, ?, ?)", [payload, "text stays text"])["lsn"]
    for region in ("west", "east"):
        rows = c.sql("rep-blob", "SELECT data, note, typeof(data) FROM b", read_region=region,
                     min_lsn=lsn)["results"][0]["rows"]
        assert rows == [[payload, "text stays text", "blob"]]
    raw = httpx.post(f"{cluster.deployment.gateway_url}/v1/environments/rep-blob/sql",
                     headers={"Authorization": f"Bearer {cluster.deployment.token}"},
                     json={"statements": [{"sql": "SELECT data FROM b"}]}).json()
    assert raw["results"][0]["rows"][0][0] == {"$blob": base64.b64encode(payload).decode()}


def test_every_process_serves_metrics(cluster):
    c = cluster.client
    c.create_environment("rep-metrics")
    c.sql("rep-metrics", "CREATE TABLE t(x)")
    lsn = c.sql("rep-metrics", "INSERT INTO t VALUES (1)")["lsn"]
    poll_until(lambda: caught_up(c, "rep-metrics"), what="catch-up")
    token = {"Authorization": f"Bearer {cluster.deployment.token}"}
    texts = {name: httpx.get(cluster.url(name) + "/metrics", headers=token).text
             for name in cluster.names()}
    for name, text in texts.items():
        assert "tandem_http_requests_total" in text, f"{name} lacks request metrics"
        assert "tandem_http_request_seconds_bucket" in text
    west, east = texts[cluster.node_of("west")], texts[cluster.node_of("east")]
    assert f'tandem_env_primary_lsn{{env="rep-metrics"}} {float(lsn)}' in west
    assert 'tandem_env_lag_entries{consumer="east-1",env="rep-metrics"}' in west
    assert 'tandem_env_lag_seconds{consumer="east-1",env="rep-metrics"}' in west
    assert f'tandem_env_applied_lsn{{env="rep-metrics",role="secondary"}} {float(lsn)}' in east
    assert 'tandem_replicated_entries_total{env="rep-metrics"}' in east
    assert 'tandem_replicated_bytes_total{env="rep-metrics"}' in east
