"""Leases through real processes (docs/leases.md; "Split brain" in docs/design.md): a
primary whose
controller stops answering, and that no geo-secondary vouches for, refuses writes once its
lease runs out, keeps serving reads, writes nothing it refused, and takes writes again when
the controller is back. A production primary whose geo-secondary keeps pulling keeps
writing under the failsafe lease, and stops within one lease once that secondary stops too.

Processes are frozen with SIGSTOP, so their sockets stay (connections hang, nothing is
refused): the node learns nothing but that its heartbeats or pulls go unanswered.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tandemdb.client import TandemError
from tandemdb.node.lease import margin_for
from tandemdb.testing import LocalDeployment, caught_up, poll_until

TTL = 1.5
INTERVAL = 0.2  # heartbeats; five renewals per lease, so a slow one does not lapse it
REFUSED_WITHIN = TTL + margin_for(TTL) + 1.0  # after SIGSTOP; the lease needs ttl - margin


@pytest.fixture(scope="module")
def lease_cluster(
        start_deployment: Callable[..., LocalDeployment]) -> Iterator[LocalDeployment]:
    c = start_deployment("lease", lease_ttl=TTL, heartbeat_interval=INTERVAL)
    yield c  # pytest runs what follows also when a test failed
    if "controller" in c.processes:
        c.signal("controller", signal.SIGCONT)  # a stopped process ignores SIGTERM


def insert(cluster: LocalDeployment, env: str, row: int) -> TandemError | None:
    try:
        cluster.client.sql(env, "INSERT INTO t(id) VALUES (?)", [row])
        return None
    except TandemError as exc:
        return exc


def ids(cluster: LocalDeployment, env: str, **read) -> list[int]:
    answer = cluster.client.sql(env, "SELECT id FROM t ORDER BY id", **read)
    return [row[0] for row in answer["results"][0]["rows"]]


def lease_gauge(cluster: LocalDeployment, node: str,
                metric: str = "tandem_node_lease_remaining_seconds") -> float:
    text = httpx.get(cluster.deployment.node_url(node) + "/metrics",
                     headers={"Authorization": f"Bearer {cluster.deployment.token}"}).text
    found = re.search(rf"^{re.escape(metric)} ([0-9.e+-]+)$", text, re.M)
    assert found, f"the node exports no {metric}"
    return float(found.group(1))


def failsafe_gauge(cluster: LocalDeployment, node: str, env: str) -> float:
    return lease_gauge(cluster, node, f'tandem_env_failsafe_remaining_seconds{{env="{env}"}}')


def test_primary_stops_writing_when_its_lease_runs_out(lease_cluster: LocalDeployment) -> None:
    """A basic environment has no geo-secondary, so nothing keeps it writing (failsafe)."""
    cluster, client = lease_cluster, lease_cluster.client
    env, west = "lease-stop", cluster.node_of("west")
    node_sql = f"{cluster.deployment.node_url(west)}/v1/environments/{env}/sql"
    secret = {"X-Tandem-Secret": cluster.deployment.secret}
    client.create_environment(env, type="basic", region="west")
    poll_until(lambda: insert_ddl(cluster, env), what="the first write (the lease granted)")
    acked = []
    for row in range(1, 21):
        assert insert(cluster, env, row) is None, f"write {row} refused under a live lease"
        acked.append(row)
    client.put_file(env, "kept.txt", b"written under the lease")
    assert 0 < lease_gauge(cluster, west) <= TTL

    stopped_at = time.monotonic()
    cluster.signal("controller", signal.SIGSTOP)
    try:
        row, refusal = write_until_refused(cluster, env, 100, acked)
        refused_after = time.monotonic() - stopped_at
        assert refused_after <= REFUSED_WITHIN, refused_after
        assert refusal.status == 503 and refusal.retry_after == 1
        assert "expired" in refusal.message and "ago" in refusal.message

        # Directly at the node: the exact refusal, and nothing is written.
        for attempt in range(5):
            r = httpx.post(node_sql, headers=secret,
                           json={"statements": [{"sql": f"INSERT INTO t(id) VALUES "
                                                        f"({1000 + attempt})"}]})
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "1"
            error = r.json()["error"]
            assert error["code"] == "no_lease"
            assert re.search(r"lease from the controller expired [0-9.]+ s ago",
                             error["message"]), error["message"]
        with pytest.raises(TandemError) as refused_file:
            client.put_file(env, "refused.txt", b"x")
        assert refused_file.value.code == "no_lease"
        with pytest.raises(TandemError) as refused_delete:
            client.delete_file(env, "kept.txt")
        assert refused_delete.value.code == "no_lease"

        # Reads are still served, by the primary and its secondary; no refused row exists.
        assert ids(cluster, env) == acked
        read = httpx.post(node_sql, headers=secret,
                          json={"statements": [{"sql": "SELECT count(*) FROM t"}]})
        assert read.status_code == 200 and read.json()["results"][0]["rows"] == [[len(acked)]]
        assert [f["path"] for f in client.list_files(env)] == ["kept.txt"]
        assert client.get_file(env, "kept.txt") == b"written under the lease"
        assert lease_gauge(cluster, west) == 0.0
        poll_until(lambda: f"environment {env} (epoch 1): no lease from the controller, and "
                           "it has no geo-secondary" in cluster.tail(west, 60),
                   timeout=5, what="the node to log that the primary refuses writes")
    finally:
        cluster.signal("controller", signal.SIGCONT)

    resumed_at = time.monotonic()
    poll_until(lambda: insert(cluster, env, 5000) is None, timeout=10, interval=0.1,
               what="writes to be taken again once the controller answers")
    acked.append(5000)
    assert time.monotonic() - resumed_at < 10
    assert "lease renewed by the controller" in cluster.tail(west, 60)
    assert ids(cluster, env) == acked, "a refused write was written after all"


def test_failsafe_keeps_a_primary_writing_while_its_geo_secondary_pulls(
        lease_cluster: LocalDeployment) -> None:
    """The controller frozen: a production primary writes on while east pulls from it at
    its epoch, stops within one lease once east is frozen too, and writes again once east
    pulls again (the controller still frozen). Nothing refused is written; every
    acknowledged write reaches east."""
    cluster, client = lease_cluster, lease_cluster.client
    env, basic, west = "failsafe", "failsafe-basic", cluster.node_of("west")
    east = cluster.node_of("east")
    client.create_environment(env, region="west")
    client.create_environment(basic, type="basic", region="west")
    for name in (env, basic):
        poll_until(lambda name=name: insert_ddl(cluster, name), what=f"the table of {name}")
    acked = [row for row in range(1, 6) if insert(cluster, env, row) is None]
    assert acked == [1, 2, 3, 4, 5]

    cluster.signal("controller", signal.SIGSTOP)
    try:
        frozen_at = time.monotonic()
        row = 100
        while time.monotonic() - frozen_at < 3 * TTL:  # well past the controller's lease
            row += 1
            error = insert(cluster, env, row)
            assert error is None, f"write {row} refused under the failsafe: {error!r}"
            acked.append(row)
            time.sleep(0.02)
        assert lease_gauge(cluster, west) == 0.0 < failsafe_gauge(cluster, west, env) <= TTL
        refused = insert(cluster, basic, 1)  # nobody vouches for the basic environment
        assert refused is not None and refused.code == "no_lease", refused
        assert "it has no geo-secondary to vouch for it" in refused.message

        cluster.signal(east, signal.SIGSTOP)  # its pulls stop: the failsafe ends
        try:
            stopped_at = time.monotonic()
            row, refusal = write_until_refused(cluster, env, row, acked)
            refused_after = time.monotonic() - stopped_at
            assert "failsafe lease ended" in refusal.message, refusal.message
            assert refused_after <= TTL + 0.5, refused_after  # one lease, and some slack
            poll_until(lambda: f"environment {env} (epoch 1): no lease from the controller"
                               in cluster.tail(west, 80), timeout=5,
                       what="the node to log that the primary refuses writes")
            for attempt in range(5):
                assert insert(cluster, env, 9000 + attempt).code == "no_lease"
            assert failsafe_gauge(cluster, west, env) == 0.0
        finally:
            cluster.signal(east, signal.SIGCONT)
        poll_until(lambda: insert(cluster, env, 5000) is None, timeout=10, interval=0.1,
                   what="writes under the failsafe once east pulls again")
        acked.append(5000)
        poll_until(lambda: f"environment {env} (epoch 1): its geo-secondary vouches for it "
                           "again" in cluster.tail(west, 80), timeout=5,
                   what="the node to log that the failsafe holds again")
    finally:
        cluster.signal("controller", signal.SIGCONT)
    assert ids(cluster, env) == acked, "a refused write was written after all"
    poll_until(lambda: caught_up(client, env), what="the secondary to catch up")
    assert ids(cluster, env, read_region="east") == acked


def write_until_refused(cluster: LocalDeployment, env: str, row: int,
                        acked: list[int]) -> tuple[int, TandemError]:
    """Insert rows after `row` until one is refused with `no_lease`, which must happen
    within REFUSED_WITHIN + 5 s; acknowledged rows go to `acked`. Answers the last row
    tried and the refusal."""
    started = time.monotonic()
    while True:
        assert time.monotonic() - started < REFUSED_WITHIN + 5, \
            "writes were still taken long after the lease must have run out"
        row += 1
        error = insert(cluster, env, row)
        if error is None:
            acked.append(row)
        elif error.code == "no_lease":
            return row, error
        else:
            raise AssertionError(f"unexpected refusal {error!r}")
        time.sleep(0.02)


def insert_ddl(cluster: LocalDeployment, env: str) -> bool:
    """Create the table; False while the primary has no lease yet (just after start)."""
    try:
        cluster.client.sql(env, "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY)")
        return True
    except TandemError as exc:
        if exc.code != "no_lease":
            raise
        return False
